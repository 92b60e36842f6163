"""A delaying TCP relay: a simulated WAN between the benchmark's clients and its sshd.

This kernel has no netem, so ``scripts/bench --rtt MS`` (and tests that need a link) put
this relay in front of the sshd: every byte is held back half the round trip in each
direction (the link's bandwidth stays loopback's), and the order of bytes in each
direction is kept.

It also counts **round trips**: a client's burst of bytes that follows an answer of the
server. A serial request-reply exchange is one; sixteen requests in flight sent before the
first answer are one. That is the figure that costs the RTT on a real link, so it is
counted the same way for every tool.

The relay runs its own asyncio loop in a daemon thread; 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque

_CHUNK = 256 * 1024


class Relay:
    """``start()``; clients connect to ``port``; ``round_trips`` counts; ``stop()``."""

    def __init__(self, target_port: int, rtt_ms: float) -> None:
        self.target_port = target_port
        self.delay = rtt_ms / 2000.0
        self.port = 0
        self.round_trips = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> Relay:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = fut.result(10)
        return self

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def count(self) -> int:
        with self._lock:
            return self.round_trips

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cw.close()
            return
        for w in (cw, sw):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # True while the last bytes seen went server -> client (the next client bytes are a
        # new round trip)
        state = {"answered": True}
        try:
            await asyncio.gather(
                self._pump(cr, sw, state, upstream=True),
                self._pump(sr, cw, state, upstream=False),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            # stop(): end quietly. A task asyncio's stream server started that ends
            # cancelled makes its done-callback raise (Python 3.11) and print a traceback
            for w in (cw, sw):
                w.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        state: dict[str, bool],
        upstream: bool,
    ) -> None:
        """Forward ``reader`` to ``writer``, each chunk ``delay`` after it arrived."""
        queue: deque[tuple[float, bytes]] = deque()
        wake = asyncio.Event()
        done = False

        async def sender() -> None:
            while True:
                while not queue:
                    if done:
                        return
                    wake.clear()
                    await wake.wait()
                due, data = queue.popleft()
                pause = due - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                writer.write(data)
                await writer.drain()

        sending = asyncio.ensure_future(sender())
        try:
            while data := await reader.read(_CHUNK):
                if upstream and state["answered"]:
                    with self._lock:
                        self.round_trips += 1
                state["answered"] = not upstream
                queue.append((time.monotonic() + self.delay, data))
                wake.set()
        except OSError:
            pass
        finally:
            done = True
            wake.set()
            try:
                await sending
                writer.write_eof()
            except OSError:
                writer.close()
