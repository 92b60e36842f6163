"""TreeStream: the directories of a tree listing that are complete while the rest arrives.

A tree listing (``find DIR -mindepth 1``, see :func:`sshvfs.execlist.commands.tree_command`) comes
in pre-order: a directory's entry, then its contents, each subdirectory's contents right
after the subdirectory's own entry. So once a record is not inside directory D, D's own
listing is complete, and a walk waiting for it (a cold ``find``) can have it while the
rest of the tree still arrives.

What is handed out early is only what the order proves: a directory that ends with no
entry at all is held back (find prints an unreadable directory's entry and then nothing
inside it, so empty and unreadable look alike until the command's exit status says), and
a record that breaks the order (its parent already handed out) marks that parent
``broken``: what was handed out for it must be dropped again. The full listing at the end
(:func:`sshvfs.execlist.lister.group_tree`) stays the authority.
"""

from __future__ import annotations

from ..vfs.types import Entry


class TreeStream:
    """Feed ``(path relative to the root, Entry)`` records of one tree listing in output
    order; :meth:`feed` returns the directories completed by them, as ``(mount path,
    entries)``."""

    def __init__(self, root: bytes) -> None:
        self._prefix = b"/" if root == b"/" else root + b"/"
        self._root = root
        #: relative paths of the directories the walk is inside, outermost first
        self._open: list[bytes] = [b""]
        self._entries: dict[bytes, list[Entry]] = {b"": []}
        #: mount paths handed out that a later record proved incomplete
        self.broken: set[bytes] = set()
        self._done: set[bytes] = set()

    def _path(self, rel: bytes) -> bytes:
        return self._prefix + rel if rel else self._root

    def _close(self, rel: bytes, out: list[tuple[bytes, list[Entry]]]) -> None:
        entries = self._entries.pop(rel)
        if entries:
            out.append((self._path(rel), entries))
            self._done.add(rel)

    def feed(self, records: list[tuple[bytes, Entry]]) -> list[tuple[bytes, list[Entry]]]:
        out: list[tuple[bytes, list[Entry]]] = []
        opened = self._open
        for rel, entry in records:
            parent = rel.rpartition(b"/")[0]
            # leave every open directory the record is not inside: each is complete
            while opened[-1] != parent and not _inside(parent, opened[-1]):
                self._close(opened.pop(), out)
            if opened[-1] != parent:  # inside, yet never opened: out of order
                if parent in self._done:
                    self.broken.add(self._path(parent))
                continue
            self._entries[parent].append(entry)
            if entry.attrs.is_dir:
                opened.append(rel)
                self._entries[rel] = []
        return out

    def finish(self) -> None:
        """The listing ended: nothing more is handed out (the caller installs the full
        listing, which holds the empty directories too)."""
        self._open[1:] = []
        self._entries = {b"": []}


def _inside(path: bytes, directory: bytes) -> bool:
    return directory == b"" or path.startswith(directory + b"/")
