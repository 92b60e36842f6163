"""A real OpenSSH sshd on 127.0.0.1 with throwaway keys, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/bin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("sshd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: str, kind: str = "ed25519") -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "sshvfs-test", "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class Sshd:
    """``start()`` it, use ``host``/``port``/``client_key``/``known_hosts``, then ``stop()``."""

    extra_config: str = ""
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="sshvfs-sshd-"))
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    #: sessions get an empty HOME of their own, so no rc file of this machine's user runs
    #: (root's here runs ``pyenv rehash``, whose lock a killed session leaves behind and
    #: every later command then waits for); the benchmark keeps the real one
    own_home: bool = True

    @property
    def client_key(self) -> str:
        return os.path.join(self.workdir, "id_ed25519")

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.workdir, "known_hosts")

    @property
    def host_key(self) -> str:
        return os.path.join(self.workdir, "ssh_host_ed25519_key")

    @property
    def home(self) -> str:
        """The sessions' HOME when ``own_home``; sshd still starts them in the user's own."""
        return os.path.join(self.workdir, "home")

    @property
    def tmp(self) -> str:
        """The sessions' TMPDIR."""
        return os.path.join(self.workdir, "tmp")

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "sshd.log")

    @property
    def user(self) -> str:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name

    def mount_options(self) -> list[str]:
        """``-o`` values that make a mount trust this server; ``SSHVFS_TEST_TRANSPORT``
        (openssh, asyncssh) picks the transport, else the mount's default decides."""
        transport = os.environ.get("SSHVFS_TEST_TRANSPORT")
        return [
            f"port={self.port}",
            f"IdentityFile={self.client_key}",
            f"UserKnownHostsFile={self.known_hosts}",
            *([f"transport={transport}"] if transport else []),
        ]

    def ssh_args(self) -> list[str]:
        """Arguments for the OpenSSH client (also used by sshfs in the benchmark)."""
        return [
            "-p",
            str(self.port),
            "-i",
            self.client_key,
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
        ]

    def _write_config(self) -> str:
        sftp_line = "Subsystem sftp internal-sftp"
        home = ""
        if self.own_home:
            os.makedirs(self.home, exist_ok=True)
            home = f" HOME={self.home}"
        # sessions' temporary files (the watcher's work directory, the content fetch's
        # archive) in here: stop() finds what a killed session left running by them
        os.makedirs(self.tmp, exist_ok=True)
        home += f" TMPDIR={self.tmp}"
        config = f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {os.path.join(self.workdir, "sshd.pid")}
AuthorizedKeysFile {os.path.join(self.workdir, "authorized_keys")}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin yes
UsePAM no
StrictModes no
MaxStartups 100
MaxSessions 20
# root's rc on these machines runs pyenv rehash, which waits for a lock a killed session
# may leave behind (60 s by default: every later remote command would wait that long)
SetEnv PYENV_REHASH_TIMEOUT=2{home}
{sftp_line}
{self.extra_config}
"""
        path = os.path.join(self.workdir, "sshd_config")
        with open(path, "w", encoding="ascii") as f:
            f.write(config)
        return path

    def start(self, timeout: float = 20.0) -> Sshd:
        sshd = find_sshd()
        if sshd is None:
            raise RuntimeError("OpenSSH sshd not found (install openssh-server)")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        if not os.path.exists(self.host_key):
            _keygen(self.host_key)
            _keygen(self.client_key)
            shutil.copy(self.client_key + ".pub", os.path.join(self.workdir, "authorized_keys"))
        if not self.port:
            self.port = _free_port()
        with open(self.host_key + ".pub", encoding="ascii") as f:
            keytype, blob = f.read().split()[:2]
        with open(self.known_hosts, "w", encoding="ascii") as f:
            f.write(f"[{self.host}]:{self.port} {keytype} {blob}\n")
        config = self._write_config()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", config], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.read_log()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not start: {self.read_log()[-2000:]}")

    def read_log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill_sessions(self) -> None:
        """SIGKILL every per-connection sshd and all below it: the link is gone. A session
        may end by itself meanwhile (the watcher's short commands come and go)."""
        _signal_all(self.session_pids(), signal.SIGKILL)

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes and everything below them (OpenSSH's privsep
        child holds the connection and outlives its killed parent for a moment), parents
        first."""
        if self.proc is None:
            return []
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
        children: dict[int, list[int]] = {}
        for line in out.stdout.splitlines():
            pid, ppid = (int(x) for x in line.split())
            children.setdefault(ppid, []).append(pid)
        found, todo = [], list(children.get(self.proc.pid, []))
        while todo:
            pid = todo.pop(0)
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pids = self.session_pids()
            # the listener first: nobody reconnects while the sessions end
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            # TERM before KILL: a login shell's rc file may hold a lock it releases on exit
            # (pyenv rehash does; killed, it leaves every later login waiting for it)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                _signal_all(pids, sig)
                if sig == signal.SIGTERM and pids:
                    time.sleep(0.3)
            # a session SIGKILLed by kill_sessions() as it started a command (the watcher's
            # inotifywait) leaves that command behind, adopted by init: it names our TMPDIR
            _signal_all(_naming(self.tmp + "/"), signal.SIGKILL)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _naming(text: str) -> list[int]:
    """The processes whose command line holds ``text``."""
    needle, found = os.fsencode(text), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    """Signal each of ``pids``; one that already ended is no error."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
