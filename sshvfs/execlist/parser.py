"""The parser of bulk listings: GNU ``find -printf`` output (:data:`FIND_FORMAT`) in, the
typed ``(relative path, Entry)`` pairs SFTP READDIR would give out.

Every field of every entry is NUL-terminated, so any name (newlines, `` -> ``, quotes,
non-UTF-8 bytes) is unambiguous, and each record ends with a fixed marker field so a wrong
field count is caught. Output streams in: :class:`ListingParser` takes chunks split
anywhere. Three ways through a chunk, each exact for what it accepts:

- the C extension ``_findrecords`` (built by ``pip install``, optional): one pass over the
  bytes, ~4x faster than the Python paths on a huge listing; it declines anything unusual;
- :func:`_fast_batch`: whole records at once, column by column in C builtins;
- :func:`_parse_record`: record by record, the reference, raising the precise error.

The command lines that produce this output are in :mod:`sshvfs.execlist.commands`.
"""

from __future__ import annotations

import errno
import re
import stat
from collections.abc import Sequence
from types import ModuleType

from .. import gcpause
from ..vfs.types import Attrs, Entry

_native: ModuleType | None
try:
    from . import _findrecords

    _native = _findrecords
except ImportError:  # no compiler at install time: the Python parser does it all
    _native = None

__all__ = ["FIND_FORMAT", "NFIELDS", "BulkParseError", "ListingParser", "native", "parse_listing"]

#: ``-printf`` format (as find receives it): 12 NUL-terminated fields then the marker
#: field ``/``, which no relative path (field 0) can ever equal. ``%C@`` and ``%i`` (ctime
#: and inode number) are what SFTP v3 cannot tell: with them the mount shows the server's
#: st_ino and st_ctime, so an index git wrote on the server (or on an earlier mount) still
#: matches and ``git status`` reads no file to be sure.
FIND_FORMAT = b"%P\\0%y\\0%m\\0%s\\0%T@\\0%A@\\0%C@\\0%U\\0%G\\0%n\\0%i\\0%l\\0/\\0"
_MARKER = b"/"
#: fields per record (the marker included); the shell's end record has as many
NFIELDS = 13
#: longest field accepted before calling the output garbage (a deep %P may exceed PATH_MAX)
_MAX_FIELD = 1 << 20

#: ``%y`` letter -> S_IFMT bits. ``D`` (Solaris door) and ``U`` (unknown) have no Linux
#: st_mode type, so they become 0, which :class:`Attrs` reports as FileType.UNKNOWN.
_TYPE_BITS = {
    b"f": stat.S_IFREG,
    b"d": stat.S_IFDIR,
    b"l": stat.S_IFLNK,
    b"p": stat.S_IFIFO,
    b"s": stat.S_IFSOCK,
    b"c": stat.S_IFCHR,
    b"b": stat.S_IFBLK,
    b"D": 0,
    b"U": 0,
}

# find prints %T@ as tv_sec "." tv_nsec (9 digits, plus a constant trailing "0" in 4.x):
# the fraction is ADDED to the signed seconds, so "-2.5000000000" is -1.5 s.
_TIME_RE = re.compile(rb"(-?[0-9]{1,20})(?:\.([0-9]{1,30}))?")
_OCTAL_RE = re.compile(rb"[0-7]{1,6}")
_DECIMAL_RE = re.compile(rb"[0-9]{1,30}")
#: the C path floors times in 64-bit arithmetic
_MAX_NATIVE_RESOLUTION = (1 << 63) - 1


def native() -> bool:
    """Is the C fast path built and in use?"""
    return _native is not None


class BulkParseError(OSError):
    """The remote listing output is malformed or truncated (errno EIO)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


def _fail(index: int, what: str, value: bytes) -> BulkParseError:
    shown = value if len(value) <= 80 else value[:80] + b"..."
    return BulkParseError(f"bad bulk listing output, record {index}: {what}: {shown!r}")


def _uint(value: bytes, what: str, index: int) -> int:
    if _DECIMAL_RE.fullmatch(value) is None:
        raise _fail(index, f"{what} is not a decimal number", value)
    return int(value)


def _time_ns(value: bytes, what: str, index: int) -> int:
    match = _TIME_RE.fullmatch(value)
    if match is None:
        raise _fail(index, f"{what} is not a find %T@ time", value)
    seconds, fraction = match.group(1), match.group(2) or b""
    # exact integer arithmetic; digits past the nanosecond are truncated
    return int(seconds) * 1_000_000_000 + int(fraction[:9].ljust(9, b"0"))


def _floored(entry: Entry, resolution: int) -> Entry:
    """``entry`` with its times floored to a multiple of ``resolution`` nanoseconds."""
    a = entry.attrs
    attrs = Attrs(
        a.mode,
        a.size,
        a.uid,
        a.gid,
        a.nlink,
        a.mtime_ns - a.mtime_ns % resolution,  # floored, as tv_sec is for pre-epoch times
        a.atime_ns - a.atime_ns % resolution,
        a.ctime_ns - a.ctime_ns % resolution,
        a.ino,
    )
    return Entry(entry.name, attrs, entry.target)


def _check_path(path: bytes, index: int) -> bytes:
    """Validate a relative path; return its last component."""
    parts = path.split(b"/")
    if any(part in (b"", b".", b"..") for part in parts):
        raise _fail(index, "path is not a clean relative path", path)
    return parts[-1]


def _parse_record(fields: Sequence[bytes], index: int) -> tuple[bytes, Entry]:
    path, kind, mode, size, mtime, atime, ctime, uid, gid, nlink, ino, target, marker = fields
    if marker != _MARKER:
        raise _fail(index, f"record marker missing (not {NFIELDS} fields per entry?)", marker)
    name = _check_path(path, index)
    type_bits = _TYPE_BITS.get(kind)
    if type_bits is None:
        raise _fail(index, "unknown file type letter", kind)
    if _OCTAL_RE.fullmatch(mode) is None or int(mode, 8) > 0o7777:
        raise _fail(index, "mode is not octal permission bits", mode)
    if target and kind != b"l":
        raise _fail(index, "symlink target on a non-symlink", target)
    attrs = Attrs(
        mode=type_bits | int(mode, 8),
        size=_uint(size, "size", index),
        uid=_uint(uid, "uid", index),
        gid=_uint(gid, "gid", index),
        nlink=_uint(nlink, "nlink", index),
        mtime_ns=_time_ns(mtime, "mtime", index),
        atime_ns=_time_ns(atime, "atime", index),
        ctime_ns=_time_ns(ctime, "ctime", index),
        ino=_uint(ino, "inode number", index),
    )
    # an empty %l on a symlink means find could not read it: unknown, not "empty target"
    return path, Entry(name=name, attrs=attrs, target=target or None)


_KINDS = frozenset(_TYPE_BITS)
# find 4.x prints %T@ as tv_sec "." 10 digits; anything else takes the per-record path
_TIMES_RE = re.compile(rb"(?:-?[0-9]{1,20}\.[0-9]{10}\0)*")
_BAD_PATH_PARTS = (b"\0/", b"/\0", b"//", b"/./", b"/../", b"\0./", b"\0../", b"/.\0", b"/..\0")


def _digits(column: list[bytes], longest: int) -> bool:
    """Every value is 1 to ``longest`` ASCII digits (checked in C, column at once)."""
    return b"" not in column and b"".join(column).isdigit() and max(map(len, column)) <= longest


def _times(column: list[bytes], resolution: int) -> list[int] | None:
    if _TIMES_RE.fullmatch(b"\0".join(column) + b"\0") is None:
        return None
    if resolution == 1_000_000_000:  # whole seconds: tv_sec, whatever the sign
        return [int(t[:-11]) * 1_000_000_000 for t in column]
    out = [int(t[:-11]) * 1_000_000_000 + int(t[-10:-1]) for t in column]
    return out if resolution == 1 else [t - t % resolution for t in out]


def _fast_batch(fields: list[bytes], resolution: int) -> list[tuple[bytes, Entry]] | None:
    """Whole records at once, column by column: checks and conversions run in C over a
    column (bytes.join, isdigit, map), 4x faster than record by record. None when anything
    is unusual; the records are then parsed one by one, for a precise error."""
    n = len(fields) // NFIELDS
    columns = [fields[i::NFIELDS] for i in range(NFIELDS)]
    paths, kinds, modes, sizes, mtimes, atimes, ctimes, uids, gids, nlinks, inos = columns[:11]
    targets, markers = columns[11:]
    if markers.count(_MARKER) != n or not _KINDS.issuperset(kinds):
        return None
    if b"" in paths or b"." in paths or b".." in paths:
        return None
    joined = b"\0" + b"\0".join(paths) + b"\0"
    names = paths
    if b"/" in joined:  # a tree listing
        if any(part in joined for part in _BAD_PATH_PARTS):
            return None
        names = [p.rpartition(b"/")[2] for p in paths]
    if not (
        _digits(modes, 4)  # 4 octal digits at most: <= 0o7777
        and _digits(sizes, 30)
        and _digits(uids, 30)
        and _digits(gids, 30)
        and _digits(nlinks, 30)
        and _digits(inos, 30)
    ):
        return None
    if any(targets) and not all(k == b"l" for k, t in zip(kinds, targets, strict=True) if t):
        return None
    try:
        perms = [int(m, 8) for m in modes]
    except ValueError:  # an 8 or a 9
        return None
    mtime_ns, atime_ns = _times(mtimes, resolution), _times(atimes, resolution)
    ctime_ns = _times(ctimes, resolution)
    if mtime_ns is None or atime_ns is None or ctime_ns is None:
        return None
    bits = _TYPE_BITS
    new = tuple.__new__  # Attrs and Entry are NamedTuples: build them without the wrapper
    with gcpause.hold():  # the entries are all kept: collecting them proves nothing
        return [
            (
                path,
                new(Entry, (name, new(Attrs, (bits[k] | pm, s, u, g, nl, mt, at, ct, i)), target)),
            )
            for path, name, k, pm, s, u, g, nl, mt, at, ct, i, target in zip(
                paths,
                names,
                kinds,
                perms,
                map(int, sizes),
                map(int, uids),
                map(int, gids),
                map(int, nlinks),
                mtime_ns,
                atime_ns,
                ctime_ns,
                map(int, inos),
                [t or None for t in targets],
                strict=True,
            )
        ]


class ListingParser:
    """Incremental parser: feed stdout as it arrives, in chunks split anywhere.

    The output of :func:`listing_command`/:func:`tree_command` yields ``(relative path,
    Entry)`` pairs; ``Entry.name`` is the path's last component. After a
    :class:`BulkParseError` the parser is in an unspecified state: discard it.

    ``time_resolution_ns`` floors every time to a multiple of it: 1 keeps find's
    nanoseconds, 1_000_000_000 gives whole seconds like SFTP v3 (see :mod:`sshvfs.sftp.vfs`
    for why a mount wants both listing paths to agree).

    ``framed``: the output of one command run by a long-lived shell ends with the
    :func:`end_command` record; :attr:`exit_status` is then set, and output after it is an
    error (no record can forge it: it is the only one with an empty path).
    """

    def __init__(self, time_resolution_ns: int = 1, framed: bool = False) -> None:
        if time_resolution_ns < 1:
            raise ValueError(f"time_resolution_ns must be >= 1, not {time_resolution_ns}")
        self._resolution = time_resolution_ns
        self._framed = framed
        self._pending = b""  # the bytes of the record in progress (no complete record)
        self._records = 0
        self._closed = False
        #: the command's exit status, once a framed output's end record was read
        self.exit_status: int | None = None

    @property
    def records(self) -> int:
        """How many entries were parsed so far."""
        return self._records

    def feed(self, chunk: bytes) -> list[tuple[bytes, Entry]]:
        if self._closed or self.exit_status is not None:
            raise ValueError("ListingParser.feed() after close() or the end record")
        if not chunk:
            return []
        data = self._pending + chunk if self._pending else chunk
        out: list[tuple[bytes, Entry]] = []
        if _native is not None and self._resolution <= _MAX_NATIVE_RESOLUTION:
            with gcpause.hold():  # the entries are all kept: collecting them proves nothing
                done = _native.parse(data, 0, self._resolution, Entry, Attrs)
            if done is not None:  # else something unusual: Python parses it all
                out, used = done
                self._records += len(out)
                data = data[used:]  # an incomplete record, or the end record
        if not data:
            self._pending = b""
            return out
        return out + self._feed_python(data)

    def _feed_python(self, data: bytes) -> list[tuple[bytes, Entry]]:
        fields = data.split(b"\0")
        partial = fields.pop()  # the field still missing its NUL
        if len(partial) > _MAX_FIELD:
            raise _fail(self._records, "unterminated field too long", partial)
        whole = len(fields) - len(fields) % NFIELDS
        body, end = fields[:whole], None
        if self._framed and b"" in body[::NFIELDS]:  # the end record (see end_command)
            end = body[::NFIELDS].index(b"") * NFIELDS
            body = body[:end]
        out = _fast_batch(body, self._resolution) if body else []
        if out is None:  # something unusual: record by record, for a precise error
            out = [
                _parse_record(body[i : i + NFIELDS], self._records + i // NFIELDS)
                for i in range(0, len(body), NFIELDS)
            ]
            if self._resolution != 1:
                out = [(path, _floored(entry, self._resolution)) for path, entry in out]
        self._records += len(out)
        left = fields[whole:]
        self._pending = data[len(data) - sum(map(len, left)) - len(left) - len(partial) :]
        if end is not None:
            self._end(fields[end : end + NFIELDS], fields[end + NFIELDS :], partial)
        return out

    def _end(self, record: Sequence[bytes], after: Sequence[bytes], partial: bytes) -> None:
        status, rest = record[1], record[2:]
        if _DECIMAL_RE.fullmatch(status) is None or any(rest[:-1]) or rest[-1] != _MARKER:
            raise _fail(self._records, "bad end record", b"\0".join(record))
        if after or partial:
            raise _fail(self._records, "output after the end record", b"\0".join(after))
        self.exit_status = int(status)
        self._pending = b""

    def close(self) -> None:
        """Check the output ended on a record boundary (else it was truncated)."""
        self._closed = True
        if self._pending or (self._framed and self.exit_status is None):
            raise BulkParseError(
                f"bulk listing output truncated after {self._records} records: "
                f"{len(self._pending)} bytes of a partial record left over"
            )


def parse_listing(stdout: bytes) -> list[tuple[bytes, Entry]]:
    """Parse a complete captured output (see :class:`ListingParser`)."""
    parser = ListingParser()
    entries = parser.feed(stdout)
    parser.close()
    return entries
