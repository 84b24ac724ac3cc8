"""Notification channels from the shell: set, unset, show, and send a test now (``ha test notify``).

A channel's target goes into a cluster setting; its secret is sealed (:mod:`appliance.ha.sealed`) with
this node's key, read through the credential backend, before it leaves this process: the database, the
event and the audit trail only ever see the sealed form or nothing. Every change is a ``setting`` event
naming the target, never the secret.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from appliance.clock import Clock
from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.ha.deliver import DeliveryError
from appliance.ha.events import EventKind, NewEvent
from appliance.ha.notifier import send, usable_channels
from appliance.ha.notify import (
    SECRET_NAMES,
    Channel,
    Channels,
    EmailConfig,
    WebhookConfig,
    email_to_json,
    webhook_to_json,
)
from appliance.ha.sealed import key_for, seal
from appliance.ha.session import cluster_store


def _event(me_name: str, me_id: str, key: str, old: str | None, new: str | None) -> NewEvent:
    return NewEvent(EventKind.SETTING, me_name, me_id, {"key": key, "old": old, "new": new})


def set_webhook(config: Config, url: str, secret: str | None) -> WebhookConfig | None:
    """Set the webhook (signed when ``secret``); return the one it replaced."""
    conf = WebhookConfig(url, signed=secret is not None)
    name = SECRET_NAMES[Channel.WEBHOOK]
    sealed = seal(key_for(config), name, secret) if secret is not None else None
    with cluster_store(config) as (store, _active, me):
        old = store.notify_channels().webhook
        store.set_notify_channel(Channel.WEBHOOK, webhook_to_json(conf), {name: sealed},
                                 event=_event(me.name, me.node_id, "notify_webhook", old.target() if old else None,
                                              conf.target()))
    return old


def set_email(config: Config, conf: EmailConfig, password: str | None) -> EmailConfig | None:
    """Set the e-mail channel (SMTP login with ``password`` when ``conf.user``); return the one it replaced."""
    name = SECRET_NAMES[Channel.EMAIL]
    sealed = seal(key_for(config), name, password) if password is not None else None
    with cluster_store(config) as (store, _active, me):
        old = store.notify_channels().email
        store.set_notify_channel(Channel.EMAIL, email_to_json(conf), {name: sealed},
                                 event=_event(me.name, me.node_id, "notify_email", old.target() if old else None,
                                              conf.target()))
    return old


def unset(config: Config, channel: Channel) -> bool:
    """Remove a channel and its secret; False: it was not set."""
    with cluster_store(config) as (store, _active, me):
        channels = store.notify_channels()
        old = channels.webhook if channel is Channel.WEBHOOK else channels.email
        if old is None:
            return False
        store.set_notify_channel(channel, None, {SECRET_NAMES[channel]: None},
                                 event=_event(me.name, me.node_id, f"notify_{channel.value}", old.target(), None))
    return True


def channels(config: Config) -> Channels:
    with cluster_store(config) as (store, _active, _me):
        return store.notify_channels()


@dataclass(frozen=True)
class TestResult:
    channel: str
    target: str
    ok: bool
    message: str


def test(config: Config, clock: Clock) -> list[TestResult]:
    """Send a test notification on every configured channel now; one result per channel."""
    with cluster_store(config) as (store, active, me):
        found = store.notify_channels()
        epoch = store.snapshot().lease.epoch
    usable, problems = usable_channels(found, lambda: key_for(config))
    event: dict[str, Any] = {"id": str(uuid.uuid4()), "time": clock.now().isoformat(), "node": me.name,
                             "kind": "test", "epoch": epoch, "details": {"why": "ha test notify"}, "duration_s": None,
                             "summary": "a test notification (ha test notify)"}
    results = []
    for channel, conf in ((Channel.WEBHOOK, found.webhook), (Channel.EMAIL, found.email)):
        if conf is None:
            continue
        if channel.value not in usable.names():
            why = next((p for p in problems if p.startswith(channel.value)), f"{channel.value}: not usable")
            results.append(TestResult(channel.value, conf.target(), False, why.split(": ", 1)[-1]))
            continue
        try:
            send(channel.value, usable, event, active.cluster_id, test=True, hostname=me.name)
            results.append(TestResult(channel.value, conf.target(), True, "delivered"))
        except (DeliveryError, ApplianceError) as exc:
            results.append(TestResult(channel.value, conf.target(), False, exc.message))
    return results
