"""Three real ``appliance-agent`` processes on real PostgreSQL, judged from the outside.

What the tests look at, never at the agents' internals:

* the shared demo log (``appliance/testkit/demolog.py``): every node's primary-only demo service writes a line every
  50 ms while its fence allows it; intervals of two nodes that intersect = two primaries = failure;
* each node's ``agent-status.json`` (state, acting, epoch) and its agent log;
* ``ha get nodes [--json]`` / ``ha switchover`` / ``ha maintenance`` / ``ha stop|start`` run as a user would;
* the lease row in the shared database.

The keepalive interval I is 1 s (set directly in the database). Faults that race the primary's lease are
started at a known point of its renewal cycle (:meth:`HaCluster.at_phase`), so timing bounds are
deterministic; ``bench/ha_failover.py`` measures the same things at random points, many times.
Measured figures are printed at the end of each test (``report``).

Building a cluster costs ~4 s, so the fault tests share one per module (node1 and node3 behind their own
TcpProxy), put back at a baseline before each test (``cluster``: node1 primary, the others SECOND, nothing
cut, paused or stopped; rebuilt if that cannot be reached). The DB failover tests build their own on a
pg_pair.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

import pytest

from appliance.ha.decide import decide
from appliance.ha.model import Action, ClusterView, Lease, Local, NodeState
from appliance.testkit.hacluster import HaCluster

I = 1  # the keepalive interval of these tests, in seconds  # noqa: E741


@pytest.fixture
def report(capsys):
    lines: list[str] = []
    yield lines.append
    if lines:
        with capsys.disabled():
            print("\n    " + "\n    ".join(lines))


@pytest.fixture
def make_cluster(tmp_path, pg_primary):
    """Fresh clusters for one test (the shared database on ``db``, default the session's PostgreSQL)."""
    made: list[HaCluster] = []

    def make(db=None, **kwargs) -> HaCluster:
        cluster = HaCluster(tmp_path / f"cluster{len(made)}", db or pg_primary, local=pg_primary,
                            keepalive_s=I, **kwargs)
        made.append(cluster)
        cluster.build()
        return cluster

    yield make
    for cluster in made:
        cluster.stop_all()


@pytest.fixture(scope="module")
def _module_cluster(tmp_path_factory, pg_primary):
    """One cluster reused by the fault tests of this module (building one costs ~4 s); node1 and node3
    reach the database through their own TcpProxy."""
    box: dict[str, HaCluster] = {}

    def fresh() -> HaCluster:
        if "c" in box:
            box.pop("c").stop_all()
        base = tmp_path_factory.mktemp("hacluster")
        box["c"] = HaCluster(base, pg_primary, local=pg_primary, keepalive_s=I, proxied=["node1", "node3"])
        box["c"].pristine = True  # as built: nothing done to it yet
        return box["c"].build()

    yield box, fresh
    if "c" in box:
        box["c"].stop_all()


@pytest.fixture
def cluster(_module_cluster) -> HaCluster:
    """The module's cluster, back at its baseline: node1 primary, node2 and node3 SECOND, nothing cut,
    stopped or paused (rebuilt from scratch if that cannot be reached)."""
    box, fresh = _module_cluster
    c = box.get("c") or fresh()
    c.pristine = False
    try:
        c.restore_baseline("node1")
    except AssertionError:
        c = fresh()
        assert c.wait_stable() == "node1"
    c.mark()
    return c  # the next test restores the baseline


@pytest.fixture
def new_cluster(_module_cluster) -> HaCluster:
    """The module's cluster as just built (agents started together, nothing done to it yet)."""
    box, fresh = _module_cluster
    c = box.get("c")
    if c is None or not getattr(c, "pristine", False):
        c = fresh()
    c.pristine = False
    return c


def no_two_primaries(c: HaCluster) -> None:
    assert c.overlaps() == [], "TWO PRIMARIES at once:\n" + c.describe()


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def fresh_status(c: HaCluster, name: str, after_wall: float) -> dict | None:
    """The node's agent status if it was written after ``after_wall`` (time.time())."""
    doc = c.status(name)
    return doc if doc is not None and _wall(doc["written_at"]) > after_wall else None


# --- startup -------------------------------------------------------------------------------------------


def test_startup_one_primary_the_registered_one(new_cluster):
    c = new_cluster
    assert c.wait_stable() == "node1"
    time.sleep(I)
    assert c.acting_nodes() == ["node1"]
    assert c.states() == {"node1": "PRIM", "node2": "SECOND", "node3": "SECOND"}
    assert c.lease() == ("node1", 1) and c.status("node1")["epoch"] == 1
    assert {line.node for line in c.demo_lines()} == {"node1"}
    doc = c.get_nodes("node2")
    rows = {n["name"]: n for n in doc["nodes"]}
    assert {n: (r["role"], r["status"], r["state"]) for n, r in rows.items()} == {
        "node1": ("primary", "online", "PRIM"), "node2": ("standby", "online", "SECOND"),
        "node3": ("standby", "online", "SECOND")}
    assert [n for n, r in rows.items() if r["this_node"]] == ["node2"]
    assert doc["epoch"] == 1 and doc["maintenance"] is False and doc["keepalive_interval_s"] == I
    assert [(d["role"], d["status"]) for d in doc["db_nodes"]] == [("primary", "online")]
    table = c.sh("node3", "ha get nodes")
    assert table.returncode == 0, table.stderr
    marked = [line for line in table.stdout.splitlines() if "(*)" in line]
    assert len(marked) == 1 and marked[0].split()[0] == "node3", table.stdout
    node1_row = next(line for line in table.stdout.splitlines() if line.split()[:1] == ["node1"])
    assert [cell.strip() for cell in node1_row.split("|")[:4]] == ["node1", "primary", "PRIM", "online"], table.stdout
    assert "Last Seen (UTC)" in table.stdout
    no_two_primaries(c)



# --- the primary's agent dies, freezes or stops ----------------------------------------------------------


def test_kill9_primary_agent_highest_priority_standby_takes_over(cluster, report):
    c = cluster
    epoch = c.epoch()
    c.at_phase("node1", 0.5)
    killed = c.kill9("node1")
    fence = c.fence("node1")  # as the dead agent left it: the end of its last trust window
    first = c.wait_for(lambda: c.first_line_after("node2", killed), 4 * I, "node2's first demo line")
    took = first.mono - killed
    old_last = c.last_line("node1")
    assert fence is not None and old_last is not None
    assert old_last.mono <= fence[0] + 0.1  # its demo service stopped by itself at the fence deadline
    report(f"kill -9 primary agent -> new primary's first demo line: {took:.2f} s (I = {I} s, bound 3·I; "
           f"old primary's last line {old_last.mono - killed:+.2f} s, gap {first.mono - old_last.mono:.2f} s)")
    assert took <= 3 * I, c.describe()
    assert first.epoch == epoch + 1 and c.lease() == ("node2", epoch + 1)
    assert c.acting_in_log() == ["node2"] and "node3" not in c.acting_since(c.marked)
    c.wait_for(lambda: c.states()["node3"] == "SECOND", 2 * I, "node3 SECOND")
    rows = {n["name"]: n for n in c.get_nodes("node3")["nodes"]}
    assert (rows["node2"]["role"], rows["node2"]["state"]) == ("primary", "PRIM")
    # The killed node comes back as a standby: no failback.
    restarted = time.monotonic()
    c.start_agent("node1")
    c.wait_for(lambda: c.states()["node1"] == "SECOND", 5 * I, "node1 back as SECOND")
    time.sleep(I)
    assert c.lease() == ("node2", epoch + 1) and c.acting_nodes() == ["node2"]
    assert c.lines_of("node1", restarted) == []
    no_two_primaries(c)


def test_sigstop_primary_longer_than_the_lease_then_sigcont(cluster, report):
    c = cluster
    epoch = c.epoch()
    c.at_phase("node1", 0.9)  # the lease then runs out 1.1·I into the stop
    stopped = c.sigstop("node1")
    time.sleep(max(0.0, stopped + 2.5 * I - time.monotonic()))
    lease_at_cont = c.lease()
    cont_wall = time.time()
    resumed = c.sigcont("node1")
    assert lease_at_cont == ("node2", epoch + 1), "no failover during the stop:\n" + c.describe()
    first = c.first_line_after("node2", stopped)
    assert first is not None and first.mono < resumed
    report(f"SIGSTOP primary 2.5·I: new primary's first line {first.mono - stopped:.2f} s after the stop")
    # After SIGCONT the old agent never acts: every status it writes says acting=false, no demo line.
    seen: list[dict] = []
    deadline = time.monotonic() + 1.5 * I
    while time.monotonic() < deadline:
        doc = fresh_status(c, "node1", cont_wall)
        if doc is not None and doc not in seen:
            seen.append(doc)
        time.sleep(0.02)
    assert seen and not any(d["acting"] for d in seen), seen
    assert c.lines_of("node1", first.mono) == []
    c.wait_for(lambda: c.states()["node1"] == "SECOND", 3 * I, "node1 SECOND")
    assert c.lease() == ("node2", epoch + 1) and c.acting_nodes() == ["node2"]
    no_two_primaries(c)


def test_sigstop_primary_past_its_fence_but_within_its_lease_someone_acts_again(cluster, report):
    c = cluster
    c.at_phase("node1", 0.05)
    c.sigstop("node1")
    time.sleep(1.65 * I)  # the fence (1.5·I) has closed, the lease (2·I) has not run out
    resumed = c.sigcont("node1")
    found = None
    deadline = time.monotonic() + 3 * I
    while found is None and time.monotonic() < deadline:
        found = c.acting_since(resumed) or None
        time.sleep(0.05)
    report(f"pause 1.65·I: acting again after SIGCONT: {found}; lease {c.lease()}; "
           f"node1 says acting={c.status('node1')['acting']}, running {c.nodes['node1'].node.running()}")
    no_two_primaries(c)
    assert found is not None and len(found) == 1, c.describe()


def test_sigstop_primary_half_an_interval_changes_nothing(cluster):
    c = cluster
    epoch = c.epoch()
    c.at_phase("node1", 0.2)
    stopped = c.sigstop("node1")
    time.sleep(0.5 * I)
    c.sigcont("node1")
    time.sleep(2.5 * I)
    assert c.lease() == ("node1", epoch) and c.acting_nodes() == ["node1"]
    assert c.acting_since(c.marked) == {"node1"}
    mine = [i for i in c.demo_intervals() if i.node == "node1" and i.end >= stopped]
    assert len(mine) == 1 and not mine[0].fenced and mine[0].start < stopped, mine  # it never stopped acting
    assert "stepping down" not in c.log_since("node1")
    no_two_primaries(c)


def test_sigterm_primary_hands_over_within_about_one_interval(cluster, report):
    c = cluster
    epoch = c.epoch()
    termed = c.sigterm("node1")
    first = c.wait_for(lambda: c.first_line_after("node2", termed), 3 * I, "node2's first demo line")
    took = first.mono - termed
    report(f"SIGTERM primary agent -> new primary's first demo line: {took:.2f} s (bound 1.5·I)")
    assert c.wait_exit("node1") == 0
    assert took <= 1.5 * I, c.describe()
    assert c.lease() == ("node2", epoch + 1)
    last = c.last_line("node1")
    assert last is not None and last.mono < first.mono
    assert "resign" in c.log_since("node1")
    no_two_primaries(c)


# --- partitions between one node and the database ---------------------------------------------------------


def test_partitioned_primary_fences_itself_before_the_takeover(cluster, report):
    c = cluster
    epoch = c.epoch()
    c.at_phase("node1", 0.3)
    cut = c.partition("node1", "blackhole")  # connections reset; new ones hang until their connect timeout
    first = c.wait_for(lambda: c.first_line_after("node2", cut), 4 * I, "node2 takes over")
    last = c.last_line("node1")
    assert last is not None and last.mono < first.mono
    report(f"partitioned primary: its last demo line {last.mono - cut:+.2f} s after the cut, new primary's "
           f"first {first.mono - cut:.2f} s (it fenced itself {first.mono - last.mono:.2f} s before the takeover)")
    assert c.lease() == ("node2", epoch + 1)
    healed_wall = time.time()
    healed = c.heal("node1")
    c.wait_for(lambda: (d := fresh_status(c, "node1", healed_wall)) and d["state"] == "SECOND",
               6 * I, "node1 back as SECOND")
    time.sleep(I)
    assert c.lines_of("node1", healed) == [] and c.acting_nodes() == ["node2"]
    assert c.lease() == ("node2", epoch + 1)
    no_two_primaries(c)


def test_partitioned_standby_goes_offline_without_failover(cluster):
    c = cluster
    epoch = c.epoch()
    c.partition("node3", "refuse")

    def node3(field: str):
        return {n["name"]: n for n in c.get_nodes("node1")["nodes"]}["node3"][field]

    c.wait_for(lambda: node3("status") == "offline", 5 * I, "node3 offline in ha get nodes")
    assert c.states()["node3"] == "WAIT"
    assert c.lease() == ("node1", epoch) and c.acting_nodes() == ["node1"]
    c.heal("node3")
    c.wait_for(lambda: node3("status") == "online" and node3("state") == "SECOND", 5 * I, "node3 online")
    c.wait_for(lambda: c.states()["node3"] == "SECOND", 3 * I, "node3's agent SECOND")
    assert c.lease() == ("node1", epoch) and c.acting_since(c.marked) == {"node1"}
    no_two_primaries(c)


# --- administration -------------------------------------------------------------------------------------------


def test_maintenance_mode_pauses_failover(cluster, report):
    c = cluster
    epoch = c.epoch()
    on = c.sh("node3", "ha maintenance enable --yes")
    assert on.returncode == 0 and "Maintenance mode on" in on.stdout, on.stderr
    killed = c.kill9("node1")
    time.sleep(3.5 * I)  # the lease ran out >= 1.5·I ago: without maintenance node2 would act by now
    assert c.acting_nodes() == [] and c.acting_since(killed + 1.5 * I + 0.1) == set()
    assert c.epoch() == epoch
    assert "maintenance mode" in c.status("node2")["reason"]
    assert c.get_nodes("node2")["maintenance"] is True
    asked = time.monotonic()
    off = c.sh("node3", "ha maintenance disable --yes")
    assert off.returncode == 0 and "Maintenance mode off" in off.stdout, off.stderr
    first = c.wait_for(lambda: c.first_line_after("node2", asked), 3 * I, "node2 takes over")
    report(f"maintenance disable -> takeover (first demo line): {first.mono - asked:.2f} s")
    assert c.lease() == ("node2", epoch + 1)
    no_two_primaries(c)


def test_ha_stop_takes_a_standby_out_and_start_brings_it_back(cluster):
    c = cluster
    epoch = c.epoch()
    done = c.sh("node2", "ha stop --yes")
    assert done.returncode == 0, done.stderr
    c.wait_for(lambda: c.states()["node2"] == "STOP", 3 * I, "node2 STOP")
    assert {n["name"]: n["state"] for n in c.get_nodes("node1")["nodes"]}["node2"] == "STOP"
    killed = c.kill9("node1")  # node2 has the higher priority, but is out of the cluster
    first = c.wait_for(lambda: c.first_line_after("node3", killed), 4 * I, "node3 takes over")
    time.sleep(0.5 * I)
    assert first.epoch == epoch + 1
    assert c.lease() == ("node3", epoch + 1) and c.acting_nodes() == ["node3"]
    assert "node2" not in c.acting_since(c.marked) and c.states()["node2"] == "STOP"
    done = c.sh("node2", "ha start --yes")
    assert done.returncode == 0, done.stderr
    c.wait_for(lambda: c.states()["node2"] == "SECOND", 3 * I, "node2 SECOND")
    assert {n["name"]: n["state"] for n in c.get_nodes("node2")["nodes"]}["node2"] == "SECOND"
    assert c.lease() == ("node3", epoch + 1)
    no_two_primaries(c)


SWITCHED = re.compile(r"Switched over from node1 to node3 in (\d+\.\d+) s \(epoch (\d+)\)")


def test_switchover_to_a_named_node_and_refusal_when_it_is_offline(cluster, report):
    c = cluster
    epoch = c.epoch()
    # Every agent listens for notifications (after a lost DB connection it may take 5 s: see the next test).
    c.wait_for(lambda: c.listening() == set(c.nodes), 8, "every agent's LISTEN session")
    c.at_phase("node1", 0.05)  # just after a renewal: a tick-driven handover would wait a whole interval
    asked = time.monotonic()
    done = c.sh("node2", "ha switchover --to node3 --yes")
    wall = time.monotonic() - asked
    assert done.returncode == 0, done.stdout + done.stderr
    m = SWITCHED.search(done.stdout)
    assert m and int(m.group(2)) == epoch + 1, done.stdout
    first = c.wait_for(lambda: c.first_line_after("node3", asked), 2 * I, "node3 acts")
    report(f"ha switchover --to node3: reported {m.group(1)} s, command wall time {wall:.2f} s, "
           f"node3's first demo line {first.mono - asked:.2f} s after the command started")
    assert float(m.group(1)) <= 0.5 * I and first.mono - asked <= 1.0
    assert c.lease() == ("node3", epoch + 1)
    c.wait_for(lambda: c.states() == {"node1": "SECOND", "node2": "SECOND", "node3": "PRIM"}, 3 * I, "states")
    no_two_primaries(c)
    # Refused, with a clear error, when the target is offline.
    c.kill9("node2")
    c.wait_for(lambda: {n["name"]: n["status"] for n in c.get_nodes("node1")["nodes"]}["node2"] == "offline",
               5 * I, "node2 offline")
    refused = c.sh("node1", "ha switchover --to node2 --yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "error: node2 is offline" in refused.stderr
    assert c.lease() == ("node3", epoch + 1) and c.acting_nodes() == ["node3"]
    no_two_primaries(c)


def test_switchover_right_after_the_targets_db_connection_blipped_is_still_immediate(cluster, report):
    c = cluster
    c.wait_for(lambda: c.listening() == set(c.nodes), 8, "every agent's LISTEN session")
    # The channel was opened more than 5 s ago: once it is lost, the agent retries at once (during the cut).
    c.wait_for(lambda: (c.listen_age("node3") or 0) > 5.5, 8, "node3's channel older than 5.5 s")
    c.partition("node3", "refuse")  # 0.3 s: node3 never goes offline
    time.sleep(0.3)
    healed_wall = time.time()
    c.heal("node3")
    tick = c.wait_for(lambda: (d := fresh_status(c, "node3", healed_wall)) and d["state"] == "SECOND" and d,
                      3 * I, "node3 reconnected")
    # Right after node3's tick, so that waiting for its next tick costs a whole interval.
    c.wait_for(lambda: (d := c.status("node3")) and d["written_at"] != tick["written_at"], 2 * I, "node3 ticks")
    asked = c.request_handover("node3")
    c.wait_for(lambda: c.lease()[0] == "node3", 3 * I, "node3 holds the lease")
    took = time.monotonic() - asked
    report(f"handover to a node 1-2 s after its DB connection blipped: {took:.2f} s (listening: {c.listening()})")
    no_two_primaries(c)
    assert took <= 0.3, f"took {took:.2f} s"


# --- database failover -------------------------------------------------------------------------------------------


def test_db_failover_agents_follow_the_new_read_write_node(make_cluster, pg_pair, report):
    c = make_cluster(pg_pair, db_check_s=1)
    assert c.wait_stable() == "node1"
    epoch = c.epoch()
    new_port = pg_pair.standby.port
    killed, promoted = c.db_failover()
    before = c.heartbeat_seqs()  # on the promoted node
    c.wait_for(lambda: all(v > before[k] for k, v in c.heartbeat_seqs().items()), 5 * I + 3,
               "a heartbeat of every node on the new DB primary")
    followed = time.monotonic()
    prim = c.wait_stable(10)
    doc = c.get_nodes("node2")
    dbs = {d["port"]: (d["role"], d["status"]) for d in doc["db_nodes"]}
    assert dbs == {pg_pair.primary.port: ("-", "offline"), new_port: ("primary", "online")}
    assert all(n["status"] == "online" for n in doc["nodes"])
    needle = f"database failover: the read-write node is now 127.0.0.1:{new_port}"
    c.wait_for(lambda: all(c.log_events(n, needle) for n in c.nodes), 15, "every agent logs the DB failover")
    wall_killed = time.time() - (time.monotonic() - killed)
    noticed = max(c.log_events(n, needle)[0][0] for n in c.nodes) - wall_killed
    report(f"DB failover (kill -9 + promote {promoted - killed:.2f} s): every node heartbeats on the new node "
           f"{followed - killed:.2f} s after the kill; the last agent logs it {noticed:.2f} s after; app primary "
           f"{prim}, epoch {c.epoch()} (was node1, epoch {epoch})")
    assert prim == "node1" or c.epoch() == epoch + 1
    assert len(c.acting_nodes()) == 1
    no_two_primaries(c)


def test_db_failover_soon_after_start_is_noticed_within_one_check_interval(make_cluster, pg_pair):
    c = make_cluster(pg_pair, nodes=1, db_check_s=1)
    assert c.wait_stable() == "node1"
    _killed, promoted = c.db_failover()
    needle = f"database failover: the read-write node is now 127.0.0.1:{pg_pair.standby.port}"
    deadline = promoted + 1 + 1  # one check interval + 1 s after the new node is there
    while time.monotonic() < deadline and not c.log_events("node1", needle):
        time.sleep(0.05)
    no_two_primaries(c)
    assert c.log_events("node1", needle), c.describe()


# --- the decision itself (no processes) -----------------------------------------------------------------------


def test_the_standby_next_in_line_wakes_when_the_lease_expires():
    # Found by the kill -9 figures: with the holder itself counted as "first in line" (it has the top
    # priority), no standby woke at the lease's expiry and a takeover took up to 3·I.
    def node(name: str, priority: int) -> NodeState:
        return NodeState(f"00000000-0000-0000-0000-00000000000{name[-1]}", name, priority, "standby", "active",
                         0.5, 10)

    view = ClusterView((node("node1", 300), node("node2", 200), node("node3", 100)),
                       Lease("00000000-0000-0000-0000-000000000001", 7, 0.3, None), keepalive_s=10.0,
                       maintenance=False)
    decision = decide(view, Local("00000000-0000-0000-0000-000000000002"), now=0.0)
    assert decision.action is Action.STAY
    assert decision.wake_in_s is not None and decision.wake_in_s <= 0.3 + 0.1, decision
