"""``appliance-sandbox``: a real multi-node cluster on one machine, no VMs.

    appliance-sandbox up --dir DIR [--nodes N] [--cluster] [--keepalive S] [--haproxy]
                         [--netns [--vip ADDRESS/PREFIX]] [--notify-sink]
    appliance-sandbox status|down --dir DIR
    appliance-sandbox shell|kill|start NODE --dir DIR

``up`` creates under DIR a "remote" PostgreSQL (password auth, random password), and for each node
its own local PostgreSQL, configuration, key and state dir (hostname backend ``file``, services
backend ``process`` running a primary-only demo service), initialises the nodes and starts their
agents in the background. With ``--cluster`` it also runs the redirects (node1 primary, the others
secondary); without, the nodes stay standalone so that the admin can follow the vendor's procedure.
``DIR/sandbox.json`` describes it all for scripts. ``up`` on an existing sandbox starts what is not
running. ``down`` stops everything and leaves nothing running.

Every node's agent serves its health endpoint (``/primary``...) and its demo service listens on a
service port that answers ``<node> epoch=<N>`` while the node is primary (``sandbox.json``: each node's
``health`` and ``service``). ``--haproxy`` puts a real HAProxy in front (:mod:`appliance.sandbox.haproxy`,
``sandbox.json``: ``haproxy``). ``--netns`` (root) gives every node its own network namespace on one
bridge, plus a client namespace, and ``--vip`` a virtual IP that moves between them
(:mod:`appliance.sandbox.netns`, ``sandbox.json``: ``network``, ``vip``). Every node's join service
listens on a port of its own (``sandbox.json``: each node's ``join``), so ``ha join --code`` on one node
reaches the issuing node on loopback. ``--notify-sink`` starts a receiver (:mod:`appliance.sandbox.sink`:
an HTTP endpoint and an SMTP server writing to ``DIR/notifications.jsonl``; ``sandbox.json``:
``notify_sink``) and, with ``--cluster``, points the cluster's webhook and e-mail at it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.clock import SystemClock
from appliance.config import load_config
from appliance.errors import ApplianceError, CommandFailed, ExitStatus, NotConfigured, UsageError
from appliance.fsutil import write_atomic
from appliance.ha.timing import KEEPALIVE_RANGE_S
from appliance.init import initialise
from appliance.sandbox import haproxy, netns
from appliance.sandbox.nodeconfig import node_config_text
from appliance.sandbox.postgres import Postgres, free_port
from appliance.services import ProcessServices
from appliance.shell.render import render_error

BIN = Path(sys.executable).parent
REMOTE_USER = "appliance_dba"
REMOTE_DB = "appliance"
AGENT_STOP_S = 15.0


def say(text: str) -> None:
    print(f"sandbox: {text}", flush=True)


# --- layout ---------------------------------------------------------------------------------------


def manifest_path(base: Path) -> Path:
    return base / "sandbox.json"


def load(base: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(manifest_path(base).read_text())
    except FileNotFoundError:
        raise NotConfigured(f"no sandbox in {base}", hint=f"create one: appliance-sandbox up --dir {base}") from None
    return doc


def save(base: Path, doc: dict[str, Any]) -> None:
    write_atomic(manifest_path(base), json.dumps(doc, indent=2) + "\n", mode=0o600)  # it holds passwords


def node_config(base: Path, node: dict[str, Any], keepalive: int, net: netns.Network | None) -> str:
    name = node["name"]
    home = base / name
    service, health = node["service"], node["health"]
    # In its own namespace the service listens on every address there: the node's own (the load
    # balancer's) and the VIP while the node holds it.
    bind = ("::" if net.vip and ":" in net.vip else "0.0.0.0") if net is not None else service["host"]
    demo = [sys.executable, "-m", "appliance.ha.demo_service", str(base / "demo.log"),
            "--listen", _hostport(bind, service["port"])]
    holder = [sys.executable, "-m", "appliance.ha.vip"]
    if net is not None:
        # The services enter the node's namespace themselves: the shell's redirect (outside it) starts
        # them too, and the VIP must never land on this machine's own interfaces.
        inside = [str(netns.IP), "netns", "exec", node["netns"]]
        demo, holder = inside + demo, inside + holder
    services = [("demo", demo, ["primary"])]
    sections: dict[str, dict[str, Any]] = {"health": {"listen": _hostport(health["host"], health["port"])},
                                           "agent": {"control_socket": str(control_socket(base, name))}}
    if node.get("join"):
        sections["join"] = {"listen": _hostport(node["join"]["host"], node["join"]["port"])}
    if net is not None:
        sections["health"]["detail_networks"] = ["127.0.0.0/8", net.control]
    if net is not None and net.vip:
        services.append(("vip", holder, ["primary"]))
        sections["vip"] = {"interface": netns.DEVICE}
    return node_config_text(
        name=name, hardware_id=f"SANDBOX-{name}-{secrets.token_hex(4)}", state_dir=home / "state",
        local_port=node["pg_port"], admin_user="postgres", admin_password_file=home / "admin-pw",
        services=services, ha={"keepalive_interval_s": keepalive}, sections=sections,
        local_host=net.host if net else "127.0.0.1",
        header=f"Written by appliance-sandbox for {name}; see appliance/data/appliance.toml for every key.",
        agent_log=home / "agent.log", local_data_dir=home / "pg",
    )


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _network(doc: dict[str, Any]) -> netns.Network | None:
    return netns.Network.from_doc(doc["network"]) if doc.get("network") else None


def _secret_file(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


# --- processes ------------------------------------------------------------------------------------


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", "rb") as stat:
            if stat.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                return None
    except (OSError, ValueError, IndexError):
        return None
    return pid


def agent_pidfile(base: Path, name: str) -> Path:
    return base / name / "agent.pid"


def start_agent(base: Path, name: str, namespace: str | None = None) -> int:
    running = _pid(agent_pidfile(base, name))
    if running:
        return running
    config = base / name / "appliance.toml"
    # In its network namespace (--netns) the agent, and everything it starts, sees only the node's eth0.
    inside = [str(netns.IP), "netns", "exec", namespace] if namespace else []
    with open(base / name / "agent.log", "ab") as log:
        proc = subprocess.Popen([*inside, str(BIN / "appliance-agent"), "--config", str(config)],
                                stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True, close_fds=True,
                                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    agent_pidfile(base, name).write_text(f"{proc.pid}\n")
    _wait_for_socket(control_socket(base, name), proc)
    return proc.pid


def control_socket(base: Path, name: str) -> Path:
    """The node's agent control socket: the shell reaches the agent there, as on the appliance."""
    return base / name / "state" / "control.sock"


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Until the new agent listens on its control socket (it opens it before anything else), so that a
    command run right after ``up`` or ``start`` finds it; bounded, and not past the agent's exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_socket():
            return
        time.sleep(0.05)


def stop_agent(base: Path, name: str, sig: signal.Signals = signal.SIGTERM) -> bool:
    pid = _pid(agent_pidfile(base, name))
    if pid is None:
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + AGENT_STOP_S
    while _pid(agent_pidfile(base, name)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid(agent_pidfile(base, name)):
        os.kill(pid, signal.SIGKILL)
    return True


def _services(base: Path, name: str) -> Any:
    return ProcessServices(load_config(base / name / "appliance.toml"))


# --- commands -------------------------------------------------------------------------------------


def up(base: Path, nodes: int, cluster: bool, keepalive: int, *, with_haproxy: bool = False,
       with_netns: bool = False, vip: str | None = None, notify_sink: bool = False) -> int:
    base = base.resolve()
    if manifest_path(base).exists():
        return _resume(base)
    if nodes < 1 or nodes > 9:
        raise UsageError("--nodes must be from 1 to 9")
    if not KEEPALIVE_RANGE_S[0] <= keepalive <= KEEPALIVE_RANGE_S[1]:
        raise UsageError(f"--keepalive must be from {KEEPALIVE_RANGE_S[0]} to {KEEPALIVE_RANGE_S[1]} s")
    if vip and not with_netns:
        raise UsageError("--vip needs --netns: the sandbox moves its VIP between namespaces of its own, never on "
                         "this machine's interfaces")
    names = [f"node{index}" for index in range(1, nodes + 1)]
    net = netns.plan(base, names, vip) if with_netns else None  # refuses before anything is made
    base.mkdir(parents=True, exist_ok=True, mode=0o755)
    os.chmod(base, 0o755)  # PostgreSQL runs as another user when we are root: it must reach its dirs
    if net is not None:
        say(f"creating the network: bridge {net.bridge} ({net.control}, host {net.host}), "
            f"namespaces {', '.join(net.namespaces())}")
        netns.create(net)
    listen = (net.host,) if net else ()
    nets = (net.control,) if net else ()
    db_host = net.host if net else "127.0.0.1"
    remote_pw, dba_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    remote = Postgres(base / "remote", free_port(), extra_listen=listen, networks=nets)
    say(f"creating the remote PostgreSQL on {db_host}:{remote.port}")
    remote.init(remote_pw)
    remote.start()
    remote.create_role_and_db(remote_pw, REMOTE_USER, dba_pw, REMOTE_DB)
    doc: dict[str, Any] = {
        "remote": {"host": db_host, "port": remote.port, "user": REMOTE_USER, "password": dba_pw,
                   "dbname": REMOTE_DB, "superuser_password": remote_pw},
        "nodes": [],
        "demo_log": str(base / "demo.log"),
        "network": net.as_doc() if net else None,
        "vip": net.vip if net else None,
    }
    save(base, doc)
    for name in names:
        home = base / name
        home.mkdir(mode=0o755)
        pg = Postgres(home / "pg", free_port(), extra_listen=listen, networks=nets)
        admin_pw = secrets.token_urlsafe(18)
        say(f"creating {name}: local PostgreSQL on {db_host}:{pg.port}")
        pg.init(admin_pw)
        pg.start()
        _secret_file(home / "admin-pw", admin_pw)
        node: dict[str, Any] = {"name": name, "config": str(home / "appliance.toml"), "pg_port": pg.port}
        if net is not None:
            namespace, address = net.nodes[name]
            node |= {"netns": namespace, "address": address, "health": {"host": address, "port": 8008},
                     "service": {"host": address, "port": 8013}, "join": {"host": address, "port": 8009}}
        else:
            node |= {"health": {"host": "127.0.0.1", "port": free_port()},
                     "service": {"host": "127.0.0.1", "port": free_port()},
                     "join": {"host": "127.0.0.1", "port": free_port()}}
        # The cluster's interval comes from node1's configuration when its redirect deploys the schema.
        (home / "appliance.toml").write_text(node_config(base, node, keepalive, net))
        config = load_config(home / "appliance.toml")
        initialise(config, clock=SystemClock(), say=_prefixed(name))
        doc["nodes"].append(node)
        save(base, doc)
        start_agent(base, name, node.get("netns"))
    if with_haproxy:
        doc["haproxy"] = {"host": "127.0.0.1", "port": free_port()}
        save(base, doc)
        _start_haproxy(base, doc)
    if notify_sink:
        http_port, smtp_port = free_port(), free_port()
        doc["notify_sink"] = {"webhook": f"http://127.0.0.1:{http_port}/ha", "smtp": f"127.0.0.1:{smtp_port}",
                              "email": "admin@sandbox.example", "file": str(base / "notifications.jsonl")}
        save(base, doc)
        _start_sink(base, doc)
    if cluster:
        _form_cluster(base, doc)
        if net is not None and net.vip:
            _shell(doc["nodes"][0], f"ha set vip {net.vip} --yes")
        if notify_sink:
            sink = doc["notify_sink"]
            _shell(doc["nodes"][0], f"ha set notify webhook {sink['webhook']} --yes")
            _shell(doc["nodes"][0], f"ha set notify email --to {sink['email']} --smtp {sink['smtp']} --yes")
        _wait_settled(base, doc, keepalive)
    say(f"up: {nodes} node(s); remote database {REMOTE_USER}@{db_host}:{remote.port}/{REMOTE_DB}; "
        f"details (with the password) in {manifest_path(base)}")
    return status(base)


def _resume(base: Path) -> int:
    doc = load(base)
    say(f"resuming the sandbox in {base}")
    net = _network(doc)
    if net is not None and not netns.exists(net):
        netns.create(net)
    listen, nets = ((net.host,), (net.control,)) if net else ((), ())
    Postgres(base / "remote", doc["remote"]["port"], extra_listen=listen, networks=nets).start()
    for node in doc["nodes"]:
        Postgres(base / node["name"] / "pg", node["pg_port"], extra_listen=listen, networks=nets).start()
        start_agent(base, node["name"], node.get("netns"))
    if doc.get("haproxy"):
        _start_haproxy(base, doc)
    if doc.get("notify_sink"):
        _start_sink(base, doc)
    return status(base)


def sink_pidfile(base: Path) -> Path:
    return base / "notify-sink.pid"


def _start_sink(base: Path, doc: dict[str, Any]) -> None:
    """The notification receiver (``python -m appliance.sandbox.sink``), in the background."""
    if _pid(sink_pidfile(base)):
        return
    sink = doc["notify_sink"]
    http_port = int(sink["webhook"].rsplit(":", 1)[1].split("/", 1)[0])
    smtp_port = int(sink["smtp"].rsplit(":", 1)[1])
    with open(base / "notify-sink.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "appliance.sandbox.sink", "--file", sink["file"],
                                 "--http-port", str(http_port), "--smtp-port", str(smtp_port)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                close_fds=True, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    sink_pidfile(base).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", smtp_port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    if proc.poll() is not None:
        raise CommandFailed(f"the notification receiver did not start; see {base / 'notify-sink.log'}",
                            hint="it needs the dev extras (aiosmtpd): pip install -e '.[dev]'")
    say(f"notification receiver (pid {proc.pid}): webhook {sink['webhook']}, SMTP {sink['smtp']}, "
        f"writing to {sink['file']}")


def _stop_sink(base: Path) -> bool:
    pid = _pid(sink_pidfile(base))
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while _pid(sink_pidfile(base)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid(sink_pidfile(base)):
        os.kill(pid, signal.SIGKILL)
    return True


def _start_haproxy(base: Path, doc: dict[str, Any]) -> None:
    front = doc["haproxy"]
    pid = haproxy.start(base, (front["host"], front["port"]), doc["nodes"])
    say(f"haproxy (pid {pid}) on {front['host']}:{front['port']}: forwards to the node whose /primary answers 200")


def _shell(node: dict[str, Any], line: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(BIN / "appliance-shell"), "--config", node["config"], "-c", line], input=stdin,
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                          check=False)
    if done.returncode != 0:
        raise CommandFailed(f"{node['name']}: {line.split(' --db_pass')[0]} failed: {done.stderr.strip()}")
    return done


def _prefixed(name: str) -> Callable[[str], None]:
    return lambda text: say(f"{name}: {text}")


def _form_cluster(base: Path, doc: dict[str, Any]) -> None:
    remote = doc["remote"]
    for index, node in enumerate(doc["nodes"]):
        role = "--is_primary_node" if index == 0 else "--is_secondary_node"
        line = (f"redirect --db_host {remote['host']} --db_port {remote['port']} --db_user {remote['user']} "
                f"--db_name {remote['dbname']} --db_pass - {role} --yes")
        say(f"{node['name']}: {line.replace('--db_pass -', '--db_pass ********')}")
        _shell(node, line, stdin=remote["password"] + "\n")


def _wait_settled(base: Path, doc: dict[str, Any], keepalive: int, timeout_s: float = 30.0) -> None:
    """Wait until every agent runs on the shared database at the cluster's interval (bounded)."""
    deadline = time.monotonic() + timeout_s
    pending = [node["name"] for node in doc["nodes"]]
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            try:
                st = json.loads((base / name / "state" / "agent-status.json").read_text())
            except (OSError, ValueError):
                continue
            if st.get("keepalive_s") == keepalive and st.get("state") in ("PRIM", "ALONE", "SECOND"):
                pending.remove(name)
        time.sleep(0.1)
    if pending:
        say(f"warning: {', '.join(pending)} not settled after {timeout_s:g} s; see their agent.log")


def status(base: Path) -> int:
    doc = load(base.resolve())
    base = base.resolve()
    remote = Postgres(base / "remote", doc["remote"]["port"])
    print(f"remote database: {doc['remote']['host']}:{remote.port} ({'running' if remote.running() else 'stopped'})")
    if doc.get("haproxy"):
        pid = haproxy.pid(base)
        print(f"haproxy: {doc['haproxy']['host']}:{doc['haproxy']['port']} ({f'pid {pid}' if pid else 'stopped'})")
    if doc.get("vip"):
        print(f"virtual IP: {doc['vip']} (client namespace {doc['network']['client']['netns']})")
    if doc.get("notify_sink"):
        sink = doc["notify_sink"]
        pid = _pid(sink_pidfile(base))
        print(f"notification receiver: webhook {sink['webhook']}, SMTP {sink['smtp']} -> {sink['file']} "
              f"({f'pid {pid}' if pid else 'stopped'})")
    print(f"{'node':<8} {'agent':<14} {'state':<7} {'local db':<10} config")
    for node in doc["nodes"]:
        name = node["name"]
        pid = _pid(agent_pidfile(base, name))
        state = "-"
        try:
            state = json.loads((base / name / "state" / "agent-status.json").read_text()).get("state", "-")
        except (OSError, ValueError):
            pass
        pg = Postgres(base / name / "pg", node["pg_port"])
        agent = f"pid {pid}" if pid else "stopped"
        print(f"{name:<8} {agent:<14} {state if pid else '-':<7} "
              f"{'running' if pg.running() else 'stopped':<10} {node['config']}")
    return ExitStatus.OK


def node_of(doc: dict[str, Any], name: str) -> dict[str, Any]:
    for node in doc["nodes"]:
        if node["name"] == name:
            return dict(node)
    names = ", ".join(n["name"] for n in doc["nodes"])
    raise UsageError(f"no node {name!r} in this sandbox", hint=f"nodes: {names}")


def shell(base: Path, name: str) -> int:
    node = node_of(load(base.resolve()), name)
    os.execv(str(BIN / "appliance-shell"), [str(BIN / "appliance-shell"), "--config", node["config"]])


def kill(base: Path, name: str) -> int:
    """Kill a node as a crash would: its agent and services get SIGKILL."""
    base = base.resolve()
    node_of(load(base), name)
    stop_agent(base, name, signal.SIGKILL)
    for pidfile in (base / name / "state" / "run").glob("*.pid"):
        pid = _pid(pidfile)
        if pid:
            os.kill(pid, signal.SIGKILL)
    say(f"{name}: agent and services killed (SIGKILL); watch the failover with 'ha get nodes' on another node")
    return ExitStatus.OK


def start(base: Path, name: str) -> int:
    base = base.resolve()
    node = node_of(load(base), name)
    Postgres(base / name / "pg", node["pg_port"]).start()
    say(f"{name}: agent started (pid {start_agent(base, name, node.get('netns'))}); it rejoins as a standby")
    return ExitStatus.OK


def down(base: Path) -> int:
    base = base.resolve()
    doc = load(base)
    if haproxy.stop(base):
        say("haproxy stopped")
    if _stop_sink(base):
        say("notification receiver stopped")
    for node in doc["nodes"]:
        if stop_agent(base, node["name"]):
            say(f"{node['name']}: agent stopped")
        try:
            _services(base, node["name"]).stop()
        except ApplianceError as exc:
            say(f"{node['name']}: could not stop its services: {exc.message}")
        Postgres(base / node["name"] / "pg", node["pg_port"]).stop()
    Postgres(base / "remote", doc["remote"]["port"]).stop()
    net = _network(doc)
    if net is not None:
        netns.destroy(net)
        left = netns.leftovers(net)
        say(f"network removed ({net.bridge}, {len(net.namespaces())} namespaces)" if not left
            else f"warning: could not remove {', '.join(left)}")
    say(f"down: nothing of the sandbox in {base} is running (files kept; 'up' resumes it)")
    return ExitStatus.OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance-sandbox", description="A local multi-node appliance cluster.")
    sub = parser.add_subparsers(dest="action", required=True)
    p_up = sub.add_parser("up", help="create (or resume) the sandbox and start it")
    p_up.add_argument("--nodes", type=int, default=2)
    p_up.add_argument("--cluster", action="store_true", help="also redirect the nodes into one cluster")
    p_up.add_argument("--keepalive", type=int, default=10,
                      help="keepalive interval of the cluster (and of each node's own database), 1-30 s")
    p_up.add_argument("--haproxy", action="store_true",
                      help="also start HAProxy in front of the nodes' service ports (checks GET /primary)")
    p_up.add_argument("--netns", action="store_true",
                      help="root: each node in its own network namespace on one bridge, plus a client namespace")
    p_up.add_argument("--vip", metavar="ADDRESS/PREFIX", help="with --netns: the cluster's virtual IP")
    p_up.add_argument("--notify-sink", action="store_true",
                      help="also start a webhook and SMTP receiver writing to DIR/notifications.jsonl (with "
                           "--cluster: the cluster's notifications go there)")
    for name in ("status", "down"):
        sub.add_parser(name)
    for name in ("shell", "kill", "start"):
        sub.add_parser(name).add_argument("node")
    for sp in sub.choices.values():
        sp.add_argument("--dir", type=Path, default=Path(".sandbox"), help="sandbox directory (default ./.sandbox)")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            return up(args.dir, args.nodes, args.cluster, args.keepalive, with_haproxy=args.haproxy,
                      with_netns=args.netns, vip=args.vip, notify_sink=args.notify_sink)
        if args.action == "status":
            return status(args.dir)
        if args.action == "down":
            return down(args.dir)
        return {"shell": shell, "kill": kill, "start": start}[args.action](args.dir, args.node)
    except ApplianceError as exc:
        render_error(exc, sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
