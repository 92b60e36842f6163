"""WalkDetector: spots a tree walk in a stream of directory listings (the caching layer's
cue to prefetch the tree)."""

from __future__ import annotations


class WalkDetector:
    """Spots a tree walk (find, ls -R, du, cp -r, rsync) in a stream of directory listings.

    Feed it every directory listed, with a monotonic time. A walk is a chain of listings
    each of whose parent was listed (or had a child listed) within ``window`` seconds; once
    a walk has listed ``min_dirs`` directories, :meth:`listed` returns its root -- the
    directory to prefetch whole -- and stays quiet for ``cooldown`` seconds about that
    root and anything below it.
    """

    def __init__(
        self,
        min_dirs: int = 3,
        window: float = 2.0,
        cooldown: float = 30.0,
        max_tracked: int = 4096,
    ) -> None:
        if min_dirs < 2:
            raise ValueError(f"min_dirs must be >= 2, not {min_dirs}")
        self.min_dirs = min_dirs
        self.window = window
        self.cooldown = cooldown
        self._max_tracked = max_tracked
        self._recent: dict[bytes, tuple[bytes, float]] = {}  # path -> (walk root, last seen)
        self._counts: dict[bytes, int] = {}  # walk root -> directories listed in the walk
        self._reported: dict[bytes, float] = {}  # root -> when it was returned

    def _expire(self, now: float) -> None:
        recent = self._recent
        while recent:
            path = next(iter(recent))
            root, seen = recent[path]
            if seen >= now - self.window and len(recent) < self._max_tracked:
                break
            del recent[path]
            left = self._counts[root] - 1
            if left:
                self._counts[root] = left
            else:
                del self._counts[root]
        for root in [r for r, t in self._reported.items() if t < now - self.cooldown]:
            del self._reported[root]

    def _touch(self, path: bytes, now: float) -> None:
        """Mark ``path`` and its tracked ancestors as active (a walk is still inside them)."""
        while path in self._recent:
            root, _ = self._recent.pop(path)
            self._recent[path] = (root, now)  # re-insert: the dict stays ordered by time
            if path == b"/":
                break
            path = path.rpartition(b"/")[0] or b"/"

    def _covered(self, root: bytes) -> bool:
        """Was ``root`` or an ancestor reported within the cooldown?"""
        path = root
        while True:
            if path in self._reported:
                return True
            if path == b"/":
                return False
            path = path.rpartition(b"/")[0] or b"/"

    def listed(self, path: bytes, now: float) -> bytes | None:
        """Record a listing of ``path``; the root of a walk to prefetch, or None."""
        self._expire(now)
        if path in self._recent:
            self._touch(path, now)
            return None
        parent = path.rpartition(b"/")[0] or b"/"
        if path != b"/" and parent in self._recent:
            root = self._recent[parent][0]
            self._touch(parent, now)
        else:
            root = path
        self._recent[path] = (root, now)
        count = self._counts.get(root, 0) + 1
        self._counts[root] = count
        if count < self.min_dirs or self._covered(root):
            return None
        self._reported[root] = now
        return root
