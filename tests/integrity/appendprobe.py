"""The append probe: a reader opening a file while another thread appends to it.

Each round creates an empty file and closes it; a thread then appends 8 random chunks of
1-300 KB to it (``open(p, "ab", buffering=0)``, 2 ms apart) while the main thread opens it
O_RDONLY after 0-4 ms and preads 128 KiB at a time at the length it has read so far until it
has everything. The server-side file must then be exactly the chunks, in order (a "corrupted"
round otherwise), and so must what the reader saw (counted apart).

This replicates a known sshvfs bug: an OPEN racing the appends could teach the kernel a size
below what it had already written, and the next O_APPEND write landed at that stale offset.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CHUNKS = 8
CHUNK_MIN, CHUNK_MAX = 1_000, 300_000
READ_SIZE = 128 << 10
GAP = 0.002
STALL = 0.2  # the reader gives up this long after the writer closed

_probes = itertools.count()


@dataclass
class ProbeResult:
    rounds: int = 0
    corrupted: int = 0  # the server-side file is not the chunks
    reader_bad: int = 0  # what the concurrent reader saw is not the chunks
    errors: int = 0  # a write, read or open failed
    elapsed: float = 0.0
    writing: float = 0.0  # the appenders' time, open to close
    examples: list[str] = field(default_factory=list)

    def summary(self, target: str) -> str:
        rate = 100.0 * self.corrupted / self.rounds if self.rounds else 0.0
        return (
            f"append probe ({target}): {self.corrupted}/{self.rounds} rounds corrupted on the"
            f" server ({rate:.1f}%), reader saw bad data in {self.reader_bad}, errors"
            f" {self.errors}; {self.elapsed:.1f} s in all, {self.writing:.1f} s appending"
        )


def _first_difference(expected: bytes, got: bytes) -> str:
    n = min(len(expected), len(got))
    i = next((i for i in range(0, n, 4096) if got[i : i + 4096] != expected[i : i + 4096]), n)
    while i < n and got[i] == expected[i]:
        i += 1
    zeros = " (zeros)" if i < n and not any(got[i : i + 64]) else ""
    return f"{len(got)} bytes, expected {len(expected)}, first difference at {i}{zeros}"


def _append(path: str, chunks: list[bytes], errors: list[str], took: list[float]) -> None:
    start = time.monotonic()
    try:
        with open(path, "ab", buffering=0) as f:
            for i, chunk in enumerate(chunks):
                if i:
                    time.sleep(GAP)
                view = memoryview(chunk)
                while view:
                    view = view[f.write(view) or 0 :]
    except OSError as exc:
        errors.append(f"append: {exc}")
    took.append(time.monotonic() - start)


def _follow(path: str, total: int, writer: threading.Thread) -> bytes:
    """Read ``path`` as it grows until ``total`` bytes, or until it stalls after the writer."""
    got = bytearray()
    fd = os.open(path, os.O_RDONLY)
    try:
        stalled: float | None = None
        while len(got) < total:
            chunk = os.pread(fd, READ_SIZE, len(got))
            if chunk:
                got += chunk
                stalled = None
            elif writer.is_alive():
                time.sleep(0)
            elif stalled is None:
                stalled = time.monotonic()
            elif time.monotonic() - stalled > STALL:
                break
    finally:
        os.close(fd)
    return bytes(got)


def append_probe(
    root: str,
    server_root: str,
    rounds: int,
    seed: int,
    log: Callable[[str], None] = lambda s: None,
) -> ProbeResult:
    """Run ``rounds`` rounds in a fresh directory of ``root`` (a mount of ``server_root``)."""
    rng = random.Random(seed)
    name = f"probe-{seed}-{os.getpid()}-{next(_probes)}"
    os.mkdir(os.path.join(root, name))
    result = ProbeResult()
    start = time.monotonic()
    for i in range(rounds):
        path = os.path.join(root, name, f"a{i}")
        chunks = [rng.randbytes(rng.randint(CHUNK_MIN, CHUNK_MAX)) for _ in range(CHUNKS)]
        expected = b"".join(chunks)
        delay = rng.uniform(0.0, 0.004)
        with open(path, "wb"):
            pass
        errors: list[str] = []
        took: list[float] = []
        writer = threading.Thread(target=_append, args=(path, chunks, errors, took))
        writer.start()
        time.sleep(delay)
        try:
            seen = _follow(path, len(expected), writer)
        except OSError as exc:
            errors.append(f"read: {exc}")
            seen = expected
        writer.join()
        result.writing += sum(took)
        with open(os.path.join(server_root, name, f"a{i}"), "rb") as f:
            server = f.read()
        result.rounds += 1
        what: list[str] = list(errors)
        result.errors += bool(errors)
        if server != expected:
            result.corrupted += 1
            what.append(f"server: {_first_difference(expected, server)}")
        if seen != expected:
            result.reader_bad += 1
            what.append(f"reader: {_first_difference(expected, seen)}")
        if what:
            line = f"round {i} (seed {seed}, reader after {delay * 1000:.1f} ms): " + "; ".join(
                what
            )
            log(line)
            if len(result.examples) < 10:
                result.examples.append(line)
        os.unlink(path)
    result.elapsed = time.monotonic() - start
    return result
