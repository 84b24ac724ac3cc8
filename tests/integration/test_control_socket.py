"""The agent's control socket for real: an ``appliance-agent`` process, the shell as separate processes
(as root and as ``nobody``), raw clients sending garbage, a dead and a frozen (SIGSTOP) agent, and a
``redirect`` whose password travels only over the socket.

The peer check is the kernel's (SO_PEERCRED): the tests run as root and start a client as another OS
user with ``runuser``, so what is checked is the uid the agent sees, not a claim of the client.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.db import schema as S
from appliance.services import ProcessServices
from appliance.testkit.agentproc import BIN, AgentProcess, add_control_socket
from appliance.testkit.nodes import Node, Remote

RUNUSER = shutil.which("runuser")


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory another user can read (pytest's tmp_path is 0700 root), removed after."""
    path = Path(tempfile.mkdtemp(prefix="ctlsock-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _idle_config(home: Path, **agent: object) -> Path:
    """A node that was never initialised: its agent waits idle and serves the socket."""
    state = home / "state"
    state.mkdir(mode=0o755)
    config = home / "appliance.toml"
    config.write_text(f'[paths]\nstate_dir = "{state}"\n[audit]\ntarget = "file"\n[services]\nbackend = "none"\n'
                      '[join]\nlisten = ""\n[hostname]\nbackend = "file"\n')
    config.chmod(0o644)
    add_control_socket(config, home / "control.sock", **agent)  # type: ignore[arg-type]
    return config


@pytest.fixture
def idle_agent(home: Path) -> Iterator[tuple[Path, AgentProcess]]:
    config = _idle_config(home, users=("ems", "root"), timeout_s=2)
    agent = AgentProcess(config, home / "control.sock", home / "agent.log")
    yield config, agent
    agent.stop()


def shell(config: Path, line: str, *, user: str | None = None, stdin: str | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "appliance-shell"), "--config", str(config), "-c", line]
    if user is not None:
        assert RUNUSER, "runuser (util-linux) is needed to run a client as another user"
        argv = [RUNUSER, "-u", user, "--", *argv]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "USER": user or "ems"})


def raw(path: Path, payload: bytes, *, read_timeout: float = 10) -> list[dict[str, object]]:
    """Send ``payload`` as it is; return every answer until the agent closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(read_timeout)
        sock.connect(str(path))
        try:
            sock.sendall(payload)
        except BrokenPipeError:
            pass
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return [json.loads(line) for line in data.splitlines() if line]


# --- who may ask -----------------------------------------------------------------------------------


def test_an_allowed_user_is_answered_and_another_is_refused_by_its_uid(idle_agent) -> None:
    config, agent = idle_agent
    mine = shell(config, "ha get nodes")
    # Answered by the agent: the node is not initialised, which only the agent could find out here.
    assert mine.returncode == 1 and mine.stderr.startswith("error: this node is not initialised"), mine.stderr
    theirs = shell(config, "ha get nodes", user="nobody")
    assert theirs.returncode == 1
    assert theirs.stderr.splitlines()[0] == "error: user nobody (uid 65534) may not use the agent's control socket"
    assert "hint: " in theirs.stderr and "Traceback" not in theirs.stderr
    log = agent.log.read_text()
    assert re.search(r"refused nobody \(uid 65534, pid \d+\)", log), log


def test_a_user_named_in_control_users_is_answered(home: Path) -> None:
    config = _idle_config(home, users=("nobody",), timeout_s=2)
    agent = AgentProcess(config, home / "control.sock", home / "agent.log")
    try:
        done = shell(config, "system get status --json", user="nobody")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["db_target"] == "not initialised"
    finally:
        agent.stop()


# --- what it accepts ---------------------------------------------------------------------------------


def test_garbage_oversize_and_unknown_requests_get_one_error_and_the_agent_keeps_serving(idle_agent) -> None:
    config, agent = idle_agent
    path = agent.socket_path
    assert raw(path, b"this is not json\n")[0]["error"] == "bad request: not a JSON line"
    assert raw(path, b"[1, 2]\n")[0]["error"] == "bad request: not a JSON object"
    assert "unknown verb 'exec'" in str(raw(path, b'{"v": 1, "verb": "exec", "words": []}\n')[0]["error"])
    big = raw(path, b'{"v": 1, "verb": "run", "words": [["' + b"a" * 200_000 + b'", false]]}\n')
    assert big[0]["error"] == "bad request: a message longer than 65536 bytes"
    # A command the agent does not run for the shell (not declared via_agent), however well formed.
    ping = raw(path, b'{"v": 1, "verb": "run", "words": [["execute", false], ["ping", false], ["x", false]]}\n')
    assert ping[0]["error"] == "'execute ping' is not run by the agent"
    # A value typed on the line is never logged, even in a refused request.
    typed = raw(path, b'{"v": 1, "verb": "run", "words": [["redirect", false], ["--db_pass", false], '
                      b'["Typed-Secret-1", false]]}\n')
    assert "error" in typed[0] and "Typed-Secret-1" not in agent.log.read_text()
    # A client that never finishes its request is answered after [agent] request_timeout_s (2 s here).
    started = time.monotonic()
    slow = raw(path, b'{"v": 1, "verb": "run"', read_timeout=10)
    assert slow[0]["error"] == "no whole request in time" and time.monotonic() - started < 8
    assert shell(config, "system get status").returncode == 0  # still serving
    assert agent.proc.poll() is None


# --- an agent that does not answer -------------------------------------------------------------------


def test_no_socket_means_the_agent_is_not_running(home: Path) -> None:
    config = _idle_config(home)
    done = shell(config, "ha get nodes")
    assert done.returncode == 4 and done.stdout == ""
    assert done.stderr == (f"error: the agent is not running: no socket at {home / 'control.sock'}\n"
                           "hint: see 'systemctl status appliance-agent' (the shell reaches the database through it)\n")


def test_a_socket_nobody_listens_on_means_the_agent_is_not_running(home: Path) -> None:
    config = _idle_config(home)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(home / "control.sock"))  # what a killed agent leaves behind
    stale.close()
    done = shell(config, "ha get status")
    assert done.returncode == 4
    assert done.stderr.splitlines()[0] == \
        f"error: the agent is not running: nobody listens on it at {home / 'control.sock'}"


def test_a_frozen_agent_times_out_with_one_line_and_answers_again_when_thawed(idle_agent) -> None:
    config, agent = idle_agent
    os.kill(agent.pid, 19)  # SIGSTOP
    try:
        started = time.monotonic()
        done = shell(config, "ha get nodes")
        took = time.monotonic() - started
    finally:
        os.kill(agent.pid, 18)  # SIGCONT
    assert done.returncode == 4, done.stderr
    assert done.stderr.splitlines()[0].startswith("error: the agent did not answer within 2 s on ")
    assert took < 15
    assert shell(config, "system get status").returncode == 0


# --- a node with a database: the read path and redirect through the agent ----------------------------


@pytest.fixture
def socket_node(home: Path, pg_primary) -> Iterator[tuple[Node, AgentProcess]]:
    node = Node(home, "node1", pg_primary)
    node.init()
    add_control_socket(node.config_path, node.dir / "control.sock")
    agent = AgentProcess(node.config_path, node.dir / "control.sock", node.dir / "agent.log")
    yield node, agent
    agent.stop()
    ProcessServices(node.config).stop()


def _direct_config(node: Node) -> Path:
    """The same node's configuration without the socket: the shell's direct path."""
    text = node.config_path.read_text()
    direct = node.dir / "direct.toml"
    direct.write_text(text[: text.index("\n[agent]")] + "\n")
    return direct


def _stable(text: str) -> str:
    """Output with what changes from one second to the next (times, ages, latencies) blanked."""
    text = re.sub(r"\d{4}-\d\d-\d\d[ T][\d:.+]+", "<time>", text)
    text = re.sub(r"(uptime_s\"|Uptime)(.*)", r"\1<n>", text)
    return re.sub(r"\b\d+\.\d+\b", "<n>", text)  # latencies


def test_reads_through_the_socket_print_what_the_direct_path_prints_without_psycopg(socket_node) -> None:
    node, agent = socket_node
    direct = _direct_config(node)
    for line in ("ha get nodes", "ha get nodes --json", "system get status --json"):
        via, own = node.sh(line), shell(direct, line)
        assert via.returncode == own.returncode == 0, via.stderr + own.stderr
        assert _stable(via.stdout) == _stable(own.stdout), line
    probe = ("import sys\nfrom appliance.shell.env import Env\nfrom appliance.shell.main import run\n"
             f"status = run(['--config', {str(node.config_path)!r}, '-c', 'ha get nodes'], Env())\n"
             "print(status, 'psycopg' in sys.modules, 'cryptography' in sys.modules)")
    done = subprocess.run([str(BIN / "python"), "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.splitlines()[-1] == "0 False False", done.stdout + done.stderr


def test_redirect_through_the_socket_stores_the_credentials_and_the_password_shows_nowhere(
        socket_node, pg_primary) -> None:
    node, agent = socket_node
    remote = Remote(pg_primary)
    try:
        done = node.redirect(remote, "primary")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Node node1 will move from its local database" in done.stdout  # the agent's pre-flight
        assert "Node node1 is now the primary of cluster" in done.stdout  # its progress lines, streamed
        _origin, active = node.targets()  # written by the agent, through its credential backend
        assert not active.local and active.target.dbname == remote.dbname
        assert active.target.password == remote.password
        rotated = node.sh("system rotate-key --yes")
        assert rotated.returncode == 0 and "Master key rotated" in rotated.stdout, rotated.stderr
        assert node.targets()[1].target.password == remote.password
        leaked = [what for what, text in (("output", done.stdout + done.stderr), ("agent log", agent.log.read_text()),
                                          ("state dir", node.all_text()))
                  if remote.password in text]
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
            try:
                if remote.password.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    leaked.append(f"argv of {pid}")
            except OSError:
                continue
        assert leaked == []
        assert "--db_pass ********" in (node.state / "audit.log").read_text()
        log = agent.log.read_text()  # the agent ran them, for the uid the kernel named
        assert "(uid 0, pid " in log and "preview 'redirect' -> preview" in log and "run 'redirect' -> 0" in log
    finally:
        node.sh("ha leave --yes")
        pg_primary.drop_database(remote.dbname)
        pg_primary.drop_role(remote.user)


def test_ctrl_c_during_a_redirect_through_the_socket_rolls_back_in_the_agent(socket_node, pg_primary) -> None:
    node, agent = socket_node
    remote = Remote(pg_primary)
    before = node.targets()
    try:
        with pg_primary.connect(dbname=remote.dbname) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (S.lock_key("appliance"),))
            shell_proc = node.popen("appliance-shell", "-c", f"redirect --db_host 127.0.0.1 --db_port {remote.port} "
                                    f"--db_user {remote.user} --db_name {remote.dbname} --db_pass - "
                                    "--is_primary_node --yes", stdin=True)
            assert shell_proc.stdin is not None and shell_proc.stdout is not None
            shell_proc.stdin.write(remote.password + "\n")
            shell_proc.stdin.close()
            seen = ""
            while "holds the deployment lock" not in seen:
                line = shell_proc.stdout.readline()
                assert line, seen + (shell_proc.stderr.read() if shell_proc.stderr else "")
                seen += line
            shell_proc.send_signal(signal.SIGINT)  # Ctrl-C in the shell: it asks the agent to stop
            time.sleep(0.5)
            holder.execute("SELECT pg_advisory_unlock(%s)", (S.lock_key("appliance"),))
        shell_proc.stdin = None  # written and closed above
        out, err = shell_proc.communicate(timeout=60)
        shown = seen + out
        assert "interrupted (Ctrl-C)" in shown and "Rolled back" in shown, shown + err + agent.log.read_text()
        assert "is now the primary" not in shown and "Traceback" not in shown + err
        assert shell_proc.returncode == 130 and err.strip() == "interrupted"  # as without a socket
        assert node.targets() == before  # the agent kept the old credentials
    finally:
        pg_primary.drop_database(remote.dbname)
        pg_primary.drop_role(remote.user)


def test_an_agent_started_before_the_node_is_initialised_serves_at_once_and_runs_it_after_init(
        home: Path, pg_primary) -> None:
    node = Node(home, "node1", pg_primary)
    add_control_socket(node.config_path, node.dir / "control.sock")
    agent = AgentProcess(node.config_path, node.dir / "control.sock", node.dir / "agent.log")  # first boot's order
    try:
        early = node.sh("ha get status")
        assert early.returncode == 1 and "not initialised" in early.stderr  # answered, by the idle agent
        assert agent.proc.poll() is None
        node.init()  # appliance-admin init, while the agent waits
        deadline = time.monotonic() + 30
        running = re.compile(rf"^Agent\s+: running \(pid {agent.pid}\)", re.M)  # it left idle and ticks
        while not running.search((done := node.sh("ha get status")).stdout) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.returncode == 0 and running.search(done.stdout), done.stdout + done.stderr
        assert "idle, serving the control socket: this node is not initialised" in agent.log.read_text()
    finally:
        agent.stop()
        ProcessServices(node.config).stop()
