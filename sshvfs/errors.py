"""Errors: ``UserError`` for the CLI, ``OSError`` with an errno for everything the VFS raises."""

from __future__ import annotations

import errno as _errno
import os


class UserError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


def fs_error(code: int, path: bytes | str | None = None, detail: str | None = None) -> OSError:
    """An ``OSError`` of the right subclass for ``code`` (FileNotFoundError for ENOENT...)."""
    message = detail or os.strerror(code)
    if path is None:
        return OSError(code, message)
    name = os.fsdecode(path) if isinstance(path, bytes) else path
    return OSError(code, message, name)


def errno_of(exc: BaseException, default: int = _errno.EIO) -> int:
    """The errno an exception stands for (EIO when it carries none)."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return default
