"""The image booted: first boot, the HA agent under systemd, SSH into the appliance shell, the helper.

One container per module (``systemd-nspawn --boot --private-network --register=no --keep-unit`` of a
disposable overlay of the build, see :mod:`tests.image.machine`); the tests run in file order against
it, as an admin would meet a new appliance: first boot, agent ready, the forced password change at
the first SSH login, then commands. SSH goes to 127.0.0.1:22 inside the container's own network
namespace (paramiko over a socket created there).
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator

import paramiko
import pytest

from tests.image.conftest import TIMINGS, Image, ensure_tool
from tests.image.machine import Container, booted

pytestmark = pytest.mark.slow

HELPER = "/usr/libexec/appliance/privhelper"
BOOT_TIMEOUT_S = 180.0
SSH_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def node(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    reason = ensure_tool("systemd-nspawn", "systemd-container")
    if reason:
        pytest.skip(reason)
    with booted(image.rootfs, tmp_path_factory.mktemp("boot")) as container:
        yield container


@pytest.fixture(scope="module")
def account() -> dict[str, str]:
    """The ems password as the tests change it (initially the image's public one)."""
    return {"password": "ems", "new": "Ems-" + secrets.token_urlsafe(12) + "-7q"}


def active(node: Container, unit: str) -> bool:
    return node.systemctl("is-active", unit).stdout.strip() == "active"


def read(node: Container, path: str) -> str:
    return (node.root / path.lstrip("/")).read_text()


# --- SSH --------------------------------------------------------------------------------------------


def transport(node: Container) -> paramiko.Transport:
    t = paramiko.Transport(node.connect(22))
    t.start_client(timeout=SSH_TIMEOUT_S)
    return t


def ssh_exec(t: paramiko.Transport, line: str) -> tuple[int, str, str]:
    chan = t.open_session(timeout=SSH_TIMEOUT_S)
    chan.settimeout(SSH_TIMEOUT_S)
    chan.exec_command(line)
    out = chan.makefile("rb").read().decode()
    err = chan.makefile_stderr("rb").read().decode()
    return chan.recv_exit_status(), out, err


def login(node: Container, password: str) -> paramiko.Transport:
    t = transport(node)
    t.auth_password("ems", password)
    assert t.is_authenticated()
    return t


# --- first boot and the agent ---------------------------------------------------------------------


def test_first_boot_initialises_the_node(node):
    def finished() -> bool:
        state = node.show("appliance-firstboot.service", "ActiveState", "Result")
        return state.get("ActiveState") in ("active", "failed")

    took = node.wait_for("appliance-firstboot finished", finished, BOOT_TIMEOUT_S)
    state = node.show("appliance-firstboot.service", "ActiveState", "Result", "ExecMainStartTimestampMonotonic",
                      "ExecMainExitTimestampMonotonic")
    assert (state["ActiveState"], state["Result"]) == ("active", "success"), node.journal("-u", "appliance-firstboot")
    ran_s = (int(state["ExecMainExitTimestampMonotonic"]) - int(state["ExecMainStartTimestampMonotonic"])) / 1e6
    TIMINGS["first boot (appliance-firstboot.service)"] = f"{ran_s:.1f} s, finished {took:.1f} s after nspawn start"

    uuid.UUID(read(node, "/var/lib/appliance/node-id").strip())
    state_dir = node.root / "var/lib/appliance"
    for path in (state_dir, state_dir / "node-id", state_dir / "credentials", state_dir / "keys"):
        assert path.stat().st_uid == 1000, f"{path} is not owned by ems"
    assert (state_dir / "credentials" / "current").is_symlink()
    assert list((state_dir / "credentials" / "current").glob("*.cred"))
    assert (state_dir / "keys" / "current").is_symlink()
    admin = node.root / "etc/appliance/local-db-admin-password"
    assert (admin.stat().st_uid, admin.stat().st_mode & 0o777) == (0, 0o600)
    assert len(admin.read_text().strip()) >= 32
    assert (node.root / "var/lib/appliance-firstboot.done").exists()
    assert (node.root / "etc/ssl/private/ssl-cert-snakeoil.key").exists()
    clusters = node.run(["pg_lsclusters", "--no-header"]).stdout.split()
    assert clusters[:4] == ["15", "main", "5432", "online"], clusters


def test_agent_reaches_ready_as_the_standalone_primary(node):
    took = node.wait_for("appliance-agent active (READY=1)", lambda: active(node, "appliance-agent"), BOOT_TIMEOUT_S)
    TIMINGS["boot to agent ready (nspawn start -> appliance-agent active)"] = f"{took:.1f} s"
    state = node.show("appliance-agent.service", "Type", "StatusText", "NRestarts", "WatchdogUSec", "User")
    assert state["Type"] == "notify" and state["User"] == "ems"
    assert state["NRestarts"] == "0", node.journal("-u", "appliance-agent")
    assert state["WatchdogUSec"] == "1min"
    node.wait_for("agent acting as primary",
                  lambda: "primary" in node.show("appliance-agent.service", "StatusText")["StatusText"], 30)
    status = json.loads(read(node, "/var/lib/appliance/agent-status.json"))
    assert status["acting"] is True and status["state"] == "ALONE"


def test_agent_started_the_primary_only_unit_through_the_helper(node):
    # Before anyone changed the expired password: sudo (NOPASSWD) still runs the helper.
    node.wait_for("appliance-demo active", lambda: active(node, "appliance-demo"), 30)
    log = node.root / "var/log/appliance-demo.log"
    node.wait_for("demo log lines", lambda: log.exists() and "epoch=" in log.read_text(), 10)
    assert re.search(r" EMS epoch=1$", log.read_text().splitlines()[-1])
    journal = node.journal("-t", "sudo")
    assert f"COMMAND={HELPER} service start appliance-demo.service" in journal


def test_system_is_running_with_nothing_failed(node):
    done = node.systemctl("is-system-running", "--wait", timeout=BOOT_TIMEOUT_S)
    failed = node.systemctl("--failed", "--plain", "--no-legend").stdout
    assert done.stdout.strip() == "running", failed


# --- SSH ------------------------------------------------------------------------------------------


def test_ssh_runs_with_fresh_host_keys(node, image):
    node.wait_for("ssh active", lambda: active(node, "ssh"), 60)
    keys = sorted(p.name for p in (node.root / "etc/ssh").glob("ssh_host_*_key"))
    assert keys == ["ssh_host_ecdsa_key", "ssh_host_ed25519_key", "ssh_host_rsa_key"]
    assert list((image.rootfs / "etc/ssh").glob("ssh_host_*")) == []
    t = transport(node)
    try:
        offered = t.get_remote_server_key()
        on_disk = {line.split()[1] for line in (read(node, f"/etc/ssh/{k}.pub") for k in keys)}
        assert offered.get_base64() in on_disk
    finally:
        t.close()


def test_first_login_forces_the_password_change_then_reaches_the_shell(node, account):
    prompts: list[str] = []

    def answer(title: str, instructions: str, asked: list[tuple[str, bool]]) -> list[str]:
        replies = []
        for prompt, _echo in asked:
            prompts.append(prompt)
            low = prompt.lower()
            replies.append(account["new"] if "new password" in low else account["password"])
        return replies

    t = transport(node)
    try:
        t.auth_interactive("ems", answer)
        assert t.is_authenticated()
        account["password"] = account["new"]
        assert any("You are required to change your password immediately" in p for p in prompts), prompts
        assert any(p.endswith("New password: ") for p in prompts) and any("Retype" in p for p in prompts)
        status, out, err = ssh_exec(t, "ha get nodes --json")
    finally:
        t.close()
    assert (status, err) == (0, "")
    doc = json.loads(out)
    [me] = doc["nodes"]
    assert (me["name"], me["this_node"], me["role"], me["status"], me["state"]) == (
        "EMS", True, "primary", "online", "ALONE")
    assert [(d["host"], d["role"], d["status"]) for d in doc["db_nodes"]] == [("127.0.0.1", "primary", "online")]


def test_the_old_password_is_gone_and_the_new_one_works(node, account):
    t = transport(node)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_password("ems", "ems")
    finally:
        t.close()
    t = login(node, account["password"])
    try:
        assert ssh_exec(t, "system get hostname") == (0, "EMS\n", "")
        status, out, _err = ssh_exec(t, "ha get nodes")
        assert status == 0 and "EMS (*)" in out and "primary" in out
        status, out, _err = ssh_exec(t, "system get hostname; id")
        assert status == 2 and out == ""
    finally:
        t.close()


def test_root_cannot_log_in(node):
    t = transport(node)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_password("root", "root")
    finally:
        t.close()


# --- the privileged helper ------------------------------------------------------------------------


def test_set_hostname_goes_through_the_helper(node, account):
    t = login(node, account["password"])
    try:
        status, out, err = ssh_exec(t, "system set hostname EMS-1 --yes")
        assert (status, err) == (0, ""), out
        assert ssh_exec(t, "system get hostname") == (0, "EMS-1\n", "")
    finally:
        t.close()
    assert read(node, "/etc/hostname") == "EMS-1\n"
    assert "127.0.1.1\tEMS-1" in read(node, "/etc/hosts").splitlines()
    assert node.run(["hostname"]).stdout.strip() == "EMS-1"
    assert f"COMMAND={HELPER} set-hostname EMS-1" in node.journal("-t", "sudo")


def test_the_helper_refuses_everything_else_from_ems(node):
    as_ems = ["runuser", "-u", "ems", "--", "/usr/bin/sudo", "-n"]
    done = node.run([*as_ems, HELPER, "service", "stop", "ssh.service"])
    assert done.returncode == 2 and "not listed" in done.stderr
    done = node.run([*as_ems, HELPER, "set-hostname", "evil;reboot"])
    assert done.returncode == 2 and "invalid hostname" in done.stderr
    done = node.run([*as_ems, "/bin/sh", "-c", "id"])
    assert done.returncode == 1 and "a password is required" in done.stderr
    assert active(node, "ssh")


def test_redirect_from_the_shell_moves_the_node_and_the_agent_follows(node, account):
    """redirect as ems: credentials written as ems, the primary unit stopped and started via the helper."""
    assert node.run(["runuser", "-u", "postgres", "--", "createdb", "shared"]).returncode == 0
    superuser = read(node, "/etc/appliance/local-db-admin-password").strip()
    t = login(node, account["password"])
    try:
        chan = t.open_session(timeout=SSH_TIMEOUT_S)
        chan.settimeout(120)
        chan.exec_command("redirect --db_host 127.0.0.1 --db_port 5432 --db_user postgres --db_name shared "
                          "--db_pass - --is_primary_node --yes")
        chan.sendall((superuser + "\n").encode())
        chan.shutdown_write()
        out = chan.makefile("rb").read().decode()
        err = chan.makefile_stderr("rb").read().decode()
        assert chan.recv_exit_status() == 0, out + err
        assert superuser not in out + err
        status, out, err = ssh_exec(t, "ha get status --json")
        assert status == 0, err
        target = json.loads(out)
    finally:
        t.close()
    assert "127.0.0.1:5432/shared" in json.dumps(target)
    for cred in (node.root / "var/lib/appliance/credentials/current").iterdir():
        assert cred.stat().st_uid == 1000, cred
    node.wait_for("agent on the new database",
                  lambda: "127.0.0.1:5432/shared" in node.journal("-u", "appliance-agent"), 30)
    node.wait_for("agent primary there",
                  lambda: "primary" in node.show("appliance-agent.service", "StatusText")["StatusText"], 30)
    node.wait_for("appliance-demo active", lambda: active(node, "appliance-demo"), 30)
    assert active(node, "appliance-agent")


# --- the agent under systemd: reload, clean stop, start -------------------------------------------


def test_agent_reload_keeps_it_running(node):
    before = node.show("appliance-agent.service", "MainPID")["MainPID"]
    assert node.systemctl("reload", "appliance-agent").returncode == 0
    time.sleep(1)
    assert active(node, "appliance-agent")
    assert node.show("appliance-agent.service", "MainPID")["MainPID"] == before


def test_agent_stop_resigns_and_stops_the_primary_unit_then_start_resumes(node):
    assert node.systemctl("stop", "appliance-agent", timeout=120).returncode == 0
    assert node.show("appliance-agent.service", "Result")["Result"] == "success"
    assert not active(node, "appliance-demo")
    assert "resign" in node.journal("-u", "appliance-agent")
    assert node.systemctl("start", "appliance-agent", timeout=120).returncode == 0
    node.wait_for("appliance-demo active again", lambda: active(node, "appliance-demo"), 30)
