"""Never hang, never lose data: a real sshd killed, stopped, restarted under a live mount."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from ..mounting import is_mounted, mounted
from ..sshd import Sshd

pytestmark = pytest.mark.mount

MiB = 1 << 20


@pytest.fixture
def own_sshd() -> Iterator[Sshd]:
    """A server of the test's own: these tests kill and stop it."""
    server = Sshd().start()
    try:
        yield server
    finally:
        for pid in [*server.session_pids(), *([server.proc.pid] if server.proc else [])]:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        server.cleanup()


def all_sshd_pids(server: Sshd) -> list[int]:
    assert server.proc is not None
    return [server.proc.pid, *server.session_pids()]


def write_random(path: str, size: int, seed: int) -> str:
    import random

    rng = random.Random(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 4 * MiB))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def run_py(code: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )


READ_AND_HASH = """
import hashlib, sys, time
h = hashlib.sha256()
n = 0
try:
    with open(sys.argv[1], 'rb', buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
            if n == 32 << 20:
                print('halfway', flush=True)
                time.sleep(1.0)
except OSError as e:
    print('error', e.errno, flush=True)
    sys.exit(0)
print('done', h.hexdigest(), n, flush=True)
"""


def test_sshd_session_killed_during_read(own_sshd: Sshd, workdir: str) -> None:
    remote = os.path.join(workdir, "r")
    os.makedirs(remote)
    want = write_random(os.path.join(remote, "big"), 200 * MiB, 1)
    mnt = os.path.join(workdir, "m")
    with mounted(own_sshd, remote, mnt, ["timeout=10"]) as m:
        proc = subprocess.Popen(
            [sys.executable, "-c", READ_AND_HASH, os.path.join(mnt, "big")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "halfway"
        own_sshd.kill_sessions()  # the link is gone
        out, _ = proc.communicate(timeout=120)  # never hangs
        result = out.split()
        assert result[0] in ("done", "error"), out
        if result[0] == "done":
            assert result[1] == want and int(result[2]) == 200 * MiB
        else:
            assert int(result[1]) == 5  # EIO
        # the mount is up and works on the new connection
        with open(os.path.join(mnt, "big"), "rb") as f:
            f.seek(123 * MiB)
            with open(os.path.join(remote, "big"), "rb") as g:
                g.seek(123 * MiB)
                assert f.read(MiB) == g.read(MiB)
        status = open(os.path.join(mnt, ".sshvfs", "status")).read()
        assert '"reconnects": 1' in status and '"state": "connected"' in status, m.log()[-2000:]


def test_stalled_server_fails_fast_then_recovers(own_sshd: Sshd, workdir: str) -> None:
    remote = os.path.join(workdir, "r")
    os.makedirs(os.path.join(remote, "d"))
    mnt = os.path.join(workdir, "m")
    with mounted(own_sshd, remote, mnt, ["timeout=2", "cache=no"]):
        assert os.listdir(mnt) == ["d"]
        pids = all_sshd_pids(own_sshd)
        for pid in pids:
            # a session process may end as it is listed (the exec warm-up's probe command
            # or a shell starting at mount): gone, it needs no stopping
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(OSError) as e:
                os.stat(os.path.join(mnt, "d", "x"))
            took = time.monotonic() - start
            assert e.value.errno in (110, 5)  # ETIMEDOUT or EIO, never a hang
            assert took < 10, took
            # another process is not blocked behind it either
            probe = run_py(
                "import os,sys; print(os.path.isdir(sys.argv[1]))",
                os.path.join(mnt, ".sshvfs"),
                timeout=10,
            )
            assert probe.stdout.strip() == "True"
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:
            try:
                open(os.path.join(mnt, "d", "after"), "w").close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert os.listdir(os.path.join(remote, "d")) == ["after"]


def test_server_restarted_mount_recovers(own_sshd: Sshd, workdir: str) -> None:
    remote = os.path.join(workdir, "r")
    os.makedirs(remote)
    with open(os.path.join(remote, "f"), "w") as f:
        f.write("before")
    mnt = os.path.join(workdir, "m")
    with mounted(own_sshd, remote, mnt, ["timeout=5", "cache=no"]):
        held = open(os.path.join(mnt, "f"), "rb")  # a handle across the outage
        own_sshd.stop()
        with pytest.raises(OSError):
            os.stat(os.path.join(mnt, "f"))
        time.sleep(5)
        own_sshd.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                with open(os.path.join(mnt, "f")) as f:
                    assert f.read() == "before"
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert held.read() == b"before"  # reopened by path on the new connection
        held.close()
        with open(os.path.join(mnt, "g"), "w") as f:
            f.write("after")
        with open(os.path.join(remote, "g")) as f:
            assert f.read() == "after"
        assert is_mounted(mnt)


def test_lost_writes_are_reported_and_fsynced_ones_kept(own_sshd: Sshd, workdir: str) -> None:
    remote = os.path.join(workdir, "r")
    os.makedirs(remote)
    mnt = os.path.join(workdir, "m")
    with mounted(own_sshd, remote, mnt, ["timeout=10"]):
        kept = os.urandom(3 * MiB + 5)
        fd = os.open(os.path.join(mnt, "kept"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, kept)
        os.fsync(fd)  # success means: on the server
        with open(os.path.join(remote, "kept"), "rb") as f:
            assert f.read() == kept
        os.close(fd)
        fd = os.open(os.path.join(mnt, "lost"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"x" * MiB)
        own_sshd.kill_sessions()  # the link is gone
        failed = False
        try:
            for _ in range(64):  # keep writing into the gap
                os.write(fd, b"y" * MiB)
            os.fsync(fd)
        except OSError as exc:
            failed = exc.errno in (5, 110)
        try:
            os.close(fd)
        except OSError as exc:
            failed = failed or exc.errno in (5, 110)
        size = os.path.getsize(os.path.join(remote, "lost"))
        # either every byte reached the server, or the application was told
        assert failed or size == 65 * MiB, size


WORKER = """
import hashlib, os, random, sys, time
root, idx, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rng = random.Random(idx)
end = time.monotonic() + seconds
rounds = 0
while time.monotonic() < end:
    data = rng.randbytes(rng.randrange(1, 3 << 20))
    path = os.path.join(root, f"w{idx}-{rounds % 3}")
    with open(path, "wb") as f:
        f.write(data)
    with open(path, "rb") as f:
        if f.read() != data:
            print("MISMATCH", path, flush=True)
            sys.exit(1)
    rounds += 1
print("ok", rounds, flush=True)
"""


def test_32_processes_stay_correct_and_responsive(sshd: Sshd, workdir: str) -> None:
    remote = os.path.join(workdir, "r")
    os.makedirs(remote)
    mnt = os.path.join(workdir, "m")
    seconds = 30.0
    with mounted(sshd, remote, mnt):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, mnt, str(i), str(seconds)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(32)
        ]
        worst = 0.0
        stop = threading.Event()

        def probe() -> None:
            nonlocal worst
            while not stop.is_set():
                t0 = time.monotonic()
                run_py("import os,sys; os.stat(sys.argv[1])", mnt, timeout=30)
                worst = max(worst, time.monotonic() - t0 - 0.05)  # minus interpreter start
                time.sleep(0.5)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            outputs = [p.communicate(timeout=seconds + 120)[0] for p in procs]
        finally:
            stop.set()
            prober.join()
        for p, out in zip(procs, outputs, strict=True):
            assert p.returncode == 0 and out.startswith("ok"), out
        assert worst < 1.0, worst
        for i in range(32):  # the server holds what each worker last wrote and read back
            assert os.path.exists(os.path.join(remote, f"w{i}-0"))


def test_sigterm_with_write_in_flight(sshd: Sshd, workdir: str) -> None:
    remote = os.path.join(workdir, "r")
    os.makedirs(remote)
    mnt = os.path.join(workdir, "m")
    with mounted(sshd, remote, mnt) as m:
        writer = subprocess.Popen(
            [
                "dd",
                "if=/dev/zero",
                f"of={os.path.join(mnt, 'out')}",
                "bs=1M",
                "count=400",
                "conv=fsync",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)
        m.proc.send_signal(signal.SIGTERM)
        m.proc.wait(60)  # the daemon ends by itself
        writer.wait(60)
        assert not is_mounted(mnt)
        size = os.path.getsize(os.path.join(remote, "out"))
        # complete, or the writer was told: never silently short
        assert size == 400 * MiB or writer.returncode != 0, (size, writer.returncode)


def test_no_secrets_in_debug_log(sshd: Sshd, workdir: str) -> None:
    remote = os.path.join(workdir, "r")
    os.makedirs(remote)
    mnt = os.path.join(workdir, "m")
    with mounted(sshd, remote, mnt, debug=True) as m:
        os.listdir(mnt)
    with open(sshd.client_key) as f:
        key_lines = [line for line in f.read().splitlines() if "PRIVATE" not in line]
    log = m.log()
    assert all(line not in log for line in key_lines if len(line) > 20)
