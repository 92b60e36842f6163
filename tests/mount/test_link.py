"""Across a link (a delaying relay between the mount and sshd): what the mount does only
when round trips are dear. Counts round trips at the relay; asserts no timings."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterator

import pytest

from ..mounting import mounted
from ..relay import Relay
from ..sshd import Sshd
from .test_caching import cache_counts

pytestmark = pytest.mark.mount

RTT_MS = 10.0


@pytest.fixture
def linked(sshd: Sshd) -> Iterator[tuple[Relay, str, str]]:
    """A mount of a fresh server directory through a 10 ms relay: (relay, server, mount)."""
    relay = Relay(sshd.port, RTT_MS).start()
    work = tempfile.mkdtemp(prefix="sshvfs-link-")
    remote, mnt = os.path.join(work, "remote"), os.path.join(work, "mnt")
    os.makedirs(remote)
    with open(sshd.host_key + ".pub", encoding="ascii") as f:
        keytype, blob = f.read().split()[:2]
    with open(sshd.known_hosts, "a", encoding="ascii") as f:
        f.write(f"[{sshd.host}]:{relay.port} {keytype} {blob}\n")
    through = dataclasses.replace(sshd, port=relay.port)
    try:
        with mounted(through, remote, mnt):
            yield relay, remote, mnt
    finally:
        relay.stop()


def test_lookups_in_an_unlisted_directory_share_one_listing(
    linked: tuple[Relay, str, str],
) -> None:
    relay, remote, mnt = linked
    os.makedirs(os.path.join(remote, "src"))
    names = [f"f{i:02d}" for i in range(20)]
    for name in names:
        with open(os.path.join(remote, "src", name), "w") as f:
            f.write(name)
    os.stat(os.path.join(mnt, "src"))
    for name in names[:3]:  # the mount learns the link's round trip
        os.stat(os.path.join(mnt, "src", name))
    before = relay.count()
    for name in names[3:]:
        assert os.stat(os.path.join(mnt, "src", name)).st_size == 3
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(mnt, "src", "missing"))
    # 17 lookups and a miss: from the listing that the first lookups started
    assert relay.count() - before <= 2, relay.count() - before
    assert cache_counts(mnt)["lookup_listings"] >= 1
