"""The VFS interface: typed values and the async Protocol every backend implements.

Paths are absolute *bytes* paths inside the mounted tree (``b"/"`` is the mount root,
``b"/a/b"`` a file below it). Bytes, because remote names need not be UTF-8. Errors are
``OSError`` subclasses carrying an errno (see :mod:`sshvfs.errors`).
"""

from __future__ import annotations

import enum
import stat as _stat
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable


class FileType(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    FIFO = "fifo"
    SOCKET = "socket"
    CHAR = "char"
    BLOCK = "block"
    UNKNOWN = "unknown"


_TYPE_BY_FMT = {
    _stat.S_IFREG: FileType.FILE,
    _stat.S_IFDIR: FileType.DIR,
    _stat.S_IFLNK: FileType.SYMLINK,
    _stat.S_IFIFO: FileType.FIFO,
    _stat.S_IFSOCK: FileType.SOCKET,
    _stat.S_IFCHR: FileType.CHAR,
    _stat.S_IFBLK: FileType.BLOCK,
}


class Attrs(NamedTuple):
    """What ``lstat`` says of one file. ``mode`` is a full st_mode (type bits included).

    A NamedTuple, not a dataclass: a huge listing builds hundreds of thousands of these,
    and a tuple is built 4x faster than a frozen dataclass (and needs no GC tracking)."""

    mode: int
    size: int
    uid: int
    gid: int
    nlink: int
    mtime_ns: int
    atime_ns: int
    #: 0 when unknown (SFTP v3 has no ctime); the mount then shows the mtime
    ctime_ns: int = 0
    #: the server's inode number; 0 when unknown (SFTP v3 has none). The mount shows it as
    #: st_ino when it can (see :mod:`sshvfs.fuse.inodes`); it is never an identity here.
    ino: int = 0

    @property
    def type(self) -> FileType:
        return _TYPE_BY_FMT.get(_stat.S_IFMT(self.mode), FileType.UNKNOWN)

    @property
    def permissions(self) -> str:
        """``ls -l`` style, e.g. ``-rw-r--r--``."""
        return _stat.filemode(self.mode)

    @property
    def is_dir(self) -> bool:
        return _stat.S_ISDIR(self.mode)


class Entry(NamedTuple):
    """One directory entry: its name and its attributes (a listing is a readdirplus)."""

    name: bytes
    attrs: Attrs
    #: symlink target when the lister learned it for free (bulk listing); else None
    target: bytes | None = None

    @property
    def type(self) -> FileType:
        return self.attrs.type

    @property
    def size(self) -> int:
        return self.attrs.size

    @property
    def mtime_ns(self) -> int:
        return self.attrs.mtime_ns

    @property
    def permissions(self) -> str:
        return self.attrs.permissions


@dataclass(frozen=True, slots=True)
class StatFs:
    block_size: int
    fragment_size: int
    blocks: int
    blocks_free: int
    blocks_available: int
    files: int
    files_free: int
    files_available: int
    name_max: int


@runtime_checkable
class VFSFile(Protocol):
    """An open file. Reads and writes are by offset; nothing is ever held whole."""

    @property
    def path(self) -> bytes: ...

    def orphan(self) -> None:
        """Its path no longer names this file (unlinked, or renamed over): it must never be
        reopened by that path (e.g. after a reconnect), which would reach another file."""
        ...

    def size_hint(self, size: int) -> None:
        """The regular file's size as last seen (e.g. by a lookup just before the open): a
        short read that reaches it may be taken as the end of file without asking again."""
        ...

    async def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; fewer only at end of file."""
        ...

    async def write(self, offset: int, data: bytes) -> int: ...

    async def truncate(self, size: int) -> None: ...

    async def fstat(self) -> Attrs: ...

    async def setstat(self, mode: int | None = None, times: tuple[int, int] | None = None) -> None:
        """Set the permission bits and/or (atime_ns, mtime_ns), after every earlier write.
        May return once the request is sent: a failure is then raised by the next write,
        flush, fsync or close, like a write's."""
        ...

    async def flush(self) -> None:
        """Wait for every write accepted so far; raise the first error any of them met."""
        ...

    async def fsync(self) -> None:
        """``flush`` and then make the data durable on the server."""
        ...

    async def close(self) -> None:
        """``flush`` and release; an error of a write not yet reported is raised here."""
        ...


@runtime_checkable
class VFS(Protocol):
    """A directory tree reached by path. Every method is one logical remote operation."""

    async def lstat(self, path: bytes) -> Attrs: ...

    async def stat(self, path: bytes) -> Attrs:
        """Like lstat but follows a final symlink."""
        ...

    async def readdir(self, path: bytes) -> list[Entry]:
        """Every entry but ``.`` and ``..``, with lstat attributes."""
        ...

    async def readlink(self, path: bytes) -> bytes: ...

    async def open(self, path: bytes, flags: int, mode: int = 0o644) -> VFSFile:
        """``flags`` are ``os.O_*`` (O_CREAT, O_EXCL, O_TRUNC honoured; O_APPEND ignored:
        the kernel computes append offsets)."""
        ...

    async def mkdir(self, path: bytes, mode: int = 0o755) -> None: ...

    async def rmdir(self, path: bytes) -> None: ...

    async def unlink(self, path: bytes) -> None: ...

    async def rename(self, old: bytes, new: bytes) -> None:
        """Atomic, replacing ``new`` if it exists (POSIX rename)."""
        ...

    async def symlink(self, target: bytes, path: bytes) -> None: ...

    async def link(self, existing: bytes, new: bytes) -> None: ...

    async def chmod(self, path: bytes, mode: int) -> None: ...

    async def chown(self, path: bytes, uid: int, gid: int) -> None:
        """``-1`` leaves that id as it is."""
        ...

    async def truncate(self, path: bytes, size: int) -> None: ...

    async def utimens(self, path: bytes, atime_ns: int | None, mtime_ns: int | None) -> None:
        """``None`` leaves that time as it is (utimensat's UTIME_OMIT)."""
        ...

    async def statfs(self, path: bytes) -> StatFs: ...

    async def tree(self, path: bytes, max_entries: int) -> dict[bytes, list[Entry]] | None:
        """Listings of ``path`` and every directory below it, keyed by mount path, in one
        go when the backend can (exec channel); None when it cannot or the subtree holds
        more than ``max_entries`` entries. Used to prefetch whole trees into caches."""
        ...

    async def close(self) -> None:
        """Release the backend (connection, threads)."""
        ...


class Change(NamedTuple):
    """One change made on the server behind the mount's back (a remote watcher saw it).
    ``kind``:

    - ``"entry"``: ``path``'s attributes or contents changed;
    - ``"name"``: ``path`` was created, removed or renamed (its directory's listing changed);
    - ``"dir"``: ``path`` is a directory whose listing changed, names unknown (a poll);
    - ``"gone"``: ``path`` is a watched directory that was removed or moved away;
    - ``"all"``: events were lost: anything may have changed (``path`` is ``b"/"``).

    ``went``: a ``"name"`` that is known to be gone (removed or moved away), not to have
    come: such a report is the mount's own only if the mount itself removed the name.
    """

    path: bytes
    kind: str
    went: bool = False


def join(parent: bytes, name: bytes) -> bytes:
    """Join a mount path and one name."""
    return b"/" + name if parent == b"/" else parent + b"/" + name


def split(path: bytes) -> tuple[bytes, bytes]:
    """``b"/a/b"`` -> ``(b"/a", b"b")``; ``b"/a"`` -> ``(b"/", b"a")``."""
    head, _, tail = path.rpartition(b"/")
    return (head or b"/", tail)


def within(path: bytes, root: bytes) -> bool:
    """Is ``path`` ``root`` or below it?"""
    return root == b"/" or path == root or path.startswith(root + b"/")


#: Set by a caller that can use a directory's entries before the listing is complete (READDIR
#: hands them to the kernel while the rest still arrives). A lister that learns entries in
#: batches calls it with each batch, in the calling task; names may repeat across batches
#: and the final list of ``readdir`` stays the answer. Layers that change entries on the
#: way up (follow_symlinks) clear it for the layers below.
listing_progress: ContextVar[Callable[[list[Entry]], None] | None] = ContextVar(
    "listing_progress", default=None
)

#: Set by a caller of ``tree`` that can use directories before the whole tree is there: a
#: backend that streams calls it with ``(mount path, entries)`` for each directory whose
#: listing is complete while the rest still arrives, and ``(mount path, None)`` to take one
#: back (it was not complete after all). The value ``tree`` returns stays the answer, and a
#: failed ``tree`` takes back everything. Layers that change entries clear it.
tree_progress: ContextVar[Callable[[bytes, list[Entry] | None], None] | None] = ContextVar(
    "tree_progress", default=None
)
