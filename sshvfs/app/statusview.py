"""StatusView: a mount's ``.sshvfs/status`` rendered for people, once or live.

``sshvfs status MOUNTPOINT`` prints the connection, the cache figures and one line per file
transfer in flight (bytes, rate, ETA, and a bar when the size is known). With ``--watch``
the display is redrawn in place on a terminal (ANSI cursor movement) and printed as plain
blocks when piped; Ctrl-C ends it cleanly. Rates are measured between two readings, so they
show the current speed, not the average since the transfer began.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..errors import UserError

#: ANSI: cursor to the start of the line N lines up / clear to the end of the screen
_UP = "\x1b[{}F"
_CLEAR = "\x1b[J"
_HIDE_CURSOR = "\x1b[?25l"
_SHOW_CURSOR = "\x1b[?25h"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop always returns


def human_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def bar(fraction: float, width: int) -> str:
    """``[=====>    ]`` filled to ``fraction`` (0..1), ``width`` characters in all."""
    inner = max(1, width - 2)
    fraction = min(1.0, max(0.0, fraction))
    filled = int(fraction * inner)
    body = "=" * filled + (">" if filled < inner else "")
    return "[" + body.ljust(inner)[:inner] + "]"


@dataclass
class RateMeter:
    """Current rate of each transfer, from the bytes it moved between two readings."""

    clock: Callable[[], float] = time.monotonic
    _last: dict[tuple[str, str, float], tuple[float, int]] = field(default_factory=dict)
    _rates: dict[tuple[str, str, float], float] = field(default_factory=dict)

    @staticmethod
    def key(t: dict[str, Any]) -> tuple[str, str, float]:
        return (str(t.get("path")), str(t.get("direction")), float(t.get("started") or 0))

    def update(self, transfers: list[dict[str, Any]]) -> None:
        now = self.clock()
        seen = set()
        for t in transfers:
            k = self.key(t)
            seen.add(k)
            done = int(t.get("bytes_done") or 0)
            if k in self._last:
                then, before = self._last[k]
                if now > then:
                    self._rates[k] = max(0.0, (done - before) / (now - then))
            self._last[k] = (now, done)
        for k in set(self._last) - seen:
            self._last.pop(k, None)
            self._rates.pop(k, None)

    def rate(self, t: dict[str, Any]) -> float:
        """Measured rate, or the transfer's own average before a second reading."""
        measured = self._rates.get(self.key(t))
        return measured if measured is not None else float(t.get("rate_bps") or 0)


def transfer_line(t: dict[str, Any], rate: float, width: int, with_bar: bool) -> str:
    """``read  /path  [====>   ]  52%  260.0 MiB / 500.0 MiB  85.3 MiB/s  ETA 3s``
    (no bar, percentage or ETA while the size is unknown)."""
    done = int(t.get("bytes_done") or 0)
    total = t.get("total")
    head = f"{t.get('direction', '?'):>5}  {t.get('path')}"
    figures = [human_bytes(done), f"{human_bytes(rate)}/s"]
    if not (isinstance(total, int) and total > 0):
        return "  ".join([head, *figures])
    figures[0] += f" / {human_bytes(total)}"
    if rate > 0 and done < total:
        figures.append(f"ETA {human_duration((total - done) / rate)}")
    percent = f"{min(100, done * 100 // total):3d}%"
    tail = "  ".join([percent, *figures])
    if not with_bar:
        return f"{head}  {tail}"
    bar_width = max(10, min(40, width - len(head) - len(tail) - 4))
    return f"{head}  {bar(done / total, bar_width)}  {tail}"


def render(
    data: dict[str, Any], meter: RateMeter | None = None, width: int = 100, bars: bool = True
) -> list[str]:
    """The status as lines (without newlines)."""
    lines = [
        f"mount:      {data.get('mountpoint')} -> {data.get('host')}:{data.get('remote_root')}",
        f"connection: {data.get('state')} (reconnects: {data.get('reconnects', 0)})",
        f"uptime:     {data.get('uptime')} s, pid {data.get('pid')}",
    ]
    cache = data.get("cache")
    if isinstance(cache, dict):
        c = {k: cache.get(k, 0) for k in ("entries", "dir_listings", "hits", "misses")}
        lines.append(
            f"cache:      {c['entries']} entries ({c['dir_listings']} listings),"
            f" {c['hits']} hits, {c['misses']} misses, {cache.get('evictions', 0)} evictions"
        )
    else:
        lines.append("cache:      off")
    if data.get("cwd"):
        lines.append(f"cwd:        {data['cwd']}")
    if data.get("cwd_outside"):
        lines.append(f"cwd:        {data['cwd_outside']} (outside the mount)")
    transfers = data.get("transfers") or []
    if not isinstance(transfers, list):
        transfers = []
    if not transfers:
        lines.append("transfers:  none")
    else:
        lines.append(f"transfers:  {len(transfers)}")
    for t in transfers:
        rate = meter.rate(t) if meter is not None else float(t.get("rate_bps") or 0)
        lines.append(transfer_line(t, rate, width, bars))
    return lines


def control_file(mountpoint: str, name: str) -> str:
    path = os.path.join(mountpoint, ".sshvfs", name)
    if not os.path.exists(path):
        raise UserError(f"{mountpoint} is not an sshvfs mount (no .sshvfs/{name})")
    return path


def read_status(mountpoint: str) -> bytes:
    path = control_file(mountpoint, "status")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise UserError(f"the status file is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError("the status file is not a JSON object")
    return data


def show(
    mountpoint: str,
    watch: bool = False,
    interval: float = 1.0,
    as_json: bool = False,
    out: TextIO | None = None,
    tty: bool | None = None,
) -> int:
    """Print the status once, or every ``interval`` seconds until Ctrl-C (``watch``)."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    if not watch:
        raw = read_status(mountpoint)
        if as_json:
            out.write(raw.decode())
        else:
            out.write("\n".join(render(_parse(raw), bars=tty, width=_width())) + "\n")
        out.flush()
        return 0
    meter = RateMeter()
    drawn = 0
    if tty and not as_json:
        out.write(_HIDE_CURSOR)
    try:
        while True:
            raw = read_status(mountpoint)
            if as_json:  # one JSON document per line
                out.write(json.dumps(_parse(raw), separators=(",", ":")) + "\n")
            else:
                data = _parse(raw)
                meter.update(data.get("transfers") or [])
                width = _width()
                lines = render(data, meter, width, bars=tty)
                if tty:
                    lines = [line[:width] for line in lines]
                    if drawn:
                        out.write(_UP.format(drawn) + _CLEAR)
                    drawn = len(lines)
                else:
                    out.write(f"--- {time.strftime('%H:%M:%S')}\n")
                out.write("\n".join(lines) + "\n")
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if tty and not as_json:
            out.write(_SHOW_CURSOR)
            out.flush()


def _width() -> int:
    return max(40, shutil.get_terminal_size((100, 24)).columns - 1)
