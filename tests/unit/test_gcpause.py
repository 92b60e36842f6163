"""The collector's pause for listings (sshvfs.gcpause): resumed once listings stop, never
paused past MAX_PAUSE, and never turned on when something else had turned it off."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from sshvfs import gcpause


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gcpause._pause.resume()  # a pause an earlier test's loop left behind when it closed
    gc.enable()
    yield
    gcpause._pause.resume()
    gc.enable()


def test_paused_while_listings_come_resumed_once_they_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gcpause, "RESUME_AFTER", 0.2)

    async def main() -> None:
        for _ in range(5):  # batches 0.1 s apart: one pause throughout
            with gcpause.hold():
                assert not gc.isenabled()
            await asyncio.sleep(0.1)
            assert not gc.isenabled() and gcpause.paused()
        await asyncio.sleep(0.3)
        assert gc.isenabled() and not gcpause.paused()

    asyncio.run(main())


def test_never_paused_longer_than_max_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcpause, "RESUME_AFTER", 10.0)
    monkeypatch.setattr(gcpause, "MAX_PAUSE", 0.2)

    async def main() -> None:
        with gcpause.hold():
            pass
        await asyncio.sleep(0.25)
        with gcpause.hold():  # a listing that never stops still lets the collector run
            assert gc.isenabled()
        with gcpause.hold():
            assert not gc.isenabled()  # and the next batch may pause it again

    asyncio.run(main())


def test_a_collector_turned_off_elsewhere_stays_off() -> None:
    async def main() -> None:
        gc.disable()
        with gcpause.hold():
            pass
        assert not gcpause.paused()
        gcpause._pause.resume()
        assert not gc.isenabled()

    asyncio.run(main())
    gc.disable()
    with gcpause.hold():  # outside a loop too
        pass
    assert not gc.isenabled()


def test_outside_a_loop_the_pause_is_the_block() -> None:
    with gcpause.hold():
        assert not gc.isenabled()
    assert gc.isenabled()
