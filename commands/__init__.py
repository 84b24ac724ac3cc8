"""The appliance's command families; each module declares its commands once in ``COMMANDS``.

The registry is built from these explicit tuples (no discovery by naming convention), so the
command set is closed and a golden test (``tests/fixtures/command_table.txt``) pins it.
"""

from __future__ import annotations

from appliance.shell.spec import Registry


def build_registry() -> Registry:
    from commands import execute, ha, redirect, session, system

    modules = (session, system, execute, redirect, ha)
    groups: dict[str, str] = {}
    for module in modules:
        groups.update(module.GROUPS)
    return Registry([spec for module in modules for spec in module.COMMANDS], group_help=groups)
