"""The OpenSSH transport's ``ssh -M`` master: what it leaves behind when given up."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from sshvfs.config import MountOptions, Target
from sshvfs.transport import openssh


async def test_a_master_given_up_while_connecting_leaves_nothing(tmp_path: Path) -> None:
    """A reconnect cancelled as the mount ends (the master still connecting): the ssh
    master, in a session of its own, must not outlive the mount, nor its socket's
    directory (it used to leak both)."""
    started = tmp_path / "started"
    slow = tmp_path / "slow-ssh"
    # the master (-M) never connects; anything else (a probe of ssh's options) ends
    slow.write_text(f'#!/bin/sh\n[ "$1" = -M ] || exit 0\ntouch {started}\nexec sleep 60\n')
    slow.chmod(0o755)
    master = openssh.Master(
        Target("127.0.0.1", "nobody", b"/"), MountOptions(ssh_command=str(slow))
    )
    starting = asyncio.ensure_future(master.start("127.0.0.1", "known_hosts"))
    for _ in range(500):
        if started.exists():
            break
        await asyncio.sleep(0.01)
    assert started.exists() and os.path.isdir(os.path.dirname(master.socket))
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert not os.path.exists(os.path.dirname(master.socket))
    proc = master._proc
    assert proc is not None
    assert await asyncio.wait_for(proc.wait(), 5) == -signal.SIGTERM
