"""Driver: one inotify driver of the watcher (:mod:`sshvfs.watch.watcher`): the exec channel
running :func:`~sshvfs.watch.remote.driver_command`, its remote work directory, and the
batches it was given with the futures their acknowledgements settle."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


class Driver:
    """One inotify driver: its process, work directory and batches."""

    def __init__(self, proc: Any, workdir: bytes) -> None:
        self.proc = proc
        self.workdir = workdir
        self.batches = 0
        self.acks: dict[int, asyncio.Future[str | None]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for ack in self.acks.values():
            if not ack.done():
                ack.set_result("the driver ended")
        with contextlib.suppress(Exception):
            self.proc.stdin.write_eof()
        with contextlib.suppress(Exception):
            self.proc.close()
