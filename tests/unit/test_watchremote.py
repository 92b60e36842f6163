"""The watcher's remote commands, run by a local sh on real directories, and their parsers
on captured bytes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sshvfs.execlist.commands import end_command, end_record
from sshvfs.vfs.types import Change
from sshvfs.watch.remote import (
    RecordParser,
    batch_commands,
    driver_command,
    mount_path,
    parse_clock,
    parse_event,
    parse_scan,
    poll_command,
    remote_path,
    scan_command,
    since_minutes,
    since_stamp,
    since_time,
    take_records,
    workdir_command,
)

from .test_contents import BAD_END_RECORDS


def sh(command: bytes) -> bytes:
    return subprocess.run(command, shell=True, check=True, capture_output=True).stdout


def test_mount_and_remote_paths() -> None:
    assert mount_path(b"/srv/data/a/b", b"/srv/data") == b"/a/b"
    assert mount_path(b"/srv/data/", b"/srv/data") == b"/"
    assert mount_path(b"/srv/database/x", b"/srv/data") is None
    assert mount_path(b"/x/y/", b"/") == b"/x/y"
    assert remote_path(b"/a", b"/srv/data/") == b"/srv/data/a"
    assert remote_path(b"/", b"/srv/data") == b"/srv/data"
    assert remote_path(b"/a", b"/") == b"/a"


def test_events_parse_to_changes() -> None:
    root = b"/r"
    assert parse_event(b"CREATE /r/d/f", root) == Change(b"/d/f", "name")
    assert parse_event(b"MOVED_FROM /r/d/a b", root) == Change(b"/d/a b", "name", went=True)
    assert parse_event(b"DELETE,ISDIR /r/d/sub", root) == Change(b"/d/sub", "name", went=True)
    assert parse_event(b"MOVED_TO /r/d/a", root) == Change(b"/d/a", "name")
    assert parse_event(b"CREATE,ISDIR /r/d/sub", root) == Change(b"/d/sub", "name")
    assert parse_event(b"CLOSE_WRITE,CLOSE /r/d/f", root) == Change(b"/d/f", "entry")
    assert parse_event(b"ATTRIB,ISDIR /r/d/", root) == Change(b"/d", "entry")
    assert parse_event(b"DELETE_SELF /r/d/", root) == Change(b"/d", "gone")
    assert parse_event(b"Q_OVERFLOW ", root) == Change(b"/", "all")
    assert parse_event(b"CREATE /elsewhere/f", root) is None
    assert parse_event(b"garbage", root) is None


def test_take_records_keeps_a_partial_tail() -> None:
    buf = bytearray(b"a\0b c\0par")
    assert take_records(buf) == [b"a", b"b c"]
    assert buf == b"par"
    buf += b"tial\0"
    assert take_records(buf) == [b"partial"]
    assert take_records(buf) == []


def test_record_parser_reads_the_end_record() -> None:
    parser = RecordParser()
    stream = b"/x/y\0/x/z\n2\0" + end_record(0)
    for i in range(0, len(stream), 3):  # in pieces
        parser.feed(stream[i : i + 3])
    assert parser.records == [b"/x/y", b"/x/z\n2"]
    assert parser.exit_status == 0
    empty = RecordParser()
    empty.feed(end_record(1))
    assert empty.records == [] and empty.exit_status == 1
    # the end record has a listing record's 13 fields: an empty one, the status, 10 more
    # empty ones, the marker "/"
    assert end_record(0) == b"\x000" + b"\0" * 11 + b"/\0"
    for step in (1, 2, 5, 13):
        parser = RecordParser()
        for i in range(0, len(stream), step):
            parser.feed(stream[i : i + step])
            if i + step < len(stream):
                assert parser.exit_status is None  # not whole yet
        assert parser.records == [b"/x/y", b"/x/z\n2"] and parser.exit_status == 0


def test_record_parser_refuses_a_malformed_end_record() -> None:
    for bad in BAD_END_RECORDS:
        with pytest.raises(ValueError, match="end record"):
            RecordParser().feed(b"/a\0" + bad)


def test_record_parser_reads_a_shell_s_output() -> None:
    out = sh(b"printf '/a b\\0/c\\0'; (exit 3); " + end_command(b"tok"))
    parser = RecordParser()
    parser.feed(out)
    assert parser.records == [b"/a b", b"/c"] and parser.exit_status == 3


def test_batches_stay_under_the_command_limit(tmp_path: Path) -> None:
    dirs = [f"/srv/{'d' * 200}{i} 'q'".encode() for i in range(2000)]
    commands = batch_commands(os.fsencode(tmp_path), 7, dirs)
    assert len(commands) > 1
    assert all(len(c) < 100 * 1024 for c in commands)
    for c in commands:
        sh(c)
    assert (tmp_path / "l.7").read_bytes().split(b"\n")[:-1] == dirs
    with pytest.raises(ValueError):
        batch_commands(b"/w", 0, [b"/a\nb"])


def test_poll_reports_changes_since_the_stamp_and_nothing_else(tmp_path: Path) -> None:
    work = sh(workdir_command()).split(b"\0")[0]
    try:
        tree = tmp_path / "tree"
        (tree / "a").mkdir(parents=True)
        (tree / "b").mkdir()
        (tree / "a" / "old").write_text("1")
        (tree / "a" / "name with\nnewline").write_text("1")
        for c in batch_commands(work, 0, [os.fsencode(tree / "a"), os.fsencode(tree / "b")]):
            sh(c)
        sh(b"touch " + work + b"/s.0")
        time.sleep(0.05)
        assert sh(poll_command(work, [0], 1, since_stamp(work, 0))) == b""
        (tree / "b" / "new").write_text("x")
        (tree / "a" / "old").write_text("22")
        got = sh(poll_command(work, [0], 2, since_stamp(work, 0))).split(b"\0")[:-1]
        assert sorted(got) == sorted(
            [os.fsencode(p) for p in (tree / "b", tree / "b" / "new", tree / "a" / "old")]
        )
        assert (Path(os.fsdecode(work)) / "s.2").exists()
        # a catch-up: everything changed in the last minutes
        recent = sh(scan_command(work, [0], since_minutes(2))).split(b"\0")[:-1]
        assert os.fsencode(tree / "a" / "name with\nnewline") in recent
        root = os.fsencode(tmp_path)
        watched = frozenset({b"/tree/a", b"/tree/b"})
        assert parse_scan(os.fsencode(tree / "b"), root, watched) == Change(b"/tree/b", "dir")
        assert parse_scan(os.fsencode(tree / "b" / "new"), root, watched) == Change(
            b"/tree/b/new", "entry"
        )
    finally:
        shutil.rmtree(os.fsdecode(work), ignore_errors=True)


def test_the_workdir_command_reads_the_servers_clock() -> None:
    before = time.time()
    work, clock, rest = sh(workdir_command()).split(b"\0")
    try:
        assert rest == b"" and os.path.isdir(work)
        parsed = parse_clock(clock)
        assert parsed is not None
        server, resolution = parsed
        assert before - 1 <= server <= time.time() + 1 and resolution < 1e-3
    finally:
        shutil.rmtree(os.fsdecode(work), ignore_errors=True)
    assert parse_clock(b"1700000000.%N") == (1700000000.0, 1.0)  # date without %N
    assert parse_clock(b"1700000000.N") == (1700000000.0, 1.0)
    assert parse_clock(b"1700000000.25") == (1700000000.25, 0.01)
    assert parse_clock(b"") is None and parse_clock(b"date: bad") is None


def test_a_catch_up_from_a_time_reports_what_changed_after_it_only(tmp_path: Path) -> None:
    work = sh(workdir_command()).split(b"\0")[0]
    try:
        tree = tmp_path / "tree"
        tree.mkdir()
        (tree / "before").write_text("1")
        for c in batch_commands(work, 0, [os.fsencode(tree)]):
            sh(c)
        time.sleep(0.05)
        since = time.time()
        time.sleep(0.05)
        assert sh(scan_command(work, [0], since_time(since))) == b""
        (tree / "after").write_text("2")
        os.chmod(tree / "before", 0o600)  # a status change counts: ctime
        got = sh(scan_command(work, [0], since_time(since))).split(b"\0")[:-1]
        assert sorted(got) == sorted(
            os.fsencode(p) for p in (tree, tree / "after", tree / "before")
        )
    finally:
        shutil.rmtree(os.fsdecode(work), ignore_errors=True)


@pytest.mark.skipif(shutil.which("inotifywait") is None, reason="needs inotify-tools")
def test_driver_watches_batches_and_cleans_up(tmp_path: Path) -> None:
    work = sh(workdir_command()).split(b"\0")[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for c in batch_commands(work, 0, [os.fsencode(tmp_path / "a"), b"/nonexistent/dir"]):
        sh(c)
    for c in batch_commands(work, 1, [b"/nonexistent/too"]):
        sh(c)
    proc = subprocess.Popen(
        driver_command(work), shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    out = bytearray()

    def until(record: bytes) -> list[bytes]:
        deadline = time.monotonic() + 10
        records: list[bytes] = []
        while record not in records:
            assert time.monotonic() < deadline, (record, records)
            assert proc.stdout is not None
            out.extend(os.read(proc.stdout.fileno(), 4096))
            records += take_records(out)
        return records

    try:
        proc.stdin.write(b"0\n")
        proc.stdin.flush()
        until(b"#E 0")
        proc.stdin.write(b"1\n")  # nothing left to watch: established at once
        proc.stdin.flush()
        until(b"#E 1")
        (tmp_path / "a" / "f").write_text("x")
        records = until(b"CLOSE_WRITE,CLOSE " + os.fsencode(tmp_path / "a" / "f"))
        assert b"CREATE " + os.fsencode(tmp_path / "a" / "f") in records
    finally:
        proc.stdin.close()
        assert proc.wait(10) == 0
    assert not os.path.exists(os.fsdecode(work))  # removed at EOF
