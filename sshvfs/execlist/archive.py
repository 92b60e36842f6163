"""The exec-channel command that sends the small files under a directory as one tar
archive, and its parsers (the bulk fetch of :mod:`sshvfs.vfs.contents`)."""

from __future__ import annotations

import io
import os
import tarfile

from .commands import quote


def archive_limit(max_file: int, max_files: int) -> int:
    """The most bytes a tar of ``max_files`` files of at most ``max_file`` bytes can take
    (a 512-byte header and padding to 512 a file, the end blocks), plus slack."""
    return max_files * (max_file + 1024) + (1 << 20)


def contents_command(remote_dir: bytes, max_file: int, max_files: int) -> bytes:
    """The sh command line that prints ``STATUS LENGTH\\0`` then a tar archive of LENGTH
    bytes with the small readable regular files under ``remote_dir`` (absolute), paths
    relative to it. STATUS is tar's exit status (0: every file read whole and unchanged).
    Runs in a subshell: the long-lived shell's directory stays where it was."""
    size = str(max_file + 1).encode()  # find -size -Nc: fewer than N bytes
    count = str(max_files).encode()
    return _framed(
        remote_dir,
        b"LC_ALL=C find . -type f -readable -size -"
        + size
        + b"c -print0 | head -z -n "
        + count
        + b' | LC_ALL=C tar --null --no-recursion -T - -cf "$t" 2>/dev/null',
    )


def file_command(remote_path: bytes) -> bytes:
    """:func:`contents_command` for one file (absolute path): the archive holds its entry,
    named by its base name, whatever it is (a reader keeps regular files only)."""
    parent, _, name = remote_path.rpartition(b"/")
    if not name:
        raise ValueError(f"not a file path: {remote_path!r}")
    return _framed(
        parent or b"/",
        b'LC_ALL=C tar --no-recursion -cf "$t" -- ' + quote(b"./" + name) + b" 2>/dev/null",
    )


def _framed(remote_dir: bytes, tar: bytes) -> bytes:
    """Run ``tar`` (writing the archive to ``"$t"``) in ``remote_dir`` and print the
    framing: ``STATUS LENGTH\\0`` then the archive."""
    if not remote_dir.startswith(b"/"):
        raise ValueError(f"remote directory must be an absolute path: {remote_dir!r}")
    return (
        b"(t=$(mktemp) || exit 1; r=1; cd -- "
        + quote(remote_dir)
        + b" && { "
        + tar
        + b"; r=$?; };"
        + b""" printf '%s %s\\0' "$r" "$(wc -c < "$t")"; cat -- "$t"; rm -f -- "$t";"""
        + b' [ "$r" = 0 ])'
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
        # the shell's end record: \0 STATUS \0 x9 / \0
        if len(self._buf) >= 2 and self._buf.endswith(b"/\0"):
            body = bytes(self._buf)
            if not body.startswith(b"\0") or body[-11:-2] != b"\0" * 9:
                raise ValueError(f"contents: bad end record {body[:40]!r}")
            self.exit_status = int(body[1:-11])
        elif len(self._buf) > 32:
            raise ValueError("contents: trailing bytes after the archive")
        return []


def parse_archive(archive: bytes) -> dict[bytes, tuple[int, bytes]]:
    """``{relative path: (mtime seconds, data)}`` of the regular files in a tar archive."""
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
