"""Streaming reads and writes through a real mount of a real sshd: integrity byte for byte
(checked on the server too), concurrency, honest write errors, bounded memory."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ..mounting import MountProcess, mounted
from ..sshd import Sshd

pytestmark = pytest.mark.mount

MiB = 1 << 20
_counter = itertools.count()


def fresh(module_mount: tuple[str, MountProcess]) -> tuple[str, str]:
    """A new directory made on the server (the mount has never seen it): (server, mount)."""
    remote, m = module_mount
    name = f"s{next(_counter)}"
    os.mkdir(os.path.join(remote, name))
    # a listing of the mount's root cached by an earlier test answers until the watcher's
    # event lands (or for the TTL, without a watcher): these tests are not about that
    with open(os.path.join(m.mountpoint, ".sshvfs", "invalidate"), "w"):
        pass
    return os.path.join(remote, name), os.path.join(m.mountpoint, name)


def put(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def get(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def apply(ref: bytearray, offset: int, data: bytes) -> None:
    end = offset + len(data)
    if end > len(ref):
        ref.extend(bytes(end - len(ref)))
    ref[offset:end] = data


def test_random_reads_and_writes_match_a_local_reference(
    module_mount: tuple[str, MountProcess],
) -> None:
    remote, mnt = fresh(module_mount)
    rng = random.Random(11)
    ref = bytearray(rng.randbytes(3 * MiB + 123))
    put(os.path.join(remote, "f"), bytes(ref))
    fd = os.open(os.path.join(mnt, "f"), os.O_RDWR)
    try:
        for step in range(400):
            op = rng.random()
            if op < 0.35:  # write anywhere, sometimes past the end (a hole)
                offset = rng.randrange(0, len(ref) + MiB)
                data = rng.randbytes(rng.randrange(1, 300_000))
                assert os.pwrite(fd, data, offset) == len(data)
                apply(ref, offset, data)
            elif op < 0.4:  # truncate between writes
                size = rng.randrange(0, len(ref) + 100_000)
                os.ftruncate(fd, size)
                del ref[size:]
                ref.extend(bytes(size - len(ref)))
            elif op < 0.5:  # a sequential stretch, to wake the read-ahead
                offset = rng.randrange(0, len(ref) + 1)
                for _ in range(rng.randrange(2, 12)):
                    size = rng.choice((4096, 65_536, 131_072, 100_003))
                    assert os.pread(fd, size, offset) == bytes(ref[offset : offset + size])
                    offset += size
            else:
                offset = rng.randrange(0, len(ref) + 1000)
                size = rng.randrange(1, 400_000)
                got = os.pread(fd, size, offset)
                assert got == bytes(ref[offset : offset + size]), f"step {step}"
    finally:
        os.close(fd)
    assert get(os.path.join(remote, "f")) == bytes(ref)  # on the server, once closed
    assert get(os.path.join(mnt, "f")) == bytes(ref)


def test_sparse_writes_read_back_as_zeros(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    path = os.path.join(mnt, "sparse")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.pwrite(fd, b"tail", 5 * MiB + 7)
        os.pwrite(fd, b"head", 100)
    finally:
        os.close(fd)
    want = bytes(100) + b"head" + bytes(5 * MiB + 7 - 104) + b"tail"
    assert os.stat(os.path.join(remote, "sparse")).st_size == len(want)
    assert get(os.path.join(remote, "sparse")) == want
    assert get(path) == want


def test_large_files_both_ways_with_odd_buffer_sizes(
    module_mount: tuple[str, MountProcess], workdir: str
) -> None:
    remote, mnt = fresh(module_mount)
    rng = random.Random(12)
    down = rng.randbytes(24 * MiB + 5)
    put(os.path.join(remote, "down"), down)  # made on the server: no page cache of it here
    local = os.path.join(workdir, "down")
    subprocess.run(["cp", os.path.join(mnt, "down"), local], check=True)
    assert get(local) == down
    with open(os.path.join(mnt, "down"), "rb", buffering=0) as f:
        parts = []
        while chunk := f.read(777_777):
            parts.append(chunk)
    assert b"".join(parts) == down

    up = rng.randbytes(20 * MiB + 3)
    put(os.path.join(workdir, "up"), up)
    subprocess.run(
        ["dd", f"if={workdir}/up", f"of={mnt}/up-dd", "bs=1M", "status=none"], check=True
    )
    with open(os.path.join(mnt, "up-odd"), "wb", buffering=0) as f:
        pos = 0
        while pos < len(up):
            n = rng.randrange(1, 2 * MiB)
            f.write(up[pos : pos + n])
            pos += n
    for name in ("up-dd", "up-odd"):
        server = get(os.path.join(remote, name))
        assert hashlib.sha256(server).digest() == hashlib.sha256(up).digest(), name


def test_a_small_file_read_at_open_sees_a_later_write(
    module_mount: tuple[str, MountProcess],
) -> None:
    """A small file opened for reading is asked for at once (READ_AT_OPEN); a write
    through another handle of the mount before the first read must still be seen."""
    remote, mnt = fresh(module_mount)
    put(os.path.join(remote, "f"), b"a" * 3000)
    path = os.path.join(mnt, "f")
    assert os.stat(path).st_size == 3000  # the lookup that gives the open its size
    reader = os.open(path, os.O_RDONLY)
    try:
        time.sleep(0.05)  # the READ sent at open is answered
        writer = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(writer, b"b" * 5000, 1000)
        finally:
            os.close(writer)
        assert os.pread(reader, 10_000, 0) == b"a" * 1000 + b"b" * 5000
    finally:
        os.close(reader)


def test_two_readers_at_once(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    data = random.Random(13).randbytes(16 * MiB + 99)
    put(os.path.join(remote, "shared"), data)
    errors: list[BaseException] = []

    def reader(start: int, bufsize: int) -> None:
        try:
            with open(os.path.join(mnt, "shared"), "rb", buffering=0) as f:
                f.seek(start)
                got = bytearray()
                while chunk := f.read(bufsize):
                    got += chunk
            assert bytes(got) == data[start:]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=reader, args=(0, MiB)),
        threading.Thread(target=reader, args=(5 * MiB + 1, 100_003)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_a_reader_while_a_writer_appends(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    path = os.path.join(mnt, "log")
    rng = random.Random(14)
    chunks = [rng.randbytes(rng.randrange(1, 300_000)) for _ in range(60)]
    want = b"".join(chunks)
    open(path, "wb").close()
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with open(path, "ab", buffering=0) as f:
                for chunk in chunks:
                    f.write(chunk)
                    time.sleep(0.002)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    got = bytearray()
    t = threading.Thread(target=writer)
    t.start()
    fd = os.open(path, os.O_RDONLY)
    try:
        deadline = time.monotonic() + 60
        while len(got) < len(want) and time.monotonic() < deadline:
            chunk = os.pread(fd, 131_072, len(got))
            if chunk:
                got += chunk
                # never anything but what was written, in order
                assert bytes(got) == want[: len(got)]
            elif done.is_set() and len(got) >= os.fstat(fd).st_size:
                time.sleep(0.01)
    finally:
        os.close(fd)
        t.join(60)
    assert not errors, errors
    assert bytes(got) == want
    assert get(os.path.join(remote, "log")) == want


def _vm_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_daemon_memory_stays_bounded(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={mnt}/big", "bs=1M", "count=160", "status=none"],
        check=True,
    )
    assert os.stat(os.path.join(remote, "big")).st_size == 160 * MiB
    with open(os.path.join(remote, "holes"), "wb") as f:
        f.truncate(256 * MiB)  # sparse on the server: cheap to make, real bytes to read
    digest = hashlib.sha256()
    with open(os.path.join(mnt, "holes"), "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    assert digest.digest() == hashlib.sha256(bytes(256 * MiB)).digest()
    assert _vm_hwm_mib(module_mount[1].proc.pid) < 200


# -- honest errors: a server that runs out of space ---------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(where: str) -> Iterator[str]:
    os.makedirs(where)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", where], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], capture_output=True)


def _fill(directory: str, leave: int) -> None:
    st = os.statvfs(directory)
    free = st.f_bfree * st.f_frsize
    with open(os.path.join(directory, "filler"), "wb") as f:
        f.write(bytes(max(0, free - leave)))


def test_a_failed_write_makes_close_and_fsync_fail(sshd: Sshd, workdir: str) -> None:
    with tiny_tmpfs(os.path.join(workdir, "tiny")) as tiny:
        _fill(tiny, leave=16 * 1024)
        with mounted(sshd, tiny, os.path.join(workdir, "mnt")) as m:
            mnt = m.mountpoint
            # close: the write is accepted (write-behind), the server refuses it, close says so
            fd = os.open(os.path.join(mnt, "a"), os.O_WRONLY | os.O_CREAT, 0o644)
            assert os.write(fd, bytes(64 * 1024)) == 64 * 1024
            with pytest.raises(OSError) as closing:
                os.close(fd)
            assert closing.value.errno == errno.ENOSPC

            # fsync: same, and the error stays with the handle
            fd = os.open(os.path.join(mnt, "b"), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                assert os.write(fd, bytes(64 * 1024)) == 64 * 1024
                with pytest.raises(OSError) as syncing:
                    os.fsync(fd)
                assert syncing.value.errno == errno.ENOSPC
                with pytest.raises(OSError):
                    os.write(fd, b"more")
            finally:
                with contextlib.suppress(OSError):
                    os.close(fd)

            # a big streamed write: some write, or at the latest close, fails
            with pytest.raises(OSError) as streaming:
                with open(os.path.join(mnt, "c"), "wb") as f:
                    for _ in range(8):
                        f.write(bytes(MiB))
            assert streaming.value.errno == errno.ENOSPC
            assert m.proc.poll() is None  # the mount survives


def test_a_refused_chmod_or_utime_makes_close_fail(
    module_mount: tuple[str, MountProcess],
) -> None:
    """fchmod/futimens of a file being written answer at once; a change the server then
    refuses (here: the file made immutable under us) fails fsync and close, like a write."""
    remote, mnt = fresh(module_mount)
    changes: dict[str, Callable[[int], None]] = {
        "mode": lambda fd: os.fchmod(fd, 0o644),
        "times": lambda fd: os.utime(fd, ns=(10**18, 10**18)),
    }
    for name, change in changes.items():
        there = os.path.join(remote, name)
        fd = os.open(os.path.join(mnt, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"data")
            os.fsync(fd)
            subprocess.run(["chattr", "+i", there], check=True)
            change(fd)  # accepted: the SETSTAT is on its way
            with pytest.raises(OSError) as syncing:
                os.fsync(fd)
            assert syncing.value.errno in (errno.EPERM, errno.EACCES)  # SFTP v3 has one code
            with pytest.raises(OSError) as closing:
                os.close(fd)
            assert closing.value.errno == syncing.value.errno
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
            subprocess.run(["chattr", "-i", there], check=True)
