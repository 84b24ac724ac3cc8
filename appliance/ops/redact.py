"""Removing secrets from text that leaves the node: support bundles and log output.

Two passes. :func:`redact_patterns` masks what *looks* like a secret whatever its value: ``password=``
and friends in ``key=value``, ``key: value`` or JSON form, the userinfo of URLs
(``postgresql://user:pw@host``), HTTP ``Authorization`` values and PEM private key blocks.
:class:`Redactor` also replaces every occurrence of the secrets the node *knows* (its database
passwords, the local superuser's password), in the plain and URL-encoded forms they could appear in.
What is masked becomes :data:`~appliance.masking.MASK`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

from appliance.masking import MASK

_KEYS = r"(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|private[_-]?key|credentials?)"
_PATTERNS = (
    # key=value and key: value (conninfo, config files, log lines); the value up to a blank or quote.
    (re.compile(rf"(?i)(\b\w*{_KEYS}\w*\s*[=:]\s*)(?!{re.escape(MASK)})(\"[^\"]*\"|'[^']*'|[^\s,;\"'}}]+)"),
     rf"\g<1>{MASK}"),
    # JSON: "password": "value"
    (re.compile(rf'(?i)("\w*{_KEYS}\w*"\s*:\s*)"(?:[^"\\]|\\.)*"'), rf'\g<1>"{MASK}"'),
    # URL userinfo: scheme://user:secret@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), rf"\g<1>{MASK}@"),
    # HTTP authorization headers
    (re.compile(r"(?i)\b(authorization\s*:\s*\w+\s+)\S+"), rf"\g<1>{MASK}"),
    # PEM private keys, whole blocks
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
     f"-----PRIVATE KEY REMOVED ({MASK})-----"),
)


def redact_patterns(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class Redactor:
    """Masks the known ``secrets`` (and anything that looks like one) in text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= 4:  # a shorter "secret" would mask ordinary words
                forms |= {secret, quote(secret, safe=""), quote(secret), secret.replace("'", "''")}
        # Longest first, so a secret that contains another is masked whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, MASK)
        return redact_patterns(text)
