"""``sshvfs follow`` drives a real shell in a pty and the mount follows its directory."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from sshvfs.follow.hooks import hook_text

from ..mounting import ROOT, MountProcess
from .test_posix import fresh

pytestmark = pytest.mark.mount


def wait_for(check: Callable[[], bool], what: str, master: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                seen += os.read(master, 65536)  # keep the pty drained
            except OSError:
                pass
        if check():
            return
    raise AssertionError(f"timed out waiting for {what}; terminal said: {seen[-2000:]!r}")


SHELLS = {
    "bash": (["bash", "--noprofile", "--rcfile", "{rc}", "-i"], "PS1='$ '\n. {hook}\n"),
    "zsh": (["zsh", "-i"], "PS1='$ '\n. {hook}\n"),  # rc is $ZDOTDIR/.zshrc
    "fish": (["fish", "--no-config", "--init-command", "source {hook}", "-i"], None),
}


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_follow_shell(shell: str, module_mount: tuple[str, MountProcess], workdir: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    remote, mnt = fresh(module_mount)
    root = module_mount[1].mountpoint
    hook = os.path.join(workdir, f"hook.{shell}")
    with open(hook, "w") as f:
        f.write(hook_text(shell))
    argv, rc_text = SHELLS[shell]
    env = dict(os.environ, PYTHONPATH=ROOT, TERM="xterm", HOME=workdir)
    rc = os.path.join(workdir, ".zshrc" if shell == "zsh" else "rc")
    if rc_text is not None:
        with open(rc, "w") as f:
            f.write(rc_text.format(hook=hook))
    env["ZDOTDIR"] = workdir
    argv = [a.format(rc=rc, hook=hook) for a in argv]
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sshvfs", "follow", root, "--", *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=remote,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    target_name = "dir with space äöü 名"
    os.mkdir(os.path.join(remote, target_name))
    cwd_file = os.path.join(root, ".sshvfs", "cwd")
    here = os.path.join(root, ".sshvfs", "here")
    expected = os.path.join(mnt, target_name)

    def cwd_is(path: str) -> Callable[[], bool]:
        def check() -> bool:
            with open(cwd_file, "rb") as f:
                return f.read() == os.fsencode(path) + b"\n"

        return check

    try:
        wait_for(cwd_is(mnt), "the starting directory", master)
        os.listdir(os.path.join(mnt, target_name))  # cached as empty now
        os.write(master, b"cd '" + target_name.encode() + b"'\n")
        wait_for(cwd_is(expected), "the cd to be reported", master)
        assert os.readlink(here) == expected
        os.write(master, b"touch newfile\n")
        # the prompt after touch drops the cwd's listing: the new file shows at once
        wait_for(lambda: "newfile" in os.listdir(here), "newfile in the listing", master)
        os.write(master, b"exit 3\n")
        wait_for(lambda: proc.poll() is not None, "the shell to exit", master)
        assert proc.returncode == 3  # the command's exit status passes through
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)


def test_follow_passthrough_is_byte_exact(module_mount: tuple[str, MountProcess]) -> None:
    root = module_mount[1].mountpoint
    master, slave = os.openpty()
    import tty

    tty.setraw(slave)  # what the test reads back must be exactly what the command wrote
    payload = bytes(range(256)) * 64 + b"\x1b]7;file://h/%2Fnot-a-dir\x07tail"
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sshvfs",
            "follow",
            root,
            "--",
            sys.executable,
            "-c",
            "import sys,os; os.write(1, bytes.fromhex(sys.argv[1]))",
            payload.hex(),
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    got = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        elif proc.poll() is not None and not ready:
            break
    proc.wait(10)
    os.close(master)
    assert proc.returncode == 0
    # the inner pty is in cooked mode: \n becomes \r\n on the way out, nothing else changes
    assert got.replace(b"\r\n", b"\n") == payload.replace(b"\r\n", b"\n") or got == payload


def test_shell_hook_and_cwd_cli(module_mount: tuple[str, MountProcess]) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-m", "sshvfs", "shell-hook", "bash"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0 and "__sshvfs_osc7" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "sshvfs", "shell-hook", "tcsh"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    remote, mnt = fresh(module_mount)
    with open(os.path.join(module_mount[1].mountpoint, ".sshvfs", "cwd"), "w") as f:
        f.write(remote + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "sshvfs", "cwd", module_mount[1].mountpoint],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.stdout == mnt + "\n"
