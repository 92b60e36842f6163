"""sshvfs.execlist.commands: quoting, find command lines run through a real local sh, parsing."""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from sshvfs.execlist import commands as bulk
from sshvfs.execlist import lister
from sshvfs.execlist import parser as lp
from sshvfs.execlist import policy as lpolicy
from sshvfs.execlist.commands import (
    FIND_FORMAT,
    BulkCommandError,
    BulkParseError,
    ListingParser,
    end_record,
    end_status,
    error_from_exit,
    listing_command,
    parse_listing,
    parse_probe,
    probe_command,
    quote,
    tree_command,
)
from sshvfs.execlist.parser import NFIELDS
from sshvfs.vfs.cache.walks import WalkDetector
from sshvfs.vfs.types import Entry

pytestmark = pytest.mark.skipif(shutil.which("find") is None, reason="needs find")

SHELLS = [
    sh
    for sh in ("/bin/sh", "/bin/bash", "/bin/dash", "/bin/zsh", "/bin/ksh", "/bin/mksh")
    if os.path.exists(sh)
]

HOSTILE = [
    b"plain",
    b"with space",
    b" ",
    b"trailing space ",
    b"new\nline",
    b"\n",
    b"a -> b",
    b"-leading-dash",
    b"-n",
    b"--",
    b"'single'",
    b"'",
    b'"double"',
    b"$(touch canary)",
    b"`touch canary`",
    b"'; touch canary; '",
    b"'; rm -rf ~'",
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
]


@pytest.fixture(autouse=True, params=["native", "python"])
def parser_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the C fast path of the parser and without it."""
    if request.param == "native":
        assert lp.native(), "the C parser (sshvfs/vfs/_findrecords.c) is not built: see setup.py"
    else:
        monkeypatch.setattr(lp, "_native", None)
    return str(request.param)


def _env(home: Path, path: str | None = None) -> dict[str, str]:
    # a fake HOME: if quoting ever broke, "rm -rf ~" would hit this, not the real one
    return {"HOME": str(home), "PATH": path if path is not None else os.environ["PATH"]}


def run_sh(
    command: bytes, cwd: Path, shell: str = "/bin/sh", path: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    (home / "precious").touch()
    done = subprocess.run(
        [shell.encode(), b"-c", command],
        cwd=cwd,
        env=_env(home, path),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (home / "precious").exists()
    assert not (cwd / "canary").exists()
    return done


# --------------------------------------------------------------------------- quote


def test_quote_basics() -> None:
    assert quote(b"abc") == b"'abc'"
    assert quote(b"") == b"''"
    assert quote(b"a'b") == b"'a'\"'\"'b'"
    assert quote(b"/x/-foo") == b"'/x/-foo'"
    with pytest.raises(ValueError):
        quote(b"a\0b")


@pytest.mark.parametrize("shell", SHELLS)
def test_quote_round_trips_through_sh(tmp_path: Path, shell: str) -> None:
    rng = random.Random(1234)
    names = list(HOSTILE) + [b""]
    names += [bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 40))) for _ in range(300)]
    command = b"printf '%s\\0' " + b" ".join(quote(n) for n in names)
    done = run_sh(command, tmp_path, shell)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(b"\0")[:-1] == names
    assert os.listdir(tmp_path) == ["home"]


# --------------------------------------------------------------------------- commands


def test_command_shapes() -> None:
    cmd = listing_command(b"/srv/-foo")
    assert cmd == (
        b"LC_ALL=C find -- '/srv/-foo/.' -mindepth 1 -maxdepth 1 -printf '" + FIND_FORMAT + b"'"
    )
    assert b"2>" not in cmd
    assert listing_command(b"/srv/") == listing_command(b"/srv")
    assert b"'/.'" in listing_command(b"/")
    assert b"-maxdepth" not in tree_command(b"/srv", None)
    assert b"-maxdepth 3" in tree_command(b"/srv", 3)
    for bad in (b"relative", b"", b"-foo"):
        with pytest.raises(ValueError):
            listing_command(bad)
        with pytest.raises(ValueError):
            tree_command(bad, None)
    with pytest.raises(ValueError):
        listing_command(b"/a\0b")
    with pytest.raises(ValueError):
        tree_command(b"/srv", 0)


@pytest.mark.parametrize("shell", SHELLS)
def test_probe_works_locally(tmp_path: Path, shell: str) -> None:
    done = run_sh(probe_command(), tmp_path, shell)
    assert done.returncode == 0, done.stderr
    assert parse_probe(done.stdout)


def test_parse_probe_rejects_noise() -> None:
    good = b"sshvfs-ok d \\\\ '\0"
    assert parse_probe(good)
    assert not parse_probe(b"")
    assert not parse_probe(b"Welcome to host!\n" + good)
    assert not parse_probe(good + b"\n")
    assert not parse_probe(b"sshvfs-ok d \\ '\0")  # a shell that ate backslashes


def test_probe_without_gnu_find(tmp_path: Path) -> None:
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    fake = fakebin / "find"
    fake.write_text("#!/bin/sh\necho 'find: unrecognized: -printf' >&2\nexit 1\n")
    fake.chmod(0o755)
    done = run_sh(probe_command(), tmp_path, path=str(fakebin))
    assert not parse_probe(done.stdout)
    err = error_from_exit(done.returncode, done.stderr, b"/")
    assert err.errno == errno.ENOTSUP
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_sh(probe_command(), tmp_path, path=str(empty))
    assert done.returncode == 127 and not parse_probe(done.stdout)
    assert error_from_exit(done.returncode, done.stderr, b"/").errno == errno.ENOTSUP


# --------------------------------------------------------------------------- real listings


def _hostile_tree(tmp_path: Path) -> bytes:
    """A directory (itself hostile-named) full of hostile entries; returns its path."""
    top = os.fsencode(tmp_path) + b"/top $(touch canary) '\n\xff" + b"/-foo"
    os.makedirs(top)
    for name in HOSTILE:
        with open(os.path.join(top, name), "wb") as f:
            f.write(name)
    os.chmod(os.path.join(top, b"plain"), 0o4755)
    os.chmod(os.path.join(top, b"-n"), 0o2750)
    os.chmod(os.path.join(top, b"--"), 0)
    os.link(os.path.join(top, b"plain"), os.path.join(top, b"hard link"))
    os.symlink(b"../$(touch canary)\n -> `x`\xff'\"\\", os.path.join(top, b"link -> x"))
    os.symlink(b"/", os.path.join(top, b"root link"))
    os.mkfifo(os.path.join(top, b"fifo\n"))
    cwd = os.getcwd()
    os.chdir(top)  # AF_UNIX paths are short: bind relative to the directory
    try:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(b"sock 'et")
        sock.close()
    finally:
        os.chdir(cwd)
    sub = os.path.join(top, b"sub dir\n-> x")
    os.makedirs(os.path.join(sub, b"\xffdeep"))
    for name in (b"-inner $(touch canary)", b"\xffdeep/leaf\n"):
        open(os.path.join(sub, name), "wb").close()
    os.chmod(sub, 0o1777)
    # sub-second (and one pre-epoch) times, children before parents
    paths = [os.path.join(d, n) for d, ds, fs in os.walk(top) for n in ds + fs]
    for i, path in enumerate(sorted(paths, key=len, reverse=True)):
        mtime = 1_700_000_000_123_456_789 + i * 1_000_003_007
        atime = 1_600_000_000_987_654_321 - i * 7
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)
    # pre-epoch: find prints "-2.5000000000" (tv_sec -2 + tv_nsec) and "-1.9999999990"
    os.utime(os.path.join(top, b"a -> b"), ns=(-1, -1_500_000_000))
    return top


def _check(top: bytes, rel: bytes, entry: Entry, check_atime: bool = True) -> None:
    full = os.path.join(top, rel)
    st = os.lstat(full)
    assert entry.name == os.path.basename(rel)
    a = entry.attrs
    assert a.mode == st.st_mode, (rel, oct(a.mode), oct(st.st_mode))
    assert (a.size, a.uid, a.gid, a.nlink) == (
        st.st_size,
        st.st_uid,
        st.st_gid,
        st.st_nlink,
    )
    # GNU find prints tv_nsec in full, so the comparison is exact to the nanosecond
    assert a.mtime_ns == st.st_mtime_ns, rel
    # reading a file or a symlink (find's %l) may change its atime, never its ctime
    assert a.ctime_ns == st.st_ctime_ns, rel
    assert a.ino == st.st_ino, rel
    # find's %l reads each symlink after lstat-ing it: that may bump the link's atime
    if check_atime and not stat.S_ISLNK(st.st_mode):
        assert a.atime_ns == st.st_atime_ns, rel
    if stat.S_ISLNK(st.st_mode):
        assert entry.target == os.readlink(full)
    else:
        assert entry.target is None


@pytest.mark.parametrize("shell", SHELLS)
def test_listing_of_hostile_directory(tmp_path: Path, shell: str) -> None:
    top = _hostile_tree(tmp_path)
    done = run_sh(listing_command(top), tmp_path, shell)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    entries = parse_listing(done.stdout)
    rels = [rel for rel, _ in entries]
    assert sorted(rels) == sorted(os.listdir(top))
    assert len(rels) == len(HOSTILE) + 6
    for rel, entry in entries:
        _check(top, rel, entry)
    by_name = dict(entries)
    assert by_name[b"plain"].attrs.mode == stat.S_IFREG | 0o4755
    assert by_name[b"plain"].attrs.nlink == 2
    assert by_name[b"hard link"].attrs.ino == by_name[b"plain"].attrs.ino
    assert len({e.attrs.ino for e in by_name.values()}) == len(by_name) - 1
    assert by_name[b"plain"].size == 5
    assert by_name[b"--"].attrs.mode == stat.S_IFREG
    assert stat.S_ISFIFO(by_name[b"fifo\n"].attrs.mode)
    assert stat.S_ISSOCK(by_name[b"sock 'et"].attrs.mode)
    assert by_name[b"sub dir\n-> x"].attrs.mode == stat.S_IFDIR | 0o1777
    assert by_name[b"root link"].target == b"/"
    assert -1_500_000_000 in {e.mtime_ns for e in by_name.values()}


def test_find_prints_nanoseconds(tmp_path: Path) -> None:
    top = _hostile_tree(tmp_path)
    stdout = run_sh(listing_command(top), tmp_path).stdout
    fields = stdout.split(b"\0")[:-1]
    assert len(fields) % NFIELDS == 0 and fields[NFIELDS - 1 :: NFIELDS] == [b"/"] * (
        len(fields) // NFIELDS
    )
    times = [f for i, f in enumerate(fields) if i % NFIELDS in (4, 5, 6)]  # %T@ %A@ %C@
    assert times and all(re.fullmatch(rb"-?\d+\.\d{9,}", t) for t in times), times[:4]
    inos = fields[10::NFIELDS]  # %i
    assert inos and all(re.fullmatch(rb"\d+", i) for i in inos), inos[:4]


@pytest.mark.parametrize("shell", SHELLS)
def test_tree_of_hostile_directory(tmp_path: Path, shell: str) -> None:
    top = _hostile_tree(tmp_path)
    done = run_sh(tree_command(top, None), tmp_path, shell)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    entries = parse_listing(done.stdout)
    expected = {
        os.path.relpath(os.path.join(d, n), top) for d, ds, fs in os.walk(top) for n in ds + fs
    }
    assert {rel for rel, _ in entries} == expected
    assert len(entries) == len(expected)
    seen: set[bytes] = set()
    for rel, entry in entries:
        parent = os.path.dirname(rel)
        assert parent == b"" or parent in seen  # pre-order: parents come first
        seen.add(rel)
        # find reads subdirectories, which may bump their atime after printing it
        _check(top, rel, entry, check_atime=not entry.attrs.is_dir)
    assert b"sub dir\n-> x/\xffdeep/leaf\n" in seen

    one = parse_listing(run_sh(tree_command(top, 1), tmp_path).stdout)
    assert sorted(r for r, _ in one) == sorted(os.listdir(top))
    two = parse_listing(run_sh(tree_command(top, 2), tmp_path).stdout)
    assert max(r.count(b"/") for r, _ in two) == 1


def test_listing_through_symlink_and_root(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").touch()
    (tmp_path / "alias").symlink_to(real)
    done = run_sh(listing_command(os.fsencode(tmp_path / "alias")), tmp_path)
    assert [rel for rel, _ in parse_listing(done.stdout)] == [b"f"]
    done = run_sh(listing_command(b"/"), tmp_path)
    assert done.returncode == 0
    assert sorted(r for r, _ in parse_listing(done.stdout)) == sorted(os.listdir(b"/"))


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_char_device(tmp_path: Path) -> None:
    done = run_sh(listing_command(b"/dev"), tmp_path)
    null = dict(parse_listing(done.stdout))[b"null"]
    assert null.attrs.mode == os.lstat("/dev/null").st_mode
    assert stat.S_ISCHR(null.attrs.mode)


def test_real_failures_map_to_errno(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    cases = [
        (tmp_path / "missing", errno.ENOENT, FileNotFoundError),
        (tmp_path / "file", errno.ENOTDIR, NotADirectoryError),
        (tmp_path / "dangling", errno.ENOENT, FileNotFoundError),
    ]
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked"
        locked.mkdir(mode=0)
        cases.append((locked, errno.EACCES, PermissionError))
    for path, code, cls in cases:
        done = run_sh(listing_command(os.fsencode(path)), tmp_path)
        assert done.returncode != 0 and done.stdout == b""
        err = error_from_exit(done.returncode, done.stderr, os.fsencode(path))
        assert err.errno == code and isinstance(err, cls), (path, err)
        assert isinstance(err, BulkCommandError)
        assert done.stderr.decode().strip() in str(err)


# --------------------------------------------------------------------------- parser


def _capture(tmp_path: Path) -> bytes:
    small = tmp_path / "small"
    small.mkdir()
    for name in (b"a\nb -> c", b"\xff'$(x)"):
        open(os.path.join(os.fsencode(small), name), "wb").close()
    os.symlink(b"t", os.path.join(os.fsencode(small), b"l"))
    stdout = run_sh(listing_command(os.fsencode(small)), tmp_path).stdout
    assert stdout.count(b"\0") == 3 * 13
    return stdout


def test_streaming_any_split(tmp_path: Path) -> None:
    data = _capture(tmp_path)
    whole = parse_listing(data)
    assert len(whole) == 3
    for cut in range(len(data) + 1):
        parser = ListingParser()
        got = parser.feed(data[:cut]) + parser.feed(data[cut:])
        parser.close()
        assert got == whole, cut
    for cut in range(0, len(data), 7):
        parser = ListingParser()
        got = parser.feed(data[:cut]) + parser.feed(data[cut : cut + 13])
        got += parser.feed(data[cut + 13 :])
        parser.close()
        assert got == whole, cut
    parser = ListingParser()
    got = [e for i in range(len(data)) for e in parser.feed(data[i : i + 1])]
    parser.close()
    assert got == whole and parser.records == 3
    with pytest.raises(ValueError):
        parser.feed(b"x")


def test_every_truncation_is_detected(tmp_path: Path) -> None:
    data = _capture(tmp_path)
    whole = parse_listing(data)
    ok = 0
    for cut in range(len(data)):
        prefix = data[:cut]
        nuls = prefix.count(b"\0")
        if nuls % 13 == 0 and (cut == 0 or prefix.endswith(b"\0")):
            assert parse_listing(prefix) == whole[: nuls // 13]
            ok += 1
        else:
            with pytest.raises(BulkParseError) as info:
                parse_listing(prefix)
            assert info.value.errno == errno.EIO
            assert "truncated" in str(info.value) or "record" in str(info.value)
    assert ok == 3  # empty output plus after records 1 and 2


GOOD = [b"d/n", b"f", b"644", b"10", b"1.5", b"2", b"3.25"]
GOOD += [b"1000", b"1000", b"1", b"4242", b"", b"/"]
#: the fields of FIND_FORMAT, in order
NAMES = ["path", "kind", "mode", "size", "mtime", "atime", "ctime"]
NAMES += ["uid", "gid", "nlink", "ino", "target", "marker"]
#: GOOD as find 4.x prints it (10 fraction digits): what the fast paths take
FIND4 = [*GOOD[:4], b"1.5000000000", b"2.0000000000", b"3.2500000000", *GOOD[7:]]


def _record(**changes: bytes) -> bytes:
    assert set(changes) <= set(NAMES), changes
    fields = [changes.get(n, v) for n, v in zip(NAMES, GOOD, strict=True)]
    return b"\0".join(fields) + b"\0"


def test_record_shape_matches_find_format() -> None:
    assert len(GOOD) == len(NAMES) == len(FIND4) == NFIELDS == 13
    directives = FIND_FORMAT.split(b"\\0")
    assert directives[-1] == b""  # every field NUL-terminated, the marker too
    assert dict(zip(NAMES, directives[:-1], strict=True)) == {
        "path": b"%P",
        "kind": b"%y",
        "mode": b"%m",
        "size": b"%s",
        "mtime": b"%T@",
        "atime": b"%A@",
        "ctime": b"%C@",
        "uid": b"%U",
        "gid": b"%G",
        "nlink": b"%n",
        "ino": b"%i",
        "target": b"%l",
        "marker": b"/",
    }


def test_parse_synthetic_record() -> None:
    [(rel, entry)] = parse_listing(_record())
    assert rel == b"d/n" and entry.name == b"n" and entry.target is None
    a = entry.attrs
    assert a.mode == stat.S_IFREG | 0o644 and a.size == 10
    assert (a.mtime_ns, a.atime_ns, a.ctime_ns) == (1_500_000_000, 2_000_000_000, 3_250_000_000)
    assert (a.uid, a.gid, a.nlink, a.ino) == (1000, 1000, 1, 4242)
    assert parse_listing(b"") == []
    kinds = {
        b"c": stat.S_IFCHR,
        b"b": stat.S_IFBLK,
        b"s": stat.S_IFSOCK,
        b"D": 0,
        b"U": 0,
    }
    for kind, bits in kinds.items():
        assert parse_listing(_record(kind=kind))[0][1].attrs.mode == bits | 0o644
    link = parse_listing(_record(kind=b"l", target=b"x\ny -> z"))[0][1]
    assert link.target == b"x\ny -> z"
    assert parse_listing(_record(kind=b"l", target=b""))[0][1].target is None


@pytest.mark.parametrize("resolution", [1, 10**9])
def test_ctime_and_ino_come_through(resolution: int) -> None:
    """%C@ and %i land in Attrs.ctime_ns and Attrs.ino, in every parser path: the C one
    and the batch one (find 4.x times), the record one (other times), at either resolution."""

    def floor(ns: int) -> int:
        return ns - ns % resolution

    cases = [
        # (ctime field, expected ns, ino field, expected ino)
        (b"1700000001.2500000000", 1_700_000_001_250_000_000, b"123456789", 123_456_789),
        (b"1.5000000000", 1_500_000_000, b"0", 0),  # ctime == mtime
        (b"2.0000000000", 2_000_000_000, b"0042", 42),  # ctime == atime
        (b"-2.5000000000", -1_500_000_000, b"9" * 19, 10**19 - 1),  # pre-epoch; C's limit
        (b"9223372035.9999999999", 9_223_372_035_999_999_999, b"1" * 20, int(b"1" * 20)),
        (b"7.25", 7_250_000_000, b"18446744073709551615", 2**64 - 1),  # record path
        (b"8", 8_000_000_000, b"7", 7),
    ]
    data = b"".join(
        _record(path=b"p%d" % i, mtime=FIND4[4], atime=FIND4[5], ctime=c, ino=ino)
        for i, (c, _, ino, _) in enumerate(cases)
    )
    # in one chunk, and record by record (so each record takes the C path on its own)
    whole = ListingParser(resolution).feed(data)
    parser = ListingParser(resolution)
    apart = [e for i in range(len(data)) for e in parser.feed(data[i : i + 1])]
    parser.close()
    for got in (whole, apart):
        assert [p for p, _ in got] == [b"p%d" % i for i in range(len(cases))]
        for (_, entry), (_, ns, _, ino) in zip(got, cases, strict=True):
            a = entry.attrs
            assert (a.ctime_ns, a.ino) == (floor(ns), ino), entry
            assert (a.mtime_ns, a.atime_ns) == (floor(1_500_000_000), floor(2_000_000_000))
            assert (a.size, a.uid, a.gid, a.nlink) == (10, 1000, 1000, 1)
    # the batch path and the reference record path give the same
    fields = data.split(b"\0")[:-1]
    one_by_one = [
        lp._parse_record(fields[i : i + NFIELDS], 0) for i in range(0, len(fields), NFIELDS)
    ]
    assert [(p, e.attrs.ctime_ns, e.attrs.ino) for p, e in one_by_one] == [
        (b"p%d" % i, ns, ino) for i, (_, ns, _, ino) in enumerate(cases)
    ]
    batch = lp._fast_batch(fields[: 5 * NFIELDS], resolution)  # the find 4.x times
    assert batch == [(p, lp._floored(e, resolution)) for p, e in one_by_one[:5]]


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        (b"1700000000.1234567890", 1_700_000_000_123_456_789),
        (b"1700000000.1234567899", 1_700_000_000_123_456_789),  # truncated, not rounded
        (b"1700000000", 1_700_000_000_000_000_000),
        (b"0.0000000050", 5),
        (b"1.5", 1_500_000_000),
        (b"-2.5000000000", -1_500_000_000),  # tv_sec=-2, tv_nsec=5e8
        (b"-1.9999999990", -1),
        (b"9999999999999.9999999990", 9_999_999_999_999_999_999_999),
    ],
)
@pytest.mark.parametrize("field", ["mtime", "atime", "ctime"])
def test_time_conversion_is_exact(text: bytes, ns: int, field: str) -> None:
    attrs = parse_listing(_record(**{field: text}))[0][1].attrs
    assert getattr(attrs, field + "_ns") == ns
    others = {"mtime": 1_500_000_000, "atime": 2_000_000_000, "ctime": 3_250_000_000}
    del others[field]  # the other times are GOOD's, untouched
    assert {f: getattr(attrs, f + "_ns") for f in others} == others
    # all three the same (the C path then shares one int object): each still exact
    same = parse_listing(_record(mtime=text, atime=text, ctime=text))[0][1].attrs
    assert (same.mtime_ns, same.atime_ns, same.ctime_ns) == (ns, ns, ns)


@pytest.mark.parametrize(
    "bad",
    [
        {"marker": b"x"},
        {"path": b""},
        {"path": b"/etc/passwd"},
        {"path": b"a//b"},
        {"path": b"a/"},
        {"path": b"../x"},
        {"path": b"a/./b"},
        {"kind": b"x"},
        {"kind": b"ff"},
        {"kind": b""},
        {"mode": b"9"},
        {"mode": b"17777"},
        {"mode": b""},
        {"mode": b"-1"},
        {"size": b"12a"},
        {"size": b"-5"},
        {"size": b" 5"},
        {"size": b"+5"},
        {"size": b"1_0"},
        {"size": b""},
        {"size": b"\xd9\xa3"},
        {"uid": b"x"},
        {"gid": b"1.0"},
        {"nlink": b""},
        {"mtime": b"1.2.3"},
        {"mtime": b"abc"},
        {"mtime": b""},
        {"atime": b"1."},
        {"atime": b".5"},
        {"atime": b"1e9"},
        {"ctime": b"1.2.3"},
        {"ctime": b""},
        {"ctime": b"-"},
        {"ctime": b"1."},
        {"ctime": b"1e9"},
        {"ctime": b"1.5000000000 "},
        {"ino": b"x"},
        {"ino": b""},
        {"ino": b"-1"},
        {"ino": b"12a"},
        {"ino": b"1.0"},
        {"ino": b"+5"},
        {"ino": b"\xd9\xa3"},
        {"ino": b"1" * 31},
        {"target": b"t"},
    ],
)
def test_malformed_records_raise(bad: dict[str, bytes]) -> None:
    with pytest.raises(BulkParseError) as info:
        parse_listing(_record() + _record(**bad))
    assert isinstance(info.value, OSError) and info.value.errno == errno.EIO
    assert "record 1" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mode", b"9", "mode is not octal permission bits"),
        ("size", b"12a", "size is not a decimal number"),
        ("mtime", b"1.2.3", "mtime is not a find %T@ time"),
        ("atime", b"1e9", "atime is not a find %T@ time"),
        ("ctime", b"1.2.3", "ctime is not a find %T@ time"),
        ("ctime", b"", "ctime is not a find %T@ time"),
        ("uid", b"x", "uid is not a decimal number"),
        ("gid", b"1.0", "gid is not a decimal number"),
        ("nlink", b"", "nlink is not a decimal number"),
        ("ino", b"x", "inode number is not a decimal number"),
        ("ino", b"-1", "inode number is not a decimal number"),
        ("ino", b"", "inode number is not a decimal number"),
    ],
)
def test_malformed_field_is_named(field: str, value: bytes, message: str) -> None:
    """Whichever path declines first, the error names the field and shows its value."""
    good = _record(path=b"a", mtime=FIND4[4], atime=FIND4[5], ctime=FIND4[6])
    bad = _record(**{field: value})
    for data, index in ((bad, 0), (good + bad + good, 1), (good * 3 + bad, 3)):
        with pytest.raises(BulkParseError) as info:
            parse_listing(data)
        assert info.value.errno == errno.EIO
        assert f"record {index}: {message}: {value!r}" in str(info.value)


def test_wrong_field_counts() -> None:
    extra = _record()[:-1] + b"\0extra\0"
    with pytest.raises(BulkParseError, match="marker"):
        parse_listing(extra + _record())
    for fields in (10, 11, 12):  # 11: a record of the former format (no ctime, no ino)
        short = b"\0".join([*GOOD[: fields - 1], b"/"]) + b"\0"
        with pytest.raises(BulkParseError):
            parse_listing(short + _record())
        with pytest.raises(BulkParseError, match="truncated"):
            parse_listing(short)
    old = [*GOOD[:6], *GOOD[7:10], *GOOD[11:]]  # path .. atime, uid, gid, nlink, target, /
    assert len(old) == 11
    with pytest.raises(BulkParseError, match="marker"):
        parse_listing((b"\0".join(old) + b"\0") * 13)  # whole new-format records of them
    with pytest.raises(BulkParseError, match="truncated"):
        parse_listing(_record() + b"d/n")
    with pytest.raises(BulkParseError, match="too long"):
        ListingParser().feed(b"x" * (2 << 20))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "stderr", "code"),
    [
        (1, b"find: '/x/.': No such file or directory\n", errno.ENOENT),
        (1, b"find: '/x/.': Permission denied\n", errno.EACCES),
        (1, b"find: '/x/.': Not a directory\n", errno.ENOTDIR),
        (1, b"find: '/x/.': Too many levels of symbolic links\n", errno.ELOOP),
        (127, b"sh: 1: find: not found\n", errno.ENOTSUP),
        (127, b"bash: line 1: find: command not found\n", errno.ENOTSUP),
        (127, b"", errno.ENOTSUP),
        (126, b"sh: 1: find: Permission denied\n", errno.ENOTSUP),
        (1, b"LC_ALL=C: Command not found.\n", errno.ENOTSUP),
        (1, b"find: unrecognized: -printf\n", errno.ENOTSUP),
        (1, b"find: unknown predicate `-printf'\n", errno.ENOTSUP),
        (1, b"find: invalid predicate `-printf'\n", errno.ENOTSUP),
        (1, b"find: -printf: unknown primary or operator\n", errno.ENOTSUP),
        # a name that contains a marker cannot fool the end-of-line match
        (1, b"find: '/-printf/.': No such file or directory\n", errno.ENOENT),
        (1, b"find: '/Permission denied/.': Not a directory\n", errno.ENOTDIR),
        (1, b"find: '/x/.': Input/output error\n", errno.EIO),
        (1, b"", errno.EIO),
        (None, b"", errno.EIO),
        (255, b"\xff\xfe garbage", errno.EIO),
    ],
)
def test_error_from_exit(status: int | None, stderr: bytes, code: int) -> None:
    err = error_from_exit(status, stderr, b"/x")
    assert isinstance(err, BulkCommandError) and isinstance(err, OSError)
    assert err.errno == code
    assert err.filename == "/x"
    assert err.exit_status == status and err.stderr == stderr
    assert stderr.decode(errors="replace").strip() in str(err)


def test_error_classes_and_truncation() -> None:
    assert isinstance(error_from_exit(1, b"x: No such file or directory", b"/"), FileNotFoundError)
    assert isinstance(error_from_exit(1, b"x: Permission denied", b"/"), PermissionError)
    assert isinstance(error_from_exit(1, b"x: Not a directory", b"/"), NotADirectoryError)
    err = error_from_exit(1, b"find: " + b"y" * 10_000 + b": Permission denied", b"/\xff")
    assert err.errno == errno.EACCES
    assert "find: yyy" in str(err) and len(str(err)) < 700
    assert err.filename == os.fsdecode(b"/\xff")
    plain = BulkCommandError(2, b"boom")
    assert plain.errno == errno.EIO and "boom" in str(plain) and "exit status 2" in str(plain)


# --------------------------------------------------------------------------- fast path, framing


def test_batch_and_record_parsers_agree(tmp_path: Path) -> None:
    top = _hostile_tree(tmp_path)
    for command in (listing_command(top), tree_command(top, None)):
        fields = run_sh(command, tmp_path).stdout.split(b"\0")[:-1]
        one_by_one = [
            lp._parse_record(fields[i : i + NFIELDS], 0) for i in range(0, len(fields), NFIELDS)
        ]
        assert one_by_one and lp._fast_batch(fields, 1) == one_by_one
        assert all(e.attrs.ino > 0 and e.attrs.ctime_ns > 0 for _, e in one_by_one)
        seconds = lp._fast_batch(fields, 10**9)
        assert seconds == [(p, lp._floored(e, 10**9)) for p, e in one_by_one]
    # every single-field corruption: the batch declines (or agrees), one by one raises
    assert lp._fast_batch([b"a", *FIND4[1:]], 1) == [lp._parse_record([b"a", *FIND4[1:]], 0)]
    for base in (GOOD, FIND4):  # FIND4: times the batch takes, so it must judge the rest
        for i in range(len(base)):
            for bad in (b"", b"x", b"-1", b"\xd9\xa3", b" 1", b"1" * 31, b"77777", b"9", b"/"):
                record = list(base)
                record[i] = bad
                fields = [b"a", *base[1:], *record]
                try:
                    expected = [lp._parse_record(fields[:NFIELDS], 0), lp._parse_record(record, 1)]
                except BulkParseError:
                    assert lp._fast_batch(fields, 1) is None, (i, bad)
                else:
                    assert lp._fast_batch(fields, 1) in (None, expected), (i, bad)
    for path in (b"a//b", b"/a", b"a/", b"./a", b"a/./b", b"a/..", b"../a"):
        assert lp._fast_batch([path, *GOOD[1:]], 1) is None
        assert lp._fast_batch([path, *FIND4[1:]], 1) is None
    data = _record(path=b"a/b/c", mtime=FIND4[4], atime=FIND4[5], ctime=b"3.0000000070", ino=b"9")
    batch = lp._fast_batch(data.split(b"\0")[:-1], 1)
    assert batch == parse_listing(data) and batch is not None
    assert (batch[0][1].attrs.ctime_ns, batch[0][1].attrs.ino) == (3_000_000_007, 9)


def test_time_resolution_floors() -> None:
    parser = ListingParser(time_resolution_ns=10**9)
    [(_, entry)] = parser.feed(
        _record(mtime=b"1700000000.9999999990", atime=b"-2.5000000000", ctime=b"-1.9999999990")
    )
    assert entry.mtime_ns == 1_700_000_000 * 10**9
    assert entry.attrs.atime_ns == -2 * 10**9  # -1.5 s floors to tv_sec -2, as stat says
    assert entry.attrs.ctime_ns == -(10**9)  # -1 ns (tv_sec -1 + tv_nsec): tv_sec -1
    assert entry.attrs.ino == 4242  # not a time: never floored
    # find 4.x's 10 fraction digits take the batch path; anything else the record path
    [(_, odd)] = ListingParser(10**9).feed(
        _record(mtime=b"5.5", atime=b"-1.9999999990", ctime=b"-3.999")
    )
    assert (odd.mtime_ns, odd.attrs.atime_ns, odd.attrs.ctime_ns) == (
        5 * 10**9,
        -(10**9),
        -3 * 10**9,
    )
    assert odd.attrs.ino == 4242
    # a coarser resolution, on both paths
    for ctime in (b"1234.5678901230", b"1234.567890123"):
        [(_, ms)] = ListingParser(10**6).feed(_record(ctime=ctime))
        assert ms.attrs.ctime_ns == 1_234_567_000_000
    with pytest.raises(ValueError):
        ListingParser(time_resolution_ns=0)


@pytest.mark.parametrize("shell", SHELLS)
def test_framed_output_through_a_long_lived_shell(tmp_path: Path, shell: str) -> None:
    top = _hostile_tree(tmp_path)
    token = b"tok'en"
    lines = [
        listing_command(top) + b" </dev/null; " + bulk.end_command(token),
        listing_command(top + b"/missing") + b" </dev/null; " + bulk.end_command(token),
        b"exit 0",
    ]
    home = tmp_path / "home"
    home.mkdir()
    done = subprocess.run(
        [shell, "-s"],
        input=b"\n".join(lines) + b"\n",
        cwd=tmp_path,
        env=_env(home),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert not (tmp_path / "canary").exists()
    first, rest = done.stdout.split(bulk.end_record(0), 1)
    parser = ListingParser(framed=True)
    entries = parser.feed(first + bulk.end_record(0))
    assert parser.exit_status == 0 and len(entries) == len(os.listdir(top))
    assert rest == bulk.end_record(1)
    segments = done.stderr.split(b"\n" + token + b"\n")
    assert segments[0] == b"" and b"No such file" in segments[1] and segments[2] == b""
    # chunked anywhere, the end record is found and nothing after it is accepted
    data = first + bulk.end_record(0)
    for cut in range(0, len(data), 97):
        parser = ListingParser(framed=True)
        got = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert got == entries and parser.exit_status == 0
        parser.close()
    parser = ListingParser(framed=True)
    with pytest.raises(BulkParseError, match="after the end record"):
        parser.feed(bulk.end_record(0) + _record())
    parser = ListingParser(framed=True)
    parser.feed(_record())
    with pytest.raises(BulkParseError, match="truncated"):
        parser.close()
    with pytest.raises(BulkParseError, match="end record"):
        ListingParser(framed=True).feed(b"\0x" + b"\0" * 11 + b"/\0")
    with pytest.raises(BulkParseError, match="end record"):  # a field too many
        ListingParser(framed=True).feed(b"\x000" + b"\0" * 10 + b"x\0/\0")
    parser = ListingParser(framed=True)  # the former end record: 2 fields short
    assert parser.feed(b"\x000" + b"\0" * 9 + b"/\0") == [] and parser.exit_status is None
    with pytest.raises(BulkParseError, match="truncated"):
        parser.close()
    with pytest.raises(BulkParseError):  # unframed: an empty path is just bad
        ListingParser().feed(bulk.end_record(0))


def test_end_record_has_a_record_s_fields() -> None:
    for status in (0, 1, 127, 255):
        record = end_record(status)
        fields = record.split(b"\0")
        assert fields[-1] == b""  # NUL-terminated
        assert fields[:-1] == [b"", str(status).encode()] + [b""] * (NFIELDS - 3) + [b"/"]
        assert record == b"\0" + str(status).encode() + b"\0" * 11 + b"/\0"
        assert end_status(record) == status
        parser = ListingParser(framed=True)
        assert parser.feed(record) == [] and parser.exit_status == status
        parser.close()
    for bad in (
        b"",
        b"/\0",
        b"\x000" + b"\0" * 9 + b"/\0",  # the former 11-field record
        b"\x000" + b"\0" * 12 + b"/\0",
        b"0" + b"\0" * 11 + b"/\0",
        b"\0" + b"\0" * 11 + b"/\0",  # no status
        b"\0x" + b"\0" * 11 + b"/\0",
        b"\0-1" + b"\0" * 11 + b"/\0",
        b"\0\xd9\xa3" + b"\0" * 11 + b"/\0",
        b"\x000" + b"\0" * 11 + b"/\0x",
        end_record(0) + end_record(0),
    ):
        assert end_status(bad) is None, bad


@pytest.mark.parametrize("status", [0, 3, 127])
def test_end_command_prints_the_end_record(tmp_path: Path, status: int) -> None:
    done = run_sh(b"(exit %d); " % status + bulk.end_command(b"t'ok"), tmp_path)
    assert done.returncode == 0
    assert done.stdout == end_record(status) and end_status(done.stdout) == status
    assert done.stderr == b"\nt'ok\n"


# --------------------------------------------------------------------------- policy


def test_policy_modes() -> None:
    assert not lpolicy.ListingPolicy("sftp").exec_first(b"/")
    assert not lpolicy.ListingPolicy("sftp").switch(10**6, 100.0, 10**9)
    assert lpolicy.ListingPolicy("exec").exec_first(b"/")
    assert not lpolicy.ListingPolicy("exec").switch(10**6, 100.0)  # already exec-first
    with pytest.raises(ValueError):
        lpolicy.ListingPolicy("fast")
    with pytest.raises(ValueError):
        lpolicy.ListingPolicy("auto", -1)


def test_policy_fixed_threshold() -> None:
    policy = lpolicy.ListingPolicy("auto", 500)
    assert not policy.switch(400, 10.0)
    assert policy.switch(500, 0.0)
    assert policy.switch(100, 0.0, st_size=500 * lpolicy.BYTES_PER_ENTRY)
    assert not policy.exec_first(b"/d")
    policy.note_size(b"/d", 2000 * lpolicy.BYTES_PER_ENTRY)
    assert policy.exec_first(b"/d") and policy.size_hint(b"/d") is not None
    policy.note_size(b"/d", 4096)  # it shrank (or was replaced): forget
    assert not policy.exec_first(b"/d") and policy.size_hint(b"/d") is None


def test_policy_adaptive() -> None:
    policy = lpolicy.ListingPolicy()
    policy.exec_latency, policy.sftp_cost = 0.1, 15e-6
    small = lpolicy.MIN_EXEC_ENTRIES - 100
    assert not policy.switch(small, 60.0)  # never for small directories, however slow
    assert not policy.switch(2000, 0.05)
    assert policy.switch(2000, 0.1)  # SFTP has now cost as long as one command
    # st_size says 100,000 entries: 1.5 s of SFTP against 0.1 s: switch at once
    assert policy.switch(200, 0.003, st_size=100_000 * 29)
    assert not policy.switch(200, 0.003, st_size=5_000 * 29)  # 75 ms < 100 ms
    policy.note_size(b"/huge", 100_000 * 29)
    assert policy.exec_first(b"/huge")
    policy.exec_latency = 2.0  # a very slow server: huge is relative
    assert not policy.exec_first(b"/huge")
    for _ in range(20):
        policy.learn_sftp(1000, 1.0)  # 1 ms an entry (a far-away server)
    assert policy.sftp_cost == pytest.approx(1e-3, rel=0.01)
    assert policy.exec_first(b"/huge")
    policy.learn_sftp(10, 100.0)  # small listings teach nothing
    assert policy.sftp_cost == pytest.approx(1e-3, rel=0.01)


def test_policy_hints_are_bounded() -> None:
    policy = lpolicy.ListingPolicy("auto", 100, max_hints=3)
    for i in range(10):
        policy.note_size(b"/%d" % i, 10**6)
    assert [policy.size_hint(b"/%d" % i) for i in range(10)] == [None] * 7 + [10**6] * 3


def test_estimated_entries() -> None:
    assert lpolicy.estimated_entries(2_854_912) == 89_216  # ext4, 100,000 short names
    assert lpolicy.estimated_entries(4096) == 128
    assert lpolicy.estimated_entries(-1) == 0


# --------------------------------------------------------------------------- walk detection


def test_walk_detector_finds_a_depth_first_walk() -> None:
    walk = WalkDetector(min_dirs=3, window=2.0, cooldown=30.0)
    assert walk.listed(b"/src", 0.0) is None
    assert walk.listed(b"/src/a", 0.1) is None
    assert walk.listed(b"/src/a/x", 0.2) == b"/src"
    # the rest of the walk is covered by that prefetch
    assert walk.listed(b"/src/b", 0.3) is None
    assert walk.listed(b"/src/b/y", 0.4) is None
    assert walk.listed(b"/src/b/y/z", 0.5) is None


def test_walk_detector_long_walks_stay_one_walk() -> None:
    walk = WalkDetector(min_dirs=4, window=1.0, cooldown=5.0)
    assert walk.listed(b"/", 0.0) is None
    assert walk.listed(b"/a", 0.5) is None
    assert walk.listed(b"/a/deep", 1.4) is None  # listing below /a keeps / alive too
    assert walk.listed(b"/b", 2.3) == b"/"  # / last active at 1.4: the same walk, 4 dirs


def test_walk_detector_ignores_unrelated_and_slow_listings() -> None:
    walk = WalkDetector(min_dirs=3, window=2.0)
    assert walk.listed(b"/a", 0.0) is None
    assert walk.listed(b"/b", 0.1) is None
    assert walk.listed(b"/c", 0.2) is None  # siblings listed one by one: no common walk
    assert walk.listed(b"/a", 0.3) is None  # a re-listing is not a new directory
    assert walk.listed(b"/a", 0.4) is None
    slow = WalkDetector(min_dirs=3, window=1.0)
    assert slow.listed(b"/p", 0.0) is None
    assert slow.listed(b"/p/q", 2.0) is None  # its parent's listing expired: a new walk
    assert slow.listed(b"/p/q/r", 2.5) is None
    assert slow.listed(b"/p/q/r/s", 3.0) == b"/p/q"


def test_walk_detector_cooldown_and_bounds() -> None:
    walk = WalkDetector(min_dirs=2, window=10.0, cooldown=5.0, max_tracked=3)
    assert walk.listed(b"/t", 0.0) is None
    assert walk.listed(b"/t/1", 0.1) == b"/t"
    assert walk.listed(b"/t", 1.0) is None
    assert walk.listed(b"/t/2", 1.1) is None  # within the cooldown
    for i in range(100):
        walk.listed(b"/other%d" % i, 2.0 + i / 1000)
    assert len(walk._recent) <= 3
    assert walk.listed(b"/t", 20.0) is None
    assert walk.listed(b"/t/3", 20.1) == b"/t"  # cooled down: reported again
    with pytest.raises(ValueError):
        WalkDetector(min_dirs=1)


def test_group_tree() -> None:
    records = parse_listing(
        _record(path=b"d", kind=b"d")
        + _record(path=b"d/e", kind=b"d")
        + _record(path=b"d/f")
        + _record(path=b"g")
    )
    group_tree = lister.group_tree
    assert {k: [e.name for e in v] for k, v in group_tree(b"/x", records).items()} == {
        b"/x": [b"d", b"g"],
        b"/x/d": [b"e", b"f"],
        b"/x/d/e": [],
    }
    assert set(group_tree(b"/", records)) == {b"/", b"/d", b"/d/e"}
    assert group_tree(b"/", []) == {b"/": []}
