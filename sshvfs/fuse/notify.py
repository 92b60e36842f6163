"""Kernel notifications: telling the kernel to drop entries, attributes and pages.

pyfuse3's notify calls write to /dev/fuse and may wait for the kernel, which may in turn wait
for a request we are serving: they never run inside a request handler, but in a worker
thread, and the caller waits for them (bounded) so that what it promised is true on return.
"""

from __future__ import annotations

import asyncio
import logging

import pyfuse3

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
    for ino in inos:
        try:
            pyfuse3.invalidate_inode(pyfuse3.InodeT(ino), False)
        except OSError:
            pass  # the kernel already forgot it
    for parent, name in pairs:
        try:
            pyfuse3.invalidate_entry(pyfuse3.InodeT(parent), name)
        except OSError:
            pass
