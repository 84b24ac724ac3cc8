"""The privileged helper: who may ask (SO_PEERCRED), every argument re-checked, refusals with status 2
and one line, no shell; and its client, the socket protocol with its failures.

The helper runs in-process with a configuration of the test's own (the installed program has no
way to choose one): as a program (``main``), or answering connections on a socket of the test's
(:mod:`tests.helpersocket`), where a client running as another user (``nobody``, through setpriv)
shows the peer check. Programs it would run are recorded by a fake ``subprocess.run``; ``/etc/hosts``
is written for real under a temporary root.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.errors import CommandFailed, NotConfigured, PermissionDenied
from appliance.privileged import client, server
from appliance.proc import CHILD_ENV
from tests.helpersocket import HelperSocket, config_line, real_server

PRIMARY = "appliance-demo.service"
STANDBY = "appliance-report.service"


def make_tool(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    etc = tmp_path / "root" / "etc"
    etc.mkdir(parents=True)
    (etc / "hostname").write_text("EMS\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tEMS\n# keep me\n::1\tlocalhost ip6-localhost\n")
    return tmp_path / "root"


@pytest.fixture
def tools(tmp_path: Path) -> dict[str, Path]:
    return {name: make_tool(tmp_path / "bin" / name) for name in ("systemctl", "hostnamectl")}


def write_config(tmp_path: Path, root: Path, tools: dict[str, Path], *, hostname_backend: str = "helper",
                 services_backend: str = "systemd") -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(
        f'[hostname]\nbackend = "{hostname_backend}"\netc_root = "{root}"\nset_kernel = false\n\n'
        f'[tools]\nsystemctl = "{tools["systemctl"]}"\nhostnamectl = "{tools["hostnamectl"]}"\n\n'
        f'[services]\nbackend = "{services_backend}"\nprimary_units = ["{PRIMARY}"]\n'
        f'standby_units = ["{STANDBY}"]\nstop_timeout_s = 5\n'
    )
    return path


@pytest.fixture
def config_file(tmp_path: Path, root: Path, tools: dict[str, Path]) -> Path:
    return write_config(tmp_path, root, tools)


class Recorder:
    """Stands in for subprocess.run; fails the test if anything asks for a shell."""

    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.returncode, self.stderr = returncode, stderr

    def __call__(self, argv: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert isinstance(argv, list), "argv must be a list"
        assert not kwargs.get("shell"), "a shell was requested"
        self.calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, self.returncode, stdout="", stderr=self.stderr)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(subprocess, "run", rec)

    def no_shell(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the helper must never start a shell or a pipe")

    monkeypatch.setattr(subprocess, "Popen", no_shell)
    monkeypatch.setattr(os, "system", no_shell)
    monkeypatch.setattr(os, "popen", no_shell)
    return rec


def run(argv: list[str], config_file: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = server.main(argv, config_path=config_file, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


# --- refusals ---------------------------------------------------------------------------------------

REFUSED = [
    [],
    ["help"],
    ["--config", "/tmp/evil.toml", "hosts-name", "node1"],
    ["-h"],
    ["serve", "now"],
    ["rotate-key"],
    ["shell"],
    ["set-hostname", "node1"],  # hostnamectl under polkit: not the helper's any more
    ["service", "start", PRIMARY],  # systemctl under polkit
    ["set-timezone", "UTC"],
    ["ntp-off"],
    ["hosts-name"],
    ["hosts-name", "a", "b"],
    ["hosts-name", "-x"],
    ["hosts-name", "--help"],
    ["hosts-name", "a.b"],
    ["hosts-name", "node-"],
    ["hosts-name", "12345"],
    ["hosts-name", "localhost"],
    ["hosts-name", "LocalHost"],
    ["hosts-name", "a" * 64],
    ["hosts-name", "a b"],
    ["hosts-name", "a;reboot"],
    ["hosts-name", "$(reboot)"],
    ["hosts-name", "`id`"],
    ["hosts-name", "n\u00f6de"],
    ["hosts-name", "node\n"],
    ["hosts-name", "node\tx"],
    ["hosts-name", ""],
    ["hosts-name", "x" * 5000],
    ["power"],
    ["power", "halt"],
    ["power", "reboot", "now"],
    ["Hosts-name", "node1"],
]


@pytest.mark.parametrize("argv", REFUSED, ids=lambda a: repr(a)[:60])
def test_refused_with_status_2_one_line_and_nothing_run(argv, config_file, recorder, root):
    before = (root / "etc" / "hosts").read_text()
    status, out, err = run(argv, config_file)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("privhelper: refused: ")
    assert recorder.calls == []
    assert (root / "etc" / "hosts").read_text() == before


def test_refusal_reasons_name_the_problem(config_file, recorder):
    assert "unknown request 'service'" in run(["service", "start", "ssh.service"], config_file)[2]
    assert "unknown request 'rotate-key'" in run(["rotate-key"], config_file)[2]
    assert "invalid hostname" in run(["hosts-name", "a.b"], config_file)[2]


def test_the_environment_cannot_choose_another_configuration(tmp_path, config_file, root, recorder, monkeypatch):
    evil = tmp_path / "evil"
    (evil / "etc").mkdir(parents=True)
    (evil / "etc" / "hosts").write_text("127.0.1.1\tEVIL\n")
    (evil / "appliance.toml").write_text(f'[hostname]\nbackend = "helper"\netc_root = "{evil}"\n')
    monkeypatch.setenv("APPLIANCE_CONFIG", str(evil / "appliance.toml"))
    assert run(["hosts-name", "node1"], config_file)[0] == 0
    assert (evil / "etc" / "hosts").read_text() == "127.0.1.1\tEVIL\n"
    assert "127.0.1.1\tnode1" in (root / "etc" / "hosts").read_text()


def test_a_missing_configuration_fails_with_status_1(tmp_path, recorder):
    status, _out, err = run(["hosts-name", "node1"], tmp_path / "absent.toml")
    assert status == 1 and err.startswith("privhelper: error: ") and err.count("\n") == 1
    assert recorder.calls == []


# --- /etc/hosts ---------------------------------------------------------------------------------------


def test_hosts_name_rewrites_only_the_127_0_1_1_line(config_file, root, recorder):
    status, out, err = run(["hosts-name", "EMS-2"], config_file)
    assert (status, err) == (0, "")
    assert out == f"127.0.1.1 is EMS-2 in {root / 'etc' / 'hosts'}\n"
    hosts = (root / "etc" / "hosts").read_text().splitlines()
    assert hosts == ["127.0.0.1\tlocalhost", "127.0.1.1\tEMS-2", "# keep me", "::1\tlocalhost ip6-localhost"]
    assert (root / "etc" / "hostname").read_text() == "EMS\n"  # hostnamed's file, not the helper's
    assert recorder.calls == []


def test_hosts_name_adds_the_127_0_1_1_line_when_missing(config_file, root, recorder):
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    assert run(["hosts-name", "node7"], config_file)[0] == 0
    assert (root / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n127.0.1.1\tnode7\n::1 localhost\n"


@pytest.mark.parametrize("backend", ["file", "etc"])
def test_hosts_name_only_for_the_hostnamectl_backends(tmp_path, root, tools, recorder, backend):
    config_file = write_config(tmp_path, root, tools, hostname_backend=backend)
    status, _out, err = run(["hosts-name", "node-2"], config_file)
    assert status == 1 and "keeps no /etc/hosts line" in err


# --- the socket: who may ask ----------------------------------------------------------------------------

# A client that knows nothing of the product: the wire protocol by hand, as another user.
RAW_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
s.shutdown(socket.SHUT_WR)
print(s.recv(4096).decode().strip())
"""


def as_nobody(helper: HelperSocket, request: str) -> str:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the client as another user")
    done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                           sys.executable, "-I", "-c", RAW_CLIENT, str(helper.path), request],
                          capture_output=True, text=True, timeout=30, check=False, env=CHILD_ENV)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def serving(tmp_path: Path, root: Path, tools: dict[str, Path],
            users: tuple[str, ...]) -> tuple[HelperSocket, io.StringIO]:
    config_file = write_config(tmp_path, root, tools)
    log = io.StringIO()
    config_file.write_text(config_file.read_text() + f"[privhelper]\nusers = {json.dumps(list(users))}\n")
    return HelperSocket(serve=real_server(load_config(config_file), log)), log


def test_a_listed_user_is_served(tmp_path, root, tools):
    helper, log = serving(tmp_path, root, tools, ("nobody",))
    with helper:
        answer = as_nobody(helper, '["hosts-name","node-9"]')
    assert answer == f"0 127.0.1.1 is node-9 in {root / 'etc' / 'hosts'}"
    assert "127.0.1.1\tnode-9" in (root / "etc" / "hosts").read_text()
    assert helper.peers == [65534]
    assert "uid 65534" in log.getvalue() and "hosts-name: status 0" in log.getvalue()


def test_a_user_not_listed_is_refused_whatever_it_asks(tmp_path, root, tools):
    helper, log = serving(tmp_path, root, tools, ("daemon", "ems"))
    before = (root / "etc" / "hosts").read_text()
    with helper:
        answer = as_nobody(helper, '["hosts-name","node-9"]')
    assert answer == "2 not allowed for uid 65534"
    assert (root / "etc" / "hosts").read_text() == before
    assert "uid 65534" in log.getvalue() and "status 2" in log.getvalue()
    with pytest.raises(PermissionDenied, match="refused: not allowed for uid 65534") as info:
        client.parse_answer(answer.encode() + b"\n")
    assert "[privhelper] users" in (info.value.hint or "")


def test_root_is_always_served_and_bad_requests_refused(tmp_path, root, tools):
    helper, _log = serving(tmp_path, root, tools, ())
    with helper:
        config = replace_socket(tmp_path, root, tools, helper)
        assert client.call_helper(config, ["hosts-name", "node-3"], timeout_s=10).startswith("127.0.1.1 is node-3")
        with pytest.raises(CommandFailed, match=r"^refused: invalid hostname"):
            client.call_helper(config, ["hosts-name", "a;reboot"], timeout_s=10)
        with pytest.raises(CommandFailed, match=r"^refused: unknown request 'service'"):
            client.call_helper(config, ["service", "stop", "ssh.service"], timeout_s=10)
        for raw in (b"hosts-name node\n", b'{"verb": "hosts-name"}\n', b"[1, 2]\n", b"\xff\n", b"[" + b"x" * 5000):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(10)
                conn.connect(str(helper.path))
                conn.sendall(raw)
                conn.shutdown(socket.SHUT_WR)
                answer = conn.recv(4096).decode()
            assert answer.startswith("2 ") and answer.count("\n") == 1, (raw[:20], answer)
    assert "127.0.1.1\tnode-3" in (root / "etc" / "hosts").read_text()


def replace_socket(tmp_path: Path, root: Path, tools: dict[str, Path], helper: HelperSocket):
    path = write_config(tmp_path, root, tools)
    path.write_text(path.read_text() + config_line(helper))
    return load_config(path)


def test_serve_needs_a_socket_on_standard_input(config_file, recorder):
    status, _out, err = run(["serve"], config_file)
    assert status == 2 and "standard input" in err and err.count("\n") == 1


# --- the client ------------------------------------------------------------------------------------


def test_call_helper_sends_the_argv_and_returns_the_report(tmp_path, root, tools):
    with HelperSocket(lambda argv, uid: (0, "applied " + " ".join(argv))) as helper:
        config = replace_socket(tmp_path, root, tools, helper)
        assert client.call_helper(config, ["network-confirm"], timeout_s=10) == "applied network-confirm"
        assert helper.requests == [["network-confirm"]]


def test_call_helper_maps_refusals_and_failures(tmp_path, root, tools):
    answers = {"refuse": (2, "no (usage)"), "fail": (1, "networkctl failed: boom"),
               "deny": (2, "not allowed for uid 7")}
    with HelperSocket(lambda argv, uid: answers[argv[0]]) as helper:
        config = replace_socket(tmp_path, root, tools, helper)
        with pytest.raises(CommandFailed, match=r"^refused: no \(usage\)$"):
            client.call_helper(config, ["refuse"], timeout_s=10)
        with pytest.raises(CommandFailed, match=r"^networkctl failed: boom$"):
            client.call_helper(config, ["fail"], timeout_s=10)
        with pytest.raises(PermissionDenied, match="not allowed for uid 7"):
            client.call_helper(config, ["deny"], timeout_s=10)


def test_no_socket_is_one_line_with_a_hint(tmp_path, root, tools):
    path = write_config(tmp_path, root, tools)
    path.write_text(path.read_text() + f'[privhelper]\nsocket = "{tmp_path / "absent.sock"}"\n')
    with pytest.raises(NotConfigured, match="is not available here") as info:
        client.call_helper(load_config(path), ["network-confirm"], timeout_s=10)
    assert "appliance-privhelper.socket" in (info.value.hint or "")


def test_a_dead_helper_is_one_line_with_a_hint(tmp_path, root, tools):
    dead = tmp_path / "dead.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(dead))
    listener.close()  # the file stays, nobody listens: ECONNREFUSED
    path = write_config(tmp_path, root, tools)
    path.write_text(path.read_text() + f'[privhelper]\nsocket = "{dead}"\n')
    with pytest.raises(CommandFailed, match="cannot connect to the privileged helper") as info:
        client.call_helper(load_config(path), ["network-confirm"], timeout_s=10)
    assert "systemctl status appliance-privhelper.socket" in (info.value.hint or "")


def test_a_helper_that_does_not_answer_times_out(tmp_path, root, tools):
    hung = tmp_path / "hung.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(hung))
    listener.listen(1)  # accepted by the kernel, never answered
    try:
        path = write_config(tmp_path, root, tools)
        path.write_text(path.read_text() + f'[privhelper]\nsocket = "{hung}"\n')
        started = time.monotonic()
        with pytest.raises(CommandFailed, match=r"did not answer within 0\.5 s"):
            client.call_helper(load_config(path), ["network-confirm"], timeout_s=0.5)
        assert time.monotonic() - started < 5
    finally:
        listener.close()


def test_an_empty_answer_is_an_error(tmp_path, root, tools):
    with pytest.raises(CommandFailed, match="closed the connection without an answer"):
        client.parse_answer(b"")


# --- the callers: hostname and services --------------------------------------------------------------


def test_hostname_helper_backend_runs_hostnamectl_then_asks_for_the_hosts_line(tmp_path, root, tools, recorder):
    from appliance.hostname import HelperBackend, backend_for

    with HelperSocket() as helper:
        config = replace_socket(tmp_path, root, tools, helper)
        backend = backend_for(config)
        assert isinstance(backend, HelperBackend)
        backend.set("EMS-7")
        assert helper.requests == [["hosts-name", "EMS-7"]]
    tool = str(tools["hostnamectl"])
    assert [argv for argv, _ in recorder.calls] == [
        [tool, "--no-ask-password", "set-hostname", "--static", "--", "EMS-7"],
        [tool, "--no-ask-password", "set-hostname", "--transient", "--", "EMS-7"],
    ]
    assert all(kwargs["env"] == CHILD_ENV for _, kwargs in recorder.calls)


def test_hostname_refused_by_polkit_never_reaches_the_helper(tmp_path, root, tools, recorder):
    from appliance.hostname import backend_for

    recorder.returncode, recorder.stderr = 1, "Could not set static hostname: Access denied\n"
    with HelperSocket() as helper:
        config = replace_socket(tmp_path, root, tools, helper)
        with pytest.raises(CommandFailed, match=r"^hostnamectl failed: Could not set static hostname: Access denied$"):
            backend_for(config).set("EMS-7")
        assert helper.requests == []


def test_systemd_services_run_systemctl_without_prompting(config_file, tools, recorder):
    from appliance.services import SystemdServices

    config = load_config(config_file)
    SystemdServices(config).start("primary")
    SystemdServices(config).start("standby")
    tool = str(tools["systemctl"])
    assert [argv for argv, _ in recorder.calls] == [
        [tool, "--no-ask-password", "start", "--", STANDBY, PRIMARY],
        [tool, "--no-ask-password", "stop", "--", PRIMARY],
        [tool, "--no-ask-password", "start", "--", STANDBY],
    ]
    assert all(kwargs["env"] == CHILD_ENV and not kwargs.get("shell") for _, kwargs in recorder.calls)


def test_systemctl_refusal_is_one_line(config_file, recorder):
    from appliance.services import SystemdServices

    recorder.returncode, recorder.stderr = 1, "Failed to stop appliance-demo.service: Access denied\nmore\n"
    denied = r"^systemctl failed: Failed to stop appliance-demo\.service: Access denied$"
    with pytest.raises(CommandFailed, match=denied):
        SystemdServices(load_config(config_file)).stop()
