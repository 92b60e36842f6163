"""The mount(8) helper: ``mount.sshvfs SOURCE MOUNTPOINT [-sfnv] [-o OPTS] [-t TYPE]``.

util-linux ``mount -t fuse.sshvfs`` (and so /etc/fstab and systemd mount units) runs
``/sbin/mount.fuse.sshvfs`` when it exists, with the mount helper conventions:

- ``-o`` the options, fstab words included (``_netdev``, ``nofail``, ``user``, ``rw``,
  ``nodev``...; ``noauto`` and ``x-*`` are usually stripped by mount, ignored here anyway);
- ``-s`` sloppy: unknown options are ignored with a warning instead of failing;
- ``-f`` fake: check everything, mount nothing;
- ``-n`` no mtab (there is none to write), ``-v`` verbose.

mount(8) clears the environment (no PATH, no HOME): nothing here relies on either. The mount
itself is the ordinary background ``sshvfs SOURCE MOUNTPOINT -o OPTS``: it returns once the
filesystem is mounted and a daemon keeps serving it. Without the helper, mount falls back to
``mount.fuse3``, which runs ``sshvfs SOURCE MOUNTPOINT -o OPTS`` found in its default PATH.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import UserError
from . import warnroute

TYPES = ("fuse.sshvfs", "sshvfs", "fuse")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(message, 1)  # mount(8) convention: 1 = bad invocation


def parser(prog: str) -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        usage=f"{prog} [user@]host:[path] MOUNTPOINT [-sfnv] [-o OPTS] [-t fuse.sshvfs]",
        description="mount(8) helper for sshvfs: install as /sbin/mount.fuse.sshvfs so that "
        "'mount -t fuse.sshvfs' and fstab lines work. Options as for sshvfs -o.",
    )
    p.add_argument("source", help="[user@]host:[path]")
    p.add_argument("mountpoint")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS")
    p.add_argument("-s", dest="sloppy", action="store_true", help="ignore unknown options")
    p.add_argument("-f", dest="fake", action="store_true", help="check, but do not mount")
    p.add_argument("-n", dest="nomtab", action="store_true", help="accepted (no mtab)")
    p.add_argument("-v", dest="verbose", action="store_true", help="say what is done")
    p.add_argument("-t", dest="type", default="fuse.sshvfs", help="filesystem type")
    p.add_argument("-N", dest="namespace", help=argparse.SUPPRESS)
    return p


def sshvfs_argv(args: argparse.Namespace) -> list[str]:
    """The ``sshvfs`` command line this helper amounts to."""
    argv = [args.source, args.mountpoint]
    for text in args.options:
        argv += ["-o", text]
    if args.sloppy:
        argv.append("--sloppy")
    if args.verbose:
        argv.append("-v")
    return argv


def run(argv: Sequence[str], prog: str = "mount.sshvfs") -> int:
    args = parser(prog).parse_args(list(argv))
    if args.type not in TYPES and not args.type.endswith(".sshvfs"):
        raise UserError(f"-t {args.type}: this helper mounts fuse.sshvfs only", 1)
    if args.namespace:
        raise UserError("-N: mounting in another namespace is not supported", 1)
    from . import cli

    command = sshvfs_argv(args)
    if args.verbose:
        print(f"{prog}: sshvfs {' '.join(command)}", file=sys.stderr)
    if args.fake:
        # everything a real mount would check first, and nothing more
        from ..config import parse_target
        from .mount import check_mountpoint

        cli.parse_mount_options(cli.mount_parser().parse_args(command))
        parse_target(args.source)
        check_mountpoint(args.mountpoint)
        return 0
    return cli.cmd_mount(command)


def main(argv: Sequence[str] | None = None) -> int:
    warnroute.route()  # before anything imports asyncssh
    prog = os.path.basename(sys.argv[0]) if argv is None else "mount.sshvfs"
    if not prog.startswith("mount."):
        prog = "mount.sshvfs"
    try:
        return run(sys.argv[1:] if argv is None else argv, prog)
    except UserError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
