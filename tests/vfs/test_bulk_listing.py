"""Bulk listing over the exec channel, against real servers: OpenSSH sshd and the asyncssh
demo server, with exec, without exec, and with exec but no usable ``find``.

The exec path and the SFTP path must return identical entries, and no hostile name may
ever run anything: names that would ``touch`` a canary file if a shell ever evaluated them
are listed, and the canary must never appear. (No name here does anything destructive:
the remote shell runs with the real HOME, so ``rm -rf ~`` is tested with a fake HOME in
tests/unit/test_bulk.py instead.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from sshvfs.app.demoserver import DemoServer
from sshvfs.config import MountOptions, Target
from sshvfs.execlist.lister import WARM_SHELLS
from sshvfs.sftp.vfs import SftpVFS
from sshvfs.transport.connection import connect
from sshvfs.vfs.types import Entry

from ..loopthread import LoopThread
from ..sshd import Sshd, find_sshd

CANARY = f"sshvfs-canary-{os.getpid()}".encode()

#: every way a name could break out of quoting, plus the awkward-but-legal ones
HOSTILE = [
    b"plain",
    b"with space",
    b" ",
    b"trailing space ",
    b"new\nline",
    b"\n",
    b"\r",
    b"a -> b",
    b"-leading-dash",
    b"-n",
    b"--",
    b"--help",
    b"-exec touch " + CANARY + b" ;",
    b"'single'",
    b"'",
    b'"double"',
    b"$(touch " + CANARY + b")",
    b"`touch " + CANARY + b"`",
    b"'; touch " + CANARY + b"; '",
    b'"; touch ' + CANARY + b'; "',
    b"'$(touch " + CANARY + b")'",
    b"\\'; touch " + CANARY + b" #",
    b"\n touch " + CANARY + b"\n",
    b"${HOME}",
    b"back\\slash\\",
    b"\\0\\n",
    b"%s%P%T@\\0",
    b"*",
    b"?[a]",
    b"tab\there",
    b"\x01\x02\x7f ctrl",
    b"\xff\xfe non-utf8 \xc3",
    b"caf\xc3\xa9",
    b"!hist",
    b"semi;colon&amp|pipe>redir<",
    b"x" * 255,
    b"\xff" * 255,
]
#: the listed directory's own name is hostile too (UTF-8: the demo server decodes commands)
HOSTILE_DIR = b"top $(touch " + CANARY + b") 'q\" \n-x"
N_ENTRIES = 20_000


# --------------------------------------------------------------------------- servers


@dataclass
class Endpoint:
    host: str
    port: int
    user: str
    client_key: str
    known_hosts: str

    def options(self) -> MountOptions:
        return MountOptions(
            port=self.port, identity_files=[self.client_key], known_hosts=self.known_hosts
        )


def _openssh(server: Sshd) -> Endpoint:
    return Endpoint(server.host, server.port, server.user, server.client_key, server.known_hosts)


@contextlib.contextmanager
def _demo(allow_exec: bool) -> Iterator[Endpoint]:
    loop = LoopThread("demo-server")
    server = DemoServer("/", allow_exec=allow_exec)
    try:
        ep = loop.call(server.start(), 30)
        yield Endpoint(ep.host, ep.port, "demo", ep.client_key, ep.known_hosts)
    finally:
        loop.call(server.close(), 30)
        loop.close()


@contextlib.contextmanager
def _sshd(extra_config: str) -> Iterator[Endpoint]:
    if find_sshd() is None:
        pytest.skip("OpenSSH sshd is not installed")
    server = Sshd(extra_config=extra_config).start()
    try:
        yield _openssh(server)
    finally:
        server.cleanup()


def _gate_config(workdir: str, name: str, run: str) -> str:
    """A ForceCommand that serves SFTP and runs every command with ``run`` (a shell line
    in which "$SSH_ORIGINAL_COMMAND" is the client's command)."""
    gate = os.path.join(workdir, f"gate-{name}")
    with open(gate, "w") as f:
        f.write(
            "#!/bin/sh\n"
            'case "$SSH_ORIGINAL_COMMAND" in\n'
            "  internal-sftp) exec /usr/lib/openssh/sftp-server ;;\n"
            "esac\n"
            f"{run}\n"
        )
    os.chmod(gate, 0o755)
    return f"ForceCommand {gate}"


def _fake_busybox_config(workdir: str) -> str:
    """Commands meet a ``find`` without -printf (like BusyBox's)."""
    fakebin = os.path.join(workdir, "fakebin")
    os.makedirs(fakebin)
    with open(os.path.join(fakebin, "find"), "w") as f:
        f.write("#!/bin/sh\necho 'find: unrecognized: -printf' >&2\nexit 1\n")
    os.chmod(os.path.join(fakebin, "find"), 0o755)
    run = f'PATH={fakebin}:$PATH exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"'
    return _gate_config(workdir, "busybox", run)


def _restricted_shell_config(workdir: str) -> str:
    """Commands run in rbash: no exec, no output redirection, no command with a slash."""
    return _gate_config(workdir, "rbash", 'exec /bin/rbash -c "$SSH_ORIGINAL_COMMAND"')


@pytest.fixture(scope="module")
def servers(sshd: Sshd) -> Iterator[dict[str, Endpoint]]:
    """Every kind of server, started once for the module."""
    workdir = tempfile.mkdtemp(prefix="sshvfs-bulk-servers-")
    with contextlib.ExitStack() as stack:
        found = {
            "openssh": _openssh(sshd),
            "demo": stack.enter_context(_demo(True)),
            "demo-no-exec": stack.enter_context(_demo(False)),
            "sftp-only": stack.enter_context(_sshd("ForceCommand internal-sftp")),
        }
        if os.path.exists("/usr/lib/openssh/sftp-server"):
            found["no-gnu-find"] = stack.enter_context(_sshd(_fake_busybox_config(workdir)))
            if os.path.exists("/bin/rbash"):
                config = _restricted_shell_config(workdir)
                found["restricted-shell"] = stack.enter_context(_sshd(config))
        yield found
    shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def open_vfs(
    ep: Endpoint,
    root: bytes,
    listing: str = "auto",
    threshold: int = 0,
    sessions: int = 2,
    warm_up: bool = False,
) -> AsyncIterator[SftpVFS]:
    conn = await connect(Target(ep.host, ep.user, root), ep.options())
    try:
        yield SftpVFS(
            conn.sftp,
            conn.root,
            exec_conn=conn.conn,
            listing=listing,
            listing_threshold=threshold,
            exec_sessions=sessions,
            warm_up=warm_up,
        )
    finally:
        await conn.close()


# --------------------------------------------------------------------------- trees


def _canary_paths(*dirs: bytes) -> list[bytes]:
    homes = [os.fsencode(os.path.expanduser("~")), b"/", os.fsencode(os.getcwd())]
    return [os.path.join(d, CANARY) for d in [*dirs, *homes]]


def _assert_no_canary(*dirs: bytes) -> None:
    for path in _canary_paths(*dirs):
        assert not os.path.lexists(path), f"a hostile name ran a command: {path!r}"


@pytest.fixture(scope="module")
def hostile_root() -> Iterator[bytes]:
    """<root>/<HOSTILE_DIR>: 20,000 entries (hostile names, files with sub-second times,
    symlinks, subdirectories, a fifo, hard links); <root>/tree: a small hostile tree."""
    root = os.fsencode(tempfile.mkdtemp(prefix="sshvfs-bulk-"))
    top = os.path.join(root, HOSTILE_DIR)
    os.makedirs(top)
    for i, name in enumerate(HOSTILE):
        with open(os.path.join(top, name), "wb") as f:
            f.write(name * (i % 3))
    os.symlink(b"../$(touch " + CANARY + b")\n -> `x`\xff'\"\\", os.path.join(top, b"link -> x"))
    os.symlink(b"/", os.path.join(top, b"root link"))
    os.symlink(b"dangling\nnowhere", os.path.join(top, b"dangling"))
    os.mkfifo(os.path.join(top, b"fifo\n"))
    os.link(os.path.join(top, b"plain"), os.path.join(top, b"hard link"))
    for name in (b"sub dir\n-> x", b"-sub", b"empty"):
        os.mkdir(os.path.join(top, name))
    os.mkdir(os.path.join(top, b"sub dir\n-> x", b"inner"))  # nlink 3
    os.chmod(os.path.join(top, b"-sub"), 0o1777)
    os.chmod(os.path.join(top, b"plain"), 0o4755)
    filler = N_ENTRIES - len(os.listdir(top))
    for i in range(filler):
        path = os.path.join(top, b"f%05d" % i)
        with open(path, "wb") as f:
            f.write(b"x" * (i % 7))
        if i % 10 == 0:  # sub-second mtimes: SFTP v3 cannot carry them
            os.utime(path, ns=(1_600_000_000_987_654_321, 1_700_000_000_000_000_000 + i * 7919))
    assert len(os.listdir(top)) == N_ENTRIES

    tree = os.path.join(root, b"tree")
    for d in (b"a/b/c", b"a/empty", b"-x/$(touch " + CANARY + b")", b"n\nl/\xff deep"):
        os.makedirs(os.path.join(tree, d))
    for rel in (b"a/1", b"a/b/2 -> 3", b"a/b/c/'4'", b"-x/$(touch " + CANARY + b")/5", b"top"):
        with open(os.path.join(tree, rel), "wb") as fh:
            fh.write(rel)
    os.symlink(b"a/b", os.path.join(tree, b"a", b"link to b"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        _assert_no_canary(root, top)


def _same(exec_entry: Entry, sftp_entry: Entry) -> None:
    a, b = exec_entry.attrs, sftp_entry.attrs
    name = exec_entry.name
    assert exec_entry.name == sftp_entry.name
    assert a.mode == b.mode, (name, oct(a.mode), oct(b.mode))
    assert (a.size, a.uid, a.gid, a.nlink) == (b.size, b.uid, b.gid, b.nlink), name
    # exact: both paths report whole seconds over SFTP v3 (see SftpVFS.__init__)
    assert a.mtime_ns == b.mtime_ns, name
    if not exec_entry.attrs.is_dir and exec_entry.target is None:
        assert a.atime_ns == b.atime_ns, name  # reading links and dirs may bump atimes


def _by_name(entries: list[Entry]) -> dict[bytes, Entry]:
    out = {e.name: e for e in entries}
    assert len(out) == len(entries), "a name was listed twice"
    return out


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("server", ["openssh", "demo"])
async def test_exec_and_sftp_agree_on_hostile_directory(
    servers: dict[str, Endpoint], hostile_root: bytes, server: str
) -> None:
    path = b"/" + HOSTILE_DIR
    async with open_vfs(servers[server], hostile_root, "exec") as bulk:
        by_exec = _by_name(await bulk.readdir(path))
        lister = bulk.lister
        assert lister is not None and lister.available and lister.commands == 1
    async with open_vfs(servers[server], hostile_root, "sftp") as plain:
        assert plain.lister is None
        by_sftp = _by_name(await plain.readdir(path))
    top = os.path.join(hostile_root, HOSTILE_DIR)
    assert set(by_exec) == set(by_sftp) == set(os.listdir(top))
    for name, entry in by_exec.items():
        _same(entry, by_sftp[name])
        st = os.lstat(os.path.join(top, name))
        assert entry.mtime_ns == st.st_mtime_ns // 10**9 * 10**9  # floored, like tv_sec
        if stat.S_ISLNK(st.st_mode):
            assert entry.target == os.readlink(os.path.join(top, name))
        else:
            assert entry.target is None
        assert by_sftp[name].target is None  # SFTP learns no targets
    assert by_exec[b"plain"].attrs.mode == stat.S_IFREG | 0o4755
    assert by_exec[b"plain"].attrs.nlink == 2
    assert by_exec[b"sub dir\n-> x"].attrs.nlink == 3
    assert stat.S_ISFIFO(by_exec[b"fifo\n"].attrs.mode)
    assert {b"x" * 255, b"\xff" * 255} <= set(by_exec)
    _assert_no_canary(hostile_root, top)


@pytest.mark.parametrize("server", ["openssh", "demo"])
async def test_tree_matches_listings(
    servers: dict[str, Endpoint], hostile_root: bytes, server: str
) -> None:
    async with open_vfs(servers[server], hostile_root, "auto") as vfs:
        tree = await vfs.tree(b"/tree", 1000)
        assert tree is not None
        expected = {
            b"/tree" + os.fsencode(d)[len(hostile_root) + 5 :]
            for d, _, _ in os.walk(os.path.join(hostile_root, b"tree"))
        }
        assert set(tree) == expected  # every directory, empty ones included
        assert tree[b"/tree/a/empty"] == []
        for directory, entries in tree.items():
            listed = _by_name(await vfs.readdir(directory))  # SFTP: small directories
            got = _by_name(entries)
            assert set(got) == set(listed), directory
            for name, entry in got.items():
                _same(entry, listed[name])
        assert _by_name(tree[b"/tree/a"])[b"link to b"].target == b"a/b"
        assert await vfs.tree(b"/tree", 3) is None  # 14 entries > 3
    _assert_no_canary(hostile_root)


async def test_tree_over_the_limit_stops_the_command(
    servers: dict[str, Endpoint], hostile_root: bytes
) -> None:
    marker = os.fsencode(tempfile.mkdtemp(prefix="sshvfs-stop-"))
    try:
        for i in range(300):
            os.makedirs(os.path.join(marker, b"d%03d" % i, b"sub"))
        async with open_vfs(servers["openssh"], marker) as vfs:
            assert await vfs.tree(b"/", 50) is None
            assert vfs.lister is not None and vfs.lister.available
            deadline = time.monotonic() + 10
            while _finds_under(marker) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not _finds_under(marker), "the find behind an abandoned tree still runs"
            tree = await vfs.tree(b"/", 10_000)  # a new shell takes over
            assert tree is not None and len(tree) == 601
    finally:
        shutil.rmtree(marker, ignore_errors=True)


def _finds_under(path: bytes) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"find") and any(a.startswith(path) for a in argv):
            found.append(int(pid))
    return found


@pytest.mark.parametrize("server", ["demo-no-exec", "sftp-only", "no-gnu-find", "restricted-shell"])
@pytest.mark.parametrize("listing", ["exec", "auto"])
async def test_servers_without_bulk_listing_fall_back_quietly(
    servers: dict[str, Endpoint],
    hostile_root: bytes,
    server: str,
    listing: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if server not in servers:
        pytest.skip(f"no {server} server here")
    caplog.set_level(logging.INFO, logger="sshvfs")
    path = b"/" + HOSTILE_DIR
    async with open_vfs(servers[server], hostile_root, listing, threshold=150) as vfs:
        first = _by_name(await vfs.readdir(path))  # auto: switches at 150 entries, fails
        again = _by_name(await vfs.readdir(path))
        assert await vfs.tree(b"/tree", 1000) is None
        assert vfs.lister is not None and vfs.lister.available is False
    top = os.path.join(hostile_root, HOSTILE_DIR)
    assert set(first) == set(again) == set(os.listdir(top))
    fallbacks = [r for r in caplog.records if "listing directories with SFTP" in r.message]
    assert len(fallbacks) == 1, [r.message for r in caplog.records]
    assert fallbacks[0].levelno == (logging.WARNING if listing == "exec" else logging.INFO)
    _assert_no_canary(hostile_root, top)


@pytest.mark.parametrize("server", ["openssh", "demo"])
async def test_auto_mode(servers: dict[str, Endpoint], server: str) -> None:
    root = os.fsencode(tempfile.mkdtemp(prefix="sshvfs-auto-"))
    try:
        for name, count in ((b"ten", 10), (b"big", 900)):
            os.mkdir(os.path.join(root, name))
            for i in range(count):
                open(os.path.join(root, name, b"%04d" % i), "wb").close()
            os.symlink(b"target", os.path.join(root, name, b"link"))
        async with open_vfs(servers[server], root, "auto") as adaptive:
            # fewer than MIN_EXEC_ENTRIES: never a command, not even the probe
            assert len(await adaptive.readdir(b"/ten")) == 11
            assert len(await adaptive.readdir(b"/big")) == 901
            assert adaptive.lister is not None and adaptive.lister.available is None
        async with open_vfs(servers[server], root, "auto", threshold=150) as fixed:
            ten = _by_name(await fixed.readdir(b"/ten"))
            assert ten[b"link"].target is None  # SFTP
            big = _by_name(await fixed.readdir(b"/big"))
            assert big[b"link"].target == b"target"  # switched to exec at 150 entries
            assert len(big) == 901
            assert fixed.lister is not None and fixed.lister.commands == 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_errors_carry_the_remote_stderr(
    servers: dict[str, Endpoint], hostile_root: bytes
) -> None:
    async with open_vfs(servers["openssh"], hostile_root, "exec") as vfs:
        with pytest.raises(FileNotFoundError) as missing:
            await vfs.readdir(b"/missing")
        assert "No such file or directory" in str(missing.value)
        with pytest.raises(NotADirectoryError):
            await vfs.readdir(b"/tree/top")
        with pytest.raises(FileNotFoundError):
            await vfs.tree(b"/missing", 10)
        assert vfs.lister is not None and vfs.lister.available  # still usable


async def test_non_utf8_directory_path(servers: dict[str, Endpoint], hostile_root: bytes) -> None:
    path = b"/tree/n\nl/\xff deep"
    os.mkdir(os.path.join(hostile_root, path[1:], b"\xfe child"))
    try:
        async with open_vfs(servers["openssh"], hostile_root, "exec") as vfs:
            assert [e.name for e in await vfs.readdir(path)] == [b"\xfe child"]
            assert vfs.lister is not None and vfs.lister.commands == 1
        # the demo server cannot decode such a command line: SFTP answers, no error
        async with open_vfs(servers["demo"], hostile_root, "exec") as vfs:
            assert [e.name for e in await vfs.readdir(path)] == [b"\xfe child"]
            assert vfs.lister is not None and vfs.lister.available
    finally:
        os.rmdir(os.path.join(hostile_root, path[1:], b"\xfe child"))


async def test_concurrent_listings_are_bounded(
    servers: dict[str, Endpoint], hostile_root: bytes
) -> None:
    results: list[int] = []
    async with open_vfs(servers["openssh"], hostile_root, "exec", sessions=2) as vfs:

        async def one(path: bytes) -> None:
            results.append(len(await vfs.readdir(path)))

        async with asyncio.TaskGroup() as group:
            for _ in range(4):
                group.create_task(one(b"/" + HOSTILE_DIR))
                group.create_task(one(b"/tree/a"))
        lister = vfs.lister
        assert lister is not None
        assert lister.peak <= 2 and lister.shells <= 2
        assert lister.commands == 8
    assert sorted(results) == [4] * 4 + [N_ENTRIES] * 4


async def test_cancelled_listing_leaves_the_lister_usable(
    servers: dict[str, Endpoint], hostile_root: bytes
) -> None:
    async with open_vfs(servers["openssh"], hostile_root, "exec") as vfs:
        assert len(await vfs.readdir(b"/tree")) == 4  # warm: the probe is done
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.002):
                await vfs.readdir(b"/" + HOSTILE_DIR)
        assert len(await vfs.readdir(b"/" + HOSTILE_DIR)) == N_ENTRIES
        assert len(await vfs.readdir(b"/tree/a")) == 4


async def test_adaptive_mode_uses_directory_sizes(servers: dict[str, Endpoint]) -> None:
    root = os.fsencode(tempfile.mkdtemp(prefix="sshvfs-adaptive-"))
    try:
        for name in (b"many", b"more"):
            os.mkdir(os.path.join(root, name))
            for i in range(1500):
                open(os.path.join(root, name, b"%04d" % i), "wb").close()
            os.symlink(b"target", os.path.join(root, name, b"link"))
        async with open_vfs(servers["openssh"], root, "auto") as vfs:
            policy, lister = vfs.listing_policy, vfs.lister
            assert lister is not None
            policy.sftp_cost = 1.0  # pretend a far-away server: 1 s an entry
            await vfs.readdir(b"/")  # the parent's listing tells /many's st_size
            many = _by_name(await vfs.readdir(b"/many"))
            assert many[b"link"].target == b"target" and len(many) == 1501
            assert lister.commands == 1
            # no hint for /more: SFTP starts, its st_size (or its count) says switch
            policy.note_size(b"/more", 0)
            more = _by_name(await vfs.readdir(b"/more"))
            assert more[b"link"].target == b"target" and len(more) == 1501
            assert lister.commands == 2
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_warm_up_and_idle_shells(servers: dict[str, Endpoint], hostile_root: bytes) -> None:
    """The probe starts the warm shells (two): a walk's first tree prefetch and content
    fetch run at once without waiting for a shell to start; more shells start when more
    commands overlap, and those beyond the warm ones go once idle."""
    async with open_vfs(servers["openssh"], hostile_root, "exec", sessions=3, warm_up=True) as vfs:
        lister = vfs.lister
        assert lister is not None
        deadline = time.monotonic() + 60
        while len(lister._idle) < WARM_SHELLS and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # started and probed
        assert lister.available and lister.commands == 0  # probed before any listing
        assert lister.shells == WARM_SHELLS == 2
        lister._idle_timeout = 0.05
        async with asyncio.TaskGroup() as group:  # two overlap: the warm shells serve
            group.create_task(vfs.readdir(b"/" + HOSTILE_DIR))
            group.create_task(vfs.readdir(b"/tree/a"))
        assert lister.shells == 2 and lister.peak == 2
        async with asyncio.TaskGroup() as group:  # three overlap: one more starts
            group.create_task(vfs.readdir(b"/" + HOSTILE_DIR))
            group.create_task(vfs.readdir(b"/" + HOSTILE_DIR))
            group.create_task(vfs.readdir(b"/tree/a"))
        assert lister.shells == 3
        deadline = time.monotonic() + 10
        while len(lister._idle) > 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert len(lister._idle) == 2  # the warm shells stay
        assert len(await vfs.readdir(b"/tree/a")) == 4
        assert lister.shells == 3
