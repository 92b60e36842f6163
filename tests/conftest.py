from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from .mounting import MountProcess, mounted
from .sshd import Sshd, find_sshd


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    need_sshd = find_sshd() is None
    need_fuse = not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None
    for item in items:
        if need_sshd and "sshd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason="OpenSSH sshd is not installed"))
        if need_fuse and "mount" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="FUSE (/dev/fuse, fusermount3) unavailable"))


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    server = Sshd().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def workdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="sshvfs-test-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def module_mount(sshd: Sshd, request: pytest.FixtureRequest) -> Iterator[tuple[str, MountProcess]]:
    """One mount shared by a module: (server-side dir, mount handle), with the module's
    ``MOUNT_OPTIONS`` if it has any."""
    options = list(getattr(request.module, "MOUNT_OPTIONS", []))
    base = tempfile.mkdtemp(prefix="sshvfs-mod-")
    remote = os.path.join(base, "remote")
    os.makedirs(remote)
    try:
        with mounted(sshd, remote, os.path.join(base, "mnt"), options) as m:
            yield remote, m
    finally:
        shutil.rmtree(base, ignore_errors=True)
