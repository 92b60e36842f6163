"""The benchmark framework: scenarios, tools (mounts), the run loop. See the package doc."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.mounting import force_unmount, is_mounted, mounted  # noqa: E402
from tests.relay import Relay  # noqa: E402
from tests.sshd import Sshd  # noqa: E402

#: the bare ssh pipe uses the cipher sshvfs prefers, so it is the real ceiling
PIPE_CIPHER = "aes128-gcm@openssh.com"
MOUNT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Target:
    """Where a timed run happens."""

    tool: str
    mountpoint: str | None = None
    #: pid of the filesystem daemon (None for the ssh pipe or when unknown)
    pid: int | None = None

    def path(self, rel: str) -> str:
        if self.mountpoint is None:
            raise RuntimeError(f"{self.tool} has no mountpoint")
        return os.path.join(self.mountpoint, rel)


@dataclass(frozen=True)
class Measured:
    """What a per-operation scenario's ``run`` returns: the p50 (the table's value), the
    p99 and how many operations there were (round trips are then shown per operation)."""

    value: float
    p99: float
    ops: int


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 (nearest rank) of ``samples``."""
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
    return p50, p99


@dataclass(frozen=True)
class Scenario:
    name: str
    measures: str
    setup: Callable[[Context], None]
    run: Callable[[Context, Target], float | Measured | None]
    cold: bool = True
    tools: tuple[str, ...] = ("sshvfs", "sshfs")
    pipe: Callable[[Context], None] | None = None
    prepare: Callable[[Context], None] | None = None
    cleanup: Callable[[Context, Target], None] | None = None
    unit: str = "s"
    higher_is_better: bool = False
    #: least sshfs/sshvfs ratio this scenario should show (None: no goal)
    goal: float | None = None
    #: timed runs per tool, overriding ``--repeat`` (long scenarios)
    repeat: int | None = None


REGISTRY: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    if scenario.name in REGISTRY:
        raise ValueError(f"scenario {scenario.name!r} registered twice")
    REGISTRY[scenario.name] = scenario
    return scenario


class Context:
    """What scenarios get: the server, directories, and small helpers."""

    def __init__(
        self,
        sshd: Sshd,
        base: Path,
        quick: bool,
        log: Callable[[str], None],
        relay: Relay | None = None,
    ) -> None:
        self.sshd = sshd
        self.base = base
        self.quick = quick
        self.log = log
        #: the delaying relay every client goes through (``--rtt``), counting round trips
        self.relay = relay
        #: the served directory (the remote side of every mount)
        self.data = base / "data"
        #: local scratch, not served
        self.work = base / "work"
        self.mounts = base / "mnt"
        for d in (self.data, self.work, self.mounts):
            d.mkdir(parents=True, exist_ok=True)
        self._can_drop: bool | None = None

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def sh(self, cmd: str, timeout: float = 900.0, cwd: str | None = None) -> None:
        """Run a shell command; raise with its stderr when it fails."""
        proc = subprocess.run(
            cmd, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(f"`{cmd}` exited {proc.returncode}: {proc.stderr.strip()[-500:]}")

    def ssh_cmd(self, remote_cmd: str, cipher: str = PIPE_CIPHER) -> str:
        """A shell command line running ``remote_cmd`` on the server over plain ssh."""
        args = ["ssh", *self.sshd.ssh_args(), "-c", cipher, f"{self.sshd.user}@{self.sshd.host}"]
        return " ".join(shlex.quote(a) for a in args) + " " + shlex.quote(remote_cmd)

    def make_file(self, path: Path, size: int, chunk: int = 8 << 20) -> None:
        """``size`` bytes of random data (incompressible), unless it is already there."""
        if path.exists() and path.stat().st_size == size:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
            left = size
            while left:
                n = min(chunk, left)
                dst.write(src.read(n))
                left -= n

    def warm(self, *paths: Path) -> None:
        """Read files into the server's page cache (the server reads from RAM, like ssh cat)."""
        for p in paths:
            with open(p, "rb") as f:
                while f.read(8 << 20):
                    pass

    def warm_tree(self, *paths: Path) -> None:
        """lstat everything under ``paths`` into the server's dentry and inode caches (the
        server answers from RAM, like ``ssh host ls -l`` run twice)."""
        for p in paths:
            for root, dirs, files in os.walk(p):
                for name in dirs + files:
                    os.lstat(os.path.join(root, name))

    def drop_caches(self) -> bool:
        """Drop the page cache, dentries and inodes; False if not allowed (not root)."""
        if self._can_drop is False:
            return False
        os.sync()
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            self._can_drop = True
        except OSError as exc:
            self._can_drop = False
            self.log(f"note: cannot drop caches ({exc.strerror}); cold runs are only fresh mounts")
        return self._can_drop


# -- tools -----------------------------------------------------------------------------


def _pid_serving(mountpoint: str, needle: str) -> int | None:
    """The pid of a process whose command line names ``needle`` and ``mountpoint``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        names = [os.fsdecode(a) for a in argv]
        if any(needle in a for a in names[:2]) and any(
            a.rstrip("/") == mountpoint.rstrip("/") for a in names
        ):
            return int(entry)
    return None


#: a scenario's setup that took longer than this (seconds) made data: wait SETTLE seconds
SETUP_WORK = 0.05
SETTLE = 3.0

#: extra -o options for every sshvfs mount (scripts/bench --sshvfs-options)
SSHVFS_OPTIONS: list[str] = []


@contextlib.contextmanager
def _mount_sshvfs(ctx: Context, mountpoint: str) -> Iterator[Target]:
    with mounted(ctx.sshd, str(ctx.data), mountpoint, SSHVFS_OPTIONS, timeout=MOUNT_TIMEOUT) as m:
        yield Target("sshvfs", mountpoint, m.proc.pid)


@contextlib.contextmanager
def _mount_sshfs(ctx: Context, mountpoint: str) -> Iterator[Target]:
    s = ctx.sshd
    os.makedirs(mountpoint, exist_ok=True)
    opts = ",".join(
        [
            f"IdentityFile={s.client_key}",
            f"UserKnownHostsFile={s.known_hosts}",
            f"port={s.port}",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
        ]
    )
    cmd = ["sshfs", f"{s.user}@{s.host}:{ctx.data}", mountpoint, "-o", opts]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=MOUNT_TIMEOUT)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(mountpoint):
            if time.monotonic() > deadline:
                raise RuntimeError("sshfs did not mount")
            time.sleep(0.05)
        yield Target("sshfs", mountpoint, _pid_serving(mountpoint, "sshfs"))
    finally:
        pid = _pid_serving(mountpoint, "sshfs")
        force_unmount(mountpoint)
        if pid is not None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _no_mount(ctx: Context, mountpoint: str) -> Iterator[Target]:
    yield Target("ssh")


TOOLS: dict[str, Callable[[Context, str], contextlib.AbstractContextManager[Target]]] = {
    "sshvfs": _mount_sshvfs,
    "sshfs": _mount_sshfs,
    "ssh": _no_mount,
}


# -- the run loop ------------------------------------------------------------------------


@dataclass
class Result:
    scenario: Scenario
    tool: str
    values: list[float] = field(default_factory=list)
    error: str | None = None
    #: p99 of each run (per-operation scenarios)
    p99s: list[float] = field(default_factory=list)
    #: round trips of each run, per operation for per-operation scenarios (``--rtt`` only)
    trips: list[float] = field(default_factory=list)

    @property
    def value(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def p99(self) -> float | None:
        return statistics.median(self.p99s) if self.p99s else None

    @property
    def round_trips(self) -> float | None:
        return statistics.median(self.trips) if self.trips else None

    def add(self, value: float | Measured, trips: int | None) -> None:
        ops = 1
        if isinstance(value, Measured):
            self.p99s.append(value.p99)
            ops = max(1, value.ops)
            value = value.value
        self.values.append(value)
        if trips is not None:
            self.trips.append(trips / ops)


def _timed(ctx: Context, scenario: Scenario, target: Target, result: Result) -> None:
    if scenario.prepare is not None:
        scenario.prepare(ctx)
    before = ctx.relay.count() if ctx.relay is not None else None
    try:
        if target.tool == "ssh":
            assert scenario.pipe is not None
            t0 = time.perf_counter()
            scenario.pipe(ctx)
            value: float | Measured = time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            got = scenario.run(ctx, target)
            value = time.perf_counter() - t0 if got is None else got
        trips = ctx.relay.count() - before if ctx.relay is not None and before is not None else None
        result.add(value, trips)
    finally:
        if scenario.cleanup is not None:
            scenario.cleanup(ctx, target)


def run_scenario(ctx: Context, scenario: Scenario, repeat: int) -> list[Result]:
    tools = list(scenario.tools) + (["ssh"] if scenario.pipe is not None else [])
    results = {tool: Result(scenario, tool) for tool in tools}
    began = time.monotonic()
    try:
        scenario.setup(ctx)
        if time.monotonic() - began > SETUP_WORK:
            # data made this moment is what the watcher's catch-up reports as changed
            # (what changed since a directory's first use, less 2 s); a person mounts a
            # tree made before that, and sshfs does not care either way
            time.sleep(SETTLE)
    except Exception as exc:  # one broken scenario must not end the run
        for r in results.values():
            r.error = f"setup: {exc}"
        return list(results.values())
    mp = {tool: str(ctx.mounts / f"{scenario.name}-{tool}") for tool in tools}
    repeat = min(repeat, scenario.repeat or repeat)
    if scenario.cold:
        for _ in range(repeat):
            for tool in tools:
                r = results[tool]
                if r.error:
                    continue
                try:
                    with TOOLS[tool](ctx, mp[tool]) as target:
                        ctx.drop_caches()
                        _timed(ctx, scenario, target, r)
                except Exception as exc:
                    r.error = str(exc)
                ctx.log(f"  {scenario.name:<22} {tool:<7} {_fmt_last(r, scenario)}")
        return list(results.values())
    with contextlib.ExitStack() as stack:
        targets: dict[str, Target] = {}
        for tool in tools:
            try:
                targets[tool] = stack.enter_context(TOOLS[tool](ctx, mp[tool]))
                _timed(ctx, scenario, targets[tool], Result(scenario, tool))  # warm-up
            except Exception as exc:
                results[tool].error = str(exc)
        for _ in range(repeat):
            for tool, target in targets.items():
                r = results[tool]
                if r.error:
                    continue
                try:
                    _timed(ctx, scenario, target, r)
                except Exception as exc:
                    r.error = str(exc)
                ctx.log(f"  {scenario.name:<22} {tool:<7} {_fmt_last(r, scenario)}")
    return list(results.values())


def _fmt_last(r: Result, scenario: Scenario) -> str:
    if r.error:
        return f"FAILED: {r.error[:200]}"
    text = f"{r.values[-1]:.2f} {scenario.unit}"
    if r.p99s:
        text += f" (p99 {r.p99s[-1]:.2f})"
    if r.trips:
        text += f", {r.trips[-1]:.1f} round trips"
    return text


def start_sshd() -> Sshd:
    # the user's real HOME: its rc files cost every exec command what they cost users
    return Sshd(own_home=False).start()


def behind_relay(sshd: Sshd, relay: Relay) -> Sshd:
    """The same server as seen through ``relay``: its port, and its host key trusted there."""
    with open(sshd.host_key + ".pub", encoding="ascii") as f:
        keytype, blob = f.read().split()[:2]
    with open(sshd.known_hosts, "a", encoding="ascii") as f:
        f.write(f"[{sshd.host}]:{relay.port} {keytype} {blob}\n")
    return dataclasses.replace(sshd, port=relay.port)


def leftover_mounts(base: Path) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(base))]
