"""Speed of `redirect` against a local PostgreSQL 15, as a user runs it (`appliance-shell -c ...`).

Each trial makes two fresh nodes (their own local databases, `appliance-admin init`, two `process`
services each; not timed) and a fresh, empty shared database, then times:
  * node1: `redirect ... --is_primary_node --yes`   (deploys the schema; target: median <= 2 s)
  * node2: `redirect ... --is_secondary_node --yes` (target: median <= 1 s)
Step shares come from the durations the command prints for each step; "pre-flight and start-up" is
the rest of the wall time (process start, imports, pre-flight checks). The baseline is
`appliance-shell -c "system get hostname"` timed in the same run, and the vendor's 33 s.

Usage: .venv/bin/python bench/redirect.py [--runs N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from appliance.config import load_config
from appliance.sandbox.nodeconfig import node_config_text
from appliance.services import ProcessServices
from appliance.testkit.pgcluster import PgCluster
from appliance.testkit.pghost import make_base_dir

BIN = Path(sys.executable).parent
VENDOR_PRIMARY_S = 33.0
STEPS = {"Stopped": "stop services", "Database ready": "database (lock, schema, register)",
         "Credentials stored": "write credentials", "Started": "start services", "Healthy": "health check"}
DURATION = re.compile(r"INFO - (.*?) \((\d+\.\d+) s\)$")


def node_config(base: Path, name: str, cluster: PgCluster) -> Path:
    home = base / name
    home.mkdir()
    (home / "admin-pw").write_text(cluster.superuser_password + "\n")
    tag = uuid.uuid4().hex[:6]
    config = home / "appliance.toml"
    config.write_text(node_config_text(
        name=name, hardware_id=f"HW-{name}-{tag}", state_dir=home / "state", local_port=cluster.port,
        local_db=f"local_{name}_{tag}", local_user=f"app_{name}_{tag}", admin_user=cluster.superuser,
        admin_password_file=home / "admin-pw", database={"sslmode": "disable"},  # the test cluster has no TLS
        services=[("demo", ["/bin/sleep", "3600"], ["primary"]),
                  ("beat", ["/bin/sleep", "3600"], ["primary", "standby"])],
    ))
    return config


def run(config: Path, *args: str, stdin: str | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([str(BIN / args[0]), "--config", str(config), *args[1:]], input=stdin, text=True,
                          capture_output=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{args[:2]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return took, done.stdout


def step_times(output: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in output.splitlines():
        match = DURATION.search(line)
        if match:
            for prefix, step in STEPS.items():
                if match.group(1).startswith(prefix):
                    found[step] = float(match.group(2))
    return found


def report(name: str, walls: list[float], steps: list[dict[str, float]], target: float, baseline: float) -> None:
    med = statistics.median(walls)
    verdict = "meets" if med <= target else "MISSES"
    print(f"{name}: median {med:.3f} s  max {max(walls):.3f} s  (target <= {target:g} s: {verdict}; "
          f"{VENDOR_PRIMARY_S / med:.0f}x faster than the vendor's {VENDOR_PRIMARY_S:g} s; "
          f"{med / baseline:.1f}x a bare shell command)")
    rest = [w - sum(s.values()) for w, s in zip(walls, steps, strict=True)]
    rows = [("pre-flight and start-up", rest)] + [(label, [s.get(label, 0.0) for s in steps])
                                                  for label in STEPS.values()]
    for label, values in rows:
        share = statistics.median(values) / med * 100
        print(f"    {label:<36} median {statistics.median(values) * 1000:7.1f} ms  ({share:4.1f} %)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    base = make_base_dir("bench-redirect-")
    cluster = PgCluster.init(base, superuser_password="bench-superuser", name="shared")
    cluster.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            primary_walls, primary_steps, secondary_walls, secondary_steps, baselines = [], [], [], [], []
            for trial in range(runs):
                trial_dir = Path(tmp) / f"t{trial}"
                trial_dir.mkdir()
                one, two = (node_config(trial_dir, n, cluster) for n in ("node1", "node2"))
                for config in (one, two):
                    run(config, "appliance-admin", "init")
                    run(config, "appliance-shell", "-c", "system get hostname")  # warm caches
                    ProcessServices(load_config(config)).start("primary")  # stop/start costs are real
                baselines.append(run(one, "appliance-shell", "-c", "system get hostname")[0])
                tag = uuid.uuid4().hex[:8]
                user, dbname, password = f"dba_{tag}", f"shared_{tag}", f"pw-{tag}"
                cluster.create_role(user, password)
                cluster.create_database(dbname, owner=user)
                common = f"redirect --db_host 127.0.0.1 --db_port {cluster.port} --db_user {user} --db_name {dbname}"
                wall, out = run(one, "appliance-shell", "-c", f"{common} --db_pass - --is_primary_node --yes",
                                stdin=password + "\n")
                primary_walls.append(wall)
                primary_steps.append(step_times(out))
                wall, out = run(two, "appliance-shell", "-c", f"{common} --db_pass - --is_secondary_node --yes",
                                stdin=password + "\n")
                secondary_walls.append(wall)
                secondary_steps.append(step_times(out))
                for config in (one, two):  # stop this trial's service processes
                    ProcessServices(load_config(config)).stop()
            baseline = statistics.median(baselines)
            print(f"runs: {runs}; PostgreSQL 15 on 127.0.0.1; baseline `system get hostname`: "
                  f"median {baseline * 1000:.0f} ms")
            report("primary redirect onto an empty DB", primary_walls, primary_steps, 2.0, baseline)
            report("secondary redirect", secondary_walls, secondary_steps, 1.0, baseline)
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
