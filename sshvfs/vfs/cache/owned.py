"""OwnedFiles: the one tracker of what the mount's own changes made of a file.

A file created or truncated through the mount, and open through that handle, changes only
by what the handle does, as far as the mount can know: its attributes are the ones the
handle's first ``fstat`` got from the server (before any write), moved by each of its
changes. While a path is tracked:

- ``lstat`` answers from here, no round trip (the kernel asks before every chown, and
  ``ls -l`` during a copy);
- ``chmod``, ``utimens`` and a chown to what it already is ride the handle's write pipeline:
  sent in order after its writes, a refusal raised by the next write, flush or close;
- at close, when its times are exact (set by the handle after its last write, or no write
  at all), what it holds is the server's truth and goes into the attribute cache without
  a round trip (tar, cp -p, rsync). Otherwise close asks the server once.

A write moves the size and sets the mtime to the write's time floored to what the server
stores: an estimate (the server's clock set the real one), marked inexact, shown by
``lstat`` but never written back or installed as the truth. The atime is exact throughout:
writes leave it, and a read (which may move it) ends the tracking.

Anything the mount cannot account for ends it too (the caches' ``_stale``/``_gone``): a
write, truncate or open through another handle, a chmod the handle cannot carry, link,
unlink, rename (the handle still names the old path), a change reported from the server,
an invalidation. Ending it is always safe: the server is asked, and it answers after every
write sent before (the write order), so never with a size below what the kernel wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..types import Attrs, within


@dataclass(slots=True)
class Owned:
    """One tracked path: its attributes as the handle's changes left them."""

    attrs: Attrs
    #: the handle (a CachedFile) whose changes these are
    file: Any
    #: the mtime is the server's (learnt, or set after the last write), not an estimate
    mtime_exact: bool = True


class OwnedFiles:
    """Tracked paths: at most one entry, and one handle, a path."""

    def __init__(self) -> None:
        self._by_path: dict[bytes, Owned] = {}

    def __len__(self) -> int:
        return len(self._by_path)

    def get(self, path: bytes) -> Owned | None:
        return self._by_path.get(path)

    def start(self, path: bytes, file: Any, attrs: Attrs) -> None:
        self._by_path[path] = Owned(attrs, file)

    def put(self, path: bytes, owned: Owned) -> None:
        self._by_path[path] = owned

    def pop(self, path: bytes) -> Owned | None:
        return self._by_path.pop(path, None)

    def drop_subtree(self, root: bytes) -> None:
        for path in [p for p in self._by_path if within(p, root)]:
            del self._by_path[path]

    def clear(self) -> None:
        self._by_path.clear()
