"""The naming rules for hosts: RFC 1123 host names and the appliance's own single-label hostname.

Two programs enforce them and must agree: the shell, when it parses a ``<HOST>`` or ``<HOSTNAME>``
parameter (:mod:`appliance.shell.types`), and the privileged helper, which checks a hostname again as
root before applying it (:mod:`appliance.privileged.server`). Each rule raises :class:`ValueError`
with a short reason, which the caller turns into its own error.
"""

from __future__ import annotations

import re

# RFC 1123 label: letters, digits, hyphens; 1-63 characters; no hyphen at either end.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_hostname(text: str) -> str:
    """A DNS host name (RFC 1123): dot-separated labels, at most 253 characters, not numeric-only."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        raise ValueError("must be 1 to 253 characters")
    labels = name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError(
                "must be letters, digits and hyphens in dot-separated labels of 1-63 characters, "
                "not starting or ending with a hyphen"
            )
    if labels[-1].isdigit():
        # RFC 1123 2.1: a valid host name never has the dotted-decimal form; a bad IP lands here.
        raise ValueError("is neither a valid IP address nor a host name")
    return text


def check_single_label(text: str) -> str:
    """A single RFC 1123 label of 1-63 characters that is not all digits (an appliance hostname)."""
    if not _LABEL.match(text):
        raise ValueError(
            "must be 1-63 letters, digits or hyphens, not starting or ending with a hyphen (no dots)"
        )
    if text.isdigit():
        raise ValueError("must not be all digits")
    if text.lower() == "localhost":
        raise ValueError("must not be 'localhost'")
    return text
