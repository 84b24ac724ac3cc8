"""Match the words of a command line against the registry and type-check every value.

Command words are matched exactly (Tab completes them; abbreviations are not accepted, so a
destructive command is never run by a guess). Flags accept ``--db_host`` and ``--db-host`` alike but
never a prefix (``--db_h`` is an error). Unknown words and flags get the nearest valid spelling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.errors import UsageError
from appliance.shell.spec import Args, CommandSpec, Node, Param, Registry
from appliance.shell.tokenize import Word


@dataclass(frozen=True)
class Invocation:
    spec: CommandSpec
    args: Args


def suggest(word: str, candidates: list[str]) -> str | None:
    """The nearest candidate to a misspelt word, if one is close enough."""
    import difflib

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def flag_name(text: str) -> str:
    """``--db-host`` and ``--db_host`` name the same flag: ``db_host``."""
    return text[2:].replace("-", "_")


def _next_words_hint(node: Node) -> str:
    return "next: " + ", ".join(sorted(node.children))


def resolve_command(registry: Registry, words: list[Word]) -> tuple[CommandSpec, list[Word]]:
    """Walk the command words; return the command and the words after them.

    :raises UsageError: empty line, unknown or non-ASCII command word, or an incomplete command.
    """
    if not words:
        raise UsageError("no command given", hint="type 'help' to list the commands")
    node = registry.root
    consumed: list[str] = []
    rest = list(words)
    while rest and node.children:
        word = rest[0]
        if word.text.startswith("-") and not word.quoted and node.command is not None:
            break
        child = node.children.get(word.text) if not word.quoted else None
        if child is None:
            if node.command is not None:
                break
            if not word.text.isascii():
                raise UsageError(
                    f"the command word {word.text!r} holds non-ASCII characters",
                    hint="type command words in plain ASCII",
                )
            where = " ".join(consumed)
            near = suggest(word.text, list(node.children))
            hint = f"did you mean '{' '.join([*consumed, near])}'?" if near else (
                "type 'help' to list the commands" if not consumed else _next_words_hint(node))
            raise UsageError(
                f"unknown command '{' '.join([*consumed, word.text])}'" if not where
                else f"unknown word '{word.text}' after '{where}'",
                hint=hint,
            )
        node = child
        consumed.append(word.text)
        rest.pop(0)
    if node.command is None:
        raise UsageError(f"incomplete command '{' '.join(consumed)}'", hint=_next_words_hint(node))
    return node.command, rest


def _convert(param: Param, text: str) -> Any:
    assert param.type is not None
    try:
        return param.type.parse(text)
    except ValueError as exc:
        label = param.option if param.flag else param.name
        # The value itself is not echoed: it may be a secret, and the user can see what they typed.
        raise UsageError(f"{label} {exc}", hint=f"usage: {_usage_of(param)}") from None


def _usage_of(param: Param) -> str:
    return param.usage().strip("[]")


def parse_words(registry: Registry, words: list[Word]) -> Invocation:
    """Parse a whole command line (already split into words).

    :raises UsageError: with a one-line reason and a hint; nothing has been executed.
    """
    spec, rest = resolve_command(registry, words)
    flags = spec.flags()
    positionals = spec.positionals()
    values: dict[str, Any] = {}
    given: list[str] = []
    i = 0
    while i < len(rest):
        word = rest[i]
        text = word.text
        if text.startswith("-") and not word.quoted:
            if not text.startswith("--") or text == "--":
                raise UsageError(
                    f"unknown option '{text}' for '{spec.name}'",
                    hint=f"usage: {spec.usage()}",
                )
            name, eq, inline = flag_name(text).partition("=")
            param = flags.get(name)
            if param is None:
                near = suggest(name, list(flags))
                raise UsageError(
                    f"unknown option '--{name}' for '{spec.name}'",
                    hint=f"did you mean '--{near}'?" if near else f"usage: {spec.usage()}",
                )
            if name in given:
                raise UsageError(f"{param.option} is given twice")
            given.append(name)
            if param.is_switch:
                if eq:
                    raise UsageError(f"{param.option} takes no value")
                values[name] = True
            elif eq:
                values[name] = _convert(param, inline)
            else:
                if i + 1 >= len(rest):
                    raise UsageError(f"{param.option} needs a value", hint=f"usage: {_usage_of(param)}")
                i += 1
                values[name] = _convert(param, rest[i].text)
            i += 1
            continue
        if not positionals:
            raise UsageError(
                f"unexpected word '{text}' for '{spec.name}'",
                hint=f"usage: {spec.usage()}",
            )
        param = positionals[0]
        if param.many:
            values[param.name] = (*values.get(param.name, ()), _convert(param, text))
        else:
            positionals.pop(0)
            values[param.name] = _convert(param, text)
        if param.name not in given:
            given.append(param.name)
        i += 1
    for param in spec.all_params:
        if param.name in values:
            continue
        if param.ask:
            values[param.name] = None  # asked for by the dispatcher, without echo
            continue
        if param.required:
            what = param.option if param.flag else param.type.metavar  # type: ignore[union-attr]
            raise UsageError(f"'{spec.name}' needs {what}", hint=f"usage: {spec.usage()}")
        values[param.name] = False if param.is_switch else param.default
    for group in spec.one_of:
        chosen = [name for name in group if values.get(name)]
        if len(chosen) != 1:
            options = " or ".join("--" + name for name in group)
            raise UsageError(
                f"'{spec.name}' needs exactly one of {options}",
                hint=f"usage: {spec.usage()}",
            )
    return Invocation(spec, Args(values, given))
