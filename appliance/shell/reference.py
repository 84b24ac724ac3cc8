"""Documents derived from the command table: the golden table and the README's command reference."""

from __future__ import annotations

from appliance.errors import ExitStatus
from appliance.shell.spec import Registry

EXIT_STATUS_DOC = {
    ExitStatus.OK: "success",
    ExitStatus.FAILED: "the command ran and failed (for example: no ping reply, database unreachable)",
    ExitStatus.USAGE: "usage or validation error, or refused input: nothing was executed",
    ExitStatus.NOT_CONFIRMED: "confirmation needed but not given (no terminal and no `--yes`, or answered no)",
    ExitStatus.AGENT_DOWN: "the node's agent did not answer on its control socket (stopped or frozen; "
    "`systemctl status appliance-agent`)",
    ExitStatus.INTERRUPTED: "interrupted (Ctrl-C)",
}


def command_table(registry: Registry) -> str:
    """A stable text serialisation of every command and parameter (pinned by a golden test)."""
    lines: list[str] = []
    for spec in sorted(registry.specs, key=lambda s: s.path):
        traits = [t for t, on in (("changes-state", spec.changes_state), ("confirm", spec.confirm),
                                  ("json", spec.json_output), ("interactive-only", spec.interactive_only),
                                  ("preflight", spec.preflight is not None)) if on]
        lines.append(f"{spec.name} :: {spec.summary}" + (f" [{', '.join(traits)}]" if traits else ""))
        for p in spec.all_params:
            kind = "switch" if p.is_switch else p.type.describe()  # type: ignore[union-attr]
            attrs = [a for a, on in (("flag", p.flag), ("positional", not p.flag), ("required", p.required),
                                     ("secret", p.secret), ("ask", p.ask), ("many", p.many)) if on]
            default = f" default={p.default!r}" if p.default not in (None, False) else ""
            lines.append(f"    {p.option if p.flag else p.name}: {kind} ({', '.join(attrs)}){default}")
        for group in spec.one_of:
            lines.append(f"    exactly one of: {', '.join(group)}")
    return "\n".join(lines) + "\n"


def reference_markdown(registry: Registry) -> str:
    """The README's command reference and exit status table."""
    out = ["| Command | What it does |", "|---|---|"]
    for spec in registry.specs:
        out.append(f"| `{spec.usage()}` | {spec.summary} |")
    out += ["", "Every `get`/`show` command takes `--json`; every command that changes the node asks "
            "`Do you want to continue? (y/n)` unless given `--yes`. `help COMMAND` shows the details.",
            "", "| Exit status | Meaning |", "|---|---|"]
    out += [f"| {int(status)} | {text} |" for status, text in EXIT_STATUS_DOC.items()]
    return "\n".join(out) + "\n"
