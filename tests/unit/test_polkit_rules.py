"""The polkit rules written from the configuration, evaluated by a JavaScript engine (node) with a
stand-in for polkitd's ``polkit`` object: who may do which action, and that everything else of the
appliance's users is refused. polkitd itself decides in the booted image (tests/image/).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.privileged.polkit import main, rules_text

HARNESS = """
var rules = [];
var polkit = {Result: {YES: "yes", NO: "no", NOT_HANDLED: null}, addRule: function(f) { rules.push(f); },
              log: function(text) {}};
%s
var cases = %s;
console.log(JSON.stringify(cases.map(function(c) {
    var action = {id: c[1], lookup: function(key) { return c[2][key]; }};
    return rules[0](action, {user: c[0]});
})));
"""
MANAGE = "org.freedesktop.systemd1.manage-units"


def decide(rules: str, cases: list[tuple[str, str, dict[str, str]]]) -> list[str | None]:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no JavaScript engine (node) to evaluate the rules")
    done = subprocess.run([node, "-e", HARNESS % (rules, json.dumps(cases))], capture_output=True, text=True,
                          timeout=30, check=True)
    result: list[str | None] = json.loads(done.stdout)
    return result


@pytest.fixture
def rules(tmp_path: Path) -> str:
    path = tmp_path / "appliance.toml"
    path.write_text('[services]\nbackend = "systemd"\nprimary_units = ["appliance-demo.service", '
                    '"appliance-vip.service"]\nstandby_units = ["report.service"]\n')
    assert main([str(path), str(tmp_path / "50-appliance.rules")]) == 0
    text = (tmp_path / "50-appliance.rules").read_text()
    assert text == rules_text(load_config(path))
    return text


def test_the_agent_manages_exactly_the_configured_units(rules):
    agent = "appliance-agent"
    cases = [(agent, MANAGE, {"unit": unit, "verb": verb})
             for unit in ("appliance-demo.service", "appliance-vip.service", "report.service")
             for verb in ("start", "stop", "restart")]
    assert decide(rules, cases) == ["yes"] * 9
    refused = [
        (agent, MANAGE, {"unit": "ssh.service", "verb": "stop"}),
        (agent, MANAGE, {"unit": "appliance-demo.service", "verb": "enable"}),
        (agent, MANAGE, {"unit": "appliance-demo.service", "verb": "reload-or-restart"}),
        (agent, MANAGE, {"unit": "appliance-demo.service"}),  # no verb
        (agent, MANAGE, {}),  # a transient unit, a manager-level call
        (agent, MANAGE, {"unit": "constructor", "verb": "start"}),
        (agent, MANAGE, {"unit": "__proto__", "verb": "start"}),
        (agent, "org.freedesktop.login1.reboot", {}),
        (agent, "org.freedesktop.hostname1.set-static-hostname", {}),
        (agent, "org.freedesktop.systemd1.manage-unit-files", {}),
    ]
    assert decide(rules, refused) == ["no"] * len(refused)


def test_the_login_user_gets_the_admin_actions_and_restarts_only(rules):
    ems = "ems"
    allowed = [
        (ems, "org.freedesktop.hostname1.set-static-hostname", {}),
        (ems, "org.freedesktop.hostname1.set-hostname", {}),
        (ems, "org.freedesktop.timedate1.set-timezone", {}),
        (ems, "org.freedesktop.timedate1.set-time", {}),
        (ems, "org.freedesktop.timedate1.set-ntp", {}),
        (ems, MANAGE, {"unit": "ssh.service", "verb": "restart"}),
        (ems, MANAGE, {"unit": "appliance-agent.service", "verb": "restart"}),
        (ems, MANAGE, {"unit": "postgresql@15-main.service", "verb": "restart"}),
        (ems, MANAGE, {"unit": "appliance-demo.service", "verb": "try-restart"}),
    ]
    assert decide(rules, allowed) == ["yes"] * len(allowed)
    refused = [
        (ems, MANAGE, {"unit": "ssh.service", "verb": "stop"}),
        (ems, MANAGE, {"unit": "appliance-agent.service", "verb": "stop"}),
        (ems, MANAGE, {"unit": "appliance-demo.service", "verb": "start"}),
        (ems, MANAGE, {"unit": "emergency.target", "verb": "start"}),
        (ems, "org.freedesktop.login1.reboot", {}),
        (ems, "org.freedesktop.login1.power-off-ignore-inhibit", {}),
        (ems, "org.freedesktop.timedate1.set-local-rtc", {}),
        (ems, "org.freedesktop.network1.reload", {}),
        (ems, "org.freedesktop.systemd1.reload-daemon", {}),
    ]
    assert decide(rules, refused) == ["no"] * len(refused)


def test_other_users_are_left_to_the_default_policy_and_root_gets_the_helpers_actions(rules):
    cases = [
        ("postgres", MANAGE, {"unit": "appliance-demo.service", "verb": "start"}),
        ("nobody", "org.freedesktop.login1.reboot", {}),
        ("root", "org.freedesktop.login1.reboot", {}),
        ("root", MANAGE, {"unit": "systemd-timesyncd.service", "verb": "restart"}),
        ("root", "org.freedesktop.timedate1.set-ntp", {}),
        ("root", "org.freedesktop.network1.reload", {}),
    ]
    assert decide(rules, cases) == [None, None, None, "yes", "yes", "yes"]
