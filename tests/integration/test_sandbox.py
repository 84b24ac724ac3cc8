"""`appliance-sandbox` as a user runs it: up with a cluster, a failover by kill, restart, down."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.node import read_targets

BIN = Path(sys.executable).parent
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


def sandbox(base: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "appliance-sandbox"), *args, "--dir", str(base)], capture_output=True,
                          text=True, timeout=timeout, env=ENV, check=False)


def shell(config: str, line: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "appliance-shell"), "--config", config, "-c", line], capture_output=True,
                          text=True, timeout=60, env=ENV, check=False)


def processes_under(base: Path) -> list[str]:
    """Command lines of live processes that belong to this sandbox (its path is in their argv)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if str(base).encode() in raw and state not in (b"Z", b"X"):
            found.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return found


def acting(base: Path, name: str) -> bool:
    try:
        return bool(json.loads((base / name / "state" / "agent-status.json").read_text())["acting"])
    except (OSError, ValueError, KeyError):
        return False


@pytest.fixture
def base():
    # Under /tmp and searchable by others: as root, PostgreSQL runs as the postgres user.
    top = Path(tempfile.mkdtemp(prefix="sandbox-test-", dir="/tmp"))
    top.chmod(0o755)
    where = top / "sbx"
    yield where
    if (where / "sandbox.json").exists():
        sandbox(where, "down")
    shutil.rmtree(top, ignore_errors=True)


def test_cluster_failover_and_down(base):
    up = sandbox(base, "up", "--nodes", "2", "--cluster", "--keepalive", "1")
    assert up.returncode == 0, up.stdout + up.stderr
    doc = json.loads((base / "sandbox.json").read_text())
    assert [n["name"] for n in doc["nodes"]] == ["node1", "node2"]
    assert {"host", "port", "user", "password", "dbname"} <= set(doc["remote"])
    assert doc["remote"]["password"] not in up.stdout + up.stderr  # written to the 0600 file, not shown
    assert oct((base / "sandbox.json").stat().st_mode & 0o777) == "0o600"
    node1, node2 = (n["config"] for n in doc["nodes"])

    nodes = json.loads(shell(node2, "ha get nodes --json").stdout)["nodes"]
    assert [(n["name"], n["role"], n["status"], n["this_node"]) for n in nodes] == [
        ("node1", "primary", "online", False), ("node2", "standby", "online", True)]

    # The remote database speaks TLS only, with the sandbox's own CA, and the nodes verify it.
    assert (doc["remote"]["sslmode"], doc["remote"]["sslrootcert"]) == ("verify-full", str(base / "ca.crt"))
    for config in (node1, node2):
        _origin, active = read_targets(load_config(Path(config)))
        assert (active.target.sslmode, active.target.sslrootcert) == ("verify-full", str(base / "ca.crt"))
    plain = subprocess.run(["/usr/bin/psql", "-X", "-w", "-c", "select 1",
                            f"host=127.0.0.1 port={doc['remote']['port']} user={doc['remote']['user']} "
                            "dbname=appliance sslmode=disable"], capture_output=True, text=True, timeout=30,
                           env={**ENV, "PGPASSWORD": doc["remote"]["password"]}, check=False)
    assert plain.returncode != 0 and "no encryption" in plain.stderr  # hostssl only

    again = sandbox(base, "start", "node2")  # already running: said so, nothing started twice
    assert again.returncode == 0 and "node2: already running" in again.stdout, again.stdout

    killed = sandbox(base, "kill", "node1")
    assert killed.returncode == 0
    t0 = time.monotonic()
    while not acting(base, "node2") and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert acting(base, "node2"), "node2 did not take over"
    assert took <= 3 * 1 + 1.0, f"failover took {took:.1f} s at I = 1 s"

    assert sandbox(base, "start", "node1").returncode == 0
    deadline = time.monotonic() + 10
    roles: dict[str, str] = {}
    while time.monotonic() < deadline:
        out = shell(node1, "ha get nodes --json")
        if out.returncode == 0:
            roles = {n["name"]: (n["role"], n["status"]) for n in json.loads(out.stdout)["nodes"]}
            if roles.get("node1") == ("standby", "online"):
                break
        time.sleep(0.2)
    assert roles == {"node1": ("standby", "online"), "node2": ("primary", "online")}  # no failback

    deadline = time.monotonic() + 5  # node2 shows PRIM once a tick of its own has seen node1 online again
    status = sandbox(base, "status")
    while "PRIM" not in status.stdout and time.monotonic() < deadline:
        time.sleep(0.2)
        status = sandbox(base, "status")
    assert status.returncode == 0
    lines = {line.split()[0]: line.split()[3] for line in status.stdout.splitlines()[2:]}
    assert lines == {"node1": "SECOND", "node2": "PRIM"}, status.stdout

    # The registry follows a hostname change (the agent records it), so ha get nodes shows it.
    assert shell(node1, "system set hostname EMS-1 --yes").returncode == 0
    deadline = time.monotonic() + 10
    names: set[str] = set()
    while "EMS-1" not in names and time.monotonic() < deadline:
        out = shell(node2, "ha get nodes --json")
        names = {n["name"] for n in json.loads(out.stdout)["nodes"]} if out.returncode == 0 else set()
        time.sleep(0.2)
    assert names == {"EMS-1", "node2"}

    down = sandbox(base, "down")
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 10
    while processes_under(base) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_under(base) == []


def test_missing_sandbox_and_unreachable_dir(base, tmp_path):
    missing = sandbox(base, "status")
    assert missing.returncode == 1 and "no sandbox in" in missing.stderr
    if os.geteuid() == 0:
        private = tmp_path / "private"  # pytest's tmp dirs are 0700
        refused = sandbox(private, "up", "--nodes", "1")
        assert refused.returncode == 1 and "cannot reach" in refused.stderr and "hint:" in refused.stderr


def test_help_describes_every_subcommand():
    done = subprocess.run([str(BIN / "appliance-sandbox"), "--help"], capture_output=True, text=True, timeout=30,
                          env=ENV, check=False)
    assert done.returncode == 0
    for name in ("up", "status", "down", "shell", "kill", "start"):
        assert re.search(rf"^\s+{name}\s+\w", done.stdout, re.MULTILINE), (name, done.stdout)
    for name in ("up", "start"):
        sub = subprocess.run([str(BIN / "appliance-sandbox"), name, "--help"], capture_output=True, text=True,
                             timeout=30, env=ENV, check=False)
        assert sub.returncode == 0 and "--dir" in sub.stdout and len(sub.stdout.splitlines()) > 4


def test_a_node_joins_with_a_code_and_a_takeover_reaches_the_notification_receiver(base):
    """What an admin (or a script) does on the sandbox: leave, add node, join with the code, read the events;
    the sandbox's receiver gets the takeover once per channel."""
    up = sandbox(base, "up", "--nodes", "3", "--cluster", "--keepalive", "1", "--notify-sink")
    assert up.returncode == 0, up.stdout + up.stderr
    doc = json.loads((base / "sandbox.json").read_text())
    node1, _node2, node3 = (n["config"] for n in doc["nodes"])
    assert {n["join"]["host"] for n in doc["nodes"]} == {"127.0.0.1"}
    out = Path(doc["notify_sink"]["file"])

    left = shell(node3, "ha leave --yes")
    assert left.returncode == 0, left.stdout + left.stderr
    added = shell(node1, "ha add node --json")
    assert added.returncode == 0, added.stderr
    code = json.loads(added.stdout)["code"]
    joined = shell(node3, f"ha join --code {code} --yes")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert doc["remote"]["password"] not in joined.stdout + joined.stderr + added.stdout
    kinds = [e["kind"] for e in json.loads(shell(node1, "ha get events --json").stdout)["events"]]
    assert kinds.count("leave") == 1 and kinds.count("join") == 1

    killed = sandbox(base, "kill", "node1")
    assert killed.returncode == 0
    deadline = time.monotonic() + 15
    takeover: list[dict] = []
    while time.monotonic() < deadline and len(takeover) < 2:
        lines = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
        takeover = [x for x in lines if x["event"] and x["event"].get("kind") == "takeover"]
        time.sleep(0.2)
    time.sleep(2)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    takeover = [x for x in lines if x["event"] and x["event"].get("kind") == "takeover"]
    assert sorted(x["channel"] for x in takeover) == ["email", "webhook"], takeover
    assert len({x["event"]["id"] for x in takeover}) == 1

    down = sandbox(base, "down")
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 10
    while processes_under(base) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_under(base) == []
