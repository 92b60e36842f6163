"""The one-way imports of the layout (../shared/DESIGN.md, target layout): the VFS layer
knows nothing of SSH, SFTP or the transports, and the transports know nothing of FUSE."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sshvfs"

RULES = {
    "vfs": ("sshvfs.ssh", "sshvfs.sftp", "sshvfs.transport", "sshvfs.fuse", "asyncssh", "pyfuse3"),
    "transport": ("sshvfs.fuse", "sshvfs.vfs", "sshvfs.sftp", "pyfuse3"),
    "fuse": ("sshvfs.ssh", "sshvfs.sftp", "sshvfs.transport", "asyncssh"),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
    return found


@pytest.mark.parametrize("layer", sorted(RULES))
def test_imports_run_one_way(layer: str) -> None:
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in RULES[layer]):
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not bad, bad
