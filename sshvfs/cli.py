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

from . import __version__
from .config import OPTIONS, MountOptions, apply_options, parse_target
from .errors import UserError

log = logging.getLogger("sshvfs")

USAGE = """\
sshvfs [user@]host:[path] MOUNTPOINT [-p PORT] [-F SSH_CONFIG] [-o opt[,opt...]]... [-f] [-d]
       sshvfs umount MOUNTPOINT [-z]
       sshvfs demo [MOUNTPOINT] [--serve DIR] [--once]
       sshvfs status MOUNTPOINT [--json]
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
    return "\n".join(lines)


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
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPT")
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("-d", "--debug", action="store_true", help="debug log to stderr (implies -f)")
    p.add_argument("--version", action="version", version=f"sshvfs {__version__}")
    p.add_argument("--notify-fd", type=int, help=argparse.SUPPRESS)
    return p


def setup_logging(debug: bool, foreground: bool, logfile: str | None) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    level = logging.DEBUG if debug else logging.INFO
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler: logging.Handler
    if logfile:
        handler = logging.FileHandler(logfile)
    elif foreground:
        handler = logging.StreamHandler(sys.stderr)
        if not debug:
            level = logging.WARNING
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        fmt = "sshvfs[%(process)d]: %(levelname)s %(name)s: %(message)s"
    else:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)
    if not debug:
        logging.getLogger("asyncssh").setLevel(logging.WARNING)


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


def cmd_mount(argv: Sequence[str]) -> int:
    args = mount_parser().parse_args(argv)
    from .mount import Mount, check_mountpoint

    try:
        target = parse_target(args.remote)
        opts = apply_options(MountOptions(), args.options)
        if args.port is not None:
            opts.port = args.port
        if args.ssh_config:
            opts.ssh_config = os.path.expanduser(args.ssh_config)
        mountpoint = check_mountpoint(args.mountpoint)
    except UserError as exc:
        _notify(args.notify_fd, f"error: {exc}")
        raise
    foreground = args.foreground or args.debug
    if not foreground:
        return _spawn_background(list(argv), opts.connect_timeout + 60)
    setup_logging(args.debug, args.notify_fd is None, opts.logfile)
    mount = Mount(target, mountpoint, opts)
    mount.on_ready = lambda: _notify(args.notify_fd, "ok")
    try:
        mount.connect()
        mount.serve()
    except UserError as exc:
        _notify(args.notify_fd, f"error: {exc}")
        raise
    finally:
        mount.shutdown()
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
    path = os.path.join(mountpoint, ".sshvfs", name)
    if not os.path.exists(path):
        raise UserError(f"{mountpoint} is not an sshvfs mount (no .sshvfs/{name})")
    return path


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


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_status(data: dict[str, object]) -> str:
    lines = [
        f"mount:      {data.get('mountpoint')} -> {data.get('host')}:{data.get('remote_root')}",
        f"connection: {data.get('state')} (reconnects: {data.get('reconnects', 0)})",
        f"uptime:     {data.get('uptime')} s, pid {data.get('pid')}",
    ]
    cache = data.get("cache")
    if isinstance(cache, dict):
        lines.append(
            "cache:      {entries} entries ({dir_listings} listings), {hits} hits, "
            "{misses} misses, {evictions} evictions".format(**cache)
        )
    else:
        lines.append("cache:      off")
    if data.get("cwd"):
        lines.append(f"cwd:        {data['cwd']}")
    if data.get("cwd_outside"):
        lines.append(f"cwd:        {data['cwd_outside']} (outside the mount)")
    transfers = data.get("transfers") or []
    assert isinstance(transfers, list)
    for t in transfers:
        total = t.get("total")
        done = t.get("bytes_done", 0)
        of = f" of {_human_bytes(total)}" if total else ""
        lines.append(
            f"{t.get('direction', '?'):>5}  {t.get('path')}: {_human_bytes(done)}{of}"
            f" at {_human_bytes(t.get('rate_bps') or 0)}/s"
        )
    return "\n".join(lines)


def cmd_status(argv: Sequence[str]) -> int:
    p = _Parser(prog="sshvfs status", description="Show a mount's connection, cache and transfers.")
    p.add_argument("mountpoint")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    args = p.parse_args(argv)
    import json

    control = _control_file(args.mountpoint, "status")
    try:
        with open(control, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise UserError(f"cannot read {control}: {exc.strerror}") from exc
    if args.json:
        sys.stdout.write(raw.decode())
        return 0
    print(format_status(json.loads(raw)))
    return 0


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
    from .follow.pty import follow

    return follow(args.mountpoint, command, prompt_fallback=not args.no_prompt_fallback)


def cmd_cwd(argv: Sequence[str]) -> int:
    p = _Parser(prog="sshvfs cwd", description="Print the directory a followed terminal is in.")
    p.add_argument("mountpoint")
    p.add_argument("--watch", action="store_true", help="print each change until interrupted")
    args = p.parse_args(argv)
    from .follow.pty import watch_cwd

    return watch_cwd(args.mountpoint, args.watch)


def cmd_shell_hook(argv: Sequence[str]) -> int:
    p = _Parser(
        prog="sshvfs shell-hook",
        description="Print the shell hook that reports the working directory at every "
        "prompt, for eval in the remote shell's rc file.",
    )
    p.add_argument("shell", help="bash, zsh or fish")
    args = p.parse_args(argv)
    from .follow.hooks import hook_text

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
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv:
            print("sshvfs: no host given: running the demo (usage: sshvfs --help)", file=sys.stderr)
            return cmd_demo([])
        if argv[0] in ("-h", "--help"):
            mount_parser().print_help()
            return 0
        if argv[0] == "--version":
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
