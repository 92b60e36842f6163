"""Mount a server directory with sshvfs or sshfs for the integrity tester, always unmounting."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence

from ..mounting import is_mounted, mounted, unmount_and_reap
from ..sshd import Sshd

TARGETS = ("sshvfs", "sshfs")
MOUNT_TIMEOUT = 30.0


def have_sshfs() -> bool:
    return shutil.which("sshfs") is not None


@contextlib.contextmanager
def mount_sshfs(
    sshd: Sshd, remote: str, mountpoint: str, options: Sequence[str] = ()
) -> Iterator[str]:
    """sshfs (its defaults) in the foreground, trusting the test server's key only."""
    opts = [
        f"IdentityFile={sshd.client_key}",
        f"UserKnownHostsFile={sshd.known_hosts}",
        f"port={sshd.port}",
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
        *options,
    ]
    os.makedirs(mountpoint, exist_ok=True)
    log_path = mountpoint.rstrip("/") + ".log"
    cmd = ["sshfs", f"{sshd.user}@{sshd.host}:{remote}", mountpoint, "-f", "-o", ",".join(opts)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(mountpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as f:
                    raise RuntimeError(f"sshfs did not mount: {f.read()[-2000:]}")
            time.sleep(0.05)
        yield mountpoint
    finally:
        unmount_and_reap(proc, mountpoint)


@contextlib.contextmanager
def mount(
    target: str, sshd: Sshd, remote: str, mountpoint: str, options: Sequence[str] = ()
) -> Iterator[str]:
    """Mount ``remote`` (a server-side directory) on ``mountpoint``; yields the mountpoint."""
    if target == "sshvfs":
        with mounted(sshd, remote, mountpoint, options) as m:
            yield m.mountpoint
    elif target == "sshfs":
        with mount_sshfs(sshd, remote, mountpoint, options):
            yield mountpoint
    else:
        raise ValueError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")
