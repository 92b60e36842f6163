"""What the pyfuse3 in use offers beyond its stock API (scripts/pyfuse3.patch adds each
with a marker), and the gate for the asyncio shim's internals that fdwait replaces.

Each is detected, never assumed: a stock pyfuse3 runs the mount correctly, only with more
FUSE requests (a FLUSH per closed read, READDIR after OPENDIR, no kernel listing cache)
and pyfuse3's own wait for /dev/fuse."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable

import pyfuse3
import pyfuse3.asyncio

from . import fdwait

log = logging.getLogger(__name__)

#: FileInfo.noflush: a read-only open asks the kernel for no FLUSH at close
NOFLUSH = bool(getattr(pyfuse3, "NOFLUSH", False))
#: EntryAttributes.st_ino_shown and readdir_reply_stat(shown=): stat() may show an st_ino
#: apart from the node id (the server's inode number; see sshvfs.fuse.inodes)
SHOWN_INO = bool(getattr(pyfuse3, "SHOWN_INO", False))
#: a readdirplus entry from an attributes tuple, no EntryAttributes object per entry, with
#: the st_ino it shows (a build of an older patch, without ``shown=``, lists the slow way)
READDIR_REPLY_STAT: Callable[..., bool] | None = (
    getattr(pyfuse3, "readdir_reply_stat", None) if SHOWN_INO else None
)
#: the pyfuse3 releases whose asyncio worker loop fdwait was written against (each worker:
#: take the shim's Lock, wait_readable(/dev/fuse), read one request; notify_closing at end)
SHIM_TESTED = ((3, 5),)


def kernel_cache_supported() -> bool:
    """True when pyfuse3 passes the inode to a handle-less READDIR and the kernel knows
    no_opendir (Linux 5.1+)."""
    if not getattr(pyfuse3, "READDIR_INODE_WITHOUT_HANDLE", False):
        return False
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 1)


def _release() -> tuple[int, int] | None:
    found = re.match(r"(\d+)\.(\d+)", getattr(pyfuse3, "__version__", ""))
    return (int(found.group(1)), int(found.group(2))) if found else None


def serve_on_asyncio() -> bool:
    """Serve FUSE requests on the running asyncio loop (pyfuse3's asyncio mode), with
    fdwait's wait for /dev/fuse when this pyfuse3 is one it was written against. Whether
    fdwait is in use."""
    pyfuse3.asyncio.enable()
    shim = pyfuse3.asyncio
    if _release() not in SHIM_TESTED or not all(
        hasattr(shim, name) for name in ("wait_readable", "notify_closing", "Lock")
    ):
        log.info(
            "pyfuse3 %s: its own wait for /dev/fuse (fdwait knows %s)",
            getattr(pyfuse3, "__version__", "?"),
            ", ".join(f"{a}.{b}" for a, b in SHIM_TESTED),
        )
        return False
    fdwait.install()
    return True
