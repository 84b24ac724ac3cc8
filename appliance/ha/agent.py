"""``appliance-agent``: runs this node's HA loop in the foreground.

Each tick: heartbeat, snapshot, decide, act (see :mod:`appliance.ha.runtime`), then wait until the
decision asks to be woken (at most one keepalive interval). One log line per change of decision.

* Under systemd (``NOTIFY_SOCKET``) it reports ``READY=1`` after the first tick, ``WATCHDOG=1`` every
  tick and its state in ``STATUS=``; a hung loop is therefore restarted by systemd.
* SIGTERM: resign (hand the lease to the best standby, services stopped first) and exit 0.
* SIGHUP: reload the configuration and credentials.
* It follows ``redirect``: when the credential set changes on disk, it reconnects to the new target.
* It writes ``<state_dir>/agent-status.json`` (state, role, epoch...) for ``ha get status``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance import credentials
from appliance.clock import Clock, SystemClock
from appliance.config import Config, config_path, load_config
from appliance.errors import ApplianceError, ExitStatus
from appliance.ha.decide import status_of
from appliance.ha.listener import Listener
from appliance.ha.model import Action, Decision, NodeStatus
from appliance.ha.runtime import Runtime

if TYPE_CHECKING:
    from appliance.db.connect import DbTarget, Timeouts

logger = logging.getLogger("appliance.agent")


def agent_timeouts() -> Timeouts:
    """Short: a hung store call must end well inside the trust window, so it counts as a failed renewal."""
    from appliance.db.connect import Timeouts

    return Timeouts(connect_timeout=2.0, statement_timeout=2.0, lock_timeout=1.0, tcp_user_timeout=3.0,
                    keepalives_idle=5, keepalives_interval=2, keepalives_count=2)


def status_path(config: Config) -> Path:
    return config.paths.state_dir / "agent-status.json"


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


class Agent:
    def __init__(self, config: Config, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.wake = threading.Event()
        self.stopping = False
        self.reload_requested = False
        self.runtime: Runtime | None = None
        self.creds = credentials.backend_for(config)
        self.generation: str | None = None  # of the credential set in use (a redirect writes a new one)
        self.last: tuple[Action, str] | None = None
        self.target: DbTarget | None = None
        self.next_db_check = 0.0
        self.writer: tuple[str, int] | None = None  # the read-write DB node in use, as last probed
        self.split_brain = False
        self.listener: Listener | None = None

    # --- wiring ----------------------------------------------------------------------------------

    def connect(self) -> Runtime:
        from appliance.ha.fence import FileFence, fence_path
        from appliance.ha.pgstore import PgStore
        from appliance.node import identity, read_targets
        from appliance.services import manager_for

        self.creds = credentials.backend_for(self.config)  # the configuration may have been reloaded
        me = identity(self.config)
        _origin, active = read_targets(self.config)
        if active.target != self.target:
            # Another database altogether (redirect), not a failover of the same one: forget the old
            # writer so the monitor does not mistake the switch for a DB failover.
            self.writer, self.next_db_check = None, 0.0
        self.target = active.target
        previous, previous_generation = self.runtime, self.generation
        self.generation = self.creds.generation()
        store = PgStore(active.target, active.schema, application_name=f"appliance-agent:{me.name}"[:63],
                        timeouts=agent_timeouts())
        fence = FileFence(fence_path(self.config.paths.state_dir))
        runtime = Runtime(store, me.node_id, manager_for(self.config), self.clock, fence=fence)
        if previous is None:
            try:
                runtime.start()
            except ApplianceError as exc:
                # Not fatal: the standby services are started again with the first role change, and a
                # crash loop under systemd would only add noise.
                logger.error("could not start this node's services: %s", exc.message)
        elif self.generation == previous_generation:
            runtime.local = previous.local  # same target: the trust window and epoch still apply
        # A new target (redirect): start from scratch; redirect left the services of the node's new role
        # running, fenced until the agent confirms the lease there (or they stop by themselves).
        if self.listener is not None:
            self.listener.close()
        self.listener = Listener(active.target, active.schema, application_name=f"appliance-agent:{me.name}"[:63],
                                 timeouts=agent_timeouts(), clock=self.clock)
        logger.info("node %s (%s) on %s, schema %s, registered as %s", me.name, me.node_id,
                    active.target.describe(), active.schema, active.role)
        return runtime

    # --- the loop --------------------------------------------------------------------------------

    def run(self) -> int:
        self.runtime = self.connect()
        ready = False
        while True:
            if self.stopping:
                decision = self.runtime.stop()
                self._log(decision)
                self.runtime.services.stop()
                self._write_status(decision)
                if self.listener is not None:
                    self.listener.close()
                notify("STOPPING=1")
                return ExitStatus.OK
            if self.reload_requested or self.creds.changed_since(self.generation):
                self._reload()
            if self.clock.monotonic() >= self.next_db_check:
                self._check_db_nodes()
            try:
                decision = self._tick()
            except ApplianceError as exc:
                decision = Decision(Action.STAY, f"tick failed: {exc.message}", wake_in_s=1.0)
            except Exception:  # a bug: log it, keep the loop (and the trust window) going
                logger.exception("unexpected error in the HA loop")
                decision = Decision(Action.STAY, "internal error in the HA loop (see the log)", wake_in_s=1.0)
            self._log(decision)
            self._follow_hostname()
            self._write_status(decision)
            notify("WATCHDOG=1\nSTATUS=" + decision.reason[:200] + ("" if ready else "\nREADY=1"))
            ready = True
            wait = self.runtime.keepalive_s if decision.wake_in_s is None else decision.wake_in_s
            wait = min(wait, self.runtime.keepalive_s, max(0.0, self.next_db_check - self.clock.monotonic()))
            if self.listener is not None:
                # A redirect switches the credential set: follow it within a tenth of a second.
                self.listener.wait(max(0.0, wait), self.wake,
                                   changed=lambda: self.creds.changed_since(self.generation))
            else:
                self.wake.wait(max(0.0, wait))
            self.wake.clear()

    def _follow_hostname(self) -> None:
        """Keep the registry's name in step with ``system set hostname`` (shown by ``ha get nodes``)."""
        from appliance.ha.store import NotRegistered, StoreUnavailable
        from appliance.hostname import backend_for

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

    def _tick(self) -> Decision:
        assert self.runtime is not None
        if self.split_brain:
            # Two read-write database nodes: writing to either could fork the cluster's state. Act as
            # if the database were unreachable (the primary self-fences when its trust window ends).
            from appliance.ha.decide import decide

            decision = decide(None, self.runtime.local, self.clock.monotonic())
            if decision.action is Action.DEMOTE:
                self.runtime.step_down()
            return Decision(decision.action, "ALARM: two read-write database nodes; writing to neither. "
                            + decision.reason, wake_in_s=decision.wake_in_s)
        return self.runtime.tick()

    def _check_db_nodes(self) -> None:
        """Probe every configured DB host: follow a new read-write node, alarm on two of them."""
        from concurrent.futures import ThreadPoolExecutor

        from appliance.db.connect import DbError, probe

        assert self.runtime is not None and self.target is not None
        view = self.runtime.view
        # Before the first snapshot the interval is unknown: look again soon rather than in 10 s.
        interval = view.db_check_s if view else 1.0
        self.next_db_check = self.clock.monotonic() + interval
        target = self.target

        def one(host_port: tuple[str, int]) -> tuple[tuple[str, int], bool | None, int | None]:
            try:
                info = probe(target, *host_port, application_name="appliance-agent:probe",
                             timeouts=agent_timeouts(), samples=1)
            except DbError:
                return host_port, None, None
            return host_port, not info.is_in_recovery, info.timeline

        pairs = target.host_ports()
        with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
            results = list(pool.map(one, pairs))
        writers = [(hp, timeline) for hp, writable, timeline in results if writable]
        if len(writers) > 1:
            if not self.split_brain:
                logger.error("ALARM: %d read-write database nodes (%s); writing to neither until one is left",
                             len(writers), ", ".join(f"{h}:{p} timeline {t}" for (h, p), t in writers))
            self.split_brain = True
            return
        if self.split_brain:
            logger.warning("one read-write database node again: resuming")
            self.split_brain = False
        if not writers:
            return
        writer = writers[0][0]
        if self.writer is not None and writer != self.writer:
            grace = 2 * self.runtime.keepalive_s
            logger.warning("database failover: the read-write node is now %s:%d (was %s:%d); reconnecting, "
                           "nobody is judged dead for %.0f s", *writer, *self.writer, grace)
            close = getattr(self.runtime.store, "close", None)
            if callable(close):
                close()  # the next store call reconnects, and finds the new read-write node
            self.runtime.grace(grace)
        self.writer = writer

    def _reload(self) -> None:
        self.reload_requested = False
        try:
            self.config = load_config(self.config.source) if self.config.source else self.config
            assert self.runtime is not None
            old_store = self.runtime.store
            self.runtime = self.connect()
            close = getattr(old_store, "close", None)
            if callable(close):
                close()
        except ApplianceError as exc:
            logger.error("reload failed, keeping the previous configuration: %s", exc.message)

    def _log(self, decision: Decision) -> None:
        key = (decision.action, decision.reason)
        if key != self.last:
            level = logging.WARNING if decision.action in (Action.DEMOTE,) else logging.INFO
            logger.log(level, "%s: %s", decision.action.value, decision.reason)
            self.last = key

    def _write_status(self, decision: Decision) -> None:
        from appliance.hostname import write_atomic

        runtime = self.runtime
        assert runtime is not None
        view = runtime.view
        me = view.node(runtime.node_id) if view else None
        doc: dict[str, Any] = {
            "node_id": runtime.node_id,
            "state": self._state(),
            "acting": runtime.local.acting,
            "epoch": runtime.local.epoch,
            "priority": me.priority if me else None,
            "keepalive_s": runtime.keepalive_s,
            "decision": decision.action.value,
            "reason": decision.reason,
            "pid": os.getpid(),
            "written_at": self.clock.now().isoformat(),
        }
        try:
            write_atomic(status_path(self.config), json.dumps(doc) + "\n", mode=0o644)
        except OSError as exc:
            logger.warning("cannot write %s: %s", status_path(self.config), exc.strerror)

    def _state(self) -> str:
        """PRIM/ALONE/SECOND/STOP/WAIT from what this node does now (the snapshot predates this tick's act)."""
        runtime = self.runtime
        assert runtime is not None
        view = runtime.view
        me = view.node(runtime.node_id) if view else None
        if view is None or me is None:
            return str(NodeStatus.WAIT.value)
        if runtime.local.acting:
            others = [n for n in view.candidates() if n.node_id != me.node_id]
            return str((NodeStatus.PRIM if others else NodeStatus.ALONE).value)
        shown = status_of(view, me)
        return str(NodeStatus.WAIT.value if shown in (NodeStatus.PRIM, NodeStatus.ALONE) else shown.value)

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


def main(argv: list[str] | None = None) -> int:
    import argparse

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
