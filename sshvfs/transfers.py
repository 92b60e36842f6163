"""Transfers: a registry of file reads and writes in flight, for the status file.

A :class:`Transfer` is begun by the code that moves the bytes (an open remote file) and
advanced as bytes move (on the mount's asyncio loop). :meth:`Transfers.snapshot` may be called
from any thread; it returns plain dicts ready for JSON.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

log = logging.getLogger(__name__)

Direction = Literal["read", "write"]


class Transfer:
    """One handle's bytes in one direction. Only its owner advances it."""

    def __init__(
        self,
        registry: Transfers,
        key: int,
        path: bytes,
        direction: Direction,
        total: int | None,
        started: float,
        started_mono: float,
    ) -> None:
        self._registry = registry
        self._key = key
        self.path = path
        self.direction: Direction = direction
        self.total = total
        self.bytes_done = 0
        self.started = started
        self._started_mono = started_mono

    def advance(self, nbytes: int) -> None:
        # one writer per transfer; an int store is atomic under the GIL
        self.bytes_done += nbytes

    def end(self) -> None:
        """Remove it from the registry (idempotent)."""
        self._registry._remove(self._key)

    def snapshot(self, now_mono: float) -> dict[str, Any]:
        elapsed = now_mono - self._started_mono
        done = self.bytes_done
        return {
            "path": os.fsdecode(self.path),
            "direction": self.direction,
            "bytes_done": done,
            "total": self.total,
            "rate_bps": int(done / elapsed) if elapsed > 0 else 0,
            "started": self.started,
        }


class Transfers:
    """Every transfer in flight in one mount; thread-safe."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._active: dict[int, Transfer] = {}
        self._keys = itertools.count(1)

    def begin(self, path: bytes, direction: Direction, total: int | None = None) -> Transfer:
        with self._lock:
            key = next(self._keys)
            transfer = Transfer(self, key, path, direction, total, self._clock(), self._monotonic())
            self._active[key] = transfer
        return transfer

    def _remove(self, key: int) -> None:
        with self._lock:
            self._active.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._active)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every transfer in flight, oldest first: path, direction, bytes_done, total,
        rate_bps (average since it began) and started (epoch seconds)."""
        with self._lock:
            active = list(self._active.values())
        now = self._monotonic()
        return [t.snapshot(now) for t in active]
