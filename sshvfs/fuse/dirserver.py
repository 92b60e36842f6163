"""The directory server: OPENDIR/READDIR/RELEASEDIR turned into readdirplus replies.

It owns the readers' snapshots (handles, or handle-less kernel-cached streams, see
:mod:`sshvfs.fuse.dirstreams`) and builds each reply's entries: a node (one lookup) and the
attributes per name. The kernel and the reader's own work alternate with our READDIR
handler, so the next reply's nodes are made ahead, between two READDIRs (:meth:`_prepare`).

Each entry goes into the reply with ``pyfuse3.readdir_reply_stat`` (added by
``scripts/pyfuse3.patch``): the attributes tuple is copied into the reply in C, with
no ``EntryAttributes`` object per entry (half the per-entry cost of a huge ``ls -l``). A
stock pyfuse3 gets an ``EntryAttributes`` per entry instead.
"""

from __future__ import annotations

import asyncio
import errno
import stat
from collections.abc import Callable

import pyfuse3

from ..tasks import Spawn, spawn_detached
from ..vfs.types import VFS, Attrs, Entry, join
from . import control as ctl
from .compat.features import READDIR_REPLY_STAT
from .dirstreams import DirHandle, DirStreams, cookie
from .inodes import InodeTable
from .notify import notify_in_thread

#: entries a directory stream builds ahead of the READDIR that will want them (one reply
#: of the kernel's 128 KiB holds ~780 of them)
PREPARE_AHEAD = 1024
#: seconds prepared entries wait for their READDIR before they are given back
PREPARED_FOR = 1.0

#: positions of ``.`` and ``..`` before a directory's entries
DOTS = 2
#: what the kernel is told of ``.`` and ``..`` (only the type matters: it links neither)
_DOT_ATTRS = Attrs(stat.S_IFDIR | 0o755, 0, 0, 0, 2, 0, 0)

EntryMaker = Callable[[int, Attrs], pyfuse3.EntryAttributes]


class DirServer:
    """``entry`` makes an entry's ``EntryAttributes`` for the kernel; ``shown``, when not
    None, maps the attributes it would show (ownership mapping), for the tuple path to do
    the same. ``kernel_dir_ttl``: let the kernel cache directory listings for that long;
    None keeps one handle per opened directory."""

    def __init__(
        self,
        vfs: VFS,
        inodes: InodeTable,
        entry: EntryMaker,
        control: ctl.ControlDir | None,
        kernel_dir_ttl: float | None,
        shown: Callable[[Attrs], Attrs] | None = None,
        spawn: Spawn = spawn_detached,
    ) -> None:
        self.vfs = vfs
        self._spawn = spawn
        self.inodes = inodes
        self.entry = entry
        self.shown = shown
        #: generation, timeouts, st_blksize and st_rdev of every entry (the tuple path)
        self._template = entry(0, Attrs(0, 0, 0, 0, 1, 0, 0))
        self.control = control
        #: a clean cached listing without awaiting, when the VFS keeps them (CachingVFS)
        self._listed: Callable[[bytes], list[Entry] | None] | None = getattr(vfs, "listed", None)
        self._handles: dict[int, DirHandle] = {}
        self._control_handles: set[int] = set()
        #: bumped on every namespace change in a directory (by inode)
        self._gen: dict[int, int] = {}
        #: handle-less, kernel-cached directory streams (None: OPENDIR hands out handles)
        self.streams = DirStreams(kernel_dir_ttl, on_drop=self._dropped) if kernel_dir_ttl else None

    def changed(self, *inos: int) -> None:
        """The mount added, removed or renamed names in these directories."""
        for ino in inos:
            self._gen[ino] = self._gen.get(ino, 0) + 1

    # -- handles -------------------------------------------------------------------------

    def open(self, fh: int, inode: int) -> None:
        """OPENDIR in handle mode (with streams the kernel opens directories itself)."""
        if self.control is not None and inode == ctl.DIR_INODE:
            self._control_handles.add(fh)
            return
        self.inodes.opened(self.inodes.get(inode))
        self._handles[fh] = DirHandle(inode)

    def release(self, fh: int) -> None:
        self._control_handles.discard(fh)
        handle = self._handles.pop(fh, None)
        if handle is not None:
            self._dropped(handle)
            self.inodes.closed(self.inodes.get(handle.ino))

    async def read(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """READDIR: as many entries from ``start_id`` on as fit the reply."""
        if self.streams is not None:
            # no handles: pyfuse3 passes the directory's inode as ``fh``
            if fh == ctl.DIR_INODE and self.control is not None:
                return self._control_read(start_id, token)
            if start_id == 0:
                handle, index = self.streams.start(fh), 0
            else:
                handle, index = self.streams.resume(fh, start_id)
            if handle.done and index >= DOTS + len(handle.entries or ()):
                self.streams.end(handle)  # the reader reached EOF
                return None
            await self._serve(handle, index, token)
            return None
        if fh in self._control_handles and self.control is not None:
            return self._control_read(start_id, token)
        opened = self._handles.get(fh)
        if opened is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        await self._serve(opened, start_id, token)
        return None

    def _control_read(self, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        assert self.control is not None
        for index, (name, ino) in enumerate(self.control.listing()):
            if index >= start_id and not pyfuse3.readdir_reply(
                token, name, self.control.entry(ino), index + 1
            ):
                return

    # -- replies -------------------------------------------------------------------------

    async def _serve(self, handle: DirHandle, start: int, token: pyfuse3.ReaddirToken) -> None:
        parent_ino = handle.ino
        path = self.inodes.path(parent_ino)
        if start == 0 or handle.entries is None:
            # fetched inside the READDIR request: the kernel holds the directory's lock, so
            # no unlink/rename in it can interleave with the reply
            self._unprepare(handle)
            handle.gen = self._gen.get(parent_ino, 0)
            cached = self._listed(path) if self._listed is not None else None
            if cached is not None:
                handle.use(cached)  # a cache hit: no task, no waiting
            else:
                await handle.fill(lambda: self.vfs.readdir(path), self._spawn)
        elif handle.arriving is None and handle.gen != self._gen.get(parent_ino, 0):
            # the directory changed between two READDIR calls: re-check what is left
            assert handle.entries is not None
            self._unprepare(handle)
            handle.entries = await self._revalidate(path, handle.entries, max(start - DOTS, 0))
            handle.gen = self._gen.get(parent_ino, 0)
        entries = handle.entries
        assert entries is not None
        if start < DOTS and not self._dots(handle, start, token):
            return
        start = max(start - DOTS, 0)  # from here on an index into the entries
        ready = handle.ready
        parent, lookup, entry = self.inodes.get(parent_ino), self.inodes.lookup_in, self.entry
        reply, template, shown = READDIR_REPLY_STAT, self._template, self.shown
        serial = handle.serial
        show = self.inodes.show
        delivered = 0
        while True:
            for index in range(start, len(entries)):
                item = entries[index]
                if item is None:
                    continue
                node = ready.pop(index, None) if ready else None
                if node is None:
                    node = lookup(parent, item.name)
                # readdirplus: every delivered entry is a lookup (counted when prepared)
                offset = cookie(serial, DOTS + index)
                if reply is not None:
                    attrs = item.attrs if shown is None else shown(item.attrs)
                    number = show(node, attrs.ino)
                    fits = reply(token, item.name, template, node.ino, attrs, offset, number)
                else:
                    fits = pyfuse3.readdir_reply(
                        token, item.name, entry(node.ino, item.attrs), offset
                    )
                if not fits:
                    ready[index] = node  # for the next READDIR
                    asyncio.get_running_loop().call_soon(self._prepare, handle, index)
                    return
                delivered += 1
            if handle.arriving is None:
                break
            start = len(entries)
            await handle.wait()  # the reply is not full yet and more is on its way
        if handle.error is not None:
            if not delivered:
                raise handle.error  # everything before it was handed out
            return
        handle.done = True

    def _dots(self, handle: DirHandle, start: int, token: pyfuse3.ReaddirToken) -> bool:
        """``.`` and ``..`` (positions 0 and 1), as every directory lists them. The kernel
        links neither (no lookup is counted), but they keep a listing it caches from ever
        being empty: an empty cached listing is one it never drops when we invalidate the
        directory's pages, only when the directory's mtime moves. False if the reply is full."""
        node = self.inodes.get(handle.ino)
        attrs = _DOT_ATTRS
        for position in range(start, DOTS):
            dot = node if position == 0 else (node.parent or node)
            ino = dot.ino
            name = b"." if position == 0 else b".."
            offset = cookie(handle.serial, position)
            if READDIR_REPLY_STAT is not None:
                shown = self.inodes.show(dot, 0)
                fits = READDIR_REPLY_STAT(token, name, self._template, ino, attrs, offset, shown)
            else:
                fits = pyfuse3.readdir_reply(token, name, self.entry(ino, attrs), offset)
            if not fits:
                return False
        return True

    def _prepare(self, handle: DirHandle, start: int) -> None:
        """Make the next reply's nodes while the kernel digests the last one: READDIR and
        the reader's own work in the kernel alternate, so what is done between two READDIRs
        is off the reader's clock. Each prepared node holds one lookup, so that no FORGET can
        release it before it is handed out."""
        entries, ready = handle.entries, handle.ready
        if entries is None or handle.done or handle.dropped:
            return
        # a reader that stops half-way never says so: what it did not come back for within
        # PREPARED_FOR is given back
        handle.prepared_round += 1
        asyncio.get_running_loop().call_later(
            PREPARED_FOR, self._unprepare, handle, handle.prepared_round
        )
        parent = self.inodes.get(handle.ino)
        for index in range(start, min(len(entries), start + PREPARE_AHEAD)):
            item = entries[index]
            if item is not None and index not in ready:
                ready[index] = self.inodes.lookup_in(parent, item.name)

    def _dropped(self, handle: DirHandle) -> None:
        handle.dropped = True
        self._unprepare(handle)

    def _unprepare(self, handle: DirHandle, round: int | None = None) -> None:
        """Give back the lookups of entries prepared and never handed out (``round``: only
        if nothing was prepared for this stream since that round)."""
        if round is not None and round != handle.prepared_round:
            return
        for node in handle.ready.values():
            self.inodes.forget(node.ino, 1)
        handle.ready.clear()

    async def _revalidate(
        self, path: bytes, entries: list[Entry | None], start: int
    ) -> list[Entry | None]:
        out = list(entries)
        for index in range(start, len(out)):
            item = out[index]
            if item is None:
                continue
            try:
                out[index] = Entry(item.name, await self.vfs.lstat(join(path, item.name)))
            except FileNotFoundError:
                out[index] = None  # gone: never hand the kernel a name that does not exist
        return out

    async def expire_kernel_listings(self) -> None:
        """Runs for the life of the mount: the kernel's copy of a listing lives no longer
        than our own (the kernel would otherwise keep it until the directory's mtime moves)."""
        if self.streams is None:
            return
        while True:
            wait = self.streams.next_due()
            await asyncio.sleep(1.0 if wait is None else min(max(wait, 0.05), 1.0))
            due = self.streams.due()
            if due:
                await notify_in_thread([], due)
