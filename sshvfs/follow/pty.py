"""``sshvfs follow MOUNTPOINT -- COMMAND``: run a command (usually ``ssh host``) in a pty with
full passthrough and report the remote shell's directory to the mount's control file.

Output passes through unchanged and first; the parser (:mod:`sshvfs.follow.osc7`) only
observes. Writing ``.sshvfs/cwd`` happens in a separate thread, so a slow mount never
delays the terminal. Every prompt is reported (even an unchanged directory), because the
daemon drops the listing of the reported directory each time: the command just run may
have changed files there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import pty
import queue
import select
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator, Sequence

from ..errors import UserError
from .osc7 import CwdParser, resolve_home

log = logging.getLogger(__name__)

CHUNK = 65536


class Reporter(threading.Thread):
    """Writes reported directories to ``.sshvfs/cwd``; only the newest pending one counts."""

    def __init__(self, mountpoint: str, home: bytes | None) -> None:
        super().__init__(name="sshvfs-follow-reporter", daemon=True)
        self.control = os.path.join(mountpoint, ".sshvfs", "cwd")
        self.home = home
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self.written: list[bytes] = []

    def report(self, path: bytes) -> None:
        self._queue.put(path)

    def stop(self) -> None:
        self._queue.put(None)

    def run(self) -> None:
        while True:
            path = self._queue.get()
            while path is not None and not self._queue.empty():
                newer = self._queue.get()  # skip directories already left again
                if newer is None:
                    self._write(path)
                    return
                path = newer
            if path is None:
                return
            self._write(path)

    def _write(self, path: bytes) -> None:
        if path.startswith(b"~"):
            if self.home is None:
                return
            path = resolve_home(path, self.home)
        try:
            with open(self.control, "wb") as f:
                f.write(path + b"\n")
            self.written.append(path)
        except OSError as exc:
            # EINVAL/ENOTDIR: not a directory on the remote (e.g. a prompt false positive)
            log.debug("cwd %r not accepted: %s", path, exc)


def remote_home(mountpoint: str) -> bytes | None:
    try:
        with open(os.path.join(mountpoint, ".sshvfs", "status"), "rb") as f:
            home = json.load(f).get("remote_home")
    except (OSError, ValueError):
        return None
    return os.fsencode(home) if isinstance(home, str) else None


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def _copy_winsize(src: int, dst: int) -> None:
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


def _exit_code(status: int) -> int:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 1


def follow(mountpoint: str, command: Sequence[str], prompt_fallback: bool = True) -> int:
    """Run ``command`` in a pty until it exits; returns its exit status."""
    control = os.path.join(mountpoint, ".sshvfs", "cwd")
    if not os.path.exists(control):
        raise UserError(f"{mountpoint} is not an sshvfs mount (no .sshvfs/cwd)")
    if not command:
        raise UserError("follow needs a command, e.g. sshvfs follow MNT -- ssh host", 2)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    pid, master = pty.fork()
    if pid == 0:  # the child: the command on the pty's slave side
        try:
            os.execvp(command[0], list(command))
        except OSError as exc:
            os.write(2, f"sshvfs follow: cannot run {command[0]}: {exc.strerror}\r\n".encode())
        os._exit(127)
    if os.isatty(stdin):
        _copy_winsize(stdin, master)

    def on_winch(_signum: int, _frame: object) -> None:
        _copy_winsize(stdin, master)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGWINCH)

    previous = signal.signal(signal.SIGWINCH, on_winch)
    reporter = Reporter(mountpoint, remote_home(mountpoint))
    reporter.start()
    parser = CwdParser(prompt_fallback=prompt_fallback)
    try:
        with raw_terminal(stdin):
            _pump(stdin, stdout, master, parser, reporter)
    finally:
        signal.signal(signal.SIGWINCH, previous)
        reporter.stop()
        reporter.join(5)
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return _exit_code(status)


def _pump(stdin: int, stdout: int, master: int, parser: CwdParser, reporter: Reporter) -> None:
    inputs = [master, stdin]
    while True:
        try:
            ready, _, _ = select.select(inputs, [], [])
        except InterruptedError:
            continue
        if master in ready:
            try:
                data = os.read(master, CHUNK)
            except OSError as exc:
                if exc.errno == errno.EIO:  # the child closed the pty: it is done
                    return
                raise
            if not data:
                return
            _write_all(stdout, data)  # the terminal first, always
            for report in parser.feed(data):
                reporter.report(report.path)
        if stdin in ready:
            try:
                data = os.read(stdin, CHUNK)
            except OSError:
                data = b""
            if not data:
                inputs.remove(stdin)  # our stdin ended; keep relaying output
                with contextlib.suppress(OSError):
                    _write_all(master, b"\x04")  # EOF to the command, as a terminal would
                continue
            _write_all(master, data)


def watch_cwd(mountpoint: str, watch: bool, interval: float = 0.25) -> int:
    """``sshvfs cwd``: print the followed directory (and, with ``watch``, each change)."""
    import time

    control = os.path.join(mountpoint, ".sshvfs", "cwd")
    last: bytes | None = None
    while True:
        try:
            with open(control, "rb") as f:
                current = f.read().strip()
        except FileNotFoundError:
            raise UserError(f"{mountpoint} is not an sshvfs mount (no .sshvfs/cwd)") from None
        except OSError as exc:
            raise UserError(f"cannot read {control}: {exc.strerror}") from exc
        if current != last:
            if current or not watch:
                sys.stdout.write(os.fsdecode(current) + "\n" if current else "")
                sys.stdout.flush()
            last = current
        if not watch:
            return 0 if current else 1
        time.sleep(interval)
