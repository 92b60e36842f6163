"""The command line against a real sshd: background mounts, host keys, clear errors, demo."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ..mounting import ROOT, force_unmount, is_mounted, sshvfs_command
from ..sshd import Sshd

pytestmark = pytest.mark.mount


def run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


def background_command(sshd: Sshd, remote: str, mnt: str, *opts: str) -> list[str]:
    cmd = sshvfs_command(sshd, remote, mnt, opts)
    cmd.remove("-f")
    return cmd


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sshvfs: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_background_mount_and_umount(sshd: Sshd, workdir: str) -> None:
    remote, mnt = os.path.join(workdir, "r"), os.path.join(workdir, "m")
    os.makedirs(remote)
    os.makedirs(mnt)
    with open(os.path.join(remote, "hello"), "w") as f:
        f.write("hi")
    proc = run(background_command(sshd, remote, mnt))
    try:
        assert proc.returncode == 0, proc.stderr
        assert is_mounted(mnt)  # ready when the command returns, like sshfs
        with open(os.path.join(mnt, "hello")) as f:
            assert f.read() == "hi"
        out = run([sys.executable, "-m", "sshvfs", "umount", mnt])
        assert out.returncode == 0, out.stderr
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


def test_host_key_mismatch_refuses(sshd: Sshd, workdir: str) -> None:
    mnt = os.path.join(workdir, "m")
    os.makedirs(mnt)
    bad = os.path.join(workdir, "known_hosts")
    other = os.path.join(workdir, "otherkey")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    with open(other + ".pub") as f:
        keytype, blob = f.read().split()[:2]
    with open(bad, "w") as f:
        f.write(f"[127.0.0.1]:{sshd.port} {keytype} {blob}\n")
    cmd = background_command(sshd, workdir, mnt, f"UserKnownHostsFile={bad}")
    try:
        line = one_line_error(run(cmd))
        assert "does not match" in line and "refusing" in line
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


def test_unknown_host_refused_then_accept_new(sshd: Sshd, workdir: str) -> None:
    mnt = os.path.join(workdir, "m")
    os.makedirs(mnt)
    empty = os.path.join(workdir, "kh")
    open(empty, "w").close()
    try:
        line = one_line_error(
            run(background_command(sshd, workdir, mnt, f"UserKnownHostsFile={empty}"))
        )
        assert "not in known_hosts" in line
        proc = run(
            background_command(
                sshd,
                workdir,
                mnt,
                f"UserKnownHostsFile={empty}",
                "StrictHostKeyChecking=accept-new",
            )
        )
        assert proc.returncode == 0, proc.stderr
        with open(empty) as f:
            line = f.read()
        # hashed when the system's ssh_config says HashKnownHosts (the openssh transport)
        host = line.split()[0]
        assert host == f"[127.0.0.1]:{sshd.port}" or host.startswith("|1|"), line
        assert line.split()[1] == "ssh-ed25519"
        with open(sshd.host_key + ".pub") as f:
            assert line.split()[2] == f.read().split()[1]
    finally:
        force_unmount(mnt)


@pytest.mark.parametrize(
    "args, words",
    [
        (["-o", "no_such_option"], "unknown option 'no_such_option'"),
        (["-o", "port=abc"], "not a non-negative number"),
        (["-o", "StrictHostKeyChecking=maybe"], "not one of"),
    ],
)
def test_bad_options_one_line(sshd: Sshd, workdir: str, args: list[str], words: str) -> None:
    cmd = [sys.executable, "-m", "sshvfs", f"127.0.0.1:{workdir}", workdir, *args]
    line = one_line_error(run(cmd))
    assert words in line


def test_missing_mountpoint_and_bad_key(sshd: Sshd, workdir: str) -> None:
    line = one_line_error(run(background_command(sshd, workdir, os.path.join(workdir, "nope"))))
    assert "does not exist" in line
    mnt = os.path.join(workdir, "m")
    os.makedirs(mnt)
    other = os.path.join(workdir, "stranger")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    cmd = background_command(sshd, workdir, mnt)
    cmd[cmd.index(f"IdentityFile={sshd.client_key}")] = f"IdentityFile={other}"
    env_home = os.path.join(workdir, "home")  # no agent, no default keys
    os.makedirs(env_home)
    env = dict(os.environ, PYTHONPATH=ROOT, HOME=env_home)
    env.pop("SSH_AUTH_SOCK", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    try:
        assert "refused" in one_line_error(proc)
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


def test_connection_refused(workdir: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mnt = os.path.join(workdir, "m")
    os.makedirs(mnt)
    proc = run([sys.executable, "-m", "sshvfs", f"127.0.0.1:{workdir}", mnt, "-p", str(port)])
    assert "cannot connect" in one_line_error(proc)


def test_demo_once(workdir: str) -> None:
    mnt = os.path.join(workdir, "m")
    os.makedirs(mnt)
    start = time.monotonic()
    try:
        proc = run([sys.executable, "-m", "sshvfs", "demo", mnt, "--once"], timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "wrote and read back" in proc.stdout and ": ok" in proc.stdout
        assert "README.txt" in proc.stdout
        assert "WARNING" not in proc.stdout + proc.stderr  # e.g. a child reaped by a closed loop
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)
    assert time.monotonic() - start < 120
