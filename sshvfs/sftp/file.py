"""SftpFile: one open remote file, streamed.

Reads go through a :class:`~sshvfs.vfs.stream.readahead.ReadAhead`, writes through a
:class:`~sshvfs.vfs.stream.writebehind.WriteBehind`, both on the asyncio side; the mount-wide
bounds and coherence live in :class:`~sshvfs.sftp.streaming.Streaming`. Errors are translated
by :mod:`sshvfs.sftp.vfs`'s one mapping.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import asyncssh

from ..errors import fs_error
from ..tasks import retrieve
from ..transfers import Direction, Transfer
from ..transport.connection import SftpAttrs, SftpHandle
from ..transport.sftppipe import SftpHandle as PipeHandle
from ..vfs.stream.readahead import ReadAhead
from ..vfs.stream.writebehind import WriteBehind
from ..vfs.types import Attrs
from .streaming import Streaming
from .wire import _LOST, _attrs, _pflags, _translate, setstat_attrs

if TYPE_CHECKING:
    from .vfs import SftpVFS

log = logging.getLogger(__name__)


#: a file opened for reading whose size says it is at most this is read at once
READ_AT_OPEN = 64 * 1024


class SftpFile:
    """An open remote file: reads stream through a :class:`ReadAhead`, writes through a
    :class:`WriteBehind`, both on the asyncio side.

    Every method is at most one crossing. A write that fits the write-behind bounds does
    not even wait for its crossing (it is handed to the asyncio loop, whose queue keeps the
    order); ``flush`` of a handle whose writes are all acknowledged crosses not at all. A
    write error is sticky: once the server refused a write, every later write, flush, fsync
    and close of this handle raises it.
    """

    #: a read handle that has moved this much asks once for its size (for the status file)
    learn_size_after = 1 << 20

    def __init__(
        self,
        vfs: SftpVFS,
        path: bytes,
        handle: SftpHandle,
        streaming: Streaming,
        attrs: Attrs | None = None,
        flags: int = os.O_RDONLY,
    ) -> None:
        self._vfs = vfs
        self._path = path
        self._handle = handle
        # after a reconnect the handle is reopened by path, never truncating or creating
        self._reopen_flags = flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)
        self._generation = vfs.generation
        self._reopening: asyncio.Lock | None = None
        self._lost_writes = False
        self._orphaned = False  # its path names another file now: never reopen by it
        self._streaming = streaming
        limits = streaming.limits
        self._reader = ReadAhead(
            self._fetch,
            limits.read_block,
            limits.read_window,
            streaming.read_budget,
            on_batch=streaming.cork.hold,
            # a regular file's size at open (not /proc-like files: they say 0)
            eof_hint=attrs.size if attrs is not None and stat.S_ISREG(attrs.mode) else None,
        )
        self._writer = WriteBehind(
            self._send,
            limits.write_block,
            limits.write_limit,
            streaming.write_budget,
            on_settled=self._settled,
        )
        # the caller's side (FUSE handlers)
        self._error: OSError | None = None
        self._submitted = 0  # bytes handed to the writer; compare with _writer.settled
        self._waiting = 0  # writes waiting for their crossing (past a bound)
        self._attrs = attrs  # what the first fstat says, unless written or truncated first
        self._reading: Transfer | None = None
        self._writing: Transfer | None = None
        self._size_asked = False
        # asyncio side
        self._registered = False
        self._size_task: asyncio.Future[None] | None = None
        #: anything written, truncated or set through this handle (then close asks for the
        #: file's attributes right ahead of the CLOSE: one round trip for both)
        self._changed = False
        #: the file's attributes as this handle closed it (after everything it wrote), when
        #: it changed the file: None otherwise, or when the server did not say
        self.closing_attrs: Attrs | None = None

    @property
    def path(self) -> bytes:
        return self._path

    def orphan(self) -> None:
        self._orphaned = True

    def size_hint(self, size: int) -> None:
        self._reader.eof_hint = size if size > 0 else None
        if self._reopen_flags & os.O_ACCMODE == os.O_RDONLY and 0 < size <= READ_AT_OPEN:
            self._register()  # a write through the mount must drop what this asks for
            self._reader.start(size)

    # -- asyncio side: what the ReadAhead and WriteBehind call ------------------------------

    async def _live_handle(self) -> SftpHandle:
        """The handle, reopened by path if the connection was replaced since it was opened."""
        if self._generation == self._vfs.generation:
            return self._handle
        if self._reopening is None:
            self._reopening = asyncio.Lock()
        async with self._reopening:
            if self._generation != self._vfs.generation:
                if self._orphaned:
                    # unlinked or renamed over while open: its name would reach another file
                    raise fs_error(errno.EIO, self._path, "file removed, lost with the connection")
                await self._vfs.connected()
                generation = self._vfs.generation
                self._handle = await self._vfs.sftp.open(
                    self._vfs.remote(self._path),
                    _pflags(self._reopen_flags),
                    encoding=None,
                    block_size=0,
                )
                self._generation = generation
                log.info("reopened %r after a reconnect", self._path)
        return self._handle

    async def _fetch(self, offset: int, size: int) -> bytes:
        for tries in (1, 2):
            try:
                await self._streaming.order.sent_before()  # never behind an answered write
                handle = (
                    self._handle
                    if self._generation == self._vfs.generation
                    else await self._live_handle()
                )
                # no deadline per block (a timer task per 255 KiB READ costs ~10% of a
                # sequential read): the caller waiting for it has one, and a lost
                # connection fails every request in flight
                data = await handle.read(size, offset)
            except _LOST as exc:
                if tries == 2 or not self._vfs.can_reconnect:
                    raise _translate(exc, self._path) from exc
                # reads are idempotent: wait for the new connection and read again
                await self._vfs.recover(self._generation, exc)
                continue
            except (asyncssh.Error, ConnectionError, EOFError) as exc:
                raise _translate(exc, self._path) from exc
            assert isinstance(data, bytes)  # opened with encoding=None
            return data
        raise AssertionError("unreachable")

    def _send(self, offset: int, data: memoryview) -> Coroutine[Any, Any, None]:
        # a plain function: the ticket is taken when WriteBehind creates the request's task,
        # so every observing request started after that waits for it (see WriteOrder)
        return self._send_ticket(self._streaming.order.issue(), offset, data)

    async def _send_ticket(self, ticket: int, offset: int, data: memoryview) -> None:
        order = self._streaming.order
        try:
            await self._send_now(ticket, offset, data)
        finally:
            order.done(ticket)

    async def _send_now(self, ticket: int, offset: int, data: memoryview) -> None:
        if self._lost_writes:
            raise fs_error(errno.EIO, self._path, "earlier writes were lost with the connection")
        try:
            handle = await self._live_handle()
            self._streaming.order.sent(ticket)  # true from here: the write below sends at once
            # any bytes-like will do: asyncssh only concatenates it into the packet
            await handle.write(data, offset)  # type: ignore[type-var]
        except _LOST as exc:
            # unacknowledged data is gone: this handle fails from now on, loudly
            self._lost_writes = True
            if self._vfs.can_reconnect:
                await self._vfs.recover(self._generation, exc, wait=False)
            raise fs_error(errno.EIO, self._path, f"write lost with the connection: {exc}") from exc
        except asyncssh.SFTPFailure as exc:
            code = await self._explain_write_failure(len(data))
            if code is not None:
                raise fs_error(code, self._path) from exc
            raise _translate(exc, self._path) from exc
        except (asyncssh.Error, ConnectionError, EOFError) as exc:
            raise _translate(exc, self._path) from exc

    async def _fsetstat(self, attrs: asyncssh.SFTPAttrs) -> None:
        try:
            handle = await self._live_handle()
            await self._vfs._deadline(handle.setstat(attrs), self._path)
        except (asyncssh.Error, ConnectionError, EOFError) as exc:
            raise _translate(exc, self._path) from exc

    async def _explain_write_failure(self, size: int) -> int | None:
        """SFTP v3 reports a full disk as FX_FAILURE: ask statvfs whether it is one."""
        try:
            v = await self._vfs.sftp.statvfs(self._vfs.remote(self._path))
        except (asyncssh.Error, OSError):
            return None
        # root may use reserved blocks, so compare with bfree, not bavail
        return errno.ENOSPC if v.bfree * max(v.frsize, 1) < max(size, 1) else None

    def _settled(self, nbytes: int, ok: bool) -> None:
        self._streaming.write_settled += nbytes
        if ok and self._writing is not None:
            self._writing.advance(nbytes)

    async def _learn_size(self, transfer: Transfer) -> None:
        try:
            attrs = await self._handle.stat()
        except Exception:  # closed meanwhile, or the server would not say: no total shown
            log.debug("no size for the status of %r", self._path, exc_info=True)
            return
        transfer.total = attrs.size

    async def _write_op(self, offset: int, data: bytes) -> int:
        self._streaming.changed(self._path)
        return await self._writer.write(offset, data)

    def _start_write(self, offset: int, data: bytes) -> None:
        # a plain callback, not a coroutine: the WRITE tasks exist before any request
        # submitted after this one (see WriteBehind.start)
        self._streaming.changed(self._path)
        self._writer.start(offset, data)

    # -- the VFSFile Protocol ---------------------------------------------------------------

    def _transfer(self, direction: Direction) -> Transfer | None:
        transfers = self._streaming.transfers
        if transfers is None:
            return None
        if direction == "read":
            if self._reading is None:
                self._reading = transfers.begin(self._path, "read", None)
            return self._reading
        if self._writing is None:
            self._writing = transfers.begin(self._path, "write", None)
        return self._writing

    def _check(self) -> None:
        """Raise the write error this handle met, if any."""
        if self._error is None:
            self._error = self._writer.error
        if self._error is not None:
            raise self._error

    def _register(self) -> None:
        """Asyncio side: writes and truncates of this path through the mount now drop
        what this handle read ahead (see Streaming.changed)."""
        if not self._registered:
            self._registered = True
            self._streaming.register(self._path, self._reader)

    async def read(self, offset: int, size: int) -> bytes:
        transfer = self._transfer("read")
        learn = (
            transfer is not None
            and not self._size_asked
            and transfer.bytes_done >= self.learn_size_after
        )
        if learn:
            self._size_asked = True

        async def op() -> bytes:
            self._register()
            if learn and transfer is not None:  # a big read: tell the status file its size
                self._size_task = asyncio.ensure_future(self._learn_size(transfer))
            await self._writer.barrier()
            return await self._reader.read(offset, size)

        data = await self._vfs._run(op(), self._path)
        if transfer is not None:
            transfer.advance(len(data))
        return data

    async def write(self, offset: int, data: bytes) -> int:
        self._check()
        self._transfer("write")
        self._attrs = None
        size = len(data)
        streaming = self._streaming
        fits = not self._waiting and streaming.write_fits(
            self._submitted - self._writer.settled, size
        )
        self._submitted += size
        self._changed = True
        streaming.write_submitted += size
        if fits:
            # within both bounds, so the writer will not wait: hand it over and answer now
            # (started before this returns: ahead of any later call of this or any handle)
            self._start_write(offset, data)
            return size
        self._waiting += 1
        try:  # past a bound: wait until it is sent
            return await self._vfs._run(self._write_op(offset, data), self._path)
        except OSError:
            self._check()
            raise
        finally:
            self._waiting -= 1

    async def truncate(self, size: int) -> None:
        self._attrs = None
        self._changed = True

        async def op() -> None:
            await self._writer.barrier()
            await self._streaming.order.sent_before()
            self._streaming.changed(self._path)
            await self._handle.truncate(size)  # after every write sent before it

        await self._vfs._run(op(), self._path)

    async def fstat(self) -> Attrs:
        attrs, self._attrs = self._attrs, None
        if attrs is not None:
            return attrs  # learnt with the open: the one fstat that follows a create

        async def op() -> Attrs:
            await self._writer.barrier()
            await self._streaming.order.sent_before()
            return _attrs(await self._handle.stat())  # sees every write sent before it

        return await self._vfs._run(op(), self._path)

    async def setstat(self, mode: int | None = None, times: tuple[int, int] | None = None) -> None:
        self._check()
        self._attrs = None
        self._changed = True
        attrs = setstat_attrs(mode, times)

        async def op() -> None:
            await self._writer.request(lambda: self._fsetstat(attrs))

        await self._run_checked(op())

    async def flush(self) -> None:
        settled = self._writer.settled  # read before the error: see WriteBehind's doc
        self._check()
        if settled == self._submitted and not self._writer.busy:
            return  # every write and setstat acknowledged, none failed
        await self._run_checked(self._writer.drain())

    async def fsync(self) -> None:
        self._check()

        async def sync() -> None:
            try:
                await self._handle.fsync()
            except asyncssh.SFTPOpUnsupported:
                # the server cannot fsync; drain() waits for every WRITE's acknowledgement
                log.debug("server has no fsync@openssh.com; fsync is a no-op")

        async def op() -> None:
            # FSYNC rides behind the writes instead of after their answers (one round trip
            # instead of two): the server handles the channel in order, so it syncs what
            # every earlier WRITE wrote; a failed write still fails this fsync (drain)
            await self._writer.barrier()
            await self._streaming.order.sent_before()
            syncing = asyncio.ensure_future(sync())
            try:
                await self._writer.drain()
            except BaseException:
                syncing.add_done_callback(retrieve)  # the write's error is the one to report
                raise
            await syncing

        await self._run_checked(op())

    async def _run_checked(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the asyncio side; on failure raise the sticky write error if
        there is one (it is what the caller must hear), else the failure itself."""
        try:
            await self._vfs._run(coro, self._path)
        except OSError:
            self._check()
            raise

    async def close(self) -> None:
        async def op() -> OSError | None:
            error: OSError | None = None
            try:
                await self._writer.drain()
            except OSError as exc:
                error = exc
            self._reader.close()
            self._streaming.unregister(self._path, self._reader)
            if not self._changed:
                try:
                    await self._handle.close()
                except (asyncssh.Error, ConnectionError, EOFError) as exc:
                    error = error or _translate(exc, self._path)
                return error
            # FSTAT ahead of CLOSE (sent in this order, answered in the same round trip):
            # the caches learn what the file is now without an LSTAT after it. Behind
            # every write answered before this close, through any handle (as fstat)
            await self._streaming.order.sent_before()
            handle = self._handle
            got: object
            closed: object
            if isinstance(handle, PipeHandle):
                got, closed = await handle.stat_then_close()
            else:
                got, closed = await asyncio.gather(
                    handle.stat(), handle.close(), return_exceptions=True
                )
            for result in (got, closed):
                if isinstance(result, BaseException) and not isinstance(
                    result, (asyncssh.Error, ConnectionError, EOFError)
                ):
                    raise result
            if isinstance(closed, BaseException):
                error = error or _translate(closed, self._path)
            elif not isinstance(got, BaseException):
                self.closing_attrs = _attrs(cast(SftpAttrs, got))
            return error

        try:
            error = await self._vfs._run(op(), self._path)
        finally:
            for transfer in (self._reading, self._writing):
                if transfer is not None:
                    transfer.end()
        if error is not None:
            self._error = self._error or error
            raise error
