"""``system get|set|confirm network``: this node's interfaces, addresses, gateway and DNS servers."""

from __future__ import annotations

from typing import Any

from appliance.errors import UsageError
from appliance.shell.context import Context
from appliance.shell.result import Result, Table
from appliance.shell.spec import Args, CommandSpec, Param, Preview
from appliance.shell.types import AddressPrefix, Integer, Interface, IpAddress, IpList


def get_network(ctx: Context, args: Args) -> Result:
    from appliance.ops.netinfo import network_info

    info = network_info(ctx.config)
    interfaces = Table("interfaces", ("Interface", "State", "MAC", "Mode", "Addresses"),
                       [(i.name, i.state, i.mac, i.mode, i.addresses) for i in info.interfaces], title="Interfaces:")
    gateways = Table("gateways", ("Gateway", "Interface"), info.gateways, title="Default gateway(s):")
    pending = info.pending
    fields: list[tuple[str, Any]] = [("DNS servers", info.dns or None), ("DNS source", info.dns_source)]
    if pending is not None:
        fields.append(("Pending change", f"{pending.interface}: reverted at {pending.deadline_text()} unless "
                       "confirmed (system confirm network)"))
    fields += [("Note", note) for note in info.notes]
    data = {
        "interfaces": [{"name": i.name, "state": i.state, "mac": i.mac, "mode": i.mode, "addresses": list(i.addresses)}
                       for i in info.interfaces],
        "gateways": [{"gateway": g, "interface": dev} for g, dev in info.gateways],
        "dns_servers": list(info.dns),
        "dns_source": info.dns_source,
        "pending": None if pending is None else {"interface": pending.interface, "deadline": pending.deadline_text(),
                                                 "new": pending.spec},
        "notes": list(info.notes),
    }
    return Result(fields=fields, tables=(interfaces, gateways), data=data)


def _spec(args: Args) -> Any:
    from appliance.ops.netconf import NetworkSpec

    if args["dhcp"] == (args["address"] is not None):
        raise UsageError("give exactly one of --dhcp and --address",
                         hint="system set network --interface eth0 --address 192.0.2.10/24 --gateway 192.0.2.1")
    if args["dhcp"] and args["gateway"] is not None:
        raise UsageError("--gateway goes with --address (DHCP provides the gateway)")
    spec = NetworkSpec(args["interface"], bool(args["dhcp"]), args["address"], args["gateway"], args["dns"] or ())
    try:
        return spec.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def preview_set(ctx: Context, args: Args) -> Preview:
    from appliance.ops.netinfo import network_info

    spec = _spec(args)
    seconds = args["confirm_within"] or ctx.config.system.network_confirm_s
    info = network_info(ctx.config)
    now = next((i for i in info.interfaces if i.name == spec.interface), None)
    if now is None:
        names = ", ".join(i.name for i in info.interfaces) or "none"
        raise UsageError(f"there is no interface {spec.interface} on this node", hint=f"interfaces: {names}")
    current = f"{now.mode}, {', '.join(now.addresses) or 'no address'}"
    lines = [f"Interface {spec.interface} now: {current}.", f"New: {spec.summary()}.",
             f"It is applied at once and reverted by itself after {seconds} s unless `system confirm network` "
             "is run (best from a new session: that proves the node is still reachable)."]
    if not spec.dhcp and spec.gateway is None:
        lines.append("Warning: no gateway: only the local network will reach this node.")
    if not spec.dhcp and not spec.dns:
        lines.append("Warning: no DNS servers for this interface.")
    return Preview("\n".join(lines), (spec, seconds))


def set_network(ctx: Context, args: Args) -> Result:
    from appliance.privileged.client import call_helper

    spec, seconds = args.prepared
    report = call_helper(ctx.config, ["network-apply", *spec.helper_args(seconds)], timeout_s=90)
    where = f" Reconnect to {spec.address.split('/')[0]} and run" if spec.address else " Run"
    return Result(message=f"Network changed: {report}.{where} `system confirm network` within {seconds} s to keep "
                  "it; otherwise the previous configuration comes back by itself.",
                  data={"applied": spec.as_dict(), "confirm_within_s": seconds, "report": report})


def confirm_network(ctx: Context, args: Args) -> Result:
    from appliance.privileged.client import call_helper

    report = call_helper(ctx.config, ["network-confirm"], timeout_s=60)
    return Result(message=f"Network change {report}.")


GROUPS = {"system confirm": "keep a change that would otherwise be reverted"}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        ("system", "get", "network"), "show interfaces, addresses, default gateway and DNS servers", get_network,
        detail="Read from the live system. Mode: dhcp, static or none (no address). A pending\n"
        "`system set network` change is shown with the time it is reverted unless confirmed.",
    ),
    CommandSpec(
        ("system", "set", "network"), "set an interface to DHCP or a static address (reverted unless confirmed)",
        set_network,
        params=(
            Param("interface", "the interface to configure", Interface(), required=True),
            Param("dhcp", "get the address, gateway and DNS servers by DHCP"),
            Param("address", "static address with its prefix length", AddressPrefix()),
            Param("gateway", "default gateway (static only; must be on the address's network)", IpAddress()),
            Param("dns", "DNS servers, comma-separated (at most 3)", IpList()),
            Param("confirm_within", "seconds to wait for `system confirm network` before reverting",
                  Integer(10, 3600, metavar="<SECONDS>")),
        ),
        changes_state=True, confirm=True, preflight=preview_set,
        detail="Give --dhcp, or --address ADDR/PREFIX [--gateway GW]; --dns with either. Written as a\n"
        "systemd-networkd file through the privileged helper and applied at once. Unless\n"
        "`system confirm network` is run within the deadline (default system.network_confirm_s,\n"
        "120 s), the previous configuration is restored by itself, also across a reboot.\n"
        "Example: system set network --interface eth0 --address 192.0.2.10/24 --gateway 192.0.2.1 --dns 192.0.2.53",
    ),
    CommandSpec(
        ("system", "confirm", "network"), "keep the network change made by `system set network`", confirm_network,
        detail="Cancels the automatic revert. It changes nothing on the node, so it asks nothing. Too late\n"
        "(after the deadline): the previous configuration is restored and the command says so.",
    ),
)
