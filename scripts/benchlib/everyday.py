"""Everyday scenarios: what a person does all day on a mounted source tree.

The data is a small source repository on the server: 4 KiB text files, 10 to a directory
(1,100 files in 110 directories; quick: 200 in 20), committed with git.

- ``open-read``: open and read a 4 KiB file never seen before (a fresh mount; each file in
  a directory not yet looked up), per operation: p50 in the table, p99 below it.
- ``save``: an editor's save (write a temp file, fsync, close, rename it over the file),
  per operation on a warm mount.
- ``git-status``: ``git status`` on a fresh mount, the index as git on the server left it
  (refreshed there before each run: a repository also used over ssh, or last used through
  another mount). Git trusts an entry whose size, mtime, ctime, inode number and owner
  match; sshfs shows its own inode numbers and ctime = mtime, so git reads every file to
  be sure; sshvfs shows the server's where a listing told them.
- ``grep-r``: ``grep -r`` over the repository on a fresh mount.
- ``cp-r-out``: ``cp -r`` of the repository out of a fresh mount.
- ``include-search``: a compiler's include search on a warm mount: stat of 20 header names
  missing from each of 10 include directories, 5 times over, per stat in microseconds.

Goals are loopback's of the everyday-latency work; ``--rtt`` shows the WAN figures.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time

from .framework import Context, Measured, Scenario, Target, percentiles, register

FILE_SIZE = 4096
PER_DIR = 10
REPO = "repo"
SAVES = "saves"


def _dirs(ctx: Context) -> int:
    return ctx.size(110, quick=20)


def _text(rng: random.Random, n: int) -> bytes:
    words = [b"int", b"return", b"value", b"self", b"def", b"if", b"else", b"for", b"data"]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
    return bytes(out[:n])


def repo_setup(ctx: Context) -> None:
    root = ctx.data / REPO
    n = _dirs(ctx)
    if (root / ".git").exists() and len(os.listdir(root)) == n + 1:
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(17)
    for d in range(n):
        sub = root / f"pkg{d:03d}"
        sub.mkdir(parents=True)
        for f in range(PER_DIR):
            body = _text(rng, FILE_SIZE)
            if f == 3:
                body = b"needle\n" + body[7:]
            (sub / f"mod{f:02d}.py").write_bytes(body)
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b")
    env["GIT_COMMITTER_EMAIL"] = "b@b"
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tree"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    ctx.warm_tree(root)


def open_read_run(ctx: Context, t: Target) -> Measured:
    samples = []
    n = min(_dirs(ctx), 40)
    for d in range(n):
        path = t.path(f"{REPO}/pkg{d:03d}/mod{d % PER_DIR:02d}.py")
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            data = f.read()
        samples.append((time.perf_counter() - t0) * 1000)
        if len(data) != FILE_SIZE:
            raise RuntimeError(f"{path}: read {len(data)} bytes, expected {FILE_SIZE}")
    p50, p99 = percentiles(samples)
    return Measured(p50, p99, n)


def saves_setup(ctx: Context) -> None:
    root = ctx.data / SAVES
    root.mkdir(exist_ok=True)
    rng = random.Random(5)
    for i in range(30):
        (root / f"file{i:02d}.txt").write_bytes(_text(rng, FILE_SIZE))


def save_run(ctx: Context, t: Target) -> Measured:
    samples = []
    body = _text(random.Random(time.time_ns()), FILE_SIZE)
    names = sorted(os.listdir(t.path(SAVES)))
    names = [n for n in names if not n.startswith(".")]
    for name in names:
        final = t.path(f"{SAVES}/{name}")
        tmp = t.path(f"{SAVES}/.{name}.swp")
        t0 = time.perf_counter()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        samples.append((time.perf_counter() - t0) * 1000)
    p50, p99 = percentiles(samples)
    return Measured(p50, p99, len(names))


def include_search_run(ctx: Context, t: Target) -> Measured:
    samples = []
    dirs = [t.path(f"{REPO}/pkg{d:03d}") for d in range(min(_dirs(ctx), 10))]
    headers = [f"missing{i:02d}.h" for i in range(20)]
    for _ in range(5):
        for header in headers:
            for d in dirs:
                path = os.path.join(d, header)
                t0 = time.perf_counter()
                found = os.path.exists(path)
                samples.append((time.perf_counter() - t0) * 1e6)
                if found:
                    raise RuntimeError(f"{path} exists")
    p50, p99 = percentiles(samples)
    return Measured(p50, p99, len(samples))


def git_index_on_server(ctx: Context) -> None:
    """The index as the server's git leaves it (the other tool's run rewrote it)."""
    ctx.sh(f"git -c safe.directory='*' -C {ctx.data / REPO} update-index -q --refresh")


def git_status_run(ctx: Context, t: Target) -> None:
    ctx.sh(f"git -c safe.directory='*' -C {t.path(REPO)} status --porcelain > /dev/null")


def grep_run(ctx: Context, t: Target) -> None:
    ctx.sh(f"grep -r -l needle {t.path(REPO)} > /dev/null")


def cp_run(ctx: Context, t: Target) -> None:
    ctx.sh(f"cp -r {t.path(REPO)} {ctx.work / ('cp-' + t.tool)}")


def cp_cleanup(ctx: Context, t: Target) -> None:
    shutil.rmtree(ctx.work / ("cp-" + t.tool), ignore_errors=True)


register(
    Scenario(
        name="open-read",
        measures="open+read a 4 KiB file never seen, per file (40 files; quick: 20)",
        setup=repo_setup,
        run=open_read_run,
        unit="ms",
        goal=1.5,
    )
)
register(
    Scenario(
        name="save",
        measures="editor save: temp file, write 4 KiB, fsync, close, rename over; per save",
        setup=saves_setup,
        run=save_run,
        cold=False,
        unit="ms",
        goal=1.5,
    )
)
register(
    Scenario(
        name="git-status",
        measures="git status on a fresh mount (1,100 files in 110 dirs; quick: 200 in 20)",
        setup=repo_setup,
        prepare=git_index_on_server,
        run=git_status_run,
        goal=2.0,
    )
)
register(
    Scenario(
        name="grep-r",
        measures="grep -r over the repository on a fresh mount",
        setup=repo_setup,
        run=grep_run,
        goal=2.0,
    )
)
register(
    Scenario(
        name="cp-r-out",
        measures="cp -r of the repository out of a fresh mount",
        setup=repo_setup,
        run=cp_run,
        cleanup=cp_cleanup,
        goal=2.0,
    )
)
register(
    Scenario(
        name="include-search",
        measures="stat of 20 names missing from 10 directories, 5 times, warm; per stat",
        setup=repo_setup,
        run=include_search_run,
        cold=False,
        unit="us",
    )
)
