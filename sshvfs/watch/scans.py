"""What a scan (a poll, or the catch-up of a new batch) found, as the changes the mount
applies: a watched directory whose names changed is listed again, so that only the names
that came, went or changed count (not the mount's own), and a catch-up's files are
compared with their directory's listing the same way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..vfs.types import Change, Entry, split
from .remote import parse_scan

#: directories listed again after one scan (the others' names all count as changed)
MAX_RELISTS = 64

Relist = Callable[[bytes], Awaitable[list[Entry]]]


async def scan_changes(
    records: list[bytes],
    root: bytes,
    watched: frozenset[bytes],
    relist: Relist | None,
    catching_up: bool = False,
) -> tuple[list[Change], dict[bytes, list[Entry]]]:
    """The changes of a scan's ``records`` (remote paths under ``root``), and the fresh
    listings of the directories among them.

    ``catching_up``: a catch-up reaches back CATCH_UP_SLACK before a directory's first
    use (clocks differ), so it reports what changed just before the mount listed it,
    which the mount's listing has already. There the files' directories are listed
    again too, and only files that differ from what the mount has count."""
    found = (parse_scan(r, root, watched) for r in records)
    changes = list(dict.fromkeys(c for c in found if c is not None))  # a dir comes twice
    listings: dict[bytes, list[Entry]] = {}
    if relist is None:
        return changes, listings
    for change in changes:
        if change.kind == "dir" and len(listings) < MAX_RELISTS:
            try:
                listings[change.path] = await relist(change.path)
            except OSError:
                pass  # gone or unreadable: its names all count as changed
    if catching_up:
        changes = await _compared(changes, listings, watched, relist)
    return changes, listings


async def _compared(
    changes: list[Change],
    listings: dict[bytes, list[Entry]],
    watched: frozenset[bytes],
    relist: Relist,
) -> list[Change]:
    """Files' changes in watched directories that could be listed again (fetched into
    ``listings``) become their directory's change, which the mount compares name by name
    with what it has; the rest stay as they are."""
    parents: dict[bytes, None] = {}
    for change in changes:
        if change.kind == "entry" and change.path != b"/":
            parent = split(change.path)[0]
            if parent in watched:
                parents[parent] = None
    for parent in parents:
        if parent not in listings and len(listings) < MAX_RELISTS:
            try:
                listings[parent] = await relist(parent)
            except OSError:
                pass  # its files' changes count as reported
    out: dict[Change, None] = {}
    for change in changes:
        parent = split(change.path)[0]
        if change.kind == "entry" and parent in parents and parent in listings:
            out[Change(parent, "dir")] = None
        else:
            out[change] = None
    return list(out)
