"""RemoteShell: one long-lived POSIX ``sh`` on an SSH exec channel, running commands in turn.

Starting a command over SSH costs a channel, a fork and the login shell's rc files --
measured here 100-600 ms a command (root's .bashrc runs ``pyenv init``; conda and nvm do
the like). A command written to a shell that is already running costs one round trip.
Each command's output is framed so the shell stays usable from one command to the next:
stdout ends with :func:`sshvfs.execlist.commands.end_command`'s end record (the exit status),
stderr with a line holding a random token. The login shell only runs ``exec sh -s``, so
the commands always meet a POSIX sh, whatever the login shell is.

Anything unexpected (a parse error, a cancelled or abandoned command, EOF) closes the
shell: its output can no longer be trusted to be in step. Asyncio side only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import cast

import asyncssh

from ..vfs.types import Entry
from .commands import PROBE_OUTPUT, ListingParser, end_command, end_record, probe_command

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_STDERR_KEEP = 64 * 1024
#: what the login shell runs: replace itself with a POSIX sh reading commands from stdin
START_COMMAND = b"exec sh -s"


class ShellClosed(Exception):
    """The shell ended or was closed before the command's output was complete."""


class RemoteShell:
    """Open with :meth:`open`; :meth:`run` one command at a time; :meth:`close` when done."""

    def __init__(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self._proc = proc
        self._token = secrets.token_hex(16).encode()
        self._marker = b"\n" + self._token + b"\n"
        self._stderr: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._stderr_task = asyncio.ensure_future(self._read_stderr())
        self._busy = False
        self.closed = False
        #: loop time of the last command's end (for idle timeouts)
        self.last_used = time.monotonic()

    @classmethod
    async def open(cls, conn: asyncssh.SSHClientConnection) -> RemoteShell:
        """Start the shell (raises asyncssh.Error/OSError when the server refuses)."""
        # bytes: asyncssh sends a bytes command as it is
        proc = await conn.create_process(cast(str, START_COMMAND), encoding=None)
        return cls(proc)

    async def _read_stderr(self) -> None:
        """Split stderr into one segment per command (at the token lines)."""
        buffer = b""
        try:
            while chunk := await self._proc.stderr.read(_CHUNK):
                buffer += chunk
                while (cut := buffer.find(self._marker)) >= 0:
                    self._stderr.put_nowait(buffer[:cut][:_STDERR_KEEP])
                    buffer = buffer[cut + len(self._marker) :]
                if len(buffer) > 2 * _STDERR_KEEP:  # a flood: keep the head only
                    buffer = buffer[:_STDERR_KEEP] + buffer[-len(self._marker) :]
        except (asyncssh.Error, OSError):
            pass
        finally:
            self._stderr.put_nowait(None)

    def _send(self, command: bytes) -> None:
        if self.closed or self._busy:
            raise ShellClosed("shell closed" if self.closed else "shell busy")
        self._busy = True
        # </dev/null: no command may eat the commands that follow it on our stdin
        self._proc.stdin.write(command + b" </dev/null; " + end_command(self._token) + b"\n")

    async def _stderr_segment(self) -> bytes:
        segment = await self._stderr.get()
        if segment is None:
            raise ShellClosed("the shell's stderr ended")
        return segment

    async def check(self, timeout: float) -> bool:
        """Run the probe through this shell: is its output exactly right?"""
        expected = PROBE_OUTPUT + end_record(0)
        got = b""
        try:
            async with asyncio.timeout(timeout):
                self._send(probe_command())
                while len(got) < len(expected):
                    chunk = await self._proc.stdout.read(len(expected) - len(got))
                    if not chunk:
                        break
                    got += chunk
                if got == expected:
                    await self._stderr_segment()
                    self._done()
                    return True
        except (TimeoutError, ShellClosed, asyncssh.Error, OSError):
            pass
        log.debug("shell probe output %r, expected %r", got[:200], expected)
        self.close()
        return False

    async def run(
        self,
        command: bytes,
        parser: ListingParser,
        limit: int | None = None,
        on_batch: Callable[[list[tuple[bytes, Entry]]], None] | None = None,
    ) -> tuple[list[tuple[bytes, Entry]] | None, int, bytes]:
        """Run ``command``, its stdout parsed by ``parser`` (a framed one) as it arrives;
        ``on_batch`` gets the entries of each chunk as soon as they are parsed.

        Returns ``(records, exit status, stderr)``; records is None once more than
        ``limit`` came (the shell is then closed: closing the channel stops the command).
        Raises ShellClosed, BulkParseError or asyncssh errors, closing the shell."""
        records: list[tuple[bytes, Entry]] = []
        done = False
        try:
            self._send(command)
            while parser.exit_status is None:
                chunk = await self._proc.stdout.read(_CHUNK)
                if not chunk:
                    raise ShellClosed("the shell's stdout ended mid-command")
                batch = parser.feed(chunk)
                records += batch
                if on_batch is not None and batch:
                    on_batch(batch)
                if limit is not None and len(records) > limit:
                    return None, -1, b""
            stderr = await self._stderr_segment()
            done = True
            self._done()
            return records, parser.exit_status, stderr
        finally:
            if not done:
                self.close()

    def _done(self) -> None:
        self._busy = False
        self.last_used = time.monotonic()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stderr_task.cancel()
        try:
            self._proc.stdin.write_eof()
        except (asyncssh.Error, OSError):
            pass
        self._proc.close()
