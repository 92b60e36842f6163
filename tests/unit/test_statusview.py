"""``sshvfs status``: rendering, measured rates, and the live display on a terminal and a pipe
(against a status file on disk: the display only ever reads ``.sshvfs/status``)."""

from __future__ import annotations

import io
import json
import os

import pytest

from sshvfs.app import cli, statusview
from sshvfs.app.statusview import RateMeter, bar, human_bytes, human_duration, render

MiB = 1024 * 1024


def status(transfers: list[dict[str, object]]) -> dict[str, object]:
    return {
        "mountpoint": "/mnt",
        "host": "h",
        "remote_root": "/srv",
        "state": "connected",
        "reconnects": 0,
        "uptime": 3.5,
        "pid": 42,
        "cache": {"entries": 3, "dir_listings": 1, "hits": 9, "misses": 2, "evictions": 0},
        "transfers": transfers,
    }


def transfer(done: int, total: int | None = 500 * MiB, path: str = "/big") -> dict[str, object]:
    return {
        "path": path,
        "direction": "read",
        "bytes_done": done,
        "total": total,
        "rate_bps": 10 * MiB,
        "started": 1000.0,
    }


def test_units() -> None:
    assert human_bytes(0) == "0 B" and human_bytes(1536) == "1.5 KiB"
    assert human_bytes(500 * MiB) == "500.0 MiB"
    assert (human_duration(5), human_duration(65), human_duration(3700)) == ("5s", "1m05s", "1h01m")
    assert bar(0.5, 12) == "[=====>    ]"
    assert bar(1.0, 12) == "[==========]" and bar(0, 6) == "[>   ]"


def test_render_with_and_without_bars() -> None:
    lines = render(status([transfer(250 * MiB)]), width=120)
    assert lines[0] == "mount:      /mnt -> h:/srv"
    assert "3 entries (1 listings), 9 hits, 2 misses" in lines[3]
    line = lines[-1]
    assert "/big" in line and "[" in line and " 50% " in line
    assert "250.0 MiB / 500.0 MiB" in line and "10.0 MiB/s" in line and "ETA 25s" in line
    plain = render(status([transfer(250 * MiB)]), bars=False)[-1]
    assert "[" not in plain and "50%" in plain and "ETA 25s" in plain
    unknown = render(status([transfer(7 * MiB, total=None)]))[-1]
    assert "7.0 MiB" in unknown and "ETA" not in unknown and "%" not in unknown
    assert render(status([]))[-1] == "transfers:  none"


def test_rate_is_measured_between_readings() -> None:
    now = [0.0]
    meter = RateMeter(clock=lambda: now[0])
    meter.update([transfer(0)])
    assert meter.rate(transfer(0)) == 10 * MiB  # the transfer's own average until then
    now[0] = 2.0
    meter.update([transfer(100 * MiB)])
    assert meter.rate(transfer(100 * MiB)) == 50 * MiB
    meter.update([])  # finished transfers are forgotten
    assert meter.rate(transfer(0)) == 10 * MiB


@pytest.fixture
def fake_mount(tmp_path: object) -> str:
    mnt = str(tmp_path)
    os.mkdir(os.path.join(mnt, ".sshvfs"))
    return mnt


def write_status(mnt: str, data: dict[str, object]) -> None:
    with open(os.path.join(mnt, ".sshvfs", "status"), "w") as f:
        json.dump(data, f)


def run_watch(
    mnt: str, monkeypatch: pytest.MonkeyPatch, tty: bool, rounds: int = 3, as_json: bool = False
) -> str:
    """Run ``show(watch=True)``; each "sleep" advances the transfer, the last is a Ctrl-C."""
    done = [0]
    write_status(mnt, status([transfer(0)]))

    def sleep(seconds: float) -> None:
        done[0] += 1
        if done[0] >= rounds:
            raise KeyboardInterrupt
        write_status(mnt, status([transfer(done[0] * 100 * MiB)]))

    monkeypatch.setattr(statusview.time, "sleep", sleep)
    out = io.StringIO()
    assert statusview.show(mnt, watch=True, interval=0.01, as_json=as_json, out=out, tty=tty) == 0
    return out.getvalue()


def test_watch_redraws_in_place_on_a_terminal(
    fake_mount: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = run_watch(fake_mount, monkeypatch, tty=True)
    assert text.startswith("\x1b[?25l") and text.endswith("\x1b[?25h")  # cursor back on exit
    assert text.count("\x1b[J") == 2  # two redraws after the first frame
    assert "200.0 MiB / 500.0 MiB" in text


def test_watch_prints_plain_blocks_when_piped(
    fake_mount: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = run_watch(fake_mount, monkeypatch, tty=False)
    assert "\x1b" not in text
    assert text.count("--- ") == 3 and text.count("mount:") == 3
    assert "100.0 MiB / 500.0 MiB" in text and "200.0 MiB / 500.0 MiB" in text


def test_watch_json_is_one_document_per_line(
    fake_mount: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = run_watch(fake_mount, monkeypatch, tty=True, as_json=True).splitlines()
    assert [json.loads(x)["transfers"][0]["bytes_done"] for x in lines] == [0, 100 * MiB, 200 * MiB]


def test_status_command(fake_mount: str, capsys: pytest.CaptureFixture[str]) -> None:
    write_status(fake_mount, status([transfer(MiB)]))
    assert cli.main(["status", fake_mount]) == 0
    assert "/big" in capsys.readouterr().out
    assert cli.main(["status", fake_mount, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pid"] == 42
    assert cli.main(["status", fake_mount, "--watch", "--interval", "0"]) == 2
    assert "--interval" in capsys.readouterr().err
    assert cli.main(["status", os.path.join(fake_mount, ".sshvfs")]) == 1
    assert "not an sshvfs mount" in capsys.readouterr().err
