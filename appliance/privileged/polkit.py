"""The image's polkit rules, written from the configuration: which user may do which systemd action.

``python3 -I -m appliance.privileged.polkit CONFIG RULES_FILE`` writes one JavaScript rules file for
polkitd (Debian 12: polkit 122, ``/etc/polkit-1/rules.d/``), atomically. The image runs it at build
time and again at every boot (``appliance-polkit-rules.service``, before polkit), so the unit lists
of ``[services]`` in ``/etc/appliance/appliance.toml`` and the rules never disagree.

What the rules grant, and to whom (nothing else; every other action of these users is refused
explicitly, so no later rule file can grant it):

* the agent's user (``appliance-agent``): ``org.freedesktop.systemd1.manage-units`` with verb
  ``start``, ``stop`` or ``restart`` for the units of ``[services] primary_units``/``standby_units``;
* the login user (``ems``): ``manage-units`` with verb ``restart`` or ``try-restart`` for those units
  and ``restart`` for the agent, the local database and sshd (the ``service restart`` command);
  the static and transient hostname (``hostname1``); the time zone, the clock and NTP on/off
  (``timedate1``);
* root without ``CAP_SYS_ADMIN`` (the privileged helper's sandbox, which systemd's services then
  hand to polkit): the three actions the helper takes over D-Bus, ``manage-units`` (its transient
  timers, restarting timesyncd), ``timedate1.set-ntp`` and ``network1.reload``.

The unit and the verb come from systemd's details of the request (``action.lookup``); a request
without them (a transient unit, a manager-level call) is refused.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from appliance.config import Config, load_config
from appliance.fsutil import write_atomic

AGENT_USER = "appliance-agent"
LOGIN_USER = "ems"
LOGIN_ACTIONS = (
    "org.freedesktop.hostname1.set-static-hostname",
    "org.freedesktop.hostname1.set-hostname",
    "org.freedesktop.timedate1.set-timezone",
    "org.freedesktop.timedate1.set-time",
    "org.freedesktop.timedate1.set-ntp",
)
ROOT_ACTIONS = (
    "org.freedesktop.systemd1.manage-units",
    "org.freedesktop.timedate1.set-ntp",
    "org.freedesktop.network1.reload",
)


def unit_grants(config: Config) -> dict[str, dict[str, list[str]]]:
    """``user -> unit -> verbs`` for ``manage-units``."""
    services = config.services
    configured = list(services.primary_units) + list(services.standby_units)
    agent = {unit: ["start", "stop", "restart"] for unit in configured}
    login = {unit: ["restart", "try-restart"] for unit in configured}
    for unit in (services.agent_unit, services.database_unit, services.ssh_unit):
        login.setdefault(unit, ["restart"])
    return {AGENT_USER: agent, LOGIN_USER: login}


def rules_text(config: Config) -> str:
    """The rules file (JavaScript for polkitd's duktape)."""
    grants = json.dumps(unit_grants(config), sort_keys=True)
    actions = json.dumps(list(LOGIN_ACTIONS))
    root_actions = json.dumps(list(ROOT_ACTIONS))
    source = config.source or "the built-in defaults"
    return f"""// 50-appliance.rules: written by appliance.privileged.polkit from {source}; do not edit
// (rewritten at every boot by appliance-polkit-rules.service).
// The appliance's users get exactly these actions; everything else of theirs is refused here.
polkit.addRule(function(action, subject) {{
    var units = {grants};
    var loginActions = {actions};
    var rootActions = {root_actions};
    var user = subject.user;
    if (user == "root" && rootActions.indexOf(action.id) >= 0) {{
        return polkit.Result.YES;
    }}
    if (user != "{LOGIN_USER}" && user != "{AGENT_USER}") {{
        return polkit.Result.NOT_HANDLED;
    }}
    if (action.id == "org.freedesktop.systemd1.manage-units") {{
        var unit = action.lookup("unit");
        var verb = action.lookup("verb");
        var own = units[user];
        var verbs = (unit !== undefined && Object.prototype.hasOwnProperty.call(own, unit)) ? own[unit] : undefined;
        if (verb !== undefined && verbs !== undefined && verbs.indexOf(verb) >= 0) {{
            polkit.log("appliance: " + user + " may " + verb + " " + unit);
            return polkit.Result.YES;
        }}
        polkit.log("appliance: refused " + user + " " + verb + " " + unit);
        return polkit.Result.NO;
    }}
    if (user == "{LOGIN_USER}" && loginActions.indexOf(action.id) >= 0) {{
        return polkit.Result.YES;
    }}
    polkit.log("appliance: refused " + user + " " + action.id);
    return polkit.Result.NO;
}});
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        sys.stderr.write("usage: python3 -I -m appliance.privileged.polkit CONFIG RULES_FILE\n")
        return 2
    config = load_config(Path(args[0]))
    write_atomic(Path(args[1]), rules_text(config), mode=0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main())
