"""Mount configuration: the remote target and the ``-o`` options, parsed and validated.

Options use sshfs's spellings where the meaning matches. Every option is declared once in
:data:`OPTIONS` (name, kind, default, help); an unknown name is a :class:`UserError` that
lists the valid ones.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError
from .unsupported import UNSUPPORTED, Unsupported


@dataclass(frozen=True)
class Target:
    host: str
    user: str | None = None
    #: remote directory as given ('' = the login directory)
    path: bytes = b""

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{user}{host}:{os.fsdecode(self.path)}"


_TARGET = re.compile(
    r"^(?:(?P<user>[^@/]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:/\[\]]+)):(?P<path>.*)$", re.S
)


def parse_target(spec: str) -> Target:
    """``[user@]host:[path]`` (an IPv6 host in brackets)."""
    m = _TARGET.match(spec)
    if not m:
        raise UserError(f"bad remote '{spec}': expected [user@]host:[path]", 2)
    host = m.group("v6") or m.group("host")
    return Target(host=host, user=m.group("user"), path=os.fsencode(m.group("path")))


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # flag | int | float | str | choice | path | octal
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    attr: str = ""  # MountOptions field; defaults to the lower-cased name
    #: a flag that turns its field off (``noreconnect``)
    negate: bool = False

    @property
    def field_name(self) -> str:
        return self.attr or self.name.lower()


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in [
        Option("port", "int", None, "SSH port (as -p)"),
        Option("Port", "int", None, "ssh_config spelling of port", attr="port"),
        Option("User", "str", None, "remote login name", attr="user"),
        Option(
            "IdentityFile", "path", None, "private key file (repeatable)", attr="identity_files"
        ),
        Option(
            "StrictHostKeyChecking",
            "choice",
            "yes",
            "host key policy",
            ("yes", "no", "accept-new", "ask"),
            attr="strict_host_key_checking",
        ),
        Option("UserKnownHostsFile", "path", None, "known_hosts file", attr="known_hosts"),
        Option("ssh_config", "path", None, "ssh_config file (as -F)", attr="ssh_config"),
        Option(
            "Ciphers",
            "str",
            None,
            "cipher list, comma-separated (default prefers AES-GCM)",
            attr="ciphers",
        ),
        Option("Compression", "choice", "no", "SSH compression", ("yes", "no"), attr="compression"),
        Option(
            "ConnectTimeout",
            "float",
            15.0,
            "seconds to wait for the SSH connection",
            attr="connect_timeout",
        ),
        Option(
            "ServerAliveInterval",
            "float",
            15.0,
            "keepalive interval in seconds (0 = off)",
            attr="server_alive_interval",
        ),
        Option(
            "ServerAliveCountMax",
            "int",
            3,
            "keepalives missed before giving up",
            attr="server_alive_count_max",
        ),
        Option("ProxyJump", "str", None, "jump host(s), as in ssh_config", attr="proxy_jump"),
        Option(
            "transport",
            "choice",
            "auto",
            "SSH client: openssh (the ssh program, one -M master a mount), asyncssh"
            " (in-process), auto (openssh when ssh is installed)",
            ("auto", "openssh", "asyncssh"),
        ),
        Option(
            "ssh_command",
            "str",
            None,
            "the ssh program and arguments for transport=openssh (as sshfs's ssh_command)",
        ),
        Option("allow_other", "flag", False, "let other users access the mount"),
        Option("allow_root", "flag", False, "let root access the mount"),
        Option("default_permissions", "flag", False, "let the kernel check permissions"),
        Option("ro", "flag", False, "mount read-only"),
        Option("rw", "flag", False, "mount read-write (the default)"),
        Option("noatime", "flag", False, "do not update access times"),
        Option("auto_unmount", "flag", True, "unmount when the daemon exits"),
        Option("fsname", "str", None, "filesystem name shown by mount/df"),
        Option("subtype", "str", "sshvfs", "filesystem subtype shown by mount"),
        Option("max_read", "int", None, "largest read the kernel sends, in bytes"),
        Option("cache", "choice", "yes", "cache attributes and listings", ("yes", "no")),
        Option("cache_timeout", "float", 30.0, "default for every cache timeout, seconds"),
        Option("attr_timeout", "float", None, "attribute cache timeout (default cache_timeout)"),
        Option("dir_cache_timeout", "float", None, "listing cache timeout (default cache_timeout)"),
        Option("entry_timeout", "float", None, "kernel name cache timeout (default attr_timeout)"),
        Option("cache_max_entries", "int", 1_000_000, "largest number of cached entries"),
        Option(
            "cache_readdir",
            "choice",
            "yes",
            "let the kernel keep directory listings as long as dir_cache_timeout"
            " (no: every readdir asks sshvfs)",
            ("yes", "no"),
        ),
        Option("logfile", "path", None, "write the log to this file"),
        Option(
            "listing",
            "choice",
            "auto",
            "how directories are listed: auto (SFTP, one exec command for huge ones),"
            " sftp (READDIR only), exec (one command each, SFTP when impossible)",
            ("auto", "sftp", "exec"),
        ),
        Option(
            "listing_threshold",
            "int",
            0,
            "entries from which auto lists a directory with one exec command"
            " (0: adaptive, from the measured cost of starting a remote command)",
        ),
    ]
}

#: options that mount(8)/fstab pass along and that mean nothing to us
IGNORED = frozenset(
    {
        "defaults",
        "_netdev",
        "noauto",
        "auto",
        "nofail",
        "user",
        "users",
        "nouser",
        "dev",
        "nodev",
        "suid",
        "nosuid",
        "exec",
        "noexec",
        "async",
        "sync",
        "relatime",
        "atime",
        "transform_symlinks",
        "big_writes",
        "kernel_cache",
        "auto_cache",
    }
)

#: sshfs's and ssh_config's spellings that sshvfs implements beyond the ones above
OPTIONS.update(
    {
        o.name: o
        for o in [
            Option(
                "idmap",
                "choice",
                "none",
                "user: files of the remote login user (the owner of the login directory)"
                " show as the local user's, and chown to the local user maps back",
                ("none", "user"),
            ),
            Option("uid", "int", None, "show every file as owned by this uid"),
            Option("gid", "int", None, "show every file as owned by this gid"),
            Option("umask", "octal", None, "permission bits masked out of what is shown (octal)"),
            Option(
                "follow_symlinks",
                "flag",
                False,
                "show what symlinks point to instead of the links (dangling ones stay links)",
            ),
            Option(
                "reconnect",
                "flag",
                True,
                "reconnect by itself when the connection drops; open files are reopened",
            ),
            Option(
                "timeout",
                "float",
                30.0,
                "deadline of every remote operation in seconds (ETIMEDOUT after it; 0 = none)",
                attr="op_timeout",
            ),
            Option("noreconnect", "flag", False, "do not reconnect", attr="reconnect", negate=True),
            Option("dir_cache", "choice", "yes", "sshfs's cache", ("yes", "no"), attr="cache"),
            Option("dcache_timeout", "float", 30.0, "sshfs's cache_timeout", attr="cache_timeout"),
            Option(
                "dcache_stat_timeout", "float", None, "sshfs's attr_timeout", attr="attr_timeout"
            ),
            Option(
                "dcache_dir_timeout",
                "float",
                None,
                "sshfs's dir_cache_timeout",
                attr="dir_cache_timeout",
            ),
            Option(
                "dcache_max_size",
                "int",
                1_000_000,
                "sshfs's cache_max_entries",
                attr="cache_max_entries",
            ),
            Option(
                "watch",
                "choice",
                "auto",
                "push changes made on the server into the mount: inotify (inotifywait on the"
                " server), poll (a scan every watch_interval), auto (inotify where the server"
                " has it, else poll), no (caches keep their timeouts)",
                ("auto", "inotify", "poll", "no"),
            ),
            Option("watch_interval", "float", 2.0, "seconds between two polls (watch=poll)"),
            Option(
                "watch_max_dirs",
                "int",
                10_000,
                "most directories watched: the ones used last",
            ),
            Option(
                "negative_timeout",
                "float",
                None,
                "how long a missing name is remembered (default attr_timeout)",
            ),
            Option(
                "HostKeyAlgorithms",
                "str",
                None,
                "host key algorithms, comma-separated",
                attr="host_key_algorithms",
            ),
            Option("KexAlgorithms", "str", None, "key exchange algorithms", attr="kex_algorithms"),
            Option("MACs", "str", None, "MAC algorithms, comma-separated", attr="macs"),
            Option(
                "PreferredAuthentications",
                "str",
                None,
                "authentication methods in order",
                attr="preferred_authentications",
            ),
            Option(
                "PubkeyAuthentication",
                "choice",
                None,
                "try public keys",
                ("yes", "no"),
                attr="pubkey_authentication",
            ),
            Option(
                "PasswordAuthentication",
                "choice",
                None,
                "allow password authentication (sshvfs has no password to give)",
                ("yes", "no"),
                attr="password_authentication",
            ),
            Option(
                "KbdInteractiveAuthentication",
                "choice",
                None,
                "allow keyboard-interactive authentication",
                ("yes", "no"),
                attr="kbd_interactive_authentication",
            ),
            Option(
                "ProxyCommand",
                "str",
                None,
                "command whose stdio is the connection",
                attr="proxy_command",
            ),
            Option(
                "HostKeyAlias",
                "str",
                None,
                "name to look the host key up by",
                attr="host_key_alias",
            ),
            Option(
                "AddressFamily",
                "choice",
                None,
                "IP version",
                ("any", "inet", "inet6"),
                attr="address_family",
            ),
            Option(
                "BindAddress", "str", None, "local address to connect from", attr="bind_address"
            ),
            Option(
                "TCPKeepAlive",
                "choice",
                None,
                "TCP keepalives",
                ("yes", "no"),
                attr="tcp_keepalive",
            ),
            Option(
                "IdentityAgent",
                "path",
                None,
                "ssh-agent socket (none: no agent)",
                attr="identity_agent",
            ),
            Option(
                "CertificateFile",
                "path",
                None,
                "certificate for a key (repeatable)",
                attr="certificate_files",
            ),
        ]
    }
)


@dataclass
class MountOptions:
    port: int | None = None
    user: str | None = None
    identity_files: list[str] = field(default_factory=list)
    strict_host_key_checking: str = "yes"
    known_hosts: str | None = None
    ssh_config: str | None = None
    ciphers: str | None = None
    compression: str = "no"
    connect_timeout: float = 15.0
    server_alive_interval: float = 15.0
    server_alive_count_max: int = 3
    proxy_jump: str | None = None
    transport: str = "auto"
    ssh_command: str | None = None
    allow_other: bool = False
    allow_root: bool = False
    default_permissions: bool = False
    ro: bool = False
    rw: bool = False
    noatime: bool = False
    auto_unmount: bool = True
    fsname: str | None = None
    subtype: str = "sshvfs"
    max_read: int | None = None
    cache: str = "yes"
    cache_timeout: float = 30.0
    attr_timeout: float | None = None
    dir_cache_timeout: float | None = None
    entry_timeout: float | None = None
    cache_max_entries: int = 1_000_000
    cache_readdir: str = "yes"
    logfile: str | None = None
    listing: str = "auto"
    listing_threshold: int = 0
    idmap: str = "none"
    uid: int | None = None
    gid: int | None = None
    umask: int | None = None
    follow_symlinks: bool = False
    reconnect: bool = True
    op_timeout: float = 30.0
    negative_timeout: float | None = None
    watch: str = "auto"
    watch_interval: float = 2.0
    watch_max_dirs: int = 10_000
    host_key_algorithms: str | None = None
    kex_algorithms: str | None = None
    macs: str | None = None
    preferred_authentications: str | None = None
    pubkey_authentication: str | None = None
    password_authentication: str | None = None
    kbd_interactive_authentication: str | None = None
    proxy_command: str | None = None
    host_key_alias: str | None = None
    address_family: str | None = None
    bind_address: str | None = None
    tcp_keepalive: str | None = None
    identity_agent: str | None = None
    certificate_files: list[str] = field(default_factory=list)
    #: options accepted but ignored, one message each, for the log
    warnings: list[str] = field(default_factory=list)

    @property
    def attr_ttl(self) -> float:
        return self.attr_timeout if self.attr_timeout is not None else self.cache_timeout

    @property
    def dir_ttl(self) -> float:
        return self.dir_cache_timeout if self.dir_cache_timeout is not None else self.cache_timeout

    @property
    def entry_ttl(self) -> float:
        return self.entry_timeout if self.entry_timeout is not None else self.attr_ttl

    @property
    def caching(self) -> bool:
        return self.cache == "yes"


def _convert(opt: Option, raw: str | None) -> Any:
    if opt.kind == "flag":
        if raw is None:
            return True
        if raw.lower() in ("yes", "true", "1", "on"):
            return True
        if raw.lower() in ("no", "false", "0", "off"):
            return False
        raise UserError(f"option {opt.name} takes no value or yes/no, not '{raw}'", 2)
    if raw is None or raw == "":
        raise UserError(f"option {opt.name} needs a value ({opt.name}=...)", 2)
    if opt.kind == "octal":
        try:
            value: Any = int(raw, 8)
        except ValueError:
            value = -1
        if not 0 <= value <= 0o7777:
            raise UserError(f"option {opt.name}: '{raw}' is not an octal mode (0 to 7777)", 2)
        return value
    try:
        if opt.kind == "int":
            value = int(raw, 0)
            if value < 0:
                raise ValueError
            return value
        if opt.kind == "float":
            value = float(raw)
            if not value >= 0:  # also rejects nan
                raise ValueError
            return value
    except ValueError:
        raise UserError(f"option {opt.name}: '{raw}' is not a non-negative number", 2) from None
    if opt.kind == "choice" and raw not in opt.choices:
        raise UserError(f"option {opt.name}: '{raw}' is not one of {', '.join(opt.choices)}", 2)
    if opt.kind == "path":
        return os.path.expanduser(raw)
    return raw


def split_option_string(text: str) -> list[str]:
    """``a,b=c,d`` -> ``['a', 'b=c', 'd']`` (a backslash escapes a comma)."""
    items, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i + 1])
            i += 2
            continue
        if ch == ",":
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    items.append("".join(cur))
    return [s.strip() for s in items if s.strip()]


def valid_names() -> str:
    return ", ".join(sorted(OPTIONS, key=str.lower))


def _find(table: dict[str, Any], name: str) -> Any:
    """``table[name]``, else a case-insensitive match (ssh_config names are case-insensitive,
    and sshfs's own help spells ``compression=yes``)."""
    if name in table:
        return table[name]
    folded = name.lower()
    for key, value in table.items():
        if key.lower() == folded:
            return value
    return None


def unsupported(name: str, raw: str | None) -> Unsupported | None:
    """The entry for an option sshvfs deliberately does not implement, if it is one."""
    if raw is not None:
        found = _find(UNSUPPORTED, f"{name}={raw}")
        if found is not None:
            return found  # type: ignore[no-any-return]
    return _find(UNSUPPORTED, name)  # type: ignore[no-any-return]


def apply_options(
    opts: MountOptions, option_strings: list[str], sloppy: bool = False
) -> MountOptions:
    """Apply each ``-o`` argument (comma lists allowed) onto ``opts``.

    Options sshvfs ignores leave a message in ``opts.warnings``; an unknown option is a
    :class:`UserError`, or with ``sloppy`` (``mount -s``) a warning too."""
    for text in option_strings:
        for item in split_option_string(text):
            name, eq, raw = item.partition("=")
            value_given = raw if eq else None
            skip = unsupported(name, value_given)
            if skip is not None:
                if skip.action == "reject":
                    raise UserError(f"option '{item}' is not supported: {skip.reason}", 2)
                if skip.action == "ignore":
                    opts.warnings.append(f"ignoring option '{name}': {skip.reason}")
                continue
            if (name in IGNORED and not eq) or name == "comment" or name.startswith("x-"):
                continue  # mount(8), fstab and systemd words
            opt: Option | None = _find(OPTIONS, name)
            if opt is None:
                if sloppy:
                    opts.warnings.append(f"ignoring unknown option '{name}'")
                    continue
                raise UserError(f"unknown option '{name}'; valid options: {valid_names()}", 2)
            value = _convert(opt, value_given)
            if opt.negate:
                value = not value
            current = getattr(opts, opt.field_name)
            if isinstance(current, list):
                current.append(value)
            else:
                setattr(opts, opt.field_name, value)
    return opts
