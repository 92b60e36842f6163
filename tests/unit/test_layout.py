"""The one-way imports of the layout (../shared/DESIGN.md, target layout): app -> fuse |
sftp | watch | transport; sftp -> vfs, execlist, transport; watch -> execlist, vfs.types;
execlist -> vfs.types, transport; fuse -> vfs.types; vfs and transport know nothing of the
others. The leaf modules at the top (config, errors, transfers, gcpause, tasks, unsupported)
import no package of sshvfs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sshvfs"

RULES = {
    "vfs": (
        "sshvfs.app",
        "sshvfs.execlist",
        "sshvfs.fuse",
        "sshvfs.sftp",
        "sshvfs.transport",
        "sshvfs.watch",
        "asyncssh",
        "pyfuse3",
    ),
    "transport": (
        "sshvfs.app",
        "sshvfs.execlist",
        "sshvfs.fuse",
        "sshvfs.sftp",
        "sshvfs.vfs",
        "sshvfs.watch",
        "pyfuse3",
    ),
    "execlist": ("sshvfs.app", "sshvfs.fuse", "sshvfs.sftp", "sshvfs.watch", "pyfuse3"),
    "watch": ("sshvfs.app", "sshvfs.fuse", "sshvfs.sftp", "pyfuse3"),
    "sftp": ("sshvfs.app", "sshvfs.fuse", "sshvfs.watch", "pyfuse3"),
    "fuse": (
        "sshvfs.app",
        "sshvfs.execlist",
        "sshvfs.sftp",
        "sshvfs.transport",
        "sshvfs.watch",
        "asyncssh",
    ),
}
PACKAGES = ("app", "execlist", "follow", "fuse", "sftp", "transport", "vfs", "watch")
LEAVES = ("config", "deadlines", "errors", "gcpause", "tasks", "transfers", "unsupported")


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


def test_every_package_has_its_rules_and_the_leaves_import_no_package() -> None:
    found = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert found == sorted(PACKAGES)
    assert set(RULES) <= set(PACKAGES)
    tops = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__"))
    assert tops == sorted(LEAVES), "a new top-level module: a leaf, or does it belong in app/?"
    bad = []
    for leaf in LEAVES:
        path = PACKAGE / f"{leaf}.py"
        for name in _imports(path):
            if any(name == f"sshvfs.{p}" or name.startswith(f"sshvfs.{p}.") for p in PACKAGES):
                bad.append(f"{leaf}.py imports {name}")
    assert not bad, bad
