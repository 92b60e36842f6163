"""WriteBehind against an in-memory file: order, bounds, sticky first error, accounting.
Plus ByteBudget, Transfers and Cork. Pure asyncio, no server."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import threading

import pytest

from sshvfs.transfers import Transfers
from sshvfs.transport.cork import Cork
from sshvfs.vfs.stream.budget import ByteBudget
from sshvfs.vfs.stream.writebehind import WriteBehind

BLOCK = 1000


class FakeRemote:
    """Applies WRITEs in the order they are sent; acknowledges when told to (or at once)."""

    def __init__(self, auto_ack: bool = True) -> None:
        self.data = bytearray()
        self.sent: list[tuple[int, int]] = []
        self.auto_ack = auto_ack
        self.unacked: list[asyncio.Future[None]] = []
        self.fail_from: int | None = None  # requests from this index on fail
        self.max_unacked = 0

    async def send(self, offset: int, data: memoryview) -> None:
        # the first step, before any await: this is when the request "leaves"
        index = len(self.sent)
        self.sent.append((offset, len(data)))
        if self.fail_from is not None and index >= self.fail_from:
            await asyncio.sleep(0)
            raise OSError(errno.ENOSPC, "injected")
        end = offset + len(data)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data
        if self.auto_ack:
            await asyncio.sleep(0)
            return
        ack = asyncio.get_running_loop().create_future()
        self.unacked.append(ack)
        self.max_unacked = max(self.max_unacked, len(self.unacked))
        await ack

    def ack_all(self) -> None:
        for f in self.unacked:
            if not f.done():
                f.set_result(None)
        self.unacked.clear()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_overlapping_writes_land_in_order() -> None:
    remote = FakeRemote()
    wb = WriteBehind(remote.send, BLOCK, limit=8 * BLOCK)
    reference = bytearray()
    rng = random.Random(1)

    async def main() -> None:
        for _ in range(300):
            offset = rng.randrange(0, 20_000)
            data = rng.randbytes(rng.randrange(1, 3500))
            end = offset + len(data)
            if end > len(reference):
                reference.extend(bytes(end - len(reference)))
            reference[offset:end] = data
            assert await wb.write(offset, data) == len(data)
        await wb.drain()

    run(main())
    assert remote.data == reference
    assert all(size <= BLOCK for _, size in remote.sent)
    assert wb.acked == wb.settled == sum(size for _, size in remote.sent)


def test_a_started_write_leaves_before_anything_queued_after_it() -> None:
    """The fast path: ``start`` from a loop callback, then the next request's task."""
    remote = FakeRemote()
    wb = WriteBehind(remote.send, BLOCK, limit=8 * BLOCK)

    async def stat() -> None:
        remote.sent.append((-1, 0))  # a request sent at this task's first step

    async def main() -> None:
        wb.start(0, bytes(2500))  # a handler starts the write and answers
        await asyncio.get_running_loop().create_task(stat())  # the next request's handler
        await wb.drain()

    run(main())
    assert remote.sent == [(0, BLOCK), (BLOCK, BLOCK), (2 * BLOCK, 500), (-1, 0)]
    assert wb.settled == 2500


def test_bytes_in_flight_are_bounded_per_handle_and_per_mount() -> None:
    remote = FakeRemote(auto_ack=False)
    mount = ByteBudget(5 * BLOCK)
    a = WriteBehind(remote.send, BLOCK, limit=3 * BLOCK, budget=mount)
    b = WriteBehind(remote.send, BLOCK, limit=3 * BLOCK, budget=mount)

    async def writer(wb: WriteBehind, base: int) -> None:
        for i in range(10):
            await wb.write(base + i * BLOCK, bytes(BLOCK))
            assert wb.in_flight <= 3 * BLOCK
            assert mount.used <= 5 * BLOCK

    async def acker() -> None:
        while any(not t.done() for t in tasks):
            await asyncio.sleep(0)
            remote.ack_all()

    async def main() -> None:
        nonlocal tasks
        tasks = [asyncio.ensure_future(writer(a, 0)), asyncio.ensure_future(writer(b, 50_000))]
        await asyncio.gather(acker(), *tasks)
        remote.ack_all()
        await asyncio.gather(a.drain(), b.drain())

    tasks: list[asyncio.Task[None]] = []
    run(main())
    assert remote.max_unacked <= 5
    assert mount.used == 0 and mount.peak <= 5 * BLOCK


def test_the_first_error_is_kept_and_raised_by_every_later_call() -> None:
    remote = FakeRemote()
    settled: list[tuple[int, bool]] = []
    wb = WriteBehind(
        remote.send, BLOCK, limit=8 * BLOCK, on_settled=lambda n, ok: settled.append((n, ok))
    )

    async def main() -> None:
        await wb.write(0, bytes(2500))
        await wb.drain()
        remote.fail_from = len(remote.sent)
        assert await wb.write(2500, bytes(1500)) == 1500  # accepted: the failure comes later
        with pytest.raises(OSError) as first:
            await wb.drain()
        assert first.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as again:
            await wb.write(4000, b"more")
        assert again.value is first.value
        with pytest.raises(OSError) as flushed:
            await wb.drain()
        assert flushed.value is first.value

    run(main())
    # every byte handed over is accounted for: acknowledged, failed, or refused
    assert wb.settled == 2500 + 1500 + 4
    assert sum(n for n, ok in settled if ok) == wb.acked == 2500


def test_barrier_waits_for_a_write_still_waiting_for_room() -> None:
    remote = FakeRemote(auto_ack=False)
    wb = WriteBehind(remote.send, BLOCK, limit=BLOCK)
    order: list[str] = []

    async def main() -> None:
        await wb.write(0, bytes(BLOCK))  # fills the handle's bound
        blocked = asyncio.ensure_future(wb.write(BLOCK, bytes(BLOCK)))
        await asyncio.sleep(0)

        async def after() -> None:
            await wb.barrier()
            order.append("barrier")

        waiter = asyncio.ensure_future(after())
        await asyncio.sleep(0)
        assert not order
        remote.ack_all()
        await blocked
        order.append("sent")
        await waiter
        remote.ack_all()
        await wb.drain()

    run(main())
    assert order == ["sent", "barrier"] or order == ["barrier", "sent"]
    assert remote.sent == [(0, BLOCK), (BLOCK, BLOCK)]


def test_cancelled_write_is_settled() -> None:
    remote = FakeRemote(auto_ack=False)
    wb = WriteBehind(remote.send, BLOCK, limit=BLOCK)

    async def main() -> None:
        await wb.write(0, bytes(BLOCK))
        blocked = asyncio.ensure_future(wb.write(BLOCK, bytes(BLOCK)))
        await asyncio.sleep(0)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        remote.ack_all()
        await wb.drain()

    run(main())
    assert wb.settled == 2 * BLOCK and wb.acked == BLOCK


def test_byte_budget_is_first_come_first_served() -> None:
    budget = ByteBudget(10)
    got: list[str] = []

    async def take(name: str, n: int) -> None:
        await budget.acquire(n)
        got.append(name)

    async def main() -> None:
        await budget.acquire(8)
        big = asyncio.ensure_future(take("big", 9))
        await asyncio.sleep(0)
        small = asyncio.ensure_future(take("small", 1))  # would fit, but waits its turn
        await asyncio.sleep(0)
        assert got == [] and not budget.try_acquire(1)
        budget.release(8)
        await asyncio.gather(big, small)
        assert got == ["big", "small"]
        budget.release(10)
        await budget.acquire(25)  # larger than the whole budget: allowed when idle
        budget.release(25)

    run(main())
    assert budget.used == 0


def test_transfers_snapshot_from_another_thread() -> None:
    now = [1000.0]
    registry = Transfers(clock=lambda: 1_700_000_000.0, monotonic=lambda: now[0])
    t = registry.begin(b"/dir/file\xff", "read", 300)

    def mover() -> None:
        for _ in range(100):
            t.advance(3)

    th = threading.Thread(target=mover)
    th.start()
    th.join()
    now[0] += 2.0
    (snap,) = registry.snapshot()
    assert snap["path"] == "/dir/file\udcff" and snap["direction"] == "read"
    assert snap["bytes_done"] == 300 and snap["total"] == 300
    assert snap["rate_bps"] == 150 and snap["started"] == 1_700_000_000.0
    t.end()
    t.end()
    assert registry.snapshot() == [] and len(registry) == 0


def test_cork_pushes_a_burst_once_the_loop_has_run() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def main() -> None:
        cork = Cork(client)
        loop = asyncio.get_running_loop()
        for i in range(3):
            loop.call_soon(client.send, b"req%d;" % i)
        cork.hold()
        cork.hold()  # once per burst
        await asyncio.sleep(0.01)
        Cork(None).hold()  # no socket: nothing to do

    try:
        asyncio.run(main())
        server.settimeout(2)
        got = b""
        while len(got) < 15:
            got += server.recv(100)
        assert got == b"req0;req1;req2;"
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
    finally:
        for s in (client, server, listener):
            s.close()


def test_a_request_follows_the_writes_and_its_failure_sticks() -> None:
    """A non-data request (a SETSTAT) leaves after every earlier write, even ones waiting
    for room; drain waits for its answer, and its failure is kept like a write's."""

    async def main() -> None:
        remote = FakeRemote(auto_ack=False)
        wb = WriteBehind(remote.send, BLOCK, limit=2 * BLOCK)
        order: list[str] = []
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def setstat() -> None:
            order.append(f"setstat after {len(remote.sent)} writes")
            await answer

        await wb.write(0, bytes(2 * BLOCK))
        blocked = asyncio.ensure_future(wb.write(2 * BLOCK, bytes(BLOCK)))  # waits for room
        await asyncio.sleep(0)
        requested = asyncio.ensure_future(wb.request(setstat))
        await asyncio.sleep(0)
        assert not requested.done() and order == []  # queued behind the waiting write
        remote.ack_all()
        await blocked
        await requested
        await asyncio.sleep(0)
        assert order == ["setstat after 3 writes"]
        assert wb.busy
        draining = asyncio.ensure_future(wb.drain())
        remote.ack_all()
        await asyncio.sleep(0)
        assert not draining.done()  # the setstat has not answered
        answer.set_exception(OSError(errno.EPERM, "refused"))
        with pytest.raises(OSError) as e:
            await draining
        assert e.value.errno == errno.EPERM
        assert not wb.busy
        with pytest.raises(OSError):
            await wb.write(3 * BLOCK, b"x")
        with pytest.raises(OSError):
            await wb.request(setstat)

    run(main())
