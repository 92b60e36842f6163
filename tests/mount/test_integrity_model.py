"""The model-based integrity tester (tests/integrity/model.py) through real mounts.

Each run plays a seeded random sequence of file operations (writes, pwrites, O_APPEND writes,
truncates, reads, mmap reads and writes, fsync, reopen, rename-over...) over several handles
held by two processes, and checks every result, and the server's copy at the end, against an
in-memory model. Each run is bounded by an operation count and a wall-clock cap.

The seeds are fixed (random with ``SSHVFS_MODEL_SEED=random``), in the test ids and printed,
and a divergence names its seed, step and last operations:

    SSHVFS_MODEL_SEED=1234 SSHVFS_MODEL_OPS=345 .venv/bin/python -m pytest -q \\
        -p no:cacheprovider tests/mount/test_integrity_model.py
    scripts/stress --seed 1234 --ops 345 --shrink        # the same, shrunk to a minimal trace

``SSHVFS_MODEL_SECONDS`` sets the cap of each run (default 15), ``SSHVFS_MODEL_SKIP`` lists
operation kinds not to generate (e.g. ``replace,truncate``).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time

import pytest

from ..integrity.model import Engine
from ..integrity.targets import have_sshfs, mount
from ..mounting import MountProcess
from ..sshd import Sshd

pytestmark = pytest.mark.mount

_PINNED = os.environ.get("SSHVFS_MODEL_SEED")
# CI plays the same seeds every run, so that a red run names a real regression; fresh random
# seeds are for scripts/stress, or here with SSHVFS_MODEL_SEED=random
if _PINNED == "random":
    _PINNED = None
    BASE_SEED = random.SystemRandom().randrange(1 << 30)
else:
    BASE_SEED = 20261206
BASE_SEED = int(_PINNED) if _PINNED else BASE_SEED
SEEDS = [BASE_SEED] if _PINNED else [BASE_SEED + i for i in range(4)]
OPS = int(os.environ.get("SSHVFS_MODEL_OPS", "6000"))
SECONDS = float(os.environ.get("SSHVFS_MODEL_SECONDS", "15"))
SKIP = [k for k in os.environ.get("SSHVFS_MODEL_SKIP", "").split(",") if k]


def run_model(target: str, root: str, server_root: str, seed: int) -> None:
    hint = (
        f"SSHVFS_MODEL_SEED={{seed}} SSHVFS_MODEL_OPS={{ops}} .venv/bin/python -m pytest -q"
        f" -p no:cacheprovider tests/mount/test_integrity_model.py -k {target}"
        f"   (or: scripts/stress --target {target} --seed {{seed}} --ops {{ops}} --shrink)"
    )
    print(f"model seed {seed} on {target} (SSHVFS_MODEL_SEED={seed} replays it)")
    engine = Engine(root, server_root, seed, skip=SKIP, replay_hint=hint)
    stats = engine.run(OPS, time.monotonic() + SECONDS)
    print(f"seed {seed}: {stats.ops} ops in {stats.elapsed:.1f} s: {dict(stats.counts)}")
    assert stats.ops > 0


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed={s}")
def test_model_sshvfs(module_mount: tuple[str, MountProcess], seed: int) -> None:
    remote, m = module_mount
    run_model("sshvfs", m.mountpoint, remote, seed)


@pytest.mark.skipif(not have_sshfs(), reason="sshfs is not installed")
def test_model_sshfs_oracle(sshd: Sshd) -> None:
    """The same engine on sshfs, the reference for what FUSE over SFTP can give."""
    base = tempfile.mkdtemp(prefix="sshvfs-sshfs-")
    remote = os.path.join(base, "remote")
    os.makedirs(remote)
    try:
        with mount("sshfs", sshd, remote, os.path.join(base, "mnt")) as mnt:
            run_model("sshfs", mnt, remote, BASE_SEED)
    finally:
        shutil.rmtree(base, ignore_errors=True)
