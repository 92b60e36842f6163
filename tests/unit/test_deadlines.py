"""Deadlines: TimeoutError once overdue (within the slack), nothing else changed."""

from __future__ import annotations

import asyncio
import time

import pytest

from sshvfs.deadlines import Deadlines


async def test_an_answered_operation_returns_and_leaves_no_timer() -> None:
    d = Deadlines(0.2)

    async def quick() -> int:
        await asyncio.sleep(0)
        return 7

    assert await d.run(quick()) == 7
    await asyncio.sleep(d.slack + 0.05)  # the sweep found nothing in flight: it stopped
    assert d._sweeper is None and not d._live


async def test_an_overdue_operation_is_cancelled_and_times_out_within_the_slack() -> None:
    d = Deadlines(0.2)
    cleaned: list[bool] = []

    async def stalled() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await d.run(stalled())
    took = time.monotonic() - start
    assert 0.2 <= took <= 0.2 + d.slack + 0.2
    assert cleaned == [True]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancellation taken back
    await asyncio.sleep(0)  # and the task goes on: no cancellation left pending
    assert await d.run(asyncio.sleep(0, "after")) == "after"


async def test_a_cancellation_from_elsewhere_stays_one() -> None:
    d = Deadlines(5)
    task = asyncio.ensure_future(d.run(asyncio.sleep(30)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not d._live


async def test_the_outer_of_two_deadlines_times_out_as_itself() -> None:
    outer, inner = Deadlines(0.1), Deadlines(10)
    seen: list[str] = []

    async def inside() -> None:
        try:
            await inner.run(asyncio.sleep(30))
        except asyncio.CancelledError:
            seen.append("inner cancelled")
            raise

    with pytest.raises(TimeoutError):
        await outer.run(inside())
    assert seen == ["inner cancelled"]


async def test_operations_in_other_tasks_keep_their_own_deadlines() -> None:
    d = Deadlines(0.3)

    async def late() -> str:
        await asyncio.sleep(0.15)
        return "in time"

    first = asyncio.ensure_future(d.run(asyncio.sleep(30)))
    await asyncio.sleep(0.2)
    second = asyncio.ensure_future(d.run(late()))  # began 0.2 s later: not due yet
    with pytest.raises(TimeoutError):
        await first
    assert await second == "in time"


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Deadlines(0)
