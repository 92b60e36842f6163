"""Mount sshvfs in a subprocess for a test, and always unmount it afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

from .sshd import Sshd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_mounted(path: str) -> bool:
    path = os.path.abspath(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return any(line.split()[4] == path for line in f)


def force_unmount(path: str) -> None:
    if not is_mounted(path):
        return
    for args in (["fusermount3", "-u", path], ["fusermount3", "-u", "-z", path]):
        subprocess.run(args, capture_output=True, check=False)
        if not is_mounted(path):
            return
    subprocess.run(["umount", "-l", path], capture_output=True, check=False)


class MountProcess:
    def __init__(self, proc: subprocess.Popen[bytes], mountpoint: str, log_path: str) -> None:
        self.proc = proc
        self.mountpoint = mountpoint
        self.log_path = log_path

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def sshvfs_command(
    sshd: Sshd, remote: str, mountpoint: str, options: Sequence[str] = ()
) -> list[str]:
    cmd = [sys.executable, "-m", "sshvfs", f"{sshd.user}@{sshd.host}:{remote}", mountpoint, "-f"]
    for opt in [*sshd.mount_options(), *options]:
        cmd += ["-o", opt]
    return cmd


@contextlib.contextmanager
def mounted(
    sshd: Sshd,
    remote: str,
    mountpoint: str,
    options: Sequence[str] = (),
    debug: bool = False,
    timeout: float = 30.0,
) -> Iterator[MountProcess]:
    """Mount ``remote`` (a server-side directory) on ``mountpoint`` for the block."""
    os.makedirs(mountpoint, exist_ok=True)
    log_path = mountpoint.rstrip("/") + ".log"
    cmd = sshvfs_command(sshd, remote, mountpoint, options)
    if debug:
        cmd.append("-d")
    env = dict(os.environ, PYTHONPATH=ROOT)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
    handle = MountProcess(proc, mountpoint, log_path)
    try:
        deadline = time.monotonic() + timeout
        while not is_mounted(mountpoint):
            if proc.poll() is not None:
                raise RuntimeError(f"sshvfs exited with {proc.returncode}: {handle.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"sshvfs did not mount within {timeout}s: {handle.log()[-3000:]}"
                )
            time.sleep(0.05)
        yield handle
    finally:
        unmount_and_reap(proc, mountpoint)


def unmount_and_reap(proc: subprocess.Popen[bytes], mountpoint: str) -> None:
    """Unmount, wait for the serving process (killed after 15 s), unmount whatever is left."""
    force_unmount(mountpoint)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    force_unmount(mountpoint)
