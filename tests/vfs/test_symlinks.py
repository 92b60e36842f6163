"""FollowSymlinksVFS (``-o follow_symlinks``) over LocalVFS: links show as their targets in
lookups, listings and trees; dangling and looping links stay links."""

from __future__ import annotations

import os
import stat

from sshvfs.vfs.local import LocalVFS
from sshvfs.vfs.symlinks import FollowSymlinksVFS
from sshvfs.vfs.types import FileType


def make_tree(root: str) -> None:
    os.mkdir(os.path.join(root, "dir"))
    with open(os.path.join(root, "dir", "file"), "wb") as f:
        f.write(b"12345")
    os.symlink("dir/file", os.path.join(root, "to_file"))
    os.symlink("dir", os.path.join(root, "to_dir"))
    os.symlink("nowhere", os.path.join(root, "dangling"))
    os.symlink("loop", os.path.join(root, "loop"))


async def test_links_show_as_their_targets(tmp_path: object) -> None:
    root = str(tmp_path)
    make_tree(root)
    vfs = FollowSymlinksVFS(LocalVFS(root))
    to_file = await vfs.lstat(b"/to_file")
    assert to_file.type is FileType.FILE and to_file.size == 5
    assert (await vfs.lstat(b"/to_dir")).type is FileType.DIR
    assert (await vfs.lstat(b"/dangling")).type is FileType.SYMLINK
    assert (await vfs.lstat(b"/loop")).type is FileType.SYMLINK
    assert await vfs.readlink(b"/dangling") == b"nowhere"
    types = {e.name: e.type for e in await vfs.readdir(b"/")}
    assert types == {
        b"dir": FileType.DIR,
        b"to_file": FileType.FILE,
        b"to_dir": FileType.DIR,
        b"dangling": FileType.SYMLINK,
        b"loop": FileType.SYMLINK,
    }
    assert [e.name for e in await vfs.readdir(b"/to_dir")] == [b"file"]
    f = await vfs.open(b"/to_file", os.O_RDONLY)
    try:
        assert await f.read(0, 10) == b"12345"
    finally:
        await f.close()


async def test_changes_pass_through(tmp_path: object) -> None:
    root = str(tmp_path)
    make_tree(root)
    vfs = FollowSymlinksVFS(LocalVFS(root))
    await vfs.chmod(b"/dir/file", 0o600)
    assert stat.S_IMODE(os.stat(os.path.join(root, "dir", "file")).st_mode) == 0o600
    await vfs.unlink(b"/to_file")  # removes the link, never the target
    assert not os.path.lexists(os.path.join(root, "to_file"))
    assert os.path.exists(os.path.join(root, "dir", "file"))
