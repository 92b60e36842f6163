"""The pyfuse3 Operations: kernel requests onto the VFS Protocol.

With :mod:`~sshvfs.fuse.dirserver` (which serves READDIR for it), the only code that knows
inodes, handles and ``EntryAttributes``. Every handler goes through :func:`guard`: an
``OSError`` becomes ``FUSEError(errno)``, anything else is logged with its traceback and
becomes EIO, because any other exception would end ``pyfuse3.main()`` and with it the mount.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import stat as _stat
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3

from ..tasks import Spawn, spawn_detached
from ..vfs.types import VFS, Attrs, Change, VFSFile, join
from . import control as ctl
from .compat.features import NOFLUSH, SHOWN_INO
from .dirserver import DirServer
from .inodes import ROOT_INODE, InodeTable, Node
from .notify import change_targets, notify_in_thread
from .ownership import IDENTITY, Ownership

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")

#: what stat(2) reports as the preferred I/O size: large, so cp and friends use big buffers
BLKSIZE = 128 * 1024
NAME_MAX = 255


def guard(
    fn: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            code = exc.errno or errno.EIO
            if code not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY):
                log.debug("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(code) from exc
        except Exception:
            log.exception("internal error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]  # functools.wraps loses the ParamSpec


@dataclass
class Timeouts:
    """How long the kernel may trust what we tell it (seconds)."""

    entry: float = 1.0
    attr: float = 1.0


@dataclass
class OpenFile:
    node: Node
    file: VFSFile
    writable: bool


class Operations(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(
        self,
        vfs: VFS,
        timeouts: Timeouts | None = None,
        control: ctl.ControlState | None = None,
        ownership: Ownership | None = None,
        kernel_dir_ttl: float | None = None,
        spawn: Spawn = spawn_detached,
    ) -> None:
        """``kernel_dir_ttl``: let the kernel cache directory listings for that long (see
        :mod:`sshvfs.fuse.dirserver`); None keeps one handle per opened directory.
        ``spawn`` starts what a request does not wait for (the mount's, see sshvfs.tasks)."""
        super().__init__()
        self.vfs = vfs
        self._spawn = spawn
        self.timeouts = timeouts or Timeouts()
        #: how owners and permission bits are shown (idmap=, uid=, gid=, umask=)
        self.ownership = ownership or IDENTITY
        self.inodes = InodeTable()
        self._files: dict[int, OpenFile] = {}
        #: remote CLOSEs of released files, still in flight
        self._closing: set[asyncio.Task[None]] = set()
        self._next_fh = 1
        self.control = ctl.ControlDir(control, self.entry) if control is not None else None
        self.dirs = DirServer(
            vfs,
            self.inodes,
            self.entry,
            self.control,
            kernel_dir_ttl,
            shown=None if self.ownership.identity else self.shown,
            spawn=spawn,
        )

    # -- telling the kernel what we dropped -----------------------------------------------

    def _targets(self, path: bytes | None) -> tuple[list[tuple[int, bytes]], list[int]]:
        if path is None:
            nodes = self.inodes.nodes()
        else:
            node = self.inodes.find(path)
            nodes = self.inodes.subtree(node) if node is not None else []
        for n in nodes:
            n.stamp = None  # the page cache is no longer trusted
        pairs = [(n.parent.ino, n.name) for n in nodes if n.parent is not None]
        misses = self.inodes.misses
        if misses:
            pairs += [(n.ino, name) for n in nodes for name in misses.take_dir(n.ino)]
        return pairs, [n.ino for n in nodes]

    async def drop_kernel_cache(self, path: bytes | None) -> None:
        """Invalidate the kernel's entries, attributes and pages of a subtree (None: all) and
        return when done, so a ``touch .sshvfs/invalidate`` is complete when touch returns."""
        pairs, inos = self._targets(path)
        await notify_in_thread(pairs, inos)

    async def drop_kernel_changes(self, changes: list[Change]) -> None:
        """Invalidate what the kernel holds of names changed on the server (never called
        from a handler: the watcher's own task)."""
        targets = change_targets(self.inodes, changes)
        await notify_in_thread(*(targets if targets is not None else self._targets(None)))

    # -- helpers ---------------------------------------------------------------------

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def entry(self, ino: int, a: Attrs) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = pyfuse3.InodeT(ino)
        e.generation = 0
        e.entry_timeout = self.timeouts.entry
        e.attr_timeout = self.timeouts.attr
        if not self.ownership.identity:
            a = self.shown(a)
        e.st_mode = pyfuse3.ModeT(a.mode)
        e.st_uid = a.uid
        e.st_gid = a.gid
        e.st_nlink = a.nlink
        e.st_rdev = 0
        e.st_size = a.size
        e.st_blksize = BLKSIZE
        e.st_blocks = (a.size + 511) // 512
        e.st_atime_ns = a.atime_ns
        e.st_mtime_ns = a.mtime_ns
        # SFTP has no ctime (0): the mtime is the closest truth; never before the mtime (a
        # write through the mount moves the mtime, and a server's ctime with it)
        e.st_ctime_ns = a.ctime_ns if a.ctime_ns > a.mtime_ns else a.mtime_ns
        if SHOWN_INO:
            e.st_ino_shown = self.inodes.shown_ino(ino, a.ino)
        return e

    def shown(self, a: Attrs) -> Attrs:
        """The attributes as the kernel is shown them (mode, uid and gid mapped): what
        :meth:`entry` and the READDIR replies' tuples carry."""
        own = self.ownership
        return a._replace(
            mode=own.shown_mode(a.mode), uid=own.shown_uid(a.uid), gid=own.shown_gid(a.gid)
        )

    def _path(self, ino: int) -> bytes:
        return self.inodes.path(ino)

    def _child_path(self, parent_ino: int, name: bytes) -> bytes:
        if ctl.is_control(parent_ino) or (
            parent_ino == ROOT_INODE and name == ctl.CONTROL_NAME and self.control is not None
        ):
            raise pyfuse3.FUSEError(errno.EPERM)  # the control directory is fixed
        if b"/" in name or name in (b"", b".", b".."):
            raise pyfuse3.FUSEError(errno.EINVAL)
        if len(name) > NAME_MAX:
            # the server would say BAD_MESSAGE (EINVAL); POSIX callers expect this
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        return join(self._path(parent_ino), name)

    async def _new_entry(
        self, parent_ino: int, name: bytes, path: bytes
    ) -> pyfuse3.EntryAttributes:
        attrs = await self.vfs.lstat(path)
        node = self.inodes.lookup(parent_ino, name)
        return self.entry(node.ino, attrs)

    # -- lookups and attributes --------------------------------------------------------

    @guard
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        if self.control is not None:
            if parent_inode == ROOT_INODE and name == ctl.CONTROL_NAME:
                return self.control.entry(ctl.DIR_INODE)
            if parent_inode == ctl.DIR_INODE:
                return self.control.lookup(name)
        if name == b".":
            return await self.getattr(parent_inode)
        if name == b"..":
            node = self.inodes.get(parent_inode)
            parent = node.parent or node
            parent.lookups += 1
            return self.entry(parent.ino, await self.vfs.lstat(parent.path()))
        path = self._child_path(parent_inode, name)
        try:
            return await self._new_entry(parent_inode, name, path)
        except FileNotFoundError:
            # the kernel keeps a miss the caches vouch for (a compiler's include search, an
            # editor's swap file, asked again), no longer than they would (or than names)
            # and dropped with theirs (see sshvfs.fuse.notify)
            missing_for = getattr(self.vfs, "missing_for", None)
            timeout = min(self.timeouts.entry, missing_for(path) if missing_for else 0.0)
            if timeout > 0 and self.inodes.misses.note(parent_inode, name, timeout):
                missing = pyfuse3.EntryAttributes()
                missing.st_ino = pyfuse3.InodeT(0)
                missing.entry_timeout = timeout
                return missing
            raise

    @guard
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.inodes.forget(ino, count)

    @guard
    async def getattr(
        self, inode: int, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        if self.control is not None and ctl.is_control(inode):
            return self.control.entry(inode)
        node = self.inodes.get(inode)
        if not node.attached:
            for of in self._files.values():  # unlinked but open: ask the handle
                if of.node is node:
                    attrs = await of.file.fstat()
                    # SFTP v3 attributes carry no link count (1 is assumed): this name is gone
                    return self.entry(inode, attrs._replace(nlink=0) if attrs.nlink <= 1 else attrs)
            raise pyfuse3.FUSEError(errno.ENOENT)
        # (a file the mount creates and writes is answered by the caches' own record of it:
        # the kernel asks before every chown, to recompute setuid bits)
        return self.entry(inode, await self.vfs.lstat(node.path()))

    @guard
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        if self.control is not None and ctl.is_control(inode):
            return await self.control.setattr(inode, fields)
        node = self.inodes.get(inode)
        of = self._files.get(fh) if fh is not None else None
        if of is not None and not node.attached:
            return self.entry(inode, await self._setattr_detached(of, attr, fields))
        path = self._path(inode)
        if fields.update_size:
            if of is not None and of.writable:
                await of.file.truncate(attr.st_size)
            else:
                await self.vfs.truncate(path, attr.st_size)
        if fields.update_mode:
            await self.vfs.chmod(path, attr.st_mode & 0o7777)
        if fields.update_uid or fields.update_gid:
            await self.vfs.chown(
                path,
                self.ownership.remote_uid_for(attr.st_uid) if fields.update_uid else -1,
                self.ownership.remote_gid_for(attr.st_gid) if fields.update_gid else -1,
            )
        if fields.update_atime or fields.update_mtime:
            # a file being written through the mount: chmod, utimens and a chown to what
            # it is ride its handle's pipeline (see sshvfs.vfs.cache.owned)
            await self.vfs.utimens(
                path,
                attr.st_atime_ns if fields.update_atime else None,
                attr.st_mtime_ns if fields.update_mtime else None,
            )
        return self.entry(inode, await self.vfs.lstat(path))

    async def _setattr_detached(
        self, of: OpenFile, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields
    ) -> Attrs:
        """A setattr through a handle whose file was unlinked or renamed over: its path
        names another file now (or none), so everything goes through the handle."""
        if fields.update_uid or fields.update_gid:
            raise pyfuse3.FUSEError(errno.EPERM)  # SFTP has no chown through a handle
        if fields.update_size:
            await of.file.truncate(attr.st_size)
        mode = attr.st_mode & 0o7777 if fields.update_mode else None
        times: tuple[int, int] | None = None
        if fields.update_atime or fields.update_mtime:
            current = await of.file.fstat()
            times = (
                attr.st_atime_ns if fields.update_atime else current.atime_ns,
                attr.st_mtime_ns if fields.update_mtime else current.mtime_ns,
            )
        if mode is not None or times is not None:
            await of.file.setstat(mode, times)
            await of.file.flush()  # setstat rides the write pipeline: its error shows here
        return await of.file.fstat()

    @guard
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        if self.control is not None and ctl.is_control(inode):
            return self.control.readlink(inode)
        return await self.vfs.readlink(self._path(inode))

    @guard
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = await self.vfs.statfs(b"/")
        out = pyfuse3.StatvfsData()
        out.f_bsize = s.block_size
        out.f_frsize = s.fragment_size
        out.f_blocks = s.blocks
        out.f_bfree = s.blocks_free
        out.f_bavail = s.blocks_available
        out.f_files = s.files
        out.f_ffree = s.files_free
        out.f_favail = s.files_available
        out.f_namemax = s.name_max
        return out

    @guard
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        return True  # the server enforces permissions on every operation

    # -- extended attributes: none, and answered without a round trip ---------------------

    @guard
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        # ENOSYS makes the kernel answer EOPNOTSUPP (= ENOTSUP) itself from now on: `ls -l`
        # asks for ACL/SELinux attributes of every file and would cost a trip to us each
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @guard
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        return []

    @guard
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        raise pyfuse3.FUSEError(errno.ENOTSUP)

    @guard
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise pyfuse3.FUSEError(errno.ENOTSUP)

    # -- directories ---------------------------------------------------------------------

    @guard
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if self.dirs.streams is not None:
            # the kernel opens directories by itself from now on, caching their listings
            raise pyfuse3.FUSEError(errno.ENOSYS)
        fh = self._fh()
        self.dirs.open(fh, inode)
        return fh

    @guard
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        await self.dirs.read(fh, start_id, token)

    @guard
    async def releasedir(self, fh: int) -> None:
        self.dirs.release(fh)

    @guard
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    @guard
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child_path(parent_inode, name)
        await self.vfs.mkdir(path, mode & 0o7777)
        return await self._new_entry(parent_inode, name, path)

    @guard
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.vfs.rmdir(self._child_path(parent_inode, name))
        self.dirs.changed(parent_inode)
        self.inodes.remove(parent_inode, name)

    @guard
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.vfs.unlink(self._child_path(parent_inode, name))
        self.dirs.changed(parent_inode)
        self._orphan(self.inodes.remove(parent_inode, name))

    @guard
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old = self._child_path(parent_inode_old, name_old)
        new = self._child_path(parent_inode_new, name_new)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)  # SFTP cannot swap two names atomically
        if flags & pyfuse3.RENAME_NOREPLACE:
            try:
                await self.vfs.lstat(new)
            except FileNotFoundError:
                pass
            else:
                raise pyfuse3.FUSEError(errno.EEXIST)
        replaced = self.inodes.find(new)
        await self.vfs.rename(old, new)
        self.dirs.changed(parent_inode_old, parent_inode_new)
        self.inodes.rename(parent_inode_old, name_old, parent_inode_new, name_new)
        if replaced is not None and not replaced.attached:
            self._orphan(replaced)

    @guard
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child_path(parent_inode, name)
        await self.vfs.symlink(target, path)
        return await self._new_entry(parent_inode, name, path)

    @guard
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child_path(new_parent_inode, new_name)
        await self.vfs.link(self._path(inode), path)
        return await self._new_entry(new_parent_inode, new_name, path)

    @guard
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if not _stat.S_ISREG(mode):
            raise pyfuse3.FUSEError(errno.EPERM)  # SFTP can create only files, dirs, links
        path = self._child_path(parent_inode, name)
        f = await self.vfs.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o7777)
        await f.close()
        return await self._new_entry(parent_inode, name, path)

    # -- files ---------------------------------------------------------------------------

    def _register(self, node: Node, file: VFSFile, flags: int) -> pyfuse3.FileInfo:
        fh = self._fh()
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        self._files[fh] = OpenFile(node, file, writable)
        self.inodes.opened(node)
        info = pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=False)
        if not writable and NOFLUSH:
            # nothing to drain or report at close(2): the kernel sends no FLUSH, one
            # request less per file read (its RELEASE closes the remote handle)
            info.noflush = True
        return info

    @guard
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if self.control is not None and ctl.is_control(inode):
            return self.control.open(self._fh(), inode, flags)
        node = self.inodes.get(inode)
        path = self._path(inode)
        file = await self.vfs.open(path, flags & ~os.O_CREAT)
        info = self._register(node, file, flags)
        # keep the kernel's page cache only if the file is unchanged since it was filled
        try:
            attrs = await self.vfs.lstat(path)
        except OSError:
            attrs = None
        stamp = (attrs.size, attrs.mtime_ns) if attrs is not None else None
        info.keep_cache = stamp is not None and node.stamp == stamp and not flags & os.O_TRUNC
        node.stamp = stamp
        return info

    @guard
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child_path(parent_inode, name)
        file = await self.vfs.open(path, flags | os.O_CREAT, mode & 0o7777)
        try:
            attrs = await file.fstat()
        except BaseException:
            await file.close()
            raise
        node = self.inodes.lookup(parent_inode, name)
        info = self._register(node, file, flags)
        return info, self.entry(node.ino, attrs)

    def _orphan(self, node: Node | None) -> None:
        """``node``'s name is gone: its open handles must never be reopened by path."""
        if node is not None and node.opens:
            for of in self._files.values():
                if of.node is node:
                    of.file.orphan()

    def _file(self, fh: int) -> OpenFile:
        of = self._files.get(fh)
        if of is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return of

    @guard
    async def read(self, fh: int, off: int, size: int) -> bytes:
        if self.control is not None and self.control.owns(fh):
            return self.control.read(fh, off, size)
        return await self._file(fh).file.read(off, size)

    @guard
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if self.control is not None and self.control.owns(fh):
            return await self.control.write(fh, bytes(buf))
        of = self._file(fh)
        node = of.node
        node.stamp = None  # what the kernel caches is now ours, not the server's
        return await of.file.write(off, bytes(buf))

    @guard
    async def flush(self, fh: int) -> None:
        if self.control is not None and self.control.owns(fh):
            await self.control.flush(fh)
            return
        await self._file(fh).file.flush()

    @guard
    async def fsync(self, fh: int, datasync: bool) -> None:
        if self.control is not None and self.control.owns(fh):
            return
        await self._file(fh).file.fsync()

    @guard
    async def release(self, fh: int) -> None:
        if self.control is not None and self.control.owns(fh):
            self.control.release(fh)
            return
        of = self._files.pop(fh, None)
        if of is None:
            return
        # close(2) got its answer from FLUSH (every write drained there) and the kernel
        # ignores RELEASE's: the remote CLOSE needs no waiting. Nothing later depends on its
        # order either: the kernel sends RELEASE after close(2) returns, so requests made
        # after close(2) could always overtake it.
        task = self._spawn(self._close_remote(of), "close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_remote(self, of: OpenFile) -> None:
        try:
            await of.file.close()
            if of.writable and of.node.attached:
                # the kernel's pages now hold what we wrote: trust them while unchanged
                # (the file as its handle closed it, when the backend said; else by name)
                attrs = getattr(of.file, "closing_attrs", None)
                if attrs is None:
                    attrs = await self.vfs.lstat(of.node.path())
                of.node.stamp = (attrs.size, attrs.mtime_ns)
        except OSError as exc:
            log.debug("closing %r: %s", of.node.path(), exc)
        except Exception:
            log.exception("closing %r", of.node.path())
        finally:
            self.inodes.closed(of.node)

    async def close(self) -> None:
        """Close every handle still open (unmount), and wait for every remote CLOSE."""
        for fh in list(self._files):
            try:
                await self.release(fh)
            except pyfuse3.FUSEError:
                pass
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
