"""The CLI owns its stderr: a dependency's warning never reaches the user's terminal, and an
error stays exactly one line. Every process the CLI starts here (the mount command, the daemon
it spawns, the demo) runs with a dependency that warns at import, as cryptography 51 made
asyncssh do, with every warning shown, and with sshvfs's own warnings turned into errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from ..mounting import ROOT, force_unmount, is_mounted, sshvfs_command
from ..sshd import Sshd

pytestmark = pytest.mark.mount

# Installed through sitecustomize, so it is there before sshvfs runs a line: every warning
# shown, sshvfs's own warnings raised, and a DeprecationWarning issued from asyncssh's files
# whenever asyncssh is imported.
DRIFT = """
import importlib.abc, os, sys, warnings
warnings.simplefilter("always")
warnings.filterwarnings("error", module=r"sshvfs(\\.|$)")

class Drift(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "asyncssh":
            sys.meta_path.remove(self)
            warnings.warn_explicit(
                "DSA is deprecated (simulated dependency drift)", DeprecationWarning,
                os.path.join(sys.prefix, "site-packages", "asyncssh", "crypto", "misc.py"), 32,
                module="asyncssh.crypto.misc")
        return None

sys.meta_path.insert(0, Drift())
"""


@pytest.fixture
def drift_env(workdir: str) -> dict[str, str]:
    hooks = os.path.join(workdir, "drift")
    os.makedirs(hooks)
    with open(os.path.join(hooks, "sitecustomize.py"), "w") as f:
        f.write(DRIFT)
    return dict(os.environ, PYTHONPATH=f"{hooks}:{ROOT}")


def run(
    cmd: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


def test_the_drift_is_real(drift_env: dict[str, str]) -> None:
    """Without the CLI in charge the simulated warning does reach stderr (the test can fail)."""
    proc = run([sys.executable, "-c", "import asyncssh"], drift_env)
    assert proc.returncode == 0, proc.stderr
    assert "simulated dependency drift" in proc.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("foreground", [False, True], ids=["background", "foreground"])
def test_a_bad_host_is_one_line(drift_env: dict[str, str], workdir: str, foreground: bool) -> None:
    mnt = os.path.join(workdir, "m")
    os.makedirs(mnt)
    cmd = [sys.executable, "-m", "sshvfs", f"127.0.0.1:{workdir}", mnt, "-p", str(_closed_port())]
    proc = run(cmd + ["-f"] if foreground else cmd, drift_env)
    lines = proc.stderr.splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("sshvfs: cannot connect"), proc.stderr
    assert not is_mounted(mnt)


def test_a_mount_and_its_errors_print_nothing_else(
    sshd: Sshd, drift_env: dict[str, str], workdir: str
) -> None:
    remote, mnt = os.path.join(workdir, "r"), os.path.join(workdir, "m")
    os.makedirs(remote)
    os.makedirs(mnt)
    cmd = sshvfs_command(sshd, remote, mnt)
    cmd.remove("-f")
    try:
        proc = run(cmd, drift_env)
        assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", proc.stderr
        assert is_mounted(mnt)
        again = run(cmd, drift_env)  # the mountpoint is busy now: one line
        assert again.returncode != 0 and len(again.stderr.splitlines()) == 1, again.stderr
        out = run([sys.executable, "-m", "sshvfs", "umount", mnt], drift_env)
        assert out.returncode == 0 and out.stderr == "", out.stderr
    finally:
        force_unmount(mnt)


def test_the_demo_prints_only_its_own_lines(drift_env: dict[str, str], workdir: str) -> None:
    mnt = os.path.join(workdir, "m")
    os.makedirs(mnt)
    try:
        proc = run([sys.executable, "-m", "sshvfs", "demo", mnt, "--once"], drift_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        text = proc.stdout + proc.stderr
        assert "Warning" not in text and "drift" not in text, text
        for line in text.splitlines():
            assert line.startswith(("sshvfs demo: ", "listing of ", "wrote and read back ")), line
    finally:
        force_unmount(mnt)
