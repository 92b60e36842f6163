"""The control directory (``.sshvfs/`` at the mount root): invalidate, prefetch, cwd, here, status.

It lives on reserved inode numbers (checked before any remote lookup), is never listed by
the root's readdir (so ``cp -r``, ``find`` and ``rsync`` never see it) and is reachable by
path. Bad writes get EINVAL and a warning in the log; nothing outside the mount is touched.

- ``invalidate``: touch it (or close it having written no path: ``echo > invalidate``) to
  drop every cache (ours and the kernel's); write mount paths into it, one per line, to
  drop those subtrees.
- ``prefetch``: write a mount path to fetch that whole subtree's listings in one go.
- ``cwd``: write the remote shell's current directory (a remote absolute path); read back
  the matching local path inside the mount. ``here`` is a symlink to it.
- ``status``: read-only JSON (connection, caches, transfers, followed cwd).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat as _stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pyfuse3

from ..vfs.types import Attrs

log = logging.getLogger(__name__)

CONTROL_NAME = b".sshvfs"
DIR_INODE = 2
INVALIDATE_INODE = 3
STATUS_INODE = 4
CWD_INODE = 5
HERE_INODE = 6
PREFETCH_INODE = 7

FILES: dict[bytes, int] = {
    b"invalidate": INVALIDATE_INODE,
    b"status": STATUS_INODE,
    b"cwd": CWD_INODE,
    b"here": HERE_INODE,
    b"prefetch": PREFETCH_INODE,
}
NAMES = {ino: name for name, ino in FILES.items()}
WRITABLE = {INVALIDATE_INODE, CWD_INODE, PREFETCH_INODE}
LINE_MAX = 4096


def is_control(ino: int) -> bool:
    return DIR_INODE <= ino <= PREFETCH_INODE


def mount_path(text: bytes) -> bytes:
    """A user-written mount path (``sub/dir`` or ``/sub/dir``) -> ``b"/sub/dir"``; ValueError
    on anything that could escape the mount."""
    text = text.strip(b"\r\n")
    if not text or b"\0" in text or len(text) > LINE_MAX:
        raise ValueError("empty or invalid path")
    parts = [p for p in text.split(b"/") if p not in (b"", b".")]
    if any(p == b".." for p in parts):
        raise ValueError("'..' is not allowed")
    return b"/" + b"/".join(parts)


@dataclass
class ControlState:
    """What the control files show and act on; the mount fills in the callables."""

    mountpoint: bytes
    remote_root: bytes
    invalidate: Callable[[bytes | None], Awaitable[None]]
    prefetch: Callable[[bytes], Awaitable[int]]
    lstat: Callable[[bytes], Awaitable[Attrs]]
    status: Callable[[], dict[str, Any]]
    on_cwd: Callable[[bytes], Awaitable[None]] | None = None
    cwd: bytes | None = None  # mount path
    cwd_remote: bytes | None = None
    cwd_outside: bytes | None = None
    cwd_changed: float = 0.0
    started: float = field(default_factory=time.time)

    def cwd_local(self) -> bytes | None:
        if self.cwd is None:
            return None
        return self.mountpoint + (b"" if self.cwd == b"/" else self.cwd)


@dataclass
class _Handle:
    ino: int
    snapshot: bytes = b""
    pending: bytes = b""
    #: ``invalidate`` opened for writing: with no path written by its close, it is a touch
    touch_at_close: bool = False
    #: ControlDir._full_drops when it was opened (a touch in between already did it)
    full_drops: int = 0


class ControlDir:
    def __init__(self, state: ControlState, entry: Callable[[int, Attrs], pyfuse3.EntryAttributes]):
        self.state = state
        self._entry = entry
        self._handles: dict[int, _Handle] = {}
        self._full_drops = 0  # times every cache was dropped
        self._uid = os.getuid()
        self._gid = os.getgid()

    # -- attributes --------------------------------------------------------------------

    def _content(self, ino: int) -> bytes:
        if ino == STATUS_INODE:
            data = dict(self.state.status())
            local = self.state.cwd_local()
            data["cwd"] = os.fsdecode(local) if local is not None else None
            data["cwd_remote"] = (
                os.fsdecode(self.state.cwd_remote) if self.state.cwd_remote else None
            )
            data["cwd_outside"] = (
                os.fsdecode(self.state.cwd_outside) if self.state.cwd_outside else None
            )
            return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
        if ino == CWD_INODE:
            local = self.state.cwd_local()
            return local + b"\n" if local else b""
        return b""

    def attrs(self, ino: int) -> Attrs:
        now = time.time_ns()
        if ino == DIR_INODE:
            mode = _stat.S_IFDIR | 0o755
            size = 0
        elif ino == HERE_INODE:
            mode = _stat.S_IFLNK | 0o777
            size = len(self.state.cwd_local() or self.state.mountpoint)
        else:
            mode = _stat.S_IFREG | (0o644 if ino in WRITABLE else 0o444)
            size = len(self._content(ino))
        return Attrs(
            mode=mode, size=size, uid=self._uid, gid=self._gid, nlink=1, mtime_ns=now, atime_ns=now
        )

    def entry(self, ino: int) -> pyfuse3.EntryAttributes:
        e = self._entry(ino, self.attrs(ino))
        e.entry_timeout = 0  # always ask: content and targets change
        e.attr_timeout = 0
        return e

    def lookup(self, name: bytes) -> pyfuse3.EntryAttributes:
        ino = FILES.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.entry(ino)

    def listing(self) -> list[tuple[bytes, int]]:
        return sorted(FILES.items())

    def readlink(self, ino: int) -> bytes:
        if ino != HERE_INODE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        # before any cwd is known, "here" is the mount root
        return self.state.cwd_local() or self.state.mountpoint

    # -- handles -----------------------------------------------------------------------

    def open(self, fh: int, ino: int, flags: int) -> pyfuse3.FileInfo:
        if ino == DIR_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if writing and ino not in WRITABLE:
            raise pyfuse3.FUSEError(errno.EACCES)
        touch = writing and ino == INVALIDATE_INODE
        self._handles[fh] = _Handle(ino, self._content(ino), b"", touch, self._full_drops)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), direct_io=True, keep_cache=False)

    def owns(self, fh: int) -> bool:
        return fh in self._handles

    def read(self, fh: int, off: int, size: int) -> bytes:
        return self._handles[fh].snapshot[off : off + size]

    async def write(self, fh: int, buf: bytes) -> int:
        handle = self._handles[fh]
        data = handle.pending + buf
        if len(data) > 64 * LINE_MAX:
            handle.pending = b""
            handle.touch_at_close = False
            raise pyfuse3.FUSEError(errno.EINVAL)
        *lines, handle.pending = data.split(b"\n")
        for line in lines:
            if line.strip():
                handle.touch_at_close = False
                await self._apply(handle.ino, line)
        return len(buf)

    async def flush(self, fh: int) -> None:
        """At close: the last line if it had no newline. ``echo > invalidate`` and
        ``: > invalidate`` write no path: like ``touch``, they drop every cache."""
        handle = self._handles.get(fh)
        if handle is None:
            return
        if handle.pending.strip():
            line, handle.pending = handle.pending, b""
            handle.touch_at_close = False
            await self._apply(handle.ino, line)
        elif handle.touch_at_close:
            handle.touch_at_close = False
            if handle.full_drops == self._full_drops:  # else touch's utime just did it
                await self._drop_all()

    def release(self, fh: int) -> None:
        self._handles.pop(fh, None)

    async def setattr(self, ino: int, fields: pyfuse3.SetattrFields) -> pyfuse3.EntryAttributes:
        if ino == INVALIDATE_INODE and (fields.update_mtime or fields.update_atime):
            await self._drop_all()
        elif ino not in WRITABLE and (fields.update_size or fields.update_mode):
            raise pyfuse3.FUSEError(errno.EACCES)
        return self.entry(ino)

    # -- actions -----------------------------------------------------------------------

    async def _drop_all(self) -> None:
        log.info("invalidate: dropping every cache")
        self._full_drops += 1
        await self.state.invalidate(None)

    async def _apply(self, ino: int, line: bytes) -> None:
        if ino == CWD_INODE:
            await self._set_cwd(line)
            return
        try:
            path = mount_path(line)
        except ValueError as exc:
            log.warning("%s: ignoring bad path %r: %s", NAMES[ino].decode(), line[:200], exc)
            raise pyfuse3.FUSEError(errno.EINVAL) from None
        if ino == INVALIDATE_INODE:
            log.info("invalidate: dropping %s", os.fsdecode(path))
            await self.state.invalidate(path)
        elif ino == PREFETCH_INODE:
            await self._prefetch(path)

    async def _require_dir(self, path: bytes, what: str, shown: bytes) -> None:
        """EINVAL (and a warning) if ``path`` does not exist, ENOTDIR if it is no directory."""
        try:
            attrs = await self.state.lstat(path)
        except OSError as exc:
            log.warning("%s: %s: %s", what, os.fsdecode(shown), exc.strerror)
            raise pyfuse3.FUSEError(errno.EINVAL) from None
        if not attrs.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)

    async def _prefetch(self, path: bytes) -> None:
        await self._require_dir(path, "prefetch", path)
        count = await self.state.prefetch(path)
        if count < 0:
            log.warning(
                "prefetch: %s: not possible on this server (no exec channel, or "
                "the tree is too large)",
                os.fsdecode(path),
            )
        else:
            log.info("prefetch: %s: %d entries cached", os.fsdecode(path), count)

    async def _set_cwd(self, line: bytes) -> None:
        remote = line.strip(b"\r\n")
        if not remote.startswith(b"/") or b"\0" in remote or len(remote) > LINE_MAX:
            log.warning("cwd: ignoring %r: not an absolute remote path", remote[:200])
            raise pyfuse3.FUSEError(errno.EINVAL)
        root = self.state.remote_root.rstrip(b"/")
        norm = os.path.normpath(remote)
        if norm.startswith(b"//"):
            norm = norm[1:]
        if root and norm != root and not norm.startswith(root + b"/"):
            self.state.cwd_outside = norm
            self.state.cwd_remote = norm
            log.info("cwd %s is outside the mount; 'here' unchanged", os.fsdecode(norm))
            return
        path = norm[len(root) :] or b"/"
        await self._require_dir(path, "cwd", norm)
        self.state.cwd_outside = None
        self.state.cwd_remote = norm
        self.state.cwd = path
        self.state.cwd_changed = time.time()
        if self.state.on_cwd is not None:
            await self.state.on_cwd(path)
