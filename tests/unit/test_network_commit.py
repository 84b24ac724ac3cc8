"""Commit-confirm of ``system set network``, the helper's side, with a fake clock and recorded programs.

The files are real (under a temporary root); the programs the helper would run (systemd-run,
systemctl, networkctl) are recorded by a fake runner, which may be told to fail.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.clock import FakeClock
from appliance.config import Config, SystemConfig
from appliance.errors import CommandFailed, Conflict, NotConfigured
from appliance.ops.netapply import REVERT_UNIT, NetworkChanges, network_dir, pending_path, read_pending
from appliance.ops.netconf import NetworkSpec, parse_rendered

STATIC = NetworkSpec("eth1", False, "198.51.100.10/24", "198.51.100.1", ("198.51.100.53",))
DHCP = NetworkSpec("eth1", True)
WIRED = "[Match]\nName=eth1\n\n[Network]\nDHCP=yes\n# the admin's own file\n"


class Runner:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail: set[str] = set()  # program names that fail

    def __call__(self, tool: Path, args: list[str]) -> str:
        self.calls.append([tool.name, *args])
        if tool.name in self.fail:
            raise CommandFailed(f"{tool.name} failed: simulated")
        return ""

    def programs(self) -> list[str]:
        return [" ".join(call[:2]) for call in self.calls]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return replace(Config(), system=SystemConfig(root=tmp_path))


def changes(config: Config, clock: FakeClock, runner: Runner) -> NetworkChanges:
    # The node's interfaces: eth1 only.
    return NetworkChanges(config, clock, runner, exists=lambda name: name == "eth1")  # type: ignore[arg-type]


def our_file(config: Config) -> Path:
    return network_dir(config) / "10-appliance-eth1.network"


def test_apply_writes_the_file_arms_the_revert_before_reloading(config: Config) -> None:
    clock, runner = FakeClock(), Runner()
    report = changes(config, clock, runner).apply(STATIC, 120)
    assert "applied eth1: static 198.51.100.10/24" in report and "reverted at" in report
    assert parse_rendered(our_file(config).read_text()) == STATIC
    arm = next(call for call in runner.calls if call[0] == "systemd-run")
    assert f"--unit={REVERT_UNIT}" in arm and "--on-active=120s" in arm
    assert arm[-3:] == ["--", "/usr/libexec/appliance/privhelper", "network-revert"]
    order = [call[0] for call in runner.calls]
    assert order.index("systemd-run") < order.index("networkctl")  # the revert exists before the change acts
    pending = read_pending(config)
    assert pending is not None and pending.previous is None
    assert pending.deadline - pending.applied_at == 120
    assert oct(pending_path(config).stat().st_mode & 0o777) == "0o644"
    assert json.loads(pending_path(config).read_text())["spec"]["address"] == "198.51.100.10/24"


def test_confirmed_in_time_the_change_stays(config: Config) -> None:
    clock, runner = FakeClock(), Runner()
    net = changes(config, clock, runner)
    net.apply(STATIC, 120)
    clock.advance(119)
    assert net.confirm() == "confirmed: eth1 keeps its new configuration"
    assert read_pending(config) is None
    assert ["systemctl", "stop", f"{REVERT_UNIT}.timer"] in runner.calls
    clock.advance(10)
    assert net.revert() == "nothing to revert"  # the timer firing late finds nothing to do
    assert parse_rendered(our_file(config).read_text()) == STATIC


def test_not_confirmed_the_previous_file_comes_back(config: Config) -> None:
    our_file(config).parent.mkdir(parents=True)
    our_file(config).write_text(WIRED)
    clock, runner = FakeClock(), Runner()
    net = changes(config, clock, runner)
    net.apply(STATIC, 120)
    clock.advance(120)
    runner.calls.clear()
    assert "reverted eth1 to its previous configuration" in net.revert()
    assert our_file(config).read_text() == WIRED
    assert read_pending(config) is None
    assert ["networkctl", "reload"] in runner.calls


def test_a_file_that_did_not_exist_is_removed_again(config: Config) -> None:
    net = changes(config, FakeClock(), Runner())
    net.apply(DHCP, 60)
    net.revert()
    assert not our_file(config).exists()


def test_a_confirmation_after_the_deadline_reverts_and_says_too_late(config: Config) -> None:
    clock = FakeClock()
    net = changes(config, clock, Runner())
    net.apply(STATIC, 30)
    clock.advance(31)
    with pytest.raises(CommandFailed, match="too late"):
        net.confirm()
    assert not our_file(config).exists() and read_pending(config) is None


def test_one_change_at_a_time_until_its_deadline(config: Config) -> None:
    clock = FakeClock()
    net = changes(config, clock, Runner())
    net.apply(STATIC, 120)
    with pytest.raises(Conflict, match="waits for confirmation"):
        net.apply(DHCP, 120)
    assert parse_rendered(our_file(config).read_text()) == STATIC
    clock.advance(200)  # the revert timer never ran (say the helper was not there): the next change reverts it
    report = net.apply(DHCP, 120)
    assert report.startswith("reverted eth1") and "applied eth1: DHCP" in report
    pending = read_pending(config)
    assert pending is not None and pending.previous is None  # the state before the first change


def test_nothing_to_confirm(config: Config) -> None:
    with pytest.raises(Conflict, match="no network change is waiting"):
        changes(config, FakeClock(), Runner()).confirm()


def test_when_the_revert_cannot_be_armed_nothing_changes(config: Config) -> None:
    our_file(config).parent.mkdir(parents=True)
    our_file(config).write_text(WIRED)
    runner = Runner()
    runner.fail.add("systemd-run")
    with pytest.raises(CommandFailed, match="was not applied"):
        changes(config, FakeClock(), runner).apply(STATIC, 120)
    assert our_file(config).read_text() == WIRED and read_pending(config) is None
    assert "networkctl reload" not in runner.programs()


def test_when_networkd_refuses_the_reload_the_previous_file_is_back(config: Config) -> None:
    runner = Runner()
    runner.fail.add("networkctl")
    with pytest.raises(CommandFailed, match="previous configuration is back"):
        changes(config, FakeClock(), runner).apply(STATIC, 120)
    assert not our_file(config).exists() and read_pending(config) is None


def test_an_interface_the_node_does_not_have_is_refused(config: Config) -> None:
    with pytest.raises(NotConfigured, match="no interface eth7"):
        changes(config, FakeClock(), Runner()).apply(replace(DHCP, interface="eth7"), 120)


def test_revert_at_boot_works_without_networkd(config: Config) -> None:
    """The boot unit runs before systemd-networkd: the files are restored, the reload is not needed."""
    clock, runner = FakeClock(), Runner()
    changes(config, clock, runner).apply(STATIC, 120)
    runner.fail.add("networkctl")
    assert "reads it when it starts" in changes(config, clock, runner).revert()
    assert not our_file(config).exists()


@pytest.mark.parametrize("spec", [
    NetworkSpec("eth1", True, address="198.51.100.10/24"),
    NetworkSpec("eth1", False),
    NetworkSpec("eth1", False, "198.51.100.10/24", "203.0.113.1"),
    NetworkSpec("lo", True),
    NetworkSpec("eth1\nName=*", True),
    NetworkSpec("eth1", True, dns=("198.51.100.53\nDNS=1.1.1.1",)),
])
def test_the_renderer_refuses_what_the_checks_refuse(spec: NetworkSpec) -> None:
    with pytest.raises(ValueError):
        spec.render()


@pytest.mark.parametrize("args", [
    ("eth1", "dhcp", "none", "none"),
    ("eth1", "dhcp", "none", "none", "9"),
    ("eth1", "dhcp", "none", "none", "3601"),
    ("eth1", "dhcp", "198.51.100.1", "none", "120"),
    ("eth1", "198.51.100.10", "none", "none", "120"),
    ("eth1", "198.51.100.10/24", "none", "1.1.1.1,1.1.1.1", "120"),
    ("eth1", "198.51.100.10/24", "none", "none", "12e1"),
])
def test_the_helper_arguments_are_checked_again(args: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        NetworkSpec.from_helper_args(args)


def test_dhcp_with_dns_servers_ignores_the_offered_ones() -> None:
    text = NetworkSpec("eth1", True, dns=("198.51.100.53",)).render()
    assert "DHCP=yes" in text and "DNS=198.51.100.53" in text and "UseDNS=no" in text

