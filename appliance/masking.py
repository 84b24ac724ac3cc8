"""Mask secret values in a command line: the one function audit, history and logging all use.

It must work on lines that do not parse (a typo, an unterminated quote), because those are audited
too. So it scans words leniently on the raw text and replaces the value after any secret flag:
a flag the command table marks secret, a flag whose name looks like one (``pass``, ``secret``,
``token``, ``key``), or a misspelt flag whose nearest valid spelling is secret (``--db_pas``).
"""

from __future__ import annotations

import re
from collections.abc import Collection

MASK = "********"

# A word: quoted runs (possibly unterminated), backslash escapes, or plain characters.
_WORD = re.compile(r"""(?:'[^']*'?|"(?:\\.|[^"\\])*"?|\\.?|[^\s'"\\])+""")
_SECRETISH = re.compile(r"pass|pwd|secret|token|key|credential", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _flag_of(word: str) -> str | None:
    unquoted = word.replace("'", "").replace('"', "").replace("\\", "")
    if not unquoted.startswith("--") or len(unquoted) < 3:
        return None
    return unquoted[2:].split("=", 1)[0].replace("-", "_")


def is_secret_flag(name: str, secret_flags: Collection[str], all_flags: Collection[str] = ()) -> bool:
    if name in secret_flags or _SECRETISH.search(name):
        return True
    import difflib

    near = difflib.get_close_matches(name, list(all_flags), n=1, cutoff=0.6)
    return bool(near) and near[0] in secret_flags


def mask_line(line: str, secret_flags: Collection[str], all_flags: Collection[str] = ()) -> str:
    """Return ``line`` with the value of every secret flag replaced by ``********``.

    >>> mask_line("redirect --db_host h --db-pass 'p w' --yes", {"db_pass"})
    'redirect --db_host h --db-pass ******** --yes'
    >>> mask_line("redirect --db_pass=s3cret", {"db_pass"})
    'redirect --db_pass=********'
    """
    spans = [(m.start(), m.end(), m.group(0)) for m in _WORD.finditer(line)]
    replace: list[tuple[int, int, str]] = []
    i = 0
    while i < len(spans):
        start, end, word = spans[i]
        name = _flag_of(word)
        if name is not None and is_secret_flag(name, secret_flags, all_flags):
            eq = word.find("=")
            if eq >= 0:
                replace.append((start + eq + 1, end, MASK))
            # The parser takes the next word as a known flag's value even if it starts with "--";
            # for a flag it does not know, only a word that does not look like a flag is masked.
            elif i + 1 < len(spans) and (name in secret_flags or _flag_of(spans[i + 1][2]) is None):
                replace.append((spans[i + 1][0], spans[i + 1][1], MASK))
                i += 1
        i += 1
    for start, end, text in reversed(replace):
        line = line[:start] + text + line[end:]
    return line


def printable(line: str) -> str:
    """Escape control characters so a record or log line can never carry terminal escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", line)
