"""A huge directory full of hostile names through a real mount of a real OpenSSH sshd.

Every listing mode must show the same thing the server's own ``lstat`` says, and no name
may run a command. A dedicated sshd logs at VERBOSE, so its log tells how many commands
(exec sessions) the mount started: the bulk path must list 20,000 entries with one shell,
and the SFTP-only mount must start none.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from ..mounting import mounted
from ..sshd import Sshd

pytestmark = pytest.mark.mount

N_ENTRIES = 20_000
CANARY = f"sshvfs-mount-canary-{os.getpid()}".encode()
HOSTILE = [
    b"with space",
    b"new\nline",
    b"a -> b",
    b"-leading-dash",
    b"--",
    b"'",
    b'"',
    b"$(touch " + CANARY + b")",
    b"`touch " + CANARY + b"`",
    b"'; touch " + CANARY + b"; '",
    b"\\",
    b"*",
    b"tab\there",
    b"\xff\xfe non-utf8",
    b"x" * 255,
]


@pytest.fixture(scope="module")
def verbose_sshd() -> Iterator[Sshd]:
    server = Sshd(extra_config="LogLevel VERBOSE").start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def huge(verbose_sshd: Sshd) -> Iterator[tuple[str, bytes]]:
    """(base dir, server path of a 20,000-entry hostile directory inside base/remote)."""
    base = tempfile.mkdtemp(prefix="sshvfs-huge-")
    top = os.path.join(os.fsencode(base), b"remote", b"huge $(touch " + CANARY + b")")
    os.makedirs(top)
    for name in HOSTILE:
        with open(os.path.join(top, name), "wb") as f:
            f.write(name)
    os.symlink(b"../`touch " + CANARY + b"`\n", os.path.join(top, b"link"))
    os.mkdir(os.path.join(top, b"sub dir"))
    for i in range(N_ENTRIES - len(os.listdir(top))):
        path = os.path.join(top, b"f%05d" % i)
        with open(path, "wb") as f:
            f.write(b"x" * (i % 5))
        if i % 10 == 0:
            os.utime(path, ns=(1_600_000_000_000_000_000, 1_700_000_000_123_456_789 + i))
    try:
        yield base, top
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for where in (os.path.expanduser("~"), base, "/"):
            assert not os.path.lexists(os.path.join(os.fsencode(where), CANARY))


def _commands(server: Sshd) -> int:
    return server.read_log().count("Starting session: command")


@pytest.mark.parametrize(
    "options",
    [["listing=exec"], ["listing=auto", "listing_threshold=500"], ["listing=sftp"]],
    ids=["exec", "auto", "sftp"],
)
def test_ls_l_of_a_huge_hostile_directory(
    verbose_sshd: Sshd, huge: tuple[str, bytes], options: list[str]
) -> None:
    base, top = huge
    before = _commands(verbose_sshd)
    mnt = os.path.join(base, "mnt-" + options[0].split("=")[1])
    # watch=no: the tree was made a moment ago, so the watcher's catch-up scan would report
    # it changed and drop what the listing gave (then an SFTP LSTAT answers: nlink 1)
    with mounted(verbose_sshd, os.path.join(base, "remote"), mnt, [*options, "watch=no"]) as m:
        inside = os.path.join(os.fsencode(mnt), os.path.basename(top))
        done = subprocess.run(
            ["ls", "-l", "-n", "--time-style=+%s", os.fsdecode(inside)],
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, (done.stderr, m.log()[-3000:])
        assert done.stdout.count(b"\n") >= N_ENTRIES + 1  # "total" + one line each (or more)
        names = os.listdir(inside)
        assert sorted(names) == sorted(os.listdir(top))
        for name in names:
            got, want = os.lstat(os.path.join(inside, name)), os.lstat(os.path.join(top, name))
            assert got.st_mode == want.st_mode, name
            assert (got.st_size, got.st_uid, got.st_gid) == (
                want.st_size,
                want.st_uid,
                want.st_gid,
            ), name
            assert got.st_nlink == want.st_nlink, (name, m.log()[-3000:])
            # the mount reports whole seconds, whichever way the entry was listed
            assert got.st_mtime_ns == want.st_mtime_ns // 10**9 * 10**9, name
            if stat.S_ISLNK(want.st_mode):
                assert os.readlink(os.path.join(inside, name)) == os.readlink(
                    os.path.join(top, name)
                )
    started = _commands(verbose_sshd) - before
    if options[0] == "listing=sftp":
        assert started == 0
    else:
        # the one-shot probe and one long-lived shell, whatever the number of listings
        assert 1 <= started <= 3, started
