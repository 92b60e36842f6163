"""ReadAhead against an in-memory file: exact bytes, no short reads, prefetch only when
sequential, bounded memory, growing files, errors. Pure asyncio, no server."""

from __future__ import annotations

import asyncio
import errno
import random

import pytest

from sshvfs.vfs.stream.budget import ByteBudget
from sshvfs.vfs.stream.readahead import ReadAhead

BLOCK = 1000


class FakeRemote:
    """A remote file: ``fetch`` answers like an SFTP READ (at most ``max_reply`` bytes)."""

    def __init__(self, data: bytes, max_reply: int = BLOCK) -> None:
        self.data = bytearray(data)
        self.max_reply = max_reply
        self.requests: list[tuple[int, int]] = []
        self.fail_at: int | None = None

    async def fetch(self, offset: int, size: int) -> bytes:
        self.requests.append((offset, size))
        await asyncio.sleep(0)  # an answer never comes back in the same step
        if self.fail_at is not None and offset <= self.fail_at < offset + size:
            raise OSError(errno.EIO, "injected")
        return bytes(self.data[offset : offset + min(size, self.max_reply)])

    @property
    def asked(self) -> int:
        return sum(n for _, n in self.requests)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_sequential_reads_match_and_prefetch() -> None:
    data = random.Random(1).randbytes(200_000 + 17)
    remote = FakeRemote(data)
    ra = ReadAhead(remote.fetch, BLOCK, max_window=8 * BLOCK, budget=ByteBudget(64 * BLOCK))

    async def main() -> bytes:
        out = bytearray()
        rng = random.Random(2)
        while True:
            chunk = await ra.read(len(out), rng.randrange(1, 5000))
            if not chunk:
                return bytes(out)
            out += chunk

    assert run(main()) == data
    assert ra.stats.prefetched > 0 and ra.stats.hits > 10 and ra.stats.misses == 0


def test_never_short_before_eof_when_the_server_answers_short() -> None:
    data = random.Random(3).randbytes(50_000)
    remote = FakeRemote(data, max_reply=333)  # every answer shorter than asked
    ra = ReadAhead(remote.fetch, BLOCK, max_window=4 * BLOCK)

    async def main() -> None:
        for offset, size in ((0, 4096), (4096, 4096), (10_000, 7_777), (49_000, 5_000)):
            got = await ra.read(offset, size)
            assert got == data[offset : offset + size]

    run(main())


def test_a_short_answer_at_the_size_known_at_open_is_the_end() -> None:
    """One READ for a small file whose size the open already told: no second READ to hear
    the end of file. Short answers before that size are still completed."""
    data = random.Random(6).randbytes(700)

    async def read_all(hint: int | None, max_reply: int = BLOCK) -> FakeRemote:
        remote = FakeRemote(data, max_reply=max_reply)
        ra = ReadAhead(remote.fetch, BLOCK, max_window=4 * BLOCK, eof_hint=hint)
        assert await ra.read(0, BLOCK) == data
        return remote

    assert len(run(read_all(700)).requests) == 1  # type: ignore[attr-defined]
    assert len(run(read_all(None)).requests) == 2  # type: ignore[attr-defined]
    # the file grew since the open: still one READ, everything there is returned
    assert len(run(read_all(300)).requests) == 1  # type: ignore[attr-defined]
    # answers shorter than the known size are not taken as the end
    remote = run(read_all(700, max_reply=333))
    assert len(remote.requests) == 3  # type: ignore[attr-defined]


def test_a_small_file_read_at_open_needs_no_request_at_its_read() -> None:
    data = random.Random(7).randbytes(700)

    async def main() -> FakeRemote:
        remote = FakeRemote(data)
        ra = ReadAhead(remote.fetch, BLOCK, max_window=8 * BLOCK, eof_hint=700)
        ra.start(700)
        await asyncio.sleep(0.01)  # the answer lands before the kernel asks
        asked = len(remote.requests)
        assert await ra.read(0, BLOCK) == data  # (the kernel asks a page: never over a block)
        assert len(remote.requests) == asked == 1  # nothing past the known size either
        ra.invalidate()  # a write through the mount: the next read asks again
        assert await ra.read(0, 100) == data[:100]
        assert len(remote.requests) == 2
        return remote

    run(main())


def test_random_access_asks_only_for_what_is_read() -> None:
    data = random.Random(4).randbytes(300_000)
    remote = FakeRemote(data)
    ra = ReadAhead(remote.fetch, BLOCK, max_window=16 * BLOCK)
    rng = random.Random(5)
    reads = [(rng.randrange(1, 290_000), rng.randrange(1, 3 * BLOCK)) for _ in range(200)]

    async def main() -> None:
        for offset, size in reads:
            assert await ra.read(offset, size) == data[offset : offset + size]

    run(main())
    assert ra.stats.prefetched == 0
    assert remote.asked == sum(size for _, size in reads)


def test_jump_then_sequential_starts_a_new_run() -> None:
    data = random.Random(6).randbytes(100_000)
    remote = FakeRemote(data)
    ra = ReadAhead(remote.fetch, BLOCK, max_window=4 * BLOCK)

    async def main() -> None:
        assert await ra.read(70_000, 500) == data[70_000:70_500]
        for off in range(70_500, 90_000, 700):
            assert await ra.read(off, 700) == data[off : off + 700]

    run(main())
    assert ra.stats.prefetched > 0


def test_eof_is_not_remembered_when_the_file_grows() -> None:
    remote = FakeRemote(b"a" * 2500)
    ra = ReadAhead(remote.fetch, BLOCK, max_window=4 * BLOCK)

    async def main() -> None:
        assert await ra.read(0, 2000) == b"a" * 2000
        assert await ra.read(2000, 2000) == b"a" * 500  # short: end of file
        assert await ra.read(2500, 2000) == b""
        remote.data += b"b" * 1500  # someone appends
        assert await ra.read(2500, 2000) == b"b" * 1500
        assert await ra.read(4000, 10) == b""

    run(main())


def test_invalidate_drops_prefetched_data() -> None:
    remote = FakeRemote(b"x" * 20_000)
    ra = ReadAhead(remote.fetch, BLOCK, max_window=10 * BLOCK)

    async def main() -> None:
        for off in range(0, 4000, 1000):
            await ra.read(off, 1000)
        assert ra.buffered > 0
        remote.data[5000:6000] = b"y" * 1000
        ra.invalidate()
        assert await ra.read(4000, 2000) == b"x" * 1000 + b"y" * 1000

    run(main())


def test_prefetch_stays_within_the_mount_budget() -> None:
    budget = ByteBudget(6 * BLOCK)
    remotes = [FakeRemote(bytes(100_000)) for _ in range(3)]
    readers = [ReadAhead(r.fetch, BLOCK, max_window=20 * BLOCK, budget=budget) for r in remotes]

    async def reader(ra: ReadAhead) -> None:
        for off in range(0, 100_000, 2000):
            assert await ra.read(off, 2000) == bytes(2000)
            # what was prefetched (not counting what a read itself needs) stays bounded
            assert budget.used <= budget.capacity + 3 * 3 * BLOCK

    async def main() -> None:
        await asyncio.gather(*(reader(ra) for ra in readers))
        for ra in readers:
            ra.close()
        await asyncio.sleep(0.01)  # let dropped segments land

    run(main())
    assert budget.used == 0


def test_concurrent_out_of_order_reads() -> None:
    data = random.Random(7).randbytes(64_000)
    remote = FakeRemote(data)
    ra = ReadAhead(remote.fetch, BLOCK, max_window=8 * BLOCK)

    async def main() -> None:
        offsets = list(range(0, 64_000, 4000))
        for i in range(0, len(offsets), 4):
            group = offsets[i : i + 4]
            random.Random(i).shuffle(group)
            got = await asyncio.gather(*(ra.read(o, 4000) for o in group))
            for o, chunk in zip(group, got, strict=True):
                assert chunk == data[o : o + 4000]

    run(main())


def test_an_error_reaches_the_reader_and_the_next_read_retries() -> None:
    data = random.Random(8).randbytes(30_000)
    remote = FakeRemote(data)
    ra = ReadAhead(remote.fetch, BLOCK, max_window=8 * BLOCK)

    async def main() -> None:
        assert await ra.read(0, 3000) == data[:3000]
        remote.fail_at = 6500
        with pytest.raises(OSError) as e:
            for off in range(3000, 12_000, 1500):
                await ra.read(off, 1500)
        assert e.value.errno == errno.EIO
        remote.fail_at = None
        assert await ra.read(6000, 3000) == data[6000:9000]

    run(main())


def test_a_model_of_mixed_access() -> None:
    rng = random.Random(9)
    data = rng.randbytes(150_000)
    remote = FakeRemote(data, max_reply=700)
    ra = ReadAhead(remote.fetch, BLOCK, max_window=6 * BLOCK, budget=ByteBudget(12 * BLOCK))

    async def main() -> None:
        pos = 0
        for _ in range(600):
            if rng.random() < 0.1:
                pos = rng.randrange(0, 160_000)
            size = rng.randrange(1, 6000)
            assert await ra.read(pos, size) == data[pos : pos + size]
            pos += size

    run(main())
