"""Fitting in like sshfs, against a real sshd: ``mount -t fuse.sshvfs`` and fstab lines,
ownership mapping, ssh_config with ProxyJump, ``sshvfs status`` with live transfers, clear
refusals, and a README that answers every option ``sshfs --help`` lists."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from sshvfs.app import cli

from ..mounting import ROOT, force_unmount, is_mounted, mounted, sshvfs_command
from ..sshd import Sshd

pytestmark = pytest.mark.mount

VENV_BIN = os.path.dirname(sys.executable)
HELPER = "/sbin/mount.fuse.sshvfs"
OURS = os.path.join(VENV_BIN, "mount.sshvfs")
MiB = 1024 * 1024


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=ROOT, PATH=VENV_BIN + os.pathsep + os.environ["PATH"])


def run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env(), stdin=subprocess.DEVNULL
    )


def wait_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return False


def daemon_pid(mnt: str) -> int:
    with open(os.path.join(mnt, ".sshvfs", "status"), "rb") as f:
        return int(json.load(f)["pid"])


def fstab_options(sshd: Sshd, *extra: str) -> str:
    """An /etc/fstab style option string: fstab words and the test server's trust."""
    words = ["_netdev", "noauto", "x-systemd.automount", "nofail", *sshd.mount_options()]
    return ",".join([*words, *extra])


@pytest.fixture
def mount_helper() -> Iterator[str]:
    """/sbin/mount.fuse.sshvfs pointing at this venv: created for the test if absent (and
    removed after), used if scripts/setup installed it; never replaced."""
    created = False
    if os.path.lexists(HELPER):
        if os.path.realpath(HELPER) != os.path.realpath(OURS):
            pytest.skip(f"{HELPER} exists and is not this checkout's mount.sshvfs")
    else:
        if os.geteuid() != 0 or not os.access(os.path.dirname(HELPER), os.W_OK):
            pytest.skip(f"cannot install {HELPER} (not root)")
        os.symlink(OURS, HELPER)
        created = True
    try:
        yield HELPER
    finally:
        if created:
            os.unlink(HELPER)


@pytest.fixture
def tree(workdir: str) -> tuple[str, str]:
    remote, mnt = os.path.join(workdir, "remote"), os.path.join(workdir, "mnt")
    os.makedirs(remote)
    os.makedirs(mnt)
    with open(os.path.join(remote, "hello"), "w") as f:
        f.write("hi")
    return remote, mnt


def unmount_and_reap(mnt: str) -> None:
    pid = daemon_pid(mnt)
    out = run(["umount", mnt])
    assert out.returncode == 0, out.stderr
    assert not is_mounted(mnt)
    assert wait_gone(pid), "the daemon outlived its mount"


# -- mount(8), fstab --------------------------------------------------------------------------


def test_mount_t_fuse_sshvfs_with_fstab_options(
    sshd: Sshd, tree: tuple[str, str], mount_helper: str
) -> None:
    remote, mnt = tree
    source = f"{sshd.user}@{sshd.host}:{remote}"
    try:
        proc = run(["mount", "-t", "fuse.sshvfs", source, mnt, "-o", fstab_options(sshd)])
        assert proc.returncode == 0, proc.stderr
        assert is_mounted(mnt)  # mounted when mount(8) returns
        with open(os.path.join(mnt, "hello")) as f:
            assert f.read() == "hi"
        line = next(x for x in run(["findmnt", "-n", "-o", "FSTYPE", mnt]).stdout.splitlines())
        assert line.strip() == "fuse.sshvfs"
        unmount_and_reap(mnt)
    finally:
        force_unmount(mnt)


def test_fstab_line(sshd: Sshd, tree: tuple[str, str], mount_helper: str, workdir: str) -> None:
    """The line an /etc/fstab would hold, mounted by mountpoint (``mount -T`` reads it from
    another file, so the real /etc/fstab is never touched)."""
    remote, mnt = tree
    fstab = os.path.join(workdir, "fstab")
    with open(fstab, "w") as f:
        f.write("# test fstab\n")
        f.write(
            f"{sshd.user}@{sshd.host}:{remote} {mnt} fuse.sshvfs "
            f"{fstab_options(sshd, 'x-systemd.idle-timeout=60', 'idmap=user')} 0 0\n"
        )
    try:
        proc = run(["mount", "-T", fstab, mnt])
        assert proc.returncode == 0, proc.stderr
        assert os.listdir(mnt) == ["hello"]
        unmount_and_reap(mnt)
    finally:
        force_unmount(mnt)


def test_mount_fuse3_runs_sshvfs_from_path(sshd: Sshd, tree: tuple[str, str]) -> None:
    """Without /sbin/mount.fuse.sshvfs, mount(8) falls back to mount.fuse3, which runs the
    subtype program ``sshvfs SOURCE MOUNTPOINT -o OPTS`` found in PATH (it strips
    _netdev/noauto/nofail/user itself and passes x-* and the rest on)."""
    mount_fuse3 = shutil.which("mount.fuse3", path="/sbin:/usr/sbin:" + os.environ["PATH"])
    if mount_fuse3 is None:
        pytest.skip("mount.fuse3 is not installed")
    remote, mnt = tree
    source = f"{sshd.user}@{sshd.host}:{remote}"
    try:
        proc = run([mount_fuse3, source, mnt, "-t", "fuse.sshvfs", "-o", fstab_options(sshd)])
        assert proc.returncode == 0, proc.stderr
        with open(os.path.join(mnt, "hello")) as f:
            assert f.read() == "hi"
        unmount_and_reap(mnt)
    finally:
        force_unmount(mnt)


def test_mount_refuses_an_unknown_option_in_one_line(
    sshd: Sshd, tree: tuple[str, str], mount_helper: str
) -> None:
    remote, mnt = tree
    source = f"{sshd.user}@{sshd.host}:{remote}"
    try:
        for bad, words in (
            ("no_such_opt", "unknown option 'no_such_opt'"),
            ("sftp_server=/x", "option 'sftp_server=/x' is not supported: only the server's"),
        ):
            proc = run(["mount", "-t", "fuse.sshvfs", source, mnt, "-o", fstab_options(sshd, bad)])
            assert proc.returncode != 0
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
            assert lines[0].startswith("mount.fuse.sshvfs: ") and words in lines[0]
            assert not is_mounted(mnt)
        # the same through sshvfs itself
        cmd = [sys.executable, "-m", "sshvfs", source, mnt, "-o", "no_such_opt"]
        proc = run(cmd)
        assert proc.returncode == 2
        assert proc.stderr.startswith("sshvfs: unknown option 'no_such_opt'; valid options: ")
        assert proc.stderr.count("\n") == 1
    finally:
        force_unmount(mnt)


def test_ignored_sshfs_options_warn_but_mount(sshd: Sshd, tree: tuple[str, str]) -> None:
    remote, mnt = tree
    cmd = sshvfs_command(sshd, remote, mnt, ["sshfs_sync,workaround=rename,max_conns=2"])
    cmd.remove("-f")
    try:
        proc = run(cmd)
        assert proc.returncode == 0, proc.stderr
        warnings = proc.stderr.strip().splitlines()
        assert len(warnings) == 3 and all(
            w.startswith("sshvfs: warning: ignoring") for w in warnings
        )
        assert is_mounted(mnt)
    finally:
        force_unmount(mnt)


# -- ssh options and ssh_config ---------------------------------------------------------------


def accepted_logins(sshd: Sshd) -> int:
    return sshd.read_log().count("Accepted publickey")


def test_proxyjump_from_an_ssh_config_alias(
    sshd: Sshd, tree: tuple[str, str], workdir: str
) -> None:
    """``-F config`` with a Host alias whose ProxyJump is another alias: through 127.0.0.1 to
    127.0.0.1, so the server sees two logins for one mount."""
    remote, mnt = tree
    config = os.path.join(workdir, "ssh_config")
    with open(config, "w") as f:
        f.write(
            f"""\
Host sshvfs-jump
    HostName {sshd.host}
    Port {sshd.port}
    User {sshd.user}
    IdentityFile {sshd.client_key}
    UserKnownHostsFile {sshd.known_hosts}

Host sshvfs-target
    HostName {sshd.host}
    Port {sshd.port}
    User {sshd.user}
    IdentityFile {sshd.client_key}
    ProxyJump sshvfs-jump
"""
        )
    before = accepted_logins(sshd)
    cmd = [
        sys.executable, "-m", "sshvfs", f"sshvfs-target:{remote}", mnt,
        "-F", config, "-o", f"UserKnownHostsFile={sshd.known_hosts}",
    ]  # fmt: skip
    try:
        proc = run(cmd)
        assert proc.returncode == 0, proc.stderr
        assert os.listdir(mnt) == ["hello"]
        assert accepted_logins(sshd) - before == 2
    finally:
        force_unmount(mnt)


def test_compression_and_explicit_algorithms(sshd: Sshd, tree: tuple[str, str]) -> None:
    remote, mnt = tree
    options = [
        "Ciphers=aes256-ctr,MACs=hmac-sha2-256,KexAlgorithms=curve25519-sha256",
        "HostKeyAlgorithms=ssh-ed25519,PreferredAuthentications=publickey,ServerAliveInterval=5",
        "BatchMode=yes,TCPKeepAlive=yes,PasswordAuthentication=no",
    ]
    cmd = sshvfs_command(sshd, remote, mnt, options)
    cmd.remove("-f")
    cmd.append("-C")
    try:
        proc = run(cmd)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""  # nothing ignored
        with open(os.path.join(mnt, "hello")) as f:
            assert f.read() == "hi"
    finally:
        force_unmount(mnt)
    cmd = sshvfs_command(sshd, remote, mnt, ["Ciphers=no-such-cipher"])
    proc = run(cmd)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr


# -- ownership --------------------------------------------------------------------------------


def test_uid_gid_umask_force_what_is_shown(sshd: Sshd, tree: tuple[str, str]) -> None:
    remote, mnt = tree
    os.chmod(os.path.join(remote, "hello"), 0o666)
    with mounted(sshd, remote, mnt, ["uid=1234,gid=4321,umask=027"]):
        st = os.stat(os.path.join(mnt, "hello"))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o640)
        with open(os.path.join(mnt, "new"), "w") as f:
            f.write("x")
        st = os.stat(os.path.join(mnt, "new"))
        assert (st.st_uid, st.st_gid) == (1234, 4321)
    real = os.stat(os.path.join(remote, "hello"))
    assert stat.S_IMODE(real.st_mode) == 0o666 and real.st_uid == os.getuid()


@contextlib.contextmanager
def throwaway_user() -> Iterator[pwd.struct_passwd]:
    """A local user to log in as (so the remote login user differs from the local root)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd")
    name = f"sshvfst{os.getpid() % 100000}"
    subprocess.run(["userdel", "-r", name], capture_output=True, check=False)  # a leftover
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        # not locked: sshd without PAM refuses accounts whose password starts with "!"
        subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
        yield pwd.getpwnam(name)
    finally:
        for _ in range(50):
            if subprocess.run(["userdel", "-r", name], capture_output=True).returncode in (0, 6):
                break
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
            time.sleep(0.1)


@contextlib.contextmanager
def mount_as(server: Sshd, user: str, mnt: str, *options: str) -> Iterator[None]:
    cmd = [sys.executable, "-m", "sshvfs", f"{user}@{server.host}:", mnt]
    for opt in [*server.mount_options(), *options]:
        cmd += ["-o", opt]
    proc = run(cmd)
    assert proc.returncode == 0, proc.stderr
    try:
        yield
    finally:
        force_unmount(mnt)


def test_idmap_user_shows_the_login_user_as_the_local_user(workdir: str) -> None:
    with throwaway_user() as user:
        server = Sshd(
            extra_config=f"Match User {user.pw_name}\n"
            f"    AuthorizedKeysFile {user.pw_dir}/.ssh/authorized_keys\n"
        ).start()
        try:
            ssh_dir = os.path.join(user.pw_dir, ".ssh")
            os.makedirs(ssh_dir, exist_ok=True)
            shutil.copy(server.client_key + ".pub", os.path.join(ssh_dir, "authorized_keys"))
            for path in (ssh_dir, os.path.join(ssh_dir, "authorized_keys")):
                os.chown(path, user.pw_uid, user.pw_gid)
            other = os.path.join(user.pw_dir, "someone_elses")
            open(other, "w").close()
            os.chown(other, 4242, 4242)
            mnt = os.path.join(workdir, "m")
            os.makedirs(mnt)

            with mount_as(server, user.pw_name, mnt):  # idmap=none: the remote numbers
                with open(os.path.join(mnt, "plain"), "w") as f:
                    f.write("x")
                st = os.stat(os.path.join(mnt, "plain"))
                assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid)

            with mount_as(server, user.pw_name, mnt, "idmap=user"):
                created = os.path.join(mnt, "created")
                with open(created, "w") as f:
                    f.write("x")
                st = os.stat(created)
                assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
                assert os.stat(mnt).st_uid == os.getuid()  # the login dir itself
                assert os.stat(os.path.join(mnt, "plain")).st_uid == os.getuid()
                assert os.stat(os.path.join(mnt, "someone_elses")).st_uid == 4242
                # chown to the local user maps back (root could not be given it remotely)
                os.chown(created, os.getuid(), os.getgid())
                real = os.stat(os.path.join(user.pw_dir, "created"))
                assert (real.st_uid, real.st_gid) == (user.pw_uid, user.pw_gid)
        finally:
            server.cleanup()


def test_follow_symlinks(sshd: Sshd, tree: tuple[str, str]) -> None:
    remote, mnt = tree
    os.symlink("hello", os.path.join(remote, "link"))
    os.symlink("nowhere", os.path.join(remote, "dangling"))
    with mounted(sshd, remote, mnt, ["follow_symlinks"]):
        assert stat.S_ISREG(os.lstat(os.path.join(mnt, "link")).st_mode)
        assert stat.S_ISLNK(os.lstat(os.path.join(mnt, "dangling")).st_mode)
        with open(os.path.join(mnt, "link")) as f:
            assert f.read() == "hi"
    with mounted(sshd, remote, mnt):
        assert stat.S_ISLNK(os.lstat(os.path.join(mnt, "link")).st_mode)


# -- logging ----------------------------------------------------------------------------------


def test_debug_log_holds_no_key_material(sshd: Sshd, tree: tuple[str, str]) -> None:
    remote, mnt = tree
    with mounted(sshd, remote, mnt, debug=True) as m:
        os.listdir(mnt)
        log = m.log()
    # the SSH layer logs (asyncssh in-process, the SFTP client over OpenSSH's pipes)
    assert "DEBUG" in log and ("asyncssh" in log or "sshvfs.transport.sftppipe" in log)
    with open(sshd.client_key) as f:
        body = [x for x in f.read().splitlines() if x and not x.startswith("-----")]
    assert body and not any(chunk in log for chunk in body)


# -- status -----------------------------------------------------------------------------------


def status_json(mnt: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert cli.main(["status", mnt, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, dict)
    return data


READER = """\
import sys, time
with open(sys.argv[1], "rb", buffering=0) as f:
    while f.read(1 << 20):
        time.sleep(0.004)
"""


@pytest.mark.timeout(240)
def test_status_shows_a_transfer_moving(
    sshd: Sshd, tree: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    remote, mnt = tree
    big = os.path.join(remote, "big.bin")
    with open(big, "wb") as f:
        f.truncate(500 * MiB)
    with mounted(sshd, remote, mnt):
        data = status_json(mnt, capsys)
        assert data["state"] == "connected" and data["transfers"] == []
        reader = subprocess.Popen([sys.executable, "-c", READER, os.path.join(mnt, "big.bin")])
        seen: list[int] = []
        human = ""
        try:
            deadline = time.monotonic() + 120
            while reader.poll() is None and time.monotonic() < deadline and len(set(seen)) < 2:
                transfers = status_json(mnt, capsys)["transfers"]
                assert isinstance(transfers, list)
                for t in transfers:
                    if t["path"].endswith("big.bin") and t["direction"] == "read":
                        seen.append(int(t["bytes_done"]))
                        if not human:
                            assert cli.main(["status", mnt]) == 0
                            human = capsys.readouterr().out
                time.sleep(0.2)
        finally:
            reader.kill()
            reader.wait()
        assert len(set(seen)) >= 2 and seen == sorted(seen), seen
        assert "big.bin" in human and "MiB/s" in human, human
        deadline = time.monotonic() + 10
        while status_json(mnt, capsys)["transfers"] and time.monotonic() < deadline:
            time.sleep(0.1)  # ended with the handle
        assert status_json(mnt, capsys)["transfers"] == []


def test_status_watch_when_piped_ends_cleanly_on_ctrl_c(sshd: Sshd, tree: tuple[str, str]) -> None:
    remote, mnt = tree
    with mounted(sshd, remote, mnt):
        proc = subprocess.Popen(
            [sys.executable, "-m", "sshvfs", "status", mnt, "--watch", "--interval", "0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and err == "", err
        assert "\x1b" not in out and out.count("connection: connected") >= 2


# -- README -----------------------------------------------------------------------------------


def sshfs_help_options(text: str) -> list[str]:
    """Every option name ``sshfs --help`` lists: ``-x`` flags and ``-o name`` options."""
    names: list[str] = []
    for line in text.splitlines():
        m = re.match(r"\s+(-\w)[\s,]", line + " ")
        if m and not line.strip().startswith("-o"):
            names.append(m.group(1))
            continue
        m = re.match(r"\s+-o\s+(\S+)", line)
        if not m or m.group(1).startswith("opt,"):
            continue
        spec = re.split(r"[=,]", m.group(1))[0] if "{" not in m.group(1) else m.group(1)
        if spec.startswith("[no]"):
            names += [spec[4:], "no" + spec[4:]]
        elif "{" in spec:  # dcache_{stat,link,dir}_timeout=N
            head, rest = spec.split("{", 1)
            alts, tail = rest.split("}", 1)
            names += [head + a + tail.split("=")[0] for a in alts.split(",")]
        elif spec == "SSHOPT":
            names.append("SSHOPT=VAL")
        else:
            names.append(spec)
    return names


def readme_tables() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("## Options")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_readme_maps_every_option_sshfs_help_lists() -> None:
    sshfs = shutil.which("sshfs")
    if sshfs is None:
        pytest.skip("sshfs is not installed")
    proc = subprocess.run([sshfs, "--help"], capture_output=True, text=True, timeout=30)
    names = sshfs_help_options(proc.stdout + proc.stderr)
    assert (
        len(names) > 60
        and "reconnect" in names
        and "-C" in names
        and "dcache_link_timeout" in names
    )
    section = readme_tables()
    start = section.index("### Coming from sshfs")
    table = section[start : section.index("\n### ", start + 1)]
    tokens = set()
    for row in table.splitlines():
        if row.startswith("|"):
            for cell in re.findall(r"`([^`]+)`", row.split("|")[1]):
                for word in cell.split():
                    tokens |= {word, word.split("=")[0]}
    missing = [n for n in names if n not in tokens]
    assert not missing, f"README's sshfs table lacks: {missing}"


def test_readme_lists_every_sshvfs_option() -> None:
    from sshvfs.config import OPTIONS

    section = readme_tables()
    missing = [n for n in OPTIONS if f"`{n}" not in section]
    assert not missing, missing
