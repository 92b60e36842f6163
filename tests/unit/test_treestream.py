"""TreeStream: which directories of a pre-order tree listing are complete, and when."""

from __future__ import annotations

import stat

from sshvfs.execlist.treestream import TreeStream
from sshvfs.vfs.types import Attrs, Entry


def rec(rel: str, kind: int = stat.S_IFREG) -> tuple[bytes, Entry]:
    path = rel.encode()
    attrs = Attrs(kind | 0o644, 0, 0, 0, 1, 0, 0)
    return path, Entry(path.rpartition(b"/")[2], attrs, None)


def d(rel: str) -> tuple[bytes, Entry]:
    return rec(rel, stat.S_IFDIR)


def names(out: list[tuple[bytes, list[Entry]]]) -> list[tuple[str, list[str]]]:
    return [(p.decode(), [e.name.decode() for e in es]) for p, es in out]


def test_a_directory_is_handed_out_once_the_listing_leaves_it() -> None:
    stream = TreeStream(b"/top")
    out = stream.feed([d("a"), rec("a/x"), d("a/sub"), rec("a/sub/1")])
    assert names(out) == []  # still inside a/sub (and so inside a)
    out = stream.feed([rec("a/y")])
    assert names(out) == [("/top/a/sub", ["1"])]
    out = stream.feed([d("b")])
    assert names(out) == [("/top/a", ["x", "sub", "y"])]
    out = stream.feed([rec("b/z"), d("ab"), rec("ab/1")])  # 'ab' is not inside 'a'
    assert names(out) == [("/top/b", ["z"])]
    assert names(stream.feed([d("ab/empty"), rec("ab/2")])) == []  # 'ab' still open
    stream.finish()
    assert not stream.broken


def test_empty_directories_wait_for_the_end() -> None:
    """find prints an unreadable directory and nothing in it: empty proves nothing yet."""
    stream = TreeStream(b"/")
    out = stream.feed([d("locked"), d("open"), rec("open/f"), rec("g")])
    assert names(out) == [("/open", ["f"])]


def test_a_record_out_of_order_takes_its_directory_back() -> None:
    stream = TreeStream(b"/r")
    out = stream.feed([d("a"), rec("a/1"), d("b"), rec("b/1")])
    assert names(out) == [("/r/a", ["1"])]
    out = stream.feed([rec("a/2")])  # a was handed out: it was not complete after all
    assert names(out) == [("/r/b", ["1"])]
    assert stream.broken == {b"/r/a"}
    assert stream.feed([rec("never/opened")]) == []  # its directory never came: dropped
    assert stream.broken == {b"/r/a"}
