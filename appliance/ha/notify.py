"""Notification channels: what each one is configured with, what is sent, how it is signed and retried.

Pure (no I/O): the sending is :mod:`appliance.ha.deliver`, the agent's delivery loop
:mod:`appliance.ha.notifier`. The cluster has at most one ``webhook`` and one ``email`` channel, kept as
cluster settings (``notify_webhook``, ``notify_email``: JSON, targets only); their secrets (the
webhook's signing secret, the SMTP password) are sealed in the database (:mod:`appliance.ha.sealed`)
and never part of a setting, an event or a message.

* **webhook**: an HTTP POST of the event as JSON (``Content-Type: application/json``) with the headers
  ``X-Appliance-Event`` (the kind), ``X-Appliance-Delivery`` (the event id: a receiver that must not act
  twice drops a second copy by it) and, when a secret is set, ``X-Appliance-Signature: sha256=<hex>``,
  the HMAC-SHA256 of the raw body under the secret (the body's ``time`` lets a receiver refuse replays).
  ``https://`` is verified against the system's CAs; plain ``http://`` only to a loopback address.
* **email**: one message per event to every recipient, over SMTP (``--starttls``: STARTTLS, verified;
  port 465: TLS from the start), authenticated when a user is set.

A failed delivery is retried after 1, 2, 4 ... 60 s (:func:`retry_in_s`) until
:data:`DELIVERY_DEADLINE_S` after the event, then given up (logged, and shown by ``ha get events``).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DELIVERY_DEADLINE_S = 900.0  # retries of one notification end this long after the event
RETRY_MAX_S = 60.0
SEND_TIMEOUT_S = 10.0  # one attempt (connect, send, answer) on one channel
CLAIM_S = 3 * SEND_TIMEOUT_S  # a claim outlives any attempt by its claimant


class Channel(enum.StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


SECRET_NAMES = {Channel.WEBHOOK: "notify_webhook_secret", Channel.EMAIL: "notify_smtp_password"}


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    signed: bool = False  # a signing secret is set (sealed in the database)

    def target(self) -> str:
        return self.url + (" (signed)" if self.signed else "")


@dataclass(frozen=True)
class EmailConfig:
    to: tuple[str, ...]
    smtp_host: str
    smtp_port: int = 25
    starttls: bool = False
    sender: str = ""
    user: str | None = None  # authenticated with the sealed SMTP password

    def target(self) -> str:
        how = " STARTTLS" if self.starttls else (" TLS" if self.smtp_port == 465 else "")
        auth = f" as {self.user}" if self.user else ""
        return f"{', '.join(self.to)} via {_hostport(self.smtp_host, self.smtp_port)}{how}{auth}"


@dataclass(frozen=True)
class Channels:
    """The cluster's channels as the store has them (secrets still sealed)."""

    webhook: WebhookConfig | None = None
    email: EmailConfig | None = None
    sealed: tuple[tuple[str, bytes], ...] = ()  # (secret name, sealed value)

    def sealed_secret(self, name: str) -> bytes | None:
        return next((value for key, value in self.sealed if key == name), None)

    def configured(self) -> list[Channel]:
        return [c for c, conf in ((Channel.WEBHOOK, self.webhook), (Channel.EMAIL, self.email)) if conf is not None]


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(text: str) -> str:
    """A webhook URL: ``https://`` anywhere, ``http://`` to a loopback address only; no user info.

    :raises ValueError: with the reason.
    """
    if len(text) > 2000 or any(c.isspace() for c in text):
        raise ValueError("must be a URL without spaces (at most 2000 characters)")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s):// URL with a host")
    if parts.username or parts.password:
        raise ValueError("must not carry a user or password (use --secret to sign the requests)")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    try:
        parts.port  # noqa: B018 (a bad port raises)
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("may use plain http:// only towards a loopback address (127.0.0.1, ::1); use https://")
    return text


_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def check_address(text: str) -> str:
    if not _ADDRESS.fullmatch(text) or len(text) > 254:
        raise ValueError(f"{text[:60]!r} is not an e-mail address (name@domain)")
    return text


def check_addresses(text: str) -> tuple[str, ...]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or len(items) > 20:
        raise ValueError("must list 1-20 e-mail addresses, separated by commas")
    return tuple(check_address(t) for t in items)


def check_smtp(text: str) -> tuple[str, int]:
    """``HOST`` or ``HOST:PORT`` (``[V6]:PORT``); port 25 by default."""
    host, port = text, 25
    if text.startswith("["):
        inner, _, rest = text[1:].partition("]")
        host = inner
        if rest:
            if not rest.startswith(":"):
                raise ValueError("must be HOST[:PORT] ([IPv6]:PORT)")
            port = _port(rest[1:])
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        port = _port(number)
    if not host or not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", host) or host.startswith("-"):
        raise ValueError("must be HOST[:PORT] with a host name or address")
    return host, port


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("has a port that is not 1-65535")
    return int(text)


# --- the settings' JSON ------------------------------------------------------------------------------


def webhook_to_json(conf: WebhookConfig) -> str:
    return json.dumps({"url": conf.url, "signed": conf.signed}, sort_keys=True)


def webhook_from_json(text: str) -> WebhookConfig:
    """:raises ValueError: not a valid webhook setting."""
    doc = _object(text)
    return WebhookConfig(check_url(str(doc.get("url", ""))), bool(doc.get("signed", False)))


def email_to_json(conf: EmailConfig) -> str:
    return json.dumps({"to": list(conf.to), "smtp_host": conf.smtp_host, "smtp_port": conf.smtp_port,
                       "starttls": conf.starttls, "from": conf.sender, "user": conf.user}, sort_keys=True)


def email_from_json(text: str) -> EmailConfig:
    """:raises ValueError: not a valid e-mail setting."""
    doc = _object(text)
    host = str(doc.get("smtp_host", ""))
    if not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", host) or host.startswith("-"):
        raise ValueError("has no valid SMTP host")
    port = _port(str(doc.get("smtp_port", 25)))
    to = doc.get("to")
    if not isinstance(to, list) or not to:
        raise ValueError("has no recipients")
    user = doc.get("user")
    return EmailConfig(tuple(check_address(str(a)) for a in to), host, port, bool(doc.get("starttls", False)),
                       check_address(str(doc["from"])) if doc.get("from") else "",
                       str(user) if user else None)


def _object(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        raise ValueError("is not a JSON object") from None
    if not isinstance(doc, dict):
        raise ValueError("is not a JSON object")
    return doc


# --- what is sent --------------------------------------------------------------------------------------


def body(event_doc: dict[str, Any], cluster_id: str | None, *, test: bool = False) -> bytes:
    """The webhook body (also attached to the e-mail): the event's JSON, its cluster, and whether it is
    a test (``ha test notify``)."""
    doc = dict(event_doc, cluster_id=cluster_id)
    if test:
        doc["test"] = True
    return json.dumps(doc, sort_keys=True, default=str).encode()


def signature(secret: str, raw: bytes) -> str:
    """The ``X-Appliance-Signature`` header value: HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def retry_in_s(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: 1, 2, 4 ... at most 60."""
    return float(min(RETRY_MAX_S, 2 ** max(0, attempts - 1)))
