"""The agent's work off the HA loop: the event outbox, notification delivery, the join service.

One thread, its own store (its own connection, the shell's patient timeouts), woken by the HA loop
(:meth:`Background.emit`: an event was kept), by a notification on the cluster's events channel
(:meth:`Background.poke`, relayed by the agent's listener), or by its own next deadline. Each pass:

1. **outbox**: the kept events are written to the database (:meth:`~appliance.ha.store.HaStore.
   record_events`, claimed for delivery by this node) and forgotten once it answered;
2. **notifications**: :class:`~appliance.ha.notifier.Notifier` claims and sends what is due;
3. **join service**: listen while codes this node issued are outstanding, stop when none is
   (:class:`~appliance.ha.joinservice.JoinService`).

Nothing here is awaited by the HA loop: a dead database costs this thread its timeouts, a receiver that
hangs costs a sending worker, and the loop's only call, :meth:`emit`, appends to a file. The agent
points it at a new database after a redirect (:meth:`retarget`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.clock import Clock
from appliance.config import Config
from appliance.configcheck import split_listen
from appliance.db.target import SYSTEM_CA, Timeouts
from appliance.errors import ApplianceError
from appliance.ha.events import NewEvent
from appliance.ha.joinclient import CA_PEM_MAX
from appliance.ha.joinservice import JoinAnswers, JoinService
from appliance.ha.jointls import ensure
from appliance.ha.model import NodeIdentity
from appliance.ha.notifier import Notifier
from appliance.ha.outbox import Outbox
from appliance.ha.pgstore import PgStore
from appliance.ha.sealed import key_for
from appliance.node import ActiveTarget, read_targets

logger = logging.getLogger("appliance.agent")

SAFETY_POLL_S = 15.0  # looked at anyway this often (a missed notification costs at most this)
RETRY_S = 2.0  # after the database did not answer


def side_timeouts() -> Timeouts:
    """A patient connection: nothing the HA loop waits for runs on it."""
    return Timeouts(connect_timeout=3.0, statement_timeout=5.0, lock_timeout=2.0, tcp_user_timeout=5.0,
                    idle_in_transaction_session_timeout=10.0)


class Background:
    def __init__(self, config: Config, me: NodeIdentity, clock: Clock, *, liveness_s: Callable[[], float]) -> None:
        self.config, self.me, self.clock = config, me, clock
        self.outbox = Outbox(config.paths.state_dir, clock)
        self.liveness_s = liveness_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._store: PgStore | None = None
        self._active: ActiveTarget | None = None
        self._notifier: Notifier | None = None
        self._join: JoinService | None = None
        self._thread = threading.Thread(target=self._run, name="agent-background", daemon=True)
        self.join_listening: str | None = None

    # --- called by the HA loop's thread -------------------------------------------------------------

    def start(self) -> None:
        if self.config.join.listen:
            try:
                ensure(self.config, self.me.name)
            except (OSError, ValueError) as exc:
                logger.error("cannot make the join service's certificate: %s", exc)
        self._thread.start()

    def emit(self, event: NewEvent) -> None:
        """Keep ``event`` and let the thread write it (never waits for the database)."""
        self.outbox.add(event)
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    def retarget(self, active: ActiveTarget, pick_host: Callable[[], tuple[str, int]] | None) -> None:
        """Work on the node's database from now on (the agent connected, or followed a redirect)."""
        store = PgStore(active.target, active.schema, application_name=f"appliance-agent:{self.me.name}:bg"[:63],
                        timeouts=side_timeouts(), pick_host=pick_host)
        notifier = Notifier(store, self.me.node_id, key=lambda: key_for(self.config), liveness_s=self.liveness_s,
                            cluster_id=lambda: active.cluster_id, wake=self._wake.set, hostname=self.me.name)
        answers = JoinAnswers(store, cluster_id=lambda: active.cluster_id, target=self._handed_over,
                              issuer=self.me.name, clock=self.clock)
        join = None
        if self.config.join.listen:
            from appliance.ha.jointls import files

            join = JoinService(split_listen(self.config.join.listen), files(self.config), answers)
        with self._lock:
            old = (self._store, self._notifier, self._join)
            self._store, self._active, self._notifier, self._join = store, active, notifier, join
        old_store, old_notifier, old_join = old
        if old_join is not None:
            old_join.stop()
        if old_notifier is not None:
            old_notifier.close()
        if old_store is not None:
            old_store.close()
        self._wake.set()

    def close(self, flush_s: float = 2.0) -> None:
        """Stop; the events still kept are written first if the database answers within ``flush_s``."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=flush_s)
        with self._lock:
            store, notifier, join = self._store, self._notifier, self._join
        if store is not None and len(self.outbox):
            self._flush(store)
        if join is not None:
            join.stop()
        if notifier is not None:
            notifier.close()
        if store is not None:
            store.close()

    # --- the thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                store, notifier, join = self._store, self._notifier, self._join
            waits = [SAFETY_POLL_S]
            if store is not None and notifier is not None:
                try:
                    waits.append(self._pass(store, notifier, join))
                except Exception:  # a bug: logged, the thread goes on (the HA loop never notices)
                    logger.exception("unexpected error in the agent's background work")
                    waits.append(RETRY_S)
            self._wake.wait(max(0.05, min(waits)))
            self._wake.clear()

    def _pass(self, store: PgStore, notifier: Notifier, join: JoinService | None) -> float:
        wait = SAFETY_POLL_S
        if len(self.outbox) and not self._flush(store):
            wait = RETRY_S
        try:
            due = notifier.step()
            if due is not None:
                wait = min(wait, max(0.05, due))
        except ApplianceError as exc:
            logger.debug("notifications: %s", exc.message)
            wait = min(wait, RETRY_S)
        if join is not None:
            wait = min(wait, self._join_service(store, join))
        return wait

    def _flush(self, store: PgStore) -> bool:
        pending = self.outbox.pending()
        try:
            store.record_events(pending, deliver_by=self.me.node_id)
        except ApplianceError as exc:
            logger.debug("events kept until the database answers: %s", exc.message)
            return False
        self.outbox.written({e.id for e in pending})  # recorded now, or already (a retry, a duplicate)
        return True

    def _join_service(self, store: PgStore, join: JoinService) -> float:
        try:
            left = store.outstanding_join_codes(self.me.node_id)
        except ApplianceError:
            return RETRY_S
        if left is None:
            join.stop()
            self.join_listening = None
            return SAFETY_POLL_S
        if not join.listening:
            try:
                join.start()
            except (OSError, ValueError) as exc:
                logger.error("join service: cannot listen on %s: %s", self.config.join.listen, exc)
                return RETRY_S
        self.join_listening = self.config.join.listen
        return max(0.05, left + 0.05)

    def _handed_over(self) -> dict[str, Any]:
        """The cluster's database target, as the join service hands it to a joining node."""
        _origin, active = read_targets(self.config)
        t = active.target
        offer: dict[str, Any] = {"hosts": list(t.hosts), "ports": list(t.ports), "user": t.user,
                                 "password": t.password, "dbname": t.dbname, "sslmode": t.sslmode,
                                 "schema": active.schema}
        # The joining node must verify the database as this node does: the system's CAs, or the very CA
        # file this node was redirected with (its content: the path means nothing on another machine).
        if t.sslrootcert == SYSTEM_CA:
            offer["sslrootcert"] = SYSTEM_CA
        elif t.sslrootcert:
            try:
                offer["ca_pem"] = Path(t.sslrootcert).read_text(encoding="ascii")[:CA_PEM_MAX]
            except (OSError, ValueError) as exc:
                logger.error("join service: cannot read the database's CA file %s: %s", t.sslrootcert, exc)
        return offer
