"""Bulk directory listing with ONE remote command instead of SFTP READDIR round trips.

The pure half (no network): the quoting, the command lines a POSIX ``sh`` on the remote
runs over the SSH exec channel, and the mapping of a failed run to an ``OSError``. The
command is GNU ``find -printf`` with NUL-terminated fields, so any name is unambiguous;
:mod:`sshvfs.execlist.parser` parses its output (re-exported here).

Requirements on the remote, checked once with :func:`probe_command`/:func:`parse_probe`
before use (fall back to SFTP otherwise): a POSIX-quoting login shell (sh, bash, dash,
zsh, ksh; not fish or csh), GNU findutils, no pty (find quotes names on a terminal), and
no rc file that writes to stdout of non-interactive shells.

Commands run one after another in a long-lived ``sh`` (:mod:`sshvfs.execlist.shell`): each is
followed by :func:`end_command`, whose end record ends the command's output for a
``framed`` :class:`ListingParser`.
"""

from __future__ import annotations

import errno
import os

from .parser import FIND_FORMAT, NFIELDS, BulkParseError, ListingParser, parse_listing

__all__ = [
    "FIND_FORMAT",
    "BulkCommandError",
    "BulkParseError",
    "ListingParser",
    "end_command",
    "end_record",
    "end_status",
    "ended",
    "error_from_exit",
    "listing_command",
    "parse_listing",
    "parse_probe",
    "probe_command",
    "quote",
    "tree_command",
]

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
    end = b"printf '\\0%s" + b"\\0" * (NFIELDS - 2) + b'/\\0\' "$?"; '
    return end + b"printf '\\n%s\\n' " + quote(token) + b" >&2"


def end_record(status: int) -> bytes:
    """The bytes :func:`end_command` prints after a command that exited with ``status``."""
    return b"\0" + str(status).encode() + _END_TAIL


#: what every end record ends with: the empty fields, then the marker
_END_TAIL = b"\0" * (NFIELDS - 2) + b"/\0"


def end_status(record: bytes) -> int | None:
    """The exit status an end record (exactly, nothing after it) carries; None if
    ``record`` is not one."""
    if not record.startswith(b"\0") or not record.endswith(_END_TAIL):
        return None
    status = record[1 : -len(_END_TAIL)]
    return int(status) if status.isdigit() and status.isascii() else None


def ended(rest: bytes | bytearray) -> int | None:
    """What came after a command's own output, once it is the whole end record: the exit
    status; None while it is still coming. ValueError when it is not an end record."""
    if not rest.endswith(b"/\0"):  # the end record's last field
        return None
    status = end_status(bytes(rest))
    if status is None:
        raise ValueError(f"bad end record {bytes(rest[:40])!r}")
    return status


def probe_command() -> bytes:
    """A command whose stdout passes :func:`parse_probe` only where bulk listing works."""
    return _find(b"/.", b"-maxdepth", b"0", fmt=_PROBE_FORMAT)


def parse_probe(stdout: bytes) -> bool:
    """True when the probe's output is exactly right: GNU find -printf, POSIX quoting, and
    nothing else on stdout (a chatty rc file would corrupt listings too)."""
    return stdout == _PROBE_EXPECTED


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
