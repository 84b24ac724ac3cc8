"""Split a command line into words with POSIX quoting and nothing else.

There is no variable, tilde, glob or command expansion, no pipe, redirection or command list. The
characters that would do those things in a shell are plain text inside quotes and an error outside,
so a user who types ``echo $(bash)`` or ``ping 1.1.1.1; bash`` gets an error, never a surprise.
Control characters (a newline smuggled in with quoted-insert or a paste, escape sequences, NUL) are
refused before anything else looks at the line (the lshell #149 class of escape).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.errors import UsageError

MAX_LINE = 4096

# Shell metacharacters: command lists, pipes, redirection, expansion, globbing, grouping.
METACHARACTERS = frozenset(";&|<>$`(){}[]*?~")

_QUOTE_HINT = "quote the value ('like this') to use it as plain text; this shell runs one command, unexpanded"


@dataclass(frozen=True)
class Word:
    """A word of the command line; ``quoted`` if it starts with a quote or an escape.

    Only the start matters: a quoted word is never a command word or a flag (``'--count'`` is a
    value), while ``--count='1'`` is the flag ``--count`` with a quoted value.
    """

    text: str
    quoted: bool
    start: int


def check_characters(line: str) -> None:
    """Refuse control characters (C0, DEL, C1) and overlong input.

    :raises UsageError: naming the offending character by its code, never echoing it raw.
    """
    if len(line) > MAX_LINE:
        raise UsageError(f"the command line is too long ({len(line)} characters, at most {MAX_LINE})")
    for index, char in enumerate(line):
        code = ord(char)
        if code < 0x20 or code == 0x7F or 0x80 <= code <= 0x9F:
            raise UsageError(
                f"control character U+{code:04X} at position {index + 1} is not allowed",
                hint="type the command on one line without control characters",
            )


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
    words: list[Word] = []
    buf: list[str] = []
    quoted = False
    start = -1
    i, n = 0, len(line)

    def finish() -> None:
        nonlocal buf, quoted, start
        if start >= 0:
            words.append(Word("".join(buf), quoted, start))
        buf, quoted, start = [], False, -1

    while i < n:
        char = line[i]
        if char == " ":
            finish()
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
                    break
                raise UsageError("the line ends with a backslash", hint="remove it or quote the value")
            buf.append(line[i + 1])
            quoted = quoted or i == start
            i += 2
        elif char in METACHARACTERS or (char == "#" and not buf):
            raise UsageError(f"'{char}' is not allowed outside quotes (position {i + 1})", hint=_QUOTE_HINT)
        else:
            buf.append(char)
            i += 1
    finish()
    return words
