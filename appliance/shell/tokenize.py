"""Split a command line into words with POSIX quoting and nothing else.

There is no variable, tilde, glob or command expansion, no pipe, redirection or command list. The
characters that would do those things in a shell are plain text inside quotes and an error outside,
so a user who types ``echo $(bash)`` or ``ping 1.1.1.1; bash`` gets an error, never a surprise.
Control characters (a newline smuggled in with quoted-insert or a paste, escape sequences, NUL, bidi
controls, invalid UTF-8) are refused before anything else looks at the line (the lshell #149 class of
escape). :func:`scan_words` cuts any line into the same words without refusing anything: the masker
uses it, so the parser and the masker agree on where every value starts and ends.
"""

from __future__ import annotations

import re

from appliance.errors import UsageError
from appliance.safetext import unsafe_pattern

MAX_LINE = 4096

# Shell metacharacters: command lists, pipes, redirection, expansion, globbing, grouping.
METACHARACTERS = frozenset(";&|<>$`(){}[]*?~")

_FLAG = r"--([A-Za-z0-9_-]*)"  # compiled by re's cache when first used: most lines hold no flag

_QUOTE_HINT = "quote the value ('like this') to use it as plain text; this shell runs one command, unexpanded"


class Word:
    """A word of the command line; ``quoted`` if it starts with a quote or an escape.

    Only the start matters: a quoted word is never a command word or a flag (``'--count'`` is a
    value), while ``--count='1'`` is the flag ``--count`` with a quoted value. ``start`` and ``end``
    are the word's span in the raw line (quotes and escapes included), which is what the masker
    replaces. (A plain class: the shell's start-up is measured, and a dataclass costs ~0.2 ms to make.)
    """

    __slots__ = ("end", "quoted", "start", "text")

    def __init__(self, text: str, quoted: bool, start: int, end: int) -> None:
        self.text, self.quoted, self.start, self.end = text, quoted, start, end

    def _key(self) -> tuple[str, bool, int, int]:
        return self.text, self.quoted, self.start, self.end

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Word) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Word({self.text!r}, quoted={self.quoted}, start={self.start}, end={self.end})"


def check_characters(line: str) -> None:
    """Refuse overlong input and every character the terminal sanitiser would escape: C0, DEL, C1, bidi
    controls, line separators, zero-width characters, and invalid UTF-8 (lone surrogates).

    :raises UsageError: naming the offending character by its code, never echoing it raw.
    """
    if len(line) > MAX_LINE:
        raise UsageError(f"the command line is too long ({len(line)} characters, at most {MAX_LINE})",
                         hint="nothing was run; type a shorter line")
    if line.isprintable():
        return  # the common case: nothing below can match (see appliance.safetext)
    match = unsafe_pattern().search(line)
    if match is None:
        return
    code, index = ord(match.group(0)), match.start()
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as surrogateescape decodes it
        raise UsageError(f"invalid UTF-8 (byte 0x{code - 0xDC00:02X}) at position {index + 1}",
                         hint="type the command in UTF-8 (check the terminal's character encoding)")
    raise UsageError(
        f"control character U+{code:04X} at position {index + 1} is not allowed",
        hint="type the command on one line without control characters",
    )


def split_flag(text: str) -> tuple[str, str] | None:
    """``("db_pass", "=x")`` for ``--db-pass=x``: the canonical flag name and what follows it.

    A flag name is letters, digits, ``-`` and ``_``; ``-`` and ``_`` spell the same flag. Anything
    after the name (``=VALUE``, or text glued on by an escaped space) is returned as is. None for a
    word that is not written as a flag.
    """
    if not text.startswith("--"):
        return None
    match = re.match(_FLAG, text)
    assert match is not None
    return match.group(1).replace("-", "_"), text[match.end() :]


def is_comment(line: str) -> bool:
    """A line whose first non-blank character is ``#`` is a comment (batch files, pasted scripts)."""
    return line.lstrip(" ").startswith("#")


def split_words(line: str, *, partial: bool = False) -> list[Word]:
    """Split ``line`` into words.

    :param partial: tolerate an unterminated quote or trailing backslash (for Tab completion and
        ``?`` help on a line still being typed); metacharacters are still reported.
    :raises UsageError: unterminated quote, or a metacharacter outside quotes.
    """
    check_characters(line)
    return _scan(line, partial=partial, strict=True)


def scan_words(line: str) -> list[Word]:
    """The words of any line, exactly as :func:`split_words` would cut them, but never refusing.

    For the masker, which must find secret values in lines the parser refuses (a typo, an unterminated
    quote, a metacharacter, a control character): a metacharacter or control character is plain text
    here, an unterminated quote runs to the end of the line. Word boundaries are the parser's own (a
    space, and nothing else), so the two can never disagree about where a value ends. Linear time.
    """
    return _scan(line, partial=True, strict=False)


def _scan(line: str, *, partial: bool, strict: bool) -> list[Word]:
    words: list[Word] = []
    buf: list[str] = []
    quoted = False
    start = -1
    i, n = 0, len(line)

    def finish(end: int) -> None:
        nonlocal buf, quoted, start
        if start >= 0:
            words.append(Word("".join(buf), quoted, start, end))
        buf, quoted, start = [], False, -1

    while i < n:
        char = line[i]
        if char == " ":
            finish(i)
            i += 1
            continue
        if start < 0:
            start = i
        if char == "'":
            end = line.find("'", i + 1)
            if end < 0:
                if partial:
                    buf.append(line[i + 1 :])
                    quoted = quoted or i == start
                    i = n
                    break
                raise UsageError("unterminated single quote", hint="close the quote with '")
            buf.append(line[i + 1 : end])
            quoted = quoted or i == start
            i = end + 1
        elif char == '"':
            quoted = quoted or i == start
            i += 1
            closed = False
            while i < n:
                c = line[i]
                if c == '"':
                    closed = True
                    i += 1
                    break
                # Inside double quotes POSIX keeps a backslash unless it escapes one of these.
                if c == "\\" and i + 1 < n and line[i + 1] in '"\\$`':
                    buf.append(line[i + 1])
                    i += 2
                    continue
                buf.append(c)
                i += 1
            if not closed and not partial:
                raise UsageError('unterminated double quote', hint='close the quote with "')
        elif char == "\\":
            if i + 1 >= n:
                if partial:
                    i = n
                    break
                raise UsageError("the line ends with a backslash", hint="remove it or quote the value")
            buf.append(line[i + 1])
            quoted = quoted or i == start
            i += 2
        elif strict and (char in METACHARACTERS or (char == "#" and not buf)):
            raise UsageError(f"'{char}' is not allowed outside quotes (position {i + 1})", hint=_QUOTE_HINT)
        else:
            buf.append(char)
            i += 1
    finish(i)
    return words
