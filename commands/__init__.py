"""The appliance's command families; each module declares its commands once in ``COMMANDS``.

The registry is built from these explicit tuples (no discovery by naming convention), so the
command set is closed and a golden test (``tests/fixtures/command_table.txt``) pins it.

The one rule on imports here: a command module imports at its top what its *declaration* needs (the
shell's spec, types and results); a handler imports the core module it calls (the HA store,
``redirect``'s machinery...) in its body. Every shell start loads every declaration to parse one line,
and runs one handler; start-up is measured (``bench/shell_startup.py``). The architecture test reads
these imports too, so they can form no cycle.
"""

from __future__ import annotations

from appliance.shell.spec import Registry


def build_registry() -> Registry:
    # here: `import commands` stays light
    from commands import (
        accounts,
        backup,
        execute,
        ha,
        ha_cluster,
        logs,
        network,
        power,
        redirect,
        service,
        session,
        support,
        system,
        timekeeping,
    )

    modules = (session, system, network, timekeeping, accounts, service, execute, power, logs, support, backup,
               redirect, ha, ha_cluster)
    groups: dict[str, str] = {}
    for module in modules:
        groups.update(module.GROUPS)
    return Registry([spec for module in modules for spec in module.COMMANDS], group_help=groups)
