"""benchlib: sshvfs against sshfs and the raw ``ssh`` pipe, on one loopback sshd, in one run.

``scripts/bench`` starts a throwaway OpenSSH sshd on 127.0.0.1 (``tests/sshd.py``), makes
its own data in a temp dir, and runs every registered scenario on every tool it names:

- ``sshvfs``: ``python -m sshvfs`` of this checkout, default options;
- ``sshfs``: the installed sshfs with its defaults (same key, known_hosts and port);
- ``ssh``: the scenario's ``pipe`` function, if it has one, as the ceiling.

Adding scenarios
----------------
Write a module in ``scripts/benchlib/`` (any name not starting with ``_``; every module of
the package is imported) and register :class:`Scenario` objects::

    from .framework import Context, Scenario, Target, register

    def setup(ctx: Context) -> None:            # once per run, untimed
        ctx.make_file(ctx.data / "f", ctx.size(64 << 20, quick=4 << 20))

    def run(ctx: Context, t: Target) -> None:   # timed; raise to fail
        ctx.sh(f"cat {t.path('f')} > /dev/null")

    register(Scenario(
        name="read-64m", measures="sequential read of a 64 MiB file",
        setup=setup, run=run, cold=True, goal=1.5,
    ))

Fields of :class:`Scenario`:

- ``name``, ``measures`` -- the table's row and what it means (one line).
- ``setup(ctx)`` -- make data. ``ctx.data`` is the served directory (the server side of
  every mount, a plain local path: loopback); ``ctx.work`` is local scratch not served.
  ``ctx.quick`` is true under ``--quick``; ``ctx.size(full, quick=...)`` picks a size.
- ``run(ctx, target)`` -- the timed part. ``target.mountpoint`` is the mount (None for the
  ``ssh`` pipe), ``target.path(rel)`` a path in it, ``target.pid`` the filesystem daemon's
  pid (for /proc), ``target.tool`` the tool name. Return None to report the elapsed wall
  time, or a number to report that instead (in ``unit``; see the RSS scenario).
- ``pipe(ctx)`` -- optional: the same job over a bare ``ssh`` command (``ctx.ssh_cmd``),
  timed, shown as the ceiling.
- ``prepare(ctx)`` / ``cleanup(ctx, target)`` -- untimed, before / after each timed run
  (warm the server's page cache, delete what a write made).
- ``cold`` -- True: a fresh mount and dropped page caches (``echo 3 >
  /proc/sys/vm/drop_caches``) before every timed run. False (warm): one mount per tool, one
  untimed run to warm it, then the timed runs on the same mount.
- ``tools`` -- which mounts to run on (default ``("sshvfs", "sshfs")``).
- ``unit``/``higher_is_better`` -- for values returned by ``run``; ``goal`` -- the least
  sshfs/sshvfs ratio the scenario should show (marked ``ok``/``MISSED`` in the table).

A setup that made data (took over 50 ms) is followed by 3 s of rest before the first
mount: data made that moment is what sshvfs's watcher reports as changed (its catch-up
reaches 2 s before a directory's first use), and a person mounts a tree made before.

Each value is the median of ``--repeat`` runs (tools interleaved, so noise spreads evenly).
Everything stays on loopback, and every subprocess has a timeout.
"""

from __future__ import annotations

from .framework import REGISTRY, Context, Scenario, Target, register

__all__ = ["REGISTRY", "Context", "Scenario", "Target", "register"]
