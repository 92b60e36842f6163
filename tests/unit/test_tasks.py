"""The mount's background tasks: one owner, failures isolated and logged, all ended at close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sshvfs.tasks import Tasks


async def test_a_failed_task_costs_only_itself_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = Tasks()
    done = asyncio.Event()

    async def fails() -> None:
        raise ValueError("boom")

    async def works() -> int:
        await done.wait()
        return 7

    bad = tasks.spawn(fails(), "bad one")
    good = tasks.spawn(works(), "good one")
    with caplog.at_level(logging.DEBUG, logger="sshvfs.tasks"):
        await asyncio.wait([bad])
        await asyncio.sleep(0)
    assert not good.done() and tasks.names() == ["good one"]
    assert "background task bad one failed" in caplog.text
    done.set()
    assert await good == 7
    assert len(tasks) == 0


async def test_an_oserror_is_the_starter_s_business(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Tasks()

    async def gone() -> None:
        raise FileNotFoundError(2, "No such file")

    with caplog.at_level(logging.DEBUG, logger="sshvfs.tasks"):
        task = tasks.spawn(gone(), "listing")
        with pytest.raises(FileNotFoundError):
            await task
        await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_close_ends_every_task_and_any_spawned_after() -> None:
    tasks = Tasks()
    ended = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(name)

    first = tasks.spawn(forever("a"), "a")
    second = tasks.spawn(forever("b"), "b")
    await asyncio.sleep(0)
    await tasks.close()
    assert first.cancelled() and second.cancelled()
    assert sorted(ended) == ["a", "b"] and len(tasks) == 0
    late = tasks.spawn(forever("c"), "c")
    with pytest.raises(asyncio.CancelledError):
        await late
    assert len(tasks) == 0


async def test_close_waits_a_bounded_time_for_a_task_that_will_not_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = Tasks()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores cancellation until released

    task = tasks.spawn(stubborn(), "stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="sshvfs.tasks"):
        await tasks.close(timeout=0.05)
    assert "still running after" in caplog.text and "stubborn" in caplog.text
    release.set()
    await task
