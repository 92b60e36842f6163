"""FUSE fd waits (sshvfs.fuse.compat.fdwait) on a pipe standing in for /dev/fuse: a request that
follows the last reply closely is polled for, never at the cost of the loop's other I/O."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sshvfs.fuse.compat import fdwait


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    fdwait.notify_closing(r)
    os.close(r)
    os.close(w)


def _watch(fd: int) -> fdwait._Watch:
    return fdwait._watches[fd]


def test_a_request_close_behind_the_last_is_polled_for(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = pipe
    monkeypatch.setattr(fdwait, "SPIN", 5.0)  # a slow machine still catches it

    async def main() -> None:
        os.write(w, b"1")
        await fdwait.wait_readable(r)  # there already: taken without a report
        os.read(r, 1)
        _watch(r).quick = True  # as after a request that came right behind its reply
        writer = threading.Timer(0.05, os.write, (w, b"2"))
        writer.start()
        await fdwait.wait_readable(r)
        writer.join()
        # caught by polling: no future was queued, and the fd was never watched for it
        assert not _watch(r).waiters and not _watch(r).watching
        assert os.read(r, 1) == b"2"

    asyncio.run(main())


def test_polling_gives_way_to_the_loops_other_io(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = pipe
    monkeypatch.setattr(fdwait, "SPIN", 30.0)
    a, b = socket.socketpair()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        os.write(w, b"1")
        await fdwait.wait_readable(r)
        os.read(r, 1)
        _watch(r).quick = True
        served = []

        def other_io() -> None:  # SSH traffic, say: answered at once, not after the spin
            served.append(a.recv(10))
            loop.remove_reader(a.fileno())
            os.write(w, b"2")  # and the next request comes after it

        loop.add_reader(a.fileno(), other_io)
        b.send(b"ssh")
        started = time.monotonic()
        await fdwait.wait_readable(r)
        assert served == [b"ssh"]
        assert time.monotonic() - started < 20  # the loop was never held for the spin
        assert os.read(r, 1) == b"2"

    try:
        asyncio.run(main())
    finally:
        a.close()
        b.close()


def test_no_polling_when_requests_do_not_come_back_to_back(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = pipe
    monkeypatch.setattr(fdwait, "SPIN", 0.005)

    async def main() -> None:
        os.write(w, b"1")
        await fdwait.wait_readable(r)
        os.read(r, 1)
        watch = _watch(r)
        assert not watch.quick
        waiter = asyncio.create_task(fdwait.wait_readable(r))
        await asyncio.sleep(0.1)
        assert len(watch.waiters) == 1 and watch.watching  # asleep in the selector
        os.write(w, b"2")
        await waiter
        assert os.read(r, 1) == b"2"
        # that request came long after the last reply: the next wait sleeps again
        assert not watch.quick

    asyncio.run(main())


def test_no_polling_while_another_request_is_being_served(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request waiting for the server (a streamed listing, say) wants the CPU for the
    server's side of it: an idle worker sleeps instead of polling meanwhile."""
    r, w = pipe
    monkeypatch.setattr(fdwait, "SPIN", 30.0)

    async def main() -> None:
        os.write(w, b"1")
        served = asyncio.Event()

        async def worker() -> None:
            await fdwait.wait_readable(r)
            os.read(r, 1)
            await served.wait()  # handling its request: waiting for the server

        first = asyncio.create_task(worker())
        await asyncio.sleep(0.01)
        watch = _watch(r)
        watch.quick = True
        second = asyncio.create_task(fdwait.wait_readable(r))
        started = time.monotonic()
        await asyncio.sleep(0.1)
        assert time.monotonic() - started < 20  # the loop was not held
        assert len(watch.waiters) == 1 and watch.watching  # asleep, not polling
        assert watch.quick  # never polled for it (a poll that ran out clears it)
        os.write(w, b"2")
        await second
        assert os.read(r, 1) == b"2"
        served.set()
        await first

    asyncio.run(main())
