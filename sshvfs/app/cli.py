"""The command line: ``sshvfs [user@]host:[path] MOUNTPOINT [-o opts]`` and its subcommands.

Errors are :class:`UserError` and print as one line (``sshvfs: ...``) with a non-zero exit;
``main(argv)`` returns the exit code so tests can call it.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import subprocess
import sys
from collections.abc import Sequence

from .. import __version__
from ..config import OPTIONS, MountOptions, apply_options, parse_target
from ..errors import UserError
from ..unsupported import UNSUPPORTED
from . import warnroute

log = logging.getLogger("sshvfs")

USAGE = """\
sshvfs [user@]host:[path] MOUNTPOINT [-p PORT] [-F SSH_CONFIG] [-C] [-o opt[,opt...]]...
                                            [-f] [-d] [-v] [-s]
       sshvfs umount MOUNTPOINT [-z]
       sshvfs demo [MOUNTPOINT] [--serve DIR] [--once]
       sshvfs status MOUNTPOINT [--watch] [--interval S] [--json]
       sshvfs invalidate MOUNTPOINT [PATH]
       sshvfs follow MOUNTPOINT -- ssh host
       sshvfs cwd MOUNTPOINT [--watch]
       sshvfs shell-hook bash|zsh|fish
       sshvfs (no arguments: the demo)"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see sshvfs --help)", 2)


def _options_help() -> str:
    lines = ["mount options (-o name[=value], comma lists allowed):"]
    for opt in sorted(OPTIONS.values(), key=lambda o: o.name.lower()):
        value = "" if opt.kind == "flag" else f"={opt.kind.upper()}"
        default = "" if opt.default in (None, False) else f" [default: {opt.default}]"
        choices = f" ({'|'.join(opt.choices)})" if opt.choices else ""
        lines.append(f"  {opt.name}{value}{choices}: {opt.help}{default}")
    ignored = sorted(
        (n for n, u in UNSUPPORTED.items() if u.action != "reject" and "=" not in n),
        key=str.lower,
    )
    refused = []
    for name in sorted((n for n, u in UNSUPPORTED.items() if u.action == "reject"), key=str.lower):
        fine = [
            k for k, u in UNSUPPORTED.items() if k.startswith(name + "=") and u.action != "reject"
        ]
        refused.append(f"{name} (except {', '.join(fine)})" if fine else name)
    lines += [
        "",
        "sshfs/ssh options accepted and ignored (most with a warning in the log):",
        _wrap(ignored),
        "sshfs options refused (the mount fails and says why):",
        _wrap(refused),
        "fstab words (_netdev, noauto, nofail, defaults, x-systemd.*, comment=...) are ignored.",
        "logging: -d debug log to stderr; otherwise stderr (-f) or syslog, or -o logfile=PATH.",
    ]
    return "\n".join(lines)


def _wrap(names: list[str]) -> str:
    import textwrap

    return textwrap.fill(", ".join(names), 92, initial_indent="  ", subsequent_indent="  ")


def mount_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="sshvfs",
        usage=USAGE,
        description="Mount a remote directory over SSH/SFTP.",
        epilog=_options_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("remote", help="[user@]host:[path]")
    p.add_argument("mountpoint")
    p.add_argument("-p", "--port", type=int, help="SSH port")
    p.add_argument("-F", dest="ssh_config", help="ssh_config file")
    p.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT",
        help="mount options, comma-separated (below)",
    )
    p.add_argument("-C", dest="compression", action="store_true", help="as -o Compression=yes")
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("-d", "--debug", action="store_true", help="debug log to stderr (implies -f)")
    p.add_argument("-v", "--verbose", action="store_true", help="log connection events too")
    p.add_argument(
        "-s", dest="single", action="store_true", help="accepted for sshfs (always one thread)"
    )
    p.add_argument("-1", dest="protocol1", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-V", "--version", action="version", version=f"sshvfs {__version__}")
    p.add_argument("--notify-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--sloppy", action="store_true", help=argparse.SUPPRESS)
    return p


def setup_logging(
    debug: bool, foreground: bool, logfile: str | None, verbose: bool = False
) -> None:
    """``-d``: everything to stderr. Otherwise a ``logfile`` if given, else stderr in the
    foreground (warnings; ``-v`` adds information), else syslog/journald via /dev/log.
    Nothing here or below logs secrets: there are no passwords, and keys are only paths."""
    root = logging.getLogger()
    root.handlers.clear()
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handlers: list[logging.Handler] = []
    if logfile:
        try:
            handlers.append(logging.FileHandler(logfile))
        except OSError as exc:
            raise UserError(f"cannot open log file {logfile}: {exc.strerror}") from exc
    if debug or (foreground and not logfile):
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
        handlers.append(stderr)
    if not handlers:
        if os.path.exists("/dev/log"):
            syslog = logging.handlers.SysLogHandler(address="/dev/log")
            syslog.setFormatter(
                logging.Formatter("sshvfs[%(process)d]: %(levelname)s %(name)s: %(message)s")
            )
            handlers.append(syslog)
        else:
            handlers.append(logging.NullHandler())
    for handler in handlers:
        if handler.formatter is None:
            handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        logging.getLogger("asyncssh").setLevel(logging.INFO if verbose else logging.WARNING)


def _notify(fd: int | None, message: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, message.encode() + b"\n")
        os.close(fd)
    except OSError:
        pass


def _spawn_background(argv: Sequence[str], timeout: float) -> int:
    """Start the same command as a detached daemon and wait until it reports."""
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "sshvfs", *argv, "-f", "--notify-fd", str(write_fd)]
    with open(os.devnull, "rb") as devnull_in, open(os.devnull, "wb") as devnull_out:
        child = subprocess.Popen(
            cmd,
            stdin=devnull_in,
            stdout=devnull_out,
            stderr=devnull_out,
            pass_fds=(write_fd,),
            start_new_session=True,
            close_fds=True,
        )
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as reader:
        import select

        ready, _, _ = select.select([reader], [], [], timeout)
        if ready:
            chunks.append(reader.readline())
    line = b"".join(chunks).decode(errors="replace").strip()
    if line == "ok":
        return 0
    if line.startswith("error: "):
        child.wait(10)
        raise UserError(line[len("error: ") :], 1)
    child.kill()
    raise UserError("the sshvfs daemon did not report a mount (run with -f -d to see why)")


def parse_mount_options(args: argparse.Namespace) -> MountOptions:
    """``-o`` lists and the short options onto one :class:`MountOptions`."""
    if args.protocol1:
        raise UserError("-1: SSH protocol 1 is not supported", 2)
    opts = apply_options(MountOptions(), args.options, sloppy=args.sloppy)
    if args.port is not None:
        opts.port = args.port
    if args.ssh_config:
        opts.ssh_config = os.path.expanduser(args.ssh_config)
    if args.compression:
        opts.compression = "yes"
    return opts


def cmd_mount(argv: Sequence[str]) -> int:
    args = mount_parser().parse_args(argv)
    from .mount import Mount, check_mountpoint

    try:
        target = parse_target(args.remote)
        opts = parse_mount_options(args)
        mountpoint = check_mountpoint(args.mountpoint)
    except UserError as exc:
        _notify(args.notify_fd, f"error: {exc}")
        raise
    foreground = args.foreground or args.debug
    if not foreground:
        for warning in opts.warnings:  # the daemon logs them too, where nobody may look
            print(f"sshvfs: warning: {warning}", file=sys.stderr)
        return _spawn_background(list(argv), opts.connect_timeout + 60)
    try:
        setup_logging(args.debug, args.notify_fd is None, opts.logfile, args.verbose)
    except UserError as exc:
        _notify(args.notify_fd, f"error: {exc}")
        raise
    for warning in opts.warnings:
        log.warning("%s", warning)
    mount = Mount(target, mountpoint, opts)
    mount.on_ready = lambda: _notify(args.notify_fd, "ok")
    try:
        mount.run()
    except UserError as exc:
        _notify(args.notify_fd, f"error: {exc}")
        raise
    return 0


def cmd_umount(argv: Sequence[str]) -> int:
    p = _Parser(prog="sshvfs umount")
    p.add_argument("mountpoint")
    p.add_argument("-z", "--lazy", action="store_true", help="detach even if busy")
    args = p.parse_args(argv)
    from .mount import unmount

    unmount(args.mountpoint, args.lazy)
    return 0


def cmd_demo(argv: Sequence[str]) -> int:
    p = _Parser(
        prog="sshvfs demo",
        description="Mount a local directory through an embedded "
        "SSH server on 127.0.0.1, to see sshvfs work without any set-up.",
    )
    p.add_argument("mountpoint", nargs="?")
    p.add_argument("--serve", metavar="DIR", help="directory to serve (default: a new sample)")
    p.add_argument(
        "--once",
        action="store_true",
        help="write and read a file through the mount, then unmount and exit",
    )
    p.add_argument("-d", "--debug", action="store_true")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPT")
    args = p.parse_args(argv)
    from .demo import run_demo

    setup_logging(args.debug, True, None)
    return run_demo(args.mountpoint, args.serve, args.once, args.options)


def _control_file(mountpoint: str, name: str) -> str:
    from .statusview import control_file

    return control_file(mountpoint, name)


def cmd_invalidate(argv: Sequence[str]) -> int:
    p = _Parser(
        prog="sshvfs invalidate",
        description="Drop cached attributes and listings "
        "(everything, or the subtree PATH inside the mount) so the next access asks "
        "the server.",
    )
    p.add_argument("mountpoint")
    p.add_argument(
        "path",
        nargs="?",
        help="a path inside the mount (relative to its root, or a local path under MOUNTPOINT)",
    )
    args = p.parse_args(argv)
    control = _control_file(args.mountpoint, "invalidate")
    try:
        if args.path is None:
            os.utime(control)
        else:
            rel = args.path
            root = os.path.abspath(args.mountpoint)
            absolute = os.path.abspath(rel)
            if os.path.isabs(rel) and (absolute == root or absolute.startswith(root + os.sep)):
                rel = os.path.relpath(absolute, root)
            with open(control, "wb") as f:
                f.write(os.fsencode(rel) + b"\n")
    except OSError as exc:
        raise UserError(f"invalidate {args.path or ''}: {exc.strerror}") from exc
    return 0


def cmd_status(argv: Sequence[str]) -> int:
    p = _Parser(
        prog="sshvfs status",
        description="Show a mount's connection, cache figures and the file transfers in flight"
        " (bytes, rate, ETA).",
    )
    p.add_argument("mountpoint")
    p.add_argument("--json", action="store_true", help="print the raw JSON (one line per update)")
    p.add_argument(
        "-w", "--watch", action="store_true", help="redraw until Ctrl-C (plain lines when piped)"
    )
    p.add_argument(
        "-n",
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between updates with --watch [default: 1]",
    )
    args = p.parse_args(argv)
    if not args.interval > 0:
        raise UserError("--interval must be a positive number of seconds", 2)
    from .statusview import show

    return show(args.mountpoint, args.watch, args.interval, args.json)


def cmd_follow(argv: Sequence[str]) -> int:
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        own, command = argv[:cut], argv[cut + 1 :]
    else:
        own, command = argv[:1], argv[1:]
    p = _Parser(
        prog="sshvfs follow",
        usage="sshvfs follow MOUNTPOINT [--no-prompt-fallback] -- COMMAND [ARGS...]",
        description="Run COMMAND (e.g. ssh host) in a terminal and publish the remote "
        "shell's directory in MOUNTPOINT/.sshvfs/cwd and .sshvfs/here.",
    )
    p.add_argument("mountpoint")
    p.add_argument(
        "--no-prompt-fallback",
        action="store_true",
        help="only trust OSC 7, never guess the directory from the prompt",
    )
    args = p.parse_args(own)
    from ..follow.pty import follow

    return follow(args.mountpoint, command, prompt_fallback=not args.no_prompt_fallback)


def cmd_cwd(argv: Sequence[str]) -> int:
    p = _Parser(prog="sshvfs cwd", description="Print the directory a followed terminal is in.")
    p.add_argument("mountpoint")
    p.add_argument("--watch", action="store_true", help="print each change until interrupted")
    args = p.parse_args(argv)
    from ..follow.pty import watch_cwd

    return watch_cwd(args.mountpoint, args.watch)


def cmd_shell_hook(argv: Sequence[str]) -> int:
    p = _Parser(
        prog="sshvfs shell-hook",
        description="Print the shell hook that reports the working directory at every "
        "prompt, for eval in the remote shell's rc file.",
    )
    p.add_argument("shell", help="bash, zsh or fish")
    args = p.parse_args(argv)
    from ..follow.hooks import hook_text

    try:
        sys.stdout.write(hook_text(args.shell))
    except ValueError as exc:
        raise UserError(str(exc), 2) from None
    return 0


COMMANDS = {
    "umount": cmd_umount,
    "unmount": cmd_umount,
    "demo": cmd_demo,
    "invalidate": cmd_invalidate,
    "status": cmd_status,
    "follow": cmd_follow,
    "cwd": cmd_cwd,
    "shell-hook": cmd_shell_hook,
}


def main(argv: Sequence[str] | None = None) -> int:
    warnroute.route()  # before anything imports asyncssh
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv:
            print("sshvfs: no host given: running the demo (usage: sshvfs --help)", file=sys.stderr)
            return cmd_demo([])
        if argv[0] in ("-h", "--help"):
            mount_parser().print_help()
            return 0
        if argv[0] in ("--version", "-V"):
            print(f"sshvfs {__version__}")
            return 0
        command = COMMANDS.get(argv[0])
        if command is not None:
            return command(argv[1:])
        return cmd_mount(argv)
    except UserError as exc:
        print(f"sshvfs: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (`sshvfs status --watch | head`): quietly, as cat would; and
        # no second traceback when the interpreter flushes stdout on the way out
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
