"""The integrity tester's own checks, on a plain local directory (the kernel's own
filesystem is the POSIX reference): the model agrees with it, divergences are caught,
reported replayably and shrunk."""

from __future__ import annotations

import time

import pytest

from ..integrity.model import Divergence, Engine, Generator, Model, diverges, shrink
from ..integrity.ops import Executor, Op


def test_model_agrees_with_the_local_filesystem(workdir: str) -> None:
    for seed in range(3):
        stats = Engine(workdir, workdir, seed).run(800)
        assert stats.ops >= 800
        for kind in ("replace", "mmap_write", "append", "ftruncate", "open", "close"):
            assert stats.counts[kind] > 0, kind


def test_same_seed_same_operations() -> None:
    def ops(seed: int) -> list[Op]:
        gen, model, out = Generator(seed), Model(), []
        for _ in range(300):
            op = gen.next(model)
            assert model.valid(op)
            model.apply(op)
            out.append(op)
        return out

    assert ops(7) == ops(7)
    assert ops(7) != ops(8)
    assert [Op.parse(f"#{i} {op}") for i, op in enumerate(ops(7))] == ops(7)


def test_a_divergence_is_caught_reported_and_shrunk(
    workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Executor._do

    def drop_last_byte(self: Executor, op: Op) -> object:
        if op.kind == "pwrite" and op.n > 100:  # a mount that loses a pwrite's last byte
            done = real(self, Op(op.kind, op.p, op.h, op.off, op.n - 1, op.seed))
            assert isinstance(done, int)
            return done + 1  # and claims the whole write
        return real(self, op)

    monkeypatch.setattr(Executor, "_do", drop_last_byte)
    with pytest.raises(Divergence) as info:
        Engine(workdir, workdir, 5, replay_hint="replay {seed} {ops}").run(2000)
    d = info.value
    text = str(d)
    assert f"seed=5 step={d.step}" in text and "replay 5 " in text
    assert text.count("\n    #") == min(20, len(d.ops))
    again = diverges(workdir, workdir, d.ops)
    assert again is not None
    small = shrink(d.ops, lambda ops: diverges(workdir, workdir, ops), time.monotonic() + 60)
    assert len(small) <= 4  # create, open, the pwrite (and the read that shows it)
    assert any(op.kind == "pwrite" and op.n > 100 for op in small)
