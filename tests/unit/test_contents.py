"""The content fetch's framing and archive parsing, and the copies' coherence rules."""

from __future__ import annotations

import io
import re
import stat
import subprocess
import tarfile

import pytest

from sshvfs.execlist.archive import (
    ContentParser,
    FileParser,
    archive_limit,
    contents_command,
    file_command,
    parse_archive,
)
from sshvfs.execlist.commands import end_command, end_record
from sshvfs.vfs.cache.contents import MAX_FILE, MAX_FILES, ContentCache
from sshvfs.vfs.types import Attrs

LIMIT = archive_limit(MAX_FILE, MAX_FILES)


def _archive(files: dict[str, tuple[int, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, (mtime, data) in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _attrs(size: int, mtime_s: int, mode: int = stat.S_IFREG | 0o644) -> Attrs:
    return Attrs(mode, size, 0, 0, 1, mtime_s * 10**9, mtime_s * 10**9)


def _shell_output(cmd: bytes) -> bytes:
    """What ``cmd`` prints in the long-lived shell: its output, then the end record."""
    done = subprocess.run(
        ["sh", "-c", cmd + b"; " + end_command(b"token")],
        capture_output=True,
        check=True,
    )
    assert done.stderr.endswith(b"\ntoken\n")
    # the end record: an empty path, the status, then empty fields up to a listing
    # record's 13 (the marker "/" last)
    assert re.search(rb"\0[0-9]+\0{11}/\0\Z", done.stdout), done.stdout[-40:]
    return done.stdout


def _run_framed(cmd: bytes) -> ContentParser:
    parser = ContentParser(LIMIT)
    parser.feed(_shell_output(cmd))
    return parser


def test_parser_reads_the_frame_in_any_chunks() -> None:
    long = "d/" + "x" * 150  # a GNU long name
    files = {"a": (5, b"hello"), long: (7, b"\0" * 600), "n\nl": (9, b"")}
    archive = _archive(files)
    stream = b"0 %d\0" % len(archive) + archive + end_record(0)
    for step in (1, 7, 512, len(stream)):
        parser = ContentParser(LIMIT)
        for i in range(0, len(stream), step):
            parser.feed(stream[i : i + step])
        assert parser.exit_status == 0 and parser.tar_status == 0
        assert parser.archive is not None
        got = parse_archive(parser.archive)
        assert got == {k.encode(): v for k, v in files.items()}


def _bare(archive: bytes) -> bytes:
    """A one-file ``archive`` (a header, one data block) without tarfile's padding after
    its two zero blocks, as ``tar -b 1`` ends it."""
    assert archive[1024:] == bytes(len(archive) - 1024)
    return archive[:2048]


@pytest.mark.parametrize("status", [0, 2, 127])
def test_parsers_read_the_end_record_s_status(status: int) -> None:
    archive = _archive({"a": (5, b"hello")})
    stream = b"0 %d\0" % len(archive) + archive + end_record(status)
    parser = ContentParser(LIMIT)
    parser.feed(stream[:-1])
    assert parser.exit_status is None  # the end record is not whole yet
    parser.feed(stream[-1:])
    assert parser.exit_status == status and parser.tar_status == 0
    bare = _bare(archive)  # as tar -b 1 sends it
    files = FileParser(LIMIT)
    for i in range(0, len(bare + end_record(status)), 100):
        files.feed((bare + end_record(status))[i : i + 100])
    assert files.exit_status == status and files.archive == bare
    alone = FileParser(LIMIT)  # tar could not start: the end record comes alone
    alone.feed(end_record(status))
    assert alone.exit_status == alone.tar_status == status and alone.archive is None


#: end records every parser of a shell's framed output refuses
BAD_END_RECORDS = (
    b"\x000" + b"\0" * 9 + b"/\0",  # the former end record, 2 fields short
    b"\x000" + b"\0" * 12 + b"/\0",
    b"\0x" + b"\0" * 11 + b"/\0",
    b"\x000" + b"\0" * 10 + b"x\0/\0",
)


def test_parsers_refuse_a_malformed_end_record() -> None:
    archive = _archive({"a": (5, b"hello")})
    head = b"0 %d\0" % len(archive) + archive
    bare = _bare(archive)
    for bad in BAD_END_RECORDS:
        with pytest.raises(ValueError, match="end record"):
            ContentParser(LIMIT).feed(head + bad)
        with pytest.raises(ValueError, match="end record"):
            FileParser(LIMIT).feed(bare + bad)
        with pytest.raises(ValueError, match="end record"):
            FileParser(LIMIT).feed(bad)


def test_parser_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        ContentParser(LIMIT).feed(b"x" * 100)
    with pytest.raises(ValueError):
        ContentParser(limit=10).feed(b"0 11\0")
    parser = ContentParser(LIMIT)
    with pytest.raises(ValueError):
        parser.feed(b"0 0\0" + b"junk" * 10)


def test_a_copy_is_served_only_while_the_attributes_match() -> None:
    now = [100.0]
    cache = ContentCache(max_bytes=10, ttl=30, timer=lambda: now[0])
    cache.put_many(b"/r", {b"a": (5, b"12345"), b"b/c": (6, b"678")}, since=100.0)
    assert cache.get(b"/r/a", _attrs(5, 5)) == b"12345"
    assert cache.get(b"/r/b/c", _attrs(3, 7)) is None  # another mtime: dropped
    assert cache.get(b"/r/b/c", _attrs(3, 6)) is None  # and gone for good
    assert cache.get(b"/r/a", _attrs(6, 5)) is None  # another size
    cache.put_many(b"/r", {b"a": (5, b"12345")}, since=100.0)
    now[0] = 131.0
    assert cache.get(b"/r/a", _attrs(5, 5)) is None  # older than the TTL
    cache.put_many(b"/r", {b"x": (1, b"123456"), b"y": (1, b"123456")}, since=131.0)
    assert len(cache) == 1 and cache.bytes == 6  # least recently used out, within bounds


def test_the_command_runs_in_sh_and_frames_a_tar(tmp_path: object) -> None:
    import os

    root = str(tmp_path)
    os.makedirs(os.path.join(root, "s p'ace"))
    with open(os.path.join(root, "s p'ace", "f"), "wb") as f:
        f.write(b"data")
    with open(os.path.join(root, "big"), "wb") as f:
        f.write(b"x" * 200)
    parser = _run_framed(contents_command(os.fsencode(root), max_file=100, max_files=10))
    assert parser.exit_status == 0 and parser.archive is not None
    got = parse_archive(parser.archive)
    assert set(got) == {b"s p'ace/f"} and got[b"s p'ace/f"][1] == b"data"
    assert os.getcwd() != root


def test_the_command_leaves_repositories_metadata_out(tmp_path: object) -> None:
    """A tree's fetch leaves out directories named .git at any depth (git's reads fetch
    them apart), not a file named .git (a worktree's pointer); fetched itself, a .git
    directory sends its files."""
    import os

    root = str(tmp_path)
    files = {
        "src/main.c": b"int main;",
        ".git/HEAD": b"ref",
        ".git/objects/ab/cd": b"blob",
        "vendor/lib/.git/config": b"[core]",
        "vendor/lib/lib.c": b"lib",
        "wt/.git": b"gitdir: ../x",
    }
    for rel, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
    parser = _run_framed(contents_command(os.fsencode(root), max_file=100, max_files=10))
    assert parser.exit_status == 0 and parser.archive is not None
    assert set(parse_archive(parser.archive)) == {b"src/main.c", b"vendor/lib/lib.c", b"wt/.git"}
    git = os.fsencode(os.path.join(root, ".git"))
    parser = _run_framed(contents_command(git, max_file=100, max_files=10))
    assert parser.archive is not None
    assert set(parse_archive(parser.archive)) == {b"HEAD", b"objects/ab/cd"}


def _run_file(cmd: bytes, chunk: int) -> FileParser:
    out = _shell_output(cmd)
    parser = FileParser(LIMIT)
    for i in range(0, len(out), chunk):
        parser.feed(out[i : i + chunk])
    return parser


@pytest.mark.parametrize("chunk", [1, 100, 512, 1 << 20])
def test_the_one_file_command_sends_that_file_and_nothing_else(
    tmp_path: object, chunk: int
) -> None:
    import os

    root = os.fsencode(str(tmp_path))
    os.makedirs(root + b"/d")
    odd = b"it's \n odd " + b"x" * 120  # a GNU long name: a header block of its own
    for name, data in ((odd, b"one" * 300), (b"other", b"two"), (b"d/inner", b"three")):
        with open(root + b"/" + name, "wb") as f:
            f.write(data)
    parser = _run_file(file_command(root + b"/" + odd), chunk)
    assert parser.exit_status == 0 and parser.tar_status == 0 and parser.archive is not None
    got = parse_archive(parser.archive)
    assert list(got) == [odd] and got[odd][1] == b"one" * 300
    assert got[odd][0] == int(os.stat(root + b"/" + odd).st_mtime)
    # a directory is archived alone (no recursion), and keeps no regular file
    parser = _run_file(file_command(root + b"/d"), chunk)
    assert parser.archive is not None and parse_archive(parser.archive) == {}
    # a missing file, a missing directory: tar fails, with or without an (empty) stream
    for missing in (root + b"/missing", root + b"/nodir/f"):
        parser = _run_file(file_command(missing), chunk)
        assert parser.exit_status not in (None, 0) and parser.tar_status == parser.exit_status


class _Backend:
    def __init__(self, across_link: bool) -> None:
        self.link = across_link
        self.fetched: list[bytes] = []

    def lists_for_lookups(self) -> bool:
        return self.link

    def across_link(self) -> bool:
        return self.link

    async def contents(
        self, root: bytes, max_file: int, max_files: int
    ) -> dict[bytes, tuple[int, bytes]]:
        self.fetched.append(root)
        if root == b"/r":  # a tree too big for one fetch
            return {b"d%d/f" % i: (1, b"x") for i in range(max_files)}
        return {b"f": (1, b"x")}


class _Cache:
    def __init__(self, inner: _Backend, prefetched: bytes | None = b"/r") -> None:
        self.inner = inner
        self.prefetched = prefetched
        self.walks: list[bytes] = []
        #: changes through the mount, by path (what the cache's generations count)
        self.changes: dict[bytes, int] = {}

    def prefetched_root(self, path: bytes, ttl: float) -> bytes | None:
        return self.prefetched

    def walk_reads(self, root: bytes) -> bool:
        self.walks.append(root)
        return True

    def generation_snapshot(self) -> object:
        return lambda path: True

    def _generation(self, path: bytes) -> tuple[int, int]:
        return (0, self.changes.get(path, 0))


class _OneFileBackend(_Backend):
    def __init__(self, across_link: bool, data: bytes, mtime_s: int = 7) -> None:
        super().__init__(across_link)
        self.data, self.mtime_s = data, mtime_s
        self.asked: list[bytes] = []
        self.cache: _Cache | None = None
        self.change_meanwhile = False

    async def file_contents(self, path: bytes, max_file: int) -> tuple[int, bytes] | None:
        self.asked.append(path)
        if self.change_meanwhile and self.cache is not None:
            self.cache.changes = {path: 1}  # a write through the mount while it was on the way
        return (self.mtime_s, self.data)


@pytest.mark.parametrize(
    "case", ["served", "on loopback", "big", "not a file", "changed remotely", "changed here"]
)
async def test_a_small_file_opened_across_a_link_comes_in_one_command(case: str) -> None:
    """An open that would cost an SFTP OPEN and READ (two round trips) costs one exec
    command, across a link only, for a small regular file, and only while what came back
    matches the attributes the mount presents and nothing changed it through the mount."""
    from sshvfs.vfs.cache.contents import MAX_FILE, ContentPrefetcher

    backend = _OneFileBackend(case != "on loopback", b"x" * 10)
    cache = _Cache(backend)
    backend.cache = cache
    backend.change_meanwhile = case == "changed here"
    prefetcher = ContentPrefetcher(cache, lambda: 100.0, ttl=30)  # type: ignore[arg-type]
    attrs = _attrs(10, 7)
    if case == "big":
        attrs = _attrs(MAX_FILE + 1, 7)
    elif case == "not a file":
        attrs = _attrs(10, 7, stat.S_IFLNK | 0o777)
    elif case == "changed remotely":
        backend.mtime_s = 8  # the server's file is newer than what the mount presents
    f = await prefetcher.fetch_one(b"/r/f", attrs)
    if case == "served":
        assert f is not None and await f.read(0, 100) == b"x" * 10
        assert await f.fstat() == attrs
        return
    assert f is None
    asked = case in ("changed remotely", "changed here")
    assert backend.asked == ([b"/r/f"] if asked else [])


@pytest.mark.parametrize("across_link", [True, False])
async def test_under_a_tree_too_big_a_directory_is_fetched_alone_only_across_a_link(
    across_link: bool,
) -> None:
    """One command for a directory's few files pays only where it spares round trips that
    cost more: at a round trip of a LAN or loopback, the opens go one by one instead."""
    import asyncio

    from sshvfs.vfs.cache.contents import ContentPrefetcher

    backend = _Backend(across_link)
    prefetcher = ContentPrefetcher(_Cache(backend), lambda: 100.0, ttl=30)  # type: ignore[arg-type]
    prefetcher.missed(b"/r/d1/f")
    await asyncio.sleep(0.01)
    assert backend.fetched == [b"/r"]  # the whole tree first: it came back full
    prefetcher.missed(b"/r/d2/f")
    await asyncio.sleep(0.01)
    assert backend.fetched == ([b"/r", b"/r/d2"] if across_link else [b"/r"])


@pytest.mark.parametrize("across_link", [True, False])
async def test_a_walk_of_reads_across_a_link_prefetches_its_trees_listings(
    across_link: bool,
) -> None:
    """git status opens what its index names without listing: four read-only opens in
    more than one directory (32 on a LAN or loopback, where each costs little and a fetch
    much) fetch the small files of their common tree and, across a link, its listings too
    (they answer the walk's lookups, the names missing included)."""
    import asyncio

    from sshvfs.vfs.cache.contents import READ_WALK, READ_WALK_NEAR, ContentPrefetcher

    backend = _Backend(across_link)
    cache = _Cache(backend, prefetched=None)
    prefetcher = ContentPrefetcher(cache, lambda: 100.0, ttl=30)  # type: ignore[arg-type]
    count = READ_WALK if across_link else READ_WALK_NEAR
    for i in range(count - 1):
        prefetcher.missed(b"/repo/.git/d%d/f" % (i % 2))
    await asyncio.sleep(0.01)
    assert backend.fetched == []
    prefetcher.missed(b"/repo/.git/d0/g")
    await asyncio.sleep(0.01)
    assert backend.fetched == [b"/repo/.git"]
    assert cache.walks == ([b"/repo/.git"] if across_link else [])


async def test_a_read_in_a_repository_s_metadata_fetches_only_the_metadata() -> None:
    """git status whose index matches reads .git alone: under a fetched tree, a read in
    .git fetches .git's small files, and only a read in the worktree fetches the tree."""
    import asyncio

    from sshvfs.vfs.cache.contents import ContentPrefetcher

    backend = _Backend(across_link=False)
    prefetcher = ContentPrefetcher(_Cache(backend, b"/w"), lambda: 100.0, ttl=30)  # type: ignore[arg-type]
    prefetcher.missed(b"/w/repo/.git/HEAD")
    prefetcher.missed(b"/w/repo/.git/refs/heads/main")  # that fetch is in flight already
    await asyncio.sleep(0.01)
    assert backend.fetched == [b"/w/repo/.git"]
    prefetcher.missed(b"/w/repo/src/main.c")
    await asyncio.sleep(0.01)
    assert backend.fetched == [b"/w/repo/.git", b"/w"]


@pytest.mark.parametrize(
    ("opened", "root"),
    [
        ([b"/w/a/f", b"/w/b/f", b"/w/a/g", b"/w/b/g"], b"/w"),
        ([b"/w/b/f", b"/w/b-c/f", b"/w/b/x/f", b"/w/b/g"], b"/w"),  # "-" sorts before "/"
        ([b"/w/b/f", b"/w/b/x/f", b"/w/b/y/f", b"/w/b/x/g"], b"/w/b"),
        ([b"/f", b"/a/f", b"/g", b"/b/f"], b"/"),
        ([b"/w/a/f", b"/w/ab/f", b"/w/a/g", b"/w/ab/g"], b"/w"),
    ],
)
def test_a_read_walk_s_root_is_its_directories_common_one(opened: list[bytes], root: bytes) -> None:
    from sshvfs.vfs.cache.contents import READ_WALK, ContentPrefetcher

    prefetcher = ContentPrefetcher(_Cache(_Backend(True), None), lambda: 100.0, ttl=30)  # type: ignore[arg-type]
    assert len(opened) == READ_WALK
    found = [prefetcher._read_walk(100.0, path) for path in opened]
    assert found == [None] * (READ_WALK - 1) + [root]
    assert prefetcher._read_walk(103.0, b"/elsewhere/f") is None  # the walk is 2 s old


async def test_a_walk_of_reads_into_metadata_fetches_it_apart() -> None:
    """A walk of reads (no tree prefetched) fetches its tree without .git: its reads
    reaching .git later (grep -r, cp -r) fetch .git in a command of its own."""
    import asyncio

    from sshvfs.vfs.cache.contents import READ_WALK, ContentPrefetcher

    backend = _Backend(across_link=True)
    prefetcher = ContentPrefetcher(_Cache(backend, None), lambda: 100.0, ttl=30)  # type: ignore[arg-type]
    for i in range(READ_WALK):
        prefetcher.missed(b"/repo/d%d/f" % (i % 2))
    await asyncio.sleep(0.01)
    assert backend.fetched == [b"/repo"]
    prefetcher.missed(b"/repo/.git/objects/ab/cd")
    await asyncio.sleep(0.01)
    assert backend.fetched == [b"/repo", b"/repo/.git"]


def _written(fmt: int, files: dict[str, tuple[int, bytes]]) -> bytes:
    """A tar of ``files`` in format ``fmt``, with a directory, a symlink and a hard link
    among them (which the reader skips)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        extra = tarfile.TarInfo("./sub")
        extra.type = tarfile.DIRTYPE
        tar.addfile(extra)
        for name, (mtime, data) in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./link")
        link.type, link.linkname = (
            tarfile.SYMTYPE,
            "x" * (80 if fmt == tarfile.USTAR_FORMAT else 150),
        )
        tar.addfile(link)
        hard = tarfile.TarInfo("./hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, "./a.txt"
        tar.addfile(hard)
    return buf.getvalue()


LONG = "d" * 60 + "/" + "e" * 70 + "/" + "f" * 90 + ".txt"  # over 100 bytes: long-name rules


@pytest.mark.parametrize(
    "fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT], ids=str
)
def test_the_lean_reader_reads_what_tarfile_reads(fmt: int) -> None:
    from sshvfs.execlist import archive

    files = {
        "a.txt": (1_700_000_000, b"alpha\n"),
        "sub/empty": (5, b""),
        "sub/block": (1_700_000_001, b"b" * 512),
        "sub/odd": (1_700_000_002, bytes(range(256)) * 3),
        LONG: (1_700_000_003, b"long name\n"),
    }
    if fmt == tarfile.PAX_FORMAT:
        files["ünï/cödé"] = (1_700_000_004, b"pax path\n")  # non-ASCII: a pax path record
    data = _written(fmt, files)
    lean = archive._lean_parse(data)
    assert lean == archive._tarfile_parse(data)
    assert lean == {k.encode(): v for k, v in files.items()}


def test_the_lean_reader_reads_gnu_tar_s_own_output(tmp_path: object) -> None:
    from pathlib import Path

    from sshvfs.execlist import archive

    root = Path(str(tmp_path))
    (root / LONG).parent.mkdir(parents=True)
    (root / LONG).write_bytes(b"x" * 1000)
    (root / "small").write_bytes(b"y")
    out = subprocess.run(
        ["tar", "-C", str(root), "-cf", "-", "."], capture_output=True, check=True
    ).stdout
    assert archive._lean_parse(out) == archive._tarfile_parse(out)
    assert set(archive._lean_parse(out)) == {LONG.encode(), b"small"}


def test_a_damaged_archive_is_refused_not_misread() -> None:
    data = bytearray(_archive({"a": (1, b"x" * 600), "b": (2, b"y")}))
    data[512 * 3 + 10] ^= 0x20  # inside the second header's name: its checksum fails
    # tarfile stops at a bad header after the first: what came before it is intact
    assert parse_archive(bytes(data)) == {b"a": (1, b"x" * 600)}
    with pytest.raises(ValueError):
        parse_archive(_archive({"a": (1, b"x" * 600)})[:1024])  # cut inside the data


def test_a_dropped_subtree_takes_its_copies_and_no_others() -> None:
    from sshvfs.vfs.cache.contents import ContentCache

    cache = ContentCache(1 << 20, 30, lambda: 100.0)
    names = [b"a/b/c/d", b"a/b/e", b"a/bc/f", b"a/g", b"z"]
    cache.put_many(b"/r", {name: (1, b"x") for name in names}, since=100.0)
    cache.drop_subtree(b"/r/a/b")
    assert sorted(cache._copies) == [b"/r/a/bc/f", b"/r/a/g", b"/r/z"]
    cache.drop_subtree(b"/r/a/g")  # a file: itself
    assert sorted(cache._copies) == [b"/r/a/bc/f", b"/r/z"] and cache.bytes == 2
    cache.drop_subtree(b"/")
    assert len(cache) == 0 and cache.bytes == 0
