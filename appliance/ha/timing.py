"""Every rule derived from the keepalive interval I, in one place. Pure: no I/O, no clock.

I is a cluster setting (``ha set keepalive-interval``, 1-30 s). From it follow:

* **liveness**: a node is online while its last heartbeat is at most ``2·I`` old, measured by the
  database's clock (``now() - last_heartbeat``), so no two nodes' clocks are ever compared;
* **the lease**: it lasts ``2·I`` from each renewal (database clock), and the holder renews every
  ``I/2``, counted from the *start* of its previous renewal;
* **the trust window**: the holder acts as primary only until ``renewal start + 1.5·I`` on its own
  monotonic clock, so it has stopped (self-fenced) half an interval before anyone else can take the
  lease, even if it was paused, starved or cut off; a pause of up to one interval costs it nothing
  (``1.5·I - I/2``);
* **a change of I**: while a new interval spreads, liveness is judged by the longer of the old and
  the new one, for ``2·`` the longer of them, so nobody is judged dead by a node that adopted the
  shorter interval first;
* **grace windows**: after regaining the database nobody is judged dead for ``1·I`` (the previous
  holder may renew first); after the database failed over to another node, for ``2·I``;
* **database timeouts**: a statement of the HA loop must end within ``I/2`` (at most 5 s), so a slow
  renewal shows as a clear failure well inside the trust window.

The stores, the runtime, the agent, the shell's reports, ``redirect`` and the registration all take
these rules from here; the factors are named so a reader finds "2·I" and "1.5·I" in one module.
"""

from __future__ import annotations

from appliance.db.target import Timeouts

KEEPALIVE_RANGE_S = (1, 30)  # what ``ha set keepalive-interval`` accepts
DEFAULT_KEEPALIVE_S = 10.0  # the schema's default, and the agent's assumption before its first snapshot

ONLINE_FACTOR = 2.0  # online while the last heartbeat is at most this many intervals old
LEASE_TTL_FACTOR = 2.0  # lease lifetime, in intervals
TRUST_FACTOR = 1.5  # how long the holder may act after the start of a successful renewal
RENEW_FACTOR = 0.5  # the holder renews this often (in intervals), from the start of the last renewal
REGAIN_GRACE_FACTOR = 1.0  # nobody judged dead for this long after the database is back
DB_FAILOVER_GRACE_FACTOR = 2.0  # ... and for this long after the database failed over to another node
SWITCHOVER_WAIT_FACTOR = 3.0  # a planned switchover must complete within 3·I (+ SWITCHOVER_SLACK_S)
SWITCHOVER_SLACK_S = 2.0
STATEMENT_FACTOR = 0.5  # an HA statement must end within I/2 ...
STATEMENT_CAP_S = 5.0  # ... and never take longer than this
STATEMENT_FLOOR_S = 0.5  # PostgreSQL needs some time even for a tiny statement on a loaded host
WAKE_SLACK_S = 0.05  # a standby next in line wakes this long after the lease's expiry
LOOP_STALE_FACTOR = 2.0  # the agent's loop counts as stuck when no tick ended for this many intervals ...
LOOP_STALE_SLACK_S = 10.0  # ... plus this long (a tick against a dead database waits for its timeouts)


def online_window_s(keepalive_s: float) -> float:
    """How old a heartbeat may be for its node to count as online."""
    return ONLINE_FACTOR * keepalive_s


def is_online(heartbeat_age_s: float | None, keepalive_s: float) -> bool:
    """Heard from within the online window (``heartbeat_age_s`` by the database clock; None: never)."""
    return heartbeat_age_s is not None and heartbeat_age_s <= online_window_s(keepalive_s)


def loop_stale_s(keepalive_s: float) -> float:
    """How long after its last finished tick the agent's loop counts as stuck (``GET /health``): a tick
    waits at most one interval, and one against an unreachable database waits for its connect and
    statement timeouts."""
    return LOOP_STALE_FACTOR * keepalive_s + LOOP_STALE_SLACK_S


def lease_ttl_s(keepalive_s: float) -> float:
    return LEASE_TTL_FACTOR * keepalive_s


def trust_s(keepalive_s: float) -> float:
    return TRUST_FACTOR * keepalive_s


def renew_every_s(keepalive_s: float) -> float:
    return RENEW_FACTOR * keepalive_s


def regain_grace_s(keepalive_s: float) -> float:
    return REGAIN_GRACE_FACTOR * keepalive_s


def db_failover_grace_s(keepalive_s: float) -> float:
    return DB_FAILOVER_GRACE_FACTOR * keepalive_s


def switchover_wait_s(keepalive_s: float) -> float:
    return SWITCHOVER_WAIT_FACTOR * keepalive_s + SWITCHOVER_SLACK_S


def change_spreading(previous_s: float, current_s: float, since_change_s: float) -> bool:
    """Whether a change of the interval from ``previous_s`` to ``current_s`` may still be spreading:
    for two of the longer intervals after it, some node may still beat at the old one."""
    return since_change_s <= online_window_s(max(previous_s, current_s))


def judge_keepalive_s(current_s: float, previous: tuple[float, float] | None) -> float:
    """The interval liveness is judged by.

    :param current_s: the cluster's interval now.
    :param previous: the interval it replaced and the seconds since the change (by the store's clock),
        or None when it never changed.
    """
    if previous is None:
        return current_s
    previous_s, since_s = previous
    return max(previous_s, current_s) if change_spreading(previous_s, current_s, since_s) else current_s


def previous_to_record(replaced_s: float, earlier: tuple[float, float] | None) -> float:
    """What to record as "the previous interval" when the interval ``replaced_s`` is changed.

    If an earlier change (``earlier`` = its previous interval and the seconds since it) may still be
    spreading, some node may still beat at that older interval: keep the longest of them.
    """
    if earlier is not None and change_spreading(earlier[0], replaced_s, earlier[1]):
        return max(replaced_s, earlier[0])
    return replaced_s


def statement_timeout_s(keepalive_s: float, cap_s: float = 0.0) -> float:
    """The statement timeout of the HA loop at interval I: ``I/2`` (at least 0.5 s, at most 5 s), or the
    configured ``cap_s`` if that is lower (0: no configured value)."""
    derived = min(STATEMENT_CAP_S, max(STATEMENT_FLOOR_S, STATEMENT_FACTOR * keepalive_s))
    return min(derived, cap_s) if cap_s > 0 else derived


def statement_timeout_problem(statement_s: float, keepalive_s: float) -> str | None:
    """Why a configured statement timeout breaks the rule for interval I (None: it does not)."""
    if statement_s > STATEMENT_FACTOR * keepalive_s:
        return (f"must be at most half of the keepalive interval ({keepalive_s:g} s / 2 = "
                f"{STATEMENT_FACTOR * keepalive_s:g} s), got {statement_s:g} s")
    return None


def ha_timeouts(keepalive_s: float = DEFAULT_KEEPALIVE_S, *, statement_cap_s: float = 0.0) -> Timeouts:
    """Timeouts for the HA loop's connections (store, listener, DB probes), scaled to I.

    A statement must end well inside one interval (:func:`statement_timeout_s`): a renewal slower than
    that is worth less than a clear failure. A row lock held by someone else (an idle-in-transaction
    session, a paused process) is given at most 1 s. A dead link is noticed by ``tcp_user_timeout``
    while we send and by keepalives while idle, within seconds rather than the OS's two hours. An open
    transaction of ours never outlives an interval (a process paused mid-transaction must not keep
    the lease row locked).
    """
    statement = statement_timeout_s(keepalive_s, statement_cap_s)
    return Timeouts(
        connect_timeout=2.0,  # per host; psycopg's minimum
        statement_timeout=statement,
        lock_timeout=min(1.0, statement / 2),
        idle_in_transaction_session_timeout=max(1.0, keepalive_s),
        tcp_user_timeout=max(2.0, min(10.0, keepalive_s)),
        keepalives_idle=max(1, min(10, round(keepalive_s))),
        keepalives_interval=1,
        keepalives_count=3,
    )


def report_timeouts() -> Timeouts:
    """Timeouts for the shell's one-off reads and requests (``ha get``, ``ha set``...): a person waits,
    so a dead host costs one connect timeout, not the OS's minutes."""
    return Timeouts(connect_timeout=3.0, statement_timeout=5.0, lock_timeout=2.0, tcp_user_timeout=5.0)
