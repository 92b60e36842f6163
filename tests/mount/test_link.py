"""Across a link (a delaying relay between the mount and sshd): what the mount does only
when round trips are dear. Counts round trips at the relay; asserts no timings."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator

import pytest

from ..mounting import mounted
from ..relay import Relay
from ..sshd import Sshd
from .test_caching import cache_counts, status

pytestmark = pytest.mark.mount

RTT_MS = 10.0


@pytest.fixture
def linked(sshd: Sshd, workdir: str) -> Iterator[tuple[Relay, str, str]]:
    """A mount of a fresh server directory through a 10 ms relay: (relay, server, mount)."""
    relay = Relay(sshd.port, RTT_MS).start()
    work = workdir
    remote, mnt = os.path.join(work, "remote"), os.path.join(work, "mnt")
    os.makedirs(remote)
    with open(sshd.host_key + ".pub", encoding="ascii") as f:
        keytype, blob = f.read().split()[:2]
    with open(sshd.known_hosts, "a", encoding="ascii") as f:
        f.write(f"[{sshd.host}]:{relay.port} {keytype} {blob}\n")
    through = dataclasses.replace(sshd, port=relay.port)
    try:
        # no watcher: its commands cross the relay whenever its batches fall due, and with it
        # a miss is asked of the server until a watch vouches (tests/mount/test_watch.py);
        # what is counted here is the lookups' shared listing alone
        with mounted(through, remote, mnt, ["watch=no"]):
            yield relay, remote, mnt
    finally:
        relay.stop()


def test_lookups_in_an_unlisted_directory_share_one_listing(
    linked: tuple[Relay, str, str],
) -> None:
    relay, remote, mnt = linked
    for d in ("warm", "src"):
        os.makedirs(os.path.join(remote, d))
    names = [f"f{i:02d}" for i in range(20)]
    for name in names:
        for d in ("warm", "src"):
            with open(os.path.join(remote, d, name), "w") as f:
                f.write(name)
    # the mount learns the link's round trip and has its remote shell ready
    deadline = time.monotonic() + 30
    n = 0
    while not status(mnt)["listing"]["lists_for_lookups"]:  # type: ignore[index]
        assert time.monotonic() < deadline, status(mnt)["listing"]
        os.stat(os.path.join(mnt, "warm", names[n % len(names)]))
        n += 1
        time.sleep(0.05)
    before = relay.count()
    for name in names:
        assert os.stat(os.path.join(mnt, "src", name)).st_size == 3
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(mnt, "src", "missing"))
    # the first lookup's LSTAT, and the listing it started, answered the 19 others and the miss
    # (the lookup of src itself, then f00's LSTAT with src's listing: 20 without it)
    assert relay.count() - before <= 4, (relay.count() - before, status(mnt)["listing"])
    assert cache_counts(mnt)["lookup_listings"] >= 1
