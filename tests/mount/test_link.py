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


def _two_dirs(relay: Relay, remote: str, mnt: str) -> list[str]:
    """warm/ and src/ with 20 small files each; the mount learns the link's round trip
    (statting in warm/) and has its remote shells ready, and nothing it started is still
    crossing the link (a listing a lookup started, the second shell's start). The names."""
    for d in ("warm", "src"):
        os.makedirs(os.path.join(remote, d))
    names = [f"f{i:02d}" for i in range(20)]
    for name in names:
        for d in ("warm", "src"):
            with open(os.path.join(remote, d, name), "w") as f:
                f.write(name)
    deadline = time.monotonic() + 30
    n = 0
    while not status(mnt)["listing"]["lists_for_lookups"]:  # type: ignore[index]
        assert time.monotonic() < deadline, status(mnt)["listing"]
        os.stat(os.path.join(mnt, "warm", names[n % len(names)]))
        n += 1
        time.sleep(0.05)
    quiet, last = 0, relay.count()
    while quiet < 3:  # 3 x 0.1 s (10 round trips) without a byte across the link
        assert time.monotonic() < deadline, "the link never went quiet"
        time.sleep(0.1)
        quiet, last = (quiet + 1, last) if relay.count() == last else (0, relay.count())
    return names


def test_lookups_in_an_unlisted_directory_share_one_listing(
    linked: tuple[Relay, str, str],
) -> None:
    relay, remote, mnt = linked
    names = _two_dirs(relay, remote, mnt)
    before = relay.count()
    for name in names:
        assert os.stat(os.path.join(mnt, "src", name)).st_size == 3
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(mnt, "src", "missing"))
    # the first lookup's LSTAT, and the listing it started, answered the 19 others and the miss
    # (the lookup of src itself, then f00's LSTAT with src's listing: 20 without it)
    assert relay.count() - before <= 4, (relay.count() - before, status(mnt)["listing"])
    assert cache_counts(mnt)["lookup_listings"] >= 1


def test_a_small_file_opened_across_a_link_comes_in_one_round_trip(
    linked: tuple[Relay, str, str],
) -> None:
    """An editor opening one file: one exec command (a round trip) instead of an SFTP OPEN
    and READ (two), the same bytes; a file changed on the server since the mount learnt
    its attributes is not served from what the command brought unless they match."""
    relay, remote, mnt = linked
    names = _two_dirs(relay, remote, mnt)
    for name in names:
        os.stat(os.path.join(mnt, "src", name))  # looked up (with src's listing)
    # the mount takes this way only while a command measures clearly cheaper than two
    # round trips: on a loaded machine a few opens may go to SFTP first
    trips = []
    for name in names[10:15]:
        time.sleep(0.6)  # the shell is idle again, and no four opens make a walk of reads
        before = relay.count()
        with open(os.path.join(mnt, "src", name), "rb") as f:
            assert f.read() == name.encode()
        trips.append(relay.count() - before)
        if trips[-1] <= 1:
            break
    assert trips[-1] <= 1, (trips, status(mnt)["listing"])
    # changed on the server, same size (the attributes the mount holds still say 3 bytes)
    with open(os.path.join(remote, "src", names[1]), "w") as f:
        f.write("NEW")
    os.utime(os.path.join(remote, "src", names[1]), (1, 1))
    with open(os.path.join(mnt, "src", names[1]), "rb") as f:
        assert f.read() == b"NEW"  # what SFTP would read now: the mtime did not match
