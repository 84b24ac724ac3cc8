"""The configuration file of a node that runs beside others on one machine (sandboxes, tests, benches).

One builder, so that the sandbox, the test helpers and the benchmarks describe a node the same way:
file hostname backend, file audit, its own local PostgreSQL, an explicit hardware id (the machine's
would be shared), the ``process`` services backend, and (given) the file its agent logs to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path


def node_config_text(
    *,
    name: str,
    hardware_id: str,
    state_dir: Path,
    local_port: int,
    admin_user: str,
    admin_password_file: Path,
    services: Sequence[tuple[str, Sequence[str], Sequence[str]]],
    local_db: str = "appliance",
    local_user: str = "appliance",
    database: Mapping[str, int | str] | None = None,
    ha: Mapping[str, int | float] | None = None,
    sections: Mapping[str, Mapping[str, str | int | float | list[str]]] | None = None,
    local_host: str = "127.0.0.1",
    header: str = "",
    agent_log: Path | None = None,
    local_data_dir: Path | None = None,
) -> str:
    """TOML for one node; ``services`` are ``(name, argv, roles)``; ``database`` and ``ha`` override keys
    of those sections; ``sections`` adds whole sections (``{"health": {"listen": "127.0.0.1:8008"}}``);
    ``agent_log`` is where the node's agent writes its log (``execute log show agent``), ``local_data_dir``
    where its local PostgreSQL keeps its data (the disk use ``system get info`` shows)."""
    lines = [f"# {header}" if header else "# A node of a multi-node setup on one machine.",
             "[node]", f'default_hostname = "{name}"', f'hardware_id = "{hardware_id}"',
             "[paths]", f'state_dir = "{state_dir}"',
             "[hostname]", 'backend = "file"',
             "[audit]", 'target = "file"',
             "[local_db]", f'host = "{local_host}"', f"port = {local_port}", f'name = "{local_db}"',
             f'user = "{local_user}"', f'admin_user = "{admin_user}"', f'admin_password_file = "{admin_password_file}"']
    if local_data_dir is not None:
        lines.append(f'data_dir = "{local_data_dir}"')
    if database:
        lines += ["[database]", *(f"{key} = {json.dumps(value)}" for key, value in database.items())]
    if ha:
        lines += ["[ha]", *(f"{key} = {value}" for key, value in ha.items())]
    if agent_log is not None:
        lines += ["[logs]", f'agent_file = "{agent_log}"']
    for section, keys in (sections or {}).items():
        # JSON's strings, numbers and lists of strings are TOML's too.
        lines += [f"[{section}]", *(f"{key} = {json.dumps(value)}" for key, value in keys.items())]
    lines += ["[services]", 'backend = "process"', "stop_timeout_s = 5"]
    for service, argv, roles in services:
        lines += ["[[services.process]]", f'name = "{service}"', f"command = {json.dumps(list(argv))}",
                  f"roles = {json.dumps(list(roles))}"]
    return "\n".join(lines) + "\n"
