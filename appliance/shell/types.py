"""Typed parameter values: each type turns one word of user text into a checked Python value.

A type's ``parse`` raises :class:`ValueError` with a short reason ("must be from 1 to 100"); the parser
wraps it into a :class:`~appliance.errors.UsageError` naming the parameter. Values that a wrapped
program could read as an option (a leading ``-``) are refused by every address and name type, so no
value can ever become an option of ``ping`` or any other tool.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance.names import check_hostname, check_node_name, check_single_label, check_zone_id

if TYPE_CHECKING:
    from appliance.config import Config


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
        """The fixed values offered by Tab completion (only enums have any)."""
        return ()

    def suggestions(self, config: Config | None) -> Sequence[str]:
        """Values offered by Tab completion and ``?``: the fixed choices, or values known only at run time
        (asked only when Tab or ``?`` is pressed, never at start-up; ``config`` None: none of those)."""
        return self.choices()

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
        address = _ip_address(text)
        if address is None:
            raise ValueError("must be an IPv4 or IPv6 address")
        return address


def _ip_address(text: str) -> str | None:
    """``text`` as a normalised IP address, or None if it is not one.

    :raises ValueError: an IPv6 address whose zone id (``%eth0``) is not an interface name.
    """
    import ipaddress

    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        check_zone_id(address.scope_id)
    return str(address)


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
class NodeName(ParamType):
    """The name of a node of the cluster (a host name). ``known`` lists the names this node last saw,
    from a local file (no database round trip: Tab must answer at once, whatever the database does)."""

    metavar: str = "<NODE>"
    known: Callable[[Config], Sequence[str]] | None = None

    def parse(self, text: str) -> str:
        return check_node_name(text)

    def suggestions(self, config: Config | None) -> Sequence[str]:
        if config is None or self.known is None:
            return ()
        try:
            return self.known(config)
        except Exception:  # Tab must never break the prompt, whatever the file holds
            return ()


@dataclass(frozen=True)
class Host(ParamType):
    """An IPv4/IPv6 address or a DNS host name."""

    metavar: str = "<HOST>"

    def parse(self, text: str) -> str:
        address = _ip_address(text)
        if address is not None:
            return address
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
class CaFile(ParamType):
    """A CA certificate file, as an absolute path, or ``system`` (the operating system's trusted CAs)."""

    metavar: str = "<PATH|system>"
    max_len: int = 1024

    def parse(self, text: str) -> str:
        if text == "system":
            return text
        if not text.startswith("/") or len(text) > self.max_len or any(c in text for c in ", "):
            raise ValueError(f"must be an absolute path (at most {self.max_len} characters, no spaces or commas) "
                             "or 'system'")
        return text


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


# --- the administration commands (network, time, logs, backup) -----------------------------------
# Plain classes with class-level settings, not dataclasses: every shell start defines them, and a
# dataclass costs a code generation each (start-up is measured, bench/shell_startup.py).

# A Linux interface name: at most 15 bytes (IFNAMSIZ - 1), no '/', no blank, never read as an option.
_IFNAME = r"[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,14}"


class Interface(ParamType):
    """A network interface name; Tab offers the interfaces this node has now."""

    metavar = "<IF>"

    def parse(self, text: str) -> str:
        if not re.fullmatch(_IFNAME, text) or text in (".", ".."):
            raise ValueError("must be an interface name (1-15 letters, digits, '_', '.', ':', '@' or '-')")
        return text

    def choices(self) -> Sequence[str]:
        import socket

        try:
            return sorted(name for _index, name in socket.if_nameindex() if name != "lo")
        except OSError:
            return ()


class AddressPrefix(ParamType):
    """A unicast host address with its prefix length (``192.0.2.10/24``, ``2001:db8::5/64``)."""

    metavar = "<ADDR/PREFIX>"

    def parse(self, text: str) -> str:
        from appliance.net.addresses import parse_host_address  # ipaddress: only when an address is typed

        return str(parse_host_address(text))


class IpList(ParamType):
    """One IP address or a comma-separated list of them (at most three), no duplicates."""

    metavar = "<IP[,IP...]>"
    max_items = 3

    def parse(self, text: str) -> tuple[str, ...]:
        items = [IpAddress().parse(item.strip()) for item in text.split(",")]
        if len(items) > self.max_items:
            raise ValueError(f"may list at most {self.max_items} addresses")
        if len(set(items)) != len(items):
            raise ValueError("lists an address twice")
        return tuple(items)


class TimeZone(ParamType):
    """A zone of the tz database (``Europe/Paris``, ``UTC``); Tab completes them."""

    metavar = "<ZONE>"

    def parse(self, text: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}", text) or len(text) > 64:
            raise ValueError("must be a time zone of the tz database, for example Europe/Paris or UTC")
        if text not in self.choices():
            raise ValueError("is not a time zone of the tz database (Tab lists them)")
        return text

    def choices(self) -> Sequence[str]:
        import zoneinfo  # only when a zone is typed or completed

        return sorted(z for z in zoneinfo.available_timezones() if not z.startswith(("posix/", "right/")))


class DateTime(ParamType):
    """A local date and time, ``YYYY-MM-DD HH:MM:SS`` (one word: quote it)."""

    metavar = '"<YYYY-MM-DD HH:MM:SS>"'

    def parse(self, text: str) -> str:
        from datetime import datetime

        if not re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", text):
            raise ValueError('must be "YYYY-MM-DD HH:MM:SS" (quoted: it is one value)')
        try:
            when = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise ValueError("is not a valid date and time") from None
        if not 2000 <= when.year <= 2099:
            raise ValueError("must be a year from 2000 to 2099")
        return text


_DURATION = r"([0-9]{1,6})([smhd])"
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(ParamType):
    """A length of time: a whole number and a unit, ``30s``, ``15m``, ``2h``, ``7d``; the value is seconds."""

    metavar = "<DURATION>"
    max_s = 366 * 86400

    def parse(self, text: str) -> int:
        match = re.fullmatch(_DURATION, text)
        if not match:
            raise ValueError("must be a number and a unit: s, m, h or d (30s, 15m, 2h, 7d)")
        seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
        if not 1 <= seconds <= self.max_s:
            raise ValueError(f"must be from 1s to {self.max_s // 86400}d")
        return seconds


class SearchWord(ParamType):
    """Plain text to look for (no pattern syntax: matched as written, ignoring case)."""

    metavar = "<WORD>"
    max_len = 64

    def parse(self, text: str) -> str:
        if not text or len(text) > self.max_len or not text.isprintable():
            raise ValueError(f"must be 1-{self.max_len} printable characters")
        return text


class StandardStream(ParamType):
    """Only ``-``: standard output (or input), for scripts over SSH."""

    metavar = "-"

    def parse(self, text: str) -> str:
        if text != "-":
            raise ValueError("must be - (standard output or input); files are kept under the state dir")
        return text


class BackupSource(ParamType):
    """``-`` (standard input) or the name of a backup file kept under the state dir."""

    metavar = "<-|FILE>"

    def parse(self, text: str) -> str:
        if text == "-" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.dump", text):
            return text
        raise ValueError("must be - (standard input) or the name of a backup listed under the state dir (NAME.dump)")
