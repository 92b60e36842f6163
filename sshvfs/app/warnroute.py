"""Where Python warnings go: the CLI owns its stderr.

A dependency's warning (a deprecation in cryptography printed when asyncssh is imported, say)
is not the user's business: it goes to the debug log (logger ``sshvfs.thirdparty``), never to
the terminal, so a floating transitive dependency cannot turn a one-line error into eleven.
A warning raised by sshvfs's own code is a bug of ours and stays loud (shown as usual, or an
exception where the filters say ``error``, as the test suite sets them).

:func:`route` must run before anything imports asyncssh; the entry points (``sshvfs`` and
``mount.sshvfs``) call it first thing.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import TextIO

log = logging.getLogger("sshvfs.thirdparty")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_shown = warnings.showwarning


def is_ours(filename: str) -> bool:
    """Whether a warning was issued from a file of the sshvfs package."""
    return os.path.abspath(filename).startswith(_PACKAGE_DIR)


def _show(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if is_ours(filename):
        _shown(message, category, filename, lineno, file, line)
        return
    log.debug("%s:%d: %s: %s", filename, lineno, category.__name__, message)


def route() -> None:
    """Send third-party warnings to the debug log from now on (idempotent)."""
    warnings.showwarning = _show
