"""The remote side of the watcher: the sh commands it runs and the parsers of their output.

Everything here is pure (bytes in, bytes or records out) and unit-tested on captured
output. :mod:`sshvfs.watch.watcher` runs these commands: the short ones through the exec
lister's long-lived shells (framed by :func:`sshvfs.execlist.commands.end_command`), the inotify
*driver* as its own exec channel.

The remote work directory (``mktemp -d``) holds the watched directories' lists, one file
per batch (``l.N``, one absolute path a line: a path with a newline in it is never watched),
and the poll mode's stamps (``s.K``).

Change records are NUL-terminated on every stream:

- the driver prints ``#E N`` once batch N's watches are established, ``#F N reason`` when
  they failed, and inotifywait's events ``EVENT[,EVENT...] PATH`` (``%e %w%f%0``);
- a scan (poll, or the catch-up of a new batch) prints the changed paths (``find -print0``).
"""

from __future__ import annotations

from ..execlist.commands import ended, quote
from ..vfs.types import Change

#: inotify events that change what the mount shows (not access, open or close_nowrite)
INOTIFY_EVENTS = (
    b"modify,attrib,close_write,create,delete,moved_from,moved_to,move_self,delete_self"
)
#: events that add or remove a name in a directory (the rest change one entry's attributes)
NAME_EVENTS = frozenset({b"CREATE", b"DELETE", b"MOVED_FROM", b"MOVED_TO"})
#: name events that say the name is gone from where it was
GONE_EVENTS = frozenset({b"DELETE", b"MOVED_FROM"})
#: events on a watched directory itself: it is gone from where it was
SELF_EVENTS = frozenset({b"DELETE_SELF", b"MOVE_SELF", b"UNMOUNT"})
#: the kernel dropped events: nothing watched can be trusted
OVERFLOW = b"Q_OVERFLOW"
#: largest command line the lister's shell is sent at once (batches are split below it)
MAX_COMMAND = 96 * 1024


def workdir_command() -> bytes:
    """Makes the remote work directory and prints its path, then the server's clock
    (``date +%s.%N``: seconds since the epoch), each NUL-terminated."""
    return (
        b"""d=$(mktemp -d "${TMPDIR:-/tmp}/sshvfs-watch.XXXXXX")"""
        b""" && printf '%s\\0%s\\0' "$d" "$(date +%s.%N)\""""
    )


def parse_clock(record: bytes) -> tuple[float, float] | None:
    """The server's clock as :func:`workdir_command` printed it, and its resolution in
    seconds (1 where ``date`` has no ``%N``: it then prints ``%N`` or ``N`` literally);
    None when it is no time at all."""
    whole, dot, fraction = record.partition(b".")
    if not whole.isdigit():
        return None
    if dot and fraction.isdigit():
        return float(whole + b"." + fraction), 10.0 ** -len(fraction)
    return float(whole), 1.0


def probe_inotify_command() -> bytes:
    """Exit status 0 where inotifywait can watch with NUL-terminated records (3.20+)."""
    return (
        b"command -v inotifywait >/dev/null 2>&1"
        b" && inotifywait --help 2>&1 | grep -q -- --no-newline"
    )


def batch_commands(workdir: bytes, batch: int, dirs: list[bytes]) -> list[bytes]:
    """Commands that write ``dirs`` (absolute remote paths, none holding a newline) as the
    list file of ``batch``, each under :data:`MAX_COMMAND` bytes."""
    target = quote(workdir + b"/l." + str(batch).encode())
    commands: list[bytes] = []
    redirect = b" > "
    chunk: list[bytes] = []
    size = 0
    for d in dirs:
        if b"\n" in d:
            raise ValueError(f"a watched directory cannot hold a newline: {d!r}")
        q = quote(d)
        if chunk and size + len(q) + 1 > MAX_COMMAND:
            commands.append(b"printf '%s\\n' " + b" ".join(chunk) + redirect + target)
            redirect, chunk, size = b" >> ", [], 0
        chunk.append(q)
        size += len(q) + 1
    if chunk or not commands:
        commands.append(b"printf '%s\\n' " + b" ".join(chunk) + redirect + target)
    return commands


def _each_dir(workdir: bytes, batches: list[int]) -> bytes:
    """sh: the directories of ``batches`` NUL-separated on stdout (missing lists skipped)."""
    files = b" ".join(quote(workdir + b"/l." + str(n).encode()) for n in batches)
    return b"cat -- " + files + b" 2>/dev/null | tr '\\n' '\\0'"


def scan_command(workdir: bytes, batches: list[int], since: tuple[bytes, bytes]) -> bytes:
    """A scan of the directories of ``batches``: each one whose status changed since
    ``since``, and each entry in them that did, NUL-terminated. ``since`` is a find test
    and its argument: :func:`since_stamp`, :func:`since_time` or :func:`since_minutes`.
    Unreadable or vanished directories are skipped (their parents' scans report them)."""
    test, argument = since
    return (
        b"{ "
        + _each_dir(workdir, batches)
        + b' | xargs -0 -r sh -c \'exec find "$@" -maxdepth 1 '
        + test
        + b' "$0" -print0 2>/dev/null\' '
        + quote(argument)
        + b"; true; }"
    )


def since_stamp(workdir: bytes, stamp: int) -> tuple[bytes, bytes]:
    """The find test "status changed after stamp file ``stamp`` was touched"."""
    return b"-cnewer", workdir + b"/s." + str(stamp).encode()


def since_time(epoch: float) -> tuple[bytes, bytes]:
    """The find test "status changed after ``epoch`` (server seconds since the epoch)"."""
    return b"-newerct", b"@%.3f" % epoch


def since_minutes(minutes: int) -> tuple[bytes, bytes]:
    """The find test "status changed less than ``minutes`` minutes ago"."""
    return b"-cmin", b"-" + str(max(1, minutes)).encode()


def poll_command(
    workdir: bytes, batches: list[int], stamp: int, since: tuple[bytes, bytes]
) -> bytes:
    """A poll: touch stamp ``stamp`` (a later poll's reference), then :func:`scan_command`,
    then remove stamps older than ``stamp - 3``."""
    s = quote(workdir + b"/s." + str(stamp).encode())
    old = quote(workdir + b"/s." + str(stamp - 3).encode())
    return b"touch -- " + s + b" && " + scan_command(workdir, batches, since) + b"; rm -f -- " + old


def stamp_command(workdir: bytes, stamp: int) -> bytes:
    return b"touch -- " + quote(workdir + b"/s." + str(stamp).encode())


def remove_lists_command(workdir: bytes, batches: list[int]) -> bytes:
    files = b" ".join(quote(workdir + b"/l." + str(n).encode()) for n in batches)
    return b"rm -f -- " + files + b"; true"


def cleanup_command(workdir: bytes) -> bytes:
    return b"rm -rf -- " + quote(workdir)


def driver_command(workdir: bytes) -> bytes:
    """The inotify driver: reads batch numbers on stdin, one a line; for each, watches
    the directories of its list file that still exist with an ``inotifywait -m`` of its
    own, and prints ``#E N`` once the watches are established (``#F N reason`` if not).
    Events go to stdout as they come. At EOF on stdin (the channel closed) it stops every
    inotifywait and removes the work directory. One inotifywait per batch: a batch is
    never re-sent, and the watcher starts a fresh driver when batches pile up."""
    d = quote(workdir)
    script = (
        b"d=" + d + b"; p=; "
        b"trap 'kill $p 2>/dev/null; rm -rf -- \"$d\"' EXIT; trap 'exit 1' HUP INT TERM; "
        b"while read -r n; do "
        b"case $n in *[!0-9]*|'') continue;; esac; "
        b"l=$d/l.$n; "
        b"tr '\\n' '\\0' < \"$l\" | xargs -0 -r sh -c "
        b"'exec find \"$@\" -maxdepth 0 -type d -readable -executable 2>/dev/null' sh"
        b" | tr '\\0' '\\n' > \"$l.ok\"; "
        b'if [ ! -s "$l.ok" ]; then printf \'#E %s\\0\' "$n"; continue; fi; '
        b"inotifywait -m --no-newline --format '%e %w%f%0' -e "
        + INOTIFY_EVENTS
        + b' --fromfile "$l.ok" 2>"$d/e.$n" </dev/null & q=$!; p="$p $q"; '
        b"while :; do "
        b'if grep -q "Watches established" "$d/e.$n" 2>/dev/null; then'
        b" printf '#E %s\\0' \"$n\"; break; fi; "
        b'if ! kill -0 "$q" 2>/dev/null; then'
        b" printf '#F %s %s\\0' \"$n\""
        b" \"$(head -c 300 \"$d/e.$n\" | tr '\\0\\n' '  ')\"; break; fi; "
        b"sleep 0.02 2>/dev/null || sleep 1; "
        b"done; "
        b"done"
    )
    # sent to the login shell, which replaces itself with a POSIX sh running the script
    return b"exec sh -c " + quote(script)


def take_records(buf: bytearray) -> list[bytes]:
    """Remove and return the complete NUL-terminated records at the head of ``buf``."""
    end = buf.rfind(b"\0")
    if end < 0:
        return []
    records = bytes(buf[:end]).split(b"\0")
    del buf[: end + 1]
    return records


def mount_path(remote: bytes, root: bytes) -> bytes | None:
    """The mount path of remote path ``remote`` under remote root ``root`` (None if
    outside). Trailing slashes (inotifywait's ``%w``) are ignored."""
    remote = remote.rstrip(b"/") or b"/"
    root = root.rstrip(b"/") or b"/"
    if root == b"/":
        return remote
    if remote == root:
        return b"/"
    if remote.startswith(root + b"/"):
        return remote[len(root) :]
    return None


def remote_path(path: bytes, root: bytes) -> bytes:
    """The remote path of mount path ``path`` (``b"/..."``) under ``root``."""
    base = root.rstrip(b"/")
    return (base + path) if path != b"/" else (base or b"/")


def parse_event(record: bytes, root: bytes) -> Change | None:
    """An inotifywait record (``EVENTS PATH``) as a change of a mount path, or None when
    it is outside the mount or malformed."""
    events, sep, where = record.partition(b" ")
    if not sep or not events:
        return None
    names = set(events.split(b","))
    if OVERFLOW in names:
        return Change(b"/", "all")
    path = mount_path(where, root)
    if path is None:
        return None
    if names & SELF_EVENTS:
        return Change(path, "gone")
    if path == b"/" and where.endswith(b"/"):
        return Change(path, "entry")  # the root's own attributes
    if names & NAME_EVENTS:
        return Change(path, "name", went=not names & (NAME_EVENTS - GONE_EVENTS))
    return Change(path, "entry")


def parse_scan(record: bytes, root: bytes, watched: set[bytes] | frozenset[bytes]) -> Change | None:
    """A scan's record: a watched directory itself (its listing changed, names unknown)
    or an entry in one (its attributes did)."""
    path = mount_path(record, root)
    if path is None:
        return None
    return Change(path, "dir" if path in watched else "entry")


class RecordParser:
    """Parses a short command's NUL-terminated records in a long-lived shell (the
    :class:`~sshvfs.execlist.shell.RemoteShell` parser protocol: ``feed`` and ``exit_status``);
    the records are kept in :attr:`records`, up to ``limit`` bytes of them."""

    def __init__(self, limit: int = 256 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._size = 0
        self._ended = False
        self.records: list[bytes] = []
        self.exit_status: int | None = None

    def feed(self, chunk: bytes) -> list[object]:
        self._buf += chunk
        while not self._ended:
            cut = self._buf.find(b"\0")
            if cut < 0:
                break
            if cut == 0:  # the empty record: the shell's end record starts here
                self._ended = True
                break
            self.records.append(bytes(self._buf[:cut]))
            self._size += cut
            if self._size > self._limit:
                raise ValueError(f"more than {self._limit} bytes of records")
            del self._buf[: cut + 1]
        if self._ended:
            self.exit_status = ended(self._buf)
        return []
