"""Shell hooks that make a remote shell report its directory with OSC 7.

The canonical scripts live in this package under ``shell/`` (``contrib/shell``
holds symlinks to them for users who source them from a checkout).
"""

from __future__ import annotations

from importlib import resources
from typing import Final

__all__ = ["SHELLS", "hook_text"]

#: Shells for which a hook script is shipped.
SHELLS: Final = ("bash", "zsh", "fish")


def hook_text(shell: str) -> str:
    """Return the hook script for ``shell`` ("bash", "zsh" or "fish").

    Raises ``ValueError`` naming the valid shells for anything else.
    """
    if shell not in SHELLS:
        raise ValueError(f"no sshvfs hook for shell {shell!r}; valid shells: {', '.join(SHELLS)}")
    script = resources.files("sshvfs.follow") / "shell" / f"sshvfs.{shell}"
    return script.read_text(encoding="utf-8")
