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
from appliance.shell.tokenize import Word, split_flag

_SHOWN_NAME = 40  # an unknown option is named in the error up to this many characters


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
    """``--db-host`` and ``--db_host`` name the same flag: ``db_host`` (``--db_host=x`` too)."""
    split = split_flag(text)
    return split[0] if split is not None else text


# FortiOS and FortiWeb put the verb first ("get system status", "show ..."); this shell puts the group
# first ("system get status"), and has no "show": say what to type instead.
_VERB_FIRST = {"get": "get", "show": "get", "set": "set"}


def _verb_first_hint(registry: Registry, words: list[Word]) -> str | None:
    if len(words) < 2 or words[0].quoted or words[0].text not in _VERB_FIRST:
        return None
    texts = [w.text for w in words]
    wanted = [texts[1], _VERB_FIRST[texts[0]], *texts[2:]]
    node, used = registry.root, 0
    while used < len(wanted) and (child := node.children.get(wanted[used])) is not None:
        node, used = child, used + 1
    if used < 2 or node.command is None:
        return None
    return "did you mean: " + " ".join(wanted)


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
            habit = _verb_first_hint(registry, words) if not consumed else None
            hint = habit or (f"did you mean '{' '.join([*consumed, near])}'?" if near else (
                "type 'help' to list the commands" if not consumed else _next_words_hint(node)))
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
    after_secret: Param | None = None  # the secret flag whose value was the previous word
    i = 0
    while i < len(rest):
        word = rest[i]
        text = word.text
        if text.startswith("-") and not word.quoted:
            split = split_flag(text)
            if split is None or not split[0]:
                raise UsageError(
                    f"unknown option '{text[:_SHOWN_NAME]}' for '{spec.name}'",
                    hint=f"usage: {spec.usage()}",
                )
            name, tail = split
            param = flags.get(name)
            if tail and not tail.startswith("="):
                # An escaped or quoted space glued something onto the name; what follows may be a
                # secret, so it is never echoed.
                shown = param.option if param is not None else f"--{name[:_SHOWN_NAME]}"
                raise UsageError(
                    f"the option word starting with {shown} holds a character that cannot be in an option name",
                    hint="separate the option and its value with a plain space; quote only the value",
                )
            if param is None:
                near = suggest(name, list(flags)) if len(name) <= _SHOWN_NAME else None
                raise UsageError(
                    f"unknown option '--{name[:_SHOWN_NAME]}' for '{spec.name}'",
                    hint=f"did you mean '--{near}'?" if near else f"usage: {spec.usage()}",
                )
            if name in given:
                raise UsageError(f"{param.option} is given twice")
            given.append(name)
            after_secret = None
            if param.is_switch:
                if tail:
                    raise UsageError(f"{param.option} takes no value")
                values[name] = True
            elif tail:
                values[name] = _convert(param, tail[1:])
                after_secret = param if param.secret else None
            else:
                if i + 1 >= len(rest):
                    raise UsageError(f"{param.option} needs a value", hint=f"usage: {_usage_of(param)}")
                i += 1
                values[name] = _convert(param, rest[i].text)
                after_secret = param if param.secret else None
            i += 1
            continue
        if not positionals:
            if after_secret is not None:
                # Most likely the rest of a secret typed without quotes: do not echo it.
                raise UsageError(
                    f"unexpected word after the value of {after_secret.option} for '{spec.name}'",
                    hint=f"quote a value that holds spaces: {after_secret.option} 'two words'",
                )
            raise UsageError(
                f"unexpected word '{text}' for '{spec.name}'",
                hint=f"usage: {spec.usage()}",
            )
        after_secret = None
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
