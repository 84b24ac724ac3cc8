"""Start-up speed of the login shell: cold process starts, as figures.

Measures, as the median and max of repeated cold starts, against `python -c pass` run in the same
process with the same interpreter (the ratio is what the targets are stated in):
  * `appliance-shell -c "system get hostname"`  (target: median <= 4x the baseline)
  * time to the first interactive prompt in a pseudo-terminal  (target: median <= 15x)
  * `appliance-shell -c "ha get nodes"` against a running agent, through its control socket (target:
    median <= 4x), and the same command on the direct path (the shell opening the database itself, as
    without `[agent] control_socket`) for comparison; a node initialised on a throw-away PostgreSQL.

Usage: .venv/bin/python bench/shell_startup.py [--runs N] [--no-ha]
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.sandbox.nodeconfig import node_config_text
from appliance.testkit.agentproc import AgentProcess, add_control_socket
from appliance.testkit.pgcluster import PgCluster
from appliance.testkit.pghost import make_base_dir

BIN = Path(sys.executable).parent


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def time_to_prompt(argv: list[str], env: dict[str, str], prompt: bytes) -> float:
    master, slave = pty.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    try:
        deadline = start + 10
        while prompt not in seen:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no prompt within 10 s; saw {seen[-200:]!r}")
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                seen += os.read(master, 4096)
        return time.perf_counter() - start
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def summary(name: str, samples: list[float], baseline: float, target: float) -> str:
    med = statistics.median(samples)
    ratio = med / baseline
    verdict = "meets" if ratio <= target else "MISSES"
    return (f"{name:<42} median {med * 1000:7.1f} ms  max {max(samples) * 1000:7.1f} ms  "
            f"ratio {ratio:5.2f}x  (target <= {target:g}x: {verdict})")


def ha_nodes(runs: int) -> None:
    """``ha get nodes`` through the agent's socket and directly, each against ``python -c pass``."""
    base = make_base_dir("bench-startup-")
    cluster = PgCluster.init(base, superuser_password="bench-superuser", name="local")
    cluster.start()
    agent = None
    try:
        home = Path(tempfile.mkdtemp(prefix="node-", dir=base))
        (home / "admin-pw").write_text("bench-superuser\n")
        direct = home / "direct.toml"
        direct.write_text(node_config_text(
            name="node1", hardware_id="HW-bench-startup", state_dir=home / "state", local_port=cluster.port,
            admin_user=cluster.superuser, admin_password_file=home / "admin-pw", services=[]))
        via = home / "appliance.toml"
        via.write_text(direct.read_text())
        add_control_socket(via, home / "control.sock")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
        subprocess.run([str(BIN / "appliance-admin"), "--config", str(via), "init"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        agent = AgentProcess(via, home / "control.sock", home / "agent.log")
        baseline_argv = [sys.executable, "-c", "pass"]
        socket_argv = [str(BIN / "appliance-shell"), "--config", str(via), "-c", "ha get nodes"]
        direct_argv = [str(BIN / "appliance-shell"), "--config", str(direct), "-c", "ha get nodes"]
        for argv in (baseline_argv, socket_argv, direct_argv):
            timed(argv, env)
        base_s, socket_s, direct_s = [], [], []
        for _ in range(runs):
            base_s.append(timed(baseline_argv, env))
            socket_s.append(timed(socket_argv, env))
            direct_s.append(timed(direct_argv, env))
        baseline = statistics.median(base_s)
        print(f"{'baseline (same runs): python -c pass':<42} median {baseline * 1000:7.1f} ms  "
              f"max {max(base_s) * 1000:7.1f} ms")
        print(summary('"ha get nodes" through the agent socket', socket_s, baseline, 4))
        print(summary('"ha get nodes" direct (no socket)', direct_s, baseline, 4))
    finally:
        if agent is not None:
            agent.stop()
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-ha", action="store_true", help="skip the ha get nodes figures (no PostgreSQL)")
    options = parser.parse_args()
    runs = options.runs
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "appliance.toml"
        config.write_text(f'[paths]\nstate_dir = "{tmp}/state"\n[hostname]\nbackend = "file"\n'
                          '[audit]\ntarget = "file"\n')
        env = {"PATH": "/usr/bin:/bin", "APPLIANCE_CONFIG": str(config), "HOME": tmp, "TERM": "xterm",
               "LANG": "C.UTF-8", "PROMPT_TOOLKIT_NO_CPR": "1"}
        shell = str(BIN / "appliance-shell")
        baseline_argv = [sys.executable, "-c", "pass"]
        command_argv = [shell, "-c", "system get hostname"]
        for argv in (baseline_argv, command_argv):  # warm the page cache; not measured
            timed(argv, env)
        base, command, prompt = [], [], []
        for _ in range(runs):  # interleaved, so machine load affects all three alike
            base.append(timed(baseline_argv, env))
            command.append(timed(command_argv, env))
            prompt.append(time_to_prompt([shell], env, b"EMS $"))
        baseline = statistics.median(base)
        print(f"runs: {runs} each, interleaved; python: {sys.version.split()[0]}")
        print(f"{'baseline: python -c pass':<42} median {baseline * 1000:7.1f} ms  max {max(base) * 1000:7.1f} ms")
        print(summary('appliance-shell -c "system get hostname"', command, baseline, 4))
        print(summary("interactive: time to first prompt", prompt, baseline, 15))
    if not options.no_ha:
        ha_nodes(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
