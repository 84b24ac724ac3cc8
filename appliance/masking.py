"""Mask secret values in a command line: the one function audit, history and logging all use.

It must work on lines that do not parse (a typo, an unterminated quote, a control character), because
those are audited too. The words come from the tokenizer itself (:func:`~appliance.shell.tokenize.
scan_words`, which cuts any line exactly where the parser would and never refuses), so the masker and
the parser can never disagree about where a value starts or ends: ``--db_pass top<NBSP>SEKRIT`` is one
word for both.

What is masked, after any secret flag (a flag the command table marks secret, a flag whose name looks
like one: ``pass``, ``secret``, ``token``, ``key``, or a misspelt flag whose nearest valid spelling is
secret, ``--db_pas``): the inline value (``--db_pass=...``), whatever is glued to the flag name
(``--db-pass\\ SEKRIT``), the next word whatever it is (the parser takes it as the value, even ``--``
or ``--yes``), and every following word up to the next known flag, so that a value the user forgot to
quote (``--db_pass top SEKRIT``) is masked whole even though the parser refuses the line.

Linear in the length of the line: one pass of the tokenizer, one pass here, one join.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from functools import lru_cache

from appliance.shell.tokenize import Word, scan_words, split_flag

MASK = "********"

_SECRETISH = re.compile(r"pass|pwd|secret|token|key|credential", re.IGNORECASE)
_MAX_NAME = 64  # longer "flag names" are nobody's misspelling: no fuzzy match (it would cost quadratic time)


def is_secret_flag(name: str, secret_flags: Collection[str], all_flags: Collection[str] = ()) -> bool:
    if name in secret_flags or _SECRETISH.search(name):
        return True
    if len(name) > _MAX_NAME or name in all_flags:
        return False
    return _near_secret(name, frozenset(secret_flags), frozenset(all_flags))


@lru_cache(maxsize=256)
def _near_secret(name: str, secret_flags: frozenset[str], all_flags: frozenset[str]) -> bool:
    import difflib  # only for a misspelt flag: the common line never needs it

    near = difflib.get_close_matches(name, sorted(all_flags), n=1, cutoff=0.6)
    return bool(near) and near[0] in secret_flags


def mask_line(line: str, secret_flags: Collection[str], all_flags: Collection[str] = ()) -> str:
    """Return ``line`` with the value of every secret flag replaced by ``********``.

    >>> mask_line("redirect --db_host h --db-pass 'p w' --yes", {"db_pass"}, {"db_host", "db_pass", "yes"})
    'redirect --db_host h --db-pass ******** --yes'
    >>> mask_line("redirect --db_pass=s3cret", {"db_pass"})
    'redirect --db_pass=********'
    """
    replace: list[tuple[int, int, str]] = []
    state = _IDLE
    for word in scan_words(line):
        flag = split_flag(word.text)
        if state == _VALUE_NEXT:
            replace.append((word.start, word.end, MASK))  # the parser's value, whatever it looks like
            state = _UNTIL_FLAG
            continue
        if state == _OPTIONAL_VALUE:
            state = _UNTIL_FLAG
            if flag is None:
                replace.append((word.start, word.end, MASK))
                continue
        if state == _UNTIL_FLAG:
            if flag is None or (flag[0] not in all_flags and not is_secret_flag(flag[0], secret_flags, all_flags)):
                replace.append((word.start, word.end, MASK))
                continue
            state = _IDLE
        if flag is None:
            continue
        name, rest = flag
        if not is_secret_flag(name, secret_flags, all_flags):
            continue
        if rest:
            replace.append(_glued_value(line, word, name, rest))
            state = _UNTIL_FLAG
        else:
            state = _VALUE_NEXT if name in secret_flags else _OPTIONAL_VALUE
    if not replace:
        return line
    parts: list[str] = []
    at = 0
    for start, end, text in replace:
        parts += [line[at:start], text]
        at = end
    parts.append(line[at:])
    return "".join(parts)


# Where the masker stands: nothing pending; the next word is a known secret flag's value; the next word
# is an unknown secret-looking flag's value unless it is a flag; masking words until the next known flag.
_IDLE, _VALUE_NEXT, _OPTIONAL_VALUE, _UNTIL_FLAG = range(4)


def _glued_value(line: str, word: Word, name: str, rest: str) -> tuple[int, int, str]:
    """The span of what follows a secret flag's name inside its own word (``=VALUE`` or an escaped space)."""
    raw = line[word.start : word.end]
    written = raw[2 : 2 + len(name)].replace("-", "_")
    if raw.startswith("--") and written == name:
        cut = 2 + len(name) + (1 if rest.startswith("=") and raw[2 + len(name) : 3 + len(name)] == "=" else 0)
        return word.start + cut, word.end, MASK
    return word.start, word.end, MASK  # quotes or escapes inside the name: the whole word goes
