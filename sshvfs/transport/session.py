"""The session: the current SSH connection, and getting a new one when it is lost.

A :class:`Session` owns one :class:`~sshvfs.transport.connection.Connection` at a time. When
asyncssh reports the connection lost (a dead peer, a missed keepalive, a killed sshd), the
session reconnects in the background with exponential backoff; callers that need the
connection meanwhile :meth:`wait` for it, bounded by their own deadline, and never hang.
Listeners (:attr:`on_connect`) rebind whatever they hold (the SFTP client, the exec lister).

Everything here runs on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable

from ..config import MountOptions, Target
from ..errors import UserError, fs_error
from .connection import Connection, connect

log = logging.getLogger(__name__)

#: backoff between reconnect attempts (seconds): doubled up to the cap
BACKOFF_FIRST = 0.25
BACKOFF_CAP = 10.0


class Session:
    def __init__(self, target: Target, opts: MountOptions, *, reconnect: bool = True) -> None:
        self.target = target
        self.opts = opts
        self.reconnect_enabled = reconnect
        self.current: Connection | None = None
        #: bumped with every new connection: a handle opened on an older one must reopen
        self.generation = 0
        self.state = "disconnected"
        self.since = time.time()
        self.reconnects = 0
        self.last_error: str | None = None
        self.on_connect: list[Callable[[Connection], None]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- connecting ----------------------------------------------------------------------

    async def start(self) -> Connection:
        """The first connection: its errors (bad host, refused key...) go to the user."""
        conn = await connect(self.target, self.opts, on_lost=self._lost_callback(1))
        self._install(conn)
        return conn

    def _lost_callback(self, generation: int) -> Callable[[Exception | None], None]:
        def lost(exc: Exception | None) -> None:
            self.lost(generation, exc)

        return lost

    def _install(self, conn: Connection) -> None:
        previous, self.current = self.current, conn
        if previous is not None:  # it may linger half-open: let it go
            asyncio.ensure_future(previous.close())
        self.generation += 1
        self.state = "connected"
        self.since = time.time()
        self.last_error = None
        self._ready.set()
        for listener in list(self.on_connect):
            try:
                listener(conn)
            except Exception:  # a listener must not stop the others
                log.exception("reconnect listener failed")

    def lost(self, generation: int, exc: Exception | None) -> None:
        """The connection of ``generation`` is gone (asyncssh's connection_lost)."""
        if self._closing or generation != self.generation or self.state != "connected":
            return
        reason = str(exc) if exc else "closed by the server"
        log.warning("connection to %s lost: %s", self.target.host, reason)
        self.last_error = reason
        self._ready.clear()
        if not self.reconnect_enabled:
            self.state = "failed"
            return
        self.state = "reconnecting"
        self.since = time.time()
        self._task = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        delay = BACKOFF_FIRST
        attempt = 0
        while not self._closing:
            attempt += 1
            try:
                conn = await connect(
                    self.target, self.opts, on_lost=self._lost_callback(self.generation + 1)
                )
            except UserError as exc:
                self.last_error = exc.message
                if "does not match" in exc.message:  # a changed host key: never retry
                    log.error("reconnect refused: %s", exc.message)
                    self.state = "failed"
                    self._ready.set()  # wake waiters: they fail now instead of timing out
                    return
                log.info("reconnect attempt %d failed: %s", attempt, exc.message)
            except Exception as exc:  # anything else: try again later
                self.last_error = str(exc)
                log.info("reconnect attempt %d failed: %s", attempt, exc)
            else:
                self.reconnects += 1
                log.warning("reconnected to %s (attempt %d)", self.target.host, attempt)
                self._install(conn)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP)

    # -- using ---------------------------------------------------------------------------

    async def wait(self, timeout: float | None) -> Connection:
        """The live connection, waiting up to ``timeout`` for a reconnect; EIO otherwise."""
        if self.state == "connected" and self.current is not None:
            return self.current
        if self.state in ("reconnecting", "disconnected"):
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                pass
        if self.state == "connected" and self.current is not None:
            return self.current
        # EIO, like a disk that is gone: the caller may try again later
        raise fs_error(
            errno.EIO,
            detail=f"not connected to {self.target.host}"
            f" ({self.state}: {self.last_error or 'no connection'})",
        )

    def status(self) -> dict[str, object]:
        return {
            "state": self.state,
            "since": self.since,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        if self.current is not None:
            await self.current.close()
