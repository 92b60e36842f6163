"""Bulk directory listing with ONE remote command instead of SFTP READDIR round trips.

The pure half (no network): the quoting, the command lines a POSIX ``sh`` on the remote
runs over the SSH exec channel, the parser of their output, and the mapping of a failed
run to an ``OSError``. The command is GNU ``find -printf``: every field of every entry is
NUL-terminated, so any name (newlines, `` -> ``, quotes, non-UTF-8 bytes) is unambiguous,
and each record ends with a fixed marker field so a wrong field count is caught.

Requirements on the remote, checked once with :func:`probe_command`/:func:`parse_probe`
before use (fall back to SFTP otherwise): a POSIX-quoting login shell (sh, bash, dash,
zsh, ksh; not fish or csh), GNU findutils, no pty (find quotes names on a terminal), and
no rc file that writes to stdout of non-interactive shells.

Commands run one after another in a long-lived ``sh`` (:mod:`sshvfs.ssh.shell`): each is
followed by :func:`end_command`, whose end record ends the command's output for a
``framed`` :class:`ListingParser`. Also here: :class:`WalkDetector`, which spots a tree
walk in a stream of listings (the caching layer's cue to prefetch the tree).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence

from sshvfs import gcpause
from sshvfs.vfs.types import Attrs, Entry

__all__ = [
    "FIND_FORMAT",
    "BulkCommandError",
    "BulkParseError",
    "ListingParser",
    "WalkDetector",
    "end_command",
    "end_record",
    "error_from_exit",
    "listing_command",
    "parse_listing",
    "parse_probe",
    "probe_command",
    "quote",
    "tree_command",
]

#: ``-printf`` format (as find receives it): 10 NUL-terminated fields then the marker
#: field ``/``, which no relative path (field 0) can ever equal.
FIND_FORMAT = b"%P\\0%y\\0%m\\0%s\\0%T@\\0%A@\\0%U\\0%G\\0%n\\0%l\\0/\\0"
_MARKER = b"/"
_NFIELDS = 11
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


# --------------------------------------------------------------------------- quoting


def quote(path: bytes) -> bytes:
    """POSIX single-quote ``path`` for a remote ``sh`` command line.

    Always quotes (``b"a"`` -> ``b"'a'"``, ``b""`` -> ``b"''"``); a ``'`` becomes
    ``'"'"'``. Any byte but NUL survives; NUL cannot be passed in an argv at all.
    """
    if b"\0" in path:
        raise ValueError(f"NUL byte in remote command argument: {path!r}")
    return b"'" + path.replace(b"'", b"'\"'\"'") + b"'"


# --------------------------------------------------------------------------- commands


def _start_point(remote_dir: bytes) -> bytes:
    """``DIR/.``: find then reports ENOTDIR for a file and lists a symlink's target dir
    (as SFTP READDIR does) instead of silently printing nothing."""
    if not remote_dir.startswith(b"/"):
        # absolute, so the start point can never be read as a find option or predicate
        raise ValueError(f"remote directory must be an absolute path: {remote_dir!r}")
    return remote_dir.rstrip(b"/") + b"/."


def _find(start: bytes, *predicates: bytes, fmt: bytes = FIND_FORMAT) -> bytes:
    # LC_ALL=C: ASCII error messages (error_from_exit matches them), "." decimal point.
    # stderr is left alone: it travels on its own channel and feeds error_from_exit.
    return b" ".join(
        [b"LC_ALL=C", b"find", b"--", quote(start), *predicates, b"-printf", quote(fmt)]
    )


def listing_command(remote_dir: bytes) -> bytes:
    """The sh command line printing every direct child of ``remote_dir`` (absolute)."""
    return _find(_start_point(remote_dir), b"-mindepth", b"1", b"-maxdepth", b"1")


def tree_command(remote_dir: bytes, max_depth: int | None = None) -> bytes:
    """Like :func:`listing_command` for the whole subtree (``max_depth`` levels, None for
    all), pre-order, paths relative to ``remote_dir``. Symlinks are not followed."""
    predicates = [b"-mindepth", b"1"]
    if max_depth is not None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, not {max_depth}")
        predicates += [b"-maxdepth", str(max_depth).encode()]
    return _find(_start_point(remote_dir), *predicates)


# What find receives: backslashes and a quote a non-POSIX shell would mangle, %y to prove
# -printf directives work, \0 to prove NUL output works.
_PROBE_FORMAT = b"sshvfs-ok %y \\\\\\\\ '\\0"
_PROBE_EXPECTED = b"sshvfs-ok d \\\\ '\0"
PROBE_OUTPUT = _PROBE_EXPECTED


def end_command(token: bytes) -> bytes:
    """What a long-lived shell runs after each command: the end record (an empty path, then
    the command's exit status) on stdout, and ``token`` alone on a line of stderr."""
    end = b"printf '\\0%s" + b"\\0" * 9 + b'/\\0\' "$?"; '
    return end + b"printf '\\n%s\\n' " + quote(token) + b" >&2"


def end_record(status: int) -> bytes:
    """The bytes :func:`end_command` prints after a command that exited with ``status``."""
    return b"\0" + str(status).encode() + b"\0" * 9 + b"/\0"


def probe_command() -> bytes:
    """A command whose stdout passes :func:`parse_probe` only where bulk listing works."""
    return _find(b"/.", b"-maxdepth", b"0", fmt=_PROBE_FORMAT)


def parse_probe(stdout: bytes) -> bool:
    """True when the probe's output is exactly right: GNU find -printf, POSIX quoting, and
    nothing else on stdout (a chatty rc file would corrupt listings too)."""
    return stdout == _PROBE_EXPECTED


# --------------------------------------------------------------------------- parsing


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
    )
    return Entry(entry.name, attrs, entry.target)


def _check_path(path: bytes, index: int) -> bytes:
    """Validate a relative path; return its last component."""
    parts = path.split(b"/")
    if any(part in (b"", b".", b"..") for part in parts):
        raise _fail(index, "path is not a clean relative path", path)
    return parts[-1]


def _parse_record(fields: Sequence[bytes], index: int) -> tuple[bytes, Entry]:
    path, kind, mode, size, mtime, atime, uid, gid, nlink, target, marker = fields
    if marker != _MARKER:
        raise _fail(index, f"record marker missing (not {_NFIELDS} fields per entry?)", marker)
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
    n = len(fields) // _NFIELDS
    paths, kinds, modes, sizes, mtimes, atimes, uids, gids, nlinks, targets, markers = (
        fields[i::_NFIELDS] for i in range(_NFIELDS)
    )
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
    ):
        return None
    if any(targets) and not all(k == b"l" for k, t in zip(kinds, targets, strict=True) if t):
        return None
    try:
        perms = [int(m, 8) for m in modes]
    except ValueError:  # an 8 or a 9
        return None
    mtime_ns, atime_ns = _times(mtimes, resolution), _times(atimes, resolution)
    if mtime_ns is None or atime_ns is None:
        return None
    bits = _TYPE_BITS
    new = tuple.__new__  # Attrs and Entry are NamedTuples: build them without the wrapper
    with gcpause.hold():  # the entries are all kept: collecting them proves nothing
        return [
            (
                path,
                new(
                    Entry, (name, new(Attrs, (bits[k] | perm, s, u, g, nl, mt, at)), target or None)
                ),
            )
            for path, name, k, perm, s, u, g, nl, mt, at, target in zip(
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
                targets,
                strict=True,
            )
        ]


class ListingParser:
    """Incremental parser: feed stdout as it arrives, in chunks split anywhere.

    The output of :func:`listing_command`/:func:`tree_command` yields ``(relative path,
    Entry)`` pairs; ``Entry.name`` is the path's last component. After a
    :class:`BulkParseError` the parser is in an unspecified state: discard it.

    ``time_resolution_ns`` floors every time to a multiple of it: 1 keeps find's
    nanoseconds, 1_000_000_000 gives whole seconds like SFTP v3 (see :mod:`sshvfs.vfs.sftp`
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
        self._partial = b""  # bytes of the field still missing its NUL
        self._fields: list[bytes] = []  # complete fields of the record in progress
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
        parts = (self._partial + chunk).split(b"\0")
        self._partial = parts.pop()
        if len(self._partial) > _MAX_FIELD:
            raise _fail(self._records, "unterminated field too long", self._partial)
        fields = self._fields + parts if self._fields else parts
        whole = len(fields) - len(fields) % _NFIELDS
        body, end = fields[:whole], None
        if self._framed and b"" in body[::_NFIELDS]:  # the end record (see end_command)
            end = body[::_NFIELDS].index(b"") * _NFIELDS
            body = body[:end]
        out = _fast_batch(body, self._resolution) if body else []
        if out is None:  # something unusual: record by record, for a precise error
            out = [
                _parse_record(body[i : i + _NFIELDS], self._records + i // _NFIELDS)
                for i in range(0, len(body), _NFIELDS)
            ]
            if self._resolution != 1:
                out = [(path, _floored(entry, self._resolution)) for path, entry in out]
        self._records += len(out)
        self._fields = fields[whole:]
        if end is not None:
            self._end(fields[end : end + _NFIELDS], fields[end + _NFIELDS :])
        return out

    def _end(self, record: Sequence[bytes], after: Sequence[bytes]) -> None:
        status, rest = record[1], record[2:]
        if _DECIMAL_RE.fullmatch(status) is None or any(rest[:-1]) or rest[-1] != _MARKER:
            raise _fail(self._records, "bad end record", b"\0".join(record))
        if after or self._partial:
            raise _fail(self._records, "output after the end record", b"\0".join(after))
        self.exit_status = int(status)
        self._fields = []

    def close(self) -> None:
        """Check the output ended on a record boundary (else it was truncated)."""
        self._closed = True
        if self._fields or self._partial or (self._framed and self.exit_status is None):
            raise BulkParseError(
                f"bulk listing output truncated after {self._records} records: "
                f"{len(self._fields)} fields and {len(self._partial)} bytes of a partial "
                f"record left over"
            )


def parse_listing(stdout: bytes) -> list[tuple[bytes, Entry]]:
    """Parse a complete captured output (see :class:`ListingParser`)."""
    parser = ListingParser()
    entries = parser.feed(stdout)
    parser.close()
    return entries


# --------------------------------------------------------------------------- errors


class BulkCommandError(OSError):
    """A bulk command failed; the message carries the remote stderr.

    ``errno`` is chosen by :func:`error_from_exit`; ENOTSUP means "no usable GNU find
    here, fall back to SFTP". For ENOENT/EACCES/ENOTDIR it is also a FileNotFoundError/
    PermissionError/NotADirectoryError, like the OSError that ``fs_error`` builds.
    """

    def __init__(
        self,
        exit_status: int | None,
        stderr: bytes,
        path: bytes | None = None,
        code: int = errno.EIO,
    ) -> None:
        self.exit_status = exit_status
        self.stderr = stderr
        text = stderr[:2000].decode("utf-8", errors="replace").strip()
        if len(text) > 500:
            text = text[:500] + "..."
        status = "no exit status" if exit_status is None else f"exit status {exit_status}"
        message = f"remote find failed ({status}): {text or '(no stderr)'}"
        if path is None:
            super().__init__(code, message)
        else:
            super().__init__(code, message, os.fsdecode(path))


class _BulkNotFound(BulkCommandError, FileNotFoundError):
    pass


class _BulkPermission(BulkCommandError, PermissionError):
    pass


class _BulkNotADirectory(BulkCommandError, NotADirectoryError):
    pass


_CLASS_BY_ERRNO: dict[int, type[BulkCommandError]] = {
    errno.ENOENT: _BulkNotFound,
    errno.EACCES: _BulkPermission,
    errno.ENOTDIR: _BulkNotADirectory,
}

# find writes "find: 'PATH': <strerror>", so the strerror is matched at the END of a line:
# a file name that contains one of these texts cannot fool the match.
_STRERROR_SUFFIXES = (
    ("no such file or directory", errno.ENOENT),
    ("permission denied", errno.EACCES),
    ("not a directory", errno.ENOTDIR),
    ("too many levels of symbolic links", errno.ELOOP),
)
# Shells and finds without what we need; ENOTSUP tells the caller to fall back to SFTP.
_UNSUPPORTED_MARKERS = (
    "command not found",  # bash, zsh, csh ("Command not found.")
    ": not found",  # dash: "sh: 1: find: not found"
    "unknown predicate",  # GNU find: "unknown predicate `-printf'" (a cut-down build)
    "invalid predicate",  # old GNU find's wording of the same
    "unknown primary",  # BSD/macOS find: "-printf: unknown primary or operator"
    "unrecognized",  # BusyBox find: "find: unrecognized: -printf"
    "-printf",  # any other complaint naming it (ENOENT etc. were matched first)
)


def _classify(line: str) -> int | None:
    lowered = line.rstrip().lower()
    for suffix, code in _STRERROR_SUFFIXES:
        if lowered.endswith(suffix):
            return code
    if any(marker in lowered for marker in _UNSUPPORTED_MARKERS):
        return errno.ENOTSUP
    return None


def error_from_exit(exit_status: int | None, stderr: bytes, path: bytes) -> OSError:
    """The OSError for a bulk command on ``path`` that failed with ``exit_status``.

    ENOENT/EACCES/ENOTDIR/ELOOP from find's own message, ENOTSUP when the remote cannot
    run the command at all (fall back to SFTP), EIO for anything else (including a
    channel closed without exit status).
    """
    if exit_status in (126, 127):
        # the shell could not run find (not found / not executable): fall back, it is
        # not a property of ``path``
        code: int = errno.ENOTSUP
    else:
        code = errno.EIO
        for line in stderr.decode("utf-8", errors="replace").splitlines():
            found = _classify(line)
            if found is not None:
                code = found
                break
    cls = _CLASS_BY_ERRNO.get(code, BulkCommandError)
    return cls(exit_status, stderr, path, code)


# --------------------------------------------------------------------------- walk detection


class WalkDetector:
    """Spots a tree walk (find, ls -R, du, cp -r, rsync) in a stream of directory listings.

    Feed it every directory listed, with a monotonic time. A walk is a chain of listings
    each of whose parent was listed (or had a child listed) within ``window`` seconds; once
    a walk has listed ``min_dirs`` directories, :meth:`listed` returns its root -- the
    directory to prefetch whole -- and stays quiet for ``cooldown`` seconds about that
    root and anything below it.
    """

    def __init__(
        self,
        min_dirs: int = 3,
        window: float = 2.0,
        cooldown: float = 30.0,
        max_tracked: int = 4096,
    ) -> None:
        if min_dirs < 2:
            raise ValueError(f"min_dirs must be >= 2, not {min_dirs}")
        self.min_dirs = min_dirs
        self.window = window
        self.cooldown = cooldown
        self._max_tracked = max_tracked
        self._recent: dict[bytes, tuple[bytes, float]] = {}  # path -> (walk root, last seen)
        self._counts: dict[bytes, int] = {}  # walk root -> directories listed in the walk
        self._reported: dict[bytes, float] = {}  # root -> when it was returned

    def _expire(self, now: float) -> None:
        recent = self._recent
        while recent:
            path = next(iter(recent))
            root, seen = recent[path]
            if seen >= now - self.window and len(recent) < self._max_tracked:
                break
            del recent[path]
            left = self._counts[root] - 1
            if left:
                self._counts[root] = left
            else:
                del self._counts[root]
        for root in [r for r, t in self._reported.items() if t < now - self.cooldown]:
            del self._reported[root]

    def _touch(self, path: bytes, now: float) -> None:
        """Mark ``path`` and its tracked ancestors as active (a walk is still inside them)."""
        while path in self._recent:
            root, _ = self._recent.pop(path)
            self._recent[path] = (root, now)  # re-insert: the dict stays ordered by time
            if path == b"/":
                break
            path = path.rpartition(b"/")[0] or b"/"

    def _covered(self, root: bytes) -> bool:
        """Was ``root`` or an ancestor reported within the cooldown?"""
        path = root
        while True:
            if path in self._reported:
                return True
            if path == b"/":
                return False
            path = path.rpartition(b"/")[0] or b"/"

    def listed(self, path: bytes, now: float) -> bytes | None:
        """Record a listing of ``path``; the root of a walk to prefetch, or None."""
        self._expire(now)
        if path in self._recent:
            self._touch(path, now)
            return None
        parent = path.rpartition(b"/")[0] or b"/"
        if path != b"/" and parent in self._recent:
            root = self._recent[parent][0]
            self._touch(parent, now)
        else:
            root = path
        self._recent[path] = (root, now)
        count = self._counts.get(root, 0) + 1
        self._counts[root] = count
        if count < self.min_dirs or self._covered(root):
            return None
        self._reported[root] = now
        return root
