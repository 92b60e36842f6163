"""Model-based integrity tester: random file operations through a mount, each result checked
against an in-memory model of the file's content.

A run works in a fresh directory of the mount on one name, ``f``. It plays a seeded random
sequence of operations over up to six open handles held by two processes (this one and a
forked worker that runs the same `Executor` on its own descriptors), one step at a time, so
the expected result of every step is exact: reads, preads and mmap reads return the model's
bytes, fstat/stat its size, writes their full length. After each step that changes a file the
whole file is read back through a handle on it, from the other process when one holds such
a handle. At the end every handle is closed and the file is compared with the model through
the mount and on the server's disk (the server directory is local: the sshd is on loopback).

The model follows POSIX: a handle refers to an inode, not to a name. ``replace`` writes a new
file under a temporary name and renames it over ``f``; handles opened before keep reading and
writing the old inode (now nameless), later opens get the new one.

Operations are plain values (`Op`), printed one a line and read back by `Op.parse`, so a
failing sequence replays exactly (`Engine.replay`) and can be shrunk (`shrink`). The same seed
always generates the same operations: nothing random depends on what the mount answers.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn

from .ops import (
    MAX_SIZE,
    MAX_WRITE,
    MODES,
    MUTATING,
    NEEDS,
    PAGE,
    PATH_OPS,
    TARGET,
    Executor,
    KiB,
    MiB,
    Op,
    payload,
    worker,
)

MAX_HANDLES = 6
OP_TIMEOUT = 120.0
TRACE_TAIL = 20

#: relative frequency of each kind of generated operation
WEIGHTS: dict[str, float] = {
    "open": 5,
    "close": 4,
    "write": 8,
    "append": 7,
    "pwrite": 10,
    "seek": 3,
    "read": 7,
    "pread": 10,
    "truncate": 2,
    "ftruncate": 3,
    "mmap_read": 4,
    "mmap_write": 4,
    "fsync": 2,
    "fstat": 4,
    "stat": 2,
    "replace": 1,
    "verify": 2,
}


# -- the model ----------------------------------------------------------------------------


@dataclass
class Handle:
    p: int
    ino: int
    mode: str  # rw, r or wa
    pos: int = 0


class Model:
    """Inodes' contents, which one ``f`` names, and every handle's inode and position."""

    def __init__(self) -> None:
        self.files: dict[int, bytearray] = {}
        self.target: int | None = None
        self.handles: dict[int, Handle] = {}
        self.next_ino = 0
        self.next_handle = 0

    def size(self, ino: int) -> int:
        return len(self.files[ino])

    def valid(self, op: Op) -> bool:
        """Whether ``op`` can run now (a replayed or shrunk trace may hold ones that cannot)."""
        k, n = op.kind, op.n
        if k == "replace":
            return 0 <= n <= MAX_SIZE
        if self.target is None or op.p not in (0, 1):
            return False
        if k in ("stat", "verify"):
            return True
        if k == "truncate":
            return 0 <= n <= MAX_SIZE
        if k == "open":
            return op.h >= 0 and op.h not in self.handles and op.mode in MODES
        h = self.handles.get(op.h)
        if h is None or h.p != op.p or h.mode not in NEEDS.get(k, ()):
            return False
        size = self.size(h.ino)
        if k == "write":
            return n > 0 and h.pos + n <= MAX_SIZE
        if k == "append":
            return n > 0 and size + n <= MAX_SIZE
        if k == "pwrite":
            return n > 0 and 0 <= op.off and op.off + n <= MAX_SIZE
        if k in ("mmap_read", "mmap_write"):
            return n > 0 and 0 <= op.off and op.off + n <= size
        if k in ("ftruncate", "seek"):
            return 0 <= (n if k == "ftruncate" else op.off) <= MAX_SIZE
        return k in ("read", "pread", "check", "close", "fsync", "fstat") and n >= 0

    def changed(self, op: Op) -> int | None:
        """The inode ``op`` (just applied) changed, if any."""
        if op.kind not in MUTATING:
            return None
        if op.kind in ("truncate", "replace"):
            return self.target
        if op.kind == "open":
            return self.target if op.mode == "rwt" else None
        h = self.handles.get(op.h)
        return h.ino if h is not None else None

    def apply(self, op: Op) -> object:
        """The expected result of ``op`` (valid), updating the model to after it."""
        k = op.kind
        if k == "replace":
            ino, self.next_ino = self.next_ino, self.next_ino + 1
            self.files[ino] = bytearray(payload(op.seed, op.n))
            self.target = ino
            self._forget()
            return None
        assert self.target is not None
        if k == "open":
            if op.mode == "rwt":
                del self.files[self.target][:]
            mode = "rw" if op.mode == "rwt" else op.mode
            self.handles[op.h] = Handle(op.p, self.target, mode)
            self.next_handle = max(self.next_handle, op.h + 1)
            return None
        if k == "stat":
            return self.size(self.target)
        if k == "verify":
            return bytes(self.files[self.target])
        if k == "truncate":
            self._resize(self.target, op.n)
            return None
        h = self.handles[op.h]
        data = self.files[h.ino]
        if k == "close":
            del self.handles[op.h]
            self._forget()
        elif k in ("write", "append", "pwrite", "mmap_write"):
            at = {"write": h.pos, "append": len(data)}.get(k, op.off)
            self._put(h.ino, at, payload(op.seed, op.n))
            if k in ("write", "append"):
                h.pos = at + op.n
            return None if k == "mmap_write" else op.n
        elif k == "seek":
            h.pos = op.off
            return op.off
        elif k == "read":
            got = bytes(data[h.pos : h.pos + op.n])
            h.pos += len(got)
            return got
        elif k in ("pread", "check", "mmap_read"):
            return bytes(data[op.off : op.off + op.n])
        elif k == "ftruncate":
            self._resize(h.ino, op.n)
        elif k == "fstat":
            return len(data)
        return None

    def _put(self, ino: int, off: int, data: bytes) -> None:
        buf = self.files[ino]
        if off > len(buf):
            buf.extend(bytes(off - len(buf)))  # a hole reads as zeros
        buf[off : off + len(data)] = data

    def _resize(self, ino: int, size: int) -> None:
        buf = self.files[ino]
        if size < len(buf):
            del buf[size:]
        else:
            buf.extend(bytes(size - len(buf)))

    def _forget(self) -> None:
        live = {self.target} | {h.ino for h in self.handles.values()}
        for ino in [i for i in self.files if i not in live]:
            del self.files[ino]


# -- generating operations -------------------------------------------------------------


class Generator:
    """Seeded random operations, always valid for the model they are asked with."""

    def __init__(self, seed: int, skip: Iterable[str] = ()) -> None:
        self.rng = random.Random(seed)
        skipped = set(skip)
        self.kinds = [k for k in WEIGHTS if k not in skipped]
        self.weights = [WEIGHTS[k] for k in self.kinds]

    def next(self, m: Model) -> Op:
        r = self.rng
        if m.target is None:
            return Op("replace", r.randrange(2), n=self._new_size(), seed=self._seed())
        for _ in range(200):
            if not m.handles and "open" in self.kinds and r.random() < 0.5:
                kind = "open"
            else:
                kind = r.choices(self.kinds, self.weights)[0]
            op = self._make(kind, m)
            if op is not None and m.valid(op):
                return op
        return Op("stat", r.randrange(2))

    def _seed(self) -> int:
        return self.rng.randrange(1 << 31)

    def _make(self, kind: str, m: Model) -> Op | None:
        r = self.rng
        assert m.target is not None
        if kind in PATH_OPS:
            p = r.randrange(2)
            size = m.size(m.target)
            if kind == "truncate":
                return Op(kind, p, n=self._size(size))
            if kind == "replace":
                return Op(kind, p, n=self._new_size(), seed=self._seed())
            return Op(kind, p)
        if kind == "open":
            if len(m.handles) >= MAX_HANDLES:
                return None
            mode = r.choices(("rw", "r", "wa", "rwt"), (45, 30, 20, 5))[0]
            return Op(kind, r.randrange(2), h=m.next_handle, mode=mode)
        ids = [i for i, h in sorted(m.handles.items()) if h.mode in NEEDS[kind]]
        if not ids:
            return None
        hid = r.choice(ids)
        h = m.handles[hid]
        size = m.size(h.ino)
        if kind in ("close", "fsync", "fstat"):
            return Op(kind, h.p, hid)
        if kind in ("write", "append"):
            return Op(kind, h.p, hid, n=self._len(), seed=self._seed())
        if kind == "pwrite":
            n = self._len()
            off = min(self._off(size), MAX_SIZE - n)
            return Op(kind, h.p, hid, off=off, n=n, seed=self._seed())
        if kind == "seek":
            return Op(kind, h.p, hid, off=self._off(size))
        if kind == "read":
            return Op(kind, h.p, hid, n=self._len())
        if kind == "pread":
            return Op(kind, h.p, hid, off=self._off(size), n=self._len())
        if kind == "ftruncate":
            return Op(kind, h.p, hid, n=self._size(size))
        if size == 0:
            return None  # mmap: only within the file
        off = self._off(size) if r.random() < 0.5 else r.randrange(size)
        off = min(off, size - 1)
        n = min(self._len(), size - off)
        seed = self._seed() if kind == "mmap_write" else 0
        return Op(kind, h.p, hid, off=off, n=n, seed=seed)

    def _len(self) -> int:
        r, c = self.rng, self.rng.random()
        if c < 0.3:
            return r.randint(1, 64)
        if c < 0.5:
            return r.randint(PAGE - 3, PAGE + 3)
        if c < 0.75:
            return r.randint(65, 32 * KiB)
        if c < 0.9:
            return r.randint(32 * KiB, 128 * KiB)
        return r.randint(128 * KiB, MAX_WRITE)

    def _off(self, size: int) -> int:
        """An offset: anywhere, page-ish, at EOF or past it (a hole), mostly near the start."""
        r, c = self.rng, self.rng.random()
        if c < 0.1:
            off = 0
        elif c < 0.35:
            off = r.randint(0, size)
        elif c < 0.55:
            off = r.randint(0, size // PAGE + 1) * PAGE + r.randint(-3, 3)
        elif c < 0.7:
            off = size
        elif c < 0.85:
            off = size + r.randint(1, 128 * KiB)
        else:
            off = r.randint(0, min(size, 8 * KiB))
        return max(0, min(off, MAX_SIZE))

    def _size(self, size: int) -> int:
        """A new length for a file of ``size``: shorter, longer (a hole), page-ish, any."""
        r, c = self.rng, self.rng.random()
        if c < 0.05:
            return 0
        if c < 0.4:
            return r.randint(0, size)
        if c < 0.65:
            return min(MAX_SIZE, size + r.randint(1, MAX_WRITE))
        if c < 0.85:
            return max(0, min(MAX_SIZE, r.randint(0, MAX_SIZE // PAGE) * PAGE + r.randint(-3, 3)))
        return r.randint(0, MAX_SIZE)

    def _new_size(self) -> int:
        r = self.rng
        return r.choice((0, r.randint(1, PAGE + 3), r.randint(1, 512 * KiB), r.randint(0, MiB)))


# -- running ------------------------------------------------------------------------------


class Divergence(AssertionError):
    """The mount disagreed with the model. ``ops``: every operation run, the failing last."""

    def __init__(self, message: str, ops: list[Op], seed: int, step: int) -> None:
        super().__init__(message)
        self.ops = ops
        self.seed = seed
        self.step = step


@dataclass
class Stats:
    seed: int
    ops: int = 0
    elapsed: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)


def describe(expected: bytes, got: bytes, base: int = 0) -> str:
    """Where two byte strings differ, at file offsets (``base``: offset of their start)."""
    out = [f"got {len(got)} bytes, expected {len(expected)}"]
    runs: list[list[int]] = []
    for i in range(0, min(len(got), len(expected)), PAGE):
        a, b = got[i : i + PAGE], expected[i : i + PAGE]
        if a == b:
            continue
        for j in (j for j in range(len(a)) if a[j] != b[j]):
            if runs and i + j - runs[-1][1] <= 16:
                runs[-1][1] = i + j + 1
            else:
                runs.append([i + j, i + j + 1])
    for lo, hi in runs[:4]:
        zeros = " (got zeros)" if not any(got[lo:hi]) else ""
        out.append(
            f"differ at [{base + lo}, {base + hi}){zeros}: "
            f"got {got[lo : lo + 8].hex()} expected {expected[lo : lo + 8].hex()}"
        )
    if len(runs) > 4:
        out.append(f"... {len(runs)} differing runs in all")
    if not runs:
        out.append("the common part matches")
    return "; ".join(out)


_runs = itertools.count()


class Engine:
    """Runs operations in a fresh directory under ``root`` (a mount of ``server_root``).

    ``replay_hint``: how to rerun a failing seed, formatted with ``seed`` and ``ops``.
    """

    def __init__(
        self,
        root: str,
        server_root: str,
        seed: int,
        *,
        full_check: bool = True,
        skip: Iterable[str] = (),
        replay_hint: str = "scripts/stress --seed {seed} --ops {ops}",
    ) -> None:
        self.seed = seed
        self.full_check = full_check
        self.skip = tuple(skip)
        self.replay_hint = replay_hint
        name = f"model-{seed}-{os.getpid()}-{next(_runs)}"
        self.dir = os.path.join(root, name)
        self.server_dir = os.path.join(server_root, name)
        self.history: list[Op] = []
        self.generated = 0
        self._local: Executor | None = None
        self._conn: Connection | None = None
        self._proc: BaseProcess | None = None

    def run(self, max_ops: int, deadline: float | None = None) -> Stats:
        """Generate and run up to ``max_ops`` operations, stopping early at ``deadline``
        (a `time.monotonic` value); then close every handle and check the end result."""
        __tracebackhide__ = True  # for pytest: a divergence's message says it all
        gen = Generator(self.seed, self.skip)

        def source(m: Model) -> Op | None:
            if self.generated >= max_ops or (deadline is not None and time.monotonic() > deadline):
                return None
            self.generated += 1
            return gen.next(m)

        return self._execute(source)

    def replay(self, ops: Sequence[Op]) -> Stats:
        """Run ``ops`` (e.g. from `Op.parse`), skipping those the model says cannot run."""
        it = iter(ops)

        def source(m: Model) -> Op | None:
            for op in it:
                if m.valid(op):
                    self.generated += 1
                    return op
            return None

        return self._execute(source)

    def _execute(self, source: Callable[[Model], Op | None]) -> Stats:
        __tracebackhide__ = True
        stats = Stats(self.seed)
        start = time.monotonic()
        os.mkdir(self.dir)
        self._start_worker()
        try:
            model = Model()
            while (op := source(model)) is not None:
                self._step(model, op)
            for hid, h in sorted(model.handles.items()):
                self._step(model, Op("close", h.p, hid))
            self._final_check(model)
        finally:
            self._stop_worker()
        stats.ops = len(self.history)
        stats.counts.update(op.kind for op in self.history)
        stats.elapsed = time.monotonic() - start
        return stats

    def _start_worker(self) -> None:
        # fork before anything is open, so the worker holds only its own descriptors
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=worker, args=(child, self.dir), daemon=True)
        self._proc.start()
        child.close()
        self._local = Executor(self.dir)

    def _stop_worker(self) -> None:
        if self._local is not None:
            self._local.close_all()
        if self._conn is not None and self._proc is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._proc.join(15)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
            self._conn.close()
            self._conn = None

    def _send(self, op: Op) -> tuple[bool, object]:
        if op.p == 0:
            assert self._local is not None
            return self._local.run(op)
        assert self._conn is not None
        self._conn.send(op)
        if not self._conn.poll(OP_TIMEOUT):
            return False, f"no answer from the worker process in {OP_TIMEOUT:.0f}s"
        result: tuple[bool, object] = self._conn.recv()
        return result

    def _step(self, model: Model, op: Op) -> None:
        __tracebackhide__ = True
        self.history.append(op)
        h = model.handles.get(op.h)
        base = h.pos if op.kind == "read" and h is not None else op.off  # file offset of a read
        expected = model.apply(op)
        ok, got = self._send(op)
        self._compare(op, expected, ok, got, "", base)
        ino = model.changed(op) if self.full_check else None
        readers = [(i, r) for i, r in sorted(model.handles.items()) if r.ino == ino]
        readers = [(i, r) for i, r in readers if r.mode != "wa"]
        if readers:
            # the whole file, preferably through the other process
            hid, r = next(((i, r) for i, r in readers if r.p != op.p), readers[0])
            check = Op("check", r.p, hid, n=model.size(r.ino) + PAGE)
            ok, got = self._send(check)
            self._compare(check, model.apply(check), ok, got, f"whole-file check after {op}: ")

    def _compare(
        self, op: Op, expected: object, ok: bool, got: object, context: str, base: int = 0
    ) -> None:
        __tracebackhide__ = True
        if not ok:
            self._fail(f"{context}{op.kind} failed: {got}")
        if isinstance(expected, bytes) and isinstance(got, bytes):
            if got != expected:
                self._fail(f"{context}{op.kind}: {describe(expected, got, base)}")
        elif got != expected:
            self._fail(f"{context}{op.kind} returned {got!r}, expected {expected!r}")

    def _final_check(self, model: Model) -> None:
        __tracebackhide__ = True
        assert model.target is not None
        expected = bytes(model.files[model.target])
        ok, got = self._send(Op("verify", 0))
        self._compare(Op("verify"), expected, ok, got, "after closing everything, read via mount: ")
        try:
            with open(os.path.join(self.server_dir, TARGET), "rb") as f:
                server = f.read()
        except OSError as exc:
            self._fail(f"server-side file unreadable: {exc}")
        if server != expected:
            self._fail(f"server-side file after closing everything: {describe(expected, server)}")
        names = sorted(os.listdir(self.server_dir))
        if [n for n in names if not n.startswith(".fuse_hidden")] != [TARGET]:
            self._fail(f"server-side directory holds {names}, expected [{TARGET!r}]")

    def _fail(self, what: str) -> NoReturn:
        __tracebackhide__ = True
        step = len(self.history) - 1
        first = max(0, len(self.history) - TRACE_TAIL)
        lines = [
            f"model divergence: seed={self.seed} step={step} in {self.dir}",
            f"  {what}",
            f"  last {len(self.history) - first} ops (of {len(self.history)}):",
            *(f"    #{i} {op}" for i, op in enumerate(self.history[first:], first)),
            "  replay: " + self.replay_hint.format(seed=self.seed, ops=self.generated),
        ]
        raise Divergence("\n".join(lines), list(self.history), self.seed, step)


def diverges(
    root: str, server_root: str, ops: Sequence[Op], seed: int = 0, **kw: Any
) -> Divergence | None:
    """Replay ``ops`` in a fresh directory: the divergence, if any."""
    try:
        Engine(root, server_root, seed, **kw).replay(ops)
    except Divergence as exc:
        return exc
    return None


def shrink(
    ops: Sequence[Op],
    fails: Callable[[list[Op]], Divergence | None],
    deadline: float,
    log: Callable[[str], None] = lambda s: None,
) -> list[Op]:
    """A shorter sequence that still diverges (delta debugging: drop chunks, halving)."""
    cur = list(ops)
    chunk = max(1, len(cur) // 2)
    while time.monotonic() < deadline:
        changed = False
        i = 1  # keep the first op: it creates the file
        while i < len(cur) and time.monotonic() < deadline:
            d = fails(cur[:i] + cur[i + chunk :])
            if d is not None:
                cur = d.ops  # only what ran, up to the divergence
                changed = True
                log(f"shrink: {len(cur)} ops")
            else:
                i += chunk
        if chunk == 1 and not changed:
            break
        if not changed:
            chunk //= 2
    return cur
