"""SftpVFS: the VFS Protocol over asyncssh's SFTP client.

Every public method awaits its asyncssh work on the caller's loop (the mount's one loop,
where the FUSE handlers run too), within the per-operation deadline. Errors are translated
in exactly one place, :func:`~sshvfs.sftp.wire._translate`, and SFTP v3's catch-all FX_FAILURE is
disambiguated where POSIX callers care (EEXIST, ENOTEMPTY, EISDIR, ENOTDIR) with a
follow-up lstat inside the same call.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import stat as _stat
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncssh

from ..deadlines import Deadlines
from ..errors import fs_error
from ..execlist.lister import DEFAULT_SESSIONS, DirLister, ExecLister
from ..execlist.policy import ListingPolicy
from ..tasks import Spawn, spawn_detached
from ..transfers import Transfers
from ..transport.connection import Connection, SftpAttrs, SftpHandle, SftpSession
from ..transport.session import Session
from ..transport.sftppipe import SftpClient
from ..vfs.types import Attrs, Entry, StatFs, VFSFile
from .file import SftpFile
from .streaming import Streaming
from .wire import _LOST, _attrs, _entry, _pflags, _translate, setstat_attrs

log = logging.getLogger(__name__)

#: an LSTAT round trip from which the server is across a link, not on this host (seconds)
LINK_RTT = 0.002
#: what an exec listing may cost over two round trips and still beat an LSTAT (seconds)
EXEC_SLACK = 0.003
#: the latest LSTAT round trips the link is judged by (their least)
RTT_SAMPLES = 16

T = TypeVar("T")


async def _then_attrs(request: Awaitable[T], stat: Awaitable[SftpAttrs]) -> tuple[T, Attrs | None]:
    """``request``'s answer, and what ``stat`` (asked right behind it: both are sent now,
    in this order, and the server answers in order) says after it, None if it failed."""
    done, st = await asyncio.gather(request, stat, return_exceptions=True)
    if isinstance(done, BaseException):
        raise done
    return done, _said(st)


def _said(st: SftpAttrs | BaseException) -> Attrs | None:
    """What a stat asked right behind a request says (None: it failed)."""
    return None if isinstance(st, BaseException) else _attrs(st)


class SftpVFS:
    """The VFS over one SFTP session rooted at an absolute remote directory."""

    def __init__(
        self,
        sftp: SftpSession,
        root: bytes,
        *,
        exec_conn: asyncssh.SSHClientConnection | None = None,
        listing: str = "auto",
        listing_threshold: int = 0,
        exec_sessions: int = DEFAULT_SESSIONS,
        warm_up: bool = False,
        transfers: Transfers | None = None,
        session: Session | None = None,
        timeout: float | None = None,
        spawn: Spawn = spawn_detached,
    ) -> None:
        """``exec_conn`` (the connection ``sftp`` runs on) enables bulk listing over the
        exec channel; ``listing``/``listing_threshold`` choose when (see
        :class:`sshvfs.execlist.policy.ListingPolicy`); ``exec_sessions`` bounds its channels;
        ``warm_up`` probes the exec channel now, in the background, so that the first
        huge listing does not wait for a remote shell to start.

        ``session`` lets the VFS follow reconnects (and wait for one, bounded); ``timeout``
        is the deadline of every remote operation, after which the caller gets ETIMEDOUT."""
        self._session = session
        self.timeout = timeout or None
        self._deadlines = Deadlines(self.timeout) if self.timeout is not None else None
        #: the latest LSTATs' round trips (seconds): is this a link or the host?
        self._lstat_rtts: collections.deque[float] = collections.deque(maxlen=RTT_SAMPLES)
        self._exec_sessions = exec_sessions
        self._exec_resolution = 1_000_000_000
        #: what a stored time is rounded down to (SFTP v3 carries whole seconds)
        self.time_resolution_ns = 1 if sftp.version >= 4 else 1_000_000_000
        self._sftp = sftp
        self._root = root.rstrip(b"/")
        # file streaming: block sizes from the server, memory bounds, transfers in flight
        self._streaming = Streaming.for_sftp(sftp, transfers)
        bulk = None
        if exec_conn is not None and listing != "sftp":
            # SFTP v3 carries whole seconds: exec listings report the same, or one file's
            # mtime would flip between x.123456789 (listed) and x.0 (stat), and make,
            # rsync, git and editors would see a change that never happened
            resolution = 1 if sftp.version >= 4 else 1_000_000_000
            self._exec_resolution = resolution
            bulk = ExecLister(exec_conn, sessions=exec_sessions, time_resolution_ns=resolution)
        policy = ListingPolicy(listing, listing_threshold)
        self._listings = DirLister(sftp, _entry, policy, bulk)
        #: the exec lister's start-up (probe + first remote shell), when warming up
        self.warming: asyncio.Task[bool] | None = None
        if bulk is not None and warm_up:
            # its outcome lands in bulk.available
            self.warming = spawn(bulk.probe(), "exec lister warm-up")
        if session is not None:
            session.on_connect.append(self._rebind)

    def _rebind(self, conn: Connection) -> None:
        """A new connection (asyncio side): every later call uses it."""
        old = self._listings
        self._sftp = conn.sftp
        bulk = None
        if old.bulk is not None:
            old.bulk.close()
            bulk = ExecLister(
                conn.conn, sessions=self._exec_sessions, time_resolution_ns=self._exec_resolution
            )
        self._listings = DirLister(conn.sftp, _entry, old.policy, bulk)

    @property
    def generation(self) -> int:
        """Which connection this VFS talks over (a handle opened on an older one reopens)."""
        return self._session.generation if self._session is not None else 0

    @property
    def can_reconnect(self) -> bool:
        return self._session is not None and self._session.reconnect_enabled

    async def recover(self, generation: int, exc: BaseException, wait: bool = True) -> None:
        """Asyncio side: the connection of ``generation`` failed under a request; make sure a
        reconnect is under way and (``wait``) wait for it, bounded by the deadline."""
        if self._session is None:
            return
        if self._session.generation == generation:
            self._session.lost(generation, exc if isinstance(exc, Exception) else None)
        if wait:
            await self._deadline(self.connected(), b"")

    @property
    def _disconnected(self) -> bool:
        """Is a reconnect to be waited for before a request can go?"""
        return self._session is not None and self._session.state != "connected"

    async def connected(self) -> None:
        """Asyncio side: return once connected, waiting for a reconnect up to the deadline."""
        if self._disconnected:
            assert self._session is not None
            await self._session.wait(self.timeout)

    @property
    def root(self) -> bytes:
        return self._root or b"/"

    @property
    def sftp(self) -> SftpSession:
        return self._sftp

    def remote(self, path: bytes) -> bytes:
        """The remote absolute path for a mount path."""
        if path == b"/":
            return self._root or b"/"
        return self._root + path

    async def _run(self, coro: Coroutine[Any, Any, T], path: bytes) -> T:
        try:
            return await self._deadline(coro, path)
        except asyncssh.Error as exc:
            raise _translate(exc, path) from exc
        except (ConnectionError, EOFError, BrokenPipeError) as exc:
            raise _translate(exc, path) from exc

    async def _deadline(self, aw: Awaitable[T], path: bytes) -> T:
        """Asyncio side: ``aw`` within the per-operation deadline, ETIMEDOUT after it."""
        if self._deadlines is None:
            return await aw
        try:
            # no task per call (a FUSE read is 128 KiB), no timer either (see Deadlines)
            return await self._deadlines.run(aw)
        except TimeoutError:
            # the server or the network stalls: fail this call, keep the mount up
            raise fs_error(
                errno.ETIMEDOUT, path, f"no answer from the server within {self.timeout:g} s"
            ) from None

    async def _op(
        self,
        path: bytes,
        action: Callable[[], Awaitable[T]],
        explain: Callable[[], Awaitable[int | None]] | None = None,
        idempotent: bool = True,
        other_channel: bool = False,
    ) -> T:
        """Run ``action``; on an ambiguous failure ask ``explain`` for the real errno.

        A connection lost before the request was sent, or during an ``idempotent`` one, is
        waited out (a reconnect, bounded by the deadline) and the action runs once more.
        Every write answered before the call is on the SFTP channel ahead of the action's
        requests, or answered by the server when the action may use ``other_channel`` (the
        exec channel): see :class:`~sshvfs.vfs.stream.writeorder.WriteOrder`."""
        order = self._streaming.order

        async def attempt() -> T:
            try:
                await (order.done_before() if other_channel else order.sent_before())
                return await action()
            except (asyncssh.SFTPFailure, asyncssh.SFTPNoSuchFile) as exc:
                # OpenSSH also folds ENOTDIR and ELOOP into NO_SUCH_FILE
                code = await explain() if explain is not None else None
                if code is not None:
                    raise fs_error(code, path) from exc
                raise _translate(exc, path) from exc

        async def guarded() -> T:
            for tries in (1, 2):
                if self._disconnected:  # (no deadline's cost when connected)
                    await self._deadline(self.connected(), path)
                generation = self.generation
                try:
                    return await self._deadline(attempt(), path)
                except _LOST as exc:
                    unsent = isinstance(exc, asyncssh.SFTPNoConnection)
                    if self._session is None or tries == 2 or not (idempotent or unsent):
                        raise _translate(exc, path) from exc
                    log.debug("connection lost during %r; retrying after reconnect", path)
                    await self.recover(generation, exc, wait=False)
                except asyncssh.Error as exc:
                    raise _translate(exc, path) from exc
            raise AssertionError("unreachable")

        return await guarded()

    # -- asyncio-side probes used to explain FX_FAILURE -------------------------------

    async def _kind(self, remote: bytes) -> int | None:
        """S_IFMT of ``remote`` or None when it does not exist (asyncio side)."""
        try:
            a = await self._sftp.lstat(remote)
        except asyncssh.SFTPError:
            return None
        return _stat.S_IFMT(a.permissions or 0)

    async def _dir_has_entries(self, remote: bytes) -> bool:
        async for name in self._sftp.scandir(remote):
            if name.filename not in (b".", b".."):
                return True
        return False

    async def _exists_explains(self, remote: bytes) -> int | None:
        return errno.EEXIST if await self._kind(remote) is not None else None

    # -- the Protocol ----------------------------------------------------------------

    async def lstat(self, path: bytes) -> Attrs:
        async def action() -> Attrs:
            return _attrs(await self._sftp.lstat(self.remote(path)))

        started = time.monotonic()
        attrs = await self._op(path, action)
        self._lstat_rtts.append(time.monotonic() - started)
        return attrs

    @property
    def lstat_rtt(self) -> float | None:
        """An LSTAT's round trip on this link (seconds): the least of the latest
        RTT_SAMPLES. Load (a busy loop, a walk's prefetch on the same two cores) only adds
        to a round trip; an average of loaded ones made the host look like a link (8 ms at
        loopback during a walk) and sent lone opens through a forked ``tar``."""
        rtts = self._lstat_rtts
        return min(rtts) if rtts else None

    def across_link(self) -> bool:
        """Is the server across a link (an LSTAT's round trip of LINK_RTT or more), where
        every request costs that round trip, whatever the remote shells are doing?"""
        rtt = self.lstat_rtt
        return rtt is not None and rtt >= LINK_RTT

    def lists_for_lookups(self) -> bool:
        """Is a directory's listing by one exec command about as quick as one LSTAT (a
        link whose round trip dwarfs the server's work), so that a lookup may list its
        directory alongside (see CachingVFS.lstat)?"""
        bulk, rtt = self._listings.bulk, self.lstat_rtt
        if bulk is None or not bulk.available or rtt is None or not self.across_link():
            return False
        return bulk.cost() <= 2 * rtt + EXEC_SLACK

    async def exec_listing(self, path: bytes) -> list[Entry]:
        """``path``'s listing by one exec command (ENOTSUP when exec is unavailable)."""
        bulk = self._listings.bulk
        if bulk is None:
            raise fs_error(errno.ENOTSUP, path)
        remote = self.remote(path)
        return await self._op(path, lambda: bulk.listing(remote), other_channel=True)

    async def stat(self, path: bytes) -> Attrs:
        async def action() -> Attrs:
            return _attrs(await self._sftp.stat(self.remote(path)))

        return await self._op(path, action)

    async def readdir(self, path: bytes) -> list[Entry]:
        remote = self.remote(path)
        # a huge directory is listed over the exec channel
        return await self._op(
            path, lambda: self._listings.listing(path, remote), other_channel=True
        )

    def changed_remotely(self, path: bytes | None) -> None:
        """``path`` (None: any file) changed on the server: open files drop what they
        prefetched of it."""
        self._streaming.changed(path)

    @property
    def lister(self) -> ExecLister | None:
        """The exec-channel lister (None with ``listing=sftp`` or no connection given)."""
        return self._listings.bulk

    @property
    def listing_policy(self) -> ListingPolicy:
        return self._listings.policy

    async def readlink(self, path: bytes) -> bytes:
        async def action() -> bytes:
            target = await self._sftp.readlink(self.remote(path))
            assert isinstance(target, bytes)
            return target

        async def explain() -> int | None:
            kind = await self._kind(self.remote(path))
            # readlink(2) of something that is not a link is EINVAL
            return errno.EINVAL if kind is not None and kind != _stat.S_IFLNK else None

        return await self._op(path, action, explain)

    async def open(self, path: bytes, flags: int, mode: int = 0o644) -> VFSFile:
        remote = self.remote(path)
        create = bool(flags & os.O_CREAT)

        async def action() -> tuple[SftpHandle, Attrs | None]:
            attrs = asyncssh.SFTPAttrs(permissions=mode & 0o7777) if create else None
            sftp = self._sftp
            # a created file's attributes are asked for in the same round trip: the fstat
            # that follows every create is then free
            if create and isinstance(sftp, SftpClient):
                handle, st = await sftp.open_then_stat(remote, _pflags(flags), attrs, remote)
                return handle, _said(st)
            # block_size=0: one READ/WRITE per call; SftpFile does its own pipelining
            opening = sftp.open(
                remote,
                _pflags(flags),
                attrs or asyncssh.SFTPAttrs(),
                encoding=None,
                block_size=0,
            )
            if not create:
                return await opening, None
            return await _then_attrs(opening, sftp.stat(remote))

        async def explain() -> int | None:
            kind = await self._kind(remote)
            if kind == _stat.S_IFDIR and flags & os.O_ACCMODE != os.O_RDONLY:
                return errno.EISDIR
            if kind is not None and flags & os.O_CREAT and flags & os.O_EXCL:
                return errno.EEXIST
            return None

        # O_EXCL twice would fail where the first try may have created the file
        handle, attrs = await self._op(path, action, explain, idempotent=not flags & os.O_EXCL)
        return SftpFile(self, path, handle, self._streaming, attrs, flags)

    async def mkdir(self, path: bytes, mode: int = 0o755) -> None:
        await self._mkdir(path, mode, stat_after=False)

    async def mkdir_known(self, path: bytes, mode: int = 0o755) -> Attrs | None:
        """mkdir, and what the new directory is right after it (an LSTAT sent right behind
        the MKDIR, answered in the same round trip; None if it failed)."""
        return await self._mkdir(path, mode, stat_after=True)

    async def _mkdir(self, path: bytes, mode: int, stat_after: bool) -> Attrs | None:
        remote = self.remote(path)
        attrs = asyncssh.SFTPAttrs(permissions=mode & 0o7777)

        async def action() -> Attrs | None:
            sftp = self._sftp
            if not stat_after:
                await sftp.mkdir(remote, attrs)
                return None
            if isinstance(sftp, SftpClient):
                st = await sftp.mkdir_then_lstat(remote, attrs)
                return _said(st)
            return (await _then_attrs(sftp.mkdir(remote, attrs), sftp.lstat(remote)))[1]

        return await self._op(path, action, lambda: self._exists_explains(remote), idempotent=False)

    async def rmdir(self, path: bytes) -> None:
        remote = self.remote(path)

        async def explain() -> int | None:
            kind = await self._kind(remote)
            if kind is None:
                return errno.ENOENT
            if kind != _stat.S_IFDIR:
                return errno.ENOTDIR
            if await self._dir_has_entries(remote):
                return errno.ENOTEMPTY
            return None

        await self._op(path, lambda: self._sftp.rmdir(remote), explain, idempotent=False)

    async def unlink(self, path: bytes) -> None:
        remote = self.remote(path)

        async def explain() -> int | None:
            # unlink(2) of a directory: Linux says EISDIR
            return errno.EISDIR if await self._kind(remote) == _stat.S_IFDIR else None

        await self._op(path, lambda: self._sftp.remove(remote), explain, idempotent=False)

    async def rename(self, old: bytes, new: bytes) -> None:
        await self._rename(old, new, stat_after=False)

    async def rename_known(self, old: bytes, new: bytes) -> Attrs | None:
        """rename, and what the new name is right after it (an LSTAT sent right behind the
        RENAME, answered in the same round trip; None if it failed)."""
        return await self._rename(old, new, stat_after=True)

    async def _rename(self, old: bytes, new: bytes, stat_after: bool) -> Attrs | None:
        src, dst = self.remote(old), self.remote(new)

        async def explain() -> int | None:
            src_kind, dst_kind = await self._kind(src), await self._kind(dst)
            if src_kind is None:
                return errno.ENOENT
            if dst_kind == _stat.S_IFDIR:
                if src_kind != _stat.S_IFDIR:
                    return errno.EISDIR
                if await self._dir_has_entries(dst):
                    return errno.ENOTEMPTY
            elif dst_kind is not None and src_kind == _stat.S_IFDIR:
                return errno.ENOTDIR
            if src_kind == _stat.S_IFDIR and dst.startswith(src + b"/"):
                return errno.EINVAL  # a directory cannot move into itself
            return None

        async def action() -> Attrs | None:
            if not stat_after:
                await self._sftp.posix_rename(src, dst)
                return None
            sftp = self._sftp
            if isinstance(sftp, SftpClient):
                st = await sftp.rename_then_lstat(src, dst)
                return _said(st)
            return (await _then_attrs(sftp.posix_rename(src, dst), sftp.lstat(dst)))[1]

        return await self._op(old, action, explain, idempotent=False)

    async def symlink(self, target: bytes, path: bytes) -> None:
        remote = self.remote(path)
        await self._op(
            path,
            lambda: self._sftp.symlink(target, remote),
            lambda: self._exists_explains(remote),
            idempotent=False,
        )

    async def link(self, existing: bytes, new: bytes) -> None:
        src, dst = self.remote(existing), self.remote(new)

        async def explain() -> int | None:
            if await self._kind(dst) is not None:
                return errno.EEXIST
            # link(2) of a directory is EPERM on Linux
            return errno.EPERM if await self._kind(src) == _stat.S_IFDIR else None

        await self._op(new, lambda: self._sftp.link(src, dst), explain, idempotent=False)

    async def _lsetstat(self, remote: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """setstat that never follows a final symlink (asyncio side).

        The kernel has already resolved symlinks before a setattr reaches us, so a setattr on
        a symlink means the link itself: following it would change whatever it points to."""
        try:
            await self._sftp.setstat(remote, attrs, follow_symlinks=False)
        except asyncssh.SFTPOpUnsupported:
            if await self._kind(remote) == _stat.S_IFLNK:
                raise
            await self._sftp.setstat(remote, attrs)

    async def _lsetstat_then(self, remote: bytes, attrs: asyncssh.SFTPAttrs) -> Attrs | None:
        """:meth:`_lsetstat`, and what ``remote`` is after it when that comes in the same
        round trip (an LSTAT right behind the lean client's LSETSTAT), else None."""
        sftp = self._sftp
        if isinstance(sftp, SftpClient):
            try:
                st = await sftp.lsetstat_then_lstat(remote, attrs)
            except asyncssh.SFTPOpUnsupported:
                pass  # nothing was sent: the fallback of _lsetstat
            else:
                return _said(st)
        await self._lsetstat(remote, attrs)
        return None

    async def _setstat(
        self, path: bytes, attrs: asyncssh.SFTPAttrs, stat_after: bool = False
    ) -> Attrs | None:
        remote = self.remote(path)
        if stat_after:
            return await self._op(path, lambda: self._lsetstat_then(remote, attrs))
        await self._op(path, lambda: self._lsetstat(remote, attrs))
        return None

    async def chmod(self, path: bytes, mode: int) -> None:
        await self._setstat(path, setstat_attrs(mode=mode))

    async def chmod_known(self, path: bytes, mode: int) -> Attrs | None:
        """chmod, and what ``path`` is right after it when the server says so in the same
        round trip (None otherwise): so for every ``*_known`` setattr."""
        return await self._setstat(path, setstat_attrs(mode=mode), stat_after=True)

    async def chown(self, path: bytes, uid: int, gid: int) -> None:
        await self._chown(path, uid, gid, stat_after=False)

    async def chown_known(self, path: bytes, uid: int, gid: int) -> Attrs | None:
        return await self._chown(path, uid, gid, stat_after=True)

    async def _chown(self, path: bytes, uid: int, gid: int, stat_after: bool) -> Attrs | None:
        remote = self.remote(path)

        async def action() -> Attrs | None:
            new_uid, new_gid = uid, gid
            if uid < 0 or gid < 0:  # SFTP v3 sets uid and gid together
                current = await self._sftp.lstat(remote)
                new_uid = (current.uid or 0) if uid < 0 else uid
                new_gid = (current.gid or 0) if gid < 0 else gid
            owner = asyncssh.SFTPAttrs(uid=new_uid, gid=new_gid)
            if stat_after:
                return await self._lsetstat_then(remote, owner)
            await self._lsetstat(remote, owner)
            return None

        return await self._op(path, action)

    async def truncate(self, path: bytes, size: int) -> None:
        # OpenSSH's lsetstat refuses a size; a size only ever reaches regular files anyway
        remote = self.remote(path)

        async def action() -> None:
            self._streaming.changed(path)  # what open handles read ahead of it is stale
            await self._sftp.setstat(remote, asyncssh.SFTPAttrs(size=size))

        await self._op(path, action)

    async def utimens(self, path: bytes, atime_ns: int | None, mtime_ns: int | None) -> None:
        await self._utimens(path, atime_ns, mtime_ns, stat_after=False)

    async def utimens_known(
        self, path: bytes, atime_ns: int | None, mtime_ns: int | None
    ) -> Attrs | None:
        return await self._utimens(path, atime_ns, mtime_ns, stat_after=True)

    async def _utimens(
        self, path: bytes, atime_ns: int | None, mtime_ns: int | None, stat_after: bool
    ) -> Attrs | None:
        if atime_ns is None or mtime_ns is None:  # SFTP sets both: keep the server's other
            current = await self.lstat(path)
            atime_ns = current.atime_ns if atime_ns is None else atime_ns
            mtime_ns = current.mtime_ns if mtime_ns is None else mtime_ns
        return await self._setstat(path, setstat_attrs(times=(atime_ns, mtime_ns)), stat_after)

    async def statfs(self, path: bytes) -> StatFs:
        async def action() -> StatFs:
            try:
                v = await self._sftp.statvfs(self.remote(path))
            except asyncssh.SFTPOpUnsupported:
                # no statvfs@openssh.com: report a large, mostly free filesystem like sshfs
                return StatFs(4096, 4096, 1 << 30, 1 << 30, 1 << 30, 1 << 20, 1 << 20, 1 << 20, 255)
            return StatFs(
                v.bsize,
                v.frsize,
                v.blocks,
                v.bfree,
                v.bavail,
                v.files,
                v.ffree,
                v.favail,
                v.namemax or 255,
            )

        return await self._op(path, action)

    async def tree(self, path: bytes, max_entries: int) -> dict[bytes, list[Entry]] | None:
        """One exec command for the whole subtree (symlinks not followed). None when exec
        is unavailable, a directory below could not be read, or there are more than
        ``max_entries`` entries (the command is then stopped as soon as that is known)."""
        if self._listings.bulk is None:
            return None
        remote = self.remote(path)
        return await self._op(
            path, lambda: self._listings.tree(path, remote, max_entries), other_channel=True
        )

    async def contents(
        self, path: bytes, max_file: int, max_files: int
    ) -> dict[bytes, tuple[int, bytes]] | None:
        """The small files under ``path`` in one exec command (see
        :mod:`sshvfs.vfs.cache.contents`); None when exec is unavailable or a file would not
        come whole."""
        bulk = self._listings.bulk
        if bulk is None:
            return None
        remote = self.remote(path)
        return await self._op(
            path, lambda: bulk.contents(remote, max_file, max_files), other_channel=True
        )

    async def file_contents(self, path: bytes, max_file: int) -> tuple[int, bytes] | None:
        """A small file's ``(mtime seconds, data)`` in one exec command, when a remote shell
        is idle now (never queued behind a listing) and a command costs clearly less than
        the OPEN and READ it spares (measured: a command's latency under 1.5 LSTAT round
        trips, i.e. the server's work for it under half a round trip); None when not, or
        not such a file."""
        bulk = self._listings.bulk
        rtt = self.lstat_rtt
        if bulk is None or not bulk.idle or rtt is None or bulk.cost() >= 1.5 * rtt:
            return None
        remote = self.remote(path)
        return await self._op(
            path, lambda: bulk.file_contents(remote, max_file), other_channel=True
        )

    async def close(self) -> None:
        try:
            self._sftp.exit()
        except Exception:  # closing is best effort
            log.debug("closing the SFTP session failed", exc_info=True)
