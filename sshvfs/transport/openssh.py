"""The OpenSSH transport: the user's own ``ssh`` carries SFTP and the exec channel.

One ``ssh -M`` master per mount holds the connection (so ssh_config, the agent, FIDO keys,
GSSAPI, ProxyJump and ControlMaster all work exactly as with ``ssh`` and sshfs). SFTP runs
over ``ssh -S sock -s HOST sftp``, and remote commands over ``ssh -S sock HOST CMD``: each is
a multiplexed session of that one connection, started in about a millisecond.

Why: the per-request cost of SFTP is the wire (../README, "Transports"). asyncssh's transport
(encryption, framing, windows) in Python cost 120-160 us of CPU per LSTAT here; the C client
does that work for 57, and the round trip halves.

Mux clients never fall back to a connection of their own (``ProxyCommand=false``): if the
master is gone, they fail at once and the session reconnects. Asyncio side only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from ..config import MountOptions, Target
from ..errors import UserError

log = logging.getLogger(__name__)

#: lines of the master's stderr kept for error messages (bounded: the master may be chatty)
_KEEP_LINES = 40
#: the server's software version, from ``ssh -v``'s banner line
_BANNER = re.compile(rb"remote software version (\S+)")


def ssh_program(opts: MountOptions) -> list[str]:
    """``ssh_command=`` (a program and arguments, split as a shell would) or ``ssh``."""
    if opts.ssh_command:
        try:
            argv = shlex.split(opts.ssh_command)
        except ValueError as exc:
            raise UserError(f"bad ssh_command '{opts.ssh_command}': {exc}", 2) from exc
        if not argv:
            raise UserError("ssh_command is empty", 2)
        return argv
    return ["ssh"]


def available(opts: MountOptions) -> bool:
    """Is the ssh program there (what transport=auto decides on)?"""
    try:
        program = ssh_program(opts)[0]
    except UserError:
        return True  # let the openssh transport report the bad value
    return shutil.which(program) is not None


@functools.cache
def _prepend_works(program: str) -> bool:
    """Does this ssh take ``Ciphers=^list`` (OpenSSH 8.2 and later)?"""
    try:
        done = subprocess.run([program, "-V"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    m = re.search(rb"OpenSSH_(\d+)\.(\d+)", done.stderr + done.stdout)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (8, 2)


def _o(name: str, value: object) -> list[str]:
    return ["-o", f"{name}={value}"]


def option_args(target: Target, opts: MountOptions) -> list[str]:
    """The mount's ``-o`` SSH options as ssh arguments. Only options given are passed, so
    ssh_config and ssh's defaults decide the rest, as they do for ``ssh`` itself."""
    args: list[str] = []
    if opts.ssh_config:
        args += ["-F", opts.ssh_config]
    if opts.port is not None:
        args += ["-p", str(opts.port)]
    user = opts.user or target.user
    if user:
        args += ["-l", user]
    for path in opts.identity_files:
        if not os.path.exists(path):
            raise UserError(f"identity file not found: {path}")
        args += ["-i", path]
    for path in opts.certificate_files:
        args += _o("CertificateFile", path)
    # "ask" cannot ask: the mount has no terminal once it is in the background
    mode = "yes" if opts.strict_host_key_checking == "ask" else opts.strict_host_key_checking
    args += _o("StrictHostKeyChecking", mode)
    if opts.known_hosts:
        args += _o("UserKnownHostsFile", opts.known_hosts)
    if opts.connect_timeout:
        args += _o("ConnectTimeout", max(1, round(opts.connect_timeout)))
    args += _o("ServerAliveInterval", round(opts.server_alive_interval))
    args += _o("ServerAliveCountMax", opts.server_alive_count_max)
    args += _o("Compression", opts.compression)
    if not opts.ciphers and _prepend_works(ssh_program(opts)[0]):
        # AES-GCM first, as the asyncssh transport does: sequential reads 2.82 -> 2.40 s
        # against chacha20 (the bench's seq-read). Ciphers= (here or -o) decides otherwise.
        args += _o("Ciphers", "^aes128-gcm@openssh.com,aes256-gcm@openssh.com")
    if opts.proxy_jump:
        args += ["-J", opts.proxy_jump]
    for field_name, keyword in (
        ("ciphers", "Ciphers"),
        ("host_key_algorithms", "HostKeyAlgorithms"),
        ("kex_algorithms", "KexAlgorithms"),
        ("macs", "MACs"),
        ("preferred_authentications", "PreferredAuthentications"),
        ("pubkey_authentication", "PubkeyAuthentication"),
        ("password_authentication", "PasswordAuthentication"),
        ("kbd_interactive_authentication", "KbdInteractiveAuthentication"),
        ("proxy_command", "ProxyCommand"),
        ("host_key_alias", "HostKeyAlias"),
        ("address_family", "AddressFamily"),
        ("bind_address", "BindAddress"),
        ("tcp_keepalive", "TCPKeepAlive"),
        ("identity_agent", "IdentityAgent"),
    ):
        value = getattr(opts, field_name)
        if value is not None:
            args += _o(keyword, value)
    return args


def _explain(lines: list[bytes], where: str, policy_files: str) -> str:
    """ssh's own words for a failed connection, as one line in sshvfs's terms."""
    text = [ln.decode("utf-8", "replace").strip() for ln in lines]
    text = [t for t in text if t and not t.startswith("debug")]
    joined = " ".join(text)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in joined:
        return (
            f"host key for {where} does not match {policy_files}"
            " (possible man-in-the-middle attack); refusing to mount"
        )
    if "Host key verification failed" in joined or "No ED25519 host key is known" in joined:
        return (
            f"host {where} is not in known_hosts ({policy_files});"
            " connect once with ssh to check its key, or use -o StrictHostKeyChecking=accept-new"
        )
    for t in text:
        if "Permission denied" in t:
            return f"authentication to {where} refused: {t}"
    for t in text:
        if "Connection refused" in t or "Could not resolve" in t or "No route" in t:
            return f"cannot connect to {where}: {t.split(': ')[-1]}"
        if "timed out" in t:
            return f"connection to {where} timed out"
    last = text[-1] if text else "ssh exited without saying why"
    return f"connection to {where} failed: {last}"


def _signal(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    """Signal a child that asyncio has not seen end yet.

    Not ``proc.kill()``: Popen's ``send_signal`` first polls, and that poll reaps a child
    that has just exited before asyncio's watcher thread does, which then logs "Unknown child
    process" and reports status 255 (seen when closing a mount raced its sessions' exit).
    A pid is only reused after the watcher reaps it, which asyncio reports at once."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_status: int | None


class ExecProcess:
    """A remote command over the master, shaped like the asyncssh process that
    :class:`sshvfs.execlist.shell.RemoteShell` drives (stdin/stdout/stderr streams, close)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin and proc.stdout and proc.stderr
        self._proc = proc
        self.stdin = proc.stdin
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def close(self) -> None:
        _signal(self._proc)  # closing the mux session ends the remote command


class Master:
    """The ``ssh -M`` master of one connection, and its multiplexed sessions."""

    def __init__(self, target: Target, opts: MountOptions) -> None:
        self.target = target
        self.opts = opts
        self.program = ssh_program(opts)
        self._dir = tempfile.mkdtemp(prefix="sshvfs-ssh-")
        self.socket = os.path.join(self._dir, "master")
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: list[bytes] = []
        self._drain: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self.server_version = ""
        self.closing = False
        #: the mux sessions' processes (SFTP, remote shells, commands)
        self._sessions: set[asyncio.subprocess.Process] = set()
        self.on_lost: Callable[[Exception | None], None] | None = None

    # -- the master --------------------------------------------------------------------

    async def start(self, where: str, policy_files: str) -> None:
        argv = [
            *self.program,
            "-M",
            "-S",
            self.socket,
            "-N",
            "-T",
            "-x",
            "-a",
            "-v",  # for the server's version (the SFTP symlink quirk) and clear errors
            *_o("ControlPersist", "no"),
            *_o("ClearAllForwardings", "yes"),
            *_o("BatchMode", "yes"),
            *option_args(self.target, self.opts),
            "--",
            self.target.host,
        ]
        log.debug("starting %s", shlex.join(argv))
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C meant for the mount command is ours
            )
        except OSError as exc:
            self.cleanup()
            raise UserError(f"cannot run {self.program[0]}: {exc.strerror or exc}") from exc
        self._drain = asyncio.ensure_future(self._read_stderr())
        try:
            await self._wait_for_socket(where, policy_files)
        except asyncio.CancelledError:
            # given up (a reconnect cancelled as the mount ends): the master must not
            # outlive it (it runs in a session of its own), nor its directory
            self.close()
            self.cleanup()
            raise
        self._watch = asyncio.ensure_future(self._watch_exit())

    async def _wait_for_socket(self, where: str, policy_files: str) -> None:
        """Until the master's socket is there (it is connected and authenticated)."""
        assert self._proc is not None and self._drain is not None
        limit = (self.opts.connect_timeout or 60) + 15
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        delay = 0.002
        while not os.path.exists(self.socket):
            if self._proc.returncode is not None:
                await asyncio.wait_for(asyncio.shield(self._drain), 5)
                self.cleanup()
                raise UserError(_explain(self._stderr, where, policy_files))
            if loop.time() > deadline:
                self.close()
                await self.wait_closed()
                raise UserError(f"connection to {where} timed out")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            if not self.server_version and (m := _BANNER.search(line)):
                self.server_version = m.group(1).decode("ascii", "replace")
            if not line.startswith(b"debug"):
                log.debug("ssh: %s", line.decode("utf-8", "replace").rstrip())
            self._stderr.append(line)
            del self._stderr[:-_KEEP_LINES]

    async def _watch_exit(self) -> None:
        assert self._proc is not None
        status = await self._proc.wait()
        self.cleanup()  # its socket went with it; nothing else is in the directory
        if self._drain is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._drain), 1)
            except TimeoutError:
                pass
        if not self.closing and self.on_lost is not None:
            said = [ln for ln in self._stderr if not ln.startswith(b"debug")]
            reason = said[-1].decode("utf-8", "replace").strip() if said else ""
            self.on_lost(ConnectionError(f"ssh exited with status {status}: {reason}"))

    # -- sessions over the master ------------------------------------------------------

    def mux_argv(self, *rest: str | bytes) -> list[str | bytes]:
        """A session over the master; it fails at once rather than connect by itself."""
        return [
            *self.program,
            "-S",
            self.socket,
            *_o("ControlMaster", "no"),
            *_o("ProxyCommand", "false"),
            *_o("BatchMode", "yes"),
            *_o("LogLevel", "QUIET"),
            "-T",
            *rest,
        ]

    async def sftp_process(self) -> tuple[asyncio.subprocess.Process, int, int]:
        """The SFTP session, as a mux session (the master itself runs no session): the
        process, the fd its input is written to and the fd its output is read from (plain
        pipes, ours to close: the SFTP client reads them with a protocol of its own)."""
        to_child, child_in = os.pipe()
        child_out, from_child = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.mux_argv("-s", "--", self.target.host, "sftp"),
                stdin=to_child,
                stdout=from_child,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            for fd in (child_in, child_out):
                os.close(fd)
            raise
        finally:
            for fd in (to_child, from_child):
                os.close(fd)
        return self._track(proc), child_in, child_out

    def _track(self, proc: asyncio.subprocess.Process) -> asyncio.subprocess.Process:
        """Remember a session's process until it ends, so that closing reaps it."""
        if len(self._sessions) > 64:
            self._sessions = {p for p in self._sessions if p.returncode is None}
        self._sessions.add(proc)
        return proc

    async def create_process(self, command: str | bytes, encoding: None = None) -> ExecProcess:
        """Start ``command`` (sent as it is) in the login shell of the remote user."""
        return ExecProcess(await self._command(command, asyncio.subprocess.PIPE))

    async def _command(self, command: str | bytes, stdin: int) -> asyncio.subprocess.Process:
        if self.closing:
            raise ConnectionError("the connection is closed")
        return self._track(
            await asyncio.create_subprocess_exec(
                *self.mux_argv("--", self.target.host, command),
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        )

    async def run(
        self,
        command: str | bytes,
        encoding: None = None,
        stdin: object = None,
        check: bool = False,
    ) -> ExecResult:
        """Run ``command`` to its end with stdin at EOF."""
        proc = await self._command(command, asyncio.subprocess.DEVNULL)
        try:
            out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                _signal(proc)
                await proc.wait()
        return ExecResult(out, err, proc.returncode)

    # -- the end -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the master (and so every session over it)."""
        self.closing = True
        if self._proc is not None:
            _signal(self._proc, signal.SIGTERM)

    async def wait_closed(self) -> None:
        try:
            if self._proc is not None:
                try:
                    await asyncio.wait_for(self._proc.wait(), 3)
                except TimeoutError:
                    _signal(self._proc)
                    await self._proc.wait()
            if self._watch is not None:
                self._watch.cancel()
            # the sessions end with the master; reap them here, on the loop that made them
            for proc in list(self._sessions):
                _signal(proc)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 3)
            self._sessions.clear()
        finally:
            self.cleanup()  # also when the wait is given up (cancelled, timed out)

    def cleanup(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
