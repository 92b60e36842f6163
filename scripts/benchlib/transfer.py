"""Streaming scenarios: big sequential read and write, untar of small files, daemon RSS."""

from __future__ import annotations

import os
import random
import shlex
import shutil
import tarfile

from .framework import Context, Scenario, Target, register

MiB = 1 << 20


def _read_size(ctx: Context) -> int:
    return ctx.size(1024 * MiB, quick=64 * MiB)


def _write_mib(ctx: Context) -> int:
    return ctx.size(512, quick=32)


# -- sequential read ---------------------------------------------------------------------


def read_setup(ctx: Context) -> None:
    ctx.make_file(ctx.data / "read.bin", _read_size(ctx))


def read_prepare(ctx: Context) -> None:
    ctx.warm(ctx.data / "read.bin")


def read_run(ctx: Context, t: Target) -> None:
    ctx.sh(f"cat {shlex.quote(t.path('read.bin'))} > /dev/null")


def read_pipe(ctx: Context) -> None:
    ctx.sh(ctx.ssh_cmd(f"cat {shlex.quote(str(ctx.data / 'read.bin'))}") + " > /dev/null")


# -- sequential write --------------------------------------------------------------------


def write_setup(ctx: Context) -> None:
    pass


def write_run(ctx: Context, t: Target) -> None:
    out = shlex.quote(t.path("write.bin"))
    ctx.sh(f"dd if=/dev/zero of={out} bs=1M count={_write_mib(ctx)} status=none")


def write_pipe(ctx: Context) -> None:
    out = shlex.quote(str(ctx.data / "write.bin"))
    ctx.sh(
        f"dd if=/dev/zero bs=1M count={_write_mib(ctx)} status=none | "
        + ctx.ssh_cmd(f"cat > {out}")
    )


def write_cleanup(ctx: Context, t: Target) -> None:
    path = ctx.data / "write.bin"
    if path.exists():
        if path.stat().st_size != _write_mib(ctx) * MiB:
            raise RuntimeError(f"{t.tool} wrote {path.stat().st_size} bytes")
        path.unlink()


# -- untar of small files ------------------------------------------------------------------


def _tarball(ctx: Context) -> str:
    return str(ctx.work / f"small-{ctx.size(1000, quick=200)}.tar")


def untar_setup(ctx: Context) -> None:
    tar_path = _tarball(ctx)
    if os.path.exists(tar_path):
        return
    rng = random.Random(42)
    src = ctx.work / "small-src"
    shutil.rmtree(src, ignore_errors=True)
    for i in range(ctx.size(1000, quick=200)):
        d = src / f"dir{i % 37:02d}" / f"sub{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:04d}.txt").write_bytes(rng.randbytes(rng.choice((0, 100, 1500, 4096, 9000))))
    with tarfile.open(tar_path, "w") as tar:
        tar.add(src, arcname="tree")
    shutil.rmtree(src)


def untar_run(ctx: Context, t: Target) -> None:
    ctx.sh(f"tar -xf {shlex.quote(_tarball(ctx))} -C {shlex.quote(t.path(''))}")


def untar_pipe(ctx: Context) -> None:
    ctx.sh(ctx.ssh_cmd(f"tar -xf - -C {shlex.quote(str(ctx.data))}") + f" < {_tarball(ctx)}")


def untar_cleanup(ctx: Context, t: Target) -> None:
    tree = ctx.data / "tree"
    count = sum(len(files) for _, _, files in os.walk(tree))
    shutil.rmtree(tree, ignore_errors=True)
    if count != ctx.size(1000, quick=200):
        raise RuntimeError(f"{t.tool} extracted {count} files")


# -- memory: the daemon's peak RSS through a big write and read ------------------------------


def _rss_mib(ctx: Context) -> int:
    return ctx.size(4096, quick=256)


def _vm_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def rss_run(ctx: Context, t: Target) -> float:
    if t.pid is None:
        raise RuntimeError(f"cannot find the {t.tool} daemon's pid")
    path = shlex.quote(t.path("rss.bin"))
    ctx.sh(f"dd if=/dev/zero of={path} bs=1M count={_rss_mib(ctx)} status=none")
    ctx.drop_caches()
    ctx.sh(f"cat {path} > /dev/null")
    return _vm_hwm_mib(t.pid)


def rss_cleanup(ctx: Context, t: Target) -> None:
    (ctx.data / "rss.bin").unlink(missing_ok=True)


register(
    Scenario(
        name="seq-read",
        measures="cat of a 1 GiB random file to /dev/null, fresh mount, cold client cache "
        "(server file in its page cache); quick: 64 MiB",
        setup=read_setup,
        run=read_run,
        pipe=read_pipe,
        prepare=read_prepare,
        goal=1.5,
    )
)
register(
    Scenario(
        name="seq-write",
        measures="dd bs=1M of 512 MiB from /dev/zero into a new file, close included; "
        "quick: 32 MiB",
        setup=write_setup,
        run=write_run,
        pipe=write_pipe,
        cleanup=write_cleanup,
        goal=1.5,
    )
)
register(
    Scenario(
        name="untar-small",
        measures="tar -x of 1,000 small files (0-9 KiB) in 111 directories; quick: 200",
        setup=untar_setup,
        run=untar_run,
        pipe=untar_pipe,
        cleanup=untar_cleanup,
        goal=1.0,
    )
)
register(
    Scenario(
        name="peak-rss",
        measures="daemon's peak RSS (VmHWM) through dd of a 4 GiB file and cat of it back; "
        "quick: 256 MiB",
        setup=write_setup,
        run=rss_run,
        cleanup=rss_cleanup,
        unit="MiB",
        repeat=1,
    )
)
