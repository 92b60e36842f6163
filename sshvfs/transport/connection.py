"""The SSH connection: options -> a transport (OpenSSH or asyncssh), host key policy,
clear errors, exec and SFTP.

Everything here runs on the mount's one asyncio loop (see :meth:`sshvfs.app.mount.Mount.run`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from ..config import MountOptions, Target
from ..errors import UserError
from . import openssh, sftppipe, sftpvalues

#: an SFTP session: asyncssh's client (the asyncssh transport) or the lean one over the
#: pipes of an ``ssh -s sftp`` (the OpenSSH transport); the same calls, the same errors
SftpSession = asyncssh.SFTPClient | sftppipe.SftpClient
#: what either session's calls answer: an open file, a file's attributes, a directory entry
SftpHandle = asyncssh.SFTPClientFile | sftppipe.SftpHandle
SftpAttrs = asyncssh.SFTPAttrs | sftpvalues.RemoteAttrs
SftpName = asyncssh.SFTPName | sftpvalues.RemoteName

log = logging.getLogger(__name__)

#: measured on loopback: AES-GCM moves bulk data ~1.5x faster than asyncssh's chacha20 default
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: a large channel window keeps many 255 KiB reads in flight
WINDOW = 16 * 1024 * 1024
MAX_PACKET = 256 * 1024


def _default_known_hosts() -> list[str]:
    home = os.path.expanduser("~/.ssh/known_hosts")
    return [p for p in (home, "/etc/ssh/ssh_known_hosts") if os.path.exists(p)]


def _host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


@dataclass
class HostKeyPolicy:
    mode: str  # yes | no | accept-new
    files: list[str]
    #: the file a newly accepted key is written to
    record_file: str

    def load(self) -> asyncssh.SSHKnownHosts | None:
        if self.mode == "no":
            return None
        text = ""
        for path in self.files:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text += f.read() + "\n"
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise UserError(f"cannot read known hosts file {path}: {exc.strerror}") from exc
        try:
            return asyncssh.import_known_hosts(text)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise UserError(f"bad known_hosts file {', '.join(self.files)}: {exc}") from exc

    @classmethod
    def from_options(cls, opts: MountOptions) -> HostKeyPolicy:
        mode = "yes" if opts.strict_host_key_checking == "ask" else opts.strict_host_key_checking
        files = [opts.known_hosts] if opts.known_hosts else _default_known_hosts()
        record = opts.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
        return cls(mode, files, record)


class _Client(asyncssh.SSHClient):
    """Accepts an unknown host's key once (accept-new) and remembers it; reports a lost
    connection (``on_lost``) once it was established."""

    def __init__(
        self, accept_unknown: bool, on_lost: Callable[[Exception | None], None] | None = None
    ) -> None:
        self.accept_unknown = accept_unknown
        self.accepted: asyncssh.SSHKey | None = None
        self.on_lost = on_lost
        self.established = False

    def auth_completed(self) -> None:
        self.established = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.established and self.on_lost is not None:
            self.on_lost(exc)

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        if self.accept_unknown:
            self.accepted = key
            return True
        return False


@dataclass
class Connection:
    """One SSH connection and its SFTP session."""

    #: runs remote commands (create_process, run) and owns the connection (close)
    conn: Any
    sftp: SftpSession
    #: absolute remote directory that is the mount root
    root: bytes
    host: str
    port: int
    #: the login directory (what ``~`` means in the remote shell)
    home: bytes = b""
    #: "openssh" (conn is a :class:`~sshvfs.transport.openssh.Master`) or "asyncssh"
    transport: str = "asyncssh"

    async def close(self) -> None:
        try:
            self.sftp.exit()
        except Exception:  # best effort on the way out
            log.debug("sftp exit failed", exc_info=True)
        self.conn.close()
        try:
            await asyncio.wait_for(self.conn.wait_closed(), 5)
        except (TimeoutError, OSError):
            pass


def connect_kwargs(target: Target, opts: MountOptions) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "window": WINDOW,
        "max_pktsize": MAX_PACKET,
        "connect_timeout": opts.connect_timeout or None,
        "keepalive_interval": opts.server_alive_interval,
        "keepalive_count_max": opts.server_alive_count_max,
        "compression_algs": ["zlib@openssh.com", "zlib", "none"]
        if opts.compression == "yes"
        else ["none"],
    }
    if opts.ssh_config:
        kw["config"] = [opts.ssh_config]
    if opts.port is not None:
        kw["port"] = opts.port
    user = opts.user or target.user
    if user:
        kw["username"] = user
    if opts.identity_files:
        missing = [p for p in opts.identity_files if not os.path.exists(p)]
        if missing:
            raise UserError(f"identity file not found: {missing[0]}")
        kw["client_keys"] = opts.identity_files
    if opts.ciphers:
        kw["encryption_algs"] = [c.strip() for c in opts.ciphers.split(",") if c.strip()]
    else:
        supported = [a.decode() for a in asyncssh.encryption.get_encryption_algs()]
        kw["encryption_algs"] = [c for c in PREFERRED_CIPHERS if c in supported] + [
            c for c in supported if c not in PREFERRED_CIPHERS
        ]
    if opts.proxy_jump:
        kw["tunnel"] = opts.proxy_jump
    kw.update(_ssh_option_kwargs(opts))
    return kw


def _algs(text: str) -> list[str]:
    return [a.strip() for a in text.split(",") if a.strip()]


def _ssh_option_kwargs(opts: MountOptions) -> dict[str, Any]:
    """The ``-o SSHOPT=VAL`` options beyond the basic ones, as asyncssh connect() keywords.
    Only options given are passed, so ssh_config and asyncssh's defaults apply otherwise."""
    kw: dict[str, Any] = {}
    if opts.host_key_algorithms:
        kw["server_host_key_algs"] = _algs(opts.host_key_algorithms)
    if opts.kex_algorithms:
        kw["kex_algs"] = _algs(opts.kex_algorithms)
    if opts.macs:
        kw["mac_algs"] = _algs(opts.macs)
    if opts.preferred_authentications:
        kw["preferred_auth"] = opts.preferred_authentications
    for field_name, keyword in (
        ("pubkey_authentication", "public_key_auth"),
        ("password_authentication", "password_auth"),
        ("kbd_interactive_authentication", "kbdint_auth"),
        ("tcp_keepalive", "tcp_keepalive"),
    ):
        value = getattr(opts, field_name)
        if value is not None:
            kw[keyword] = value == "yes"
    if opts.proxy_command:
        kw["proxy_command"] = None if opts.proxy_command == "none" else opts.proxy_command
    if opts.host_key_alias:
        kw["host_key_alias"] = opts.host_key_alias
    if opts.address_family:
        families = {"any": socket.AF_UNSPEC, "inet": socket.AF_INET, "inet6": socket.AF_INET6}
        kw["family"] = families[opts.address_family]
    if opts.bind_address:
        kw["local_addr"] = (opts.bind_address, 0)
    if opts.identity_agent:
        kw["agent_path"] = None if opts.identity_agent == "none" else opts.identity_agent
    if opts.certificate_files:
        kw["client_certs"] = opts.certificate_files
    return kw


async def _record_host_key(
    policy: HostKeyPolicy, host: str, port: int, key: asyncssh.SSHKey
) -> None:
    keytype, blob = key.export_public_key("openssh").decode().split()[:2]
    line = f"{_host_pattern(host, port)} {keytype} {blob}\n"
    directory = os.path.dirname(policy.record_file)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(policy.record_file, "a", encoding="utf-8") as f:
        f.write(line)
    log.warning("added host key for %s to %s", _host_pattern(host, port), policy.record_file)


async def connect(
    target: Target,
    opts: MountOptions,
    on_lost: Callable[[Exception | None], None] | None = None,
) -> Connection:
    """Connect, authenticate, check the host key, start SFTP and resolve the root, over
    the transport the options choose. ``on_lost`` is called (on the asyncio loop) if the
    connection later drops."""
    if transport_for(opts) == "openssh":
        return await connect_openssh(target, opts, on_lost)
    return await connect_asyncssh(target, opts, on_lost)


async def connect_asyncssh(
    target: Target,
    opts: MountOptions,
    on_lost: Callable[[Exception | None], None] | None = None,
) -> Connection:
    """The in-process transport: asyncssh's SSH client."""
    kw = connect_kwargs(target, opts)
    policy = HostKeyPolicy.from_options(opts)
    known = policy.load()
    port = int(kw.get("port", 22))
    where = f"{target.host}:{port}" if "port" in kw else target.host
    has_entry = False
    if known is not None:
        has_entry = bool(known.match(target.host, "", port)[0])
    accept_unknown = policy.mode == "accept-new" and not has_entry
    client = _Client(accept_unknown, on_lost)
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: client, target.host, known_hosts=known, **kw
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        if has_entry:
            raise UserError(
                f"host key for {where} does not match {', '.join(policy.files) or 'known_hosts'}"
                " (possible man-in-the-middle attack); refusing to mount."
                f" If the key really changed: ssh-keygen -R '{_host_pattern(target.host, port)}'"
            ) from exc
        raise UserError(
            f"host {where} is not in known_hosts ({', '.join(policy.files) or 'none found'});"
            " connect once with ssh to check its key, or use -o StrictHostKeyChecking=accept-new"
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise UserError(f"authentication to {where} refused: {exc.reason}") from exc
    except asyncssh.DisconnectError as exc:
        raise UserError(f"connection to {where} failed: {exc.reason}") from exc
    except TimeoutError as exc:
        raise UserError(f"connection to {where} timed out") from exc
    except OSError as exc:
        raise UserError(f"cannot connect to {where}: {exc.strerror or exc}") from exc
    except (ValueError, asyncssh.KeyImportError, asyncssh.ConfigParseError) as exc:
        raise UserError(f"bad SSH configuration: {exc}") from exc
    if client.accepted is not None:
        await _record_host_key(policy, target.host, port, client.accepted)
    try:
        sftp = await conn.start_sftp_client()
    except (asyncssh.Error, OSError) as exc:
        conn.close()
        raise UserError(f"{where} offers no SFTP subsystem: {exc}") from exc
    return await _resolve(conn, sftp, target, port, where, "asyncssh")


async def _resolve(
    conn: Any, sftp: SftpSession, target: Target, port: int, where: str, transport: str
) -> Connection:
    """Find the login directory and the mount root (which must be a directory)."""
    try:
        home = await sftp.realpath(b".")
        root = await sftp.realpath(target.path or b".")
        attrs = await sftp.stat(root)
    except asyncssh.SFTPError as exc:
        conn.close()
        raise UserError(f"remote path '{os.fsdecode(target.path)}': {exc.reason}") from exc
    except (asyncssh.Error, OSError) as exc:
        conn.close()
        raise UserError(f"{where}: the SFTP session ended at once ({exc})") from exc
    if not attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY and not (
        attrs.permissions is not None and (attrs.permissions & 0o170000) == 0o040000
    ):
        conn.close()
        raise UserError(f"remote path '{os.fsdecode(target.path)}' is not a directory")
    assert isinstance(root, bytes) and isinstance(home, bytes)
    log.info("connected to %s over %s, remote root %s", where, transport, os.fsdecode(root))
    return Connection(
        conn=conn,
        sftp=sftp,
        root=root,
        host=target.host,
        port=port,
        home=home,
        transport=transport,
    )


def transport_for(opts: MountOptions) -> str:
    """``transport=auto`` is OpenSSH when its client is installed, else asyncssh."""
    if opts.transport != "auto":
        return opts.transport
    return "openssh" if openssh.available(opts) else "asyncssh"


async def connect_openssh(
    target: Target,
    opts: MountOptions,
    on_lost: Callable[[Exception | None], None] | None = None,
) -> Connection:
    """The OpenSSH transport: an ``ssh -M`` master, SFTP and commands over it."""
    port = opts.port or 22
    where = f"{target.host}:{port}" if opts.port else target.host
    policy = HostKeyPolicy.from_options(opts)
    master = openssh.Master(target, opts)
    await master.start(where, ", ".join(policy.files) or "known_hosts")
    try:
        _, into, out_of = await master.sftp_process()
        sftp, receiving = await asyncio.wait_for(
            sftppipe.start_client(into, out_of, master.server_version),
            opts.connect_timeout or 60,
        )
    except (asyncssh.Error, OSError, EOFError, TimeoutError) as exc:
        master.close()
        await master.wait_closed()
        raise UserError(f"{where} offers no SFTP subsystem: {exc or type(exc).__name__}") from exc
    conn = await _resolve(master, sftp, target, port, where, "openssh")
    if on_lost is not None:
        master.on_lost = on_lost

        def sftp_ended(_: asyncio.Future[None]) -> None:
            if not master.closing:
                on_lost(ConnectionError("the SFTP session ended"))

        receiving.add_done_callback(sftp_ended)
    return conn
