"""``appliance-agent``: runs this node's HA loop in the foreground.

Each tick: heartbeat, snapshot, decide, act (see :mod:`appliance.ha.runtime`), then wait until the
decision asks to be woken (at most one keepalive interval). One log line per change of decision.

* Under systemd (``NOTIFY_SOCKET``) it reports ``READY=1`` after the first tick, ``WATCHDOG=1`` every
  tick and its state in ``STATUS=``; a hung loop is therefore restarted by systemd.
* SIGTERM: resign (hand the lease to the best standby, services stopped first) and exit 0.
* SIGHUP: reload the configuration and credentials.
* It follows ``redirect``: when the credential set changes on disk, it reconnects to the new target.
* It writes ``<state_dir>/agent-status.json`` (state, role, epoch...) for ``ha get status``.
* With ``[agent] control_socket`` it answers the shell on that socket (:mod:`appliance.agentctl`, its own
  threads), and it does so from its start: before the node is initialised or while its credentials cannot
  be read, it waits idle (ready, watchdog pinged) and serves the socket, so the first ``redirect`` has a
  writer to talk to. Without a socket such an agent exits with the error, as before.
* With ``[health] listen`` it serves the health endpoint and the metrics (:mod:`appliance.ha.exposure`),
  and it hands the cluster's virtual IP to the VIP holder service (:mod:`appliance.ha.vip`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from appliance import credentials
from appliance.agentctl.runner import Runner
from appliance.agentctl.server import ControlServer
from appliance.clock import Clock, SystemClock
from appliance.config import Config, config_path, load_config
from appliance.db.target import DbTarget, Timeouts
from appliance.errors import ApplianceError, ExitStatus, FatalError
from appliance.ha.background import Background
from appliance.ha.dbmonitor import DbMonitor, FollowedFile, target_key
from appliance.ha.dbwatch import DbWatch
from appliance.ha.events import EventKind, NewEvent
from appliance.ha.exposure import Exposure
from appliance.ha.fence import FileFence
from appliance.ha.listener import Listener
from appliance.ha.model import Action, Decision, NodeIdentity, NodeStatus
from appliance.ha.pgstore import PgStore
from appliance.ha.runtime import Runtime
from appliance.ha.status import status_of
from appliance.ha.statusfile import status_path, write_status
from appliance.ha.store import NotRegistered, StoreUnavailable
from appliance.ha.timing import DEFAULT_KEEPALIVE_S, ha_timeouts, online_window_s
from appliance.hostname import backend_for
from appliance.node import identity, read_targets
from appliance.services import manager_for
from commands import build_registry

logger = logging.getLogger("appliance.agent")


def notify(message: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if there is one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        logger.warning("cannot notify systemd: %s", exc.strerror)


def _same_database(old: DbTarget | None, old_schema: str | None, new: DbTarget, new_schema: str) -> bool:
    return old is not None and old == new and old_schema == new_schema


class Agent:
    def __init__(self, config: Config, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.wake = threading.Event()
        self.stopping = False
        self.reload_requested = False
        self.runtime: Runtime | None = None
        self.store: PgStore | None = None
        self.creds = credentials.backend_for(config)
        self.generation: str | None = None  # of the credential set in use (a redirect writes a new one)
        self.last: tuple[Action, str] | None = None
        self.target: DbTarget | None = None
        self.schema: str | None = None
        self.exposure = Exposure(config)
        self.monitor: DbMonitor | None = None
        self.listener: Listener | None = None
        self.background: Background | None = None
        self.me: NodeIdentity | None = None
        self.booted = False  # the boot-start policy was applied (before the first decision)
        self.control: ControlServer | None = None

    def _timeouts(self) -> Timeouts:
        """The HA timeouts at the cluster's current interval (the configured one before the first snapshot)."""
        keepalive = self.runtime.keepalive_s if self.runtime is not None else self.config.ha.keepalive_interval_s
        return ha_timeouts(keepalive, statement_cap_s=self.config.ha.statement_timeout_s)

    def _db_poll_s(self) -> float:
        """How often every database host is asked: the DB check interval, at most one keepalive interval."""
        runtime = self.runtime
        keepalive = runtime.keepalive_s if runtime is not None else float(self.config.ha.keepalive_interval_s)
        check = runtime.view.db_check_s if runtime is not None and runtime.view is not None else keepalive
        return min(keepalive, check)

    # --- wiring ----------------------------------------------------------------------------------

    def connect(self) -> Runtime:
        self.creds = credentials.backend_for(self.config)  # the configuration may have been reloaded
        # The generation first, then the set: a redirect landing in between is noticed at the next wait.
        self.generation = self.creds.generation()
        me = self.me = identity(self.config)
        _origin, active = read_targets(self.config)
        same_target = _same_database(self.target, self.schema, active.target, active.schema)
        self.target, self.schema = active.target, active.schema
        previous = self.runtime
        keepalive = previous.keepalive_s if previous is not None else self.config.ha.keepalive_interval_s
        timeouts = ha_timeouts(keepalive, statement_cap_s=self.config.ha.statement_timeout_s)
        app_name = f"appliance-agent:{me.name}"[:63]
        # A new monitor for every connection: another database (redirect) starts with its own memory.
        if self.monitor is not None:
            self.monitor.close()
        multi = len(active.target.host_ports()) > 1
        watch = DbWatch(active.target, application_name=f"appliance-agent:{me.name}:watch"[:63],
                        timeouts=self._timeouts, interval=self._db_poll_s, on_change=self.wake.set)
        self.monitor = monitor = DbMonitor(watch, FollowedFile(self.config.paths.state_dir),
                                           target_key(active.target, active.schema), multi=multi)
        self.store = PgStore(active.target, active.schema, application_name=app_name, timeouts=timeouts,
                             pick_host=monitor.pick_writer if multi else None)
        runtime = Runtime(self.store, me.node_id, manager_for(self.config), self.clock, keepalive_s=keepalive)
        runtime.fence = self.exposure.fence(FileFence(self.config.fence_file), runtime)
        monitor.attach(runtime)
        runtime.emit = lambda kind, details, epoch, duration: self._event(kind, details, epoch, duration)
        monitor.emit = lambda kind, details, dedup: self._event(kind, details, dedup=dedup)
        if self.background is None:
            self.background = Background(self.config, me, self.clock, liveness_s=self._liveness_s)
            self.background.start()
        self.background.retarget(active, (lambda: _followed(monitor)) if multi else None)
        if previous is None:
            try:
                runtime.start()
            except ApplianceError as exc:
                # Not fatal: the standby services are started again with the first role change, and a
                # crash loop under systemd would only add noise.
                logger.error("could not start this node's services: %s", exc.message)
        elif same_target:
            # Same database (a reload, a new master key): the trust window and the epoch still apply.
            runtime.local = previous.local
        # A new target (redirect): start from scratch; redirect left the services of the node's new role
        # running, fenced until the agent confirms the lease there (or they stop by themselves).
        if self.listener is not None:
            self.listener.close()
        self.listener = Listener(active.target, active.schema, application_name=app_name, timeouts=timeouts,
                                 clock=self.clock,
                                 followed=lambda: monitor.followed.address if monitor.followed else None,
                                 on_event=self.background.poke)
        logger.info("node %s (%s) on %s, schema %s, registered as %s", me.name, me.node_id,
                    active.target.describe(), active.schema, active.role)
        return runtime

    def _follow_keepalive(self) -> None:
        """Scale the connections' timeouts to the cluster's interval when it changes."""
        timeouts = self._timeouts()
        if self.store is not None and timeouts != self.store.timeouts:
            self.store.retune(timeouts)
            if self.listener is not None:
                self.listener.retune(timeouts)

    # --- the loop --------------------------------------------------------------------------------

    def open_control(self) -> None:
        """Serve the control socket, if configured (its own threads; never the HA loop's)."""
        if self.config.agent.control_socket is None:
            return
        runner = Runner(build_registry(), lambda: self.config, self.clock)
        self.control = ControlServer(lambda: self.config.agent, runner)
        self.control.start()

    def _connect_when_ready(self) -> Runtime | None:
        """Connect; with a control socket, wait idle (serving it) while the node cannot be connected yet
        (not initialised, no credentials). None: stopped while waiting."""
        said = None
        while not self.stopping:
            try:
                return self.connect()
            except FatalError:
                raise
            except ApplianceError as exc:
                if self.control is None:
                    raise
                if exc.message != said:
                    logger.warning("idle, serving the control socket: %s%s", exc.message,
                                   f" (hint: {exc.hint})" if exc.hint else "")
                    said = exc.message
                notify("READY=1\nWATCHDOG=1\nSTATUS=idle: " + exc.message[:180])
            # A redirect or `appliance-admin init` writes the credentials: retry soon, or at once when woken.
            self.wake.wait(1.0)
            self.wake.clear()
            if self.reload_requested:
                self.reload_requested = False
                if self.config.source:
                    try:
                        self.config = load_config(self.config.source)
                    except ApplianceError as exc:
                        logger.error("reload failed, keeping the previous configuration: %s", exc.message)
        return None

    def _close_control(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None

    def run(self) -> int:
        self.open_control()
        try:
            runtime = self._connect_when_ready()
        except BaseException:
            self._close_control()
            raise
        if runtime is None:
            self._close_control()
            notify("STOPPING=1")
            return ExitStatus.OK
        self.runtime = runtime
        ready = False
        while True:
            if self.stopping:
                decision = self.runtime.stop()
                self._log(decision)
                self.runtime.services.stop()
                self._write_status(decision)
                self._event(EventKind.NODE_STOP, {"why": "agent stopped (clean stop)"})
                if self.background is not None:
                    self.background.close()
                if self.listener is not None:
                    self.listener.close()
                if self.monitor is not None:
                    self.monitor.close()
                self.exposure.close()
                self._close_control()
                notify("STOPPING=1")
                return ExitStatus.OK
            if self.reload_requested or self.creds.changed_since(self.generation):
                self._reload()
            assert self.monitor is not None
            self.monitor.check()
            self.exposure.probed(self.monitor.hosts)
            try:
                if not self.booted:
                    self.booted = self._boot_start()
                decision = self.runtime.tick() if self.booted else Decision(
                    Action.STAY, "applying the boot-start policy: waiting for the database", wake_in_s=1.0)
            except ApplianceError as exc:
                decision = Decision(Action.STAY, f"tick failed: {exc.message}", wake_in_s=1.0)
            except Exception:  # a bug: log it, keep the loop (and the trust window) going
                logger.exception("unexpected error in the HA loop")
                decision = Decision(Action.STAY, "internal error in the HA loop (see the log)", wake_in_s=1.0)
            self._log(decision)
            self._follow_hostname()
            self._follow_keepalive()
            self._write_status(decision)
            self.exposure.tick(self.runtime, decision)
            notify("WATCHDOG=1\nSTATUS=" + decision.reason[:200] + ("" if ready else "\nREADY=1"))
            ready = True
            wait = self.runtime.keepalive_s if decision.wake_in_s is None else decision.wake_in_s
            wait = min(wait, self.runtime.keepalive_s)
            if self.listener is not None:
                # A redirect switches the credential set: follow it within a tenth of a second.
                self.listener.wait(max(0.0, wait), self.wake,
                                   changed=lambda: self.creds.changed_since(self.generation))
            else:
                self.wake.wait(max(0.0, wait))
            self.wake.clear()

    # --- events, boot start --------------------------------------------------------------------------

    def _event(self, kind: EventKind, details: dict[str, Any], epoch: int | None = None,
               duration: float | None = None, dedup: str | None = None) -> None:
        """Hand an event to the outbox (written by the background thread; never waits)."""
        if self.background is None or self.me is None:
            return
        runtime = self.runtime
        row = runtime.view.node(self.me.node_id) if runtime is not None and runtime.view is not None else None
        name = row.name if row is not None else self.me.name
        self.background.emit(NewEvent(kind, name, self.me.node_id, details, epoch, duration, dedup_key=dedup))

    def _liveness_s(self) -> float:
        view = self.runtime.view if self.runtime is not None else None
        return online_window_s(view.judge_keepalive_s or view.keepalive_s if view is not None else DEFAULT_KEEPALIVE_S)

    def _boot_start(self) -> bool:
        """Apply this node's boot-start policy before its first decision (True: done).

        ``enabled``: take part as a standby (back in the cluster if it was STOP); ``disabled``: stay out
        of it (STOP) until ``ha start``; ``keep``: the admin state from before. One event says what happened.
        """
        runtime = self.runtime
        assert runtime is not None and self.me is not None
        try:
            view = runtime.store.snapshot()
        except (StoreUnavailable, NotRegistered):
            return False
        row = view.node(self.me.node_id)
        if row is None:
            self._event(EventKind.NODE_START, {"why": "agent started (not registered in this database)"})
            return True
        mode, state = row.boot_start, row.admin_state
        wanted = {"enabled": "active", "disabled": "stopped"}.get(mode, state)
        kind = EventKind.NODE_START if wanted == "active" else EventKind.NODE_STOP
        why = (f"agent started; boot start {mode}: " + ("takes part as a standby" if wanted == "active"
                                                          else "stays out of the cluster (STOP)"))
        event = NewEvent(kind, row.name, self.me.node_id, {"why": why, "boot_start": mode})
        try:
            if wanted != state:
                runtime.store.set_admin_state(self.me.node_id, wanted, event=event)
            elif self.background is not None:
                self.background.emit(event)
        except (StoreUnavailable, NotRegistered):
            return False
        logger.info("%s", why)
        return True

    def _follow_hostname(self) -> None:
        """Keep the registry's name in step with ``system set hostname`` (shown by ``ha get nodes``)."""
        runtime = self.runtime
        me = runtime.view.node(runtime.node_id) if runtime is not None and runtime.view else None
        if runtime is None or me is None:
            return
        try:
            name = backend_for(self.config).get()
            if name and name != me.name:
                runtime.store.rename(runtime.node_id, name)
                logger.info("this node is now called %s (was %s)", name, me.name)
        except (ApplianceError, OSError) as exc:
            if not isinstance(exc, StoreUnavailable | NotRegistered):
                logger.warning("cannot read or record this node's name: %s", exc)

    def _reload(self) -> None:
        self.reload_requested = False
        try:
            self.config = load_config(self.config.source) if self.config.source else self.config
            self.exposure.reconfigure(self.config)
            assert self.runtime is not None
            old_store = self.runtime.store
            self.runtime = self.connect()
            old_store.close()
        except ApplianceError as exc:
            logger.error("reload failed, keeping the previous configuration: %s", exc.message)

    def _log(self, decision: Decision) -> None:
        key = (decision.action, decision.reason)
        if key != self.last:
            level = logging.WARNING if decision.action in (Action.DEMOTE,) else logging.INFO
            logger.log(level, "%s: %s", decision.action.value, decision.reason)
            self.last = key

    def _write_status(self, decision: Decision) -> None:
        runtime = self.runtime
        assert runtime is not None
        view = runtime.view
        me = view.node(runtime.node_id) if view else None
        state = NodeStatus.WAIT if view is None or me is None else status_of(view, me, acting=runtime.local.acting)
        doc: dict[str, Any] = {
            "node_id": runtime.node_id,
            "state": state.value,
            "acting": runtime.local.acting,
            "epoch": runtime.local.epoch,
            "priority": me.priority if me else None,
            "keepalive_s": runtime.keepalive_s,
            "decision": decision.action.value,
            "reason": decision.reason,
            "services_missing": runtime.services_missing,
            "db_alarm": self.monitor.alarm if self.monitor is not None else None,
            "db_writing_to_none": runtime.local.db_alarm is not None,
            "db_followed": None if self.monitor is None or self.monitor.followed is None else
            {"host": self.monitor.followed.host, "port": self.monitor.followed.port,
             "timeline": self.monitor.followed.timeline},
            "db_nodes": [] if self.monitor is None else [
                {"host": h.host, "port": h.port, "reachable": h.reachable, "writable": h.writable,
                 "timeline": h.timeline} for h in self.monitor.hosts],
            "boot_start": me.boot_start if me else None,
            "nodes": [n.name for n in view.nodes] if view else [],
            "join_service": self.background.join_listening if self.background is not None else None,
            "events_kept": len(self.background.outbox) if self.background is not None else 0,
            "pid": os.getpid(),
            "written_at": self.clock.now().isoformat(),
        }
        try:
            write_status(self.config, doc)
        except OSError as exc:
            logger.warning("cannot write %s: %s", status_path(self.config), exc.strerror)

    # --- signals ---------------------------------------------------------------------------------

    def install_signals(self) -> None:
        def on_term(signum: int, frame: object) -> None:
            self.stopping = True
            self.wake.set()

        def on_hup(signum: int, frame: object) -> None:
            self.reload_requested = True
            self.wake.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)


def _followed(monitor: DbMonitor) -> tuple[str, int]:
    """The database node the background work writes to: the one the HA loop follows (never chosen here)."""
    if monitor.followed is None:
        raise StoreUnavailable("HA store: no database node is followed yet", "see 'ha get nodes'")
    return monitor.followed.address


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance-agent", description="Run this node's HA loop (foreground).")
    parser.add_argument("--config", help="configuration file (default $APPLIANCE_CONFIG or /etc/appliance/...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s" if not os.environ.get("JOURNAL_STREAM")
                        else "%(levelname)s %(message)s")  # journald adds its own time stamps
    try:
        config = load_config(config_path(args.config, os.environ))
        agent = Agent(config, SystemClock())
        agent.install_signals()
        return agent.run()
    except ApplianceError as exc:
        logger.error("%s%s", exc.message, f" (hint: {exc.hint})" if exc.hint else "")
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
