"""Warm scenarios: what caching buys once a tree has been seen.

- ``ls-l-100k-warm``: ``ls -l`` of the 100,000-entry directory of ``ls-l-100k`` again, on
  a mount that already listed it (sshvfs answers from its listing cache and the kernel's
  attribute cache; sshfs from its dir cache, 20 s by default).
- ``find-8k-warm``: ``find`` over the tree of ``find-8k`` again, on a warm mount (sshvfs:
  the kernel keeps the listings, so no request reaches the daemon).

Both reuse the data of :mod:`benchlib.listing`; goal: at least 3x faster than sshfs.
"""

from __future__ import annotations

from .framework import Scenario, register
from .listing import find_run, huge_run, huge_setup, tree_setup

register(
    Scenario(
        name="ls-l-100k-warm",
        measures="warm ls -l of the 100,000-entry directory; quick: 10,000",
        setup=huge_setup,
        run=huge_run,
        cold=False,
        goal=3.0,
    )
)
register(
    Scenario(
        name="find-8k-warm",
        measures="warm find over 8,000 files in 420 directories; quick: 1,000 in 110",
        setup=tree_setup,
        run=find_run,
        cold=False,
        goal=3.0,
    )
)
