"""The inode table: the st_ino stat() shows (InodeTable.show), the server's inode number
where known, fixed for a node's life, and never shown by two live nodes at once; the names
the kernel holds as missing (Misses)."""

from __future__ import annotations

from sshvfs.fuse.inodes import FIRST_DYNAMIC_INODE, ROOT_INODE, InodeTable, Misses


def test_a_node_shows_the_server_s_number_and_keeps_it() -> None:
    table = InodeTable()
    node = table.lookup(ROOT_INODE, b"a")
    assert table.show(node, 987_654) == 987_654
    # a later answer that knows no number (SFTP) or another one changes nothing
    assert table.show(node, 0) == 987_654
    assert table.show(node, 5_555) == 987_654
    assert table.shown_ino(node.ino, 0) == 987_654


def test_unknown_numbers_show_the_node_id() -> None:
    table = InodeTable()
    node = table.lookup(ROOT_INODE, b"a")
    assert table.show(node, 0) == node.ino
    assert table.shown_ino(ROOT_INODE, 0) == ROOT_INODE
    # no node: the id itself (the control directory's numbers, a forgotten inode)
    assert table.shown_ino(12_345_678, 42) == 12_345_678


def test_no_two_live_nodes_show_one_number() -> None:
    table = InodeTable()
    a = table.lookup(ROOT_INODE, b"a")
    b = table.lookup(ROOT_INODE, b"b")
    c = table.lookup(ROOT_INODE, b"c")
    # a shows the server's number that happens to be c's id; b is a hard link of a
    assert table.show(a, c.ino) == c.ino
    shown_b = table.show(b, c.ino)
    shown_c = table.show(c, 0)
    assert len({c.ino, shown_b, shown_c}) == 3
    assert shown_b == b.ino
    assert shown_c > 1 << 62  # its own id was taken: a number no server file shows
    # numbers reserved for the root and the control directory are never taken
    d = table.lookup(ROOT_INODE, b"d")
    assert table.show(d, ROOT_INODE) == d.ino
    e = table.lookup(ROOT_INODE, b"e")
    assert table.show(e, FIRST_DYNAMIC_INODE - 1) == e.ino


def test_a_forgotten_node_frees_its_number() -> None:
    table = InodeTable()
    a = table.lookup(ROOT_INODE, b"a")
    assert table.show(a, 777_777) == 777_777
    table.forget(a.ino, 1)
    again = table.lookup(ROOT_INODE, b"a")
    assert again is not a
    assert table.show(again, 777_777) == 777_777
    other = table.lookup(ROOT_INODE, b"b")
    assert table.show(other, 777_777) == other.ino  # the number is a's again, not free


def test_a_renamed_node_keeps_its_number() -> None:
    table = InodeTable()
    a = table.lookup(ROOT_INODE, b"a")
    table.show(a, 31_337)
    table.rename(ROOT_INODE, b"a", ROOT_INODE, b"z")
    assert table.shown_ino(a.ino, 0) == 31_337


def test_misses_the_kernel_holds_are_bounded_and_taken_back() -> None:
    now = [0.0]
    misses = Misses(limit=3, timer=lambda: now[0])
    assert misses.note(5, b"a", 10) and misses.note(5, b"b", 1) and misses.note(6, b"c", 10)
    assert not misses.note(7, b"d", 10)  # full, nothing expired: the kernel is told nothing
    now[0] = 2.0
    assert misses.note(7, b"d", 10)  # b expired and went
    assert len(misses) == 3
    assert misses.take(5, b"a") and not misses.take(5, b"a") and not misses.take(5, b"b")
    assert misses.take_dir(6) == [b"c"] and misses.take_dir(6) == []
    assert len(misses) == 1


def test_a_name_looked_up_or_renamed_onto_is_no_longer_missing() -> None:
    table = InodeTable()
    table.misses.note(ROOT_INODE, b"x", 30)
    table.misses.note(ROOT_INODE, b"y", 30)
    table.lookup(ROOT_INODE, b"x")
    assert not table.misses.take(ROOT_INODE, b"x")
    table.lookup(ROOT_INODE, b"z")
    table.rename(ROOT_INODE, b"z", ROOT_INODE, b"y")
    assert not table.misses.take(ROOT_INODE, b"y")
    d = table.lookup(ROOT_INODE, b"d")
    table.misses.note(d.ino, b"gone", 30)
    table.forget(d.ino, 1)  # the kernel forgot the directory: its dentries went with it
    assert len(table.misses) == 0
