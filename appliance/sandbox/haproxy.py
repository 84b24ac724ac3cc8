"""A real HAProxy in front of the sandbox's nodes (``appliance-sandbox up --haproxy``).

One TCP frontend forwards to the nodes' service ports; the backend sends traffic only to the node
whose health endpoint answers ``GET /primary`` with 200. An HTTP check, not a TCP one: a frozen
service still completes TCP handshakes (the kernel does that), while ``/primary`` stops answering 200
at the node's fence deadline by itself.

Check timing (what the README explains): ``downinter 100ms`` + ``rise 1`` put a new primary in service
at most 0.1 s after its first 200 (plus the check's round trip); ``inter 500ms fastinter 100ms fall 2``
take a failed one out within about 0.6 s of its first failed check, while one slow check on a loaded
host does not; ``timeout check 300ms`` bounds a check against a frozen agent; ``option redispatch`` and
``retries`` send a connection that was refused by the old node to the other one; ``on-marked-down
shutdown-sessions`` cuts sessions still held by a node that left service. ``balance first`` sends
everything to the first server in service, like the vendor's "First Alive".
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance.errors import CommandFailed, NotConfigured

HAPROXY = Path("/usr/sbin/haproxy")
CHECK = "inter 500ms fastinter 100ms downinter 100ms rise 1 fall 2"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def config_text(bind: tuple[str, int], nodes: Sequence[dict[str, Any]]) -> str:
    """The configuration for ``nodes`` (each with ``name``, ``service`` and ``health`` {host, port})."""
    servers = "\n".join(
        f"    server {n['name']} {_hostport(n['service']['host'], n['service']['port'])} check "
        f"addr {n['health']['host']} port {n['health']['port']}" for n in nodes)
    return f"""# Written by appliance-sandbox: the nodes' service ports behind one address, checked on /primary.
global
    maxconn 1024
    log stdout format raw local0 notice

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 300ms
    timeout client 30s
    timeout server 30s
    timeout check 300ms
    retries 3
    option redispatch

frontend appliance
    bind {_hostport(*bind)}
    default_backend primary

backend primary
    balance first
    option httpchk
    http-check send meth GET uri /primary ver HTTP/1.0
    http-check expect status 200
    default-server {CHECK} on-marked-down shutdown-sessions
{servers}
"""


def _program() -> Path:
    if not HAPROXY.exists():
        raise NotConfigured(f"{HAPROXY} is missing", hint="install Debian's haproxy package (scripts/setup.sh does)")
    return HAPROXY


def start(directory: Path, bind: tuple[str, int], nodes: Sequence[dict[str, Any]]) -> int:
    """Write ``directory/haproxy.cfg``, check it, and start HAProxy in the background; return its pid."""
    running = pid(directory)
    if running:
        return running
    program = _program()
    cfg = directory / "haproxy.cfg"
    cfg.write_text(config_text(bind, nodes))
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    check = subprocess.run([str(program), "-c", "-q", "-f", str(cfg)], capture_output=True, text=True, timeout=30,
                           env=env, check=False, stdin=subprocess.DEVNULL)
    if check.returncode != 0:
        raise CommandFailed(f"haproxy refused {cfg}: {(check.stderr.strip().splitlines() or ['?'])[-1]}")
    with open(directory / "haproxy.log", "ab") as log:
        proc = subprocess.Popen([str(program), "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, close_fds=True, env=env)
    (directory / "haproxy.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 5  # until it listens (or died: its log says why)
    while time.monotonic() < deadline and proc.poll() is None and not _listening(bind):
        time.sleep(0.02)
    if proc.poll() is not None:
        raise CommandFailed(f"haproxy exited at start (status {proc.returncode})", hint=f"see {directory}/haproxy.log")
    return proc.pid


def _listening(bind: tuple[str, int]) -> bool:
    import socket

    try:
        with socket.create_connection(bind, timeout=0.2):
            return True
    except OSError:
        return False


def pid(directory: Path) -> int | None:
    try:
        number = int((directory / "haproxy.pid").read_text().strip())
        cmdline = Path(f"/proc/{number}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return number if cmdline.startswith(str(HAPROXY).encode()) else None


def stop(directory: Path) -> bool:
    number = pid(directory)
    if number is None:
        return False
    os.kill(number, signal.SIGTERM)  # haproxy: SIGTERM = stop now
    deadline = time.monotonic() + 5
    while pid(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid(directory):
        os.kill(number, signal.SIGKILL)
    (directory / "haproxy.pid").unlink(missing_ok=True)
    return True
