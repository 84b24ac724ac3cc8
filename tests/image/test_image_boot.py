"""The image booted: first boot, the HA agent under systemd as its own user, SSH into the appliance
shell, who may do what (polkit, the privileged helper's socket, file modes).

One container per module (``systemd-nspawn --boot --private-network --register=no --keep-unit`` of a
disposable overlay of the build, see :mod:`tests.image.machine`); the tests run in file order against
it, as an admin would meet a new appliance: first boot, agent ready, the initial password refused over
SSH, the password set at the console (here: by root in the container, standing in for the console,
whose forced change the qemu test drives), then commands. SSH goes to 127.0.0.1:22 inside the
container's own network namespace (paramiko over a socket created there).
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
HELPER_SOCKET = "/run/appliance-privhelper.sock"
SECRETS = "/var/lib/appliance-agent"
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
    agent_uid = int(node.run(["id", "-u", "appliance-agent"]).stdout)
    ems_gid = int(node.run(["id", "-g", "ems"]).stdout)
    state_dir, secrets_dir = node.root / "var/lib/appliance", node.root / SECRETS.lstrip("/")
    st = state_dir.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (agent_uid, ems_gid, 0o2770)
    st = secrets_dir.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (agent_uid, 0o700)
    for path in (secrets_dir / "credentials", secrets_dir / "key"):
        assert path.stat().st_uid == agent_uid, f"{path} is not owned by appliance-agent"
    assert (secrets_dir / "credentials" / "current").is_symlink()
    assert list((secrets_dir / "credentials" / "current").glob("*.cred"))
    assert (secrets_dir / "key" / "current").is_symlink()
    assert not (state_dir / "credentials").exists() and not (state_dir / "keys").exists()
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
    assert state["Type"] == "notify" and state["User"] == "appliance-agent"
    assert state["NRestarts"] == "0", node.journal("-u", "appliance-agent")
    assert state["WatchdogUSec"] == "1min"
    node.wait_for("agent acting as primary",
                  lambda: "primary" in node.show("appliance-agent.service", "StatusText")["StatusText"], 30)
    status = json.loads(read(node, "/var/lib/appliance/agent-status.json"))
    assert status["acting"] is True and status["state"] == "ALONE"


def test_agent_started_the_primary_only_unit_as_its_own_user_under_polkit(node):
    node.wait_for("appliance-demo active", lambda: active(node, "appliance-demo"), 30)
    log = node.root / "var/log/appliance-demo.log"
    node.wait_for("demo log lines", lambda: log.exists() and "epoch=" in log.read_text(), 10)
    assert re.search(r" EMS epoch=1$", log.read_text().splitlines()[-1])
    assert node.show("appliance-demo.service", "User")["User"] == "appliance-agent"
    agent = node.show("appliance-agent.service", "MainPID", "NRestarts")
    assert agent["NRestarts"] == "0"
    # The agent holds no capability at all: systemd asked polkit for the start.
    status = node.run(["cat", f"/proc/{agent['MainPID']}/status"]).stdout
    assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status


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


def test_the_initial_password_is_refused_over_ssh(node, account):
    """Neither method logs in with the expired initial password: no network peer chooses the new one."""
    asked: list[str] = []

    def answer(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        asked.extend(prompt for prompt, _echo in prompts)
        return ["ems" if "new" not in prompt.lower() else account["new"] for prompt, _echo in prompts]

    for login_with in (lambda t: t.auth_password("ems", "ems"), lambda t: t.auth_interactive("ems", answer)):
        t = transport(node)
        try:
            with pytest.raises(paramiko.AuthenticationException):
                login_with(t)
        finally:
            t.close()
    assert not any("new password" in prompt.lower() for prompt in asked), asked
    assert "by PAM account configuration" in node.journal("-u", "ssh")
    assert node.run(["chage", "-l", "ems"]).stdout.count("password must be changed") >= 1  # unchanged


def test_after_the_console_change_ssh_reaches_the_shell(node, account):
    # What the forced change on the console does (the qemu test drives the real one): a new password.
    assert node.run(["chpasswd"], input=f"ems:{account['new']}\n").returncode == 0
    account["password"] = account["new"]
    t = login(node, account["password"])
    try:
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


# --- who may do what: the helper's socket, polkit, file modes, /proc --------------------------------

# The helper's wire protocol by hand (one JSON array of strings; one "STATUS TEXT" line back), run
# inside the container as a given user: what any local process could send.
RAW_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
s.shutdown(socket.SHUT_WR)
print(s.recv(4096).decode().strip())
"""


def helper_as(node: Container, user: str, request: list[str]) -> str:
    done = node.run(["runuser", "-u", user, "--", "/usr/bin/python3", "-I", "-c", RAW_CLIENT, HELPER_SOCKET,
                     json.dumps(request)])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def as_user(node: Container, user: str, *argv: str) -> tuple[int, str]:
    done = node.run(["runuser", "-u", user, "--", *argv])
    return done.returncode, done.stdout + done.stderr


def test_set_hostname_with_hostnamectl_and_the_helper(node, account):
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
    journal = node.journal("-u", "appliance-privhelper@*")
    assert re.search(r"privhelper: uid 1000 pid \d+: hosts-name: status 0", journal), journal


def test_the_helper_refuses_other_requests_and_other_users(node):
    assert helper_as(node, "ems", ["service", "stop", "ssh.service"]).startswith("2 unknown request 'service'")
    assert helper_as(node, "ems", ["hosts-name", "evil;reboot"]).startswith("2 invalid hostname")
    assert helper_as(node, "nobody", ["hosts-name", "EVIL"]) == "2 not allowed for uid 65534"
    assert helper_as(node, "postgres", ["power", "reboot"]).startswith("2 not allowed for uid ")
    assert "127.0.1.1\tEVIL" not in read(node, "/etc/hosts")
    assert active(node, "ssh")


def test_no_sudo_and_no_setuid_way_to_root(node):
    assert not (node.root / "etc/sudoers.d/appliance").exists()
    assert node.run(["sh", "-c", "command -v sudo pkexec su-to-root"]).stdout == ""
    found = node.run(["find", "/usr", "/opt", "-xdev", "-perm", "-4000", "-type", "f"]).stdout.split()
    # What Debian's login packages need (passwd for `execute passwd`, su/mount from util-linux);
    # nothing of the product, no sudo, no pkexec.
    assert not [path for path in found if "sudo" in path or "pkexec" in path or "appliance" in path], found


def test_ems_cannot_read_the_key_or_the_credentials(node):
    for path in (SECRETS, f"{SECRETS}/key", f"{SECRETS}/credentials/current"):
        status, out = as_user(node, "ems", "/usr/bin/ls", path)
        assert status != 0 and "Permission denied" in out, (path, out)
    key = next(p for p in (node.root / SECRETS.lstrip("/") / "key").rglob("*") if p.is_file())
    status, out = as_user(node, "ems", "/usr/bin/cat", "/" + str(key.relative_to(node.root)))
    assert status != 0 and "Permission denied" in out
    # The agent's own user reads them (it is the only one besides root).
    assert as_user(node, "appliance-agent", "/usr/bin/ls", f"{SECRETS}/credentials/current")[0] == 0


def test_polkit_allows_the_listed_actions_and_refuses_the_rest(node):
    systemctl = "/usr/bin/systemctl", "--no-ask-password"
    # ems: the service command's restarts, the hostname and time (the shell's tests above and the qemu
    # test use them); not stopping sshd, not rebooting, not the agent's start/stop.
    assert as_user(node, "ems", *systemctl, "try-restart", "appliance-demo.service")[0] == 0
    for argv in (("stop", "ssh.service"), ("stop", "appliance-agent.service"), ("start", "emergency.target"),
                 ("reboot",), ("mask", "appliance-demo.service")):
        status, out = as_user(node, "ems", *systemctl, *argv)
        assert status != 0 and ("Access denied" in out or "authentication required" in out.lower()), (argv, out)
    # the agent's user: start/stop/restart of the configured units only; no reboot, no hostname.
    assert as_user(node, "appliance-agent", *systemctl, "restart", "appliance-demo.service")[0] == 0
    for argv in ((*systemctl, "reboot"), (*systemctl, "stop", "ssh.service"),
                 ("/usr/bin/hostnamectl", "--no-ask-password", "set-hostname", "--static", "EVIL")):
        status, out = as_user(node, "appliance-agent", *argv)
        assert status != 0, (argv, out)
    assert active(node, "ssh") and active(node, "appliance-agent")
    assert node.run(["hostname"]).stdout.strip() != "EVIL"
    node.wait_for("appliance-demo active", lambda: active(node, "appliance-demo"), 30)


def test_proc_hides_other_users_processes(node):
    agent_pid = node.show("appliance-agent.service", "MainPID")["MainPID"]
    status, out = as_user(node, "ems", "/usr/bin/cat", f"/proc/{agent_pid}/cmdline")
    assert status != 0 and "No such file" in out
    assert "hidepid=invisible" in node.run(["findmnt", "-n", "-o", "OPTIONS", "/proc"]).stdout


def test_agent_unit_scores_at_most_3(node):
    done = node.run(["systemd-analyze", "security", "--no-pager", "appliance-agent.service"])
    [score] = re.findall(r"Overall exposure level for appliance-agent\.service: (\d+\.\d)", done.stdout)
    TIMINGS["systemd-analyze security appliance-agent.service (booted)"] = score
    assert float(score) <= 3.0, done.stdout[-2000:]


def test_redirect_from_the_shell_moves_the_node_and_the_agent_follows(node, account):
    """redirect as ems: the agent writes the credentials (ems hands it the password over its socket),
    and stops and starts the primary unit under polkit."""
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
    agent_uid = int(node.run(["id", "-u", "appliance-agent"]).stdout)
    for cred in (node.root / SECRETS.lstrip("/") / "credentials/current").iterdir():
        assert cred.stat().st_uid == agent_uid, cred
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
