"""The privileged helper: every argument re-checked, refusals with status 2 and one line, no shell.

The helper runs in-process with a configuration of the test's own (the installed program has no
way to choose one). Programs it would run are recorded by a fake ``subprocess.run``; the hostname is
applied for real with the ``etc`` backend under a temporary root (kernel hostname left alone).
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.errors import CommandFailed, PermissionDenied
from appliance.privileged import client, server
from appliance.proc import CHILD_ENV

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


def write_config(tmp_path: Path, root: Path, tools: dict[str, Path], *, hostname_backend: str = "etc",
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
    ["--config", "/tmp/evil.toml", "service", "start", PRIMARY],
    ["-h"],
    ["rotate-key"],
    ["shell"],
    ["set-hostname"],
    ["set-hostname", "a", "b"],
    ["set-hostname", "-x"],
    ["set-hostname", "--help"],
    ["set-hostname", "a.b"],
    ["set-hostname", "node-"],
    ["set-hostname", "12345"],
    ["set-hostname", "localhost"],
    ["set-hostname", "LocalHost"],
    ["set-hostname", "a" * 64],
    ["set-hostname", "a b"],
    ["set-hostname", "a;reboot"],
    ["set-hostname", "$(reboot)"],
    ["set-hostname", "`id`"],
    ["set-hostname", "n\u00f6de"],
    ["set-hostname", "node\n"],
    ["set-hostname", "node\tx"],
    ["set-hostname", ""],
    ["set-hostname", "x" * 5000],
    ["service"],
    ["service", "start"],
    ["service", "reload", PRIMARY],
    ["service", "restart", "ssh.service", PRIMARY],
    ["service", "restart", "emergency.service"],
    ["service", "enable", PRIMARY],
    ["service", "mask", PRIMARY],
    ["service", "start", "ssh.service"],
    ["service", "stop", "appliance-agent.service"],
    ["service", "start", "emergency.target"],
    ["service", "start", "--", PRIMARY],
    ["service", "start", PRIMARY, "--now"],
    ["service", "start", PRIMARY, PRIMARY],
    ["service", "start", PRIMARY, "sshd.service"],
    ["service", "start", "appliance-demo"],
    ["service", "start", "../appliance-demo.service"],
    ["service", "start", "/etc/systemd/system/appliance-demo.service"],
    ["service", "start", PRIMARY.upper()],
    ["service", "start", PRIMARY + " "],
    ["Service", "start", PRIMARY],
]


@pytest.mark.parametrize("argv", REFUSED, ids=lambda a: repr(a)[:60])
def test_refused_with_status_2_one_line_and_nothing_run(argv, config_file, recorder, root):
    status, out, err = run(argv, config_file)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("privhelper: refused: ")
    assert recorder.calls == []
    assert (root / "etc" / "hostname").read_text() == "EMS\n"


def test_refusal_reasons_name_the_problem(config_file, recorder):
    assert "not listed" in run(["service", "start", "ssh.service"], config_file)[2]
    assert "unknown request 'rotate-key'" in run(["rotate-key"], config_file)[2]
    assert "invalid hostname" in run(["set-hostname", "a.b"], config_file)[2]


def test_units_refused_when_the_services_backend_is_not_systemd(tmp_path, root, tools, recorder):
    config_file = write_config(tmp_path, root, tools, services_backend="none")
    status, _out, err = run(["service", "start", PRIMARY], config_file)
    assert status == 2 and "not 'systemd'" in err
    assert recorder.calls == []


def test_the_environment_cannot_choose_another_configuration(tmp_path, config_file, recorder, monkeypatch):
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "appliance.toml").write_text('[services]\nbackend = "systemd"\nprimary_units = ["ssh.service"]\n')
    monkeypatch.setenv("APPLIANCE_CONFIG", str(evil / "appliance.toml"))
    status, _out, err = run(["service", "stop", "ssh.service"], config_file)
    assert status == 2 and "not listed" in err
    assert recorder.calls == []


def test_a_missing_configuration_fails_with_status_1(tmp_path, recorder):
    status, _out, err = run(["set-hostname", "node1"], tmp_path / "absent.toml")
    assert status == 1 and err.startswith("privhelper: error: ") and err.count("\n") == 1
    assert recorder.calls == []


# --- hostname ---------------------------------------------------------------------------------------


def test_set_hostname_with_the_etc_backend_under_a_temp_root(config_file, root, recorder):
    status, out, err = run(["set-hostname", "EMS-2"], config_file)
    assert (status, err) == (0, "")
    assert out == "hostname set to EMS-2\n"
    assert (root / "etc" / "hostname").read_text() == "EMS-2\n"
    hosts = (root / "etc" / "hosts").read_text().splitlines()
    assert hosts == ["127.0.0.1\tlocalhost", "127.0.1.1\tEMS-2", "# keep me", "::1\tlocalhost ip6-localhost"]
    assert recorder.calls == []


def test_set_hostname_adds_the_127_0_1_1_line_when_missing(config_file, root, recorder):
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    assert run(["set-hostname", "node7"], config_file)[0] == 0
    assert (root / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n127.0.1.1\tnode7\n::1 localhost\n"


@pytest.mark.parametrize("backend", ["helper", "hostnamectl"])
def test_set_hostname_with_hostnamectl_then_hosts(tmp_path, root, tools, recorder, backend):
    config_file = write_config(tmp_path, root, tools, hostname_backend=backend)
    status, _out, err = run(["set-hostname", "node-2"], config_file)
    assert (status, err) == (0, "")
    tool = str(tools["hostnamectl"])
    assert [argv for argv, _ in recorder.calls] == [
        [tool, "set-hostname", "--static", "--", "node-2"],
        [tool, "set-hostname", "--transient", "--", "node-2"],
    ]
    for _argv, kwargs in recorder.calls:
        assert kwargs["env"] == CHILD_ENV
        assert kwargs["stdin"] == subprocess.DEVNULL
        assert kwargs["timeout"] > 0
    assert "127.0.1.1\tnode-2" in (root / "etc" / "hosts").read_text()
    assert (root / "etc" / "hostname").read_text() == "EMS\n"  # hostnamectl's job, not ours


def test_hostnamectl_failure_is_status_1_and_hosts_untouched(tmp_path, root, tools, recorder):
    config_file = write_config(tmp_path, root, tools, hostname_backend="helper")
    recorder.returncode, recorder.stderr = 1, "Could not set static hostname: Access denied\n"
    before = (root / "etc" / "hosts").read_text()
    status, out, err = run(["set-hostname", "node-2"], config_file)
    assert status == 1 and out == ""
    assert err == "privhelper: error: hostnamectl failed: Could not set static hostname: Access denied\n"
    assert (root / "etc" / "hosts").read_text() == before


def test_the_file_backend_is_not_applied_by_the_helper(tmp_path, root, tools, recorder):
    config_file = write_config(tmp_path, root, tools, hostname_backend="file")
    status, _out, err = run(["set-hostname", "node-2"], config_file)
    assert status == 1 and "not applied by the privileged helper" in err


# --- services ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["start", "stop"])
def test_service_runs_systemctl_with_the_listed_units(config_file, tools, recorder, action):
    status, out, err = run(["service", action, PRIMARY, STANDBY], config_file)
    assert (status, err) == (0, "")
    assert out == f"{action} {PRIMARY} {STANDBY}: done\n"
    [(argv, kwargs)] = recorder.calls
    assert argv == [str(tools["systemctl"]), action, "--", PRIMARY, STANDBY]
    assert kwargs["env"] == CHILD_ENV and not kwargs.get("shell")


def test_systemctl_failure_is_status_1_with_one_line(config_file, recorder):
    recorder.returncode, recorder.stderr = 5, "Failed to start appliance-demo.service: Unit not found.\nmore\n"
    status, _out, err = run(["service", "start", PRIMARY], config_file)
    assert status == 1
    assert err == "privhelper: error: systemctl failed: Failed to start appliance-demo.service: Unit not found.\n"


# --- the client side (shell and agent as the appliance account) -------------------------------------


@pytest.fixture
def client_config(tmp_path: Path, root: Path, tools: dict[str, Path]) -> Path:
    """A config whose sudo is a fake that records its argv, then runs the real helper in-process."""
    log = tmp_path / "sudo.log"
    helper = make_tool(tmp_path / "libexec" / "privhelper")
    sudo = make_tool(tmp_path / "bin" / "sudo", "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + str(log) + "\n"
                     'case "$4" in refuse) echo "privhelper: refused: no (usage)" >&2; exit 2;;\n'
                     '  deny) echo "sudo: a password is required" >&2; exit 1;;\n'
                     '  fail) echo "privhelper: error: systemctl failed: boom" >&2; exit 1;; esac\n'
                     'echo "ok"\n')
    path = write_config(tmp_path, root, tools)
    path.write_text(path.read_text().replace("[tools]\n", f'[tools]\nsudo = "{sudo}"\nprivhelper = "{helper}"\n'))
    return path


def test_call_helper_runs_sudo_non_interactively_with_the_helper_by_path(client_config, tmp_path):
    config = load_config(client_config)
    assert client.call_helper(config, ["service", "start", PRIMARY], timeout_s=10) == "ok"
    argv = (tmp_path / "sudo.log").read_text().splitlines()
    assert argv == ["-n", "--", str(config.tools.privhelper), "service", "start", PRIMARY]


def test_call_helper_maps_refusals_and_sudo_errors(client_config):
    config = load_config(client_config)
    with pytest.raises(CommandFailed, match=r"^refused: no \(usage\)$"):
        client.call_helper(config, ["refuse"], timeout_s=10)
    with pytest.raises(CommandFailed, match=r"^systemctl failed: boom$"):
        client.call_helper(config, ["fail"], timeout_s=10)
    with pytest.raises(PermissionDenied, match="sudo: a password is required") as info:
        client.call_helper(config, ["deny"], timeout_s=10)
    assert "sudoers" in (info.value.hint or "")


def test_call_helper_needs_the_helper_installed(client_config, tmp_path):
    config = load_config(client_config)
    (tmp_path / "libexec" / "privhelper").unlink()
    with pytest.raises(Exception, match="is not installed"):
        client.call_helper(config, ["service", "start", PRIMARY], timeout_s=10)


def test_hostname_helper_backend_goes_through_the_helper(client_config, tmp_path):
    from appliance.hostname import HelperBackend, backend_for

    text = client_config.read_text().replace('backend = "etc"', 'backend = "helper"')
    client_config.write_text(text)
    config = load_config(client_config)
    backend = backend_for(config)
    assert isinstance(backend, HelperBackend)
    backend.set("EMS-7")
    assert (tmp_path / "sudo.log").read_text().splitlines()[-2:] == ["set-hostname", "EMS-7"]


def test_systemd_services_use_the_helper_unless_root(client_config, tmp_path, tools):
    from appliance.services import SystemdServices

    config = load_config(client_config)
    SystemdServices(config, as_root=False).start("primary")
    assert (tmp_path / "sudo.log").read_text().splitlines()[3:] == ["service", "start", STANDBY, PRIMARY]
    SystemdServices(config, as_root=False).start("standby")
    assert (tmp_path / "sudo.log").read_text().splitlines()[3:] == ["service", "start", STANDBY]


def test_systemd_services_as_root_call_systemctl_directly(client_config, tools, recorder):
    from appliance.services import SystemdServices

    config = load_config(client_config)
    SystemdServices(config, as_root=True).start("standby")
    assert [argv for argv, _ in recorder.calls] == [
        [str(tools["systemctl"]), "stop", "--", PRIMARY],
        [str(tools["systemctl"]), "start", "--", STANDBY],
    ]
