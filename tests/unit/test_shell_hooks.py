"""Run the OSC 7 shell hooks in real shells and parse what they print.

Each shell is tested twice: non-interactively (the prompt hook is invoked the
way the shell would invoke it) and interactively in a pseudo-terminal, where
the shell shows real prompts.  Shells that are not installed are skipped.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshvfs.follow.hooks import SHELLS, hook_text
from sshvfs.follow.osc7 import CwdParser, CwdReport

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib" / "shell"
PROMPT = b"<PROMPT>"
HOST = socket.gethostname()

DIR_NAMES = {
    "utf8": "dir with spaces/Ünïcödé ñ 日本 #%?;&'\"$x\\y".encode(),
    "non-utf8": b"bad \xff\xfe name",
}


def need(shell: str) -> str:
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    return exe


def hook(shell: str) -> bytes:
    return os.fsencode(CONTRIB / f"sshvfs.{shell}")


def reports(output: bytes) -> list[CwdReport]:
    return CwdParser().feed(output)


def paths(output: bytes) -> list[bytes]:
    got = reports(output)
    assert all(r.host == HOST and r.source == "osc7" for r in got), got
    return [r.path for r in got]


@pytest.fixture(params=sorted(DIR_NAMES))
def target(request: pytest.FixtureRequest, tmp_path: Path) -> bytes:
    """A directory whose name has spaces, non-ASCII and shell-special bytes."""
    path = os.path.join(os.fsencode(os.path.realpath(tmp_path)), DIR_NAMES[request.param])
    os.makedirs(path)
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[bytes, bytes]:
    """A small, predictable environment with a UTF-8 locale."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        b"PATH": os.environb.get(b"PATH", b"/usr/bin:/bin"),
        b"HOME": os.fsencode(home),
        b"XDG_CONFIG_HOME": os.fsencode(home / ".config"),
        b"XDG_DATA_HOME": os.fsencode(home / ".local" / "share"),
        b"TERM": b"xterm",
        b"LANG": b"C.UTF-8",
        b"LC_ALL": b"C.UTF-8",
    }


def run(argv: list[str | bytes], env: dict[bytes, bytes]) -> bytes:
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stderr == b"", proc.stderr.decode(errors="replace")
    return proc.stdout


def segments(output: bytes, marker: bytes) -> Iterator[bytes]:
    """The output before each marker (the last, unmarked piece is dropped)."""
    yield from output.split(marker)[:-1]


# -- the hook texts ----------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_hook_text_matches_contrib(shell: str) -> None:
    assert (CONTRIB / f"sshvfs.{shell}").is_symlink()
    assert hook_text(shell) == (CONTRIB / f"sshvfs.{shell}").read_text(encoding="utf-8")
    assert "]7;file://" in hook_text(shell)


def test_hook_text_unknown_shell() -> None:
    with pytest.raises(ValueError, match="bash, zsh, fish"):
        hook_text("tcsh")


# -- bash ---------------------------------------------------------------------------

BASH_RUN_PROMPT_COMMAND = r"""
__run_prompt_command() {
    if [[ $(declare -p PROMPT_COMMAND) == 'declare -a'* ]]; then
        local c; for c in "${PROMPT_COMMAND[@]}"; do eval "$c"; done
    else
        eval "$PROMPT_COMMAND"
    fi
    printf '<PROMPT>'
}
"""


@pytest.mark.parametrize(
    ("setup", "old_output"),
    [
        ("unset PROMPT_COMMAND", b""),
        ("PROMPT_COMMAND='printf \"<OLD>\"'", b"<OLD>"),
        ("PROMPT_COMMAND='printf \"<OLD>\";'", b"<OLD>"),  # trailing ';'
        ("PROMPT_COMMAND=$'printf \"<OLD>\"\\n'", b"<OLD>"),  # trailing newline
        ("PROMPT_COMMAND=('printf \"<A>\"' 'printf \"<B>\"')", b"<A><B>"),
    ],
    ids=["unset", "string", "string-semicolon", "string-newline", "array"],
)
def test_bash_hook(target: bytes, env: dict[bytes, bytes], setup: str, old_output: bytes) -> None:
    exe = need("bash")
    script = f"""
        {setup}
        source "$1"; source "$1"
        {BASH_RUN_PROMPT_COMMAND}
        cd -- "$2" || exit 9
        __run_prompt_command
        cd / && __run_prompt_command
    """
    out = run([exe, "--norc", "--noprofile", "-c", script, "bash", hook("bash"), target], env)
    assert paths(out) == [target, b"/"]
    for segment in segments(out, PROMPT):
        assert segment.count(b"\x1b]7;") == 1, out
        assert segment.startswith(old_output), out
    # The hook runs after the existing command: "<OLD>" comes first.
    assert out.count(old_output) == 2 or not old_output


def test_bash_hook_preserves_exit_status(env: dict[bytes, bytes]) -> None:
    exe = need("bash")
    script = 'source "$1"; (exit 3); __sshvfs_osc7; echo "<rc=$?>"'
    out = run([exe, "--norc", "--noprofile", "-c", script, "bash", hook("bash")], env)
    assert out.endswith(b"<rc=3>\n")


def test_bash_hook_with_bash_preexec_style_precmd(env: dict[bytes, bytes]) -> None:
    exe = need("bash")
    script = """
        __bp_imported=defined; precmd_functions=(other); PROMPT_COMMAND=bp_stuff
        source "$1"; source "$1"
        declare -p precmd_functions PROMPT_COMMAND
    """
    out = run([exe, "--norc", "--noprofile", "-c", script, "bash", hook("bash")], env)
    assert b'precmd_functions=([0]="other" [1]="__sshvfs_osc7")' in out
    assert b'PROMPT_COMMAND="bp_stuff"' in out


# -- zsh ----------------------------------------------------------------------------


def test_zsh_hook(target: bytes, env: dict[bytes, bytes]) -> None:
    exe = need("zsh")
    script = """
        precmd() { printf '<OLDPRECMD>' }
        other_hook() { printf '<OTHER>' }
        precmd_functions=(other_hook)
        source "$1"; source "$1"
        run_precmd() {
            local f
            for f in precmd $precmd_functions; do $f; done
            printf '<PROMPT>'
        }
        cd -- "$2" || exit 9
        run_precmd
        cd / && run_precmd
        (exit 4); __sshvfs_osc7; print -n "<rc=$?>"
    """
    out = run([exe, "-f", "-c", script, "zsh", hook("zsh"), target], env)
    assert paths(out)[:2] == [target, b"/"]
    for segment in segments(out, PROMPT):
        assert segment.count(b"\x1b]7;") == 1, out
        assert segment.startswith(b"<OLDPRECMD><OTHER>"), out
    assert out.endswith(b"<rc=4>")


# -- fish ---------------------------------------------------------------------------


def test_fish_hook(target: bytes, env: dict[bytes, bytes]) -> None:
    exe = need("fish")
    script = """
        function __other --on-event fish_prompt; printf '<OTHER>'; end
        source $argv[1]; source $argv[1]
        cd $argv[2]; or exit 9
        emit fish_prompt; printf '<PROMPT>'
        cd /; emit fish_prompt; printf '<PROMPT>'
    """
    out = run([exe, "--no-config", "-c", script, hook("fish"), target], env)
    assert paths(out) == [target, b"/"]
    for segment in segments(out, PROMPT):
        assert segment.count(b"\x1b]7;") == 1, out
        assert b"<OTHER>" in segment, out


# -- real interactive shells in a pty -----------------------------------------------


def run_pty(argv: list[str], env: dict[bytes, bytes], cwd: bytes, commands: list[bytes]) -> bytes:
    """Run an interactive shell; type each command after the next prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    out = bytearray()
    sent = 0
    deadline = time.monotonic() + 30
    try:
        while True:
            if sent < len(commands) and out.count(PROMPT) > sent:
                os.write(fd, commands[sent])
                sent += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"interactive {argv[0]} timed out; output: {bytes(out)!r}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.2))
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the shell exited and closed the pty
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(fd)
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return bytes(out)


def check_interactive(out: bytes, start: bytes, target: bytes, old: bytes) -> None:
    # Three prompts (start, after cd, after cd /): exactly one report each.
    assert paths(out) == [start, target, b"/"], out
    assert out.count(old) >= 3, out


@pytest.mark.parametrize("shell", SHELLS)
def test_interactive_shell(
    shell: str, target: bytes, env: dict[bytes, bytes], tmp_path: Path
) -> None:
    exe = need(shell)
    home = Path(os.fsdecode(env[b"HOME"]))
    start = os.fsencode(os.path.realpath(tmp_path))
    env = {**env, b"SSHVFS_TEST_DIR": target}
    hook_file = os.fsdecode(hook(shell))
    if shell == "bash":
        rc = home / ".bashrc"
        rc.write_text(
            f"PS1='<PROMPT>'\nPROMPT_COMMAND='printf \"<OLD>\"'\n"
            f"source '{hook_file}'\nsource '{hook_file}'\n"
        )
        argv = [exe, "--noprofile", "--rcfile", str(rc), "-i"]
        old = b"<OLD>"
    elif shell == "zsh":
        (home / ".zshrc").write_text(
            "PS1='<PROMPT>'\nprecmd() { printf '<OLD>' }\n"
            f"source '{hook_file}'\nsource '{hook_file}'\n"
        )
        env = {**env, b"ZDOTDIR": os.fsencode(home)}
        argv = [exe, "--no-globalrcs", "-i"]
        old = b"<OLD>"
    else:
        init = (
            "function fish_prompt; printf '<PROMPT>'; end; "
            "function __old --on-event fish_prompt; printf '<OLD>'; end; "
            f"source '{hook_file}'; source '{hook_file}'"
        )
        argv = [exe, "--no-config", "-i", "-C", init]
        old = b"<OLD>"
    commands = [b'cd -- "$SSHVFS_TEST_DIR"\r', b"cd /\r", b"exit\r"]
    if shell == "fish":
        commands[0] = b"cd $SSHVFS_TEST_DIR\r"
    out = run_pty(argv, env, start, commands)
    check_interactive(out, start, target, old)
