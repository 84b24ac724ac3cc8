"""The PostgreSQL store's events and notifications: the history, the deliveries and the channels.

A part of :class:`~appliance.ha.pgstore.PgStore`, split off along the store's seams (see
:mod:`appliance.ha.pgbase`): these tables are written by the agents' background work and by the shell,
never by the HA loop's ticks. The contract is :class:`~appliance.ha.store.HaStore`'s; the SQL is in
:mod:`appliance.ha.pgsql`.

* An event is one INSERT that does nothing when its id is recorded already (a retried write) or when
  its dedup key was recorded within the window; reports of one key are serialised on a transaction
  advisory lock, so two nodes reporting the same database failover at once still record it once.
* A delivery is claimed with ``FOR UPDATE SKIP LOCKED``: two nodes claiming at the same instant never
  take the same row, and a claim by a node that is not online any more is taken over.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from appliance.ha import pgsql as Q
from appliance.ha.events import DEDUP_WINDOW_S, MAX_AGE_S, MAX_EVENTS, Event, NewEvent
from appliance.ha.model import Claimed, Delivery
from appliance.ha.notify import CLAIM_S, DELIVERY_DEADLINE_S, Channels, email_from_json, webhook_from_json
from appliance.ha.pgbase import PgBase, as_uuid
from appliance.ha.settings import Setting

if TYPE_CHECKING:
    import psycopg


class PgEvents(PgBase):
    """Event and notification methods of :class:`~appliance.ha.pgstore.PgStore`."""

    def record_events(self, events: Sequence[NewEvent], *, deliver_by: str | None) -> list[str]:
        if not events:
            return []

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> list[str]:
            with conn.transaction():
                return self._record(conn, events, deliver_by)

        return self._run("record the events", body)

    def _record(self, conn: psycopg.Connection[tuple[Any, ...]], events: Sequence[NewEvent],
                deliver_by: str | None) -> list[str]:
        channels = [str(r[0]) for r in conn.execute(self._q(Q.CONFIGURED_CHANNELS)).fetchall()]
        done: list[str] = []
        for new in events:
            if new.dedup_key is not None:
                conn.execute(self._q(Q.LOCK_DEDUP), (f"{self._schema}/{new.dedup_key}",))
            row = conn.execute(self._q(Q.RECORD_EVENT), {
                "id": new.id, "wall": new.wall_time, "age": max(0.0, float(new.age_s)),
                "node_id": as_uuid(new.node_id), "node": new.node, "kind": new.kind.value, "epoch": new.epoch,
                "details": json.dumps(dict(new.details), default=str), "duration": new.duration_s,
                "dedup": new.dedup_key, "window": DEDUP_WINDOW_S,
            }).fetchone()
            if row is None:
                continue
            for channel in channels:
                conn.execute(self._q(Q.NEW_DELIVERY), {"seq": row[0], "channel": channel,
                                                       "deadline": DELIVERY_DEADLINE_S,
                                                       "by": as_uuid(deliver_by), "claim": CLAIM_S})
            done.append(new.id)
        if done:
            conn.execute(self._q(Q.PRUNE_EVENTS), (MAX_AGE_S, MAX_EVENTS))
            self._notify_events(conn)
        return done

    def events(self, *, since_s: float | None = None, limit: int = 50, kind: str | None = None) -> list[Event]:
        params = {"kind": kind, "since": since_s, "limit": max(0, limit)}
        rows = self._run("read the events", lambda conn: conn.execute(self._q(Q.LIST_EVENTS), params).fetchall())
        return [Event(str(r[0]), int(r[1]), _time(r[2]), str(r[3]), str(r[4]), None if r[5] is None else int(r[5]),
                      dict(r[6] or {}), None if r[7] is None else float(r[7]), dict(r[8] or {}))
                for r in reversed(rows)]

    def claim_deliveries(self, node_id: str, channels: Sequence[str], *, liveness_s: float, claim_s: float,
                         limit: int = 8, busy: Sequence[tuple[int, str]] = ()) -> Claimed:
        me = as_uuid(node_id)
        params: dict[str, Any] = {"me": me, "channels": list(channels), "liveness": float(liveness_s),
                                  "claim": float(claim_s), "limit": limit, "busy": [f"{seq}:{ch}" for seq, ch in busy]}

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> Claimed:
            with conn.transaction():
                conn.execute(self._q(Q.GIVE_UP_OVERDUE))
                rows = conn.execute(self._q(Q.CLAIM_DELIVERIES), params).fetchall() if me is not None else []
                taken = [f"{r[0]}:{r[1]}" for r in rows]
                left = conn.execute(self._q(Q.NEXT_DUE), dict(params, busy=[*params["busy"], *taken])).fetchone()
            found = tuple(Delivery(int(r[0]), str(r[1]), int(r[2]), Event(
                str(r[3]), int(r[0]), _time(r[4]), str(r[5]), str(r[6]), None if r[7] is None else int(r[7]),
                dict(r[8] or {}), None if r[9] is None else float(r[9])).document(), float(r[10])) for r in rows)
            return Claimed(found, None if left is None or left[0] is None else max(0.0, float(left[0])))

        return self._run("claim the notifications", body)

    def finish_delivery(self, event_seq: int, channel: str, node_id: str, *, delivered: bool,
                        error: str | None = None, retry_in_s: float | None = None) -> bool:
        params = {"ok": delivered, "retry": retry_in_s, "me": as_uuid(node_id), "error": error,
                  "seq": event_seq, "channel": channel}
        return self._run("record the notification's outcome", lambda conn: conn.execute(
            self._q(Q.FINISH_DELIVERY), params).fetchone() is not None)

    def notify_channels(self) -> Channels:
        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> Channels:
            with conn.transaction():
                settings = dict(conn.execute(self._q(Q.NOTIFY_SETTINGS)).fetchall())
                sealed = tuple((str(name), bytes(value)) for name, value in
                               conn.execute(self._q(Q.SEALED_SECRETS)).fetchall())
            web, mail = settings.get(Setting.NOTIFY_WEBHOOK.value), settings.get(Setting.NOTIFY_EMAIL.value)
            return Channels(webhook_from_json(web) if web else None, email_from_json(mail) if mail else None, sealed)

        return self._run("read the notification channels", body)

    def set_notify_channel(self, channel: str, config: str | None, secrets: dict[str, bytes | None], *,
                           event: NewEvent | None = None) -> None:
        if channel not in ("webhook", "email"):
            raise ValueError(f"unknown notification channel {channel!r}")
        key = Setting.NOTIFY_WEBHOOK if channel == "webhook" else Setting.NOTIFY_EMAIL
        key.check(config or "")

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                conn.execute(self._q(Q.UPSERT_SETTING), (key.value, config or ""))
                for name, value in secrets.items():
                    if value is None:
                        conn.execute(self._q(Q.DELETE_SECRET), (name,))
                    else:
                        conn.execute(self._q(Q.UPSERT_SECRET), (name, value))
                if event is not None:
                    self._record(conn, [event], None)
                self._notify_events(conn)

        self._run(f"set the {channel} notification", body)


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
