"""Mount options: sshfs's and ssh_config's spellings, what is ignored or refused and why,
the asyncssh keywords they become, the ownership presentation, the mount(8) helper's
argument handling and the help text."""

from __future__ import annotations

import os
import socket

import pytest

from sshvfs.app import cli, mounthelper
from sshvfs.config import (
    IGNORED,
    OPTIONS,
    MountOptions,
    Target,
    apply_options,
    split_option_string,
)
from sshvfs.errors import UserError
from sshvfs.fuse.ownership import IDENTITY, Ownership
from sshvfs.transport.connection import connect_kwargs
from sshvfs.unsupported import UNSUPPORTED


def parse(*option_strings: str, sloppy: bool = False) -> MountOptions:
    return apply_options(MountOptions(), list(option_strings), sloppy=sloppy)


def refusal(*option_strings: str) -> str:
    with pytest.raises(UserError) as info:
        parse(*option_strings)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


# -- spellings --------------------------------------------------------------------------------


def test_sshfs_spellings_map_onto_fields() -> None:
    o = parse(
        "port=2222,IdentityFile=~/k1,IdentityFile=/k2,ssh_config=/etc/cfg",
        "allow_other,default_permissions,ro,follow_symlinks,reconnect",
        "idmap=user,uid=1000,gid=100,umask=022",
        "dir_cache=no,dcache_timeout=5,dcache_stat_timeout=6,dcache_dir_timeout=7",
        "dcache_max_size=99,negative_timeout=2,entry_timeout=3,attr_timeout=4",
    )
    assert o.port == 2222
    assert o.identity_files == [os.path.expanduser("~/k1"), "/k2"]
    assert o.ssh_config == "/etc/cfg"
    assert o.allow_other and o.default_permissions and o.ro and o.follow_symlinks
    assert o.reconnect
    assert (o.idmap, o.uid, o.gid, o.umask) == ("user", 1000, 100, 0o22)
    assert o.cache == "no" and not o.caching
    assert (o.cache_timeout, o.attr_timeout, o.dir_cache_timeout) == (5.0, 4.0, 7.0)
    assert (o.cache_max_entries, o.negative_timeout, o.entry_timeout) == (99, 2.0, 3.0)
    assert o.warnings == []


def test_noreconnect_turns_reconnect_off() -> None:
    assert parse("reconnect").reconnect
    assert not parse("reconnect,noreconnect").reconnect
    assert not parse("noreconnect").reconnect


def test_ssh_option_names_are_case_insensitive() -> None:
    # sshfs's own help spells -C as "compression=yes"; ssh_config names ignore case
    o = parse("compression=yes,serveraliveinterval=5,SERVERALIVECOUNTMAX=2,proxyjump=j")
    assert (o.compression, o.server_alive_interval, o.server_alive_count_max) == (
        "yes",
        5.0,
        2,
    )
    assert o.proxy_jump == "j"


def test_fstab_words_are_ignored_but_user_with_a_value_is_the_login() -> None:
    o = parse(
        "defaults,_netdev,noauto,nofail,user,users,rw,nodev,nosuid,noexec,"
        "x-systemd.automount,x-systemd.idle-timeout=60,x-gvfs-show,comment=systemd.automount"
    )
    assert o.warnings == [] and o.user is None
    assert parse("user=alice").user == "alice"


def test_umask_is_octal() -> None:
    assert parse("umask=0027").umask == 0o27
    assert parse("umask=7").umask == 0o7
    assert "octal" in refusal("umask=8")
    assert "octal" in refusal("umask=77777")


def test_repeatable_options_accumulate() -> None:
    o = parse("CertificateFile=/a-cert.pub", "CertificateFile=/b-cert.pub")
    assert o.certificate_files == ["/a-cert.pub", "/b-cert.pub"]


def test_escaped_comma_in_a_value() -> None:
    assert split_option_string(r"Ciphers=a\,b,ro") == ["Ciphers=a,b", "ro"]
    assert parse(r"Ciphers=aes128-ctr\,aes256-ctr").ciphers == "aes128-ctr,aes256-ctr"


# -- ignored and refused ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        "sshfs_sync",
        "workaround=rename:truncate",
        "max_conns=4",
        "delay_connect",
        "direct_io",
        "transform_symlinks",
    ],
)
def test_harmless_sshfs_options_are_ignored_with_a_warning(option: str) -> None:
    o = parse(option)
    name = option.partition("=")[0]
    assert len(o.warnings) == 1 and f"'{name}'" in o.warnings[0]


@pytest.mark.parametrize("option", ["BatchMode=yes", "ssh_protocol=2", "nonempty"])
def test_options_that_are_already_our_behaviour_are_silent(option: str) -> None:
    assert parse(option).warnings == []


@pytest.mark.parametrize(
    "option, words",
    [
        ("sftp_server=/usr/lib/sftp-server", "subsystem"),
        ("password_stdin", "use a key"),
        ("idmap=file", "idmap=user"),
        ("uidfile=/etc/map", "idmap=file"),
        ("directport=2222", "SFTP inside SSH"),
        ("passive", "stdin/stdout"),
        ("slave", "stdin/stdout"),
        ("sftp_server=/usr/lib/sftp-server", "subsystem"),
        ("ssh_protocol=1", "protocol 2"),
        ("modules=subdir", "FUSE modules"),
        ("subdir=/x", "remote path"),
        ("from_code=latin1", "bytes"),
    ],
)
def test_unsupported_options_are_refused_with_a_reason(option: str, words: str) -> None:
    message = refusal(option)
    assert f"option '{option}' is not supported" in message and words in message


def test_unknown_option_names_it_and_lists_the_valid_ones() -> None:
    message = refusal("ro,no_such_thing=1")
    assert message.startswith("unknown option 'no_such_thing'; valid options: ")
    for name in ("idmap", "umask", "ProxyJump", "reconnect"):
        assert name in message


def test_sloppy_turns_unknown_options_into_warnings() -> None:
    o = parse("no_such_thing,ro", sloppy=True)
    assert o.ro and o.warnings == ["ignoring unknown option 'no_such_thing'"]
    refusal("sftp_server=x")  # refused ones stay refused: they change what is mounted


def test_tables_do_not_overlap() -> None:
    lowered = {n.lower() for n in OPTIONS}
    for name in UNSUPPORTED:
        assert name.partition("=")[0].lower() not in lowered or "=" in name, name
    assert not IGNORED & set(OPTIONS)
    for name, u in UNSUPPORTED.items():
        assert u.action in ("ignore", "silent", "reject"), name
        assert u.reason or u.action == "silent", name


# -- ssh options become asyncssh keywords ----------------------------------------------------


def test_ssh_options_become_connect_keywords() -> None:
    o = parse(
        "Ciphers=aes128-ctr,HostKeyAlgorithms=ssh-ed25519\\,rsa-sha2-256,"
        "KexAlgorithms=curve25519-sha256,MACs=hmac-sha2-256,PreferredAuthentications=publickey,"
        "PubkeyAuthentication=yes,PasswordAuthentication=no,KbdInteractiveAuthentication=no,"
        "TCPKeepAlive=no,AddressFamily=inet,BindAddress=127.0.0.1,HostKeyAlias=box,"
        "ProxyCommand=nc %h %p,IdentityAgent=none,ConnectTimeout=7,ServerAliveInterval=9,"
        "ServerAliveCountMax=4,Compression=yes,ProxyJump=hop,User=bob,Port=2200"
    )
    kw = connect_kwargs(Target("h"), o)
    assert kw["encryption_algs"] == ["aes128-ctr"]
    assert kw["server_host_key_algs"] == ["ssh-ed25519", "rsa-sha2-256"]
    assert kw["kex_algs"] == ["curve25519-sha256"]
    assert kw["mac_algs"] == ["hmac-sha2-256"]
    assert kw["preferred_auth"] == "publickey"
    assert kw["public_key_auth"] is True and kw["password_auth"] is False
    assert kw["kbdint_auth"] is False and kw["tcp_keepalive"] is False
    assert kw["family"] == socket.AF_INET and kw["local_addr"] == ("127.0.0.1", 0)
    assert kw["host_key_alias"] == "box" and kw["proxy_command"] == "nc %h %p"
    assert kw["agent_path"] is None
    assert kw["connect_timeout"] == 7.0
    assert (kw["keepalive_interval"], kw["keepalive_count_max"]) == (9.0, 4)
    assert "zlib@openssh.com" in kw["compression_algs"]
    assert (kw["tunnel"], kw["username"], kw["port"]) == ("hop", "bob", 2200)


def test_unset_ssh_options_leave_asyncssh_and_ssh_config_in_charge() -> None:
    kw = connect_kwargs(Target("h"), MountOptions())
    for key in (
        "server_host_key_algs",
        "kex_algs",
        "mac_algs",
        "tunnel",
        "proxy_command",
        "agent_path",
        "public_key_auth",
        "family",
        "username",
        "port",
    ):
        assert key not in kw, key


def test_missing_identity_file_is_a_user_error() -> None:
    with pytest.raises(UserError, match="identity file not found"):
        connect_kwargs(Target("h"), parse("IdentityFile=/nonexistent/key"))


# -- ownership presentation ------------------------------------------------------------------


def test_identity_ownership_changes_nothing() -> None:
    assert IDENTITY.identity
    assert Ownership.from_options(MountOptions(), 1000, 1000).identity  # idmap=none
    assert (IDENTITY.shown_uid(7), IDENTITY.shown_gid(8), IDENTITY.shown_mode(0o100644)) == (
        7,
        8,
        0o100644,
    )


def test_idmap_user_maps_the_login_user_both_ways() -> None:
    own = Ownership(remote_uid=1001, remote_gid=1002, local_uid=0, local_gid=0)
    assert not own.identity
    assert (own.shown_uid(1001), own.shown_gid(1002)) == (0, 0)
    assert (own.shown_uid(33), own.shown_gid(33)) == (33, 33)  # others stay as they are
    assert (own.remote_uid_for(0), own.remote_gid_for(0)) == (1001, 1002)
    assert (own.remote_uid_for(33), own.remote_uid_for(-1)) == (33, -1)


def test_forced_owner_and_umask() -> None:
    opts = parse("idmap=user,uid=5,gid=6,umask=027")
    own = Ownership.from_options(opts, 1001, 1002)
    assert (own.shown_uid(1001), own.shown_uid(0), own.shown_gid(1002)) == (5, 5, 6)
    assert own.shown_mode(0o100777) == 0o100750
    assert own.shown_mode(0o040755) == 0o040750  # type bits never masked
    assert own.remote_uid_for(os.getuid()) == 1001  # idmap still maps a chown back


# -- the command line and the mount helper -----------------------------------------------------


def test_help_lists_every_option_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for opt in OPTIONS.values():
        assert f"  {opt.name}" in out, opt.name
        if opt.default not in (None, False):
            line = next(x for x in out.splitlines() if x.startswith(f"  {opt.name}"))
            assert f"[default: {opt.default}]" in line, line
    for name in ("sshfs_sync", "sftp_server", "password_stdin"):
        assert name in out
    for flag in ("-C", "-v", "-s", "-V"):
        assert flag in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--version", "-V"):
        assert cli.main([flag]) == 0
        assert capsys.readouterr().out.startswith("sshvfs ")


def test_short_options(tmp_path: object) -> None:
    args = cli.mount_parser().parse_args(["h:", "/mnt", "-C", "-p", "2", "-F", "~/cfg", "-s"])
    o = cli.parse_mount_options(args)
    assert (o.compression, o.port, o.ssh_config) == ("yes", 2, os.path.expanduser("~/cfg"))
    with pytest.raises(UserError, match="protocol 1"):
        cli.parse_mount_options(cli.mount_parser().parse_args(["h:", "/mnt", "-1"]))


def test_reconnect_is_on_by_default_and_can_be_turned_off() -> None:
    def parse(*opts: str) -> object:
        return cli.parse_mount_options(cli.mount_parser().parse_args(["h:", "/m", *opts]))

    assert parse().reconnect and parse("-o", "reconnect").reconnect  # type: ignore[attr-defined]
    assert not parse("-o", "noreconnect").reconnect  # type: ignore[attr-defined]
    assert parse("-o", "timeout=2.5").op_timeout == 2.5  # type: ignore[attr-defined]


def test_mount_helper_fake_mount_checks_and_mounts_nothing(tmp_path: object) -> None:
    mnt = str(tmp_path)
    opts = "rw,nodev,nosuid,_netdev,nofail,user,port=2222,idmap=user,x-systemd.automount"
    assert mounthelper.main(["me@host:/srv", mnt, "-f", "-n", "-o", opts]) == 0
    assert not os.path.ismount(mnt)


def test_mount_helper_errors_are_one_line(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    mnt = str(tmp_path)
    assert mounthelper.main(["host:/srv", mnt, "-f", "-o", "ro,bogus_opt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mount.sshvfs: unknown option 'bogus_opt'") and "\n" not in err
    assert mounthelper.main(["host:/srv", mnt, "-f", "-s", "-o", "ro,bogus_opt"]) == 0
    assert mounthelper.main(["host:/srv", mnt, "-f", "-t", "fuse.sshfs"]) == 1
    assert "fuse.sshvfs only" in capsys.readouterr().err
    assert mounthelper.main(["host:/srv", os.path.join(mnt, "nope"), "-f"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_mount_helper_builds_the_sshvfs_command() -> None:
    args = mounthelper.parser("mount.sshvfs").parse_args(
        ["h:/p", "/mnt", "-o", "ro,port=2", "-s", "-v", "-n"]
    )
    assert mounthelper.sshvfs_argv(args) == ["h:/p", "/mnt", "-o", "ro,port=2", "--sloppy", "-v"]


def test_a_closed_stdout_ends_the_command_quietly() -> None:
    """``sshvfs shell-hook bash | head -0``: exit 141 as cat would, no traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "sshvfs", "shell-hook", "bash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes a byte
    err = proc.stderr.read()
    assert proc.wait(30) == 141, err
    assert b"Traceback" not in err and b"Exception ignored" not in err, err
