"""The gate for pyfuse3 internals: fdwait replaces the asyncio shim's fd wait only for a
pyfuse3 release it was written against; any other keeps pyfuse3's own."""

from __future__ import annotations

import pyfuse3
import pyfuse3.asyncio
import pytest

from sshvfs.fuse.compat import fdwait, features


@pytest.fixture
def shim() -> object:
    saved = {n: getattr(pyfuse3.asyncio, n) for n in ("wait_readable", "notify_closing", "Lock")}
    yield pyfuse3.asyncio
    for name, value in saved.items():
        setattr(pyfuse3.asyncio, name, value)


def test_an_unknown_pyfuse3_keeps_its_own_wait(
    shim: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pyfuse3, "__version__", "4.0.0")
    before = pyfuse3.asyncio.wait_readable
    assert features.serve_on_asyncio() is False
    assert pyfuse3.asyncio.wait_readable is before is not fdwait.wait_readable


def test_the_tested_pyfuse3_gets_fdwait(shim: object, monkeypatch: pytest.MonkeyPatch) -> None:
    major, minor = features.SHIM_TESTED[-1]
    monkeypatch.setattr(pyfuse3, "__version__", f"{major}.{minor}.0+sshvfs")
    assert features.serve_on_asyncio() is True
    assert pyfuse3.asyncio.wait_readable is fdwait.wait_readable
