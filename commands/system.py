"""``system``: the node's own settings and status."""

from __future__ import annotations

from appliance import __version__
from appliance.errors import ApplianceError
from appliance.hostname import backend_for
from appliance.identity import format_duration, hardware_id, uptime_s
from appliance.shell.context import Context
from appliance.shell.result import Result, Table
from appliance.shell.spec import Args, CommandSpec, Param
from appliance.shell.types import HostName


def get_hostname(ctx: Context, args: Args) -> Result:
    name = backend_for(ctx.config).get()
    return Result(message=name, data={"hostname": name})


def set_hostname(ctx: Context, args: Args) -> Result:
    backend = backend_for(ctx.config)
    old, new = backend.get(), args["hostname"]
    backend.set(new)
    return Result(message=f"Hostname changed from {old} to {new}.", data={"hostname": new, "previous": old})


def get_status(ctx: Context, args: Args) -> Result:
    uptime = uptime_s()
    hostname = backend_for(ctx.config).get()
    hw_id = hardware_id(ctx.config.paths.state_dir)
    ha = _ha_fields(ctx)
    return Result(
        fields=(
            ("Version", __version__),
            ("Hostname", hostname),
            ("Hardware ID", hw_id),
            ("Uptime", format_duration(uptime) if uptime is not None else None),
            ("HA state", ha["state"]),
            ("HA role", ha["role"]),
            ("Epoch", ha["epoch"]),
            ("Cluster", ha["cluster_id"]),
            ("DB target", ha["db_target"]),
        ),
        data={
            "version": __version__,
            "hostname": hostname,
            "hardware_id": hw_id,
            "uptime_s": int(uptime) if uptime is not None else None,
            **ha,
        },
    )


def _ha_fields(ctx: Context) -> dict[str, object]:
    """HA and DB fields from this node's own disk (no database round trip: works when the DB is down)."""
    from appliance.ha.statusfile import read_status  # loaded when the command runs, not at start-up
    from appliance.node import read_targets

    fields: dict[str, object] = {"state": None, "role": None, "epoch": None, "cluster_id": None, "db_target": None}
    try:
        _origin, active = read_targets(ctx.config)
        fields["cluster_id"] = active.cluster_id
        fields["db_target"] = active.target.describe() + (" (local)" if active.local else "")
        fields["role"] = active.role
    except ApplianceError:
        fields["db_target"] = "not initialised"
    agent = read_status(ctx.config)
    if agent:
        fields["state"] = agent.get("state")
        fields["role"] = "primary" if agent.get("acting") else "standby"
        fields["epoch"] = agent.get("epoch")
    return fields


def get_info(ctx: Context, args: Args) -> Result:
    from appliance.ops.sysinfo import system_info

    info = system_info(ctx.config, backend_for(ctx.config).get())
    total, available = info.memory_total_mb, info.memory_available_mb
    fields = (
        ("Version", info.version), ("Hostname", info.hostname), ("OS", info.os),
        ("Kernel", f"{info.kernel} ({info.architecture})"),
        ("CPUs", f"{info.cpus} x {info.cpu_model}" if info.cpu_model else info.cpus),
        ("Memory", f"{available} MiB available of {total} MiB" if total else None),
        ("Load (1/5/15 min)", info.load),
        ("Uptime", format_duration(info.uptime_s) if info.uptime_s is not None else None),
        ("Agent uptime", format_duration(info.agent_uptime_s) if info.agent_uptime_s is not None else "not running"),
    )
    disks = Table("disks", ("Volume", "Path", "Size (MiB)", "Used (MiB)", "Free (MiB)", "Use %"),
                  [(d.volume, d.path, d.total_mb, d.used_mb, d.free_mb, d.use_percent) for d in info.disks],
                  title="Disk use:")
    return Result(fields=fields, tables=(disks,), data=info.as_dict())


def rotate_key(ctx: Context, args: Args) -> Result:
    from appliance import credentials

    rotation = credentials.backend_for(ctx.config).rotate_key()
    old, new, count = rotation.previous_key_id, rotation.key_id, rotation.files
    return Result(
        message=f"Master key rotated: {old} -> {new}; {count} credential files re-encrypted, the old key removed.",
        data={"previous_key_id": old, "key_id": new, "files": count},
    )


GROUPS = {
    "system": "this node's settings and status",
    "system get": "show a setting or the status",
    "system set": "change a setting",
}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(("system", "get", "hostname"), "show this node's hostname", get_hostname),
    CommandSpec(
        ("system", "set", "hostname"),
        "change this node's hostname (the prompt follows at once)",
        set_hostname,
        params=(Param("hostname", "the new hostname", HostName(), flag=False, required=True),),
        changes_state=True,
        confirm=True,
        detail="The name is one RFC 1123 label: 1-63 letters, digits or hyphens, not starting or\n"
        "ending with a hyphen, not all digits. Example: system set hostname EMS-1",
    ),
    CommandSpec(
        ("system", "rotate-key"),
        "re-encrypt the stored DB credentials under a new master key",
        rotate_key,
        changes_state=True,
        confirm=True,
        via_agent=True,
        detail="Creates a new master key, re-encrypts every credential file under it as one atomic set,\n"
        "then removes the old key. If anything fails, the old key and files stay valid.",
    ),
    CommandSpec(
        ("system", "get", "status"),
        "show version, hostname, hardware id and uptime",
        get_status,
        via_agent=True,
    ),
    CommandSpec(
        ("system", "get", "info"),
        "show versions, CPUs, memory, disk use, load and uptimes (node and agent)",
        get_info,
        detail="Disk use of the volumes holding the state dir and the local database.",
    ),
)
