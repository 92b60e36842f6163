"""The embedded demo server: an in-process asyncssh SSH server (SFTP + exec) on 127.0.0.1.

It exists so a newcomer can see a mount work without any SSH set-up, and so tests can inject
faults from a server they control. Keys are generated per start and written to a private
temporary directory; only the generated client key is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass

import asyncssh

log = logging.getLogger(__name__)


@dataclass
class DemoEndpoint:
    host: str
    port: int
    client_key: str
    known_hosts: str
    keydir: str


async def _copy(
    source: asyncio.StreamReader | asyncssh.SSHReader[bytes],
    sink: asyncio.StreamWriter | asyncssh.SSHWriter[bytes],
    eof: bool,
) -> None:
    """``source`` to ``sink`` until EOF; then EOF on ``sink`` if ``eof``. Either side may
    go away at any time: that only ends the copy."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        if eof:
            sink.write_eof()
    except (asyncssh.Error, OSError):
        pass


async def _exec(
    process: asyncssh.SSHServerProcess[bytes], root: str, children: set[asyncio.subprocess.Process]
) -> None:
    """Run an exec request with /bin/sh in ``root``; no interactive shells. The child stays
    in ``children`` while it runs, so that closing the server can end it.

    The streams are copied by hand, not with asyncssh's ``redirect``: that raised KeyError
    in its feeding task when the client closed the channel first (OpenSSH's client does,
    right after the exit status), and an error there closes the whole connection."""
    command = process.command
    if command is None:
        process.stderr.write(b"this demo server runs commands only\n")
        process.exit(1)
        return
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        cwd=root,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    children.add(proc)
    feeding = asyncio.ensure_future(_copy(process.stdin, proc.stdin, eof=True))
    try:
        await asyncio.gather(
            _copy(proc.stdout, process.stdout, eof=False),
            _copy(proc.stderr, process.stderr, eof=False),
        )
        status = await proc.wait()
    finally:
        feeding.cancel()
        children.discard(proc)
        if proc.returncode is None:
            proc.kill()
    try:
        process.exit(status)
        await process.wait_closed()
    except (asyncssh.Error, OSError):
        pass  # the client went away first (or the server is closing): nobody to tell


class DemoServer:
    """Start with :meth:`start` on an asyncio loop; :meth:`close` stops it."""

    def __init__(self, root: str, *, allow_exec: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.allow_exec = allow_exec
        self._server: asyncssh.SSHAcceptor | None = None
        self._keydir: tempfile.TemporaryDirectory[str] | None = None
        #: the commands running (a client's long-lived listing shell lives until it leaves)
        self._children: set[asyncio.subprocess.Process] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> DemoEndpoint:
        self._keydir = tempfile.TemporaryDirectory(prefix="sshvfs-demo-keys-")
        keydir = self._keydir.name
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        client_path = os.path.join(keydir, "id_ed25519")
        client_key.write_private_key(client_path)
        os.chmod(client_path, 0o600)
        authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())

        root, children = self.root, self._children

        def process_factory(process: asyncssh.SSHServerProcess[bytes]) -> asyncio.Task[None]:
            return asyncio.ensure_future(_exec(process, root, children))

        self._server = await asyncssh.listen(
            host,
            port,
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            sftp_factory=True,
            process_factory=process_factory if self.allow_exec else None,
            encoding=None,
            allow_scp=False,
            server_factory=None,
        )
        bound = self._server.sockets[0].getsockname()[1]
        known_path = os.path.join(keydir, "known_hosts")
        with open(known_path, "w", encoding="ascii") as f:
            f.write(f"[{host}]:{bound} {host_key.export_public_key().decode()}")
        log.info("demo SSH server on %s:%d serving %s", host, bound, root)
        return DemoEndpoint(host, bound, client_path, known_path, keydir)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # end the commands still running and reap them while the loop is alive (its child
        # watcher would otherwise report their exit to a closed loop)
        for proc in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in list(self._children):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        if self._keydir is not None:
            self._keydir.cleanup()
            self._keydir = None
