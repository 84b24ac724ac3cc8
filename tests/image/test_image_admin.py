"""The administration commands on the booted image: two nodes under systemd-nspawn on one link.

Two containers (``EMS-A``, ``EMS-B``), each in a network namespace of the test's own (so the link
survives a reboot of the container), joined by a veth pair (``eth1`` on both sides, no DHCP server).
In file order, as an admin would: static addresses with ``system set network`` (real
systemd-networkd, through the helper) and the commit-confirm revert when not confirmed; the time zone
and NTP servers (systemd-timedated; timesyncd does not run in a container, which the shell reports);
``execute log show agent``; ``execute passwd`` over SSH; a cluster of the two (the shared database
is B's PostgreSQL); ``execute reboot`` of the primary A: the role moves to B first, A reboots, its agent
comes back and A rejoins as a standby; last, A back to DHCP.

Commands run as ``ems`` in the container (``runuser``, then the login shell), as SSH would run them.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.image.conftest import TIMINGS, Image, ensure_tool
from tests.image.machine import Container, booted, run

pytestmark = pytest.mark.slow

SHELL = "/usr/local/bin/appliance-shell"
NET = "198.51.100"
ADDRESS = {"a": f"{NET}.11", "b": f"{NET}.12"}
BOOT_TIMEOUT_S = 240.0
SSH_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def netns() -> Iterator[dict[str, Path]]:
    tag = secrets.token_hex(3)
    names = {"a": f"apl-a-{tag}", "b": f"apl-b-{tag}"}
    try:
        for name in names.values():
            assert run(["ip", "netns", "add", name]).returncode == 0
            # A new namespace's loopback is down (nspawn's --private-network brings it up itself).
            assert run(["ip", "-n", name, "link", "set", "lo", "up"]).returncode == 0
        done = run(["ip", "link", "add", "eth1", "netns", names["a"], "type", "veth", "peer", "name", "eth1",
                    "netns", names["b"]])
        assert done.returncode == 0, done.stderr
        yield {key: Path("/run/netns") / name for key, name in names.items()}
    finally:
        for name in names.values():
            run(["ip", "netns", "delete", name])  # the veth pair goes with its namespaces


def prepare(work: Path, image: Image, name: str, hardware_id: str) -> None:
    """The node's own name and hardware id, in the overlay's upper layer before the first boot.

    Both containers see the host's SMBIOS UUID: without an id of their own they would be twins, which
    a cluster refuses (rightly).
    """
    etc = work / "upper" / "etc"
    (etc / "appliance").mkdir(parents=True)
    config = (image.rootfs / "etc/appliance/appliance.toml").read_text()
    config = config.replace('[node]\ndefault_hostname = "EMS"', f'[node]\ndefault_hostname = "{name}"\n'
                            f'hardware_id = "{hardware_id}"')
    assert hardware_id in config
    (etc / "appliance" / "appliance.toml").write_text(config)
    (etc / "hostname").write_text(name + "\n")
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost\n")


@pytest.fixture(scope="module")
def nodes(image: Image, tmp_path_factory: pytest.TempPathFactory,
          netns: dict[str, Path]) -> Iterator[dict[str, Container]]:
    reason = ensure_tool("systemd-nspawn", "systemd-container")
    if reason:
        pytest.skip(reason)
    work_a, work_b = tmp_path_factory.mktemp("node-a"), tmp_path_factory.mktemp("node-b")
    prepare(work_a, image, "EMS-A", "HW-NSPAWN-A")
    prepare(work_b, image, "EMS-B", "HW-NSPAWN-B")
    with booted(image.rootfs, work_a, "appliance-a", netns=netns["a"]) as a, \
            booted(image.rootfs, work_b, "appliance-b", netns=netns["b"]) as b:
        for node in (a, b):
            node.wait_for("appliance-agent active",
                          lambda n=node: n.systemctl("is-active", "appliance-agent").stdout.strip() == "active",
                          BOOT_TIMEOUT_S)
        yield {"a": a, "b": b}


def sh(node: Container, line: str, stdin: str | None = None, timeout: float = 120) -> tuple[int, str, str]:
    """The appliance shell as ems, one command (how sshd runs ``ssh ems@vm 'LINE'``)."""
    done = node.run(["runuser", "-u", "ems", "--", SHELL, "-c", line], input=stdin, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def addresses(node: Container, interface: str = "eth1") -> list[str]:
    done = node.run(["ip", "-json", "-4", "address", "show", "dev", interface])
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(done.stdout or "[]")
            for a in link.get("addr_info", [])]


def wait_addresses(node: Container, expected: list[str], timeout: float = 30) -> None:
    node.wait_for(f"eth1 to have {expected}", lambda: addresses(node) == expected, timeout)


# --- network ----------------------------------------------------------------------------------------


def test_static_addresses_through_systemd_networkd(nodes):
    for key, node in nodes.items():
        status, out, err = sh(node, f"system set network --interface eth1 --address {ADDRESS[key]}/24 "
                                    f"--dns {NET}.53 --yes")
        assert status == 0, out + err
        assert "system confirm network" in out
        wait_addresses(node, [f"{ADDRESS[key]}/24"])
        doc = json.loads(sh(node, "system get network --json")[1])
        assert doc["pending"]["interface"] == "eth1"
        [eth1] = [i for i in doc["interfaces"] if i["name"] == "eth1"]
        assert (eth1["mode"], eth1["addresses"]) == ("static", [f"{ADDRESS[key]}/24"])
        assert sh(node, "system confirm network")[:2] == (0, "Network change confirmed: eth1 keeps its new "
                                                             "configuration.\n")
    status, out, _err = sh(nodes["a"], f"execute ping {ADDRESS['b']} --count 2")
    assert status == 0 and "2 received" in out
    status, out, _err = sh(nodes["a"], f"execute tcp-check {ADDRESS['b']} 22")
    assert status == 0 and "open" in out
    resolved = nodes["a"].run(["resolvectl", "dns", "eth1"]).stdout
    assert f"{NET}.53" in resolved


def test_a_change_not_confirmed_is_reverted_by_itself(nodes):
    a = nodes["a"]
    status, out, err = sh(a, f"system set network --interface eth1 --address {NET}.99/24 --confirm_within 10 --yes")
    assert status == 0, out + err
    wait_addresses(a, [f"{NET}.99/24"])
    started = time.monotonic()
    wait_addresses(a, [f"{ADDRESS['a']}/24"], timeout=40)
    TIMINGS["commit-confirm revert (10 s deadline) observed after"] = f"{time.monotonic() - started:.1f} s"
    assert json.loads(sh(a, "system get network --json")[1])["pending"] is None
    assert "reverted eth1" in a.journal("-u", "appliance-network-deadline")


# --- time -------------------------------------------------------------------------------------------


def test_time_zone_and_ntp_servers_applied_by_systemd(nodes):
    a = nodes["a"]
    status, out, err = sh(a, "system set timezone Europe/Paris --yes")
    assert status == 0, err
    assert a.run(["timedatectl", "show", "--property=Timezone", "--value"]).stdout.strip() == "Europe/Paris"
    assert (a.root / "etc/localtime").resolve().name == "Paris"
    status, out, err = sh(a, f"system set ntp --servers {ADDRESS['b']},ntp.example --yes")
    # A container keeps the host's clock: timesyncd does not run there, and the shell says so.
    assert status == 1 and "the NTP servers are written" in err and "systemd-timesyncd is not running" in err
    dropin = (a.root / "etc/systemd/timesyncd.conf.d/50-appliance.conf").read_text()
    assert dropin.endswith(f"NTP={ADDRESS['b']} ntp.example\n")
    doc = json.loads(sh(a, "system get time --json")[1])
    assert doc["timezone"] == "Europe/Paris" and doc["source"] == "timedatectl"
    assert doc["local_time"].endswith(("+01:00", "+02:00"))
    assert doc["ntp"] is False and doc["ntp_servers"] == [ADDRESS["b"], "ntp.example"]
    status, _out, err = sh(a, "execute date --set '2026-01-01 00:00:00' --yes")
    assert status == 1 and err  # a container may not set the host's clock: refused, with the reason


# --- logs, services, passwd -------------------------------------------------------------------------


def test_log_show_agent_reads_the_journal(nodes):
    status, out, err = sh(nodes["a"], "execute log show agent --lines 5")
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 5 and all(re.match(r"\d{4}-\d{2}-\d{2}T", line) for line in lines), out
    status, out, _err = sh(nodes["a"], "execute log show audit --grep 'set timezone' --json")
    assert status == 0 and any("system set timezone Europe/Paris --yes" in line for line in json.loads(out)["lines"])


def test_service_status_under_systemd(nodes):
    doc = json.loads(sh(nodes["a"], "service get status --json")[1])
    states = {s["name"]: s["state"] for s in doc["services"]}
    assert states["agent"] == "active (running)" and states["ssh"].startswith("active")
    assert states["database"] == "active (running)" and states["appliance-demo"] == "active (running)"


def ssh(node: Container, password: str) -> paramiko.Transport:
    t = paramiko.Transport(node.connect(22))
    t.start_client(timeout=SSH_TIMEOUT_S)
    t.auth_password("ems", password)
    assert t.is_authenticated()
    return t


def first_login(node: Container) -> str:
    """The first password, as the console's forced change (or a cloud-init seed) sets it; the initial
    one never logs in over SSH (test_image_boot.py). Returns the new password."""
    new = "Ems-" + secrets.token_urlsafe(10) + "-9x"
    assert node.run(["chpasswd"], input=f"ems:{new}\n").returncode == 0
    return new


def test_passwd_over_ssh(nodes):
    b = nodes["b"]
    old = first_login(b)
    new = "Ems-" + secrets.token_urlsafe(10) + "-8y"
    t = ssh(b, old)
    try:
        chan = t.open_session(timeout=SSH_TIMEOUT_S)
        chan.settimeout(SSH_TIMEOUT_S)
        chan.get_pty(width=120, height=40)
        chan.exec_command("execute passwd")
        seen = b""
        for prompt, reply in ((b"Current password: ", old), (b"New password: ", new), (b"Retype new password: ", new)):
            while prompt not in seen:
                chunk = chan.recv(4096)
                assert chunk, seen
                seen += chunk
            seen = seen.replace(prompt, b"<asked>", 1)
            chan.sendall((reply + "\n").encode())
        while chunk := chan.recv(4096):
            seen += chunk
        assert chan.recv_exit_status() == 0, seen
        assert b"Password changed." in seen
        assert old.encode() not in seen and new.encode() not in seen  # nothing echoed
    finally:
        t.close()
    ssh(b, new).close()  # the new password logs in; the old one no longer does
    t = paramiko.Transport(b.connect(22))
    try:
        t.start_client(timeout=SSH_TIMEOUT_S)
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_password("ems", old)
    finally:
        t.close()


# --- a cluster, and a reboot of its primary -----------------------------------------------------------


def test_the_two_nodes_form_a_cluster_on_bs_database(nodes):
    b = nodes["b"]
    pg = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"]
    assert b.run([*pg, "ALTER SYSTEM SET listen_addresses = '*'"]).returncode == 0
    hba = b.root / "etc/postgresql/15/main/pg_hba.conf"
    hba.write_text(hba.read_text() + f"host all all {NET}.0/24 scram-sha-256\n")
    assert b.systemctl("restart", "postgresql@15-main", timeout=120).returncode == 0
    b.wait_for("PostgreSQL on the link", lambda: b.run(["pg_isready", "-q", "-h", ADDRESS["b"]]).returncode == 0, 60)
    assert b.run(["runuser", "-u", "postgres", "--", "createdb", "shared"]).returncode == 0
    password = (b.root / "etc/appliance/local-db-admin-password").read_text().strip()
    for key, role in (("a", "--is_primary_node"), ("b", "--is_secondary_node")):
        status, out, err = sh(nodes[key], f"redirect --db_host {ADDRESS['b']} --db_port 5432 --db_user postgres "
                                          f"--db_name shared --db_pass - {role} --yes", stdin=password + "\n")
        assert status == 0, out + err
    nodes["b"].wait_for("B standby, A primary", lambda: _roles(nodes["b"]) == {"EMS-A": ("primary", "online"),
                                                                           "EMS-B": ("standby", "online")}, 60)


def test_ha_switchover_as_ems_and_back(nodes):
    """The login user moves the role and reads the cluster through the agents (it holds no credential)."""
    a, b = nodes["a"], nodes["b"]
    status, out, err = sh(a, "ha switchover --to EMS-B --yes")
    assert status == 0, out + err
    assert out.startswith("Switched over from EMS-A to EMS-B in ")
    a.wait_for("B primary", lambda: _roles(a) == {"EMS-A": ("standby", "online"), "EMS-B": ("primary", "online")}, 60)
    status, out, err = sh(b, "ha switchover --to EMS-A --yes")
    assert status == 0, out + err
    b.wait_for("A primary again", lambda: _roles(b) == {"EMS-A": ("primary", "online"),
                                                        "EMS-B": ("standby", "online")}, 60)


def _roles(node: Container) -> dict[str, tuple[str, str]]:
    status, out, _err = sh(node, "ha get nodes --json")
    if status != 0:
        return {}
    return {n["name"]: (n["role"], n["status"]) for n in json.loads(out)["nodes"]}


def test_reboot_of_the_primary_hands_over_and_it_rejoins_as_standby(nodes):
    a, b = nodes["a"], nodes["b"]
    status, out, err = sh(a, "execute reboot --yes")
    assert status == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("This node is the primary: the role is handed over to EMS-B first")
    assert lines[2].startswith("Switched over from EMS-A to EMS-B in ")
    assert lines[3] == "This node will reboot now (reboot in 3 s)."
    took = a.boot_again_after_reboot()
    TIMINGS["execute reboot: shell answer to the container's new PID 1"] = f"{took:.1f} s"
    a.wait_for("A's agent back", lambda: a.systemctl("is-active", "appliance-agent").stdout.strip() == "active",
               BOOT_TIMEOUT_S)
    b.wait_for("A back as a standby", lambda: _roles(b) == {"EMS-A": ("standby", "online"),
                                                            "EMS-B": ("primary", "online")}, 60)
    assert json.loads((a.root / "var/lib/appliance/agent-status.json").read_text())["state"] == "SECOND"
    # The journal is persistent (/var/log/journal): the audit record was written before the node went down.
    before = a.run(["journalctl", "-b", "-1", "--no-pager", "-t", "appliance-shell"]).stdout
    start, record = [line for line in before.splitlines() if 'line="execute reboot --yes"' in line]
    assert "event=start" in start and "event=end" in record  # a state-changing command: start and end
    assert "user=ems" in record and "status=0" in record


def test_back_to_dhcp(nodes):
    a = nodes["a"]
    status, out, err = sh(a, "system set network --interface eth1 --dhcp --yes")
    assert status == 0, out + err
    wait_addresses(a, [])  # nobody offers DHCP on this link: the static address is simply gone
    assert sh(a, "system confirm network")[0] == 0
    doc = json.loads(sh(a, "system get network --json")[1])
    assert [i["mode"] for i in doc["interfaces"] if i["name"] == "eth1"] == ["dhcp"]
    assert "DHCP=yes" in (a.root / "etc/systemd/network/10-appliance-eth1.network").read_text()
