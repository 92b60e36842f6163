"""RemoteWatcher: changes made on the server pushed into the mount's caches and the kernel's.

The *scope* is the directories the mount used lately (listed, looked up in, opened files
or made things in), most recent last, at most ``max_dirs``: each new one is watched
within about a round trip of its first use. Two modes, over the exec channel:

- ``inotify``: one *driver* per connection (an exec channel running
  :func:`~sshvfs.watch.remote.driver_command`) runs an ``inotifywait -m`` per batch of
  directories and streams their events. A batch's directories are scanned once its watches
  stand (a *catch-up*: what changed since the mount first used them), after which the
  watcher *vouches* for them: a name missing from their cached listing is missing. When
  batches pile up, a fresh driver takes the whole scope in one batch and the old one goes.
- ``poll``: every ``interval`` seconds one command lists what changed in the scope since
  the poll before last (stamp files, so a change is never lost between two polls). It never
  vouches: a lookup miss asks the server.

Changes go to ``apply`` (the mount drops its caches' and the kernel's copies of exactly
those names) from the watcher's own tasks, never from a request handler. A lost
connection stops the vouching at once; the next connection starts over with a catch-up of
the whole scope covering the time it was gone. Asyncio side only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, cast

from ..execlist.lister import ExecLister
from ..tasks import Spawn, spawn_detached
from ..vfs.types import Change, Entry
from .driver import Driver
from .remote import (
    RecordParser,
    batch_commands,
    cleanup_command,
    driver_command,
    parse_clock,
    parse_event,
    poll_command,
    probe_inotify_command,
    remote_path,
    remove_lists_command,
    scan_command,
    since_minutes,
    since_stamp,
    since_time,
    stamp_command,
    take_records,
    workdir_command,
)
from .scans import Relist, scan_changes

log = logging.getLogger(__name__)

#: a batch goes once no directory was first used for this many seconds ...
BATCH_DELAY = 0.03
#: ... or this long after it began gathering: a burst of first uses (an editor opening a
#: project, a walk) is not served one batch of server commands every 30 ms meanwhile
BATCH_MAX_DELAY = 0.25
#: inotify batches one driver runs before a fresh driver takes the whole scope at once
MAX_BATCHES = 16
#: seconds a catch-up scan reaches back before a directory's first use, on top of what the
#: server's clock offset is not known to (timestamps of a coarse filesystem, a listing's
#: own time in flight): a change within it is reported though the mount may have seen it
CATCH_UP_SLACK = 2.0
#: the same where the server's clock could not be read (``find -cmin``: whole minutes)
CATCH_UP_SLACK_NO_CLOCK = 90.0
#: seconds a connection (or the driver on it) may have been dead before its loss was
#: noticed: the catch-up after it reaches back that much further (keepalives: 15 s x 3)
LOSS_SLACK = 90.0
#: seconds after a directory's first use that what was asked of it since answers for it
#: while its watch is on the way (inotify): the freshness promised for changes
PENDING_TRUST = 2.0
#: seconds a batch's watches may take to stand before the driver counts as broken
BATCH_TIMEOUT = 60.0
#: driver failures on one connection after which the watcher polls instead
MAX_DRIVER_FAILURES = 3

#: the mount's side: the changes, fresh listings of ``"dir"`` changes' directories, and how
#: long ago (seconds) what reports them looked: the scan's start (0 for an event)
Apply = Callable[[list[Change], dict[bytes, list[Entry]], float], Awaitable[None]]


class RemoteWatcher:
    def __init__(
        self,
        mode: str,
        root: bytes,
        apply: Apply,
        lister: Callable[[], ExecLister | None],
        relist: Relist | None = None,
        *,
        interval: float = 2.0,
        max_dirs: int = 10_000,
        loss_slack: float = LOSS_SLACK,
        timer: Callable[[], float] = time.monotonic,
        spawn: Spawn = spawn_detached,
    ) -> None:
        self._spawn = spawn
        if mode not in ("auto", "inotify", "poll", "no"):
            raise ValueError(f"watch mode {mode!r}")
        self.mode = mode
        self.root = root
        self._apply = apply
        self._lister = lister
        self._relist = relist
        self.interval = max(0.1, interval)
        self.max_dirs = max(1, max_dirs)
        self.loss_slack = loss_slack
        self._timer = timer
        #: the scope: mount path -> loop time of its first use since it joined
        self._scope: OrderedDict[bytes, float] = OrderedDict()
        #: in the scope and not yet sent to the server, in order of first use
        self._pending: dict[bytes, float] = {}
        #: directories whose watch stands and whose catch-up is done (inotify only)
        self._vouched: set[bytes] = set()
        self._wake = asyncio.Event()
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._driver: Driver | None = None
        self._workdir: bytes | None = None
        self._poll_batches: list[int] = []
        #: directories written to the poll lists (evicted ones included)
        self._listed = 0
        self._next_batch = 0
        self._stamp = 0
        self._failures = 0
        #: the server's clock minus ours (wall clocks) and how far that may be off, seconds
        self._clock: tuple[float, float] | None = None
        self._lost_at: float | None = None
        self._closing = False
        #: what runs now: starting, inotify, poll, off (see reason), lost (no connection)
        self.active = "off" if mode == "no" else "starting"
        self.reason: str | None = "watch=no" if mode == "no" else None
        self.events = 0
        self.changes = 0
        self.scans = 0
        self.polls = 0
        self.batches = 0
        self.drivers = 0
        self.last_change: float | None = None

    # -- what the mount tells it -----------------------------------------------------

    def use(self, path: bytes, since: float | None = None) -> None:
        """Directory ``path`` (a mount path) was used: keep it, or start, watching it.
        ``since``: the (loop) time what the mount holds of it was asked for, when earlier
        than now (a listing of a tree walk lands after the walk began)."""
        scope = self._scope
        if path in scope:
            scope.move_to_end(path)
            return
        if self.active == "off" or b"\n" in path:
            return
        now = self._timer() if since is None else min(since, self._timer())
        scope[path] = now
        self._pending[path] = now
        if len(scope) > self.max_dirs:
            old, _ = scope.popitem(last=False)
            self._pending.pop(old, None)
            self._vouched.discard(old)
        self._wake.set()

    def vouches(self, path: bytes, asked: float) -> bool:
        """May what was asked of the server at loop time ``asked`` about directory ``path``
        (a listing, a missing name) answer for it? Yes once its watch stands and its
        catch-up is done: every change is known here within the events' latency. Yes, too,
        while its watch is on the way (inotify, at most ``PENDING_TRUST`` after its first
        use) for what was asked since that first use: as fresh as the promise, and the
        catch-up reports whatever changed after it. (Off for good, e.g. no remote shell:
        the caches' timeouts answer, as without a watcher.)"""
        if path in self._vouched or self.active == "off":
            return True
        first = self._scope.get(path)
        return (
            self.active == "inotify"
            and first is not None
            and first <= asked
            and self._timer() - first < PENDING_TRUST
        )

    def bind(self, conn: Any) -> None:
        """A (new) connection: start over on it."""
        if self.mode == "no" or self._closing:
            return
        if self._task is not None:
            self._task.cancel()
        self._stop_driver()
        self._vouched.clear()
        self._conn = conn
        self._task = self._spawn(self._run(conn), "watcher")

    def connection_lost(self) -> None:
        """The connection is gone: nothing is vouched for until the next one catches up."""
        self._vouched.clear()
        if self._lost_at is None:
            self._lost_at = self._timer()
        if self.active != "off":
            self.active = "lost"

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self._stop_driver()
        lister = self._lister()
        workdir, self._workdir = self._workdir, None
        if workdir is not None and lister is not None and lister.available:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._command(lister, cleanup_command(workdir))

    def status(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "active": self.active,
            "reason": self.reason,
            "interval": self.interval if self.active == "poll" else None,
            "dirs": len(self._scope),
            "max_dirs": self.max_dirs,
            "pending": len(self._pending),
            "vouched": len(self._vouched),
            "batches": self.batches,
            "drivers": self.drivers,
            "events": self.events,
            "changes": self.changes,
            "scans": self.scans,
            "polls": self.polls,
            "last_change_age": (
                round(self._timer() - self.last_change, 1) if self.last_change else None
            ),
        }

    # -- running -----------------------------------------------------------------------

    async def _run(self, conn: Any) -> None:
        try:
            lister = await self._ready()
            if lister is None:
                return
            mode = self.mode
            if mode == "auto":
                mode = "inotify" if await self._has_inotify(lister) else "poll"
                if mode == "poll":
                    log.info(
                        "watch: no inotifywait (3.20+) on the server: polling every %gs",
                        self.interval,
                    )
            elif mode == "inotify" and not await self._has_inotify(lister):
                self._off("watch=inotify: the server has no inotifywait 3.20+ (inotify-tools)")
                return
            # everything known from before this connection: caught up in the first batch
            lost_at, self._lost_at = self._lost_at, None
            if lost_at is not None:
                self._requeue_all(lost_at - self.loss_slack)
            self._poll_batches, self._listed, self._stamp = [], 0, 0
            old, self._workdir = self._workdir, None
            if old is not None:  # the last connection's (poll mode), if the server kept it
                await self._command(lister, cleanup_command(old))
            self._failures = 0
            while True:
                if mode == "inotify":
                    try:
                        await self._run_inotify(conn, lister)
                        return
                    except DriverFailed as exc:
                        log.warning(
                            "watch: inotify failed (%s): polling every %gs instead",
                            exc,
                            self.interval,
                        )
                        self._stop_driver()
                        self._vouched.clear()
                        self._requeue_all(self._timer() - self.loss_slack)
                        mode = "poll"
                else:
                    await self._run_poll(lister)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an exec failure: the connection may be going
            log.info("watch: stopped: %s", exc)
            self.connection_lost()

    async def _ready(self) -> ExecLister | None:
        lister = self._lister()
        if lister is None or not await lister.probe():
            why = lister.reason if lister is not None else "listing=sftp"
            self._off(f"no usable remote shell ({why}): caches keep their timeouts")
            return None
        return lister

    def _off(self, reason: str) -> None:
        log.info("watch: off: %s", reason)
        self.active = "off"
        self.reason = reason
        self._scope.clear()
        self._pending.clear()
        self._vouched.clear()

    async def _command(self, lister: ExecLister, command: bytes) -> list[bytes]:
        parser = RecordParser()
        await lister.command(command, parser)
        return parser.records

    async def _has_inotify(self, lister: ExecLister) -> bool:
        records = await self._command(
            lister, probe_inotify_command() + b" && printf 'yes\\0'; true"
        )
        return records == [b"yes"]

    async def _new_workdir(self, lister: ExecLister) -> bytes:
        """A fresh remote work directory; reads the server's clock on the way."""
        sent, wall = self._timer(), time.time()
        records = await self._command(lister, workdir_command())
        elapsed = self._timer() - sent
        if not records or not records[0].startswith(b"/"):
            raise RuntimeError(f"no remote work directory ({records[:2]!r})")
        clock = parse_clock(records[1]) if len(records) == 2 else None
        if clock is not None:
            server, resolution = clock
            # read somewhere between sending and the answer: the midpoint, +- half of it
            self._clock = (server - (wall + elapsed / 2), elapsed / 2 + resolution)
        return records[0]

    def _since(self, since: float) -> tuple[bytes, bytes]:
        """The find test for "changed since loop time ``since``" on the server."""
        if self._clock is None:
            minutes = math.ceil((self._timer() - since + CATCH_UP_SLACK_NO_CLOCK) / 60)
            return since_minutes(minutes)
        offset, error = self._clock
        wall = since + (time.time() - self._timer())
        return since_time(wall + offset - error - CATCH_UP_SLACK)

    def _requeue_all(self, since: float) -> None:
        """Watch the whole scope again, catching up on what changed since ``since``."""
        for path in self._scope:
            self._pending[path] = min(self._pending.get(path, since), since)
        self._wake.set()

    async def _take_pending(self) -> dict[bytes, float]:
        """Wait for directories to watch, then take them all (a batch)."""
        while not self._pending:
            self._wake.clear()
            await self._wake.wait()
        await self._gather()
        batch, self._pending = self._pending, {}
        return {p: t for p, t in batch.items() if p in self._scope}

    async def _gather(self) -> None:
        """Let the pending directories gather into one batch (see BATCH_MAX_DELAY)."""
        end = self._timer() + BATCH_MAX_DELAY
        while True:
            count = len(self._pending)
            await asyncio.sleep(BATCH_DELAY)
            if len(self._pending) == count or self._timer() >= end:
                return

    async def _write_batch(self, lister: ExecLister, workdir: bytes, dirs: list[bytes]) -> int:
        number = self._next_batch
        self._next_batch += 1
        remote = [remote_path(p, self.root) for p in dirs]
        for command in batch_commands(workdir, number, remote):
            await self._command(lister, command)
        self.batches += 1
        return number

    # -- inotify -------------------------------------------------------------------------

    async def _run_inotify(self, conn: Any, lister: ExecLister) -> None:
        self.active = "inotify"
        self.reason = None
        while True:
            if self._failures >= MAX_DRIVER_FAILURES:
                raise DriverFailed(f"the driver ended {self._failures} times")
            batch = await self._take_pending()
            if not batch:
                continue
            driver = self._driver
            if driver is None or driver.closed or driver.batches >= MAX_BATCHES:
                # a fresh driver with the whole scope; the old one stops once it stands
                batch = {**{p: math.inf for p in self._scope}, **batch}
                fresh = await self._start_driver(conn, lister)
                await self._send(fresh, lister, batch)
                old, self._driver = self._driver, fresh
                if old is not None:
                    old.close()
            else:
                await self._send(driver, lister, batch)

    async def _start_driver(self, conn: Any, lister: ExecLister) -> Driver:
        workdir = await self._new_workdir(lister)  # the driver removes it when it ends
        proc = await conn.create_process(cast(str, driver_command(workdir)), encoding=None)
        driver = Driver(proc, workdir)
        driver.reader = self._spawn(self._read_driver(driver), "watch driver")
        self.drivers += 1
        return driver

    async def _send(self, driver: Driver, lister: ExecLister, batch: dict[bytes, float]) -> None:
        """Watch ``batch`` (path -> first use; inf: watched all along) with ``driver``,
        catch up on the new ones, then vouch for them all."""
        dirs = list(batch)
        number = await self._write_batch(lister, driver.workdir, dirs)
        ack: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        driver.acks[number] = ack
        driver.batches += 1
        driver.proc.stdin.write(b"%d\n" % number)
        try:
            async with asyncio.timeout(BATCH_TIMEOUT):
                failure = await ack
        except TimeoutError:
            failure = f"batch {number} not watched after {BATCH_TIMEOUT:g}s"
        if failure is not None:
            self._failures += 1
            if self._failures >= MAX_DRIVER_FAILURES or "limit" in failure:
                raise DriverFailed(failure)
            log.info("watch: batch %d failed (%s): retried", number, failure)
            driver.close()
            for path, first in batch.items():
                if path in self._scope and first != math.inf:
                    self._pending.setdefault(path, first)
            self._wake.set()
            return
        new = {p: t for p, t in batch.items() if t != math.inf}
        if new:
            await self._catch_up(lister, driver.workdir, [number], min(new.values()))
        self._vouched.update(p for p in dirs if p in self._scope)

    async def _read_driver(self, driver: Driver) -> None:
        buf = bytearray()
        try:
            while chunk := await driver.proc.stdout.read(256 * 1024):
                buf += chunk
                changes: list[Change] = []
                for record in take_records(buf):
                    if record.startswith(b"#"):
                        self._driver_record(driver, record)
                        continue
                    change = parse_event(record, self.root)
                    self.events += 1
                    if change is not None:
                        changes.append(change)
                if changes:
                    await self._deliver(changes)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("watch: driver stream: %s", exc)
        finally:
            ended = not driver.closed
            driver.close()
            if ended and self._driver is driver and not self._closing:
                # the channel ended under us: the connection is going, or the driver died
                self._driver = None
                self._vouched.clear()
                if self.active == "inotify":
                    log.info("watch: the inotify driver ended")
                    self._failures += 1
                    self._lost_at = self._timer()
                    self._requeue_all(self._lost_at - self.loss_slack)

    def _driver_record(self, driver: Driver, record: bytes) -> None:
        kind, _, rest = record[1:].partition(b" ")
        number_text, _, reason = rest.partition(b" ")
        try:
            number = int(number_text)
        except ValueError:
            return
        ack = driver.acks.pop(number, None)
        if ack is None or ack.done():
            return
        if kind == b"E":
            ack.set_result(None)
        else:
            ack.set_result(reason.decode("utf-8", "replace").strip() or "inotifywait failed")

    # -- scans and polls -------------------------------------------------------------------

    async def _catch_up(
        self, lister: ExecLister, workdir: bytes, batches: list[int], since: float
    ) -> None:
        """Report what changed in ``batches``' directories since loop time ``since``."""
        began = self._timer()
        records = await self._command(lister, scan_command(workdir, batches, self._since(since)))
        self.scans += 1
        await self._scanned(records, began, catching_up=True)

    async def _scanned(self, records: list[bytes], began: float, catching_up: bool = False) -> None:
        """A scan's changes (it began at ``began``), as :func:`.scans.scan_changes` makes
        them, handed to the mount."""
        changes, listings = await scan_changes(
            records, self.root, frozenset(self._scope), self._relist, catching_up
        )
        if changes:
            await self._deliver(changes, listings, began)

    async def _run_poll(self, lister: ExecLister) -> None:
        workdir = self._workdir = await self._new_workdir(lister)
        await self._command(lister, stamp_command(workdir, 0))
        started = self._timer()
        self._stamp = 1
        self.active = "poll"
        self.reason = None
        # directories used before stamp 0 (at mount, or before a reconnect): one catch-up
        early = {p: t for p, t in self._pending.items() if t <= started and p in self._scope}
        if early:
            for path in early:
                self._pending.pop(path, None)
            number = await self._write_batch(lister, workdir, list(early))
            self._poll_batches.append(number)
            self._listed += len(early)
            await self._catch_up(lister, workdir, [number], min(early.values()))
        while True:
            loop = asyncio.get_running_loop()
            next_poll = loop.time() + self.interval
            if self._pending:
                await self._gather()
                batch, self._pending = self._pending, {}
                dirs = [p for p in batch if p in self._scope]
                listed = self._listed + len(dirs)
                if len(self._poll_batches) >= MAX_BATCHES or listed > 2 * self.max_dirs:
                    dirs = list(self._scope)  # one list again, without the evicted
                    old, self._poll_batches = self._poll_batches, []
                    await self._command(lister, remove_lists_command(workdir, old))
                    listed = len(dirs)
                if dirs:
                    self._poll_batches.append(await self._write_batch(lister, workdir, dirs))
                    self._listed = listed
            if self._poll_batches:
                # what changed since the poll before last began: a directory that joined
                # since was first used after it ended (polls run one after the other)
                stamp = self._stamp
                self._stamp += 1
                since = since_stamp(workdir, max(0, stamp - 2))
                began = self._timer()
                records = await self._command(
                    lister, poll_command(workdir, self._poll_batches, stamp, since)
                )
                self.polls += 1
                await self._scanned(records, began)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_poll):
                    while True:  # new directories do not wait for the next poll's time
                        self._wake.clear()
                        await self._wake.wait()
                        if self._pending:
                            break

    async def _deliver(
        self,
        changes: list[Change],
        listings: dict[bytes, list[Entry]] | None = None,
        began: float | None = None,
    ) -> None:
        """Hand ``changes`` to the mount; ``began``: when the scan that found them began
        (None: an event, as it happens)."""
        for change in changes:
            if change.kind == "gone":
                self._scope.pop(change.path, None)
                self._vouched.discard(change.path)
        self.changes += len(changes)
        now = self.last_change = self._timer()
        try:
            await self._apply(changes, listings or {}, 0.0 if began is None else now - began)
        except Exception:
            log.exception("watch: applying %d changes failed", len(changes))

    def _stop_driver(self) -> None:
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.close()
            if driver.reader is not None:
                driver.reader.cancel()


class DriverFailed(Exception):
    pass
