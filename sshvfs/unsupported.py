"""Options sshvfs recognises but deliberately does not implement, and why.

sshfs's, FUSE's and ssh_config's options that have no sshvfs equivalent, each accepted with
a warning when ignoring it is harmless ("ignore"), accepted quietly when it already is what
sshvfs does ("silent"), or refused with a one-line reason when ignoring it would change what
the user gets ("reject"). Keys are option names, or ``name=value`` for one value only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unsupported:
    """An option sshvfs recognises but does not implement, and why."""

    reason: str
    #: ignore: accepted with a warning; silent: accepted quietly; reject: the mount fails
    action: str = "ignore"


_MODULES = "FUSE modules are not available (sshvfs uses the low-level FUSE API)"
_SYMLINKS = "symlink targets are shown exactly as stored on the server"
_EXPIRY = "the caches expire entries by themselves (timeouts and cache_max_entries)"
_NO_FORWARDING = "sshvfs never forwards anything over its connection"

#: sshfs, FUSE and ssh_config options with no sshvfs equivalent, by name or ``name=value``
UNSUPPORTED: dict[str, Unsupported] = {
    # sshfs
    "delay_connect": Unsupported("sshvfs connects before mounting, so errors show at once"),
    "sshfs_sync": Unsupported("a failed write is reported by the close or fsync that follows it"),
    "no_readahead": Unsupported("read-ahead only ever happens on sequential reads"),
    "sync_readdir": Unsupported("directories are always listed within the request"),
    "direct_io": Unsupported("the page cache is kept only while a file is unchanged"),
    "workaround": Unsupported(
        "no sshfs workaround is needed (posix-rename, SETSTAT truncate, fstat are used)"
    ),
    "disable_hardlink": Unsupported("hard links stay enabled where the server has them"),
    "transform_symlinks": Unsupported(_SYMLINKS),
    "contain_symlinks": Unsupported(_SYMLINKS),
    "no_contain_symlinks": Unsupported(_SYMLINKS, "silent"),
    "no_check_root": Unsupported("the remote directory is always checked when mounting"),
    "dcache_link_timeout": Unsupported("symlink targets are cached for attr_timeout"),
    "dcache_clean_interval": Unsupported(_EXPIRY),
    "dcache_min_clean_interval": Unsupported(_EXPIRY),
    "max_conns": Unsupported("one connection already carries many requests in flight"),
    "ssh_protocol=2": Unsupported("", "silent"),
    "ssh_protocol": Unsupported("only SSH protocol 2 is supported", "reject"),
    "sftp_server": Unsupported("only the server's sftp subsystem can be used", "reject"),
    "directport": Unsupported("sshvfs always speaks SFTP inside SSH", "reject"),
    "passive": Unsupported("sshvfs cannot serve SFTP over its stdin/stdout", "reject"),
    "slave": Unsupported("sshvfs cannot serve SFTP over its stdin/stdout", "reject"),
    "password_stdin": Unsupported(
        "password logins are not supported: use a key or ssh-agent", "reject"
    ),
    "idmap=file": Unsupported("use idmap=user or uid=/gid=", "reject"),
    "uidfile": Unsupported("idmap=file is not supported: use idmap=user or uid=", "reject"),
    "gidfile": Unsupported("idmap=file is not supported: use idmap=user or gid=", "reject"),
    "nomap": Unsupported("idmap=file is not supported: use idmap=user or uid=/gid=", "reject"),
    # FUSE (libfuse's high-level options that sshfs lists)
    "no_rofd_flush": Unsupported("closing a read-only file never writes anything", "silent"),
    "noauto_cache": Unsupported("file pages are kept only while size and mtime are unchanged"),
    "ac_attr_timeout": Unsupported("file pages are kept while size and mtime are unchanged"),
    "noforget": Unsupported("inodes stay stable while the kernel remembers them"),
    "remember": Unsupported("inodes stay stable while the kernel remembers them"),
    "nonempty": Unsupported("FUSE 3 mounts over non-empty directories anyway", "silent"),
    "large_read": Unsupported("FUSE 2 only", "silent"),
    "modules": Unsupported(_MODULES, "reject"),
    "subdir": Unsupported(_MODULES + "; put the directory in the remote path", "reject"),
    "rellinks": Unsupported(_MODULES, "reject"),
    "norellinks": Unsupported(_MODULES, "reject"),
    "from_code": Unsupported("file names are passed through as bytes (no iconv)", "reject"),
    "to_code": Unsupported("file names are passed through as bytes (no iconv)", "reject"),
    # ssh_config options asyncssh does not act on
    "Protocol=2": Unsupported("", "silent"),
    "Protocol": Unsupported("only SSH protocol 2 is supported", "reject"),
    "BatchMode": Unsupported("sshvfs never prompts", "silent"),
    "IdentitiesOnly": Unsupported("the agent's keys are offered too"),
    "LogLevel": Unsupported("use -d (debug) or -v (verbose)"),
    "ControlMaster": Unsupported("connection sharing is not used"),
    "ControlPath": Unsupported("connection sharing is not used"),
    "ControlPersist": Unsupported("connection sharing is not used"),
    "ForwardAgent": Unsupported(_NO_FORWARDING, "silent"),
    "ForwardX11": Unsupported(_NO_FORWARDING, "silent"),
    "ForwardX11Trusted": Unsupported(_NO_FORWARDING, "silent"),
    "ClearAllForwardings": Unsupported(_NO_FORWARDING, "silent"),
    "LocalForward": Unsupported(_NO_FORWARDING),
    "RemoteForward": Unsupported(_NO_FORWARDING),
    "DynamicForward": Unsupported(_NO_FORWARDING),
    "CheckHostIP": Unsupported("host keys are checked by name"),
    "VisualHostKey": Unsupported("sshvfs never shows host keys", "silent"),
    "HashKnownHosts": Unsupported("keys accepted with accept-new are recorded unhashed"),
    "UpdateHostKeys": Unsupported("known_hosts is only written by accept-new"),
    "AddKeysToAgent": Unsupported("keys are never added to the agent"),
    "RequestTTY": Unsupported("sshvfs never needs a terminal", "silent"),
    "SendEnv": Unsupported("no environment is sent"),
    "SetEnv": Unsupported("no environment is sent"),
    "IPQoS": Unsupported("the system's default type of service is used"),
    "ConnectionAttempts": Unsupported("one attempt per mount"),
    "NumberOfPasswordPrompts": Unsupported("sshvfs never prompts", "silent"),
    "VerifyHostKeyDNS": Unsupported("host keys are checked against known_hosts only"),
    "EscapeChar": Unsupported("there is no interactive session", "silent"),
    "ExitOnForwardFailure": Unsupported(_NO_FORWARDING, "silent"),
}
