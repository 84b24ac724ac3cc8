"""A deterministic discrete-event simulation of the HA core: N nodes, one shared store, one global time.

Model (what the simulation assumes, stated once):

* **Time.** One global simulated time ``sim.t`` (seconds). The shared :class:`CheckedStore` (an
  ``InMemoryStore``) uses it as its "database clock". Each node sees time through its own
  :class:`NodeClock`: ``monotonic() = t + mono_offset`` (a fresh offset per boot, so monotonic values
  of different nodes are unrelated) and ``now() = t + wall_offset`` (a wall clock that can jump by
  hours; nothing may depend on it).
* **Nodes.** Each node runs the real :class:`~appliance.ha.runtime.Runtime` over a per-node
  :class:`NodeStore` that forwards to the shared store and injects that node's faults, with
  :class:`SimServices` recording when its primary-only services start and stop.
* **Store calls.** A call's effect happens atomically at the global time it STARTS; the reply reaches
  the node ``latency`` seconds later (other nodes run in between; the caller's clock has moved on).
  A lost reply: the effect happens, the caller gets ``StoreUnavailable`` (after the latency). A
  partition: no effect; the caller gets ``StoreUnavailable`` after ``partition_delay`` seconds (its
  connect/statement timeout).
* **Scheduling.** A node ticks when its last decision asks (``wake_in_s``; None means I), capped at
  its keepalive interval I and floored at :data:`MIN_WAKE_S`, counted from the END of the tick (the
  agent's loop: tick, then sleep). A tick whose calls may block runs in a thread of its own, but only
  one thread ever runs at a time (the scheduler hands a baton over and waits for it back), so every
  run is a pure function of its inputs.
* **Fence.** Each node's runtime gets a :class:`SimFence` (like :class:`appliance.ha.fence.FileFence`):
  its primary-only services *act* only while they run AND the fence's deadline (a monotonic time of
  that node) has not passed AND it was not revoked. Services check it continuously (the real demo
  service polls every 50 ms).
* **NOTIFY.** As the PostgreSQL store does, a release that succeeds, a handover request, an admin-state
  change and a setting change notify every listening agent, which then ticks at once (after
  :data:`NOTIFY_DELAY_S`) instead of at its planned time, like ``Listener.wait``: a node busy in a
  tick, or paused, handles it right after; a node cut off from the database gets nothing. With
  ``Sim(notify=False)`` agents only sleep (their listening connection is down).
* **Faults.** Crash: the agent and its services die at once (a stop of the primary-only services is
  recorded); an in-flight call's effect stays. Restart: a new ``Runtime`` (new boot: new monotonic
  offset, fresh fence). Pause (SIGSTOP of the agent only): no ticks, in-flight replies are not
  processed, but the services keep running (and keep obeying the fence). Clean stop (SIGTERM), as
  ``Agent.run`` does it: ``Runtime.stop()`` after the tick in flight, then ``services.stop()``.

Invariants checked before and after every event: see :meth:`Sim.check`.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.clock import Clock
from appliance.ha.events import Event, NewEvent
from appliance.ha.memstore import InMemoryStore
from appliance.ha.model import (
    Action,
    Claimed,
    ClaimOutcome,
    ClusterView,
    Decision,
    JoinCodeInfo,
    NodeIdentity,
    Registration,
)
from appliance.ha.notify import Channels
from appliance.ha.runtime import Runtime
from appliance.ha.settings import Setting
from appliance.ha.store import HaStore, NotRegistered, StoreUnavailable
from appliance.services import ServiceManager

BASE = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
MIN_WAKE_S = 1e-3  # the agent never sleeps less than this (a float-exact "wake at trust end" could spin)
NOTIFY_DELAY_S = 1e-3  # from a notifying commit to the woken agent's next tick
HOT_LOOP_TICKS = 100  # more ticks than this by one node within one second of simulated time: a busy loop


# --- clocks ----------------------------------------------------------------------------------------------


class DbClock(Clock):
    """The database's clock: the global simulated time."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def now(self) -> datetime:
        return BASE + timedelta(seconds=self.sim.t)

    def monotonic(self) -> float:
        return self.sim.t

    def sleep(self, seconds: float) -> None:
        raise AssertionError("the store must not sleep")


class NodeClock(Clock):
    """One node's view of time: its own monotonic origin and a wall clock that can jump."""

    def __init__(self, sim: Sim, mono_offset: float, wall_offset: float = 0.0) -> None:
        self.sim = sim
        self.mono_offset = mono_offset
        self.wall_offset = wall_offset

    def now(self) -> datetime:
        return BASE + timedelta(seconds=self.sim.t + self.wall_offset)

    def monotonic(self) -> float:
        return self.sim.t + self.mono_offset

    def sleep(self, seconds: float) -> None:
        raise AssertionError("the runtime must never sleep")

    def jump_wall(self, seconds: float) -> None:
        self.wall_offset += seconds


# --- the shared store, with the epoch rules checked -------------------------------------------------------


@dataclass(frozen=True)
class Acquire:
    t: float
    node: str
    epoch: int
    previous_holder: str | None
    handed_over: bool  # handover_to named the winner


class CheckedStore(InMemoryStore):
    """The product's in-memory store, with every successful ACQUIRE recorded and its epoch step checked."""

    def __init__(self, sim: Sim, keepalive_s: float) -> None:
        super().__init__(DbClock(sim), keepalive_s)
        self.sim = sim
        self.acquires: list[Acquire] = []

    def try_acquire(self, node_id: str, expected_epoch: int, ttl_s: float) -> int | None:
        before, holder, handover = self.epoch, self.holder, self.handover_to
        got = super().try_acquire(node_id, expected_epoch, ttl_s)
        if got is None:
            if self.epoch != before:
                self.sim.fail(f"a failed acquire changed the epoch {before} -> {self.epoch}")
        else:
            if got != before + 1 or self.epoch != got or self.holder != node_id:
                self.sim.fail(f"acquire by {node_id}: epoch {before} -> {self.epoch} (returned {got})")
            self.acquires.append(Acquire(self.sim.t, node_id, got, holder, handover == node_id))
        return got


# --- per-node services and store ---------------------------------------------------------------------------


class SimServices(ServiceManager):
    """Records the intervals during which this node's primary-only services run."""

    def __init__(self, sim: Sim, node_id: str) -> None:
        self.sim = sim
        self.node_id = node_id
        self.role: str | None = None
        self.intervals: list[list[float | None]] = []  # [start, stop or None]

    @property
    def primary(self) -> bool:
        return self.role == "primary"

    def start(self, role: str) -> list[str]:
        if role == "primary" and self.role != "primary":
            self.intervals.append([self.sim.t, None])
        elif role != "primary" and self.role == "primary":
            self.intervals[-1][1] = self.sim.t
        self.role = role
        return self.running()

    def stop(self) -> list[str]:
        was = self.running()
        if self.role == "primary":
            self.intervals[-1][1] = self.sim.t
        self.role = None
        return was

    def wanted(self, role: str) -> list[str]:
        return []

    def running(self) -> list[str]:
        return {"primary": ["web", "scheduler"], "standby": ["web"]}.get(self.role or "", [])


class SimFence:
    """Until when (on its node's monotonic clock) the node's primary-only services may act."""

    def __init__(self) -> None:
        self.until: float | None = None
        self.epoch: int | None = None

    def grant(self, until_monotonic: float, epoch: int, timeline: int | None = None) -> None:
        self.until, self.epoch = until_monotonic, epoch

    def revoke(self) -> None:
        self.until = self.epoch = None


class NodeStore(HaStore):
    """One node's connection to the shared store: injects that node's partition, latency and lost replies."""

    def __init__(self, sim: Sim, node: SimNode) -> None:
        self.sim = sim
        self.node = node

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        node = self.node
        name = fn.__name__
        node.calls += 1
        if node.partitioned:
            self.sim.block(node, node.partition_delay)
            raise StoreUnavailable(f"{node.node_id}: the database cannot be reached")
        if name in node.broken_methods:
            raise StoreUnavailable(f"{node.node_id}: {name} failed")
        error: Exception | None = None
        result = None
        try:
            result = fn(*args)  # the effect: at the start of the call
        except (StoreUnavailable, NotRegistered) as exc:
            error = exc
        lost = node.lose_replies > 0
        if lost:
            node.lose_replies -= 1
        slow = node.slow_methods is None or name in node.slow_methods
        self.sim.block(node, node.latency if slow else 0.0)  # the reply arrives later
        if lost:
            raise StoreUnavailable(f"{node.node_id}: the reply was lost")
        if error is not None:
            raise error
        return result

    def heartbeat(self, node_id: str) -> None:
        self._call(self.sim.store.heartbeat, node_id)

    def snapshot(self) -> ClusterView:
        view: ClusterView = self._call(self.sim.store.snapshot)
        return view

    def try_acquire(self, node_id: str, expected_epoch: int, ttl_s: float) -> int | None:
        epoch: int | None = self._call(self.sim.store.try_acquire, node_id, expected_epoch, ttl_s)
        return epoch

    def renew(self, node_id: str, epoch: int, ttl_s: float) -> bool:
        return bool(self._call(self.sim.store.renew, node_id, epoch, ttl_s))

    def release(self, node_id: str, epoch: int, handover_to: str | None) -> bool:
        return bool(self._call(self.sim.release, node_id, epoch, handover_to))

    def request_handover(self, target: str | None, *, event: NewEvent | None = None) -> None:
        self._call(self.sim.request_handover, target)

    def set_admin_state(self, node_id: str, state: str, *, event: NewEvent | None = None) -> None:
        self._call(self.sim.set_admin_state, node_id, state)

    def set_setting(self, key: str, value: str, *, event: NewEvent | None = None) -> None:
        self._call(self.sim.set_setting, key, value)

    def rename(self, node_id: str, name: str) -> None:
        self._call(self.sim.store.rename, node_id, name)

    def set_priority(self, node_id: str, priority: int, *, event: NewEvent | None = None) -> None:
        self._call(self.sim.store.set_priority, node_id, priority)

    def seed_settings(self, values: dict[Setting, str]) -> None:
        self._call(self.sim.store.seed_settings, values)

    def register_node(self, me: NodeIdentity, *, role: str, product_version: str) -> Registration:
        done: Registration = self._call(
            lambda: self.sim.store.register_node(me, role=role, product_version=product_version))
        return done

    def undo_registration(self, me: NodeIdentity, done: Registration) -> None:
        self._call(self.sim.store.undo_registration, me, done)

    def unregister_node(self, node_id: str, *, event: NewEvent | None = None) -> None:
        self._call(lambda: self.sim.store.unregister_node(node_id, event=event))

    def set_boot_start(self, node_id: str, mode: str, *, event: NewEvent | None = None) -> None:
        self._call(lambda: self.sim.store.set_boot_start(node_id, mode, event=event))

    # Events, notifications and join codes: not part of the HA loop; passed on as they are.

    def issue_join_code(self, code_id: str, secret_hash: bytes, issued_by: str, lifetime_s: float) -> None:
        self._call(self.sim.store.issue_join_code, code_id, secret_hash, issued_by, lifetime_s)

    def join_codes(self) -> list[JoinCodeInfo]:
        return list(self._call(self.sim.store.join_codes))

    def revoke_join_code(self, code_id: str) -> bool:
        return bool(self._call(self.sim.store.revoke_join_code, code_id))

    def claim_join_code(self, code_id: str, secret_hash: bytes, hardware_id: str, *,
                        max_failures: int) -> ClaimOutcome:
        outcome: ClaimOutcome = self._call(lambda: self.sim.store.claim_join_code(
            code_id, secret_hash, hardware_id, max_failures=max_failures))
        return outcome

    def use_join_code(self, code_id: str, hardware_id: str, node_name: str) -> None:
        self._call(self.sim.store.use_join_code, code_id, hardware_id, node_name)

    def outstanding_join_codes(self, issued_by: str) -> float | None:
        left: float | None = self._call(self.sim.store.outstanding_join_codes, issued_by)
        return left

    def record_events(self, events: Sequence[NewEvent], *, deliver_by: str | None) -> list[str]:
        return list(self._call(lambda: self.sim.store.record_events(events, deliver_by=deliver_by)))

    def events(self, *, since_s: float | None = None, limit: int = 50, kind: str | None = None) -> list[Event]:
        return list(self._call(lambda: self.sim.store.events(since_s=since_s, limit=limit, kind=kind)))

    def claim_deliveries(self, node_id: str, channels: Sequence[str], *, liveness_s: float, claim_s: float,
                         limit: int = 8, busy: Sequence[tuple[int, str]] = ()) -> Claimed:
        claimed: Claimed = self._call(lambda: self.sim.store.claim_deliveries(
            node_id, channels, liveness_s=liveness_s, claim_s=claim_s, limit=limit, busy=busy))
        return claimed

    def finish_delivery(self, event_seq: int, channel: str, node_id: str, *, delivered: bool,
                        error: str | None = None, retry_in_s: float | None = None) -> bool:
        return bool(self._call(lambda: self.sim.store.finish_delivery(
            event_seq, channel, node_id, delivered=delivered, error=error, retry_in_s=retry_in_s)))

    def notify_channels(self) -> Channels:
        channels: Channels = self._call(self.sim.store.notify_channels)
        return channels

    def set_notify_channel(self, channel: str, config: str | None, secrets: dict[str, bytes | None], *,
                           event: NewEvent | None = None) -> None:
        self._call(lambda: self.sim.store.set_notify_channel(channel, config, secrets, event=event))


# --- one in-flight tick ------------------------------------------------------------------------------------


class HotLoop(AssertionError):
    """A node ticks far more often than any decision asks: a busy loop (e.g. woken by its own NOTIFY)."""

    def __init__(self, message: str, node_id: str) -> None:
        super().__init__(message)
        self.node_id = node_id


class _Killed(BaseException):
    """Unwinds a node's in-flight tick when the node crashes (not an Exception: nothing may catch it)."""


class _Task:
    """Runs ``fn`` either inline, or in a thread that alternates strictly with the scheduler."""

    def __init__(self, fn: Callable[[], Decision], threaded: bool) -> None:
        self.fn = fn
        self.threaded = threaded
        self.done = False
        self.result: Decision | None = None
        self.error: BaseException | None = None
        self.resume_at: float | None = None
        self._kill = False
        if threaded:
            self._go = threading.Semaphore(0)
            self._back = threading.Semaphore(0)
            self._thread = threading.Thread(target=self._main, daemon=True)
            self._thread.start()

    def _main(self) -> None:
        self._go.acquire()
        self._run()
        self._back.release()

    def _run(self) -> None:
        try:
            self.result = self.fn()
        except _Killed:
            pass
        except BaseException as exc:
            self.error = exc
        self.done = True

    def step(self) -> None:
        """Scheduler side: let the task run until it blocks in a store call or ends."""
        if self.threaded:
            self._go.release()
            self._back.acquire()
        else:
            self._run()
        if self.error is not None:
            raise self.error

    def block(self, until: float) -> None:
        """Task side: wait (in simulated time) until ``until``."""
        if not self.threaded:
            raise AssertionError("a store call blocked in a tick that was started inline")
        self.resume_at = until
        self._back.release()
        self._go.acquire()
        self.resume_at = None
        if self._kill:
            raise _Killed()

    def kill(self) -> None:
        if self.done or not self.threaded:  # an inline task is never left half-run
            return
        self._kill = True
        self.step()
        self._thread.join()


# --- nodes and the simulation -------------------------------------------------------------------------------


@dataclass
class SimNode:
    node_id: str
    priority: int
    services: SimServices
    clock: NodeClock | None = None
    runtime: Runtime | None = None
    fence: SimFence = field(default_factory=SimFence)
    state: str = "down"  # up | crashed | stopped | down (never started)
    token: int = 0  # the one outstanding activation event carries the current token
    task: _Task | None = None
    task_kind: str = "tick"
    task_started: float = 0.0
    resumed_at: float = float("-inf")  # the end of its last pause
    paused: bool = False
    pause_id: int = 0
    deferred: bool = False
    stop_requested: bool = False
    partitioned: bool = False
    partitioned_until: float = 0.0
    partition_delay: float = 0.0
    latency: float = 0.0
    slow_methods: frozenset[str] | None = None  # None: every store call is slow
    lose_replies: int = 0
    broken_methods: frozenset[str] = frozenset()  # these calls fail (no effect) at once
    stopped_blind: bool = False  # its clean stop ran without a view of the store (see Sim.label)
    boots: int = 0
    calls: int = 0
    ticks: int = 0
    notified: bool = False  # a notification arrived while it was busy or paused
    last_decision: Decision | None = None
    recent_ticks: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Overlap:
    """An instant at which two or more nodes ran primary-only services; label per node (see :meth:`Sim.label`)."""

    t: float
    labels: tuple[tuple[str, str], ...]

    def unexplained(self, excused: frozenset[str]) -> bool:
        """True if, leaving out the nodes whose label is ``excused``, two nodes still run them."""
        return sum(1 for _, label in self.labels if label not in excused) > 1


@dataclass
class Stats:
    acting_violations: list[Overlap] = field(default_factory=list)  # two nodes ACTING (fence open)
    weak_violations: list[Overlap] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)
    # max time a node kept primary-only services running after its trust window ended, by its state
    late_fence: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    stop_left_running: list[tuple[float, str, bool]] = field(default_factory=list)  # (t, node, DB unreachable)


class Sim:
    def __init__(self, keepalive_s: float = 10.0, notify: bool = True) -> None:
        self.t = 0.0
        self.notify_enabled = notify
        self.notifications = 0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.store = CheckedStore(self, keepalive_s)
        self.nodes: dict[str, SimNode] = {}
        self.stats = Stats()
        self.disturbed: dict[str, list[list[float]]] = {}  # node -> [start, end] of faults that hit it
        self._open: dict[tuple[str, str], list[float]] = {}  # (node, kind) -> its open disturbance
        self.keepalive_seen = {keepalive_s}
        self.last_epoch = 0
        self.healed = False
        self.agent_stops_services = True  # Agent.run calls services.stop() after Runtime.stop()
        self.trace: list[str] = []  # a short human-readable log (kept for failure messages)

    # --- set-up --------------------------------------------------------------------------------------------

    def add_node(self, node_id: str, priority: int) -> SimNode:
        node = SimNode(node_id, priority, SimServices(self, node_id))
        self.nodes[node_id] = node
        self.disturbed[node_id] = []
        self.store.register(node_id, node_id.upper(), priority)
        return node

    def fail(self, message: str) -> None:
        self.stats.problems.append(f"t={self.t:.3f}: {message}")

    def log(self, message: str) -> None:
        if len(self.trace) < 4000:
            self.trace.append(f"{self.t:9.3f} {message}")

    # --- the event loop ------------------------------------------------------------------------------------

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (max(t, self.t), self._seq, fn))

    def run_until(self, t_end: float) -> None:
        while self._events and self._events[0][0] <= t_end:
            t, _, fn = heapq.heappop(self._events)
            self.t = t
            self.check()
            fn()
            self.check()
        self.t = max(self.t, t_end)
        self.check()

    def close(self) -> None:
        """Unwind every in-flight tick (their threads end)."""
        for node in self.nodes.values():
            if node.task is not None:
                node.task.kill()
                node.task = None

    # --- a node's activations --------------------------------------------------------------------------------

    def _schedule(self, node: SimNode, at: float) -> None:
        node.token += 1
        token = node.token
        self.at(at, lambda: self._activate(node, token))

    def _activate(self, node: SimNode, token: int) -> None:
        if token != node.token or node.state != "up":
            return
        if node.paused:
            node.deferred = True
            return
        assert node.runtime is not None
        if node.task is None:
            kind = "stop" if node.stop_requested else "tick"
            runtime = node.runtime
            fn = runtime.stop if kind == "stop" else runtime.tick
            threaded = node.latency > 0 or (node.partitioned and node.partition_delay > 0)
            node.recent_ticks = [t for t in node.recent_ticks if t > self.t - 1.0] + [self.t]
            if len(node.recent_ticks) > HOT_LOOP_TICKS:
                raise HotLoop(f"t={self.t:.3f}: {node.node_id} ticked {len(node.recent_ticks)} times within 1 s\n"
                              + "\n".join(self.trace[-30:]), node.node_id)
            node.task, node.task_kind, node.task_started = _Task(fn, threaded), kind, self.t
            node.ticks += 1
        task = node.task
        task.step()
        if task.done:
            node.task = None
            assert task.result is not None
            self._finish(node, node.task_kind, task.result)
        else:
            assert task.resume_at is not None
            self._schedule(node, task.resume_at)

    def _finish(self, node: SimNode, kind: str, decision: Decision) -> None:
        assert node.runtime is not None
        node.last_decision = decision
        self.log(f"{node.node_id} {kind}: {decision.action.value}: {decision.reason}")
        if kind == "stop":
            node.state, node.stop_requested = "stopped", False
            node.token += 1
            if node.services.primary:  # Runtime.stop() did not stop them (the agent does, just below)
                node.stopped_blind = node.runtime.view is None
                self.stats.stop_left_running.append((self.t, node.node_id, node.stopped_blind))
            if self.agent_stops_services:
                node.services.stop()
            if self.healed:
                self.restart(node.node_id)
            return
        if node.stop_requested:
            self._schedule(node, self.t)
            return
        if node.notified:
            node.notified = False
            self._schedule(node, self.t + NOTIFY_DELAY_S)
            return
        keepalive = node.runtime.keepalive_s
        wake = keepalive if decision.wake_in_s is None else min(decision.wake_in_s, keepalive)
        self._schedule(node, self.t + max(wake, MIN_WAKE_S))

    def block(self, node: SimNode, seconds: float) -> None:
        """Called from inside a store call: the caller waits ``seconds`` of simulated time."""
        if seconds <= 0:
            return
        assert node.task is not None
        node.task.block(self.t + seconds)

    # --- the store operations that notify -----------------------------------------------------------------------

    def notify_all(self) -> None:
        """What a committed ``pg_notify`` does to every listening agent."""
        if not self.notify_enabled:
            return
        self.notifications += 1
        for node in self.nodes.values():
            if node.state != "up" or node.partitioned:
                continue
            if node.paused or node.task is not None:
                node.notified = True
            else:
                self._schedule(node, self.t + NOTIFY_DELAY_S)

    def release(self, node_id: str, epoch: int, handover_to: str | None) -> bool:
        released = self.store.release(node_id, epoch, handover_to)
        if released:
            self.notify_all()
        return released

    def request_handover(self, target: str | None) -> None:
        self.store.request_handover(target)
        self.notify_all()

    def set_admin_state(self, node_id: str, state: str) -> None:
        self.store.set_admin_state(node_id, state)
        self.notify_all()

    def set_setting(self, key: str, value: str) -> None:
        self.store.set_setting(key, value)
        self.notify_all()

    # --- faults and operations -----------------------------------------------------------------------------------

    def _disturb(self, node_id: str, until: float | None, kind: str = "") -> None:
        """Record that a fault hits ``node_id`` from now until ``until`` (None: until ended by ``kind``)."""
        span = [self.t, until if until is not None else float("inf")]
        self.disturbed[node_id].append(span)
        if until is None:
            self._open[(node_id, kind)] = span

    def _end_disturbance(self, node_id: str, kind: str) -> None:
        span = self._open.pop((node_id, kind), None)
        if span is not None:
            span[1] = self.t

    def start(self, node_id: str, at: float = 0.0) -> None:
        self.at(at, lambda: self.restart(node_id))

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.state == "up":
            return
        self._end_disturbance(node_id, "down")
        node.boots += 1
        node.clock = NodeClock(self, mono_offset=1000.0 * node.boots + 7.25 * len(node_id) * node.boots)
        node.fence = SimFence()
        node.runtime = Runtime(self.node_store(node), node_id, node.services, node.clock, fence=node.fence)
        node.runtime.start()
        node.state, node.paused, node.deferred, node.stop_requested = "up", False, False, False
        node.stopped_blind = False
        self.log(f"{node_id} boots")
        self._schedule(node, self.t)

    def node_store(self, node: SimNode) -> HaStore:
        """A node's connection to the store (the database-pair model gives one that chooses a node)."""
        return NodeStore(self, node)

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.state != "up":
            return
        if node.task is not None:
            node.task.kill()
            node.task = None
        node.services.stop()  # the services die with the node
        node.state, node.paused, node.deferred, node.stop_requested = "crashed", False, False, False
        node.token += 1
        self._disturb(node_id, None, "down")
        self.log(f"{node_id} crashes")

    def request_stop(self, node_id: str) -> None:
        """SIGTERM: a clean stop after the tick in flight (or after the pause, if paused)."""
        node = self.nodes[node_id]
        if node.state != "up" or node.stop_requested:
            return
        node.stop_requested = True
        self._disturb(node_id, None, "down")
        self.log(f"{node_id} asked to stop")
        if node.task is None:
            if node.paused:
                node.token += 1
                node.deferred = True
            else:
                self._schedule(node, self.t)

    def pause(self, node_id: str, seconds: float) -> None:
        node = self.nodes[node_id]
        if node.state != "up" or node.paused:
            return
        node.paused = True
        node.pause_id += 1
        pause_id = node.pause_id
        self._disturb(node_id, self.t + seconds)
        self.log(f"{node_id} paused for {seconds:.2f} s")
        self.at(self.t + seconds, lambda: self.resume(node_id, pause_id))

    def resume(self, node_id: str, pause_id: int | None = None) -> None:
        node = self.nodes[node_id]
        if not node.paused or (pause_id is not None and pause_id != node.pause_id):
            return
        node.paused, node.resumed_at = False, self.t
        self.log(f"{node_id} resumes")
        if node.deferred:  # the tick (or the reply) it missed runs the moment it resumes
            node.deferred = False
            self._activate(node, node.token)
        elif node.notified and node.task is None:
            node.notified = False
            self._schedule(node, self.t + NOTIFY_DELAY_S)

    def partition(self, node_id: str, seconds: float, delay: float = 0.0) -> None:
        node = self.nodes[node_id]
        until = max(self.t + seconds, node.partitioned_until if node.partitioned else self.t)
        node.partitioned, node.partition_delay, node.partitioned_until = True, delay, until
        self._disturb(node_id, until + delay)
        self.log(f"{node_id} cut off from the database for {seconds:.2f} s")

        def heal() -> None:
            if self.t >= node.partitioned_until:  # not while a later, overlapping partition lasts
                node.partitioned = False

        self.at(until, heal)

    def slow(self, node_id: str, latency: float, seconds: float, methods: frozenset[str] | None = None) -> None:
        node = self.nodes[node_id]
        node.latency, node.slow_methods = latency, methods
        self._disturb(node_id, self.t + seconds + latency)
        self.log(f"{node_id} store calls take {latency:.2f} s for {seconds:.2f} s")

        def heal() -> None:
            if node.latency == latency:
                node.latency = 0.0

        self.at(self.t + seconds, heal)

    def break_calls(self, node_id: str, methods: frozenset[str], seconds: float) -> None:
        """Only ``methods`` fail for ``seconds`` (a statement timeout on one query, a locked row, ...)."""
        node = self.nodes[node_id]
        node.broken_methods = methods
        self._disturb(node_id, self.t + seconds)
        self.log(f"{node_id} {', '.join(sorted(methods))} calls fail for {seconds:.2f} s")

        def heal() -> None:
            node.broken_methods = frozenset()

        self.at(self.t + seconds, heal)

    def lose_replies(self, node_id: str, count: int) -> None:
        node = self.nodes[node_id]
        node.lose_replies += count
        self._disturb(node_id, self.t + 2 * self.keepalive_max)
        self.log(f"{node_id} loses its next {count} replies")

    def jump_wall(self, node_id: str, seconds: float) -> None:
        node = self.nodes[node_id]
        if node.clock is not None:
            node.clock.jump_wall(seconds)
            self.log(f"{node_id} wall clock jumps {seconds:+.0f} s")

    def set_keepalive(self, seconds: float) -> None:
        self.set_setting("keepalive_interval_s", str(seconds))
        self.keepalive_seen.add(seconds)
        self.log(f"keepalive -> {seconds}")

    def set_maintenance(self, on: bool) -> None:
        self.set_setting("maintenance", "on" if on else "off")
        self.log(f"maintenance {'on' if on else 'off'}")

    def switchover(self, target: str | None) -> None:
        self.request_handover(target)
        self.log(f"switchover to {target} requested")

    def set_admin(self, node_id: str, state: str) -> None:
        self.set_admin_state(node_id, state)
        if state == "stopped":
            self._disturb(node_id, None, "admin")
        else:
            self._end_disturbance(node_id, "admin")
        self.log(f"{node_id} admin state {state}")

    @property
    def keepalive_max(self) -> float:
        return max(self.keepalive_seen)

    def heal(self) -> None:
        """Every fault ends now: resume, reconnect, speed up, restart, maintenance off, admin active."""
        self.healed = True
        self.request_handover(None)
        self.set_maintenance(False)
        for node_id, node in self.nodes.items():
            node.partitioned, node.latency, node.lose_replies = False, 0.0, 0
            node.broken_methods = frozenset()
            if node.paused:
                self.resume(node_id)
            self.set_admin_state(node_id, "active")
            if node.state in ("crashed", "stopped"):
                self.restart(node_id)
        for key in list(self._open):
            self._end_disturbance(*key)
        self.log("all faults healed")

    # --- invariants -----------------------------------------------------------------------------------------------

    def trusted(self, node: SimNode) -> bool:
        """The node's trust window has not ended (judged on the node's own clock, as the runtime does)."""
        if node.runtime is None or node.clock is None or node.state == "crashed":
            return False
        until = node.runtime.local.trusted_until
        return until is not None and node.clock.monotonic() < until

    def fence_open(self, node: SimNode) -> bool:
        """The node's primary-only services may act now (its fence's deadline has not passed)."""
        until = node.fence.until
        return node.clock is not None and until is not None and node.clock.monotonic() < until

    def trust_end(self, node: SimNode) -> float | None:
        if node.runtime is None or node.clock is None or node.runtime.local.trusted_until is None:
            return None
        return node.runtime.local.trusted_until - node.clock.mono_offset

    def label(self, node: SimNode) -> str:
        """Why a node with primary-only services running is (not) entitled to them now."""
        if self.trusted(node):
            return "trusted"
        if node.state == "stopped":  # the agent exited (clean stop) and left them running
            return "exited-blind" if node.stopped_blind else "exited"
        end = self.trust_end(node)
        if node.paused or (end is not None and node.resumed_at >= end):
            return "paused"  # SIGSTOP when its window ended (it has not got round to checking since)
        if node.task is not None:
            return "in-call"  # blocked in a store call: it cannot check either
        return "idle"  # sleeping between ticks past its trust window: its own scheduling

    def check(self) -> None:
        """Invariants at this instant.

        * acting (must always hold): no two nodes whose primary-only services run with an open fence;
        * weak (must always hold): no two nodes with primary-only services running whose trust windows
          have both not ended;
        * strong (recorded with the cause): no two nodes with primary-only services running at all;
        * late self-fencing (recorded by cause): services running after the node's trust window ended;
        * the store's epoch never decreases.
        """
        running = [n for n in self.nodes.values() if n.services.primary]
        if running:
            labels = tuple((n.node_id, self.label(n)) for n in running)
            if len(running) > 1:
                overlap = Overlap(self.t, labels)
                self.stats.overlaps.append(overlap)
                if sum(1 for _, lab in labels if lab == "trusted") > 1:
                    self.stats.weak_violations.append(overlap)
                if sum(1 for n in running if self.fence_open(n)) > 1:
                    self.stats.acting_violations.append(overlap)
            for n, (_, lab) in zip(running, labels, strict=True):
                if lab != "trusted":
                    end = self.trust_end(n)
                    late = self.t - end if end is not None else float("inf")
                    if late > self.stats.late_fence.get(lab, 0.0):
                        self.stats.late_fence[lab] = late
        epoch = self.store.epoch
        if epoch < self.last_epoch:
            self.fail(f"the epoch went back from {self.last_epoch} to {epoch}")
        self.last_epoch = epoch

    # --- after the run ------------------------------------------------------------------------------------------

    def overlap_seconds(self) -> float:
        """Total time during which two nodes ran primary-only services (exact, from the service logs)."""
        spans = [(s, e if e is not None else self.t) for n in self.nodes.values()
                 for s, e in n.services.intervals if s is not None]
        events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
        total, depth, last = 0.0, 0, 0.0
        for t, delta in events:
            if depth > 1:
                total += t - last
            depth += delta
            last = t
        return total

    def unexplained_switches(self, window: float) -> list[Acquire]:
        """Changes of holder that no fault, stop, admin action or handover explains (a needless switch,
        including an automatic failback): the previous holder was undisturbed for ``window`` seconds."""
        out = []
        for acq in self.store.acquires:
            prev = acq.previous_holder
            if prev is None or prev == acq.node or acq.handed_over:
                continue
            if any(s <= acq.t and e >= acq.t - window for s, e in self.disturbed[prev]):
                continue
            out.append(acq)
        return out

    def convergence_error(self, all_up: bool = True) -> str | None:
        """None if exactly one node runs the primary-only services, holds the lease, and all others are
        standbys (and up, if ``all_up``); else what is wrong."""
        holder, epoch = self.store.lease_row()
        running = [n.node_id for n in self.nodes.values() if n.services.primary]
        if holder is None:
            return f"nobody holds the lease (primary services run on {running})"
        if running != [holder]:
            return f"primary services run on {running}, the lease is held by {holder}"
        view = self.store.snapshot()
        if view.lease.expired:
            return f"the lease of {holder} has expired ({view.lease.remaining_s})"
        node = self.nodes[holder]
        assert node.runtime is not None
        if not node.runtime.local.acting or node.runtime.local.epoch != epoch or not self.trusted(node):
            return f"{holder} holds the lease at epoch {epoch} but its local state is {node.runtime.local}"
        for other in self.nodes.values():
            down = all_up and other.state != "up"
            if other.node_id != holder and (down or (other.state == "up" and other.runtime.local.acting)):
                return f"{other.node_id} is {other.state}, acting={other.runtime and other.runtime.local.acting}"
        return None

    def in_resign_loop(self) -> bool:
        """The known busy loop: the lease is released to a planned successor that does not take it, and its
        holder keeps deciding RESIGN again (each release NOTIFYs everyone, itself included)."""
        holder = self.store.holder
        view = self.store.snapshot()
        last = self.nodes[holder].last_decision if holder in self.nodes else None
        return (view.lease.expired and view.lease.handover_to is not None and last is not None
                and last.action is Action.RESIGN)

    def primary_starts(self) -> list[tuple[float, str]]:
        return sorted((s, n.node_id) for n in self.nodes.values() for s, _ in n.services.intervals if s is not None)


def new_sim(priorities: list[int], keepalive_s: float = 10.0, phases: list[float] | None = None,
            notify: bool = True) -> Sim:
    """A cluster of ``len(priorities)`` nodes n0, n1, ... booting at ``phases`` (default: all at 0)."""
    sim = Sim(keepalive_s, notify)
    for i, prio in enumerate(priorities):
        sim.add_node(f"n{i}", prio)
        sim.start(f"n{i}", (phases or [0.0] * len(priorities))[i])
    return sim


# --- drawn fault schedules ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    t: float  # in units of the initial keepalive interval I
    kind: str
    node: int
    arg: float = 0.0  # a duration in I, a latency in I, a count, a keepalive in seconds, ...
    arg2: float = 0.0


FAULT_KINDS = ("crash", "restart", "pause", "partition", "slow", "lose", "jump", "keepalive", "maintenance",
               "switchover", "stop", "admin", "break")
BREAKABLE = ("renew", "snapshot", "try_acquire", "release")  # "break" arg2 indexes this


def apply(sim: Sim, fault: Fault, keepalive_s: float) -> None:
    """Schedule ``fault``; its times and durations are in units of the initial keepalive interval."""
    ids = list(sim.nodes)
    span, arg2 = fault.arg * keepalive_s, fault.arg2 * keepalive_s

    def later(fn: Callable[[], None]) -> None:
        if span > 0:
            sim.at(sim.t + span, fn)

    def strike() -> None:
        if fault.node >= 0:
            node_id = ids[fault.node % len(ids)]
        else:  # a negative index: whoever holds the lease when the fault strikes
            node_id = sim.store.lease_row()[0] or ids[0]
        kind = fault.kind
        if kind == "crash":
            sim.crash(node_id)
            later(lambda: sim.restart(node_id))
        elif kind == "restart":
            sim.restart(node_id)
        elif kind == "pause":
            sim.pause(node_id, span)
        elif kind == "partition":
            sim.partition(node_id, span, arg2)
        elif kind == "slow":
            sim.slow(node_id, arg2, span)
        elif kind == "lose":
            sim.lose_replies(node_id, int(fault.arg))
        elif kind == "jump":
            sim.jump_wall(node_id, fault.arg)
        elif kind == "keepalive":
            sim.set_keepalive(fault.arg)
        elif kind == "maintenance":
            sim.set_maintenance(True)
            later(lambda: sim.set_maintenance(False))
        elif kind == "switchover":
            sim.switchover(node_id)
        elif kind == "stop":
            sim.request_stop(node_id)
            later(lambda: sim.restart(node_id))
        elif kind == "admin":
            sim.set_admin(node_id, "stopped")
            later(lambda: sim.set_admin(node_id, "active"))
        elif kind == "break":
            sim.break_calls(node_id, frozenset({BREAKABLE[int(fault.arg2) % len(BREAKABLE)]}), span)
        else:  # pragma: no cover
            raise ValueError(kind)

    sim.at(fault.t * keepalive_s, strike)
