"""Listing scenarios: a huge directory, a tree walk, and small directories.

"Cold" is the mount: fresh, with dropped page caches. The server's own metadata is warmed
again before each timed run (as the read scenario warms its file): client and server share
this machine's disk, and a server reading 100,000 inodes from disk (~1 s here, for any
client alike) would measure the disk, not the client.

- ``ls-l-100k``: cold ``ls -l`` of one 100,000-entry directory (sshvfs lists it with one
  exec command; sshfs needs 1,000+ READDIR round trips).
- ``find-8k``: cold ``find`` over ~8,000 files in 420 directories, as the mount does it
  by itself; ``find-8k-prefetch``: the same after writing the tree's path into
  ``.sshvfs/prefetch`` (one exec command for the whole tree; what walk detection does).
- ``ls-10-cold``: median time of the first listing (names and lstat, like ``ls -l``) of a
  10-entry directory never listed before, over 40 such directories.
- ``ls-10-auto/sftp``: the same with default options (``listing=auto``) divided by a mount
  with ``-o listing=sftp``: auto mode must cost small directories nothing (goal <= 1.2).
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import time

from tests.mounting import mounted

from .framework import MOUNT_TIMEOUT, Context, Scenario, Target, register

SMALL_DIRS = 40


def _make_dir(path: str, count: int, prefix: str = "file_") -> None:
    marker = os.path.join(path, f".complete-{count}")
    if os.path.exists(marker):
        return
    os.makedirs(path, exist_ok=True)
    for i in range(count):
        with open(os.path.join(path, f"{prefix}{i:06d}"), "wb") as f:
            f.write(b"x" * (i % 97))
    open(marker, "wb").close()


# -- ls -l of a huge directory -------------------------------------------------------------


def _huge(ctx: Context) -> str:
    return f"huge-{ctx.size(100_000, quick=10_000)}"


def huge_setup(ctx: Context) -> None:
    _make_dir(str(ctx.data / _huge(ctx)), ctx.size(100_000, quick=10_000))


def huge_prepare(ctx: Context) -> None:
    ctx.warm_tree(ctx.data / _huge(ctx))


def huge_run(ctx: Context, t: Target) -> None:
    ctx.sh(f"ls -l {shlex.quote(t.path(_huge(ctx)))} > /dev/null")


def huge_pipe(ctx: Context) -> None:
    ctx.sh(ctx.ssh_cmd(f"ls -l {shlex.quote(str(ctx.data / _huge(ctx)))}") + " > /dev/null")


# -- find over a tree ----------------------------------------------------------------------


def _tree(ctx: Context) -> str:
    return f"tree-{ctx.size(8000, quick=1000)}"


def tree_setup(ctx: Context) -> None:
    root = ctx.data / _tree(ctx)
    fanout = 20 if not ctx.quick else 10  # fanout dirs x fanout subdirs x 20 files
    if not (root / ".complete").exists():
        for a in range(fanout):
            for b in range(fanout):
                _make_dir(str(root / f"d{a:02d}" / f"s{b:02d}"), 20, prefix="f")
        (root / ".complete").touch()
    _TREE_SIZE[str(root)] = 1 + sum(len(f) + len(d) for _, d, f in os.walk(root))


#: paths under each tree, counted at setup (walking it is not part of what is timed)
_TREE_SIZE: dict[str, int] = {}


def _find(ctx: Context, path: str) -> None:
    expected = _TREE_SIZE[str(ctx.data / _tree(ctx))]
    out = subprocess.run(["find", path], stdout=subprocess.PIPE, check=True).stdout
    seen = out.count(b"\n")
    if seen != expected:
        raise RuntimeError(f"find saw {seen} paths, expected {expected}")


def tree_prepare(ctx: Context) -> None:
    ctx.warm_tree(ctx.data / _tree(ctx))


def find_run(ctx: Context, t: Target) -> None:
    _find(ctx, t.path(_tree(ctx)))


def find_prefetch_run(ctx: Context, t: Target) -> None:
    if t.tool == "sshvfs":
        with open(t.path(".sshvfs/prefetch"), "w") as f:
            f.write("/" + _tree(ctx) + "\n")
    _find(ctx, t.path(_tree(ctx)))


def find_pipe(ctx: Context) -> None:
    ctx.sh(ctx.ssh_cmd(f"find {shlex.quote(str(ctx.data / _tree(ctx)))}") + " > /dev/null")


# -- small directories ---------------------------------------------------------------------


def small_setup(ctx: Context) -> None:
    for i in range(SMALL_DIRS):
        _make_dir(str(ctx.data / "small" / f"s{i:02d}"), 10)


def small_prepare(ctx: Context) -> None:
    ctx.warm_tree(ctx.data / "small")


def _list_small(root: str) -> float:
    """Median seconds of the first listing (names + lstat of each) of every small dir."""
    times = []
    for i in range(SMALL_DIRS):
        path = os.path.join(root, "small", f"s{i:02d}")
        t0 = time.perf_counter()
        with os.scandir(path) as it:
            for entry in it:
                entry.stat(follow_symlinks=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def small_run(ctx: Context, t: Target) -> float:
    return _list_small(t.path("")) * 1e3


def small_ratio_run(ctx: Context, t: Target) -> float:
    """auto (this mount) / sftp (a second mount made here), both cold; order alternates."""
    other = str(ctx.mounts / "ls-10-sftp-only")
    with mounted(ctx.sshd, str(ctx.data), other, ["listing=sftp"], timeout=MOUNT_TIMEOUT):
        ctx.drop_caches()
        if int(time.monotonic()) % 2:
            auto = _list_small(t.path(""))
            ctx.drop_caches()
            sftp = _list_small(other)
        else:
            sftp = _list_small(other)
            ctx.drop_caches()
            auto = _list_small(t.path(""))
    return auto / sftp


register(
    Scenario(
        name="ls-l-100k",
        measures="cold ls -l of a 100,000-entry directory; quick: 10,000",
        setup=huge_setup,
        prepare=huge_prepare,
        run=huge_run,
        pipe=huge_pipe,
        goal=4.0,
    )
)
register(
    Scenario(
        name="find-8k",
        measures="cold find over 8,000 files in 420 directories; quick: 1,000 in 110",
        setup=tree_setup,
        prepare=tree_prepare,
        run=find_run,
        pipe=find_pipe,
        goal=2.0,
    )
)
register(
    Scenario(
        name="find-8k-prefetch",
        measures="find-8k, sshvfs first writing the tree into .sshvfs/prefetch (timed)",
        setup=tree_setup,
        prepare=tree_prepare,
        run=find_prefetch_run,
        goal=2.0,
    )
)
register(
    Scenario(
        name="ls-10-cold",
        measures=f"median ms of the first listing + lstats of a 10-entry dir ({SMALL_DIRS} dirs)",
        setup=small_setup,
        prepare=small_prepare,
        run=small_run,
        unit="ms",
    )
)
register(
    Scenario(
        name="ls-10-auto/sftp",
        measures="ls-10-cold with listing=auto divided by the same with listing=sftp "
        "(goal: at most 1.2)",
        setup=small_setup,
        prepare=small_prepare,
        run=small_ratio_run,
        tools=("sshvfs",),
        unit="x",
    )
)
