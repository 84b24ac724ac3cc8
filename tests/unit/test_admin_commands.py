"""The administration commands as the shell parses and dispatches them: refusals, injection vectors, and
the exact requests that reach the privileged helper or the polkit-governed tools.

The helper is a socket of the test's own (:mod:`tests.helpersocket`: the real wire protocol, every
request recorded and answered "done"); ``timedatectl`` and ``systemctl`` are recorder scripts. A
refused line must leave both untouched: nothing ran.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.clock import FakeClock
from appliance.config import Config, load_config
from appliance.errors import ExitStatus
from appliance.shell.context import Context
from appliance.shell.dispatch import Dispatcher
from appliance.shell.env import Env
from commands import build_registry
from tests.helpersocket import HelperSocket, config_line

# Records its argv (with its own name first); `show` answers like timedatectl with NTP off.
RECORDER = """#!{python}
import json, os, sys
open({log!r}, "a").write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
if "show" in sys.argv:
    print("no" if "--value" in sys.argv else "Timezone=UTC\\nNTP=no\\nNTPSynchronized=no")
"""


class Shell:
    def __init__(self, tmp: Path, *, services: str = "systemd") -> None:
        self.helper = HelperSocket()
        self.tool_log = tmp / "tools.jsonl"
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        for name in ("timedatectl", "systemctl"):
            (bin_dir / name).write_text(RECORDER.format(python=sys.executable, log=str(self.tool_log)))
            (bin_dir / name).chmod(0o755)
        (tmp / "appliance.toml").write_text(
            f'[paths]\nstate_dir = "{tmp / "state"}"\n[hostname]\nbackend = "file"\n[audit]\ntarget = "file"\n'
            f'[tools]\ntimedatectl = "{bin_dir / "timedatectl"}"\nsystemctl = "{bin_dir / "systemctl"}"\n'
            f'[services]\nbackend = "{services}"\nprimary_units = ["appliance-demo.service"]\n'
            + config_line(self.helper)
        )
        self.config: Config = load_config(tmp / "appliance.toml")

    def run(self, line: str, *, stdin: str = "") -> tuple[int, str, str]:
        env = Env(stdin=io.StringIO(stdin), stdout=io.StringIO(), stderr=io.StringIO(), environ={"USER": "ems"},
                  clock=FakeClock(), stdin_isatty=False, stdout_isatty=False)
        status = Dispatcher(Context(self.config, env, build_registry()), "command").run_line(line)
        return status, env.stdout.getvalue(), env.stderr.getvalue()

    def requests(self) -> list[list[str]]:
        """What reached the helper, one argv per request."""
        return list(self.helper.requests)

    def tools(self) -> list[list[str]]:
        """What ran of timedatectl and systemctl (name first), reads (``show``) left out."""
        if not self.tool_log.exists():
            return []
        found = [json.loads(line) for line in self.tool_log.read_text().splitlines()]
        return [argv for argv in found if "show" not in argv]


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    made = Shell(tmp_path)
    yield made
    made.helper.close()


def an_interface() -> str:
    names = sorted(name for _index, name in socket.if_nameindex() if name != "lo")
    if not names:
        pytest.skip("this machine has no network interface but lo")
    return names[0]


# --- refused before anything runs -------------------------------------------------------------------

REFUSED = [
    # system set network
    "system set network --interface -eth0 --dhcp --yes",
    "system set network --interface 'eth0;id' --dhcp --yes",
    "system set network --interface eth0/../x --dhcp --yes",
    "system set network --interface averyveryverylongname --dhcp --yes",
    "system set network --interface lo --dhcp --yes",
    "system set network --interface eth0 --yes",
    "system set network --interface eth0 --dhcp --address 192.0.2.10/24 --yes",
    "system set network --interface eth0 --dhcp --gateway 192.0.2.1 --yes",
    "system set network --interface eth0 --address 192.0.2.10 --yes",
    "system set network --interface eth0 --address 192.0.2.0/24 --yes",
    "system set network --interface eth0 --address 192.0.2.255/24 --yes",
    "system set network --interface eth0 --address 127.0.0.2/8 --yes",
    "system set network --interface eth0 --address 224.0.0.1/4 --yes",
    "system set network --interface eth0 --address 192.0.2.10/24 --gateway 198.51.100.1 --yes",
    "system set network --interface eth0 --address 192.0.2.10/24 --gateway 192.0.2.10 --yes",
    "system set network --interface eth0 --address 192.0.2.10/24 --gateway 2001:db8::1 --yes",
    "system set network --interface eth0 --address '192.0.2.10/24\nAddress=1.2.3.4/8' --yes",
    "system set network --interface eth0 --address 192.0.2.10/24 --dns 192.0.2.53,192.0.2.53 --yes",
    "system set network --interface eth0 --address 192.0.2.10/24 --dns 1.1.1.1,1.0.0.1,8.8.8.8,8.8.4.4 --yes",
    "system set network --interface eth0 --address 192.0.2.10/24 --dns -1 --yes",
    "system set network --interface eth0 --address 192.0.2.10/24 --dns 'x;reboot' --yes",
    "system set network --interface eth0 --dhcp --confirm_within 5 --yes",
    "system set network --interface eth0 --dhcp --confirm_within 3601 --yes",
    # time
    "system set ntp --yes",
    "system set ntp --servers pool.ntp.org --disable --yes",
    "system set ntp --servers -x --yes",
    "system set ntp --servers 'a b' --yes",
    "system set ntp --servers a.example,a.example --yes",
    "system set ntp --servers a,b,c,d,e,f --yes",
    "system set timezone ../../etc/shadow --yes",
    "system set timezone -x --yes",
    "system set timezone Nowhere/Atlantis --yes",
    "system set timezone 'Europe/Paris;id' --yes",
    "system set timezone posix/Europe/Paris --yes",
    "execute date --set 2026-01-01 --yes",
    "execute date --set '2026-02-30 00:00:00' --yes",
    "execute date --set '1999-12-31 23:59:59' --yes",
    "execute date --set '-1 day' --yes",
    "execute date --set '2026-01-01 00:00:00; reboot' --yes",
    # diagnostics
    "execute traceroute -I",
    "execute traceroute 127.0.0.1 -m 3",
    "execute traceroute 127.0.0.1 --max_hops 0",
    "execute traceroute 127.0.0.1 --max_hops 31",
    "execute traceroute '127.0.0.1 -g 10.0.0.1'",
    "execute traceroute --",
    "execute nslookup -type=any",
    "execute nslookup example.org --server -f",
    "execute nslookup example.org --server example.net",
    "execute nslookup example.org --timeout 31",
    "execute tcp-check 127.0.0.1",
    "execute tcp-check 127.0.0.1 0",
    "execute tcp-check 127.0.0.1 65536",
    "execute tcp-check -p 22",
    "execute tcp-check 127.0.0.1 22 --timeout 0",
    "execute tcp-check '127.0.0.1:22' 22",
    # logs
    "execute log show nope",
    "execute log show agent --lines 0",
    "execute log show agent --lines -5",
    "execute log show agent --since 1y",
    "execute log show agent --since -1h",
    "execute log show agent --since 400d",
    "execute log show agent --grep ''",
    "execute log show agent --grep " + "x" * 65,
    "execute log show agent --follow --json",
    # files in and out
    "execute diagnostic --output /etc/passwd",
    "execute diagnostic --output bundle.tgz",
    "execute backup --output /tmp/x.dump",
    "execute restore --input /etc/passwd --yes",
    "execute restore --input ../x.dump --yes",
    "execute restore --input .hidden.dump --yes",
    "execute restore --yes",
    # services
    "service restart 'ssh.service;reboot' --yes",
    "service restart -x --yes",
    "service restart ../../etc --yes",
    # power and accounts take no arguments
    "execute reboot now --yes",
    "execute shutdown -h --yes",
    "execute passwd root",
]


@pytest.mark.parametrize("line", REFUSED)
def test_refused_with_usage_status_and_nothing_run(shell: Shell, line: str) -> None:
    status, out, err = shell.run(line)
    assert status == ExitStatus.USAGE, (out, err)
    assert err.startswith("error: ") and len(err.splitlines()) <= 2
    assert shell.requests() == [] and shell.tools() == []


def test_the_restore_of_stdin_needs_yes_before_it_reads_anything(shell: Shell) -> None:
    status, _out, err = shell.run("execute restore --input -", stdin="PGDMP...")
    assert status == ExitStatus.NOT_CONFIRMED and "needs --yes" in err
    assert not (shell.config.paths.state_dir / "backups").exists()


def test_commands_that_change_the_node_refuse_without_yes_and_terminal(shell: Shell) -> None:
    for line in ("system set ntp --servers pool.ntp.org", "system set timezone UTC",
                 "execute date --set '2026-01-01 00:00:00'", "service restart agent"):
        status, _out, err = shell.run(line)
        assert status == ExitStatus.NOT_CONFIRMED, (line, err)
    assert shell.requests() == [] and shell.tools() == []


# --- what reaches the helper -------------------------------------------------------------------------


def test_network_change_request_is_fixed_words(shell: Shell) -> None:
    interface = an_interface()
    status, out, err = shell.run(f"system set network --interface {interface} --address 198.51.100.10/24 "
                                 "--gateway 198.51.100.1 --dns 198.51.100.53,2001:db8::53 --yes")
    assert status == 0, err
    assert shell.requests() == [["network-apply", interface, "198.51.100.10/24", "198.51.100.1",
                                 "198.51.100.53,2001:db8::53", "120"]]
    assert f"Interface {interface} now:" in out and "reverted by itself after 120 s" in out
    assert "system confirm network" in out and "198.51.100.10" in out


def test_network_dhcp_with_a_deadline_of_its_own(shell: Shell) -> None:
    interface = an_interface()
    status, out, err = shell.run(f"system set network --interface {interface} --dhcp --confirm-within 30 --yes")
    assert status == 0, err
    assert shell.requests() == [["network-apply", interface, "dhcp", "none", "none", "30"]]
    assert "Warning" not in out


def test_an_interface_that_does_not_exist_is_refused_before_the_helper(shell: Shell) -> None:
    status, _out, err = shell.run("system set network --interface nosuch0 --dhcp --yes")
    assert status == ExitStatus.USAGE and "no interface nosuch0" in err
    assert shell.requests() == []


def test_confirm_and_time_requests(shell: Shell) -> None:
    assert shell.run("system confirm network")[0] == 0
    assert shell.run("system set ntp --servers 0.pool.ntp.org,192.0.2.123 --yes")[0] == 0
    assert shell.run("system set ntp --disable --yes")[0] == 0
    assert shell.run("system set timezone Europe/Paris --yes")[0] == 0
    assert shell.run("execute date --set '2026-11-22 22:05:00' --yes")[0] == 0
    # Only what needs root goes to the helper; timedated (polkit) does the rest as the user.
    assert shell.requests() == [["network-confirm"], ["set-ntp", "0.pool.ntp.org", "192.0.2.123"]]
    assert shell.tools() == [["timedatectl", "--no-ask-password", "set-ntp", "false"],
                             ["timedatectl", "--no-ask-password", "set-timezone", "--", "Europe/Paris"],
                             ["timedatectl", "--no-ask-password", "set-time", "--", "2026-11-22 22:05:00"]]


def test_service_restart_names_the_configured_unit(shell: Shell) -> None:
    assert shell.run("service restart agent --yes")[0] == 0
    assert shell.run("service restart appliance-demo --yes")[0] == 0
    status, _out, err = shell.run("service restart cron --yes")
    assert status == ExitStatus.USAGE and "no service named 'cron'" in err and "agent, appliance-demo" in err
    # systemctl as the user (polkit decides); a primary-only unit only if it runs.
    assert shell.tools() == [["systemctl", "--no-ask-password", "restart", "--", "appliance-agent.service"],
                             ["systemctl", "--no-ask-password", "try-restart", "--", "appliance-demo.service"]]
    assert shell.requests() == []


def test_service_restart_needs_systemd(tmp_path: Path) -> None:
    shell = Shell(tmp_path, services="process")
    try:
        status, _out, err = shell.run("service restart agent --yes")
    finally:
        shell.helper.close()
    assert status == ExitStatus.FAILED and "not run by systemd" in err
    assert shell.tools() == []


def test_reboot_of_a_node_that_cannot_read_its_cluster_says_so_and_goes(shell: Shell) -> None:
    status, out, err = shell.run("execute reboot --yes")
    assert status == 0, err
    assert "cannot be read" in out and "without handing anything over" in out
    assert "This node will reboot now (done)." in out
    assert shell.requests() == [["power", "reboot"]]
    assert shell.run("execute shutdown --yes")[0] == 0
    assert shell.requests()[-1] == ["power", "poweroff"]


def test_power_is_refused_before_anything_when_the_helper_is_missing(shell: Shell, tmp_path: Path) -> None:
    shell.config = replace(shell.config, privhelper=replace(shell.config.privhelper, socket=tmp_path / "none"))
    status, out, err = shell.run("execute reboot --yes")
    assert status == ExitStatus.FAILED and "privileged helper is not available" in err and out == ""
    assert "appliance-privhelper.socket" in err
    assert shell.requests() == []


def test_passwd_needs_a_terminal_and_is_not_run_as_root(shell: Shell) -> None:
    status, _out, err = shell.run("execute passwd")
    assert status in (ExitStatus.USAGE, ExitStatus.FAILED)
    assert ("as root" in err) if os.geteuid() == 0 else ("needs a terminal" in err)
