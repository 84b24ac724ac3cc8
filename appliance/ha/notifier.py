"""The agent's notification delivery: claim what this node should send, send it off the HA loop, record it.

Runs on the agent's background thread (:mod:`appliance.ha.background`); each attempt runs on one of a few
worker threads, so a receiver that hangs costs a worker for :data:`~appliance.ha.notify.SEND_TIMEOUT_S`
at most and never the HA loop nor the other channel. Who sends: the node that wrote the event (its
deliveries are claimed for it when the event is recorded); another node takes a delivery over only once
that node is not online any more (heartbeat older than the liveness window, 2·I) or its claim expired,
so a failover during delivery neither loses nor doubles it (:meth:`~appliance.ha.store.HaStore.
claim_deliveries`). A failed attempt is retried with backoff (:func:`~appliance.ha.notify.retry_in_s`),
by whichever node claims it next, until the delivery deadline.

A channel whose secret this node cannot open (sealed under another database credential) is left to
the nodes that can.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from appliance.errors import ApplianceError
from appliance.ha.deliver import DeliveryError, post_webhook, send_email
from appliance.ha.model import Delivery
from appliance.ha.notify import CLAIM_S, SECRET_NAMES, Channel, Channels, EmailConfig, WebhookConfig, body, retry_in_s
from appliance.ha.sealed import SealError, unseal
from appliance.ha.store import HaStore

logger = logging.getLogger("appliance.agent")

WORKERS = 4


@dataclass(frozen=True)
class Usable:
    """A channel this node can send on now, its secret opened."""

    webhook: tuple[WebhookConfig, str | None] | None = None
    email: tuple[EmailConfig, str | None] | None = None

    def names(self) -> list[str]:
        return [c.value for c, v in ((Channel.WEBHOOK, self.webhook), (Channel.EMAIL, self.email)) if v]


def usable_channels(channels: Channels, key: Callable[[], bytes]) -> tuple[Usable, list[str]]:
    """The channels this node can send on, and why any other cannot be (one line each)."""
    problems: list[str] = []

    def secret(channel: Channel, needed: bool) -> tuple[bool, str | None]:
        if not needed:
            return True, None
        name = SECRET_NAMES[channel]
        sealed = channels.sealed_secret(name)
        if sealed is None:
            problems.append(f"{channel.value}: its secret is missing")
            return False, None
        try:
            return True, unseal(key(), name, sealed)
        except (SealError, ApplianceError) as exc:
            problems.append(f"{channel.value}: {exc.message}")
            return False, None

    webhook = email = None
    if channels.webhook is not None:
        ok, value = secret(Channel.WEBHOOK, channels.webhook.signed)
        webhook = (channels.webhook, value) if ok else None
    if channels.email is not None:
        ok, value = secret(Channel.EMAIL, channels.email.user is not None)
        email = (channels.email, value) if ok else None
    return Usable(webhook, email), problems


def send(delivery_channel: str, usable: Usable, event: dict[str, object], cluster_id: str | None, *,
         test: bool = False, hostname: str = "appliance") -> None:
    """One attempt on one channel. :raises DeliveryError: it failed (the message says why)."""
    raw = body(dict(event), cluster_id, test=test)
    if delivery_channel == Channel.WEBHOOK and usable.webhook is not None:
        post_webhook(usable.webhook[0], usable.webhook[1], raw, dict(event))
    elif delivery_channel == Channel.EMAIL and usable.email is not None:
        send_email(usable.email[0], usable.email[1], raw, dict(event), hostname=hostname)
    else:
        raise DeliveryError(f"the {delivery_channel} channel is not usable on this node")


class Notifier:
    """One node's sender. :meth:`step` claims and dispatches; the caller waits ``step()`` seconds at most."""

    def __init__(self, store: HaStore, node_id: str, *, key: Callable[[], bytes], liveness_s: Callable[[], float],
                 cluster_id: Callable[[], str | None], wake: Callable[[], None], hostname: str = "appliance") -> None:
        self.store, self.node_id = store, node_id
        self.key, self.liveness_s, self.cluster_id, self.wake = key, liveness_s, cluster_id, wake
        self.hostname = hostname
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="notify")
        self._busy: set[tuple[int, str]] = set()
        self._lock = threading.Lock()
        self._reported: tuple[str, ...] = ()

    def step(self) -> float | None:
        """Claim the due deliveries this node may send and start them; seconds until another may be due.

        :raises StoreUnavailable: the database cannot be asked now (the caller retries later).
        """
        channels = self.store.notify_channels()
        if not channels.configured():
            return None
        usable, problems = usable_channels(channels, self.key)
        if tuple(problems) != self._reported:
            for line in problems:
                logger.warning("notifications: this node cannot send on %s; other nodes will", line)
            self._reported = tuple(problems)
        names = usable.names()
        if not names:
            return None
        with self._lock:
            busy = list(self._busy)
        claimed = self.store.claim_deliveries(self.node_id, names, liveness_s=self.liveness_s(), claim_s=CLAIM_S,
                                              limit=WORKERS, busy=busy)
        for delivery in claimed.deliveries:
            with self._lock:
                self._busy.add((delivery.event_seq, delivery.channel))
            self._pool.submit(self._attempt, delivery, usable)
        return claimed.next_due_s

    def _attempt(self, delivery: Delivery, usable: Usable) -> None:
        error: str | None = None
        try:
            send(delivery.channel, usable, delivery.event, self.cluster_id(), hostname=self.hostname)
        except DeliveryError as exc:
            error = exc.message
        except Exception as exc:  # a bug must not kill the worker or lose the delivery: retried
            logger.exception("notifications: unexpected error sending on %s", delivery.channel)
            error = f"internal error ({type(exc).__name__})"
        try:
            if error is None:
                self.store.finish_delivery(delivery.event_seq, delivery.channel, self.node_id, delivered=True)
                logger.info("notified %s of %s event %s", delivery.channel, delivery.event.get("kind"),
                            delivery.event.get("id"))
            else:
                retry = retry_in_s(delivery.attempts + 1)
                last = retry >= delivery.deadline_in_s
                self.store.finish_delivery(delivery.event_seq, delivery.channel, self.node_id, delivered=False,
                                           error=error[:500], retry_in_s=None if last else retry)
                logger.warning("notification of %s event %s failed (attempt %d): %s; %s",
                               delivery.event.get("kind"), delivery.event.get("id"), delivery.attempts + 1, error,
                               "giving up" if last else f"retrying in {retry:g} s")
        except ApplianceError as exc:
            # The claim stays until it expires; then this node or another one tries again.
            logger.warning("cannot record the outcome of a notification: %s", exc.message)
        finally:
            with self._lock:
                self._busy.discard((delivery.event_seq, delivery.channel))
            self.wake()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
