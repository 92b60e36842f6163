"""Unit tests for the streaming OSC 7 / prompt parser (sshvfs.follow.osc7).

Test dependency: hypothesis (``pip install hypothesis``) for the property tests.
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sshvfs.follow.osc7 import (
    MAX_LINE_LEN,
    MAX_OSC_LEN,
    CwdParser,
    CwdReport,
    find_prompt_cwd,
    resolve_home,
)

ESC = b"\x1b"
BEL = b"\x07"
ST = b"\x1b\\"
SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._~-")


def encode(path: bytes) -> bytes:
    """Percent-encode like the shell hooks do (every byte outside SAFE)."""
    return b"".join(bytes([c]) if c in SAFE else b"%%%02X" % c for c in path)


def osc7(path: bytes, host: bytes = b"host", term: bytes = ST) -> bytes:
    return b"\x1b]7;file://" + host + encode(path) + term


def feed_all(parser: CwdParser, chunks: list[bytes]) -> list[CwdReport]:
    out: list[CwdReport] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def parse(data: bytes, **kwargs: bool) -> list[CwdReport]:
    return CwdParser(**kwargs).feed(data)


def r7(path: bytes, host: str = "host") -> CwdReport:
    return CwdReport(host=host, path=path, source="osc7")


# -- basic recognition -------------------------------------------------------


@pytest.mark.parametrize("term", [BEL, ST, b"\x9c"], ids=["BEL", "ST", "ST8"])
def test_osc7_terminators(term: bytes) -> None:
    data = b"before" + b"\x1b]7;file://box/home/me" + term + b"after"
    assert parse(data) == [r7(b"/home/me", "box")]


def test_empty_host_and_root() -> None:
    assert parse(b"\x1b]7;file:///\x07") == [r7(b"/", "")]
    assert parse(b"\x1b]7;file:///srv/x\x07") == [r7(b"/srv/x", "")]


def test_scheme_is_case_insensitive() -> None:
    assert parse(b"\x1b]7;FILE://h/x\x07") == [r7(b"/x", "h")]


def test_several_sequences_in_order() -> None:
    data = osc7(b"/a") + b"text\r\n" + osc7(b"/b", term=BEL) + osc7(b"/c")
    assert [r.path for r in parse(data)] == [b"/a", b"/b", b"/c"]


def test_empty_feed() -> None:
    assert CwdParser().feed(b"") == []


def test_report_is_frozen() -> None:
    report = r7(b"/x")
    with pytest.raises(AttributeError):
        report.path = b"/y"  # type: ignore[misc]


# -- percent decoding ----------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (b"/my%20dir/a%2Fb", b"/my dir/a/b"),
        (b"/%C3%BCber/%e6%97%a5", "/über/日".encode()),
        (b"/bad%FF%FEname", b"/bad\xff\xfename"),
        (b"/pct%25/hash%23/q%3F", b"/pct%/hash#/q?"),
        (b"/nl%0Ain", b"/nl\nin"),
        (b"/raw \xc3\xbc utf8", b"/raw \xc3\xbc utf8"),  # naive emitter
        (b"/naive#frag?q", b"/naive#frag?q"),  # kept literally
    ],
)
def test_percent_decoding(encoded: bytes, expected: bytes) -> None:
    assert parse(b"\x1b]7;file://h" + encoded + ST) == [r7(expected, "h")]


def test_percent_encoded_host() -> None:
    assert parse(b"\x1b]7;file://my%2Dhost/x\x07") == [r7(b"/x", "my-host")]


def test_encode_roundtrip_all_bytes() -> None:
    path = b"/" + bytes(range(1, 256))
    assert parse(osc7(path)) == [r7(path)]


# -- iTerm2 and kitty forms -----------------------------------------------------


@pytest.mark.parametrize("term", [BEL, ST])
def test_iterm2_current_dir(term: bytes) -> None:
    data = b"\x1b]1337;CurrentDir=/Users/me/my dir" + term
    assert parse(data) == [CwdReport("", b"/Users/me/my dir", "iterm2")]


def test_iterm2_remote_host_is_remembered() -> None:
    p = CwdParser()
    assert p.feed(b"\x1b]1337;RemoteHost=me@build.example\x07") == []
    got = p.feed(b"\x1b]1337;CurrentDir=/srv\x1b\\")
    assert got == [CwdReport("build.example", b"/srv", "iterm2")]


def test_iterm2_raw_utf8_containing_0x9c_byte() -> None:
    # U+5712 is E5 9C 92: its 0x9c must not be taken for an 8-bit ST.
    path = "/x/\u5712/y".encode()
    assert b"\x9c" in path
    got = parse(b"\x1b]1337;CurrentDir=" + path + BEL)
    assert got == [CwdReport("", path, "iterm2")]


def test_iterm2_other_keys_ignored() -> None:
    assert parse(b"\x1b]1337;SetMark\x07\x1b]1337;SetUserVar=a=b\x07") == []


@pytest.mark.parametrize("term", [BEL, ST])
def test_kitty_shell_cwd_is_raw(term: bytes) -> None:
    data = b"\x1b]7;kitty-shell-cwd://kbox/home/a b%20c/\xc3\xbc" + term
    got = parse(data)
    assert got == [CwdReport("kbox", "/home/a b%20c/ü".encode(), "kitty")]


# -- sequences that must be ignored ---------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x1b]0;user@host: ~/x\x07",  # window title
        b"\x1b]2;file:///etc\x1b\\",  # title that looks like a URL
        b"\x1b]8;;file:///etc/passwd\x1b\\link\x1b]8;;\x1b\\",  # hyperlink
        b"\x1b]77;file:///x\x07",  # OSC 77, not 7
        b"\x1b]6;file:///doc\x07",  # OSC 6 (document)
        b"\x1b]7\x07",  # no payload
        b"\x1b]133;A\x07",  # semantic prompt mark
        b"\x1b]52;c;" + b"QUJD" * 5000 + b"\x07",  # big clipboard write
        b"\x1b[7;file:///x\x07",  # CSI, not OSC
        b"\x1bP7;file:///x\x1b\\",  # DCS, not OSC
        b"]7;file:///x\x07",  # no ESC
    ],
)
def test_other_sequences_ignored(data: bytes) -> None:
    assert parse(data) == []
    # ...and they do not disturb a following report.
    assert parse(data + osc7(b"/ok")) == [r7(b"/ok")]


def test_ignored_osc_is_not_buffered() -> None:
    p = CwdParser()
    p.feed(b"\x1b]52;c;" + b"A" * 100_000)
    assert p.buffered_bytes == 0
    assert p.feed(BEL + osc7(b"/after")) == [r7(b"/after")]


# -- malformed input ------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"file://h/bad%G1",
        b"file://h/trunc%4",
        b"file://h/trunc%",
        b"file://h/nul%00byte",
        b"file://h/raw\x00nul",
        b"file://h/tab\there",
        b"file://hostonly",
        b"file:/single/slash",
        b"file:relative",
        b"http://h/x",
        b"/just/a/path",
        b"",
        b"file://h%FF/x",  # host not UTF-8
        b"file://h%zz/x",
        b"kitty-shell-cwd://h",
    ],
)
def test_malformed_osc7_gives_nothing(payload: bytes) -> None:
    for term in (BEL, ST):
        assert parse(b"\x1b]7;" + payload + term) == []


@pytest.mark.parametrize(
    "payload",
    [b"CurrentDir=relative/x", b"CurrentDir=", b"CurrentDir=/a\x00b", b"CurrentDir"],
)
def test_malformed_iterm2_gives_nothing(payload: bytes) -> None:
    assert parse(b"\x1b]1337;" + payload + BEL) == []


@pytest.mark.parametrize("cancel", [b"\x18", b"\x1a"], ids=["CAN", "SUB"])
def test_can_sub_abort(cancel: bytes) -> None:
    assert parse(b"\x1b]7;file:///a" + cancel + b"/more\x07") == []
    assert parse(b"\x1b]7;file:///a" + cancel + osc7(b"/b")) == [r7(b"/b")]


def test_new_escape_aborts_and_restarts() -> None:
    assert parse(b"\x1b]7;file:///a\x1b]7;file:///b\x07") == [r7(b"/b", "")]
    assert parse(b"\x1b]7;file:///a\x1b[0m/rest\x07") == []
    assert parse(b"\x1b]7;file:///a\x1b\x1b]7;file:///c\x07") == [r7(b"/c", "")]


def test_lone_8bit_st_in_ground_is_harmless() -> None:
    assert parse(b"\x9c\x07\x1b\\" + osc7(b"/x") + b"\x9c") == [r7(b"/x")]


# -- chunking -------------------------------------------------------------------

STREAM = (
    b"ls -la\r\n\x1b[01;34mdir\x1b[0m\r\n"
    + b"\x1b]0;title\x07"
    + osc7("/home/me/My Dir/日本".encode())
    + b"\x1b]7;file://h/bad%zz\x07"
    + b"$ \x1b]7;file://h/x/%FF%20y\x07"
    + b"\x1b]1337;CurrentDir=/it/\xe5\x9c\x92\x1b\\"
    + b"\x1b]7;kitty-shell-cwd://k/k p\x9c"
    + b"\x1b]7;file:///a\x18"
    + b"tail \x1b]7;file:///st8\x9c"
)
EXPECTED = [
    r7("/home/me/My Dir/日本".encode()),
    r7(b"/x/\xff y", "h"),
    CwdReport("", "/it/\u5712".encode(), "iterm2"),
    CwdReport("k", b"/k p", "kitty"),
    r7(b"/st8", ""),
]


def test_stream_whole() -> None:
    assert parse(STREAM) == EXPECTED


def test_every_single_split_point() -> None:
    for cut in range(len(STREAM) + 1):
        got = feed_all(CwdParser(), [STREAM[:cut], STREAM[cut:]])
        assert got == EXPECTED, f"cut at {cut}"


def test_every_pair_of_split_points() -> None:
    data = b"x" + osc7(b"/p q", host=b"h") + b"\x1b]1337;CurrentDir=/i\x1b\\"
    expected = [r7(b"/p q", "h"), CwdReport("", b"/i", "iterm2")]
    for a in range(len(data) + 1):
        for b in range(a, len(data) + 1):
            got = feed_all(CwdParser(), [data[:a], data[a:b], data[b:]])
            assert got == expected, f"cuts at {a}, {b}"


def test_byte_at_a_time() -> None:
    chunks = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert feed_all(CwdParser(), chunks) == EXPECTED


def test_st_split_between_esc_and_backslash() -> None:
    p = CwdParser()
    assert p.feed(b"\x1b]7;file:///a\x1b") == []
    assert p.feed(b"\\") == [r7(b"/a", "")]
    assert p.feed(b"\x1b]7;file:///b\x1b") == []
    assert p.feed(b"X") == []  # ESC X aborted it
    assert p.feed(b"/c\x07") == []


# -- bounded memory -------------------------------------------------------------


def test_giant_unterminated_osc7_stays_bounded() -> None:
    p = CwdParser()
    assert p.feed(b"\x1b]7;file:///") == []
    block = b"a" * (1 << 20)
    for _ in range(100):  # 100 MiB
        assert p.feed(block) == []
        assert p.buffered_bytes <= MAX_OSC_LEN
    # The over-long sequence is dropped when it ends; parsing resumes.
    assert p.feed(b"/tail\x07") == []
    assert p.feed(osc7(b"/next")) == [r7(b"/next")]


def test_just_over_limit_is_dropped_just_under_is_kept() -> None:
    head = b"7;file:///"
    fits = b"x" * (MAX_OSC_LEN - len(head) - 1)
    assert parse(b"\x1b]" + head + fits + BEL) == [r7(b"/" + fits, "")]
    assert parse(b"\x1b]" + head + fits + b"yy" + BEL) == []


def test_garbage_stays_bounded() -> None:
    block = os.urandom(1 << 20)
    for prompt_fallback in (False, True):
        p = CwdParser(prompt_fallback=prompt_fallback)
        for i in range(100 if not prompt_fallback else 8):
            p.feed(block[i:] + block[:i])
            assert p.buffered_bytes <= MAX_OSC_LEN + MAX_LINE_LEN


def test_long_line_without_newline_stays_bounded() -> None:
    p = CwdParser(prompt_fallback=True)
    for _ in range(64):
        assert p.feed(b"z" * 100_000) == []
        assert p.buffered_bytes <= MAX_LINE_LEN
    # After the next newline, prompts are recognised again.
    assert p.feed(b"\nme@box:/srv$ ") == [CwdReport("box", b"/srv", "prompt")]


# -- prompt fallback -------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"user@host:~$ ", b"~"),
        (b"user@host:~/src/my proj$ ", b"~/src/my proj"),
        (b"root@web-01:/etc/nginx# ", b"/etc/nginx"),
        (b"me@box:/tmp/a$b$ ", b"/tmp/a$b"),
        (b"[user@host /var/log]$ ", b"/var/log"),
        (b"[root@host ~]# ", b"~"),
        (b"me@gentoo ~/x $ ", b"~/x"),
        (b"me@fishbox ~/work> ", b"~/work"),
        (b"me@zsh:~/dir% ", b"~/dir"),
        (b"(venv) user@host:~/proj$ ", b"~/proj"),
        (b"user@host:/data/\xc3\xa9t\xc3\xa9$ ", b"/data/\xc3\xa9t\xc3\xa9"),
        (b"user@host:/x$", b"/x"),
        # Colours (bash \[...\] markers included), title OSC, bracketed paste.
        (
            b"\x1b]0;user@host: ~\x07\x01\x1b[01;32m\x02user@host\x01\x1b[00m\x02:"
            b"\x01\x1b[01;34m\x02~/code\x01\x1b[00m\x02$ \x1b[?2004h",
            b"~/code",
        ),
        (b"\x1b[1;31mroot\x1b[0m@\x1b[33mhost\x1b[0m:\x1b[34m/\x1b[0m# ", b"/"),
        # zsh PROMPT_SP: the visible line is what follows the last CR.
        (b"%" + b" " * 79 + b"\r \r\x1b[32mme@z:~/a%\x1b[0m ", b"~/a"),
        (b"old output\nuser@host:/new$ ", b"/new"),
    ],
)
def test_find_prompt_cwd(line: bytes, expected: bytes) -> None:
    assert find_prompt_cwd(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"hello world",
        b"total 48",
        b"drwxr-xr-x  2 root root 4096 Nov 21 10:41 .",
        b"Author: Jane Doe <jane@example.com>",
        b"git@github.com:owner/repo.git",
        b"scp user@host:/tmp/x .",
        b"user@host:~$ ls -la",  # prompt followed by a typed command
        b"Price: $5",
        b"[user@host src]$ ",  # bash \W: basename only, unresolvable
        b"user@host:relative$ ",
        b"user@host:~other$ ",  # ~user form
        b"host:~$ ",
        b"$ ",
        b"# comment",
        b"user@host:~$ \n",  # complete line: nothing after it
        b"email me@example.org / $ 5",
    ],
)
def test_find_prompt_cwd_no_false_positives(line: bytes) -> None:
    assert find_prompt_cwd(line) is None


def test_prompt_fallback_reports() -> None:
    p = CwdParser(prompt_fallback=True)
    assert p.feed(b"Last login: today\r\n") == []
    assert p.feed(b"me@box:~$ ") == [CwdReport("box", b"~", "prompt")]
    # Typing and running a command, then the same prompt again: no repeat.
    assert p.feed(b"ls\r\nfile1  file2\r\nme@box:~$ ") == []
    assert p.feed(b"cd /srv\r\n\x1b[32mme@box\x1b[0m:/srv$ ") == [
        CwdReport("box", b"/srv", "prompt")
    ]
    assert p.feed(b"cd -\r\n~\r\nme@box:~$ ") == [CwdReport("box", b"~", "prompt")]


def test_prompt_split_across_chunks() -> None:
    p = CwdParser(prompt_fallback=True)
    assert p.feed(b"out\r\nme@bo") == []
    assert p.feed(b"x:/a b") == []
    assert p.feed(b"$ ") == [CwdReport("box", b"/a b", "prompt")]


def test_prompt_fallback_off_by_default() -> None:
    assert CwdParser().feed(b"me@box:~$ ") == []


def test_prompt_fallback_stops_after_osc() -> None:
    p = CwdParser(prompt_fallback=True)
    assert p.feed(b"me@box:/a$ ") == [CwdReport("box", b"/a", "prompt")]
    assert p.feed(b"\r\n" + osc7(b"/b") + b"me@box:/b$ ") == [r7(b"/b")]
    assert p.seen_osc
    assert p.feed(b"cd /c\r\nme@box:/c$ ") == []
    assert p.buffered_bytes == 0


def test_reset_keeps_option() -> None:
    p = CwdParser(prompt_fallback=True)
    p.feed(osc7(b"/x") + b"\x1b]7;file:///partial")
    p.reset()
    assert not p.seen_osc and p.buffered_bytes == 0
    assert p.feed(b"me@box:/y$ ") == [CwdReport("box", b"/y", "prompt")]


# -- resolve_home -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "home", "expected"),
    [
        (b"~", b"/home/me", b"/home/me"),
        (b"~/x/y", b"/home/me", b"/home/me/x/y"),
        (b"~/x", b"/home/me/", b"/home/me/x"),
        (b"~/x", b"/", b"/x"),
        (b"~other/x", b"/home/me", b"~other/x"),
        (b"/abs", b"/home/me", b"/abs"),
        (b"rel~", b"/home/me", b"rel~"),
    ],
)
def test_resolve_home(path: bytes, home: bytes, expected: bytes) -> None:
    assert resolve_home(path, home) == expected


# -- property tests (hypothesis) ----------------------------------------------------

path_bytes = st.lists(
    st.binary(min_size=1, max_size=12).filter(lambda b: b"\x00" not in b and b"/" not in b),
    max_size=4,
).map(lambda parts: b"/" + b"/".join(parts))
raw_path_bytes = st.lists(
    st.binary(min_size=1, max_size=12).map(lambda b: re.sub(rb"[\x00-\x1f/\x9c]", b"", b)),
    max_size=4,
).map(lambda parts: b"/" + b"/".join(p for p in parts if p))
hosts = st.sampled_from([b"", b"localhost", b"box", b"build-01.example.org"])
terms = st.sampled_from([BEL, ST, b"\x9c"])


@st.composite
def sequences(draw: st.DrawFn) -> tuple[bytes, CwdReport]:
    kind = draw(st.sampled_from(["osc7", "kitty", "iterm2"]))
    host = draw(hosts)
    if kind == "osc7":
        path = draw(path_bytes)
        return osc7(path, host, draw(terms)), CwdReport(host.decode(), path, "osc7")
    path = draw(raw_path_bytes)
    term = draw(st.sampled_from([BEL, ST]))
    if kind == "kitty":
        seq = b"\x1b]7;kitty-shell-cwd://" + host + path + term
        return seq, CwdReport(host.decode(), path, "kitty")
    return b"\x1b]1337;CurrentDir=" + path + term, CwdReport("", path, "iterm2")


# Filler text never contains ESC, so it cannot start or break a sequence.
filler = st.binary(max_size=40).map(lambda b: b.replace(b"\x1b", b""))
noise = st.binary(max_size=40)  # anything at all, ESC included


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@settings(deadline=None, max_examples=300)
@given(
    st.lists(st.tuples(filler, sequences()), max_size=6),
    filler,
    st.lists(st.integers(min_value=0), max_size=30),
)
def test_embedded_sequences_found_under_any_chunking(
    parts: list[tuple[bytes, tuple[bytes, CwdReport]]], tail: bytes, cuts: list[int]
) -> None:
    data = b"".join(text + seq for text, (seq, _) in parts) + tail
    expected = [report for _, (_, report) in parts]
    assert parse(data) == expected
    assert feed_all(CwdParser(), split(data, cuts)) == expected


@settings(deadline=None, max_examples=300)
@given(
    st.lists(st.one_of(noise, sequences().map(lambda s: s[0])), max_size=8),
    st.lists(st.integers(min_value=0), max_size=30),
)
def test_random_chunking_matches_whole_feed(items: list[bytes], cuts: list[int]) -> None:
    data = b"".join(items)
    whole = parse(data)
    assert feed_all(CwdParser(), split(data, cuts)) == whole
    byte_wise = feed_all(CwdParser(), [data[i : i + 1] for i in range(len(data))])
    assert byte_wise == whole


@settings(deadline=None)
@given(path_bytes, hosts, terms)
def test_percent_encoding_roundtrip(path: bytes, host: bytes, term: bytes) -> None:
    assert parse(osc7(path, host, term)) == [CwdReport(host.decode(), path, "osc7")]


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_never_raises(data: bytes) -> None:
    p = CwdParser(prompt_fallback=True)
    p.feed(data)
    find_prompt_cwd(data)
    assert p.buffered_bytes <= MAX_OSC_LEN + MAX_LINE_LEN
