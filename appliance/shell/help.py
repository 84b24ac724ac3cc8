"""Help, ``?`` context help and Tab completion candidates, all derived from the registry.

Pure functions over a :class:`~appliance.shell.spec.Registry` and a line of text; the prompt_toolkit
glue in :mod:`appliance.shell.repl` only calls them. Given the node's configuration, a parameter's
values known only at run time (:meth:`~appliance.shell.types.ParamType.suggestions`: the cluster's
node names) are offered too; they are looked up only when Tab or ``?`` is pressed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.errors import UsageError
from appliance.shell.parse import flag_name
from appliance.shell.spec import CommandSpec, Node, Param, Registry
from appliance.shell.tokenize import Word, split_words
from appliance.shell.types import ParamType

if TYPE_CHECKING:
    from appliance.config import Config


class Candidate:
    """Something that may come next: ``text`` to insert, ``meta`` to explain it. (A plain class: this
    module loads on every start of the shell, whose start-up is measured.)"""

    __slots__ = ("meta", "text")

    def __init__(self, text: str, meta: str) -> None:
        self.text, self.meta = text, meta

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Candidate) and (self.text, self.meta) == (other.text, other.meta)

    def __hash__(self) -> int:
        return hash((self.text, self.meta))

    def __repr__(self) -> str:
        return f"Candidate({self.text!r}, {self.meta!r})"


def _walk(registry: Registry, words: list[Word]) -> tuple[Node, int]:
    """Follow command words from the root; return the deepest node and how many words it used."""
    node = registry.root
    used = 0
    for word in words:
        child = node.children.get(word.text)
        if child is None or word.quoted:
            break
        node, used = child, used + 1
    return node, used


def _commands_below(node: Node) -> list[CommandSpec]:
    found = [node.command] if node.command else []
    for child in node.children.values():
        found.extend(_commands_below(child))
    return found


def _values(param: Param, config: Config | None) -> list[Candidate]:
    """What may be typed as ``param``'s value: its choices (fixed or looked up now), else its metavar."""
    kind: ParamType | None = param.type
    assert kind is not None
    return [Candidate(c, param.help) for c in kind.suggestions(config)] or [Candidate(kind.metavar, param.help)]


def _param_candidates(spec: CommandSpec, after: list[Word], config: Config | None) -> list[Candidate]:
    given = {flag_name(w.text).split("=", 1)[0] for w in after if w.text.startswith("--") and not w.quoted}
    found: list[Candidate] = []
    positional_count = _positionals_given(spec, after)
    positionals = spec.positionals()
    if positional_count < len(positionals):
        found.extend(_values(positionals[positional_count], config))
    for param in spec.flags().values():
        if param.name not in given:
            found.append(Candidate(param.option, _flag_meta(param)))
    if _complete(spec, after):
        found.append(Candidate("<Enter>", "run the command"))
    return found


def _flag_meta(param: Param) -> str:
    value = "" if param.is_switch else f"{param.type.describe()}: "  # type: ignore[union-attr]
    return value + param.help + (" (required)" if param.required else "")


def _positionals_given(spec: CommandSpec, after: list[Word]) -> int:
    flags = spec.flags()
    count, i = 0, 0
    while i < len(after):
        word = after[i]
        if word.text.startswith("--") and not word.quoted:
            param = flags.get(flag_name(word.text).split("=", 1)[0])
            if param is not None and not param.is_switch and "=" not in word.text:
                i += 1
        else:
            count += 1
        i += 1
    return count


def _complete(spec: CommandSpec, after: list[Word]) -> bool:
    # Judged structurally (which parameters are present), without type-checking the values.
    given = {flag_name(w.text).split("=", 1)[0] for w in after if w.text.startswith("--")}
    required = [p for p in spec.all_params if p.required and p.flag and not p.ask]
    if any(p.name not in given for p in required):
        return False
    needed = [p for p in spec.positionals() if p.required]
    if _positionals_given(spec, after) < len(needed):
        return False
    return all(any(name in given for name in group) for group in spec.one_of)


def candidates(registry: Registry, line: str, config: Config | None = None) -> tuple[list[Candidate], str]:
    """What may come next on ``line``: the candidates and the partial word they would replace.

    A line ending in a space asks for the next word; otherwise the last word is being typed and
    only candidates starting with it are returned.
    """
    try:
        words = split_words(line, partial=True)
    except UsageError:
        return [], ""
    typing = "" if not words or line.endswith(" ") else words[-1].text
    done = words if not typing else words[:-1]
    node, used = _walk(registry, done)
    if used < len(done) and node.command is None:
        return [], typing  # an unknown word earlier on the line: nothing sensible can follow
    found: list[Candidate] = []
    if node.command is None or (used == len(done) and node.children and not done[used:]):
        found.extend(Candidate(w, child.summary) for w, child in sorted(node.children.items()))
    if node.command is not None:
        after = done[used:]
        if after and not after[-1].quoted:
            param = node.command.flags().get(flag_name(after[-1].text))
            if after[-1].text.startswith("--") and param is not None and not param.is_switch:
                return _filter(_values(param, config), typing), typing
        found.extend(_param_candidates(node.command, after, config))
    return _filter(found, typing), typing


def _filter(found: list[Candidate], typing: str) -> list[Candidate]:
    if not typing:
        return found
    # Flags match in either spelling: "--db-h" finds "--db_host".
    wanted = typing.replace("-", "_") if typing.startswith("--") else typing
    keep = []
    for cand in found:
        text = cand.text.replace("-", "_") if cand.text.startswith("--") else cand.text
        if text.startswith(wanted) and not cand.text.startswith("<"):
            keep.append(cand)
    return keep


def context_help(registry: Registry, line: str, config: Config | None = None) -> str:
    """The text shown when ``?`` is typed: what may come next, one per line, with explanations."""
    found, typing = candidates(registry, line, config)
    if not found:
        if typing or line.strip():
            return "% no match: nothing valid can follow here (type 'help')"
        return "% no commands"
    width = max(len(c.text) for c in found)
    return "\n".join(f"  {c.text.ljust(width)}  {c.meta}" for c in found)


def completions(registry: Registry, line: str, config: Config | None = None) -> tuple[list[Candidate], str]:
    """Tab completion: only insertable candidates (no ``<HOST>`` placeholders)."""
    found, typing = candidates(registry, line, config)
    return [c for c in found if not c.text.startswith("<")], typing


def help_text(registry: Registry, words: tuple[str, ...] = ()) -> str:
    """``help`` (every command) or ``help WORDS`` (a group or one command, in detail)."""
    node = registry.find(words)
    if node is None:
        raise UsageError(f"no command or group '{' '.join(words)}'", hint="type 'help' to list the commands")
    if node.command is not None and not node.children:
        return command_help(node.command)
    specs = _commands_below(node)
    width = max(len(s.name) for s in specs)
    lines = [f"  {s.name.ljust(width)}  {s.summary}" for s in specs]
    head = "Commands:" if not words else f"Commands under '{' '.join(words)}':"
    tail = "\nType 'help COMMAND' for details, '?' anywhere for what may come next, Tab to complete."
    return "\n".join([head, *lines]) + ("\n" + tail if not words else "")


def command_help(spec: CommandSpec) -> str:
    lines = [f"{spec.name} - {spec.summary}", "", f"usage: {spec.usage()}"]
    if spec.detail:
        lines += ["", spec.detail.strip()]
    params = spec.all_params
    if params:
        lines += ["", "parameters:"]
        width = max(len(p.option if p.flag else p.type.metavar) for p in params)  # type: ignore[union-attr]
        for p in params:
            label = p.option if p.flag else p.type.metavar  # type: ignore[union-attr]
            kind = "" if p.is_switch else f"{p.type.describe()}; "  # type: ignore[union-attr]
            default = f"; default {_default_text(p.default)}" if p.default not in (None, False) else ""
            required = "; required" if p.required else ""
            lines.append(f"  {label.ljust(width)}  {kind}{p.help}{required}{default}")
    for group in spec.one_of:
        lines.append("  exactly one of: " + ", ".join("--" + n for n in group))
    if spec.confirm:
        lines += ["", "Asks 'Do you want to continue? (y/n)' unless --yes is given."]
    return "\n".join(lines)


def _default_text(value: object) -> str:
    """A default as the user would type it: ``5432``, ``a,b``; never a Python tuple."""
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)
