"""How many nodes: N agents on one PostgreSQL at I = 1 s, for N = 2, 4, 8, 16, 32.

Each N gets a fresh PostgreSQL 15 (``max_connections`` raised: every agent holds four connections, the HA
store, the listener, one watcher per DB host and its background work's) with ``pg_stat_statements``, and
N agents only (:class:`appliance.testkit.bare.BareHaCluster`: no local PostgreSQL, init or redirect per
node; every node runs the primary-only demo service). Measured, in steady state over ``--window`` seconds:

* DB statements per second per node (``pg_stat_statements`` calls of the agents' role / window / N) and
  transactions per second per node (``pg_stat_database``);
* agent CPU (user + system time from ``/proc``, % of one core) and RSS, mean and max over the agents;
* kill -9 failover: the primary's agent killed at a random point of its cycle -> the new primary's first
  demo line (``--kills`` trials per N). Goal at I = 1 s: median <= 2.5·I and no trial over 3·I at every N.

Goal: the failover bound holds at N = 32 and the DB load grows linearly in N (constant per node).

Usage:
    .venv/bin/python bench/ha_scale.py --quick        # N = 2, 8, 32; 1 kill each; ~2 minutes
    .venv/bin/python bench/ha_scale.py                # N = 2, 4, 8, 16, 32; 3 kills each; ~6 minutes
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time
from pathlib import Path

from appliance.testkit.bare import BareHaCluster
from appliance.testkit.hacluster import new_base
from appliance.testkit.pgcluster import PgCluster
from appliance.testkit.pghost import make_base_dir

I = 1  # noqa: E741
TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(n: int, window: float, kills: int) -> dict[str, object]:
    base = make_base_dir("hascale-pg-")
    pg = PgCluster.init(base, superuser_password="bench", settings={
        "max_connections": 4 * n + 40, "shared_preload_libraries": "pg_stat_statements",
        "pg_stat_statements.track": "all"})
    pg.start()
    cluster = BareHaCluster(new_base("hascale-"), pg, local=pg, keepalive_s=I, nodes=n)
    try:
        cluster.build()
        cluster.wait_stable(30 + n)
        pg.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=cluster.remote.dbname)
        time.sleep(2 * I)  # settled: no start-up work in the window
        pids = [node.agent.pid for node in cluster.nodes.values() if node.agent is not None]
        cpu0 = {pid: cpu_s(pid) for pid in pids}
        pg.sql("SELECT pg_stat_statements_reset()", dbname=cluster.remote.dbname)
        xact0 = _xacts(pg, cluster.remote.dbname)
        t0 = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - t0
        calls = pg.sql("SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
                       " WHERE r.rolname = %s", (cluster.remote.user,), dbname=cluster.remote.dbname)[0][0]
        xacts = _xacts(pg, cluster.remote.dbname) - xact0
        cpu = [100 * (cpu_s(pid) - cpu0[pid]) / elapsed for pid in pids]
        rss = [rss_mb(pid) for pid in pids]
        failovers = []
        for _ in range(kills):
            primary = cluster.wait_stable(30 + n)
            cluster.at_phase(primary, random.random() * 0.5)
            killed = cluster.kill9(primary)
            line = cluster.wait_for(lambda k=killed, p=primary: next(
                (x for x in cluster.demo_lines() if x.node != p and x.mono >= k and x.epoch is not None), None),
                10 * I + 5, "a new primary's demo line")
            failovers.append(line.mono - killed)
            cluster.start_agent(primary)
        overlaps = len(cluster.overlaps())
        return {"n": n, "stmts": float(calls) / elapsed / n, "xacts": xacts / elapsed / n,
                "cpu_mean": statistics.mean(cpu), "cpu_max": max(cpu), "rss_mean": statistics.mean(rss),
                "rss_max": max(rss), "failovers": failovers, "overlaps": overlaps}
    finally:
        cluster.stop_all()
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(cluster.base, ignore_errors=True)


def _xacts(pg: PgCluster, dbname: str) -> int:
    return int(pg.sql("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (dbname,),
                      dbname=dbname)[0][0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nodes", type=int, nargs="*")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--kills", type=int)
    args = parser.parse_args()
    sizes = args.nodes or ([2, 8, 32] if args.quick else [2, 4, 8, 16, 32])
    kills = args.kills if args.kills is not None else (1 if args.quick else 3)
    rows = [measure(n, args.window, kills) for n in sizes]
    print(f"\nN agents on one PostgreSQL, I = {I} s, window {args.window:g} s, kill -9 trials per N: {kills}")
    print(f"{'N':>3} | {'stmts/s/node':>12} | {'xacts/s/node':>12} | {'CPU % mean/max':>14} | "
          f"{'RSS MB mean/max':>15} | {'failover s median/max':>21} | overlaps")
    ok = True
    for r in rows:
        fo: list[float] = r["failovers"]  # type: ignore[assignment]
        med, worst = (statistics.median(fo), max(fo)) if fo else (float("nan"), float("nan"))
        ok = ok and (not fo or (med <= 2.5 * I and worst <= 3 * I)) and r["overlaps"] == 0
        print(f"{r['n']:>3} | {r['stmts']:>12.2f} | {r['xacts']:>12.2f} | "
              f"{r['cpu_mean']:>6.1f} / {r['cpu_max']:<5.1f} | {r['rss_mean']:>6.1f} / {r['rss_max']:<6.1f} | "
              f"{med:>9.2f} / {worst:<9.2f} | {r['overlaps']}")
    print(f"goal: failover median <= {2.5 * I:g} s and max <= {3 * I:g} s at every N, statements per node flat: "
          + ("met" if ok else "NOT met"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
