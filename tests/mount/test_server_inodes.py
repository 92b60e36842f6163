"""What a listing tells of a file beyond SFTP's attributes (its inode number and ctime) is
what the mount shows: an index git wrote on the server still matches through the mount."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from ..mounting import MountProcess
from .test_caching import status
from .test_streaming import fresh

pytestmark = pytest.mark.mount

PAST = 1_600_000_000  # files made long ago: their ctime (now) is not their mtime


def _listed_by_exec(mnt_root: str, mnt: str) -> None:
    """Fetch ``mnt``'s tree with one exec-channel listing (the control file's prefetch)."""
    deadline = time.monotonic() + 30
    while not status(mnt_root)["listing"]["exec"]:  # type: ignore[index]
        assert time.monotonic() < deadline, status(mnt_root)["listing"]
        time.sleep(0.1)
    with open(os.path.join(mnt_root, ".sshvfs", "prefetch"), "w") as f:
        f.write("/" + os.path.relpath(mnt, mnt_root))


def _tree(remote: str) -> list[str]:
    rels = []
    for d in range(3):
        os.makedirs(os.path.join(remote, f"d{d}"))
        for f in range(4):
            rel = f"d{d}/f{f}"
            path = os.path.join(remote, rel)
            with open(path, "w") as out:
                out.write(rel * (f + 1))
            os.utime(path, (PAST, PAST + d * 10 + f))
            rels.append(rel)
    return rels


def test_stat_shows_the_server_s_inode_number_and_ctime(
    module_mount: tuple[str, MountProcess],
) -> None:
    remote, mnt = fresh(module_mount)
    root = module_mount[1].mountpoint
    rels = _tree(remote)
    # (a file with hard links is always asked of the server: a write through another name
    # changes it behind the listing)
    os.link(os.path.join(remote, "d2", "f3"), os.path.join(remote, "d0", "hard"))
    _listed_by_exec(root, mnt)
    for rel in rels[:-1]:
        seen, truth = os.lstat(os.path.join(mnt, rel)), os.lstat(os.path.join(remote, rel))
        assert seen.st_ino == truth.st_ino, rel
        assert int(seen.st_ctime) == int(truth.st_ctime), rel
        assert int(seen.st_mtime) == int(truth.st_mtime) != int(seen.st_ctime), rel
    # every file and directory shows a number of its own
    shown = [os.lstat(os.path.join(mnt, rel)).st_ino for rel in [*rels, "d0/hard"]]
    shown += [os.lstat(os.path.join(mnt, f"d{d}")).st_ino for d in range(3)]
    assert len(set(shown)) == len(shown)


def _status(repo: str, env: dict[str, str]) -> str:
    cmd = ["git", "-c", "safe.directory=*", "-C", repo, "status", "--porcelain"]
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_status_trusts_an_index_the_server_wrote(
    module_mount: tuple[str, MountProcess],
) -> None:
    remote, mnt = fresh(module_mount)
    root = module_mount[1].mountpoint
    repo = os.path.join(remote, "repo")
    os.makedirs(repo)
    _tree(repo)
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t")
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    git = ["git", "-c", "safe.directory=*"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "tree"]):
        subprocess.run([*git, *args], cwd=repo, env=env, check=True, capture_output=True)
    subprocess.run([*git, "update-index", "-q", "--refresh"], cwd=repo, env=env, check=True)
    index = os.path.join(repo, ".git", "index")
    with open(index, "rb") as f:
        before = f.read(), os.stat(index).st_mtime_ns
    _listed_by_exec(root, os.path.join(mnt, "repo"))
    assert _status(os.path.join(mnt, "repo"), env) == ""
    # every entry matched what git recorded (else git re-reads the file and, its stat data
    # refreshed, writes the index again)
    with open(index, "rb") as f:
        assert (f.read(), os.stat(index).st_mtime_ns) == before
    # and a change made on the server is still seen once the mount is told
    with open(os.path.join(repo, "d1", "f2"), "a") as f:
        f.write("more")
    with open(os.path.join(root, ".sshvfs", "invalidate"), "w"):
        pass
    assert _status(os.path.join(mnt, "repo"), env).split() == ["M", "d1/f2"]
