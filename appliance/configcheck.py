"""The checks every configuration value goes through: each turns one raw TOML value into a typed one,
or raises ``ValueError`` with a short reason that :mod:`appliance.config` puts after the file and the key.

Kept apart from the section types and the loader because they are many and grow with every section;
they are pure and know nothing of the sections they are used in.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

Check = Callable[[Any], Any]


def int_range(lo: int, hi: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number from {lo} to {hi}")
        if not lo <= value <= hi:
            raise ValueError(f"must be from {lo} to {hi}, got {value}")
        return value

    return check


def choice(*allowed: str) -> Check:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
        return str(value)

    return check


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def name_list(pattern: str, what: str) -> Check:
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and re.fullmatch(pattern, v) for v in value):
            raise ValueError(f"must be a list of {what}")
        if len(set(value)) != len(value):
            raise ValueError("lists a name twice")
        return tuple(value)

    return check


def hardware_id(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"(?:[A-Za-z0-9][A-Za-z0-9_-]{0,63})?", value):
        raise ValueError("must be empty or 1-64 letters, digits, '-' or '_'")
    return value


def identifier(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):
        raise ValueError("must be 1-63 letters, digits or underscores, starting with a letter")
    return value


def prefix(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9_]{0,54}", value):
        raise ValueError("must be at most 54 lower-case letters, digits or underscores")
    return value


def db_host(value: Any) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in ", \x00"):
        raise ValueError("must be one host name, address or socket directory")
    return value


def unit(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9@._-]+\.service", value):
        raise ValueError("must be a systemd unit name (NAME.service)")
    return value


def listen(value: Any) -> str:
    text = string(value)
    if text:
        split_listen(text)
    return text


def split_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` as (host, port). :raises ValueError: not of that form."""

    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        number = int(port) if sep and port.isdigit() else -1
    except ValueError:
        number = -1
    if not 1 <= number <= 65535:
        raise ValueError('must be "ADDRESS:PORT" (an IP address, "[IPv6]:PORT" for IPv6), or empty')
    return host, number


def advertise(value: Any) -> str:
    text = string(value)
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if text and not (sep and port.isdigit() and 1 <= int(port) <= 65535
                     and re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", host) and not host.startswith("-")):
        raise ValueError('must be "HOST:PORT" (a name or address, "[IPv6]:PORT"), or empty')
    return text


def networks(value: Any) -> tuple[str, ...]:

    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of networks (\"10.0.0.0/8\", \"::1/128\")")
    try:
        return tuple(str(ipaddress.ip_network(v, strict=False)) for v in value)
    except ValueError as exc:
        raise ValueError(f"holds a bad network: {exc}") from None


def interface(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"(?:[A-Za-z0-9_.@-]{1,15})?", value) or value in (".", ".."):
        raise ValueError("must be empty or an interface name (1-15 letters, digits, '_', '.', '-' or '@')")
    return value


def seconds(lo: float, hi: float) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number of seconds from {lo:g} to {hi:g}")
        if not lo <= value <= hi:
            raise ValueError(f"must be from {lo:g} to {hi:g}, got {value:g}")
        return float(value)

    return check


def prompt(value: Any) -> str:
    text = string(value)
    try:
        text.format(hostname="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError("may only use the placeholder {hostname}") from exc
    return text


class PathCheck:
    """Resolves a path against the config file's directory; optionally allows "" (meaning: default)."""

    def __init__(self, base: Path, optional: bool = False, absolute: bool = False) -> None:
        self.base, self.optional, self.absolute = base, optional, absolute

    def __call__(self, value: Any) -> Path | None:
        text = string(value)
        if not text:
            if self.optional:
                return None
            raise ValueError("must not be empty")
        path = Path(text)
        if self.absolute and not path.is_absolute():
            raise ValueError("must be an absolute path")
        return path if path.is_absolute() else (self.base / path)


