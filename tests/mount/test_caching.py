"""Caching through a real mount: stale within the TTL by design, fresh after invalidation,
never stale for the mount's own changes; the control directory."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from sshvfs.vfs.cache.cached import MADE_WINDOW

from ..mounting import ROOT, MountProcess
from .test_posix import fresh
from .test_streaming import fresh as fresh_on_server

pytestmark = pytest.mark.mount

#: what is tested here is the caches' own promise (stale within the timeout, fresh after an
#: invalidation): no watcher (tests/mount/test_watch.py has it)
MOUNT_OPTIONS = ["watch=no"]


def status(mnt: str) -> dict[str, object]:
    with open(os.path.join(mnt, ".sshvfs", "status")) as f:
        data = json.load(f)
    assert isinstance(data, dict)
    return data


def cache_counts(mnt: str) -> dict[str, int]:
    cache = status(mnt)["cache"]
    assert isinstance(cache, dict)
    return cache


def asked(mnt: str) -> int:
    """How many times the daemon's caches were consulted so far."""
    counts = cache_counts(mnt)
    return counts["hits"] + counts["misses"]


def touch_invalidate(mnt: str) -> None:
    subprocess.run(["touch", os.path.join(mnt, ".sshvfs", "invalidate")], check=True)


def fresh_unmade(module_mount: tuple[str, MountProcess]) -> tuple[str, str]:
    """A new directory the server made, not this mount (see test_made_dir_window)."""
    remote, mnt = fresh_on_server(module_mount)
    touch_invalidate(module_mount[1].mountpoint)  # the root's listing may be cached
    return remote, mnt


def test_server_changes_stale_then_fresh_after_touch(
    module_mount: tuple[str, MountProcess],
) -> None:
    remote, mnt = fresh(module_mount)
    with open(os.path.join(remote, "old"), "w") as f:
        f.write("1")
    os.mkdir(os.path.join(remote, "sub"))
    assert sorted(os.listdir(mnt)) == ["old", "sub"]
    assert os.stat(os.path.join(mnt, "old")).st_size == 1
    os.listdir(os.path.join(mnt, "sub"))
    # behind the mount's back
    with open(os.path.join(remote, "created"), "w") as f:
        f.write("new")
    os.rename(os.path.join(remote, "old"), os.path.join(remote, "moved"))
    with open(os.path.join(remote, "sub", "inside"), "w") as f:
        f.write("x")
    # within the TTL the mount shows what it saw (asserted: this is the cache working)
    assert sorted(os.listdir(mnt)) == ["old", "sub"]
    assert os.path.exists(os.path.join(mnt, "old"))
    assert not os.path.exists(os.path.join(mnt, "created"))
    assert os.listdir(os.path.join(mnt, "sub")) == []
    touch_invalidate(module_mount[1].mountpoint)
    assert sorted(os.listdir(mnt)) == ["created", "moved", "sub"]
    assert not os.path.exists(os.path.join(mnt, "old"))
    with open(os.path.join(mnt, "created")) as f:
        assert f.read() == "new"
    assert os.listdir(os.path.join(mnt, "sub")) == ["inside"]


def test_invalidation_keeps_working_directories(module_mount: tuple[str, MountProcess]) -> None:
    """A shell sitting in the mount survives an invalidation: its directory still exists, so
    getcwd() must still work (an unhashed kernel entry made it fail with ENOENT)."""
    remote, mnt = fresh(module_mount)
    os.makedirs(os.path.join(mnt, "a", "b"))
    os.makedirs(os.path.join(remote, "gone"))
    inside = os.path.join(mnt, "a", "b")
    script = (
        "import os, subprocess, sys\n"
        "subprocess.run(['touch', sys.argv[1]], check=True)\n"
        "print(os.getcwd())\n"
        "os.rmdir(sys.argv[2])\n"  # behind the mount's back
        "subprocess.run(['touch', sys.argv[1]], check=True)\n"
        "print(os.getcwd())\n"
    )
    invalidate = os.path.join(module_mount[1].mountpoint, ".sshvfs", "invalidate")
    proc = subprocess.run(
        [sys.executable, "-c", script, invalidate, os.path.join(remote, "gone")],
        cwd=inside,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [inside, inside]
    assert not os.path.exists(os.path.join(mnt, "gone"))  # removed names still go


def test_kernel_cached_attrs_follow_invalidation(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    path = os.path.join(mnt, "f")
    with open(path, "w") as f:
        f.write("short")
    assert os.stat(path).st_size == 5
    with open(path) as f:
        assert f.read() == "short"
    with open(os.path.join(remote, "f"), "w") as f:
        f.write("much longer now")
    assert os.stat(path).st_size == 5  # the kernel and we still trust the old attributes
    touch_invalidate(module_mount[1].mountpoint)
    assert os.stat(path).st_size == 15
    with open(path) as f:
        assert f.read() == "much longer now"  # and the page cache was dropped too


def test_invalidate_one_subtree_keeps_the_rest(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh_unmade(module_mount)
    name = os.path.basename(mnt)
    for d in ("a", "b"):
        os.mkdir(os.path.join(remote, d))
    os.listdir(os.path.join(mnt, "a"))
    os.listdir(os.path.join(mnt, "b"))
    for d in ("a", "b"):
        open(os.path.join(remote, d, "late"), "w").close()
    root = module_mount[1].mountpoint
    before = cache_counts(root)
    with open(os.path.join(root, ".sshvfs", "invalidate"), "w") as f:
        f.write(f"{name}/a\n")
    assert os.listdir(os.path.join(mnt, "a")) == ["late"]
    assert os.listdir(os.path.join(mnt, "b")) == []  # still the cached listing
    after = cache_counts(root)
    assert after["misses"] - before["misses"] >= 1  # a was fetched again
    assert after["hits"] - before["hits"] >= 1  # b came from the cache
    # the CLI does the same
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sshvfs",
            "invalidate",
            module_mount[1].mountpoint,
            os.path.join(mnt, "b"),
        ],
        check=True,
        env=env,
    )
    assert os.listdir(os.path.join(mnt, "b")) == ["late"]


@pytest.mark.parametrize(
    "command", [": > invalidate", "echo > invalidate", "printf '\\n\\n' >> invalidate"]
)
def test_closing_invalidate_with_no_path_drops_everything(
    module_mount: tuple[str, MountProcess], command: str
) -> None:
    remote, mnt = fresh(module_mount)
    assert os.listdir(mnt) == []
    open(os.path.join(remote, "late"), "w").close()
    assert os.listdir(mnt) == []  # cached
    control = os.path.join(module_mount[1].mountpoint, ".sshvfs")
    subprocess.run(["sh", "-c", command], cwd=control, check=True)
    assert os.listdir(mnt) == ["late"]


def test_own_operations_visible_immediately(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    assert os.listdir(mnt) == []
    with open(os.path.join(mnt, "f"), "w") as f:
        f.write("abc")
        assert "f" in os.listdir(mnt)
    assert os.stat(os.path.join(mnt, "f")).st_size == 3
    assert [e.stat().st_size for e in os.scandir(mnt)] == [3]
    with open(os.path.join(mnt, "f"), "a") as f:
        f.write("defg")
    assert os.stat(os.path.join(mnt, "f")).st_size == 7
    listing = subprocess.run(["ls", "-l", mnt], capture_output=True, text=True).stdout
    assert " 7 " in listing
    os.rename(os.path.join(mnt, "f"), os.path.join(mnt, "g"))
    assert os.listdir(mnt) == ["g"]
    assert not os.path.exists(os.path.join(mnt, "f"))
    assert os.path.exists(os.path.join(mnt, "g"))
    os.unlink(os.path.join(mnt, "g"))
    assert os.listdir(mnt) == []
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(mnt, "g"))
    os.mkdir(os.path.join(mnt, "d"))
    os.chmod(os.path.join(mnt, "d"), 0o700)
    assert os.stat(os.path.join(mnt, "d")).st_mode & 0o777 == 0o700
    assert [e.stat().st_mode & 0o777 for e in os.scandir(mnt)] == [0o700]
    os.rmdir(os.path.join(mnt, "d"))
    assert os.listdir(mnt) == [] and os.listdir(remote) == []


def test_control_directory(module_mount: tuple[str, MountProcess]) -> None:
    _, m = module_mount
    root = m.mountpoint
    assert ".sshvfs" not in os.listdir(root)
    assert os.path.isdir(os.path.join(root, ".sshvfs"))
    assert sorted(os.listdir(os.path.join(root, ".sshvfs"))) == [
        "cwd",
        "here",
        "invalidate",
        "prefetch",
        "status",
    ]
    data = status(root)
    assert data["state"] == "connected" and data["mountpoint"] == root
    control = os.path.join(root, ".sshvfs", "invalidate")
    for bad in (b"../escape\n", b"a/../../b\n"):
        with pytest.raises(OSError) as e:
            with open(control, "wb") as f:
                f.write(bad)
        assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        open(os.path.join(root, ".sshvfs", "status"), "w")
    assert e.value.errno in (errno.EACCES, errno.EPERM)
    with pytest.raises(OSError) as e:
        os.mkdir(os.path.join(root, ".sshvfs", "x"))
    assert e.value.errno == errno.EPERM
    assert os.readlink(os.path.join(root, ".sshvfs", "here")) == root
    find = subprocess.run(["find", root, "-name", "status"], capture_output=True, text=True)
    assert ".sshvfs" not in find.stdout


def test_cwd_and_here(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh_unmade(module_mount)
    target = os.path.join(remote, "dir with space ünï")
    os.mkdir(target)
    cwd = os.path.join(module_mount[1].mountpoint, ".sshvfs", "cwd")
    with open(cwd, "wb") as f:
        f.write(os.fsencode(target) + b"\n")
    with open(cwd, "rb") as f:
        assert f.read() == os.fsencode(os.path.join(mnt, "dir with space ünï")) + b"\n"
    here = os.path.join(module_mount[1].mountpoint, ".sshvfs", "here")
    assert os.readlink(here) == os.path.join(mnt, "dir with space ünï")
    assert os.listdir(here) == []
    # outside the mount: reported in status, "here" unchanged
    with open(cwd, "w") as f:
        f.write("/definitely/elsewhere\n")
    assert status(module_mount[1].mountpoint)["cwd_outside"] == "/definitely/elsewhere"
    assert os.readlink(here) == os.path.join(mnt, "dir with space ünï")
    with pytest.raises(OSError) as e:
        with open(cwd, "w") as f:
            f.write(os.path.join(remote, "missing") + "\n")
    assert e.value.errno == errno.EINVAL


def test_status_cli(module_mount: tuple[str, MountProcess]) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-m", "sshvfs", "status", module_mount[1].mountpoint],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "connection: connected" in out and "cache:" in out
    bad = subprocess.run(
        [sys.executable, "-m", "sshvfs", "status", "/tmp"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 1 and "not an sshvfs mount" in bad.stderr


def test_made_dir_window(module_mount: tuple[str, MountProcess]) -> None:
    """Right after the mount made a directory (and while it goes on filling it), a name the
    server put there is not looked up; a listing sees it at once, and a lookup does soon."""
    remote, mnt = fresh(module_mount)
    os.mkdir(os.path.join(mnt, "made"))
    open(os.path.join(remote, "made", "theirs"), "w").close()
    assert not os.path.exists(os.path.join(mnt, "made", "theirs"))
    time.sleep(MADE_WINDOW + 0.5)
    assert os.path.exists(os.path.join(mnt, "made", "theirs"))
    os.mkdir(os.path.join(mnt, "made2"))
    open(os.path.join(remote, "made2", "theirs"), "w").close()
    assert os.listdir(os.path.join(mnt, "made2")) == ["theirs"]
    assert os.path.exists(os.path.join(mnt, "made2", "theirs"))
