"""Text made safe for a terminal: the one sanitiser every printed value passes through.

A value that did not come from this product's own string literals (a node name or a server error from
the database, a line of a child program, a host name read from a file, the line being typed) may hold
bytes a terminal obeys: ESC and CSI sequences move the cursor and overwrite earlier lines, OSC 0/2 set
the window title, OSC 52 writes the admin's own clipboard, CR and BS rewrite a line, a newline forges a
table row, bidi controls reorder what is shown (Trojan Source), U+2028/U+2029 split a line for some
readers, and a lone surrogate (invalid UTF-8 read with ``surrogateescape``) cannot even be encoded.

:func:`safe` replaces each such character with a visible escape (``\\x1b``, ``\\u202e``) rather than
deleting it, so what is shown is unambiguous and nothing is hidden. It runs in linear time. The
renderer applies it to every table cell, field, message, error, hint and streamed line; the REPL to
the prompt, the ``?`` echo and history; audit records and logs to the masked line.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls; the Arabic letter mark; zero-width space/joiners and the LTR/RTL marks;
# the line and paragraph separators; the bidi embeddings, overrides and isolates; surrogates (only lone
# ones can exist in a str); the BOM / zero-width no-break space. Every one of them is outside what
# str.isprintable() accepts, so printable text (nearly all of it) never reaches the regular expressions,
# which are compiled on first need: the shell's start-up is measured.
_BEYOND_C0 = "\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff\ufeff"
_CLASSES = {False: "\x00-\x1f" + _BEYOND_C0, True: "\x00-\x09\x0b-\x1f" + _BEYOND_C0}  # True: keeps \n
_compiled: dict[bool, re.Pattern[str]] = {}


def unsafe_pattern(*, newlines: bool = False) -> re.Pattern[str]:
    """The characters :func:`safe` escapes (all but ``\\n`` with ``newlines``), as one character class."""
    pattern = _compiled.get(newlines)
    if pattern is None:
        pattern = _compiled[newlines] = re.compile(f"[{_CLASSES[newlines]}]")
    return pattern


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str, *, newlines: bool = False) -> str:
    """``text`` with every character a terminal could act on replaced by a visible escape.

    :param newlines: keep ``\\n`` (multi-line text of our own: help, a message); everything else
        that could end or rewrite a line is still escaped.

    >>> safe("EMS\\x1b]0;owned\\x07")
    'EMS\\\\x1b]0;owned\\\\x07'
    >>> safe("a\\nb\\u202e", newlines=True)
    'a\\nb\\\\u202e'
    """
    if (text.replace("\n", "") if newlines else text).isprintable():
        return text
    return unsafe_pattern(newlines=newlines).sub(_escape, text)


def is_safe(text: str) -> bool:
    """True if :func:`safe` would leave ``text`` unchanged (one line, nothing a terminal acts on)."""
    return text.isprintable() or unsafe_pattern().search(text) is None
