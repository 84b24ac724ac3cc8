"""Waiting between ticks: for a NOTIFY on the HA channel, a local wake-up (a signal), or the deadline.

A handover, a release or a settings change is thereby acted on within milliseconds instead of at the
next tick, which is what makes a planned switchover take well under a second at any keepalive. The
listening connection is optional: if it cannot be had, the agent just sleeps until the deadline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.clock import Clock
from appliance.db.connect import connect
from appliance.db.errors import DbError
from appliance.ha.pgstore import channel_for, events_channel_for

if TYPE_CHECKING:
    import psycopg

    from appliance.db.target import DbTarget, Timeouts

logger = logging.getLogger("appliance.agent")

SLICE_S = 0.1  # how often a wait looks at the local wake-up event
RETRY_S = 1.0  # how often a lost listening connection is retried (a missed NOTIFY costs up to a tick)


class Listener:
    def __init__(self, target: DbTarget, schema: str, *, application_name: str, timeouts: Timeouts,
                 clock: Clock, followed: Callable[[], tuple[str, int] | None] = lambda: None,
                 on_event: Callable[[], None] | None = None) -> None:
        self.target, self.schema = target, schema
        self.application_name, self.timeouts, self.clock = application_name, timeouts, clock
        # The database node the HA store writes to (multi-host targets): notifications are sent there.
        self.followed = followed
        # Notifications on the events channel (new events, join codes, channels) are for the agent's
        # background work: handed to it without waking the HA loop.
        self.on_event = on_event
        self._conn: psycopg.Connection[Any] | None = None
        self._on: tuple[str, int] | None = None
        self._next_try = 0.0

    def wait(self, seconds: float, wake: threading.Event, changed: Callable[[], bool] = lambda: False) -> bool:
        """Wait up to ``seconds``; True if woken early (a notification, ``wake``, or ``changed()``)."""
        deadline = self.clock.monotonic() + seconds
        while True:
            if wake.is_set() or changed():
                return True
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                return False
            conn = self._connection()
            if conn is None:
                wake.wait(min(remaining, SLICE_S))
                continue
            try:
                for note in conn.notifies(timeout=min(remaining, SLICE_S), stop_after=1):
                    if note.channel == channel_for(self.schema) or self.on_event is None:
                        return True
                    self.on_event()
            except Exception as exc:  # psycopg.Error, or the connection closed under us
                logger.info("lost the notification channel (%s); will retry", type(exc).__name__)
                self.close()

    def retune(self, timeouts: Timeouts) -> None:
        """Use ``timeouts`` for the next connection (the keepalive interval changed)."""
        if timeouts != self.timeouts:
            self.timeouts = timeouts
            self.close()

    def _connection(self) -> psycopg.Connection[Any] | None:
        host = self.followed()
        if self._conn is not None and not self._conn.closed and (host is None or host == self._on):
            return self._conn
        if self._conn is not None:
            self.close()  # the store follows another database node now: listen there
            self._next_try = 0.0
        if self.clock.monotonic() < self._next_try:
            return None
        self._next_try = self.clock.monotonic() + RETRY_S
        from psycopg import sql  # heavy: importing this module must not load psycopg (see appliance.ha.pgstore)

        target = self.target if host is None else self.target.for_host(*host)
        try:
            conn = connect(target, application_name=self.application_name, timeouts=self.timeouts,
                           autocommit=True)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel_for(self.schema))))
            if self.on_event is not None:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(events_channel_for(self.schema))))
        except DbError as exc:
            logger.info("no notification channel (%s): falling back to plain waiting", exc.message)
            return None
        except Exception as exc:
            logger.info("no notification channel (%s): falling back to plain waiting", type(exc).__name__)
            return None
        self._conn, self._on = conn, host
        return conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection: nothing more to do
                pass
        self._conn = None
