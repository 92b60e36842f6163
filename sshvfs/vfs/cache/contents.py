"""Small files' contents fetched in bulk, and served from memory while provably current.

A walk that reads files (grep -r, cp -r, git status re-hashing what it stat'ed) costs an
OPEN and a READ round trip per file, serially: 2 x RTT a file across a WAN. When a walk's
tree was prefetched (:mod:`sshvfs.vfs.cache.treeprefetch`) and a file in it is opened, the small
files of that tree come in one exec-channel command (``find | tar`` into a server-side
temporary file, then sent framed by its length: see :mod:`sshvfs.execlist.archive`) and
land here. A later read-only open of one of them is answered from memory, with no round trip.

Bounds (README, "Caching"):
- only regular files readable by the remote user (``find -readable``), at most
  ``MAX_FILE`` bytes each and ``MAX_FILES`` a fetch; the whole cache holds at most
  ``max_bytes`` (least recently used first out);
- a copy is served only while the attributes the mount presents for the path (its attr or
  listing cache, themselves bounded by the TTL) show the same size and mtime as the copy,
  and never after ``ttl`` seconds; any change through the mount drops it at once;
- a fetch whose ``tar`` did not exit 0 (a file changed or shrank while it was read, an
  unreadable file) is dropped whole: a copy is never partial or padded.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import stat as _stat
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from ...tasks import Spawn, spawn_detached
from ..types import Attrs, VFSFile, join, split
from .ttl import PathIndex

if TYPE_CHECKING:
    from .cached import CachingVFS

log = logging.getLogger(__name__)

#: largest file fetched in bulk (bytes)
MAX_FILE = 64 * 1024
#: most files one fetch asks for (so at most MAX_FILE * MAX_FILES bytes a fetch)
MAX_FILES = 1000
#: default bound of the whole cache
MAX_BYTES = 64 * 1024 * 1024
#: read-only opens (in more than one directory) that make a walk of files across a link ...
READ_WALK = 4
#: ... and on a LAN or loopback, where an open costs a millisecond and one fetch of up to
#: MAX_FILES files costs tens of milliseconds of both machines' CPU (an editor opening a few
#: files meanwhile waited 20-70 ms for it): a walk must show itself longer to pay for it
READ_WALK_NEAR = 32
#: ... within this many seconds
READ_WALK_WINDOW = 2.0


class _Copy:
    __slots__ = ("mtime_s", "data", "fetched")

    def __init__(self, mtime_s: int, data: bytes, fetched: float) -> None:
        self.mtime_s = mtime_s
        self.data = data
        self.fetched = fetched


def _metadata_root(root: bytes, path: bytes) -> bytes:
    """The tree whose small files an open of ``path`` under the fetched tree ``root`` calls
    for: a repository's metadata (``.git``) is read by git, its worktree by everything
    else, so a read in the one does not fetch the other (git status, its index matching,
    reads .git alone), and a tree's fetch leaves its ``.git`` directories out
    (:func:`sshvfs.execlist.archive.contents_command`)."""
    below = path[len(root) :] if root != b"/" else path
    at = below.find(b"/.git/")
    return root if at < 0 else join(root, below[1 : at + 5])


class ContentCache:
    """Copies of small files by path (mount-relative), bounded in bytes, LRU."""

    def __init__(self, max_bytes: int, ttl: float, timer: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._timer = timer
        self._copies: collections.OrderedDict[bytes, _Copy] = collections.OrderedDict()
        #: the copies' paths by directory: dropping a subtree looks at that subtree only
        self._paths = PathIndex()
        self.bytes = 0
        self.hits = 0
        self.fetches = 0
        self.fetched_files = 0

    def __len__(self) -> int:
        return len(self._copies)

    def put_many(self, root: bytes, files: dict[bytes, tuple[int, bytes]], since: float) -> None:
        """Install a fetch of the tree at ``root`` (mount path), made at ``since``."""
        self.fetches += 1
        for rel, (mtime_s, data) in files.items():
            path = join(root, rel)
            self.drop(path)
            if len(data) > self.max_bytes:
                continue
            self._copies[path] = _Copy(mtime_s, data, since)
            self._paths.note(path, self._copies)
            self.bytes += len(data)
            self.fetched_files += 1
        while self.bytes > self.max_bytes and self._copies:
            _, old = self._copies.popitem(last=False)
            self.bytes -= len(old.data)

    def get(self, path: bytes, attrs: Attrs) -> bytes | None:
        """The copy of ``path`` if ``attrs`` (what the mount presents now) match it."""
        copy = self._copies.get(path)
        if copy is None:
            return None
        if (
            self._timer() - copy.fetched > self.ttl
            or not _stat.S_ISREG(attrs.mode)
            or attrs.size != len(copy.data)
            or attrs.mtime_ns // 1_000_000_000 != copy.mtime_s
        ):
            self.drop(path)
            return None
        self._copies.move_to_end(path)
        self.hits += 1
        return copy.data

    def drop(self, path: bytes) -> None:
        copy = self._copies.pop(path, None)
        if copy is not None:
            self.bytes -= len(copy.data)

    def drop_subtree(self, root: bytes) -> None:
        for path in self._paths.pop_below(root):
            self.drop(path)
        self.drop(root)

    def clear(self) -> None:
        self._copies.clear()
        self._paths = PathIndex()
        self.bytes = 0


#: ``set(path, mode, times)``: a mode and/or times change by path (fchmod, futimens)
SetByPath = Callable[[bytes, "int | None", "tuple[int, int] | None"], Awaitable[None]]


class MemoryFile:
    """A read-only open answered from a copy: no handle on the server at all. fchmod and
    futimens on it (allowed on a read-only descriptor) go by path while it names the file.

    The copy answers only while nothing changed the path (``changed``: a write through
    another handle of the mount, a change reported from the server...): from then on the
    reads go to a handle opened on the server (``reopen``), so a read after a write sees
    it, as through an SFTP handle. (If that open fails, the file was renamed or removed:
    what it held when opened is all there is to read.)"""

    def __init__(
        self,
        path: bytes,
        data: bytes,
        attrs: Attrs,
        set_by_path: SetByPath,
        changed: Callable[[], bool],
        reopen: Callable[[], Awaitable[VFSFile]],
    ) -> None:
        self._path = path
        self._data = data
        self._attrs = attrs
        self._set_by_path = set_by_path
        self._orphaned = False
        self._changed = changed
        #: until used (at most once)
        self._reopen: Callable[[], Awaitable[VFSFile]] | None = reopen
        #: the server's handle, once the copy no longer answers
        self._real: VFSFile | None = None

    @property
    def path(self) -> bytes:
        return self._path

    def orphan(self) -> None:
        self._orphaned = True

    def size_hint(self, size: int) -> None:
        pass

    async def _current(self) -> VFSFile | None:
        """The server's handle to read through, once the path changed; None: the copy."""
        if self._real is None and self._reopen is not None and not self._orphaned:
            if self._changed():
                reopen, self._reopen = self._reopen, None  # once, whatever comes of it
                try:
                    self._real = await reopen()
                except OSError:
                    pass  # renamed or removed: the copy is what it held
        return self._real

    async def read(self, offset: int, size: int) -> bytes:
        real = await self._current()
        if real is not None:
            return await real.read(offset, size)
        return self._data[offset : offset + size]

    def _read_only(self) -> OSError:
        return OSError(errno.EBADF, "opened read-only", os.fsdecode(self._path))

    async def write(self, offset: int, data: bytes) -> int:
        raise self._read_only()

    async def truncate(self, size: int) -> None:
        raise self._read_only()

    async def fstat(self) -> Attrs:
        real = await self._current()
        return await real.fstat() if real is not None else self._attrs

    async def setstat(self, mode: int | None = None, times: tuple[int, int] | None = None) -> None:
        if self._orphaned:  # its name is another file's now, and it has no handle
            raise OSError(errno.ESTALE, "file removed", os.fsdecode(self._path))
        await self._set_by_path(self._path, mode, times)

    async def flush(self) -> None:
        pass

    async def fsync(self) -> None:
        pass

    async def close(self) -> None:
        if self._real is not None:
            await self._real.close()


class ContentPrefetcher:
    """When to fetch small files in bulk, and the copies: owned by a CachingVFS.

    A read-only open that went to the server, under the root of a tree prefetched in the
    last ``ttl`` seconds (a walk the cache spotted, or an asked-for prefetch), fetches that
    root's small files in the background, once per ``ttl``. So does a walk that reads
    files without listing them first (git status hashing what its index names): at least
    ``READ_WALK`` such opens (``READ_WALK_NEAR`` unless across a link) within
    ``READ_WALK_WINDOW`` seconds, in more than one
    directory, fetch the tree of the deepest directory holding them all. A fetch that came back full
    (``MAX_FILES``) means a tree too big for one: later misses under it fetch their own
    directory's subtree instead. Opens meanwhile go to the server: waiting could be slower
    than the open itself on a fast link."""

    def __init__(
        self,
        cache: CachingVFS,
        timer: Callable[[], float],
        ttl: float,
        max_bytes: int = MAX_BYTES,
        spawn: Spawn = spawn_detached,
    ) -> None:
        self._cache = cache
        self._spawn = spawn
        self._timer = timer
        self.ttl = ttl
        self.copies = ContentCache(max_bytes, ttl, timer)
        self._fetched: dict[bytes, float] = {}
        self._full: set[bytes] = set()
        #: (when, directory + "/") of the latest read-only opens that went to the server
        self._recent: collections.deque[tuple[float, bytes]] = collections.deque(
            maxlen=READ_WALK_NEAR
        )
        self.enabled = ttl > 0 and max_bytes > 0 and hasattr(cache.inner, "contents")

    def file(self, path: bytes, attrs: Attrs) -> MemoryFile | None:
        """A read-only open of ``path`` answered from a copy, if there is a current one."""
        data = self.copies.get(path, attrs) if self.enabled else None
        if data is None:
            return None
        cache = self._cache
        opened = cache._generation(path)
        return MemoryFile(
            path,
            data,
            attrs,
            self._set_by_path,
            changed=lambda: cache._generation(path) != opened,
            reopen=lambda: cache.inner.open(path, os.O_RDONLY),
        )

    async def fetch_one(self, path: bytes, attrs: Attrs) -> MemoryFile | None:
        """A read-only open of a small file across a link, answered with one exec command
        instead of an SFTP OPEN and READ (two round trips), when a remote shell is idle.
        The copy serves this open only if it matches ``attrs`` (what the mount presents);
        None (open as usual) on anything else: a failure, a file that is not small and
        readable, a change through the mount meanwhile."""
        if not (
            self.enabled
            and _stat.S_ISREG(attrs.mode)
            and attrs.size <= MAX_FILE
            and self._across_link()
        ):
            return None
        fetch = getattr(self._cache.inner, "file_contents", None)
        if fetch is None:
            return None
        generation = self._cache._generation(path)
        since = self._timer()
        try:
            found = await fetch(path, MAX_FILE)
        except Exception as exc:  # the SFTP open says what is wrong, if anything
            log.debug("content fetch of %s failed: %s", os.fsdecode(path), exc)
            return None
        if found is None or self._cache._generation(path) != generation:
            return None
        parent, name = split(path)
        self.copies.put_many(parent, {name: found}, since)
        return self.file(path, attrs)

    async def _set_by_path(
        self, path: bytes, mode: int | None, times: tuple[int, int] | None
    ) -> None:
        if mode is not None:
            await self._cache.chmod(path, mode)
        if times is not None:
            await self._cache.utimens(path, *times)

    def missed(self, path: bytes) -> None:
        """A read-only open of ``path`` went to the server: fetch its tree's small files?"""
        if not self.enabled:
            return
        now = self._timer()
        root = self._cache.prefetched_root(path, self.ttl)
        if root is None:
            root = self._read_walk(now, path)
            if root is None:
                return
            if self._across_link():
                # its lookups (names it has and names it lacks) come next, one round trip
                # each: the tree's listings, in one command alongside, answer them
                self._cache.walk_reads(root)
        root = _metadata_root(root, path)  # a worktree's fetch leaves its .git out
        if root in self._full:
            if not self._across_link():
                return  # here one command costs more than the opens it could spare
            root = split(path)[0]
        started = self._fetched.get(root)
        if started is not None and now - started < self.ttl:
            return
        if len(self._fetched) > 10_000:
            self._fetched.clear()
        self._fetched[root] = now
        self._spawn(self._fetch(root), "content fetch")

    def _across_link(self) -> bool:
        """Is the server across a link, where one exec command costs about a round trip
        (the backend's judgement, as for lookups listing their directory)?"""
        judge = getattr(self._cache.inner, "lists_for_lookups", None)
        return bool(judge()) if judge is not None else True

    def _read_walk(self, now: float, path: bytes) -> bytes | None:
        """The directory holding a walk of files this open completes, or None. (Every
        open that misses asks: a few microseconds, no path split or decoded per asking.)"""
        recent = self._recent
        parent = split(path)[0]
        recent.append((now, parent if parent.endswith(b"/") else parent + b"/"))
        far = getattr(self._cache.inner, "across_link", self._across_link)
        count = READ_WALK if far() else READ_WALK_NEAR
        if len(recent) < count or now - recent[-count][0] > READ_WALK_WINDOW:
            return None
        dirs = [d for _, d in itertools.islice(recent, len(recent) - count, None)]
        lo, hi = min(dirs), max(dirs)
        if lo == hi:
            return None  # one directory: not a walk
        # the common prefix of the least and the greatest is every one's; each ends in
        # "/", so it ends at the last "/" they share: "/a/b/" and "/a/bc/" share "/a/"
        common = cast(bytes, os.path.commonprefix([lo, hi]))
        return common[: common.rfind(b"/")] or b"/"

    async def _fetch(self, root: bytes) -> None:
        unchanged = self._cache.generation_snapshot()
        since = self._timer()
        try:
            files = await self._cache.inner.contents(root, MAX_FILE, MAX_FILES)  # type: ignore[attr-defined]
        except Exception as exc:  # a failed fetch only means opening files one by one
            log.debug("content fetch of %s failed: %s", os.fsdecode(root), exc)
            return
        if files is None:
            return
        if len(files) >= MAX_FILES:
            self._full.add(root)
        keep = {rel: v for rel, v in files.items() if unchanged(join(root, rel))}
        self.copies.put_many(root, keep, since)
        log.debug(
            "fetched %d small files under %s in %.1f ms",
            len(keep),
            os.fsdecode(root),
            (self._timer() - since) * 1e3,
        )

    def counts(self) -> dict[str, int]:
        c = self.copies
        return {
            "content_files": len(c),
            "content_bytes": c.bytes,
            "content_hits": c.hits,
            "content_fetches": c.fetches,
        }
