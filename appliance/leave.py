"""``ha leave``: take this node out of its cluster and back to its own local database, as before ``redirect``.

The node returns to its origin (the local PostgreSQL ``appliance-admin init`` made, whose data was never
touched) as a standalone primary, unregistered from the cluster. Order, like ``redirect`` (the same
journal and rollback, :mod:`appliance.steps`):

pre-flight (changes nothing): in a cluster; this node's registration; if it is the acting primary with
other nodes online, the node it will hand over to (refused, with a hint, when none may take over);
the local database reachable and its schema usable; the credential backend ready -> the question
(saying so when the primary role is handed over first) -> hand the role over (a switchover) -> stop the
services -> register as the standalone primary on the local database -> write the credential set with
the origin as the active target (the one atomic switch; the agent follows it) -> start the services as
primary -> health -> unregister from the cluster, with the ``leave`` event, in one transaction.

Unregistering comes last, so any failure before it rolls everything back and the node is still a member;
leaving the last node of a cluster is allowed (the cluster then has no node).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from appliance import __version__, credentials
from appliance.clock import Clock
from appliance.config import Config
from appliance.db import schema as S
from appliance.db.connect import connect
from appliance.db.errors import error_from_exception
from appliance.db.target import Timeouts
from appliance.errors import ApplianceError, CommandFailed, Conflict, NotConfigured
from appliance.ha import control
from appliance.ha.decide import no_candidate_reason
from appliance.ha.events import EventKind, NewEvent
from appliance.ha.fence import FileFence
from appliance.ha.model import NodeIdentity
from appliance.ha.pgstore import PgStore
from appliance.ha.session import cluster_store, store_for
from appliance.ha.timing import trust_s
from appliance.node import ActiveTarget, identity, read_targets, write_targets
from appliance.services import ServiceManager
from appliance.steps import Journal, line, rollback, took


@dataclass(frozen=True)
class LeavePlan:
    me: NodeIdentity
    origin: ActiveTarget
    active: ActiveTarget
    acting: bool  # this node holds the lease
    handover_to: str | None  # the node the primary role is handed to first
    others_online: tuple[str, ...]

    def summary(self) -> str:
        first = f"It is the primary: it hands the role over to {self.handover_to} first.\n" if self.handover_to else \
            ("It is the primary and the last node online: the cluster will have no primary.\n" if self.acting else "")
        return (f"Node {self.me.name} will leave cluster {self.active.cluster_id} ({self.active.target.describe()}) "
                f"and run on its local database again, as a standalone primary.\n{first}"
                "It will stop its services, register on its local database, switch its stored credentials back, "
                "start its services and remove itself from the cluster.")


def _timeouts(config: Config) -> Timeouts:
    return Timeouts(connect_timeout=config.database.connect_timeout_s,
                    statement_timeout=config.database.statement_timeout_s)


def plan_leave(config: Config) -> LeavePlan:
    """The pre-flight of ``ha leave``: nothing changes. :raises ApplianceError: why it cannot leave."""
    me = identity(config)
    origin, active = read_targets(config)
    if active.local:
        raise NotConfigured(f"this node ({me.name}) is not in a cluster: it runs on its local database already")
    credentials.backend_for(config).check_ready()
    with cluster_store(config) as (store, _active, _me):
        view = store.snapshot()
    node = view.node(me.node_id)
    if node is None:
        raise NotConfigured(f"this node ({me.name}) is not registered in cluster {active.cluster_id}",
                            hint="redirect it again, or back to its local database with redirect")
    holder = view.holder()
    acting = holder is not None and holder.node_id == me.node_id
    others = tuple(n.name for n in view.nodes if n.node_id != me.node_id and view.online(n))
    handover = None
    if acting and others:
        target = next((n for n in view.candidates() if n.node_id != me.node_id), None)
        if target is None:
            raise Conflict(f"this node is the primary and no other node may take the role over "
                           f"({no_candidate_reason(view).split(': ', 1)[-1]})",
                           hint="give a standby a priority above 0 (ha set priority N --node NAME) or bring one back "
                                "(ha start there), or take the other nodes out first")
        handover = target.name
    try:
        with connect(origin.target, application_name=f"appliance-leave:{me.name}"[:63], timeouts=_timeouts(config),
                     autocommit=True) as conn:
            state = S.read_state(conn, origin.schema)
    except ApplianceError as exc:
        raise NotConfigured(f"this node's local database cannot be used: {exc.message}; nothing was changed",
                            hint="start the local PostgreSQL (or fix it), then run ha leave again") from None
    if state.kind not in (S.StateKind.CURRENT, S.StateKind.OLDER):
        raise NotConfigured(f"this node's local database cannot be used: {state.describe()}; nothing was changed",
                            hint="repair it (appliance-admin init), then run ha leave again")
    return LeavePlan(me, origin, active, acting, handover, others)


def execute_leave(config: Config, plan: LeavePlan, *, clock: Clock, services: ServiceManager) -> Iterator[str]:
    """Carry out ``plan``, yielding progress lines; on failure roll back and raise (like ``redirect``)."""
    journal = Journal()
    step, started = "starting", clock.monotonic()
    try:
        if plan.handover_to:
            step = "handing the primary role over"
            yield line(clock, "INFO", f"Handing the primary role over to {plan.handover_to}")
            done = control.switchover(config, plan.handover_to, clock)
            yield line(clock, "INFO", f"{done.target} is primary (epoch {done.epoch}, {done.seconds:.2f} s)")
        step = "stopping services"
        t0 = clock.monotonic()
        yield line(clock, "INFO", "Stopping services")
        stopped = services.stop()
        old_role = "primary" if plan.acting and not plan.handover_to else "standby"
        journal.add(f"started the services again as {old_role}", lambda: services.start(old_role))
        yield line(clock, "INFO", f"Stopped {', '.join(stopped) or 'no services'} ({took(clock, t0)})")

        step = "registering on the local database"
        t0 = clock.monotonic()
        yield from _register_locally(config, plan, clock, journal)
        yield line(clock, "INFO", f"Registered {plan.me.name} as the standalone primary ({took(clock, t0)})")

        step = "writing the credentials"
        write_targets(config, plan.origin, plan.origin)
        journal.add("restored the cluster's credentials", lambda: write_targets(config, plan.origin, plan.active))
        yield line(clock, "INFO", "Credentials switched back to the local database")

        step = "starting services"
        journal.add("stopped the services started as standalone primary", services.stop)
        running = services.start("primary")
        yield line(clock, "INFO", f"Started {', '.join(running) or 'no services'}")

        step = "checking health"
        _origin, now = read_targets(config)
        down = sorted(set(running) - set(services.running()))
        if not now.local or down:
            raise CommandFailed("after the switch, " + ("the stored credentials do not name the local database"
                                                         if not now.local else f"services did not stay up: {down}"))

        step = "leaving the cluster"
        event = NewEvent(EventKind.LEAVE, plan.me.name, plan.me.node_id,
                         {"handed_over_to": plan.handover_to, "last_node": not plan.others_online})
        with store_for(config, plan.active) as store:
            store.unregister_node(plan.me.node_id, event=event)
    except BaseException as exc:
        failure = yield from rollback(clock, journal, step, exc, "ha leave")
        raise failure from None
    yield line(clock, "INFO", f"Node {plan.me.name} left cluster {plan.active.cluster_id}; it runs on its local "
                              f"database as a standalone primary (total {took(clock, started)})")


def _register_locally(config: Config, plan: LeavePlan, clock: Clock, journal: Journal) -> Iterator[str]:
    import psycopg  # loaded already: the pre-flight connected

    target = plan.origin.target
    conn = connect(target, application_name=f"appliance-leave:{plan.me.name}"[:63], timeouts=_timeouts(config),
                   autocommit=True)
    try:
        with S.deploy_lock(conn, plan.origin.schema, wait_s=config.database.lock_wait_s, clock=clock):
            registered_at = clock.monotonic()
            state = S.read_state(conn, plan.origin.schema)
            store = PgStore.on_connection(conn, target, plan.origin.schema)
            with conn.transaction():
                if state.kind is S.StateKind.OLDER:
                    yield line(clock, "INFO", f"Upgrading the local schema from v{state.version}")
                    S.upgrade(conn, plan.origin.schema, state, product_version=__version__)
                done = store.register_node(plan.me, role="primary", product_version=__version__)
        fence = FileFence(config.fence_file)
        fence.grant(registered_at + trust_s(done.keepalive_s), done.lease_after.epoch, done.lease_after.timeline)
        journal.add("closed the fence of the primary-only services", fence.revoke)

        def undo() -> None:
            with connect(target, application_name=f"appliance-leave:{plan.me.name}"[:63],
                         timeouts=_timeouts(config), autocommit=True) as again, again.transaction():
                PgStore.on_connection(again, target, plan.origin.schema).undo_registration(plan.me, done)

        journal.add("restored this node's registration on the local database", undo)
    except psycopg.Error as exc:
        raise error_from_exception(exc, target, action="registering on the local database") from None
    finally:
        conn.close()
