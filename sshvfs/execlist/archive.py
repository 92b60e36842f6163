"""The exec-channel command that sends the small files under a directory as one tar
archive, and its parsers (the bulk fetch of :mod:`sshvfs.vfs.cache.contents`)."""

from __future__ import annotations

import io
import os
import tarfile

from .commands import ended, quote


def archive_limit(max_file: int, max_files: int) -> int:
    """The most bytes a tar of ``max_files`` files of at most ``max_file`` bytes can take
    (a 512-byte header and padding to 512 a file, the end blocks), plus slack."""
    return max_files * (max_file + 1024) + (1 << 20)


def contents_command(remote_dir: bytes, max_file: int, max_files: int) -> bytes:
    """The sh command line that prints ``STATUS LENGTH\\0`` then a tar archive of LENGTH
    bytes with the small readable regular files under ``remote_dir`` (absolute), paths
    relative to it. STATUS is tar's exit status (0: every file read whole and unchanged).
    Directories named ``.git`` below ``remote_dir`` are left out: a repository's metadata is
    read by git alone, and a read in it fetches it apart (see sshvfs.vfs.cache.contents);
    in a source tree it is most of the files. Runs in a subshell: the long-lived shell's
    directory stays where it was."""
    if not remote_dir.startswith(b"/"):
        raise ValueError(f"remote directory must be an absolute path: {remote_dir!r}")
    size = str(max_file + 1).encode()  # find -size -Nc: fewer than N bytes
    count = str(max_files).encode()
    return (
        b"(t=$(mktemp) || exit 1; r=1; cd -- "
        + quote(remote_dir)
        + b" && { LC_ALL=C find . -name .git -type d -prune -o -type f -readable -size -"
        + size
        + b"c -print0 | head -z -n "
        + count
        + b' | LC_ALL=C tar --null --no-recursion -T - -cf "$t" 2>/dev/null; r=$?; };'
        + b""" printf '%s %s\\0' "$r" "$(wc -c < "$t")"; cat -- "$t"; rm -f -- "$t";"""
        + b' [ "$r" = 0 ])'
    )


def file_command(remote_path: bytes) -> bytes:
    """The command that sends one file (absolute path) as a bare tar stream, named by its
    base name, whatever it is (a reader keeps regular files only): ONE process (no
    subshell, no temporary file), so that on a link of a millisecond it still costs about
    a round trip. Blocking factor 1: the stream ends right after its two zero blocks (see
    :class:`FileParser`); the command's exit status is tar's."""
    parent, _, name = remote_path.rpartition(b"/")
    if not name or not remote_path.startswith(b"/"):
        raise ValueError(f"not an absolute file path: {remote_path!r}")
    return (
        b"LC_ALL=C tar -b 1 --no-recursion -C "
        + quote(parent or b"/")
        + b" -cf - -- "
        + quote(b"./" + name)
        + b" 2>/dev/null"
    )


class ContentParser:
    """Parses :func:`contents_command`'s framed output in a long-lived shell (the
    :class:`~sshvfs.execlist.shell.RemoteShell` parser protocol: ``feed`` and ``exit_status``)."""

    def __init__(self, limit: int) -> None:
        """``limit``: the largest archive accepted (see :func:`archive_limit`)."""
        self._limit = limit
        self._buf = bytearray()
        self._header: tuple[int, int] | None = None
        self.archive: bytes | None = None
        self.tar_status: int | None = None
        self.exit_status: int | None = None

    def feed(self, chunk: bytes) -> list[object]:
        self._buf += chunk
        if self._header is None:
            cut = self._buf.find(b"\0")
            if cut < 0:
                if len(self._buf) > 64:
                    raise ValueError("contents: no header")
                return []
            try:
                status, length = (int(x) for x in bytes(self._buf[:cut]).split())
            except ValueError as exc:
                raise ValueError(f"contents: bad header {bytes(self._buf[:cut])[:40]!r}") from exc
            if length > self._limit:
                raise ValueError(f"contents: archive of {length} bytes is over the limit")
            self._header = (status, length)
            del self._buf[: cut + 1]
        status, length = self._header
        if self.archive is None:
            if len(self._buf) < length:
                return []
            self.archive = bytes(self._buf[:length])
            self.tar_status = status
            del self._buf[:length]
        self.exit_status = _end_record(self._buf)
        return []


def _end_record(rest: bytearray) -> int | None:
    """The shell's end record (see :func:`~sshvfs.execlist.commands.end_record`) that
    ``rest`` holds, once whole: its status; None while it is still coming."""
    status = ended(rest)
    if status is None and len(rest) > 32:
        raise ValueError("contents: trailing bytes after the archive")
    return status


_ZERO_BLOCK = bytes(512)


class _Unusual(ValueError):
    """A tar feature the lean reader leaves to :mod:`tarfile` (a ValueError: the stream
    parser, which has no fallback, refuses it as a bad header)."""


#: regular-file type flags (``tarfile.REGULAR_TYPES`` without sparse files, left to tarfile)
_REGULAR = (b"0", b"\0", b"7")


def _octal(field: bytes) -> int:
    """A tar header's octal number (ValueError if it is none)."""
    if field[:1] and field[0] & 0x80:
        raise _Unusual("base-256 number")
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


class FileParser:
    """Parses :func:`file_command`'s output: a tar stream of 512-byte blocks, each header
    followed by its data blocks, ended by two zero blocks; then the shell's end record.
    When tar could not even start there is no stream: the end record comes alone."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = bytearray()
        self._next = 0  # offset of the next header block
        self.archive: bytes | None = None
        self.tar_status: int | None = None
        self.exit_status: int | None = None

    def feed(self, chunk: bytes) -> list[object]:
        self._buf += chunk
        if self.archive is None and not self._stream():
            return []
        self.exit_status = _end_record(self._buf)
        if self.exit_status is not None:
            self.tar_status = self.exit_status
        return []

    def _stream(self) -> bool:
        """Walk the blocks that came; True once the stream (or its absence) is known."""
        buf = self._buf
        while True:
            if self._next > self._limit:
                raise ValueError("contents: archive over the limit")
            block = buf[self._next : self._next + 512]
            if len(block) < 512:
                if self._next == 0 and buf[:1] == b"\0" and buf.endswith(b"/\0"):
                    return True  # no stream, only the end record (a header is never 0-led)
                return False
            if block == _ZERO_BLOCK:
                if len(buf) < self._next + 1024:
                    return False
                if buf[self._next + 512 : self._next + 1024] != _ZERO_BLOCK:
                    raise ValueError("contents: a zero block inside the archive")
                end = self._next + 1024
                self.archive = bytes(buf[:end])
                del buf[:end]
                return True
            try:
                size = _octal(bytes(block[124:136]))
            except ValueError as exc:
                raise ValueError("contents: a bad tar header") from exc
            self._next += 512 + -(-size // 512) * 512


def _pax(records: bytes) -> dict[bytes, bytes]:
    """A pax extended header's ``LEN KEY=VALUE\\n`` records."""
    out: dict[bytes, bytes] = {}
    at = 0
    while at < len(records) and records[at : at + 1] != b"\0":
        space = records.index(b" ", at)
        length = int(records[at:space])
        if length <= space - at:
            raise _Unusual("bad pax record")
        key, _, value = records[space + 1 : at + length - 1].partition(b"=")
        out[key] = value
        at += length
    return out


def _lean_parse(archive: bytes) -> dict[bytes, tuple[int, bytes]]:
    """:func:`parse_archive` for what GNU and POSIX tars write for small files: headers
    checked by their checksum, GNU long names, ustar prefixes, pax paths and times.
    Anything else (base-256 numbers, sparse files, pax sizes) raises _Unusual."""
    out: dict[bytes, tuple[int, bytes]] = {}
    end = len(archive)
    at = 0
    long_name: bytes | None = None
    pax: dict[bytes, bytes] = {}
    while at + 512 <= end:
        header = archive[at : at + 512]
        if header == _ZERO_BLOCK:
            return out
        if sum(header) - sum(header[148:156]) + 256 != _octal(header[148:156]):
            raise _Unusual("checksum")  # tarfile also takes signed sums, and says why not
        size = _octal(header[124:136])
        flag = header[156:157]
        start = at + 512
        at = start + -(-size // 512) * 512
        if start + size > end:
            raise ValueError("contents: a file is short in the archive")
        data = archive[start : start + size]
        if flag == b"L":
            long_name = data.split(b"\0", 1)[0]
            continue
        if flag == b"x":
            pax = _pax(data)
            if b"size" in pax or any(k.startswith(b"GNU.sparse") for k in pax):
                raise _Unusual("pax size")
            continue
        if flag in (b"g", b"K"):
            continue
        name = header[:100].split(b"\0", 1)[0]
        if header[257:263] == b"ustar\0":
            prefix = header[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        name = pax.get(b"path") or long_name or name
        mtime = pax.get(b"mtime")
        mtime_s = int(mtime.split(b".", 1)[0] or b"0") if mtime else _octal(header[136:148])
        long_name, pax = None, {}
        if flag == b"S":
            raise _Unusual("sparse file")
        if flag not in _REGULAR:
            continue
        while name.startswith(b"./"):
            name = name[2:]
        if name:
            out[name] = (mtime_s, data)
    raise ValueError("contents: the archive has no end")


def parse_archive(archive: bytes) -> dict[bytes, tuple[int, bytes]]:
    """``{relative path: (mtime seconds, data)}`` of the regular files in a tar archive.

    Read by hand, not by :mod:`tarfile`: it took 30-35 ms for a fetch of 1,000 files, all
    of it on the one loop every kernel request waits for (it made p99s of 40-55 ms in an
    editor's opens at loopback); the rare archive this reader does not know goes to
    tarfile."""
    try:
        return _lean_parse(archive)
    except _Unusual:
        return _tarfile_parse(archive)


def _tarfile_parse(archive: bytes) -> dict[bytes, tuple[int, bytes]]:
    out: dict[bytes, tuple[int, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar:
            if not member.isreg():
                continue
            name = os.fsencode(member.name)
            while name.startswith(b"./"):
                name = name[2:]
            f = tar.extractfile(member)
            if f is None or not name:
                continue
            data = f.read()
            if len(data) != member.size:
                raise ValueError(f"contents: {name!r} is short in the archive")
            out[name] = (int(member.mtime), data)
    return out
