"""The built image, as a tree: accounts, privileges, units, hygiene, and the product running in it.

Read-only checks look at the build directly; anything that runs a program in the tree does so in a
chroot of a disposable overlay (:func:`tests.image.machine.overlay`), so the build stays as built.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import load_config
from tests.image.conftest import REPO, TIMINGS, Image
from tests.image.machine import chroot, overlay, run

pytestmark = pytest.mark.slow

SHELL = "/usr/local/bin/appliance-shell"
HELPER = "/usr/libexec/appliance/privhelper"
OUR_UNITS = ("appliance-agent.service", "appliance-firstboot.service", "appliance-demo.service",
             "appliance-vip.service", "appliance-network-revert.service", "appliance-privhelper.socket",
             "appliance-privhelper@.service", "appliance-polkit-rules.service", "appliance-seed.service")


@pytest.fixture(scope="module")
def tree(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A writable, disposable chroot of the build."""
    with overlay(image.rootfs, tmp_path_factory.mktemp("tree")) as root:
        yield root


def passwd_entry(root: Path, name: str, db: str = "passwd") -> list[str]:
    for line in (root / "etc" / db).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise AssertionError(f"{name} is not in /etc/{db}")


# --- accounts -------------------------------------------------------------------------------------


def test_ems_account_has_the_appliance_shell(image):
    name, _x, uid, gid, _gecos, home, shell = passwd_entry(image.rootfs, "ems")
    assert (uid, home, shell) == ("1000", "/home/ems", SHELL)
    assert passwd_entry(image.rootfs, "ems", "group")[2] == gid
    assert SHELL in (image.rootfs / "etc" / "shells").read_text().splitlines()
    assert os.access(image.rootfs / SHELL.lstrip("/"), os.X_OK)
    home_st = (image.rootfs / "home" / "ems").stat()
    assert (home_st.st_uid, stat.S_IMODE(home_st.st_mode)) == (0, 0o755)  # nothing there is the account's
    hush = (image.rootfs / "home" / "ems" / ".hushlogin").stat()  # no motd text mixed into piped output
    assert (hush.st_uid, stat.S_IMODE(hush.st_mode)) == (0, 0o644)
    assert (image.rootfs / "etc" / "motd").read_text() == ""


def test_ems_must_change_the_password_at_first_login(image, tree):
    done = chroot(tree, ["chage", "-l", "ems"])
    assert done.returncode == 0, done.stderr
    assert "Last password change\t\t\t\t\t: password must be changed" in done.stdout
    shadow = passwd_entry(image.rootfs, "ems", "shadow")
    assert shadow[1].startswith("$y$")  # a real (yescrypt) hash of the public initial password
    assert shadow[2] == "0"


def test_ems_reads_the_journal_and_nothing_more(image):
    group = passwd_entry(image.rootfs, "systemd-journal", "group")
    assert group[3].split(",") == ["ems"]  # execute log show agent|system
    for other in ("adm", "sudo", "shadow", "disk"):
        assert "ems" not in passwd_entry(image.rootfs, other, "group")[3].split(","), other


def test_the_administration_tools_are_installed(image):
    installed = {line.split("\t")[0] for line in (image.out / "manifest.txt").read_text().splitlines()}
    assert {"traceroute", "systemd-resolved", "systemd-timesyncd", "iproute2", "postgresql-client-15"} <= installed
    pending = image.rootfs / "var/lib/appliance-network"
    assert (pending.stat().st_uid, stat.S_IMODE(pending.stat().st_mode)) == (0, 0o755)  # root's: the helper's
    config = load_config(image.rootfs / "etc" / "appliance" / "appliance.toml")
    for tool in ("traceroute", "ip", "journalctl", "timedatectl", "networkctl", "systemd_run", "pg_dump",
                 "pg_restore", "passwd"):
        path = getattr(config.tools, tool)
        assert in_tree(image.rootfs, path).is_file(), f"{tool}: {path}"


def in_tree(root: Path, path: Path) -> Path:
    """``path`` in the tree at ``root``, its symbolic links followed inside the tree (alternatives...)."""
    found = root / str(path).lstrip("/")
    for _hop in range(10):
        if not found.is_symlink():
            return found
        target = Path(os.readlink(found))
        found = root / str(target).lstrip("/") if target.is_absolute() else found.parent / target
    raise AssertionError(f"{path}: too many links")


def test_root_is_locked(image):
    assert passwd_entry(image.rootfs, "root", "shadow")[1].startswith("!")


def test_the_shell_wrappers_run_python_isolated(image):
    for path in (SHELL, "/usr/local/bin/appliance-agent", "/usr/local/bin/appliance-admin", HELPER):
        first = (image.rootfs / path.lstrip("/")).read_text().splitlines()[0]
        assert first == "#!/opt/appliance/venv/bin/python3 -I", path


# --- privileges -----------------------------------------------------------------------------------


def test_ping_has_cap_net_raw_and_no_setuid(image, tree):
    done = chroot(tree, ["getcap", "/usr/bin/ping"])
    assert done.stdout.split()[-1] == "cap_net_raw=ep", done.stdout + done.stderr
    assert not (image.rootfs / "usr" / "bin" / "ping").stat().st_mode & stat.S_ISUID


def test_ext4_image_keeps_the_ping_capability(image):
    done = run(["debugfs", "-R", "ea_list /usr/bin/ping", str(image.ext4)])
    assert "security.capability" in done.stdout, done.stdout + done.stderr


def test_no_sudo_no_sudoers_no_pkexec(image):
    for gone in ("etc/sudoers.d/appliance", "etc/sudoers", "usr/bin/sudo", "usr/bin/pkexec"):
        assert not (image.rootfs / gone).exists(), gone
    manifest = (image.out / "manifest.txt").read_text().split()
    assert "sudo" not in manifest and "pkexec" not in manifest
    assert "polkitd" in manifest


def test_polkit_rules_are_written_from_the_image_config(image):
    from appliance.privileged.polkit import rules_text

    rules_dir = image.rootfs / "etc/polkit-1/rules.d"
    st = rules_dir.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700  # polkitd's: ems cannot read the policy
    config = load_config(image.rootfs / "etc/appliance/appliance.toml")
    text = (rules_dir / "50-appliance.rules").read_text()
    assert text == rules_text(config).replace(str(config.source), "/etc/appliance/appliance.toml")


def test_sshd_refuses_an_expired_password_and_login_forces_the_change(image):
    sshd = (image.rootfs / "etc/pam.d/sshd").read_text().splitlines()
    at = sshd.index("@include common-account")
    assert sshd[at - 2:at] == ["account [new_authtok_reqd=ignore default=1] pam_unix.so",
                               "account requisite pam_deny.so"]
    login = (image.rootfs / "etc/pam.d/login").read_text()
    assert "@include common-account" in login and "pam_deny" not in login
    auth = (image.rootfs / "etc/pam.d/common-auth").read_text()
    assert auth.index("pam_faillock.so preauth") < auth.index("pam_unix.so") < auth.index("pam_faillock.so authfail")
    assert "deny = 5" in (image.rootfs / "etc/security/faillock.conf").read_text()


def test_proc_is_mounted_with_hidepid_and_polkit_may_see_it(image):
    gid = passwd_entry(image.rootfs, "proc", "group")[2]
    [line] = [x for x in (image.rootfs / "etc/fstab").read_text().splitlines() if x.startswith("proc ")]
    assert f"hidepid=invisible,gid={gid}" in line.split()[3]
    dropin = image.rootfs / "usr/lib/systemd/system/polkit.service.d/50-appliance-proc.conf"
    assert "SupplementaryGroups=proc" in dropin.read_text()


def test_the_installed_helper_refuses_anything_else(tree):
    for argv, reason in (
        (["rotate-key"], "unknown request"),
        (["hosts-name", "a.b"], "invalid hostname"),
        (["hosts-name", "-rf"], "invalid hostname"),
        (["set-hostname", "node1"], "unknown request"),
        (["service", "start", "ssh.service"], "unknown request"),
        (["network-apply", "lo", "dhcp", "none", "none", "120"], "loopback"),
        (["set-timezone", "Europe/Paris"], "unknown request"),
        (["power", "halt"], "reboot or poweroff"),
        (["--config", "/tmp/x.toml"], "unknown request"),
        (["serve"], "standard input"),
    ):
        done = chroot(tree, [HELPER, *argv])
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert done.stdout == ""
        assert done.stderr.startswith("privhelper: refused: ") and reason in done.stderr
        assert done.stderr.count("\n") == 1


# --- hygiene: nothing node-specific or secret ------------------------------------------------------


def test_no_host_keys_machine_id_or_secrets(image):
    root = image.rootfs
    assert list((root / "etc" / "ssh").glob("ssh_host_*")) == []
    assert (root / "etc" / "machine-id").read_bytes() == b""
    dbus_id = root / "var" / "lib" / "dbus" / "machine-id"
    assert not dbus_id.exists() or dbus_id.is_symlink()
    for gone in ("var/lib/systemd/credential.secret", "var/lib/systemd/random-seed",
                 "etc/ssl/private/ssl-cert-snakeoil.key", "etc/appliance/local-db-admin-password",
                 "var/lib/appliance-firstboot.done", "etc/postgresql/15/main", "var/lib/postgresql/15/main"):
        assert not (root / gone).exists(), gone
    state, secrets = root / "var" / "lib" / "appliance", root / "var" / "lib" / "appliance-agent"
    assert list(state.iterdir()) == [] and list(secrets.iterdir()) == []
    agent_uid = passwd_entry(root, "appliance-agent")[2]
    st = state.stat()
    assert (str(st.st_uid), str(st.st_gid), stat.S_IMODE(st.st_mode)) == (
        agent_uid, passwd_entry(root, "ems", "group")[2], 0o2770)
    st = secrets.stat()
    assert (str(st.st_uid), stat.S_IMODE(st.st_mode)) == (agent_uid, 0o700)


def test_no_private_key_anywhere_outside_program_code(image):
    done = run(["grep", "-rlI", "--exclude-dir=proc", "PRIVATE KEY-----", *(str(image.rootfs / d) for d in
                ("etc", "var", "root", "home", "usr/local"))])
    assert done.stdout == "", done.stdout


def test_names_are_the_appliances_not_the_build_hosts(image):
    root = image.rootfs
    assert (root / "etc" / "hostname").read_text() == "EMS\n"
    assert "127.0.1.1\tEMS" in (root / "etc" / "hosts").read_text().splitlines()
    # No name server of the build host: resolv.conf is systemd-resolved's stub (the DNS servers networkd has).
    assert os.readlink(root / "etc" / "resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
    resolved = (root / "etc/systemd/resolved.conf.d/50-appliance.conf").read_text()
    assert "LLMNR=no" in resolved and "MulticastDNS=no" in resolved  # nothing answering on the network
    assert (root / "etc" / "motd").read_text() == ""
    assert (root / "etc" / "locale.conf").read_text() == "LANG=C.UTF-8\n"


# --- sshd -----------------------------------------------------------------------------------------


def test_sshd_drop_in_is_the_tested_file(image):
    shipped = image.rootfs / "etc" / "ssh" / "sshd_config.d" / "50-appliance.conf"
    assert shipped.read_bytes() == (REPO / "image" / "sshd" / "50-appliance.conf").read_bytes(), (
        "the image's sshd drop-in differs from image/sshd/50-appliance.conf (a reused build older than the file?)")


def test_ssh_service_makes_host_keys_then_checks_the_config(image):
    drop_in = (image.rootfs / "usr/lib/systemd/system/ssh.service.d/50-appliance-hostkeys.conf").read_text()
    pre = [line for line in drop_in.splitlines() if line.startswith("ExecStartPre=")]
    assert pre == ["ExecStartPre=", "ExecStartPre=/usr/bin/ssh-keygen -A", "ExecStartPre=/usr/sbin/sshd -t"]


def test_sshd_accepts_its_configuration(tree):
    # In the disposable copy only: a host key and the privilege separation directory sshd -t wants.
    (tree / "run" / "sshd").mkdir(exist_ok=True)
    assert chroot(tree, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/run/test-host-key"]).returncode == 0
    done = chroot(tree, ["/usr/sbin/sshd", "-t", "-h", "/run/test-host-key"])
    assert done.returncode == 0, done.stderr
    effective = chroot(tree, ["/usr/sbin/sshd", "-T", "-h", "/run/test-host-key",
                              "-C", "user=ems,host=client,addr=192.0.2.1"]).stdout.splitlines()
    for line in ("kbdinteractiveauthentication yes", "permitrootlogin no", "allowusers ems", "usepam yes",
                 "disableforwarding yes"):
        assert line in effective


# --- units ----------------------------------------------------------------------------------------


def test_units_are_installed_and_enabled(image, tree):
    system = image.rootfs / "usr" / "lib" / "systemd" / "system"
    for unit in OUR_UNITS:
        assert (system / unit).is_file(), unit
    wants = image.rootfs / "etc" / "systemd" / "system"
    for target, unit in (("multi-user.target.wants", "appliance-agent.service"),
                         ("multi-user.target.wants", "appliance-firstboot.service"),
                         ("multi-user.target.wants", "ssh.service"),
                         ("multi-user.target.wants", "systemd-networkd.service"),
                         ("getty.target.wants", "serial-getty@ttyS0.service")):
        link = wants / target / unit
        assert link.is_symlink(), f"{target}/{unit}"
    for unit, expected in (("appliance-agent.service", "enabled"), ("appliance-firstboot.service", "enabled"),
                           ("appliance-demo.service", "static"), ("ssh.service", "enabled"),
                           ("systemd-resolved.service", "enabled"), ("systemd-timesyncd.service", "enabled"),
                           ("appliance-network-revert.service", "enabled"),
                           ("appliance-privhelper.socket", "enabled"), ("appliance-polkit-rules.service", "enabled"),
                           ("appliance-seed.service", "enabled"), ("systemd-firstboot.service", "masked")):
        assert chroot(tree, ["systemctl", "is-enabled", unit]).stdout.strip() == expected, unit


def test_units_verify(tree):
    done = chroot(tree, ["systemd-analyze", "verify", *(f"/usr/lib/systemd/system/{u}" for u in OUR_UNITS)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_agent_unit_settings(image):
    text = (image.rootfs / "usr/lib/systemd/system/appliance-agent.service").read_text()
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in text.splitlines() if "=" in line
             and not line.startswith("#")}
    assert lines["Type"] == "notify"
    assert lines["User"] == "appliance-agent"
    assert lines["NoNewPrivileges"] == "yes" and lines["CapabilityBoundingSet"] == ""
    assert int(lines["WatchdogSec"]) >= 60  # > 2 ticks at the longest keepalive interval (30 s)
    assert lines["Restart"] == "on-failure"
    assert lines["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert lines["KillMode"] == "mixed"
    assert lines["ProtectSystem"] == "strict"
    assert (lines["StateDirectory"], lines["StateDirectoryMode"]) == ("appliance-agent", "0700")
    assert (lines["RuntimeDirectory"], lines["RuntimeDirectoryMode"]) == ("appliance-agent", "0755")


@pytest.mark.parametrize("unit", ["appliance-agent.service", "appliance-privhelper@.service",
                                  "appliance-demo.service", "appliance-vip.service"])
def test_units_score_at_most_3_with_systemd_analyze_security(image, unit):
    path = image.rootfs / "usr/lib/systemd/system" / unit
    done = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)])
    [score] = re.findall(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    TIMINGS[f"systemd-analyze security --offline=yes {unit}"] = score
    assert float(score) <= 3.0, done.stdout[-2000:]


def test_firstboot_script_parses(tree):
    assert chroot(tree, ["bash", "-n", "/usr/libexec/appliance/firstboot"]).returncode == 0


# --- the product in the tree ----------------------------------------------------------------------


def test_image_config_is_valid_and_lists_the_units(image):
    config = load_config(image.rootfs / "etc" / "appliance" / "appliance.toml")
    assert config.hostname.backend == "helper"
    assert config.services.backend == "systemd"
    # The demo service and the VIP holder run on the primary only; every unit named ships in the image.
    assert config.services.primary_units == ("appliance-demo.service", "appliance-vip.service")
    for unit in config.services.primary_units + config.services.standby_units:
        assert (image.rootfs / "usr" / "lib" / "systemd" / "system" / unit).is_file(), unit
    assert config.paths.state_dir == Path("/var/lib/appliance")
    assert config.local_db.admin_password_file == Path("/etc/appliance/local-db-admin-password")
    assert str(config.tools.privhelper) == HELPER
    assert (str(config.privhelper.socket), config.privhelper.users) == (
        "/run/appliance-privhelper.sock", ("ems", "appliance-agent"))
    assert (config.agent.control_socket, config.agent.control_users) == (
        Path("/run/appliance-agent/control.sock"), ("ems", "root"))
    assert config.credentials_dir == Path("/var/lib/appliance-agent/credentials")
    assert config.key_dir == Path("/var/lib/appliance-agent/key")


def test_installed_product_is_this_source(tree):
    from appliance import __version__

    program = "import appliance; print(appliance.__version__)"
    done = chroot(tree, ["/opt/appliance/venv/bin/python3", "-I", "-c", program])
    assert done.stdout.strip() == __version__, done.stderr


def test_the_shell_runs_a_command_as_ems(tree):
    # Its own UTS namespace, so the name it reports is the one set here (not the build host's).
    done = run(["unshare", "--uts", "--", "sh", "-c",
                f'hostname EMS-TREE && exec chroot --userspec=1000:1000 {tree} {SHELL} -c "system get hostname"'])
    assert (done.returncode, done.stdout, done.stderr) == (0, "EMS-TREE\n", "")


def test_the_shell_refuses_shell_syntax(tree):
    done = chroot(tree, [SHELL, "-c", "system get hostname; id"], user="ems")
    assert done.returncode == 2
    assert done.stdout == ""
