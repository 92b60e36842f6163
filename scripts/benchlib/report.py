"""The results table (text) and an optional PNG chart (matplotlib, if installed)."""

from __future__ import annotations

from collections.abc import Sequence

from .framework import Result, Scenario


def _cell(r: Result | None, unit: str) -> str:
    if r is None:
        return "-"
    if r.error:
        return "FAILED"
    v = r.value
    return "-" if v is None else f"{v:.2f} {unit}"


def _trips(r: Result | None) -> str:
    if r is None or r.round_trips is None:
        return "-"
    q = r.round_trips
    return f"{q:.1f}" if q < 100 else f"{q:.0f}"


def ratio(by_tool: dict[str, Result], scenario: Scenario) -> float | None:
    """sshfs/sshvfs for times (>1: sshvfs is faster); sshvfs/sshfs when higher is better."""
    ours, theirs = by_tool.get("sshvfs"), by_tool.get("sshfs")
    if ours is None or theirs is None or ours.value is None or theirs.value is None:
        return None
    a, b = (ours.value, theirs.value) if scenario.higher_is_better else (theirs.value, ours.value)
    return a / b if b > 0 else None


def table(results: Sequence[Result]) -> str:
    grouped: dict[str, dict[str, Result]] = {}
    scenarios: dict[str, Scenario] = {}
    for r in results:
        grouped.setdefault(r.scenario.name, {})[r.tool] = r
        scenarios[r.scenario.name] = r.scenario
    counted = any(r.trips for r in results)
    header = (
        f"{'scenario':<22} {'sshvfs':>11} {'sshfs':>11} {'ssh pipe':>11} {'sshfs/sshvfs':>12}"
        + (f" {'trips sshvfs':>12} {'sshfs':>6}" if counted else "")
        + "  goal"
    )
    lines = [header, "-" * len(header)]
    notes = []
    for name, by_tool in grouped.items():
        s = scenarios[name]
        q = ratio(by_tool, s)
        verdict = ""
        if s.goal is not None and q is not None:
            verdict = f">={s.goal:g}x {'ok' if q >= s.goal else 'MISSED'}"
        lines.append(
            f"{name:<22} {_cell(by_tool.get('sshvfs'), s.unit):>11} "
            f"{_cell(by_tool.get('sshfs'), s.unit):>11} {_cell(by_tool.get('ssh'), s.unit):>11} "
            f"{(f'{q:.2f}x' if q is not None else '-'):>12}"
            + (
                f" {_trips(by_tool.get('sshvfs')):>12} {_trips(by_tool.get('sshfs')):>6}"
                if counted
                else ""
            )
            + f"  {verdict}"
        )
        notes.append(f"  {name}: {s.measures}")
        p99 = [f"{t} {r.p99:.2f} {s.unit}" for t, r in by_tool.items() if r.p99 is not None]
        if p99:
            notes.append(f"    p99: {', '.join(p99)}")
        for r in by_tool.values():
            if r.error:
                notes.append(f"    {r.tool} failed: {r.error[:300]}")
    return "\n".join(lines + ["", *notes])


def png(results: Sequence[Result], path: str) -> str | None:
    """Write a grouped bar chart; returns why not when it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no PNG written"
    names: list[str] = []
    for r in results:
        if r.scenario.name not in names:
            names.append(r.scenario.name)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = [r for r in results if r.scenario.name == name and r.value is not None]
        ax.bar([r.tool for r in rows], [r.value or 0.0 for r in rows], color="#4878a8")
        unit = rows[0].scenario.unit if rows else ""
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(unit)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None
