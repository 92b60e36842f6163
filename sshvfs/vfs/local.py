"""LocalVFS: the VFS Protocol over a local directory (tests, demos, the conformance baseline)."""

from __future__ import annotations

import asyncio
import os
import stat as _stat
from collections.abc import Callable
from typing import TypeVar

from .types import Attrs, Entry, StatFs, VFSFile, join

T = TypeVar("T")


def attrs_of(st: os.stat_result) -> Attrs:
    return Attrs(
        mode=st.st_mode,
        size=st.st_size,
        uid=st.st_uid,
        gid=st.st_gid,
        nlink=st.st_nlink,
        mtime_ns=st.st_mtime_ns,
        atime_ns=st.st_atime_ns,
        ctime_ns=st.st_ctime_ns,
        ino=st.st_ino,
    )


async def _io(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


class LocalFile:
    def __init__(self, path: bytes, fd: int) -> None:
        self._path = path
        self._fd = fd

    @property
    def path(self) -> bytes:
        return self._path

    def orphan(self) -> None:
        pass  # a local descriptor is never reopened

    def size_hint(self, size: int) -> None:
        pass  # local reads are not round trips

    async def read(self, offset: int, size: int) -> bytes:
        def op() -> bytes:
            chunks, got = [], 0
            while got < size:
                data = os.pread(self._fd, size - got, offset + got)
                if not data:
                    break
                chunks.append(data)
                got += len(data)
            return b"".join(chunks)

        return await _io(op)

    async def write(self, offset: int, data: bytes) -> int:
        def op() -> int:
            done = 0
            while done < len(data):
                done += os.pwrite(self._fd, data[done:], offset + done)
            return done

        return await _io(op)

    async def truncate(self, size: int) -> None:
        await _io(lambda: os.ftruncate(self._fd, size))

    async def fstat(self) -> Attrs:
        return attrs_of(await _io(lambda: os.fstat(self._fd)))

    async def setstat(self, mode: int | None = None, times: tuple[int, int] | None = None) -> None:
        def op() -> None:
            if mode is not None:
                os.fchmod(self._fd, mode & 0o7777)
            if times is not None:
                os.utime(self._fd, ns=times)

        await _io(op)

    async def flush(self) -> None:
        return None  # every write is done when it returns

    async def fsync(self) -> None:
        await _io(lambda: os.fsync(self._fd))

    async def close(self) -> None:
        await _io(lambda: os.close(self._fd))


class LocalVFS:
    def __init__(self, root: str | bytes) -> None:
        self._root = os.fsencode(os.path.abspath(root)).rstrip(b"/")

    def local(self, path: bytes) -> bytes:
        if not path.startswith(b"/"):
            raise ValueError(f"not an absolute mount path: {path!r}")
        return self._root + (b"" if path == b"/" else path)

    async def lstat(self, path: bytes) -> Attrs:
        return attrs_of(await _io(lambda: os.lstat(self.local(path))))

    async def stat(self, path: bytes) -> Attrs:
        return attrs_of(await _io(lambda: os.stat(self.local(path))))

    async def readdir(self, path: bytes) -> list[Entry]:
        def op() -> list[Entry]:
            with os.scandir(self.local(path)) as it:
                return [Entry(e.name, attrs_of(e.stat(follow_symlinks=False))) for e in it]

        return await _io(op)

    async def readlink(self, path: bytes) -> bytes:
        return await _io(lambda: os.readlink(self.local(path)))

    async def open(self, path: bytes, flags: int, mode: int = 0o644) -> VFSFile:
        flags &= ~os.O_APPEND  # the kernel computes append offsets
        fd = await _io(lambda: os.open(self.local(path), flags | os.O_CLOEXEC, mode & 0o7777))
        return LocalFile(path, fd)

    async def mkdir(self, path: bytes, mode: int = 0o755) -> None:
        await _io(lambda: os.mkdir(self.local(path), mode & 0o7777))

    async def rmdir(self, path: bytes) -> None:
        await _io(lambda: os.rmdir(self.local(path)))

    async def unlink(self, path: bytes) -> None:
        await _io(lambda: os.unlink(self.local(path)))

    async def rename(self, old: bytes, new: bytes) -> None:
        await _io(lambda: os.rename(self.local(old), self.local(new)))

    async def symlink(self, target: bytes, path: bytes) -> None:
        await _io(lambda: os.symlink(target, self.local(path)))

    async def link(self, existing: bytes, new: bytes) -> None:
        await _io(lambda: os.link(self.local(existing), self.local(new), follow_symlinks=False))

    async def chmod(self, path: bytes, mode: int) -> None:
        def op() -> None:
            local = self.local(path)
            if _stat.S_ISLNK(os.lstat(local).st_mode):
                return  # Linux cannot chmod a symlink; like the SFTP server, leave it
            os.chmod(local, mode & 0o7777)

        await _io(op)

    async def chown(self, path: bytes, uid: int, gid: int) -> None:
        await _io(lambda: os.chown(self.local(path), uid, gid, follow_symlinks=False))

    async def truncate(self, path: bytes, size: int) -> None:
        await _io(lambda: os.truncate(self.local(path), size))

    async def utimens(self, path: bytes, atime_ns: int | None, mtime_ns: int | None) -> None:
        def set_times() -> None:
            local = self.local(path)
            a, m = atime_ns, mtime_ns
            if a is None or m is None:  # os.utime has no UTIME_OMIT: keep what is there
                st = os.lstat(local)
                a = st.st_atime_ns if a is None else a
                m = st.st_mtime_ns if m is None else m
            os.utime(local, ns=(a, m), follow_symlinks=False)

        await _io(set_times)

    async def statfs(self, path: bytes) -> StatFs:
        v = await _io(lambda: os.statvfs(self.local(path)))
        return StatFs(
            v.f_bsize,
            v.f_frsize,
            v.f_blocks,
            v.f_bfree,
            v.f_bavail,
            v.f_files,
            v.f_ffree,
            v.f_favail,
            v.f_namemax,
        )

    async def tree(self, path: bytes, max_entries: int) -> dict[bytes, list[Entry]] | None:
        def op() -> dict[bytes, list[Entry]] | None:
            out: dict[bytes, list[Entry]] = {}
            count = 0
            pending = [path]
            while pending:
                current = pending.pop()
                with os.scandir(self.local(current)) as it:
                    entries = [Entry(e.name, attrs_of(e.stat(follow_symlinks=False))) for e in it]
                count += len(entries)
                if count > max_entries:
                    return None
                out[current] = entries
                pending.extend(join(current, e.name) for e in entries if e.attrs.is_dir)
            return out

        return await _io(op)

    async def close(self) -> None:
        return None
