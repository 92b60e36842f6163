"""The inode table: kernel inode numbers <-> mount paths, with lookup counts.

Nodes form a tree (parent pointer + name), so a rename moves a whole subtree in O(1) and a
path is rebuilt by walking up. A node lives while the kernel holds lookups on it, a handle
is open on it, or it still has live children; ``forget`` releases it.

The kernel addresses a file by its node id, but stat() may show another st_ino
(:meth:`InodeTable.show`): the server's inode number when a bulk listing told it, so that
git's index (which records st_ino) written on the server or on an earlier mount still
matches, and ``git status`` reads no file to be sure. The shown number is fixed when the
kernel first sees the node and is unique among live nodes, so no two files the kernel
holds ever look like one (cp's "same file" check, tar's and du's hard-link detection).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable

import pyfuse3

from ..errors import fs_error

log = logging.getLogger(__name__)

ROOT_INODE = int(pyfuse3.ROOT_INODE)
#: inode numbers below this are reserved for the control directory
FIRST_DYNAMIC_INODE = 100
#: shown st_ino of a node whose own id a server file already shows: its id plus this
_SPARE_INOS = 1 << 62
#: names the kernel may hold as missing at once (see Misses)
MAX_MISSES = 100_000


class Node:
    __slots__ = ("ino", "parent", "name", "lookups", "opens", "children", "stamp", "shown")

    def __init__(self, ino: int, parent: Node | None, name: bytes) -> None:
        self.ino = ino
        self.parent = parent
        self.name = name
        self.lookups = 0
        self.opens = 0
        self.children: dict[bytes, Node] = {}
        #: (size, mtime_ns) when the kernel's page cache of this file was last filled
        self.stamp: tuple[int, int] | None = None
        #: the st_ino stat() shows (0: not chosen yet); see InodeTable.show
        self.shown = 0

    @property
    def attached(self) -> bool:
        """False once unlinked or replaced: the node no longer names a path."""
        node: Node | None = self
        while node is not None and node.ino != ROOT_INODE:
            parent = node.parent
            if parent is None or parent.children.get(node.name) is not node:
                return False
            node = parent
        return True

    def path(self) -> bytes:
        parts: list[bytes] = []
        node: Node | None = self
        while node is not None and node.ino != ROOT_INODE:
            parts.append(node.name)
            node = node.parent
        return b"/" + b"/".join(reversed(parts))


class Misses:
    """Names the kernel was told are missing (negative entries, kept for ``entry_timeout``):
    what must be expired with them when the server's side changes. At most ``limit``; a
    miss past that is answered without caching (ENOENT)."""

    def __init__(self, limit: int = MAX_MISSES, timer: Callable[[], float] = time.monotonic):
        self._by_dir: dict[int, dict[bytes, float]] = {}
        self._count = 0
        self._limit = limit
        self._timer = timer

    def __len__(self) -> int:
        return self._count

    def note(self, parent: int, name: bytes, timeout: float) -> bool:
        """The kernel is told ``parent/name`` is missing for ``timeout`` s; False (tell it
        nothing) when as many are held as allowed, expired ones dropped."""
        now = self._timer()
        if self._count >= self._limit:
            self._expire(now)
            if self._count >= self._limit:
                return False
        names = self._by_dir.setdefault(parent, {})
        if name not in names:
            self._count += 1
        names[name] = now + timeout
        return True

    def take(self, parent: int, name: bytes) -> bool:
        """Forget ``parent/name``; True if the kernel may still hold it as missing."""
        names = self._by_dir.get(parent)
        if names is None or names.pop(name, None) is None:
            return False
        self._count -= 1
        if not names:
            del self._by_dir[parent]
        return True

    def take_dir(self, parent: int) -> list[bytes]:
        """Forget the names missing in ``parent``; those the kernel may still hold."""
        names = self._by_dir.pop(parent, None)
        if not names:
            return []
        self._count -= len(names)
        return list(names)

    def _expire(self, now: float) -> None:
        for parent in list(self._by_dir):
            names = self._by_dir[parent]
            for name in [n for n, until in names.items() if until <= now]:
                del names[name]
                self._count -= 1
            if not names:
                del self._by_dir[parent]


class InodeTable:
    def __init__(self) -> None:
        self.root = Node(ROOT_INODE, None, b"")
        self.root.lookups = 1  # the kernel never forgets the root
        self._by_ino: dict[int, Node] = {ROOT_INODE: self.root}
        self._next = FIRST_DYNAMIC_INODE
        self.root.shown = ROOT_INODE
        #: shown st_ino -> the live node showing it
        self._showing: dict[int, Node] = {ROOT_INODE: self.root}
        self.misses = Misses()

    def __len__(self) -> int:
        return len(self._by_ino)

    def get(self, ino: int) -> Node:
        node = self._by_ino.get(ino)
        if node is None:
            # the kernel asked about an inode it forgot: a stale handle
            raise fs_error(errno.ESTALE, detail=f"unknown inode {ino}")
        return node

    def path(self, ino: int) -> bytes:
        node = self.get(ino)
        if not node.attached:
            raise fs_error(errno.ENOENT, node.path(), "file was removed")
        return node.path()

    def find(self, path: bytes) -> Node | None:
        """The node for a mount path, if the kernel knows one."""
        node = self.root
        for part in path.split(b"/"):
            if part:
                child = node.children.get(part)
                if child is None:
                    return None
                node = child
        return node

    def subtree(self, node: Node) -> list[Node]:
        out, stack = [], [node]
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(current.children.values())
        return out

    def show(self, node: Node, server_ino: int) -> int:
        """The st_ino stat() shows for ``node``, chosen the first time it is asked for and
        kept while the node lives: ``server_ino`` (the server's, 0 when unknown) unless a
        live node already shows it, else the node id, else a number above 2**62."""
        shown = node.shown
        if shown:
            return shown
        showing = self._showing
        if server_ino >= FIRST_DYNAMIC_INODE and server_ino not in showing:
            shown = server_ino
        elif node.ino not in showing:
            shown = node.ino
        else:  # a server file shows this node's id: ids have no other taker up here
            shown = _SPARE_INOS + node.ino
            while shown in showing:
                shown += 1
        node.shown = shown
        showing[shown] = node
        return shown

    def shown_ino(self, ino: int, server_ino: int) -> int:
        """:meth:`show` for the node of id ``ino`` (the id itself if none is live)."""
        node = self._by_ino.get(ino)
        return ino if node is None else self.show(node, server_ino)

    def nodes(self) -> list[Node]:
        return list(self._by_ino.values())

    def ensure(self, parent_ino: int, name: bytes) -> Node:
        """The node for ``parent/name``, created (with zero lookups) if missing."""
        return self.child(self.get(parent_ino), name)

    def child(self, parent: Node, name: bytes) -> Node:
        """``ensure`` with the parent's node in hand (every entry of a listing)."""
        node = parent.children.get(name)
        if node is None:
            node = Node(self._next, parent, name)
            self._next += 1
            parent.children[name] = node
            self._by_ino[node.ino] = node
        return node

    def lookup(self, parent_ino: int, name: bytes) -> Node:
        """Like ``ensure`` and count one kernel lookup (the name is no longer missing)."""
        node = self.ensure(parent_ino, name)
        node.lookups += 1
        if self.misses._count:
            self.misses.take(parent_ino, name)
        return node

    def lookup_in(self, parent: Node, name: bytes) -> Node:
        """``lookup`` with the parent's node in hand."""
        node = self.child(parent, name)
        node.lookups += 1
        return node

    def discard_if_unused(self, node: Node) -> None:
        """Drop a node nobody references (e.g. a readdir entry the kernel did not take)."""
        self._maybe_release(node)

    def forget(self, ino: int, count: int) -> None:
        node = self._by_ino.get(ino)
        if node is None or ino == ROOT_INODE:
            return
        node.lookups = max(0, node.lookups - count)
        self._maybe_release(node)

    def opened(self, node: Node) -> None:
        node.opens += 1

    def closed(self, node: Node) -> None:
        node.opens = max(0, node.opens - 1)
        self._maybe_release(node)

    def remove(self, parent_ino: int, name: bytes) -> Node | None:
        """Detach ``parent/name`` after an unlink/rmdir; the inode lives until forgotten."""
        parent = self._by_ino.get(parent_ino)
        if parent is None:
            return None
        node = parent.children.pop(name, None)
        if node is not None:
            self._maybe_release(node)
        if parent is not None:
            self._maybe_release(parent)
        return node

    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes) -> None:
        src_dir = self.get(old_parent)
        dst_dir = self.get(new_parent)
        node = src_dir.children.pop(old_name, None)
        replaced = dst_dir.children.pop(new_name, None)
        self.misses.take(new_parent, new_name)
        if node is not None:
            node.parent = dst_dir
            node.name = new_name
            dst_dir.children[new_name] = node
        if replaced is not None and replaced is not node:
            self._maybe_release(replaced)
        self._maybe_release(src_dir)

    def _maybe_release(self, node: Node) -> None:
        while (
            node.ino != ROOT_INODE and node.lookups == 0 and node.opens == 0 and not node.children
        ):
            self._by_ino.pop(node.ino, None)
            self.misses.take_dir(node.ino)  # the kernel's dentries below it went with it
            if node.shown and self._showing.get(node.shown) is node:
                del self._showing[node.shown]
            parent = node.parent
            if parent is None:
                return
            if parent.children.get(node.name) is node:
                del parent.children[node.name]
            node = parent
