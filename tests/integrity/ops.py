"""Operations of the model-based integrity tester (see `tests.integrity.model`): `Op`, a
step as a plain value that prints as one line and parses back, and `Executor`, which runs
them on one process's descriptors (the same code in this process and in the forked worker).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import random
import signal
from dataclasses import dataclass, fields
from multiprocessing.connection import Connection

KiB = 1 << 10
MiB = 1 << 20
MAX_SIZE = 2 * MiB
MAX_WRITE = 256 * KiB
PAGE = mmap.PAGESIZE
TARGET = "f"
TEMP = "f.new"

#: open modes; ``rwt`` (O_RDWR|O_TRUNC) gives an ``rw`` handle
MODES: dict[str, int] = {
    "rw": os.O_RDWR,
    "r": os.O_RDONLY,
    "wa": os.O_WRONLY | os.O_APPEND,
    "rwt": os.O_RDWR | os.O_TRUNC,
}
#: the handle modes each handle operation needs
NEEDS: dict[str, tuple[str, ...]] = {
    "write": ("rw",),
    "pwrite": ("rw",),
    "mmap_write": ("rw",),
    "append": ("wa",),
    "read": ("rw", "r"),
    "pread": ("rw", "r"),
    "mmap_read": ("rw", "r"),
    "check": ("rw", "r"),
    "seek": ("rw", "r"),
    "ftruncate": ("rw", "wa"),
    "close": ("rw", "r", "wa"),
    "fsync": ("rw", "r", "wa"),
    "fstat": ("rw", "r", "wa"),
}
PATH_OPS = frozenset({"stat", "truncate", "replace", "verify"})
MUTATING = frozenset(
    {"write", "append", "pwrite", "truncate", "ftruncate", "mmap_write", "replace", "open"}
)


def payload(seed: int, n: int) -> bytes:
    """The bytes a writing operation writes: its own, reproducible from the op alone."""
    return random.Random(seed).randbytes(n)


@dataclass(frozen=True)
class Op:
    """One step. ``p``: process (0 this one, 1 the worker); ``h``: handle id (-1 for path
    operations); ``seed``: of the bytes written (`payload`)."""

    kind: str
    p: int = 0
    h: int = -1
    off: int = 0
    n: int = 0
    seed: int = 0
    mode: str = ""

    def __str__(self) -> str:
        parts = [self.kind, f"p={self.p}"]
        for f in fields(self)[2:]:
            value = getattr(self, f.name)
            if value != f.default:
                parts.append(f"{f.name}={value}")
        return " ".join(parts)

    @classmethod
    def parse(cls, line: str) -> Op:
        """Read back `str(op)`, optionally after a ``#step`` prefix."""
        words = line.split()
        if words and words[0].startswith("#"):
            words = words[1:]
        kw = dict(w.split("=", 1) for w in words[1:])
        num = {k: int(v) for k, v in kw.items() if k != "mode"}
        return cls(
            words[0],
            p=num.get("p", 0),
            h=num.get("h", -1),
            off=num.get("off", 0),
            n=num.get("n", 0),
            seed=num.get("seed", 0),
            mode=kw.get("mode", ""),
        )


# -- executing operations (in both processes) -----------------------------------------


def read_all(fd: int, off: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``off``, stopping only at end of file."""
    out = bytearray()
    while len(out) < limit:
        chunk = os.pread(fd, min(limit - len(out), 1 * MiB), off + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


class Executor:
    """Runs operations on this process's descriptors: the same code in both processes."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, TARGET)
        self.temp = os.path.join(directory, TEMP)
        self.fds: dict[int, int] = {}

    def run(self, op: Op) -> tuple[bool, object]:
        """``(True, result)`` or ``(False, what went wrong)``; never raises."""
        try:
            return True, self._do(op)
        except OSError as exc:
            return False, f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc}"
        except Exception as exc:  # e.g. mmap's ValueError: a divergence too
            return False, repr(exc)

    def close_all(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()

    def _do(self, op: Op) -> object:
        k = op.kind
        if k == "open":
            self.fds[op.h] = os.open(self.path, MODES[op.mode])
            return None
        if k in PATH_OPS:
            return self._path_op(op)
        fd = self.fds[op.h]
        if k == "close":
            del self.fds[op.h]
            os.close(fd)
            return None
        if k in ("write", "append"):
            return os.write(fd, payload(op.seed, op.n))
        if k == "pwrite":
            return os.pwrite(fd, payload(op.seed, op.n), op.off)
        if k == "seek":
            return os.lseek(fd, op.off, os.SEEK_SET)
        if k == "read":
            return os.read(fd, op.n)
        if k == "pread":
            return os.pread(fd, op.n, op.off)
        if k == "check":
            return read_all(fd, op.off, op.n)
        if k == "ftruncate":
            os.ftruncate(fd, op.n)
            return None
        if k == "fsync":
            os.fsync(fd)
            return None
        if k == "fstat":
            return os.fstat(fd).st_size
        if k in ("mmap_read", "mmap_write"):
            return self._mmap(fd, op)
        raise ValueError(f"unknown operation {op}")

    def _path_op(self, op: Op) -> object:
        if op.kind == "stat":
            return os.stat(self.path).st_size
        if op.kind == "truncate":
            os.truncate(self.path, op.n)
            return None
        if op.kind == "verify":
            fd = os.open(self.path, os.O_RDONLY)
            try:
                return read_all(fd, 0, MAX_SIZE + PAGE)
            finally:
                os.close(fd)
        # replace: a new file under a temporary name, renamed over the target
        fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(payload(op.seed, op.n))
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(self.temp, self.path)
        return None

    def _mmap(self, fd: int, op: Op) -> bytes | None:
        start = op.off - op.off % PAGE
        lo = op.off - start
        write = op.kind == "mmap_write"
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if write else 0)
        with mmap.mmap(fd, lo + op.n, mmap.MAP_SHARED, prot, offset=start) as m:
            if not write:
                return m[lo : lo + op.n]
            m[lo : lo + op.n] = payload(op.seed, op.n)
            m.flush()  # msync(MS_SYNC) before the mapping goes
            return None


def worker(conn: Connection, directory: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends us
    ex = Executor(directory)
    try:
        while (op := conn.recv()) is not None:
            conn.send(ex.run(op))
    except EOFError:
        pass
    finally:
        ex.close_all()
