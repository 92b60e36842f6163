"""sshvfs.execlist.parser: the C fast path against the Python parser, on the same bytes.

The C path may decline anything (the Python parser then takes the bytes), but what it
accepts it must convert exactly as Python does: these tests generate records near every
edge (times around the 64-bit limit and pre-epoch, numbers of 1 to 31 digits, hostile and
unclean paths, wrong field counts, the framed end record) and compare field by field.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshvfs.execlist import parser as lp
from sshvfs.execlist.parser import BulkParseError, ListingParser
from sshvfs.vfs.types import Attrs, Entry

pytestmark = pytest.mark.skipif(not lp.native(), reason="the C parser is not built")

GOOD = [b"n", b"f", b"644", b"10", b"1.5000000000", b"2.0000000000", b"3.2500000000"]
GOOD += [b"1000", b"1000", b"1", b"4242", b"", b"/"]
NAMES = ["path", "kind", "mode", "size", "mtime", "atime", "ctime"]
NAMES += ["uid", "gid", "nlink", "ino", "target", "marker"]
#: the shell's end record (see commands.end_record): an empty path, the status, then
#: empty fields up to the record's 13, the last the marker
END0 = b"\x000" + b"\0" * 11 + b"/\0"
END127 = b"\x00127" + b"\0" * 11 + b"/\0"

_digits = st.text("0123456789", min_size=0, max_size=31).map(str.encode)
_numbers = st.one_of(
    _digits,
    st.integers(0, 2**64 + 5).map(lambda n: str(n).encode()),
    st.sampled_from([b"-1", b"+1", b" 1", b"1 ", b"\xd9\xa3", b"1_0", b"0x1", b""]),
)
_times = st.one_of(
    st.builds(
        lambda sign, sec, frac: sign + str(sec).encode() + b"." + frac,
        st.sampled_from([b"", b"-"]),
        st.one_of(
            st.integers(0, 2**34),
            st.integers(9_223_372_030, 9_223_372_040),  # the 64-bit nanosecond edge
            st.integers(10**10, 10**21),
        ),
        st.one_of(  # find 4.x prints 10 digits: the C path takes only those
            st.text("0123456789", min_size=10, max_size=10),
            st.text("0123456789", min_size=0, max_size=12),
        ).map(str.encode),
    ),
    st.sampled_from([b"1", b"-0.5000000000", b"1.", b".5", b"1e9", b"1.2.3", b"", b"-"]),
)
_parts = st.sampled_from([b"a", b"b c", b".", b"..", b"", b"\xff\n", b"-x", b" -> y", b"..."])
_paths = st.lists(_parts, min_size=1, max_size=4).map(b"/".join)
_fields = {
    0: _paths,
    1: st.sampled_from([b"f", b"d", b"l", b"p", b"s", b"c", b"b", b"D", b"U", b"x", b"", b"ff"]),
    2: st.one_of(st.text("012345678", max_size=6).map(str.encode), st.just(b"7777")),
    3: _numbers,
    4: _times,  # mtime
    5: _times,  # atime
    6: st.one_of(_times, st.sampled_from([GOOD[4], GOOD[5]])),  # ctime, often == m/atime
    7: _numbers,
    8: _numbers,
    9: _numbers,
    10: _numbers,  # ino
    11: st.sampled_from([b"", b"t", b"x\ny -> z"]),
    12: st.sampled_from([b"/", b"/", b"/", b"x", b""]),
}
assert len(GOOD) == len(NAMES) == len(_fields) == lp.NFIELDS


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """One record: mostly valid, with 0 to 3 fields replaced by edge values."""
    fields = list(GOOD)
    for i in draw(st.lists(st.integers(0, lp.NFIELDS - 1), max_size=3)):
        fields[i] = draw(_fields[i])
    if draw(st.integers(0, 30)) == 0:  # a wrong field count now and then
        fields = fields[:-1] if draw(st.booleans()) else [*fields, b"extra"]
    return b"\0".join(fields) + b"\0"


def _run(chunks: list[bytes], resolution: int, framed: bool) -> object:
    parser = ListingParser(resolution, framed=framed)
    out: list[tuple[bytes, Entry]] = []
    try:
        for chunk in chunks:
            out += parser.feed(chunk)
        parser.close()
    except BulkParseError as err:
        return ("error", str(err), out)
    except ValueError as err:  # fed after the end record
        return ("misuse", str(err), out, parser.exit_status)
    return ("ok", out, parser.exit_status)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = zip([0, *points], [*points, len(data)], strict=True)
    return [data[a:b] for a, b in pieces if b > a]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(records(), max_size=6),
    st.lists(st.integers(0, 400), max_size=3),
    st.sampled_from([1, 7, 1000, 10**9, 3 * 10**9]),
    st.sampled_from(
        [
            None,
            END0,
            END127 + b"x\0",  # output after the end record
            b"\x000" + b"\0" * 9 + b"/\0",  # the former, 11-field end record: truncated
            b"\x000" + b"\0" * 10 + b"x\0/\0",  # a field not empty
        ]
    ),
)
def test_native_and_python_parsers_agree(
    recs: list[bytes], cuts: list[int], resolution: int, end: bytes | None
) -> None:
    data = b"".join(recs) + (end or b"")
    chunks = _split(data, cuts)
    native = _run(chunks, resolution, end is not None)
    saved = lp._native
    lp._native = None
    try:
        python = _run(chunks, resolution, end is not None)
    finally:
        lp._native = saved
    assert native == python


@settings(max_examples=300, deadline=None)
@given(st.lists(records(), max_size=5), st.integers(0, 2000), st.sampled_from([1, 10**9]))
def test_native_parse_contract(recs: list[bytes], start: int, resolution: int) -> None:
    """What parse() accepts equals the Python parser's result, and it stops only where it
    must: at an incomplete record or an empty path."""
    data = b"".join(recs)
    start = min(start, len(data))
    assert lp._native is not None
    got = lp._native.parse(data, start, resolution, Entry, Attrs)
    if got is None:
        return
    pairs, end = got
    assert start <= end <= len(data)
    reference = ListingParser(resolution)
    assert pairs == reference.feed(data[start:end])
    reference.close()
    rest = data[end:]
    assert rest.count(b"\0") < lp.NFIELDS or rest.startswith(b"\0")


def test_native_exact_values() -> None:
    assert lp._native is not None

    def one(**changes: bytes) -> Entry:
        assert set(changes) <= set(NAMES), changes
        fields = [changes.get(n, v) for n, v in zip(NAMES, GOOD, strict=True)]
        got = lp._native.parse(b"\0".join(fields) + b"\0", 0, 1, Entry, Attrs)
        assert got is not None
        [(path, entry)] = got[0]
        assert path == fields[0]
        return entry

    big = one(size=b"9" * 19, uid=b"4294967295", nlink=b"0" * 19, ino=b"9" * 19)  # the C limit
    assert (big.attrs.size, big.attrs.uid, big.attrs.nlink) == (10**19 - 1, 2**32 - 1, 0)
    assert big.attrs.ino == 10**19 - 1
    assert one(ino=b"0").attrs.ino == 0 and one(ino=b"0042").attrs.ino == 42
    assert one(mtime=b"-2.5000000000").attrs.mtime_ns == -1_500_000_000
    assert one(mtime=b"9223372035.9999999999").attrs.mtime_ns == 9_223_372_035_999_999_999
    assert one(ctime=b"-2.5000000000").attrs.ctime_ns == -1_500_000_000
    assert one(ctime=b"9223372035.9999999999").attrs.ctime_ns == 9_223_372_035_999_999_999
    plain = one().attrs
    assert plain == Attrs(
        0o100644, 10, 1000, 1000, 1, 1_500_000_000, 2_000_000_000, 3_250_000_000, 4242
    )
    # equal times may share one object: each field still has its own value
    for m, a, c in [(1, 2, 3), (1, 1, 2), (1, 2, 1), (1, 2, 2), (2, 1, 1), (5, 5, 5)]:
        t = one(mtime=b"%d.0000000000" % m, atime=b"%d.0000000000" % a, ctime=b"%d.0000000000" % c)
        assert (t.attrs.mtime_ns, t.attrs.atime_ns, t.attrs.ctime_ns) == (
            m * 10**9,
            a * 10**9,
            c * 10**9,
        )
    # what it declines, Python parses: a 20-digit inode number, a ctime past 64 bits
    for changes in ({"ino": b"1" * 20}, {"ctime": b"9223372037.0000000000"}, {"ctime": b"1.5"}):
        fields = [changes.get(n, v) for n, v in zip(NAMES, GOOD, strict=True)]
        assert lp._native.parse(b"\0".join(fields) + b"\0", 0, 1, Entry, Attrs) is None
    for changes in ({"ino": b"x"}, {"ino": b""}, {"ctime": b"1e9"}, {"ctime": b""}):
        fields = [changes.get(n, v) for n, v in zip(NAMES, GOOD, strict=True)]
        assert lp._native.parse(b"\0".join(fields) + b"\0", 0, 1, Entry, Attrs) is None
    assert one(path=b"a/b/c").name == b"c"
    assert one(kind=b"l", target=b"t -> u").target == b"t -> u"
    assert one(mode=b"7777", kind=b"d").attrs.mode == 0o047777
    with pytest.raises(TypeError):
        lp._native.parse(b"", 0, 1, dict, Attrs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        lp._native.parse(b"", 0, 0, Entry, Attrs)
