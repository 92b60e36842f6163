"""Observe terminal output and report the remote shell's working directory.

This module is pure: it never performs I/O and never alters the byte stream.
The caller passes terminal output through to the user unchanged and, in
parallel, hands the same bytes to :meth:`CwdParser.feed`, which returns the
working-directory reports found so far.

Recognised sequences (terminated by BEL, ``ESC \\`` or the 8-bit ST ``0x9c``):

* ``ESC ] 7 ; file://HOST/PATH`` -- the VTE / Terminal.app convention; PATH is
  percent-decoded to raw bytes (non-UTF-8 allowed).
* ``ESC ] 7 ; kitty-shell-cwd://HOST/PATH`` -- kitty's variant; PATH is raw.
* ``ESC ] 1337 ; CurrentDir=/PATH`` -- iTerm2; PATH is raw.  The host comes
  from the most recent ``ESC ] 1337 ; RemoteHost=user@host``, if any.

Output is assumed to be UTF-8, so the 8-bit C1 controls are handled with
care: the 8-bit OSC introducer ``0x9d`` is not recognised, and ``0x9c`` ends
a sequence only when the byte before it is ASCII (inside a raw UTF-8 path it
is a continuation byte).  CAN, SUB or an ESC not followed by ``\\`` abort a
sequence; a sequence longer than :data:`MAX_OSC_LEN` is dropped.

As a fallback for shells without a hook, a ``user@host:PATH$ `` style prompt
can be recognised (see :func:`find_prompt_cwd`).  Checking that a reported
path exists is the caller's job.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_LINE_LEN",
    "MAX_OSC_LEN",
    "CwdParser",
    "CwdReport",
    "find_prompt_cwd",
    "resolve_home",
]

log = logging.getLogger(__name__)

#: Longest OSC payload that is buffered; longer sequences are dropped.
MAX_OSC_LEN: Final = 8192
#: Longest trailing partial line kept for the prompt fallback.
MAX_LINE_LEN: Final = 4096

_ESC: Final = 0x1B
_BEL: Final = 0x07
_ST8: Final = 0x9C
_RBRACKET: Final = 0x5D  # ']'
_BACKSLASH: Final = 0x5C  # '\\'

# Parser states.
_GROUND: Final = 0  # ordinary output
_ESCAPE: Final = 1  # seen ESC
_OSC: Final = 2  # inside an OSC we may care about: payload is buffered
_OSC_ESC: Final = 3  # seen ESC inside a buffered OSC (maybe ST)
_SKIP: Final = 4  # inside an OSC we ignore (or one that grew too long)
_SKIP_ESC: Final = 5  # seen ESC inside an ignored OSC

# Bytes that end or interrupt an OSC string: BEL, CAN, SUB, ESC, 8-bit ST.
_OSC_STOP: Final = re.compile(rb"[\x07\x18\x1a\x1b\x9c]")
# OSC numbers whose payload we need to see.
_WANTED: Final = (b"7;", b"1337;")
_RAW_CTRL: Final = re.compile(rb"[\x00-\x1f]")
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


@dataclass(frozen=True)
class CwdReport:
    """One working-directory report.

    ``host`` may be empty; ``path`` is absolute, decoded and may be non-UTF-8
    (for ``source == "prompt"`` it may instead start with ``~``).
    ``source`` is one of ``"osc7"``, ``"kitty"``, ``"iterm2"``, ``"prompt"``.
    """

    host: str
    path: bytes
    source: str


def _percent_decode(data: bytes) -> bytes | None:
    """Decode ``%XX`` escapes; ``None`` if an escape is malformed."""
    if b"%" not in data:
        return data
    parts = data.split(b"%")
    out = bytearray(parts[0])
    for part in parts[1:]:
        if len(part) < 2 or part[0] not in _HEX or part[1] not in _HEX:
            return None
        out.append(int(part[:2], 16))
        out += part[2:]
    return bytes(out)


def _valid_path(path: bytes) -> bool:
    return path.startswith(b"/") and b"\x00" not in path


def _parse_url(url: bytes) -> CwdReport | None:
    """Parse the payload of OSC 7 (``file://`` or ``kitty-shell-cwd://``)."""
    head = url[:18].lower()
    if head.startswith(b"file://"):
        rest, source = url[7:], "osc7"
    elif head.startswith(b"kitty-shell-cwd://"):
        rest, source = url[18:], "kitty"
    else:
        return None
    slash = rest.find(b"/")
    if slash < 0:
        return None
    raw_host, path = rest[:slash], rest[slash:]
    if source == "osc7":
        # Query and fragment markers are deliberately kept literally: proper
        # encoders always escape '?' and '#', while naive ones do not escape
        # anything, so treating them as path bytes is right in both cases.
        decoded_path = _percent_decode(path)
        decoded_host = _percent_decode(raw_host)
        if decoded_path is None or decoded_host is None:
            return None
        path, raw_host = decoded_path, decoded_host
    try:
        host = raw_host.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not _valid_path(path):
        return None
    return CwdReport(host=host, path=path, source=source)


class CwdParser:
    """Incremental parser for working-directory reports in terminal output.

    :meth:`feed` accepts arbitrary chunks; a sequence may be split anywhere.
    Memory use is bounded by :data:`MAX_OSC_LEN` plus :data:`MAX_LINE_LEN`.

    With ``prompt_fallback=True``, and as long as no OSC report has been seen,
    the trailing partial line of each chunk is checked with
    :func:`find_prompt_cwd`; a hit yields a ``"prompt"`` report, once per
    change of the prompt's directory.
    """

    def __init__(self, *, prompt_fallback: bool = False) -> None:
        self.prompt_fallback = prompt_fallback
        self._state = _GROUND
        self._payload = bytearray()
        self._prev_high = False  # last OSC byte was >= 0x80 (UTF-8 context)
        self._iterm_host = ""
        self._seen_osc = False
        self._line = bytearray()
        self._line_overflow = False
        self._line_checked: bytes | None = None
        self._last_prompt: tuple[str, bytes] | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes currently held in internal buffers (for tests/diagnostics)."""
        return len(self._payload) + len(self._line)

    @property
    def seen_osc(self) -> bool:
        """True once any OSC-based report has been produced."""
        return self._seen_osc

    def reset(self) -> None:
        """Forget any partial sequence and all history (keeps options)."""
        self._state = _GROUND
        self._payload.clear()
        self._prev_high = False
        self._iterm_host = ""
        self._seen_osc = False
        self._line.clear()
        self._line_overflow = False
        self._line_checked = None
        self._last_prompt = None

    def feed(self, data: bytes) -> list[CwdReport]:
        """Observe ``data`` and return the reports completed by it, in order."""
        reports: list[CwdReport] = []
        if not data:
            return reports
        self._scan(data, reports)
        if self.prompt_fallback and not self._seen_osc:
            self._track_line(data)
            report = self._check_prompt()
            if report is not None:
                reports.append(report)
        return reports

    # -- OSC state machine -------------------------------------------------

    def _scan(self, data: bytes, reports: list[CwdReport]) -> None:
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state == _GROUND:
                j = data.find(b"\x1b", i)
                if j < 0:
                    return
                self._state = _ESCAPE
                i = j + 1
            elif state == _ESCAPE:
                b = data[i]
                i += 1
                if b == _RBRACKET:
                    self._state = _OSC
                    self._payload.clear()
                    self._prev_high = False
                elif b != _ESC:
                    self._state = _GROUND
            elif state == _OSC or state == _SKIP:
                m = _OSC_STOP.search(data, i)
                j = n if m is None else m.start()
                if j > i:
                    self._prev_high = data[j - 1] >= 0x80
                    if state == _OSC:
                        self._collect(data, i, j)
                if m is None:
                    return
                b = data[j]
                i = j + 1
                if b == _ST8 and self._prev_high:
                    # Part of a UTF-8 character in a raw path, not an ST.
                    if self._state == _OSC:
                        self._collect(data, j, j + 1)
                elif b == _BEL or b == _ST8:
                    self._end_osc(reports)
                elif b == _ESC:
                    self._state = _OSC_ESC if self._state == _OSC else _SKIP_ESC
                else:  # CAN or SUB cancels the sequence
                    self._abort()
            else:  # _OSC_ESC or _SKIP_ESC
                if data[i] == _BACKSLASH:
                    i += 1
                    self._end_osc(reports)
                else:
                    # ESC not followed by '\\': abort and reprocess the byte
                    # as the start of a new escape sequence.
                    self._abort()
                    self._state = _ESCAPE

    def _collect(self, data: bytes, start: int, end: int) -> None:
        """Append ``data[start:end]`` to the OSC payload, within the limit."""
        payload = self._payload
        if len(payload) + (end - start) > MAX_OSC_LEN:
            log.debug("dropping over-long OSC sequence (> %d bytes)", MAX_OSC_LEN)
            payload.clear()
            self._state = _SKIP
            return
        payload += data[start:end]
        # Stop buffering as soon as the OSC number rules out a cwd report
        # (titles, clipboard (OSC 52) and the like are skipped unbuffered).
        if not any(w.startswith(payload) or payload.startswith(w) for w in _WANTED):
            payload.clear()
            self._state = _SKIP

    def _abort(self) -> None:
        self._payload.clear()
        self._state = _GROUND

    def _end_osc(self, reports: list[CwdReport]) -> None:
        if self._state in (_OSC, _OSC_ESC):
            report = self._dispatch(bytes(self._payload))
            if report is not None:
                self._seen_osc = True
                self._line.clear()
                reports.append(report)
        self._abort()

    def _dispatch(self, payload: bytes) -> CwdReport | None:
        ps, sep, pt = payload.partition(b";")
        if not sep or _RAW_CTRL.search(pt):
            return None
        if ps == b"7":
            report = _parse_url(pt)
            if report is None:
                log.debug("ignoring malformed OSC 7 payload %r", pt[:200])
            return report
        if ps == b"1337":
            key, eq, value = pt.partition(b"=")
            if not eq:
                return None
            if key == b"RemoteHost":
                host = value.rpartition(b"@")[2]
                self._iterm_host = host.decode("utf-8", "replace")
            elif key == b"CurrentDir" and _valid_path(value):
                return CwdReport(host=self._iterm_host, path=value, source="iterm2")
        return None

    # -- prompt fallback ---------------------------------------------------

    def _track_line(self, data: bytes) -> None:
        """Keep the trailing partial line (after the last LF or CR)."""
        start = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if start > 0:
            self._line.clear()
            self._line_overflow = False
        if self._line_overflow:
            return
        if len(self._line) + (len(data) - start) > MAX_LINE_LEN:
            self._line.clear()
            self._line_overflow = True
        else:
            self._line += data[start:]

    def _check_prompt(self) -> CwdReport | None:
        if self._line_overflow or not self._line:
            return None
        line = bytes(self._line)
        if line == self._line_checked:
            return None
        self._line_checked = line
        found = _match_prompt(line)
        if found is None or found == self._last_prompt:
            return None
        self._last_prompt = found
        return CwdReport(host=found[0], path=found[1], source="prompt")


# -- prompt recognition ----------------------------------------------------

_ANSI: Final = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI (colours, cursor movement, modes)
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC (titles etc.), maybe cut
    rb"|\x1b[P^_][^\x1b]*(?:\x1b\\)?"  # DCS / PM / APC strings
    rb"|\x1b[ -/]*[0-~]?"  # other escapes, or a lone ESC
    rb"|[\x01\x02]"  # readline's non-printing markers
)
_CTRL: Final = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")

_LEAD: Final = rb"(?:\A|(?<=[\s)\]]))"  # start of line, or after space or ')'
_USER: Final = rb"(?P<user>[A-Za-z_][A-Za-z0-9_.-]*)"
_HOST: Final = rb"(?P<host>[A-Za-z0-9][A-Za-z0-9_.-]*)"
_PATH: Final = rb"(?P<path>[~/][^\x00-\x1f]*?)"
_END: Final = rb" ?[$#%>]\s*\Z"  # the prompt must end the line
_PROMPTS: Final = (
    # user@host:PATH$   (Debian/Ubuntu bash, many zsh themes)
    re.compile(_LEAD + _USER + b"@" + _HOST + b":" + _PATH + _END),
    # [user@host PATH]$   (Red Hat style, when PS1 uses \w)
    re.compile(_LEAD + rb"\[" + _USER + b"@" + _HOST + rb"\s+" + _PATH + rb"\]" + _END),
    # user@host PATH $   (Gentoo bash) and user@host PATH>   (fish)
    re.compile(_LEAD + _USER + b"@" + _HOST + rb"\s+" + _PATH + _END),
)


def _clean_line(line: bytes) -> bytes:
    """Strip escape sequences and return what is visible after the last CR."""
    line = _ANSI.sub(b"", line)
    line = line.rpartition(b"\r")[2].rpartition(b"\n")[2]
    return _CTRL.sub(b"", line).replace(b"\t", b" ")


def _match_prompt(line: bytes) -> tuple[str, bytes] | None:
    text = _clean_line(line)
    if len(text) > MAX_LINE_LEN:
        return None
    for pattern in _PROMPTS:
        m = pattern.search(text)
        if m is not None:
            path = m.group("path")
            if path == b"~" or path.startswith((b"/", b"~/")):
                return m.group("host").decode("ascii"), path
    return None


def find_prompt_cwd(line: bytes) -> bytes | None:
    """Return the directory shown by a shell prompt at the end of ``line``.

    ``line`` is the last (partial) output line; ANSI escapes are stripped.
    Recognised forms: ``user@host:PATH$ ``, ``[user@host PATH]$ ``,
    ``user@host PATH $ `` and ``user@host PATH> `` (with ``$``, ``#``, ``%``
    or ``>``).  The prompt must end the line.  PATH is returned as-is and may
    start with ``~`` (see :func:`resolve_home`); prompts that show only a
    relative basename (bash ``\\W``) give ``None``, as they cannot be resolved.
    """
    found = _match_prompt(line)
    return None if found is None else found[1]


def resolve_home(path: bytes, home: bytes) -> bytes:
    """Expand a leading ``~`` or ``~/`` with ``home``; other paths unchanged.

    ``~user`` forms are returned unchanged (the caller cannot know that home).
    """
    if path == b"~":
        return home
    if path.startswith(b"~/"):
        return home.rstrip(b"/") + path[1:]
    return path
