"""Database faults on a real repmgr pair, as the app cluster sees them: figures, not assertions.

Three app nodes (real agents, the primary-only demo service) on a PostgreSQL 15 primary/standby pair under
repmgr with repmgrd and automatic failover (``appliance/testkit/repmgr.py``), both hosts in every node's
target. Every figure is measured from the outside, on the host's CLOCK_MONOTONIC:

(a) kill -9 of the database primary (its PostgreSQL and its repmgrd): repmgrd's promotion of the
    standby; every agent heartbeating on the new primary (read there); how long the app primary's
    service paused (the gap in its demo lines; 0 when the trust window outlasts the database's
    failover), and whether the app failed over; at I = 1 s and I = 10 s.
(b) split brain: the dead old primary started again as a primary (first in every node's host list):
    every agent showing the alarm (its status file), writes on the stale node (must be 0), and the app
    primary's service gap during the split brain (no step-down: the node ahead is followed).

Every trial also checks the demo log for two nodes acting at once (must be 0).

Usage:
    .venv/bin/python bench/db_failover.py --quick   # ~2 minutes: (a) 2 trials at I=1 s, 1 at I=10 s; (b) 2
    .venv/bin/python bench/db_failover.py           # ~5 minutes: (a) 5 trials at I=1 s, 3 at I=10 s; (b) 4
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from appliance.testkit.hacluster import HaCluster, new_base
from appliance.testkit.pgcluster import PgCluster, PgPair
from appliance.testkit.pghost import make_base_dir
from appliance.testkit.repmgr import RepmgrNode, RepmgrPair

PASSWORD = "bench pw"
rows: list[tuple[str, list[float]]] = []
overlaps = 0
stale_writes = 0


def log(message: str) -> None:
    print(message, flush=True)


def heartbeats(node: RepmgrNode, dbname: str) -> dict[str, int]:
    return dict(node.cluster.sql("SELECT name, heartbeat_seq FROM appliance.nodes", dbname=dbname))


def ha_rows(node: RepmgrNode, dbname: str) -> tuple[Any, ...]:
    return (tuple(node.cluster.sql("SELECT name, heartbeat_seq FROM appliance.nodes ORDER BY name", dbname=dbname)),
            tuple(node.cluster.sql("SELECT holder, epoch, expires_at FROM appliance.lease", dbname=dbname)))


def service_gap(c: HaCluster, primary: str, since: float, until: float) -> float:
    """The longest gap between two demo lines of ``primary`` in [since, until] (its service paused)."""
    times = [x.mono for x in c.demo_lines() if x.node == primary and x.epoch is not None and since <= x.mono <= until]
    return max((b - a for a, b in itertools.pairwise(times)), default=until - since)


def build(local: PgCluster, keepalive: int) -> tuple[RepmgrPair, HaCluster, Path]:
    base = make_base_dir("bench-repmgr-")
    pair = RepmgrPair(base, PASSWORD)
    c = HaCluster(new_base("bench-dbfail-"), PgPair(pair.nodes[0].cluster, pair.nodes[1].cluster), local=local,
                  keepalive_s=keepalive, db_check_s=10)
    c.build()
    c.wait_stable(30)
    return pair, c, base


def teardown(pair: RepmgrPair, c: HaCluster, base: Path) -> None:
    global overlaps
    overlaps += len(c.overlaps())
    c.stop_all()
    shutil.rmtree(c.base, ignore_errors=True)
    pair.destroy()
    shutil.rmtree(base, ignore_errors=True)


def kill_trial(local: PgCluster, keepalive: int, trial: int, figures: dict[str, list[float]]) -> None:
    pair, c, base = build(local, keepalive)
    try:
        db1, db2 = pair.nodes
        primary, epoch = c.wait_stable(30), c.epoch()
        time.sleep(keepalive / 2)
        killed = pair.kill_node(db1)
        promoted = pair.wait_primary(db2, 60) - killed
        c.db = db2.cluster
        before = heartbeats(db2, c.remote.dbname)
        c.wait_for(lambda: all(v > before[k] for k, v in heartbeats(db2, c.remote.dbname).items()),
                   5 * keepalive + 20, "every agent on the new DB primary")
        followed = time.monotonic() - killed
        now = c.wait_stable(30)
        gap = service_gap(c, now, killed - 1, time.monotonic()) if now == primary else float("nan")
        figures.setdefault(f"(a) kill -9 DB primary -> repmgrd promoted the standby, I={keepalive}s", []).append(
            promoted)
        figures.setdefault(f"(a) kill -9 DB primary -> every agent heartbeats on the new one, I={keepalive}s",
                           []).append(followed)
        if now == primary:
            figures.setdefault(f"(a) app primary's service gap across the DB failover, I={keepalive}s",
                               []).append(gap)
        outcome = f"service gap {gap:.2f} s" if now == primary else f"app failover to {now}"
        log(f"  I={keepalive}s DB kill #{trial}: promoted {promoted:.2f} s, every agent on db2 {followed:.2f} s; "
            f"app primary {primary} (epoch {epoch}) -> {now} (epoch {c.epoch()}); {outcome}")
    finally:
        teardown(pair, c, base)


def split_trial(local: PgCluster, trial: int, figures: dict[str, list[float]]) -> None:
    global stale_writes
    pair, c, base = build(local, 1)
    try:
        db1, db2 = pair.nodes
        pair.kill_node(db1)
        pair.wait_primary(db2, 60)
        c.db = db2.cluster
        primary = c.wait_stable(30)
        time.sleep(2)
        cluster = db1.cluster
        saved = list(cluster.hba_lines)
        cluster.hba_lines = [f"host all {c.remote.user} 127.0.0.1/32 reject", *saved]
        cluster.write_config()
        started = time.monotonic()
        pair.start_as_primary(db1)
        before = ha_rows(db1, c.remote.dbname)
        cluster.hba_lines = saved
        cluster.write_config()
        cluster.reload()
        alarmed = c.wait_for(lambda: all((c.status(n, current=False) or {}).get("db_alarm") for n in c.nodes), 20,
                             "every agent showing the alarm") and time.monotonic() - started
        time.sleep(5)
        wrote = ha_rows(db1, c.remote.dbname) != before
        stale_writes += int(wrote)
        gap = service_gap(c, primary, started, time.monotonic())
        figures.setdefault("(b) stale primary started -> every agent shows the alarm, I=1s", []).append(alarmed)
        figures.setdefault("(b) app primary's service gap during the split brain, I=1s", []).append(gap)
        log(f"  split brain #{trial}: alarm on every agent {alarmed:.2f} s after the stale start; writes on the "
            f"stale node: {'YES' if wrote else 'none'}; app primary {primary} service gap {gap:.2f} s")
    finally:
        teardown(pair, c, base)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    kills_1, kills_10, splits = (2, 1, 2) if args.quick else (5, 3, 4)
    started = time.monotonic()
    local_base = make_base_dir("bench-local-")
    local = PgCluster.init(local_base, superuser_password=PASSWORD, name="local")
    local.start()
    figures: dict[str, list[float]] = {}
    try:
        for keepalive, trials in ((1, kills_1), (10, kills_10)):
            log(f"== (a) kill -9 of the DB primary at I = {keepalive} s: {trials} trial(s), a new pair each")
            for trial in range(1, trials + 1):
                kill_trial(local, keepalive, trial, figures)
        log(f"== (b) split brain (old primary back as a primary) at I = 1 s: {splits} trial(s)")
        for trial in range(1, splits + 1):
            split_trial(local, trial, figures)
    finally:
        local.destroy()
        shutil.rmtree(local_base, ignore_errors=True)
    print()
    print(f"{'figure':<84} {'n':>3} {'median':>8} {'max':>8}")
    for name, values in figures.items():
        print(f"{name:<84} {len(values):>3} {statistics.median(values):>7.2f}s {max(values):>7.2f}s")
    print(f"\ntwo app primaries at once (overlapping demo intervals), all trials: {overlaps}")
    print(f"trials with a write on the stale database node: {stale_writes}")
    print(f"total run time {time.monotonic() - started:.0f} s")
    return 1 if overlaps or stale_writes else 0


if __name__ == "__main__":
    raise SystemExit(main())
