"""The privileged helper's administration verbs: every argument checked again, and what they run; and
the administration actions that moved to polkit (timedatectl, systemctl as the login user).

As in ``test_privhelper.py``: the helper runs in-process with a configuration of the test's own; the
programs it would run are recorded by a fake ``subprocess.run`` (the root-only effects cannot be
produced here), files are written under a temporary root (``[system] root``).
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.errors import Conflict
from appliance.ops.timeset import TimeSettings
from appliance.privileged import server
from appliance.services import restart_unit

ZONEINFO = Path("/usr/share/zoneinfo")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.outputs: dict[str, str] = {}  # argv text -> stdout

    def __call__(self, argv: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert isinstance(argv, list) and not kwargs.get("shell")
        self.calls.append(argv)
        joined = " ".join(argv)
        out = next((v for k, v in self.outputs.items() if k in joined), "")
        return subprocess.CompletedProcess(argv, 0, stdout=out, stderr="")

    def tails(self) -> list[str]:
        """Each call as ``program args`` (the program's base name)."""
        return [" ".join([Path(argv[0]).name, *argv[1:]]) for argv in self.calls]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(subprocess, "run", rec)
    return rec


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    zones = root / "usr" / "share" / "zoneinfo"
    (zones / "Europe").mkdir(parents=True)
    shutil.copy(ZONEINFO / "Europe" / "Paris", zones / "Europe" / "Paris")
    shutil.copy(ZONEINFO / "UTC", zones / "UTC")
    (zones / "Europe" / "Fake").write_text("not a zone file\n")
    (zones / "Escape").symlink_to("/etc/hostname")
    return root


@pytest.fixture
def config_file(tmp_path: Path, root: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {}
    for name in ("systemctl", "timedatectl", "networkctl", "systemd-run"):
        path = bin_dir / name
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
        tools[name] = path
    path = tmp_path / "appliance.toml"
    path.write_text(
        f'[system]\nroot = "{root}"\n'
        f'[tools]\nsystemctl = "{tools["systemctl"]}"\ntimedatectl = "{tools["timedatectl"]}"\n'
        f'networkctl = "{tools["networkctl"]}"\nsystemd_run = "{tools["systemd-run"]}"\n'
        f'[services]\nbackend = "systemd"\nprimary_units = ["appliance-demo.service"]\n'
    )
    return path


def run(argv: list[str], config_file: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = server.main(argv, config_path=config_file, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


REFUSED = [
    ["network-apply"],
    ["network-apply", "eth1", "dhcp", "none", "none"],
    ["network-apply", "eth1", "dhcp", "none", "none", "120", "extra"],
    ["network-apply", "lo", "dhcp", "none", "none", "120"],
    ["network-apply", "-eth1", "dhcp", "none", "none", "120"],
    ["network-apply", "eth1", "198.51.100.10/24", "203.0.113.1", "none", "120"],
    ["network-apply", "eth1", "198.51.100.10/24", "none", "198.51.100.53,x", "120"],
    ["network-apply", "eth1", "dhcp", "none", "none", "99999"],
    ["network-confirm", "now"],
    ["network-revert", "--force"],
    ["set-ntp"],
    ["set-ntp", "-q"],
    ["set-ntp", "pool.ntp.org", "pool.ntp.org"],
    ["set-ntp", "a", "b", "c", "d", "e", "f"],
    ["set-ntp", "a;b"],
    ["ntp-off", "now"],
    ["set-timezone"],
    ["set-timezone", "Europe/Paris", "UTC"],
    ["set-timezone", "../../etc/shadow"],
    ["set-timezone", "Europe/Fake"],
    ["set-timezone", "Escape"],
    ["set-timezone", "Nowhere/Atlantis"],
    ["set-time", "2026-01-01"],
    ["set-time", "2026-13-01T00:00:00"],
    ["set-time", "1999-01-01T00:00:00"],
    ["power"],
    ["power", "halt"],
    ["power", "reboot", "now"],
    ["power", "--force"],
    ["service", "restart", "cron.service"],
    ["service", "restart", "appliance-agent.service", "ssh.service"],
    ["service", "try-restart", "appliance-demo.service"],
]


@pytest.mark.parametrize("argv", REFUSED, ids=lambda a: repr(a)[:60])
def test_refused_with_status_2_and_nothing_run(argv: list[str], config_file: Path, recorder: Recorder,
                                               root: Path) -> None:
    status, out, err = run(argv, config_file)
    assert (status, out) == (2, "")
    assert err.startswith("privhelper: refused: ") and err.count("\n") == 1
    assert recorder.calls == []
    assert not (root / "etc").exists()


def an_interface() -> str:
    names = sorted(name for _index, name in socket.if_nameindex() if name != "lo")
    if not names:
        pytest.skip("this machine has no network interface but lo")
    return names[0]


def test_network_apply_confirm_and_revert(config_file: Path, recorder: Recorder, root: Path) -> None:
    eth = an_interface()  # the file goes under the test's root: the machine's network is not touched
    status, out, err = run(["network-apply", eth, "198.51.100.10/24", "198.51.100.1", "198.51.100.53", "60"],
                           config_file)
    assert status == 0, err
    assert f"applied {eth}: static 198.51.100.10/24, gateway 198.51.100.1" in out
    written = root / "etc" / "systemd" / "network" / f"10-appliance-{eth}.network"
    assert "Address=198.51.100.10/24\nGateway=198.51.100.1\nDNS=198.51.100.53\n" in written.read_text()
    assert any(t.startswith("systemd-run --unit=appliance-network-deadline --on-active=60s") for t in recorder.tails())
    assert "networkctl reload" in recorder.tails()
    status, out, _err = run(["network-apply", eth, "dhcp", "none", "none", "60"], config_file)
    assert status == 1 and out == ""
    assert run(["network-confirm"], config_file)[:2] == (0, f"confirmed: {eth} keeps its new configuration\n")
    assert run(["network-revert"], config_file)[:2] == (0, "nothing to revert\n")
    assert written.exists()


def test_ntp_servers_go_to_a_timesyncd_drop_in(config_file: Path, recorder: Recorder, root: Path) -> None:
    recorder.outputs["--property=ActiveState"] = "active\n"
    status, out, err = run(["set-ntp", "0.Pool.ntp.org", "192.0.2.123"], config_file)
    assert status == 0, err
    dropin = root / "etc" / "systemd" / "timesyncd.conf.d" / "50-appliance.conf"
    assert dropin.read_text().endswith("[Time]\nNTP=0.pool.ntp.org 192.0.2.123\n")
    assert recorder.tails() == ["timedatectl set-ntp true", "systemctl restart -- systemd-timesyncd.service",
                                "systemctl show --property=ActiveState --value -- systemd-timesyncd.service"]
    # Switching it off is timedated's (polkit), not the helper's.
    assert run(["ntp-off"], config_file)[0] == 2


def test_ntp_that_does_not_run_is_said(config_file: Path, recorder: Recorder, root: Path) -> None:
    recorder.outputs["--property=ActiveState"] = "inactive\n"  # a container: timesyncd's condition fails
    status, out, err = run(["set-ntp", "192.0.2.123"], config_file)
    assert (status, out) == (1, "")
    assert "the NTP servers are written" in err and "systemd-timesyncd is not running (inactive;" in err
    assert (root / "etc" / "systemd" / "timesyncd.conf.d" / "50-appliance.conf").exists()


# The zone, the clock and NTP off: timedatectl as the login user, under polkit (no helper).


def test_timezone_and_time(config_file: Path, recorder: Recorder) -> None:
    settings = TimeSettings(load_config(config_file))
    assert settings.set_timezone("Europe/Paris") == "time zone set to Europe/Paris"
    assert recorder.tails() == ["timedatectl --no-ask-password set-timezone -- Europe/Paris"]
    recorder.outputs["show --property=NTP"] = "no\n"
    assert settings.set_time("2026-11-22 22:05:00") == "clock set to 2026-11-22 22:05:00 (local time)"
    assert recorder.tails()[-1] == "timedatectl --no-ask-password set-time -- 2026-11-22 22:05:00"
    assert settings.ntp_off() == "NTP synchronisation off"
    assert recorder.tails()[-1] == "timedatectl --no-ask-password set-ntp false"


def test_the_clock_is_not_set_while_ntp_is_on(config_file: Path, recorder: Recorder) -> None:
    recorder.outputs["show --property=NTP"] = "yes\n"
    with pytest.raises(Conflict, match="NTP synchronisation is on"):
        TimeSettings(load_config(config_file)).set_time("2026-11-22 22:05:00")
    assert not any("set-time" in t for t in recorder.tails())


def test_power_goes_a_few_seconds_later_through_a_transient_timer(config_file: Path, recorder: Recorder) -> None:
    status, out, _err = run(["power", "reboot"], config_file)
    assert (status, out) == (0, "reboot in 3 s\n")
    [call] = recorder.calls
    assert Path(call[0]).name == "systemd-run" and "--on-active=3s" in call
    assert call[-3:] == ["--", call[-2], "reboot"] and Path(call[-2]).name == "systemctl"
    assert run(["power", "poweroff"], config_file)[0] == 0 and recorder.calls[-1][-1] == "poweroff"


def test_service_restart(config_file: Path, recorder: Recorder) -> None:
    config = load_config(config_file)
    restart_unit(config, "appliance-agent.service")
    restart_unit(config, "ssh.service")
    # a primary-only unit: restarted only where it runs, never started on a standby
    assert restart_unit(config, "appliance-demo.service") == "try-restart appliance-demo.service: done"
    assert recorder.tails() == ["systemctl --no-ask-password restart -- appliance-agent.service",
                                "systemctl --no-ask-password restart -- ssh.service",
                                "systemctl --no-ask-password try-restart -- appliance-demo.service"]
