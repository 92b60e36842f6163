"""Run one mount: connect, build the VFS stack, serve FUSE until unmounted or signalled."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pyfuse3

from .. import __version__
from ..config import MountOptions, Target
from ..errors import UserError
from ..fuse.compat.features import kernel_cache_supported, serve_on_asyncio
from ..fuse.control import ControlState
from ..fuse.operations import Operations, Timeouts
from ..fuse.ownership import Ownership
from ..sftp.vfs import SftpVFS
from ..tasks import Tasks
from ..transfers import Transfers
from ..transport.connection import Connection
from ..transport.session import Session
from ..vfs.cache.cached import CachingVFS
from ..vfs.symlinks import FollowSymlinksVFS
from ..vfs.types import VFS, Change, Entry
from ..watch.watcher import LOSS_SLACK, RemoteWatcher

log = logging.getLogger(__name__)

#: allocations between two young-generation collections
GC_THRESHOLD = 20_000
#: longest the mount waits for its exec lister before it reports ready (seconds)
EXEC_WARM_UP_WAIT = 2.0


def check_mountpoint(mountpoint: str) -> str:
    path = os.path.abspath(mountpoint)
    if not os.path.exists(path):
        raise UserError(f"mountpoint {mountpoint} does not exist", 2)
    if not os.path.isdir(path):
        raise UserError(f"mountpoint {mountpoint} is not a directory", 2)
    if os.path.ismount(path) and _is_fuse(path):
        raise UserError(f"{mountpoint} is already a mount point; unmount it first", 2)
    return path


def _is_fuse(path: str) -> bool:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == path:
                    return True
    except OSError:
        return True
    return False


def fuse_options(target: Target, opts: MountOptions) -> set[str]:
    out = {f"fsname={opts.fsname or str(target)}", f"subtype={opts.subtype}"}
    for flag in ("allow_other", "allow_root", "default_permissions", "ro", "noatime"):
        if getattr(opts, flag):
            out.add(flag)
    if opts.auto_unmount:
        out.add("auto_unmount")
    if opts.max_read:
        out.add(f"max_read={opts.max_read}")
    return out


async def raise_read_ahead(mountpoint: str, kb: int = 1024) -> None:
    """Raise the kernel's read-ahead for the mount (its sysfs bdi) to ``kb`` KiB, so large
    sequential reads reach us as 1 MiB requests. FUSE_INIT sets it to at most 128 KiB, so
    wait for a stat of the mount root (answered only after INIT) first. Best effort."""
    try:
        st = await asyncio.to_thread(os.stat, mountpoint)
    except OSError as exc:
        log.debug("read-ahead left as it is: %s", exc)
        return
    path = f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb"
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(str(kb))
    except OSError as exc:  # not root, or no sysfs: the kernel default still works
        log.debug("cannot raise read-ahead via %s: %s", path, exc)


@dataclass
class Mount:
    """A prepared mount; :meth:`serve` blocks until it ends."""

    target: Target
    mountpoint: str
    opts: MountOptions
    connection: Connection | None = None
    #: called once mounted, before serving the first request (the CLI reports success)
    on_ready: Callable[[], None] | None = None

    def run(self) -> None:
        """Connect, mount, serve until unmounted or signalled, unmount and disconnect: all
        on one asyncio loop in this (the main) thread, where asyncssh, the VFS layers and
        the FUSE handlers run together."""
        asyncio.run(self.run_async())

    async def run_async(self, before: Callable[[], Awaitable[None]] | None = None) -> None:
        """:meth:`run` on the running loop; ``before`` runs first (the demo starts its
        server), and the connection is closed however it ends."""
        try:
            if before is not None:
                await before()
            await self.connect()
            await self.serve()
        finally:
            await self.shutdown()

    async def connect(self) -> None:
        timeout = (self.opts.connect_timeout or 60) + 30
        self.session = Session(self.target, self.opts, reconnect=self.opts.reconnect)
        async with asyncio.timeout(timeout):
            self.connection = await self.session.start()

    cache: CachingVFS | None = None
    started: float = field(default_factory=time.time)
    #: file transfers in flight, for the status file (None: not tracked)
    transfers: Transfers | None = None
    sftp_vfs: SftpVFS | None = None
    session: Session | None = None
    #: the background tasks: every one ends with the mount
    tasks: Tasks = field(default_factory=Tasks)

    async def ownership(self) -> Ownership:
        """The presentation of owners and modes; idmap=user asks who owns the login dir."""
        assert self.connection is not None
        uid = gid = None
        if self.opts.idmap == "user":
            conn = self.connection
            try:
                async with asyncio.timeout(self.opts.connect_timeout or 60):
                    attrs = await conn.sftp.lstat(conn.home)
            except Exception as exc:  # asyncssh.SFTPError, TimeoutError
                raise UserError(
                    f"idmap=user: cannot stat the login directory {os.fsdecode(conn.home)}: {exc}"
                ) from exc
            uid, gid = attrs.uid, attrs.gid
            log.info(
                "idmap=user: remote uid %s gid %s shown as local %d %d",
                uid,
                gid,
                os.getuid(),
                os.getgid(),
            )
        return Ownership.from_options(self.opts, uid, gid)

    async def build_operations(self) -> Operations:
        assert self.connection is not None
        opts = self.opts
        self.transfers = Transfers()
        self.sftp_vfs = SftpVFS(
            self.connection.sftp,
            self.connection.root,
            exec_conn=self.connection.conn,
            listing=opts.listing,
            listing_threshold=opts.listing_threshold,
            warm_up=opts.listing != "sftp",
            transfers=self.transfers,
            session=self.session,
            timeout=opts.op_timeout,
            spawn=self.tasks.spawn,
        )
        vfs: VFS = self.sftp_vfs
        if opts.follow_symlinks:
            vfs = FollowSymlinksVFS(vfs)
        if opts.caching:
            self.cache = CachingVFS(
                vfs,
                attr_ttl=opts.attr_ttl,
                dir_ttl=opts.dir_ttl,
                max_entries=opts.cache_max_entries,
                negative_ttl=opts.negative_timeout,
                spawn=self.tasks.spawn,
            )
            vfs = self.cache
            self._start_watcher(self.cache)
            # the kernel may trust what we say exactly as long as we trust it ourselves
            timeouts = Timeouts(entry=opts.entry_ttl, attr=opts.attr_ttl)
        else:
            timeouts = Timeouts(entry=0.0, attr=0.0)
        state = ControlState(
            mountpoint=os.fsencode(self.mountpoint),
            remote_root=self.connection.root,
            invalidate=self._invalidate,
            prefetch=self._prefetch,
            lstat=vfs.lstat,
            status=self.status,
        )
        kernel_dir_ttl = None
        if opts.caching and opts.cache_readdir == "yes" and opts.dir_ttl > 0:
            if kernel_cache_supported():
                kernel_dir_ttl = opts.dir_ttl
            else:
                log.info(
                    "the kernel cannot cache listings here (needs Linux 5.1+ and the"
                    " patched pyfuse3 of scripts/setup): every readdir asks sshvfs"
                )
        ops = Operations(
            vfs, timeouts, state, await self.ownership(), kernel_dir_ttl, spawn=self.tasks.spawn
        )
        # after each prompt of a followed shell, its directory is listed afresh
        state.on_cwd = self._invalidate
        self._ops = ops
        return ops

    _ops: Operations | None = None
    watcher: RemoteWatcher | None = None

    def _start_watcher(self, cache: CachingVFS) -> None:
        """Changes made on the server pushed into the caches (watch=): the watcher learns
        the directories in use from the cache, and says where a missing name is missing."""
        opts, sftp_vfs, session = self.opts, self.sftp_vfs, self.session
        assert self.connection is not None and sftp_vfs is not None
        if opts.watch == "no":
            return  # listings and negative entries answer for their whole timeout
        if sftp_vfs.lister is None:
            log.info("watch: off: listing=sftp runs no remote commands")
            return
        watcher = RemoteWatcher(
            opts.watch,
            self.connection.root,
            self._remote_changes,
            lambda: sftp_vfs.lister,
            sftp_vfs.exec_listing,
            interval=opts.watch_interval,
            max_dirs=opts.watch_max_dirs,
            # a dead link is noticed by the keepalives, or by a request's deadline
            loss_slack=max(
                LOSS_SLACK,
                opts.server_alive_interval * opts.server_alive_count_max + 30,
                opts.op_timeout + 30,
            ),
            spawn=self.tasks.spawn,
        )
        cache.on_use = watcher.use
        cache.vouch = watcher.vouches
        # a poll reports a change for up to two intervals after it was made
        cache.remote.own_window = max(cache.remote.own_window, 3 * watcher.interval + 1)
        if session is not None:
            session.on_connect.append(lambda conn: watcher.bind(conn.conn))
        self.watcher = watcher

    async def _remote_changes(
        self, changes: list[Change], listings: dict[bytes, list[Entry]], age: float = 0.0
    ) -> None:
        if self.cache is None:
            return
        kept = self.cache.remote.apply(changes, listings, age)
        if not kept:
            return
        if self.sftp_vfs is not None:
            for change in kept:
                if change.kind in ("entry", "all"):
                    self.sftp_vfs.changed_remotely(None if change.kind == "all" else change.path)
        if self._ops is not None:
            await self._ops.drop_kernel_changes(kept)

    async def _invalidate(self, path: bytes | None) -> None:
        if self.cache is not None:
            self.cache.invalidate(path)
        if self._ops is not None:
            await self._ops.drop_kernel_cache(path)

    async def _prefetch(self, path: bytes) -> int:
        return await self.cache.prefetch(path) if self.cache is not None else -1

    def status(self) -> dict[str, object]:
        conn = self.connection
        return {
            "version": __version__,
            "pid": os.getpid(),
            "host": self.target.host,
            "port": conn.port if conn else None,
            "transport": conn.transport if conn else None,
            "remote_root": os.fsdecode(conn.root) if conn else None,
            "remote_home": os.fsdecode(conn.home) if conn else None,
            "mountpoint": self.mountpoint,
            **(self.session.status() if self.session is not None else {"state": "disconnected"}),
            "started": self.started,
            "uptime": round(time.time() - self.started, 1),
            "cache": self.cache.counts() if self.cache is not None else None,
            # files and directories the kernel holds (lookups not yet forgotten)
            "inodes": len(self._ops.inodes) if self._ops is not None else 0,
            # names the kernel may hold as missing (negative entries it was handed)
            "kernel_misses": len(self._ops.inodes.misses) if self._ops is not None else 0,
            "transfers": self.transfers.snapshot() if self.transfers is not None else [],
            "listing": self._listing_status(),
            "watch": (
                self.watcher.status()
                if self.watcher is not None
                else {"mode": self.opts.watch, "active": "off"}
            ),
        }

    def _listing_status(self) -> dict[str, object] | None:
        vfs = self.sftp_vfs
        lister = vfs.lister if vfs is not None else None
        if vfs is None or lister is None:
            return {"mode": self.opts.listing, "exec": False, "reason": "disabled"}
        return {
            "mode": self.opts.listing,
            "exec": lister.available,
            "reason": lister.reason,
            "commands": lister.commands,
            "shells": lister.shells,
            "prefetches": self.cache.prefetches if self.cache is not None else 0,
            # what decides whether lookups list their directory (a link, cheap exec)
            "exec_latency_ms": round(lister.cost() * 1000, 2),
            "lstat_rtt_ms": round((vfs.lstat_rtt or 0) * 1000, 2),
            "lists_for_lookups": vfs.lists_for_lookups(),
        }

    async def serve(self) -> None:
        """Mount, call ``on_ready``, serve until unmounted or signalled, then unmount.

        The connection stays open: :meth:`shutdown` ends it."""
        serve_on_asyncio()  # FUSE requests are served on this asyncio loop
        ops = await self.build_operations()
        await self._wait_for_exec_lister()
        try:
            pyfuse3.init(ops, self.mountpoint, fuse_options(self.target, self.opts))
        except RuntimeError as exc:
            raise UserError(f"cannot mount on {self.mountpoint}: {exc}") from exc
        log.info("mounted %s on %s", self.target, self.mountpoint)
        try:
            if self.on_ready is not None:
                self.on_ready()
            # a mount allocates in bursts (a listing is thousands of small objects); with the
            # default threshold the cyclic GC would run every 700 of them, mostly finding none
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_THRESHOLD, 10, 10)
            await self._serve_until_unmounted(ops)
        finally:
            try:
                pyfuse3.close(unmount=True)
            except Exception:  # already unmounted by fusermount -u
                log.debug("pyfuse3.close failed", exc_info=True)
        log.info("unmounted %s", self.mountpoint)

    async def _wait_for_exec_lister(self) -> None:
        """Report the mount ready once its exec lister is (bounded): the remote shell's
        start-up (a login shell's rc files: 20-600 ms) would otherwise land on the first
        big listing or tree walk instead of on the mount."""
        warming = self.sftp_vfs.warming if self.sftp_vfs is not None else None
        if warming is None:
            return
        try:
            async with asyncio.timeout(EXEC_WARM_UP_WAIT):
                await asyncio.shield(warming)
        except Exception:  # slow or failed: listings use SFTP until it is there
            log.debug("exec lister not ready at mount time", exc_info=True)

    async def _serve_until_unmounted(self, ops: Operations) -> None:
        """Serve FUSE requests until the mount ends; SIGTERM, SIGINT and SIGHUP unmount."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        for sig in signals:
            loop.add_signal_handler(sig, self._terminate, sig)
        try:
            await self._main(ops)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    @staticmethod
    def _terminate(signum: int) -> None:
        log.info("signal %d: unmounting", signum)
        pyfuse3.terminate()

    async def _main(self, ops: Operations) -> None:
        if self.watcher is not None and self.connection is not None:
            self.watcher.bind(self.connection.conn)
        helpers = [
            self.tasks.spawn(raise_read_ahead(self.mountpoint), "read-ahead"),
            self.tasks.spawn(ops.dirs.expire_kernel_listings(), "kernel listings' expiry"),
        ]
        try:
            await pyfuse3.main()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if self.watcher is not None:
                await self.watcher.close()
        try:
            async with asyncio.timeout(10):
                await ops.close()
        except TimeoutError:
            log.warning("open files were not all closed within 10 s")
        await self.tasks.close()

    async def shutdown(self) -> None:
        await self.tasks.close()  # (done already, unless serving failed)
        session, connection = self.session, self.connection
        self.connection = None
        self.session = None
        try:
            async with asyncio.timeout(10):
                if session is not None:
                    await session.close()
                elif connection is not None:
                    await connection.close()
        except Exception:
            log.debug("closing the connection failed", exc_info=True)


def unmount(mountpoint: str, lazy: bool = False) -> None:
    """``fusermount3 -u`` with a clear error."""
    import subprocess

    path = os.path.abspath(mountpoint)
    cmd = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [path]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError("fusermount3 not found: install the fuse3 package") from None
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        reason = message[-1] if message else os.strerror(errno.EINVAL)
        raise UserError(f"cannot unmount {mountpoint}: {reason}")
