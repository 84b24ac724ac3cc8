"""The naming rules for hosts: RFC 1123 host names, the appliance's own single-label hostname, node
names and IPv6 zone ids.

Two programs enforce them and must agree: the shell, when it parses a ``<HOST>``, ``<HOSTNAME>`` or
``<NODE>`` parameter (:mod:`appliance.shell.types`), and the privileged helper, which checks a hostname
again as root before applying it (:mod:`appliance.privileged.server`). Each rule raises
:class:`ValueError` with a short reason, which the caller turns into its own error.

A node's name in the cluster registry is its hostname: the database refuses any other (a CHECK in
schema v4, the same rule as :func:`check_node_name`), and :func:`node_name_from_db` checks a name
again when it is read, so a row written by an older product or by hand can never carry a control
character or a newline into a table, a message or a log.
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


def check_node_name(text: str) -> str:
    """A node's name: an RFC 1123 host name without a trailing dot (what a node registers as). The
    database's CHECK nodes_name_is_a_host_name (``appliance/schema/005_node_names.sql``) is this rule."""
    if text.endswith("."):
        raise ValueError("must not end with a dot")
    return check_hostname(text)


def node_name_from_db(name: object, node_id: str) -> str:
    """A node name as read from the registry, checked again: a name breaking the rule is shown as a
    placeholder naming the node's id, never as it is (it may hold a control character or a newline)."""
    if isinstance(name, str):
        try:
            return check_node_name(name)
        except ValueError:
            pass
    return f"(invalid name, node {node_id[:8]})"


# A zone id (``fe80::1%eth0``) names an interface: interface-name characters only, and never a leading
# "-" (it would reach a tool's argv). Linux interface names are at most 15 characters; a numeric index
# is allowed too.
_ZONE_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@-]{0,14}")


def check_zone_id(zone: str) -> str:
    """An IPv6 zone id: 1-15 letters, digits, ``_``, ``.``, ``-`` or ``@``, not starting with ``-``."""
    if not _ZONE_RE.fullmatch(zone) or zone in (".", ".."):
        raise ValueError("has an invalid zone id after '%': use an interface name (letters, digits, '_', '.', "
                         "'-'; at most 15; not starting with '-')")
    return zone
