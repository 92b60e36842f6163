"""Directory listings with ONE command on the SSH exec channel, and when to use them.

OpenSSH answers SFTP READDIR with at most 100 names a reply; :class:`ExecLister` runs the
:mod:`sshvfs.execlist.commands` ``find`` command instead, in a long-lived remote shell
(:mod:`sshvfs.execlist.shell`), parsing its output as it streams in. Whether the server can do
it at all is probed once per connection (exec allowed, sh, GNU find with -printf, a quiet
rc file); when it cannot, :attr:`ExecLister.available` turns False and callers use SFTP.
:class:`DirLister` picks SFTP or exec per directory, as the pure
:class:`~sshvfs.execlist.policy.ListingPolicy` says.

Everything runs on the mount's one asyncio loop. Commands are
sent as bytes (asyncssh passes them through unencoded), so non-UTF-8 paths survive.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

import asyncssh

from ..tasks import retrieve
from ..transport.connection import SftpAttrs, SftpName, SftpSession
from ..vfs.types import Entry, listing_progress, tree_progress
from .archive import (
    ContentParser,
    FileParser,
    archive_limit,
    contents_command,
    file_command,
    parse_archive,
)
from .commands import (
    BulkCommandError,
    ListingParser,
    error_from_exit,
    listing_command,
    parse_probe,
    probe_command,
    tree_command,
)
from .parser import native
from .policy import DEFAULT_EXEC_LATENCY, ListingPolicy
from .shell import RemoteShell, ShellClosed
from .treestream import TreeStream

log = logging.getLogger(__name__)

#: OpenSSH's MaxSessions (default 10) counts the SFTP session, every exec and every other
#: channel of the connection alike: bulk listings never hold more than this many at once.
DEFAULT_SESSIONS = 2
#: a server that never answers the probe is no server to run listings on
PROBE_TIMEOUT = 15.0
#: an idle shell holds a channel and a process on the server: close it after this long,
#: except the WARM_SHELLS most recently used, kept for the connection's life
IDLE_TIMEOUT = 60.0
#: shells started with the probe and kept warm (starting one costs a channel, a login and
#: the rc files: 20-250 ms on loopback, more across a link). Two: a walk's first steps run
#: a tree prefetch and a content fetch at once, and the second one waited for a start
WARM_SHELLS = 2


class ExecUnavailable(BulkCommandError):
    """The exec channel cannot list right now (refused, no GNU find): use SFTP (ENOTSUP)."""

    def __init__(self, reason: str, path: bytes | None = None) -> None:
        super().__init__(None, reason.encode(), path, errno.ENOTSUP)
        self.reason = reason


class ExecLister:
    """Bulk listings over one SSH connection's exec channel, through a small pool of
    long-lived :class:`~sshvfs.execlist.shell.RemoteShell` (at most ``sessions`` channels;
    ``warm`` of them, at most ``sessions``, start with the probe and stay; idle ones beyond
    those are closed after ``idle_timeout`` seconds).

    ``time_resolution_ns`` floors the times find reports (nanoseconds) to what the SFTP
    session reports, so an attribute never depends on which path fetched it.
    """

    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        *,
        sessions: int = DEFAULT_SESSIONS,
        time_resolution_ns: int = 1,
        probe_timeout: float = PROBE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        warm: int = WARM_SHELLS,
    ) -> None:
        if sessions < 1:
            raise ValueError(f"sessions must be >= 1, not {sessions}")
        self._warm = max(1, min(warm, sessions))
        #: the start of the warm shells after the first (the probe starts the first)
        self._warming: asyncio.Task[None] | None = None
        self._conn = conn
        self._resolution = time_resolution_ns
        self._probe_timeout = probe_timeout
        self._idle_timeout = idle_timeout
        # asyncio primitives bind to the running loop on first use, not here
        self._slots = asyncio.Semaphore(sessions)
        # a tree prefetch may hold one shell at most: the rest stay for interactive listings
        self._tree_slot = asyncio.Semaphore(1)
        self._probe_lock = asyncio.Lock()
        self._idle: list[RemoteShell] = []
        self._reaper: asyncio.TimerHandle | None = None
        self._available: bool | None = None
        self.reason: str | None = None
        #: seconds to start a shell (login, rc files) and to run a command in a warm one
        self.start_latency: float | None = None
        self.latency: float | None = None
        #: shells started, listing commands run, running now, most ever run at once
        self.shells = 0
        self.commands = 0
        self.running = 0
        self.peak = 0

    @property
    def available(self) -> bool | None:
        """True/False once probed; None before."""
        return self._available

    def cost(self) -> float:
        """Seconds before a listing command's output starts, as measured so far."""
        if self._idle and self.latency is not None:
            return self.latency
        return self.start_latency if self.start_latency is not None else DEFAULT_EXEC_LATENCY

    def disable(self, reason: str) -> None:
        """Stop using exec on this connection; callers fall back to SFTP."""
        if self._available is not False:
            self._available = False
            self.reason = reason
        self.close()

    def close(self) -> None:
        """Close the idle shells (busy ones close when their command ends)."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        if self._warming is not None:
            self._warming.cancel()
            self._warming = None
        idle, self._idle = self._idle, []
        for shell in idle:
            shell.close()

    async def _one_shot_probe(self) -> str | None:
        """The probe as its own command with stdin at EOF: a ForceCommand (internal-sftp)
        then ends at once instead of waiting for input. None if it passed, else why not."""
        try:
            done = await asyncio.wait_for(
                self._conn.run(
                    cast(str, probe_command()),  # bytes: sent unencoded
                    encoding=None,
                    stdin=asyncssh.DEVNULL,
                    check=False,
                ),
                self._probe_timeout,
            )
        except TimeoutError:
            return f"the probe command got no answer in {self._probe_timeout:.0f} s"
        except (asyncssh.Error, OSError) as exc:
            # ChannelOpenError: exec refused (asyncssh without a process factory, ...)
            return f"the server refused to run a command ({exc})"
        stdout = done.stdout if isinstance(done.stdout, bytes) else b""
        if parse_probe(stdout):
            return None
        stderr = done.stderr if isinstance(done.stderr, bytes) else b""
        detail = stderr.decode("utf-8", "replace").strip()[:200] or f"stdout {stdout[:60]!r}"
        return (
            f"the probe failed (exit status {done.exit_status}: {detail});"
            " bulk listing needs sh, GNU find with -printf and a quiet rc file"
        )

    async def _open_shell(self, gate: asyncio.Future[bool] | None = None) -> RemoteShell:
        """Start a shell and probe it; with ``gate``, send nothing until it says True."""
        started = time.monotonic()
        try:
            shell = await RemoteShell.open(self._conn)
        except (asyncssh.Error, OSError) as exc:
            # MaxSessions reached, connection lost
            raise ExecUnavailable(f"cannot start a remote shell: {exc}") from exc
        self.shells += 1
        try:
            if gate is not None and not await gate:
                raise ExecUnavailable("the probe command did not pass")
        except BaseException:
            shell.close()
            raise
        if not await shell.check(self._probe_timeout):
            raise ExecUnavailable("a remote shell failed the probe")
        self.start_latency = time.monotonic() - started
        # a shell's first command also waits for the shell itself to start (100 ms and
        # more across a link): a second one measures what every later command costs
        checked = time.monotonic()
        if not await shell.check(self._probe_timeout):
            raise ExecUnavailable("a remote shell failed the probe")
        self.latency = time.monotonic() - checked
        return shell

    async def probe(self) -> bool:
        """Whether bulk listing works here; probes once per connection. The one-shot probe
        and the first shell start together: one start-up delay, not two."""
        if self._available is not None:
            return self._available
        async with self._probe_lock:
            if self._available is not None:
                return self._available
            async with self._slots:
                gate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                shell_task = asyncio.ensure_future(self._open_shell(gate))
                # whatever happens, the task's outcome is retrieved (no asyncio warning)
                shell_task.add_done_callback(retrieve)
                try:
                    failure = await self._one_shot_probe()
                except BaseException:  # cancelled: the shell task closes its shell
                    gate.set_result(False)
                    raise
                gate.set_result(failure is None)
                try:
                    shell = await shell_task
                except ExecUnavailable as exc:
                    failure = failure or exc.reason
            if failure is not None:
                self.disable(failure)
                return False
            self._available = True
            self._release(shell)
            if self._warm > 1:
                self._warming = asyncio.ensure_future(self._warm_up())
                self._warming.add_done_callback(retrieve)
            log.debug(
                "exec listing available: a shell starts in %.1f ms, runs a command in %.1f ms;"
                " output parsed in %s",
                (self.start_latency or 0) * 1e3,
                (self.latency or 0) * 1e3,
                "C" if native() else "Python (the C parser is not built, see setup.py)",
            )
            return True

    async def _warm_up(self) -> None:
        """Start shells until ``warm`` are there (each holding a slot while it starts: a
        command that needs one meanwhile waits for it rather than start its own)."""
        for _ in range(self._warm - 1):
            async with self._slots:
                alive = sum(not shell.closed for shell in self._idle) + self.running
                if self._available is not True or alive >= self._warm:
                    return
                try:
                    shell = await self._open_shell()
                except ExecUnavailable as exc:  # MaxSessions: the one shell serves
                    log.debug("no second remote shell: %s", exc.reason)
                    return
                self._release(shell)

    def _release(self, shell: RemoteShell) -> None:
        if shell.closed or self._available is False:
            shell.close()
            return
        self._idle.append(shell)
        if self._reaper is None and len(self._idle) > self._warm:
            loop = asyncio.get_running_loop()
            self._reaper = loop.call_later(self._idle_timeout, self._reap)

    def _reap(self) -> None:
        """Close the shells idle for ``idle_timeout``, all but the ``warm`` most recently
        used."""
        self._reaper = None
        self._idle = [s for s in self._idle if not s.closed]
        self._idle.sort(key=lambda s: s.last_used)
        now = time.monotonic()
        warm = self._warm
        while len(self._idle) > warm and now - self._idle[0].last_used >= self._idle_timeout:
            self._idle.pop(0).close()
        if len(self._idle) > warm:
            wait = self._idle[0].last_used + self._idle_timeout - now
            self._reaper = asyncio.get_running_loop().call_later(max(wait, 0.1), self._reap)

    async def _run(
        self,
        command: bytes,
        path: bytes,
        limit: int | None,
        on_batch: Callable[[list[tuple[bytes, Entry]]], None] | None = None,
        parser: Any = None,
    ) -> list[tuple[bytes, Entry]] | None:
        """Run one listing command in an idle shell (or a new one); see RemoteShell.run.
        ``parser``: another framed parser than a listing's (e.g. a ContentParser)."""
        if not await self.probe():
            raise ExecUnavailable(self.reason or "exec listing unavailable", path)
        async with self._slots:
            while self._idle and self._idle[-1].closed:
                self._idle.pop()
            shell = self._idle.pop() if self._idle else await self._open_shell()
            if parser is None:
                parser = ListingParser(self._resolution, framed=True)
            self.commands += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                records, status, stderr = await shell.run(command, parser, limit, on_batch)
            except ShellClosed as exc:
                raise ExecUnavailable(f"remote shell ended: {exc}", path) from exc
            except (asyncssh.Error, ConnectionError) as exc:
                raise ExecUnavailable(f"exec channel failed: {exc}", path) from exc
            finally:
                self.running -= 1
                self._release(shell)
        if records is not None and status != 0:
            if records:
                # the directory itself was read; something below it failed (an entry
                # removed mid-listing, an unreadable subdirectory): not its own error
                raise BulkCommandError(status, stderr, path, errno.EIO)
            raise error_from_exit(status, stderr, path)
        return records

    async def command(self, command: bytes, parser: Any) -> None:
        """Run another short command in one of the shells, its output parsed by ``parser``
        (a framed one: ``feed`` and ``exit_status``). Errors as :meth:`listing`."""
        await self._run(command, b"", None, None, parser)

    async def listing(self, remote_dir: bytes) -> list[Entry]:
        """Every entry of ``remote_dir`` (absolute) with lstat attributes and symlink
        targets. Raises ExecUnavailable (ENOTSUP: use SFTP), the directory's own error
        (ENOENT, EACCES, ENOTDIR...), or another OSError carrying the remote stderr."""
        progress = listing_progress.get()
        on_batch = None
        if progress is not None:

            def on_batch(batch: list[tuple[bytes, Entry]]) -> None:
                progress([entry for _, entry in batch])

        records = await self._run(listing_command(remote_dir), remote_dir, None, on_batch)
        assert records is not None
        return [entry for _, entry in records]

    async def tree(
        self,
        remote_dir: bytes,
        max_entries: int,
        on_batch: Callable[[list[tuple[bytes, Entry]]], None] | None = None,
    ) -> list[tuple[bytes, Entry]] | None:
        """``(relative path, Entry)`` for the whole subtree, in pre-order (see
        :mod:`sshvfs.execlist.treestream`); None when it holds more than ``max_entries`` entries.
        ``on_batch`` gets the records as they are parsed. Errors as :meth:`listing`."""
        async with self._tree_slot:
            return await self._run(tree_command(remote_dir), remote_dir, max_entries, on_batch)

    async def contents(
        self, remote_dir: bytes, max_file: int, max_files: int
    ) -> dict[bytes, tuple[int, bytes]] | None:
        """The small readable files under ``remote_dir``: ``{relative path: (mtime seconds,
        data)}``, or None when tar could not read every one of them whole and unchanged."""
        command = contents_command(remote_dir, max_file, max_files)
        parser = ContentParser(archive_limit(max_file, max_files))
        archive = await self._archive(command, remote_dir, parser)
        return None if archive is None else parse_archive(archive)

    @property
    def idle(self) -> bool:
        """Would a command start now, in a shell already running (no start-up, no queue)?"""
        return bool(
            self._available
            and not self._slots.locked()
            and any(not shell.closed for shell in self._idle)
        )

    async def file_contents(self, remote: bytes, max_file: int) -> tuple[int, bytes] | None:
        """One small readable regular file: ``(mtime seconds, data)``, or None when it is
        not one (any more), or tar could not read it whole and unchanged."""
        parser = FileParser(archive_limit(max_file, 1))
        archive = await self._archive(file_command(remote), remote, parser)
        if archive is None:
            return None
        found = parse_archive(archive).get(remote.rpartition(b"/")[2])
        return found if found is not None and len(found[1]) <= max_file else None

    async def _archive(
        self, command: bytes, path: bytes, parser: ContentParser | FileParser
    ) -> bytes | None:
        """The tar archive an :mod:`~sshvfs.execlist.archive` command sends (read by
        ``parser``), None unless tar read every file whole and unchanged."""
        try:
            await self._run(command, path, None, None, parser)
        except OSError as exc:
            if parser.archive is None:
                raise
            log.debug("content fetch of %r: %s", path, exc)
        return parser.archive if parser.tar_status == 0 else None


def unusable(exc: OSError) -> bool:
    """Does ``exc`` from :meth:`ExecLister.listing` say nothing about the directory itself,
    so that SFTP should be asked instead? (ENOENT, EACCES, ENOTDIR, ELOOP are answers.)"""
    return exc.errno not in (errno.ENOENT, errno.EACCES, errno.ENOTDIR, errno.ELOOP)


def group_tree(path: bytes, records: list[tuple[bytes, Entry]]) -> dict[bytes, list[Entry]]:
    """:meth:`ExecLister.tree` records of the directory at mount path ``path`` -> the
    listing of every directory in it, keyed by mount path (empty directories included)."""
    listings: dict[bytes, list[Entry]] = {path: []}
    prefix = b"/" if path == b"/" else path + b"/"
    for rel, entry in records:
        parent_rel = rel.rpartition(b"/")[0]
        parent = prefix + parent_rel if parent_rel else path
        listings.setdefault(parent, []).append(entry)
        if entry.attrs.is_dir:
            listings.setdefault(prefix + rel, [])
    return listings


class DirLister:
    """Lists directories by SFTP READDIR or by one exec command, as a
    :class:`~sshvfs.execlist.commands.ListingPolicy` says; falls back to SFTP whenever exec cannot
    answer (asyncio side). ``to_entry`` turns an SFTP name into an Entry (None for . ..).
    """

    def __init__(
        self,
        sftp: SftpSession,
        to_entry: Callable[[SftpName], Entry | None],
        policy: ListingPolicy,
        bulk: ExecLister | None,
    ) -> None:
        self._sftp = sftp
        self._to_entry = to_entry
        self.policy = policy
        self.bulk = bulk
        self._fallback_logged = False

    async def listing(self, path: bytes, remote: bytes) -> list[Entry]:
        """The entries of the directory at mount path ``path`` (remote path ``remote``)."""
        if self.bulk is not None:
            self.policy.exec_latency = self.bulk.cost()
        entries = None
        if self.bulk is not None and self.policy.exec_first(path):
            entries = await self._exec_listing(remote)
        if entries is None:
            entries = await self._sftp_listing(path, remote)
        self._note_sizes(path, entries)
        return entries

    async def tree(
        self, path: bytes, remote: bytes, max_entries: int
    ) -> dict[bytes, list[Entry]] | None:
        """See :meth:`sshvfs.vfs.types.VFS.tree`."""
        if self.bulk is None:
            return None
        progress = tree_progress.get()
        stream = TreeStream(path) if progress is not None else None

        def on_batch(batch: list[tuple[bytes, Entry]]) -> None:
            assert stream is not None and progress is not None
            for directory, entries in stream.feed(batch):
                progress(directory, entries)
            while stream.broken:
                progress(stream.broken.pop(), None)

        try:
            records = await self.bulk.tree(remote, max_entries, on_batch if stream else None)
        except OSError as exc:
            if not isinstance(exc, ExecUnavailable) and not unusable(exc):
                raise
            self._log_fallback()
            log.debug("no tree listing of %r: %s", remote, exc)
            return None
        if records is None:
            return None
        listings = group_tree(path, records)
        for directory, entries in listings.items():
            self._note_sizes(directory, entries)
        return listings

    def _note_sizes(self, path: bytes, entries: list[Entry]) -> None:
        """Remember big subdirectories' st_size: auto mode then lists them with exec first."""
        prefix = b"/" if path == b"/" else path + b"/"
        for entry in entries:
            if entry.attrs.size > 4096 and entry.attrs.is_dir:  # cheap test first
                self.policy.note_size(prefix + entry.name, entry.attrs.size)

    def _log_fallback(self) -> None:
        """One log line per connection once exec listing turned out unusable."""
        if self._fallback_logged or self.bulk is None or self.bulk.available is not False:
            return
        self._fallback_logged = True
        level = logging.WARNING if self.policy.mode == "exec" else logging.INFO
        log.log(level, "listing directories with SFTP READDIR: %s", self.bulk.reason)

    async def _exec_listing(self, remote: bytes) -> list[Entry] | None:
        """One exec command; None when SFTP must answer instead (no exec here, channel
        refused, a partial failure); a missing/unreadable directory raises its OSError."""
        assert self.bulk is not None
        try:
            return await self.bulk.listing(remote)
        except OSError as exc:
            if not isinstance(exc, ExecUnavailable) and not unusable(exc):
                raise
            self._log_fallback()
            if self.bulk.available:
                log.debug("exec listing of %r failed, using SFTP: %s", remote, exc)
            return None

    async def _sftp_listing(
        self, path: bytes, remote: bytes, allow_switch: bool = True
    ) -> list[Entry]:
        """SFTP READDIR; in auto mode a directory that turns out huge is handed to exec
        (see ListingPolicy.switch), its st_size asked for alongside once 100 names came."""
        policy, bulk = self.policy, self.bulk
        may_switch = allow_switch and policy.mode == "auto" and bulk is not None
        st_size = policy.size_hint(path)
        size_task: asyncio.Future[SftpAttrs] | None = None
        entries: list[Entry] = []
        started = time.monotonic()
        switched = False
        names = cast(AsyncGenerator[SftpName, None], self._sftp.scandir(remote))
        try:
            async with contextlib.aclosing(names):
                async for name in names:
                    entry = self._to_entry(name)
                    if entry is None:
                        continue
                    entries.append(entry)
                    if not may_switch or len(entries) % 100:
                        continue
                    assert bulk is not None
                    if bulk.available is False:
                        may_switch = False
                        continue
                    if st_size is None and size_task is None:
                        size_task = asyncio.ensure_future(self._sftp.lstat(remote))
                    elif st_size is None and size_task is not None and size_task.done():
                        failed = size_task.cancelled() or size_task.exception() is not None
                        st_size = 0 if failed else (size_task.result().size or 0)
                    if not policy.switch(len(entries), time.monotonic() - started, st_size):
                        continue
                    if bulk.available is None and await bulk.probe():
                        # asked again below: the probe measured what a command costs here
                        policy.exec_latency = bulk.cost()
                    if bulk.available and policy.switch(
                        len(entries), time.monotonic() - started, st_size
                    ):
                        switched = True
                        break
        finally:
            if size_task is not None:
                size_task.cancel()
                if size_task.done() and not size_task.cancelled():
                    size_task.exception()  # retrieved: no "never retrieved" warning
        if switched:
            log.debug("%r: %d entries by SFTP so far, switching to exec", remote, len(entries))
            bulk_entries = await self._exec_listing(remote)
            if bulk_entries is not None:
                return bulk_entries
            return await self._sftp_listing(path, remote, allow_switch=False)
        self._log_fallback()
        policy.learn_sftp(len(entries), time.monotonic() - started)
        return entries
