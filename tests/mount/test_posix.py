"""Everyday POSIX behaviour through a real mount of a real OpenSSH sshd on loopback."""

from __future__ import annotations

import errno
import itertools
import os
import random
import shutil
import subprocess
import time

import pytest

from ..mounting import MountProcess

pytestmark = pytest.mark.mount

_counter = itertools.count()


def fresh(module_mount: tuple[str, MountProcess]) -> tuple[str, str]:
    """A new empty directory: (its path on the server, its path in the mount)."""
    remote, m = module_mount
    name = f"t{next(_counter)}"
    os.mkdir(os.path.join(m.mountpoint, name))
    return os.path.join(remote, name), os.path.join(m.mountpoint, name)


def make_tree(root: str, files: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    sizes = [0, 1, 100, 4095, 4096, 4097, 65536, 131073, 300_000, 1 << 20, 3 * (1 << 20) + 7]
    for i in range(files):
        sub = os.path.join(root, f"d{i % 23}", f"e{i % 5}")
        os.makedirs(sub, exist_ok=True)
        size = sizes[i % len(sizes)] if i % 50 == 0 else rng.choice(sizes[:7])
        with open(os.path.join(sub, f"f{i}.bin"), "wb") as f:
            f.write(rng.randbytes(size))
        if i % 97 == 0:
            os.chmod(os.path.join(sub, f"f{i}.bin"), 0o600)
    os.symlink("d0/e0", os.path.join(root, "link-to-dir"))
    os.symlink("/etc/hostname", os.path.join(root, "abs-link"))


def diff_r(a: str, b: str) -> None:
    proc = subprocess.run(["diff", "-r", "--no-dereference", a, b], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_cp_a_tree_in_and_out(module_mount: tuple[str, MountProcess], workdir: str) -> None:
    remote, mnt = fresh(module_mount)
    src = os.path.join(workdir, "src")
    make_tree(src, 1000)
    subprocess.run(["cp", "-a", src, os.path.join(mnt, "tree")], check=True)
    diff_r(src, os.path.join(remote, "tree"))
    out = os.path.join(workdir, "out")
    subprocess.run(["cp", "-a", os.path.join(mnt, "tree"), out], check=True)
    diff_r(src, out)
    # modes survive both ways
    probe = os.path.join("d0", "e0", "f0.bin")
    assert os.stat(os.path.join(out, probe)).st_mode == os.stat(os.path.join(src, probe)).st_mode


def test_editor_atomic_save(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    target = os.path.join(mnt, "doc.txt")
    with open(target, "w") as f:
        f.write("old\n")
    os.chmod(target, 0o640)
    tmp = os.path.join(mnt, ".doc.txt.swp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"new content\n")
    os.fsync(fd)
    os.close(fd)
    os.chmod(tmp, os.stat(target).st_mode & 0o7777)
    os.rename(tmp, target)
    with open(target) as f:
        assert f.read() == "new content\n"
    assert os.stat(target).st_mode & 0o7777 == 0o640
    assert not os.path.exists(tmp)
    with open(os.path.join(remote, "doc.txt")) as f:
        assert f.read() == "new content\n"


def test_rename_over_file_and_empty_dir(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    for name, text in (("a", "A"), ("b", "B")):
        with open(os.path.join(mnt, name), "w") as f:
            f.write(text)
    os.rename(os.path.join(mnt, "a"), os.path.join(mnt, "b"))
    assert os.listdir(mnt) == ["b"]
    with open(os.path.join(mnt, "b")) as f:
        assert f.read() == "A"
    os.mkdir(os.path.join(mnt, "src"))
    with open(os.path.join(mnt, "src", "inner"), "w") as f:
        f.write("x")
    os.mkdir(os.path.join(mnt, "empty"))
    os.rename(os.path.join(mnt, "src"), os.path.join(mnt, "empty"))
    assert os.listdir(os.path.join(mnt, "empty")) == ["inner"]
    assert sorted(os.listdir(remote)) == ["b", "empty"]
    # the moved directory's children follow it
    with open(os.path.join(mnt, "empty", "inner")) as f:
        assert f.read() == "x"


def test_errnos(module_mount: tuple[str, MountProcess]) -> None:
    _, mnt = fresh(module_mount)
    os.makedirs(os.path.join(mnt, "full", "sub"))
    with pytest.raises(OSError) as e:
        os.rmdir(os.path.join(mnt, "full"))
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        os.unlink(os.path.join(mnt, "missing"))
    assert e.value.errno == errno.ENOENT
    path = os.path.join(mnt, "exists")
    open(path, "w").close()
    with pytest.raises(OSError) as e:
        os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        os.mkdir(os.path.join(mnt, "full"))
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        os.rmdir(path)
    assert e.value.errno == errno.ENOTDIR
    os.mkdir(os.path.join(mnt, "target"))
    os.mkdir(os.path.join(mnt, "target", "x"))
    with pytest.raises(OSError) as e:
        os.rename(os.path.join(mnt, "full"), os.path.join(mnt, "target"))
    assert e.value.errno == errno.ENOTEMPTY


def test_chmod_truncate_touch(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    path = os.path.join(mnt, "f")
    with open(path, "wb") as f:
        f.write(b"0123456789")
    os.chmod(path, 0o604)
    assert os.stat(path).st_mode & 0o777 == 0o604
    assert os.stat(os.path.join(remote, "f")).st_mode & 0o777 == 0o604
    os.truncate(path, 4)
    assert os.stat(path).st_size == 4
    os.truncate(path, 100_000)
    assert os.stat(path).st_size == 100_000
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"0123" + b"\0" * (100_000 - 4)
    with open(path, "r+b") as f:  # ftruncate through an open handle
        f.truncate(2)
    assert os.stat(os.path.join(remote, "f")).st_size == 2
    subprocess.run(["touch", "-d", "2001-02-03 04:05:06 UTC", path], check=True)
    want = 981173106
    assert int(os.stat(path).st_mtime) == want
    assert int(os.stat(os.path.join(remote, "f")).st_mtime) == want


def test_owner_and_mode_changes_on_a_file_being_written(
    module_mount: tuple[str, MountProcess],
) -> None:
    """What tar and cp -a do: create, write, then chown/chmod/utime the open file. The mount
    shows each change at once; the server has it once fsync (or close) returns, also a
    change back to the created mode after another one; a real chown reaches it at once."""
    remote, mnt = fresh(module_mount)
    path, there = os.path.join(mnt, "f"), os.path.join(remote, "f")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)

    def both() -> tuple[os.stat_result, os.stat_result]:
        shown = os.stat(path)
        os.fsync(fd)
        return shown, os.stat(there)

    try:
        os.write(fd, b"data")
        st = os.stat(there)
        os.fchown(fd, st.st_uid, st.st_gid)  # already so
        os.fchmod(fd, 0o640)  # already so
        assert [s.st_mode & 0o7777 for s in both()] == [0o640, 0o640]
        assert os.fstat(fd).st_size == 4
        os.fchmod(fd, 0o604)
        assert [s.st_mode & 0o7777 for s in both()] == [0o604, 0o604]
        os.fchmod(fd, 0o640)  # back: must not be taken for "already so"
        assert [s.st_mode & 0o7777 for s in both()] == [0o640, 0o640]
        os.fchown(fd, 4321, 4322)
        assert (os.stat(there).st_uid, os.stat(there).st_gid) == (4321, 4322)
        os.fchown(fd, st.st_uid, -1)
        assert (os.stat(there).st_uid, os.stat(there).st_gid) == (st.st_uid, 4322)
        os.utime(fd, ns=(1_000_000_000_000_000_000, 1_100_000_000_000_000_000))
        os.write(fd, b"more")  # after the times: the server moves the mtime again
        os.utime(fd, ns=(1_000_000_000_000_000_000, 1_200_000_000_000_000_000))
        shown, stored = both()
        assert int(shown.st_mtime) == int(stored.st_mtime) == 1_200_000_000
        assert shown.st_size == stored.st_size == 8
    finally:
        os.close(fd)
    st = os.stat(there)
    assert st.st_mode & 0o7777 == 0o640 and st.st_uid == 0 and st.st_gid == 4322
    assert int(st.st_mtime) == 1_200_000_000 and int(st.st_atime) == 1_000_000_000
    with open(there, "rb") as f:
        assert f.read() == b"datamore"


def test_mtime_alone_keeps_the_atime(module_mount: tuple[str, MountProcess]) -> None:
    """futimens with UTIME_OMIT for the atime (GNU tar's way) on a file being written."""
    remote, mnt = fresh(module_mount)
    fd = os.open(os.path.join(mnt, "f"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"x" * 5000)
        atime = os.stat(os.path.join(remote, "f")).st_atime_ns
        os.utime(fd, ns=(atime, 1_300_000_000_000_000_000))
    finally:
        os.close(fd)
    st = os.stat(os.path.join(remote, "f"))
    assert st.st_mtime_ns == 1_300_000_000_000_000_000
    assert st.st_atime_ns // 10**9 == atime // 10**9
    assert st.st_size == 5000


def test_lookups_in_a_directory_made_here(module_mount: tuple[str, MountProcess]) -> None:
    """A directory this mount made is empty: lookups in it are answered here, yet a listing
    asks the server, and what the mount itself makes there is found at once."""
    remote, mnt = fresh(module_mount)
    os.mkdir(os.path.join(mnt, "new"))
    with open(os.path.join(mnt, "new", "mine"), "w") as f:
        f.write("1")
    os.mkdir(os.path.join(mnt, "new", "sub"))
    os.symlink("mine", os.path.join(mnt, "new", "link"))
    assert os.path.isfile(os.path.join(mnt, "new", "mine"))
    assert os.path.isdir(os.path.join(mnt, "new", "sub"))
    assert os.readlink(os.path.join(mnt, "new", "link")) == "mine"
    with open(os.path.join(remote, "new", "theirs"), "w") as f:
        f.write("2")
    assert not os.path.exists(os.path.join(mnt, "new", "nothing"))
    assert sorted(os.listdir(os.path.join(mnt, "new"))) == ["link", "mine", "sub", "theirs"]
    assert os.path.isfile(os.path.join(mnt, "new", "theirs"))


def test_symlinks_not_rewritten(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    os.symlink("../some/where", os.path.join(mnt, "rel"))
    os.symlink("/absolute/target path", os.path.join(mnt, "abs"))
    assert os.readlink(os.path.join(mnt, "rel")) == "../some/where"
    assert os.readlink(os.path.join(mnt, "abs")) == "/absolute/target path"
    assert os.readlink(os.path.join(remote, "rel")) == "../some/where"
    assert os.readlink(os.path.join(remote, "abs")) == "/absolute/target path"
    assert os.path.islink(os.path.join(mnt, "rel"))
    with pytest.raises(OSError) as e:
        os.symlink("x", os.path.join(mnt, "rel"))
    assert e.value.errno == errno.EEXIST


def test_hard_link(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    with open(os.path.join(mnt, "orig"), "w") as f:
        f.write("one")
    os.link(os.path.join(mnt, "orig"), os.path.join(mnt, "twin"))
    st_a = os.stat(os.path.join(remote, "orig"))
    st_b = os.stat(os.path.join(remote, "twin"))
    assert st_a.st_ino == st_b.st_ino and st_a.st_nlink == 2
    with open(os.path.join(mnt, "twin"), "a") as f:
        f.write(" two")
    with open(os.path.join(mnt, "orig")) as f:
        assert f.read() == "one two"


def test_df_and_fsync(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    ours = os.statvfs(mnt)
    theirs = os.statvfs(remote)
    assert ours.f_blocks == theirs.f_blocks and ours.f_bsize == theirs.f_bsize
    assert abs(ours.f_bavail - theirs.f_bavail) < theirs.f_blocks // 100 + 1000
    out = subprocess.run(["df", "-P", mnt], capture_output=True, text=True, check=True).stdout
    assert out.rstrip().endswith(module_mount[1].mountpoint)
    fd = os.open(os.path.join(mnt, "synced"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"durable")
    os.fsync(fd)
    with open(os.path.join(remote, "synced"), "rb") as f:
        assert f.read() == b"durable"  # on the server once fsync returned
    os.close(fd)


def test_git_in_mount(module_mount: tuple[str, MountProcess]) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    _, mnt = fresh(module_mount)
    for i in range(20):
        with open(os.path.join(mnt, f"file{i}.txt"), "w") as f:
            f.write(f"line {i}\n" * i)
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
    )

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", mnt, *args], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, f"git {args}: {proc.stderr}"
        return proc.stdout

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    assert git("status", "--porcelain") == ""
    with open(os.path.join(mnt, "file3.txt"), "a") as f:
        f.write("change\n")
    assert git("status", "--porcelain").strip() == "M file3.txt"
    git("commit", "-q", "-am", "second")
    assert git("status", "--porcelain") == ""
    assert git("log", "--oneline").count("\n") == 2


HOSTILE = [
    b"with space",
    b"new\nline",
    b'quote\'s "double"',
    b"$(touch CANARY)",
    b"`touch CANARY`",
    b"; rm -rf ~",
    b"-leading-dash",
    b"back\\slash",
    b"non-utf8-\xff\xfe",
    b"tab\there",
    "ünïcødé-名前".encode(),
    b"x" * 255,
]


def test_hostile_names_round_trip(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    bmnt, bremote = os.fsencode(mnt), os.fsencode(remote)
    for i, name in enumerate(HOSTILE):
        with open(os.path.join(bmnt, name), "wb") as f:
            f.write(b"content %d" % i)
        os.mkdir(
            os.path.join(bmnt, name + b".d")
            if len(name) < 250
            else os.path.join(bmnt, b"d" + name[:250])
        )
    assert sorted(os.listdir(bremote)) == sorted(os.listdir(bmnt))
    for i, name in enumerate(HOSTILE):
        with open(os.path.join(bremote, name), "rb") as f:
            assert f.read() == b"content %d" % i
        os.rename(os.path.join(bmnt, name), os.path.join(bmnt, name + b"2"[: 255 - len(name)]))
    assert not os.path.exists(os.path.join(remote, "CANARY"))
    assert not os.path.exists(os.path.join(mnt, "CANARY"))
    with pytest.raises(OSError) as e:
        open(os.path.join(bmnt, b"y" * 256), "wb")
    assert e.value.errno == errno.ENAMETOOLONG


def test_large_file_random_io(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    rng = random.Random(7)
    size = 5 * (1 << 20) + 12345
    data = bytearray(rng.randbytes(size))
    path = os.path.join(mnt, "big")
    with open(path, "wb") as f:
        f.write(data)
    with open(path, "r+b") as f:
        for _ in range(200):
            off = rng.randrange(size)
            chunk = rng.randbytes(rng.randrange(1, 70_000))
            f.seek(off)
            f.write(chunk)
            end = off + len(chunk)
            if end > len(data):
                data.extend(b"\0" * (end - len(data)))
            data[off:end] = chunk
        for _ in range(200):
            off = rng.randrange(len(data))
            n = rng.randrange(1, 300_000)
            f.seek(off)
            assert f.read(n) == bytes(data[off : off + n])
    with open(os.path.join(remote, "big"), "rb") as f:
        assert f.read() == bytes(data)


def test_unlinked_open_file_stays_usable(module_mount: tuple[str, MountProcess]) -> None:
    _, mnt = fresh(module_mount)
    path = os.path.join(mnt, "gone")
    with open(path, "w+b") as f:
        f.write(b"still here")
        f.flush()
        os.unlink(path)
        assert not os.path.exists(path)
        f.seek(0)
        assert f.read() == b"still here"


def test_listing_matches_server(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    for i in range(250):  # more than one READDIR reply (OpenSSH sends 100 names a reply)
        open(os.path.join(remote, f"n{i:03d}"), "w").close()
    time.sleep(0)  # the mount has never listed this fresh directory
    assert sorted(os.listdir(mnt)) == sorted(os.listdir(remote))
    st = os.lstat(os.path.join(mnt, "n007"))
    assert st.st_size == 0 and st.st_mode & 0o170000 == 0o100000


def test_setattr_on_symlink_never_touches_its_target(
    module_mount: tuple[str, MountProcess], workdir: str
) -> None:
    remote, mnt = fresh(module_mount)
    outside = os.path.join(workdir, "outside")
    with open(outside, "w") as f:
        f.write("x")
    os.utime(outside, (1_000_000, 1_000_000))
    os.symlink(outside, os.path.join(mnt, "out-link"))
    os.utime(os.path.join(mnt, "out-link"), ns=(2 * 10**18, 2 * 10**18), follow_symlinks=False)
    os.chown(os.path.join(mnt, "out-link"), os.getuid(), os.getgid(), follow_symlinks=False)
    assert os.stat(outside).st_mtime == 1_000_000
    assert os.lstat(os.path.join(remote, "out-link")).st_mtime == 2 * 10**9


def test_xattrs_unsupported_without_round_trips(module_mount: tuple[str, MountProcess]) -> None:
    _, mnt = fresh(module_mount)
    path = os.path.join(mnt, "plain")
    open(path, "w").close()
    for _ in range(2):  # the second time the kernel answers by itself
        with pytest.raises(OSError) as e:
            os.getxattr(path, "user.test")
        assert e.value.errno == errno.ENOTSUP
    assert os.listxattr(path) == []
    with pytest.raises(OSError) as e:
        os.setxattr(path, "user.test", b"v")
    assert e.value.errno == errno.ENOTSUP


def test_times_sftp_cannot_hold_are_eoverflow(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    path = os.path.join(mnt, "f")
    with open(path, "wb") as f:
        f.write(b"data")
    os.utime(path, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    for bad in (1 << 32, -1):
        with pytest.raises(OSError) as info:
            os.utime(path, ns=(bad * 10**9, bad * 10**9))
        assert info.value.errno == errno.EOVERFLOW
    # a file this mount made and holds open: futimens is answered from what the mount knows
    fd = os.open(os.path.join(mnt, "g"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x")
        with pytest.raises(OSError) as info:
            os.utime(fd, ns=((1 << 33) * 10**9, (1 << 33) * 10**9))
        assert info.value.errno == errno.EOVERFLOW
    finally:
        os.close(fd)
    # nothing lost or changed on the way
    assert os.stat(os.path.join(remote, "f")).st_mtime_ns == 1_700_000_000 * 10**9
    with open(os.path.join(remote, "g"), "rb") as f:
        assert f.read() == b"x"


@pytest.mark.parametrize("made_here", [True, False], ids=["created", "existing"])
def test_an_open_file_outlives_its_name(
    module_mount: tuple[str, MountProcess], made_here: bool
) -> None:
    remote, mnt = fresh(module_mount)
    path = os.path.join(mnt, "f")
    data = random.Random(3).randbytes(300_001)
    if made_here:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
    else:
        with open(path, "wb") as f:  # written and closed: the kernel's pages can go
            f.write(data)
        fd = os.open(path, os.O_RDWR)
    try:
        os.unlink(path)
        st = os.fstat(fd)
        assert (st.st_nlink, st.st_size) == (0, len(data))
        assert os.pread(fd, len(data) + 10, 0) == data
        os.pwrite(fd, b"MORE", len(data))
        assert os.fstat(fd).st_size == len(data) + 4
        # the name is free at once, and the new file is another one
        fd2 = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd2, b"new")
        finally:
            os.close(fd2)
        os.ftruncate(fd, 10)
        assert os.pread(fd, 100, 0) == data[:10]
        assert os.fstat(fd).st_size == 10
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        assert f.read() == b"new"
    assert os.listdir(remote) == ["f"]
    with open(os.path.join(remote, "f"), "rb") as f:
        assert f.read() == b"new"
