"""Typed parameter values: each type turns one word of user text into a checked Python value.

A type's ``parse`` raises :class:`ValueError` with a short reason ("must be from 1 to 100"); the parser
wraps it into a :class:`~appliance.errors.UsageError` naming the parameter. Values that a wrapped
program could read as an option (a leading ``-``) are refused by every address and name type, so no
value can ever become an option of ``ping`` or any other tool.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from appliance.names import check_hostname, check_single_label


class ParamType:
    """Base of parameter types. ``metavar`` is how help shows the value (``<HOST>``)."""

    metavar = "<VALUE>"
    secret = False
    # Values offered by Tab completion that only the running node knows (e.g. "node": the cluster's node
    # names); the completer looks the name up in what its session provides.
    completion: str | None = None

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def choices(self) -> Sequence[str]:
        """Values offered by Tab completion (only enums have any)."""
        return ()

    def describe(self) -> str:
        """One line for the golden command table and help."""
        return self.metavar


@dataclass(frozen=True)
class Text(ParamType):
    """Free text of bounded length, printable characters only (control characters never get here)."""

    metavar: str = "<TEXT>"
    max_len: int = 255

    def parse(self, text: str) -> str:
        if not text:
            raise ValueError("must not be empty")
        if len(text) > self.max_len:
            raise ValueError(f"must be at most {self.max_len} characters")
        return text


@dataclass(frozen=True)
class Secret(Text):
    """A secret value (password): text that is masked in history, audit and logs, and never echoed."""

    metavar: str = "<SECRET>"
    secret: bool = True
    max_len: int = 1024


@dataclass(frozen=True)
class Integer(ParamType):
    lo: int
    hi: int
    metavar: str = "<N>"

    def parse(self, text: str) -> int:
        if not re.fullmatch(r"[0-9]{1,10}", text):
            raise ValueError(f"must be a whole number from {self.lo} to {self.hi}")
        value = int(text)
        if not self.lo <= value <= self.hi:
            raise ValueError(f"must be from {self.lo} to {self.hi}, got {value}")
        return value

    def describe(self) -> str:
        return f"{self.metavar} ({self.lo}-{self.hi})"


PORT = Integer(1, 65535, metavar="<PORT>")


@dataclass(frozen=True)
class Choice(ParamType):
    values: tuple[str, ...]

    @property
    def metavar(self) -> str:  # type: ignore[override]
        return "{" + "|".join(self.values) + "}"

    def parse(self, text: str) -> str:
        if text not in self.values:
            raise ValueError(f"must be one of: {', '.join(self.values)}")
        return text

    def choices(self) -> Sequence[str]:
        return self.values


@dataclass(frozen=True)
class IpAddress(ParamType):
    metavar: str = "<IP>"

    def parse(self, text: str) -> str:
        import ipaddress

        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise ValueError("must be an IPv4 or IPv6 address") from None


@dataclass(frozen=True)
class VipAddress(ParamType):
    """A virtual IP with its prefix length (:func:`appliance.net.addresses.parse_vip`), normalised."""

    metavar: str = "<ADDRESS/PREFIX>"

    def parse(self, text: str) -> str:
        from appliance.net.addresses import parse_vip  # ipaddress: only when a VIP is typed

        return str(parse_vip(text))


@dataclass(frozen=True)
class HostName(ParamType):
    """A single-label hostname for this node."""

    metavar: str = "<HOSTNAME>"

    def parse(self, text: str) -> str:
        return check_single_label(text)


@dataclass(frozen=True)
class Host(ParamType):
    """An IPv4/IPv6 address or a DNS host name."""

    metavar: str = "<HOST>"

    def parse(self, text: str) -> str:
        import ipaddress

        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            pass
        if text.startswith("[") and text.endswith("]"):
            raise ValueError("is in brackets: write an IPv6 address without them (the port is a separate option)")
        return check_hostname(text)


@dataclass(frozen=True)
class HostList(ParamType):
    """One host or a comma-separated list of hosts (a primary/standby DB pair), no duplicates."""

    metavar: str = "<HOST[,HOST...]>"
    max_items: int = 8

    def parse(self, text: str) -> tuple[str, ...]:
        items = text.split(",")
        if len(items) > self.max_items:
            raise ValueError(f"may list at most {self.max_items} hosts")
        # The same host may appear twice with different ports (a primary and a standby on one machine);
        # duplicate host:port pairs are refused where the ports are known.
        return tuple(Host().parse(item.strip()) for item in items)


@dataclass(frozen=True)
class PortList(ParamType):
    """One port or a comma-separated list of ports."""

    metavar: str = "<PORT[,PORT...]>"
    max_items: int = 8

    def parse(self, text: str) -> tuple[int, ...]:
        items = text.split(",")
        if len(items) > self.max_items:
            raise ValueError(f"may list at most {self.max_items} ports")
        return tuple(PORT.parse(item.strip()) for item in items)


@dataclass(frozen=True)
class Identifier(ParamType):
    """A safe identifier (database name, prefix): letters, digits, underscore; starts with a letter."""

    metavar: str = "<NAME>"
    max_len: int = 63

    def parse(self, text: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) or len(text) > self.max_len:
            raise ValueError(
                f"must be 1-{self.max_len} letters, digits or underscores, starting with a letter"
            )
        return text


@dataclass(frozen=True)
class SchemaPrefix(ParamType):
    """A prefix for the appliance's schema name: lower-case letters, digits, underscores."""

    metavar: str = "<PREFIX>"

    def parse(self, text: str) -> str:
        if not re.fullmatch(r"[a-z0-9_]{1,54}", text):
            raise ValueError("must be 1-54 lower-case letters, digits or underscores")
        return text
