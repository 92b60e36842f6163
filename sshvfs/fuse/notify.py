"""Kernel notifications: telling the kernel to expire entries and drop attributes and pages.

pyfuse3's notify calls write to /dev/fuse and may wait for the kernel, which may in turn wait
for a request we are serving: they never run inside a request handler, but in a worker
thread, and the caller waits for them (bounded) so that what it promised is true on return.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable

import pyfuse3

from ..vfs.types import Change, split
from .inodes import InodeTable

log = logging.getLogger(__name__)

#: longest a caller waits for the kernel to take invalidations (it never should wait long)
KERNEL_NOTIFY_TIMEOUT = 5.0


async def notify_in_thread(pairs: list[tuple[int, bytes]], inos: list[int]) -> None:
    """Drop the kernel's entries ``(parent inode, name)`` and inodes ``inos`` (attributes
    and pages), from a worker thread, and wait (bounded) until the kernel has taken it."""
    try:
        async with asyncio.timeout(KERNEL_NOTIFY_TIMEOUT):
            await asyncio.to_thread(_notify_kernel, pairs, inos)
    except TimeoutError:
        log.warning("the kernel did not take an invalidation within %gs", KERNEL_NOTIFY_TIMEOUT)


def _notify_kernel(pairs: list[tuple[int, bytes]], inos: list[int]) -> None:
    global _expire
    for ino in inos:
        try:
            pyfuse3.invalidate_inode(pyfuse3.InodeT(ino), False)
        except OSError:
            pass  # the kernel already forgot it
    for parent, name in pairs:
        if _expire is not None:
            try:
                _expire(pyfuse3.InodeT(parent), name)
                continue
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    continue  # the kernel holds no such entry
                log.info("this kernel cannot expire entries: they are dropped instead")
                _expire = None
        try:
            pyfuse3.invalidate_entry(pyfuse3.InodeT(parent), name)
        except OSError:
            pass


#: Entries are expired, not invalidated: the kernel asks LOOKUP again at their next use and
#: keeps them if the answer is the same inode. An invalidated entry is unhashed at once, and a
#: directory that is some process's working directory then fails getcwd() with ENOENT (a shell
#: in the mount, ``git -C``) though it still exists. Needs Linux 6.2 and the sshvfs pyfuse3
#: patch; otherwise entries are invalidated as before.
_expire: Callable[[pyfuse3.InodeT, bytes], None] | None = getattr(pyfuse3, "expire_entry", None)


def change_targets(
    inodes: InodeTable, changes: list[Change]
) -> tuple[list[tuple[int, bytes]], list[int]] | None:
    """What the kernel must drop for ``changes`` made on the server: entries
    ``(parent inode, name)`` and inodes (attributes, pages, a directory's cached listing).
    None when everything must go (a ``"all"`` change)."""
    pairs: dict[tuple[int, bytes], None] = {}
    inos: dict[int, None] = {}
    misses = inodes.misses
    for path, kind, _ in changes:
        if kind == "all":
            return None
        node = inodes.find(path)
        if node is not None:
            node.stamp = None  # the page cache is no longer trusted
            inos[node.ino] = None
        if kind == "dir" and node is not None:
            # names came or went, which ones unknown: every name the kernel holds there,
            # missing ones too
            for name in node.children:
                pairs[(node.ino, name)] = None
            for name in misses.take_dir(node.ino):
                pairs[(node.ino, name)] = None
        renamed = kind in ("name", "gone")
        if path == b"/" or not (renamed or misses):
            continue
        parent_path, name = split(path)
        parent = inodes.find(parent_path)
        if parent is None:
            continue
        # the name itself: came or went, or the kernel holds it as missing (it may exist now)
        if misses.take(parent.ino, name) or renamed:
            pairs[(parent.ino, name)] = None
        if renamed:
            inos[parent.ino] = None
    return list(pairs), list(inos)
