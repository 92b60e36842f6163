"""Streaming: the per-mount side of streamed file I/O.

One object per mount holds the limits (block sizes from the server, windows), the two
shared :class:`ByteBudget` s that bound memory across every open handle (bytes prefetched
for readers, bytes written and not yet acknowledged), the optional :class:`Transfers`
registry, and the readers open on each path, so that a write through one handle drops what
another handle prefetched of the same file. Everything but construction runs on the
asyncio side.

Bounds, per mount: ``read_budget + write_budget`` bytes of file data, plus what the kernel
has asked for at the moment (a few requests of at most 1 MiB each).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..transfers import Transfers
from ..transport.cork import Cork, socket_of
from ..vfs.stream.budget import ByteBudget
from ..vfs.stream.readahead import ReadAhead
from ..vfs.stream.writeorder import WriteOrder

if TYPE_CHECKING:
    from ..transport.connection import SftpSession

log = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass(frozen=True)
class StreamLimits:
    #: largest single READ / WRITE the server takes (limits@openssh.com)
    read_block: int
    write_block: int
    #: how far past a sequential reader's position to keep asking
    read_window: int = 4 * MiB
    #: bytes prefetched for all readers of the mount together
    read_budget: int = 48 * MiB
    #: bytes written and not yet acknowledged, per handle and per mount
    write_limit: int = 8 * MiB
    write_budget: int = 32 * MiB


class Streaming:
    def __init__(
        self,
        limits: StreamLimits,
        transfers: Transfers | None = None,
        cork: Cork | None = None,
    ) -> None:
        self.limits = limits
        self.transfers = transfers
        #: batches each burst of READ requests into one TCP push
        self.cork = cork or Cork(None)
        self.read_budget = ByteBudget(limits.read_budget)
        self.write_budget = ByteBudget(limits.write_budget)
        self._readers: dict[bytes, set[ReadAhead]] = {}
        #: writes answered before the server has them: what observing requests wait for
        self.order = WriteOrder()
        # bytes handed to write-behind by FUSE writes, and bytes settled (acknowledged,
        # failed or refused) by the writers: one writer each, so no lock is needed
        self.write_submitted = 0
        self.write_settled = 0

    @classmethod
    def for_sftp(cls, sftp: SftpSession, transfers: Transfers | None = None) -> Streaming:
        """Block sizes from the server's limits@openssh.com (asyncssh assumes 16 KiB
        without it); corked READ bursts when the session runs over TCP."""
        limits = StreamLimits(max(1, sftp.limits.max_read_len), max(1, sftp.limits.max_write_len))
        return cls(limits, transfers, Cork(socket_of(sftp)))

    def write_fits(self, handle_unsettled: int, size: int) -> bool:
        """Trio side: would ``size`` more bytes stay within both write bounds without
        waiting? (Then a write can be handed over without waiting for the crossing.)"""
        limits = self.limits
        if handle_unsettled + size > limits.write_limit:
            return False
        return self.write_submitted - self.write_settled + size <= limits.write_budget

    def register(self, path: bytes, reader: ReadAhead) -> None:
        self._readers.setdefault(path, set()).add(reader)

    def unregister(self, path: bytes, reader: ReadAhead) -> None:
        readers = self._readers.get(path)
        if readers is not None:
            readers.discard(reader)
            if not readers:
                del self._readers[path]

    def changed(self, path: bytes | None) -> None:
        """``path`` (None: every file) was written or truncated: every reader of it forgets
        its prefetch."""
        if path is None:
            for readers in self._readers.values():
                for reader in readers:
                    reader.invalidate()
            return
        for reader in self._readers.get(path, ()):
            reader.invalidate()
