"""The command declaration: what a command is, as data.

Each ``commands/`` module exports ``COMMANDS: tuple[CommandSpec, ...]``. The parser, Tab completion,
``?`` help, ``help`` and the README's command reference are all derived from these records, and a
golden test pins the whole table (``tests/fixtures/command_table.txt``).

Two options are added by rule rather than by hand, so they cannot be forgotten:
``--yes`` on every command with ``confirm=True``, and ``--json`` on every ``get``/``show`` command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appliance.shell.types import ParamType

if TYPE_CHECKING:
    from appliance.shell.context import Context
    from appliance.shell.result import Outcome

Handler = Callable[["Context", "Args"], "Outcome"]


@dataclass(frozen=True)
class Preview:
    """What a pre-flight found: ``text`` to show above the confirmation question (None: nothing), and
    what it ``prepared`` for the handler (a plan), which the handler gets as ``args.prepared`` so that
    nothing is checked twice."""

    text: str | None
    prepared: Any = None


# Runs before the confirmation question without changing anything (checks, a summary of what will
# happen); raises to stop.
Preflight = Callable[["Context", "Args"], "Preview | None"]


@dataclass(frozen=True)
class Param:
    """One parameter of a command.

    A positional parameter (``flag=False``) is written as a bare word after the command words; a flag
    is written ``--name VALUE`` or ``--name=VALUE``, and both ``--db_host`` and ``--db-host`` spell
    the same flag. A switch (``type is None``) is a flag that takes no value.
    """

    name: str
    help: str
    type: ParamType | None = None
    flag: bool = True
    required: bool = False
    default: Any = None
    # A secret that may be left out: the shell then asks for it without echo (a terminal is needed),
    # and the value "-" means "read one line from standard input".
    ask: bool = False
    # A positional that takes every remaining word (``help system set``); its value is a tuple.
    many: bool = False

    def __post_init__(self) -> None:
        if not self.flag and self.type is None:
            raise ValueError(f"positional parameter {self.name} needs a type")
        if self.ask and not self.secret:
            raise ValueError(f"only a secret parameter can be asked for ({self.name})")

    @property
    def is_switch(self) -> bool:
        return self.type is None

    @property
    def secret(self) -> bool:
        return self.type is not None and self.type.secret

    @property
    def option(self) -> str:
        """The canonical spelling shown in help (``--db_host``)."""
        return "--" + self.name

    def usage(self) -> str:
        if not self.flag:
            assert self.type is not None
            return f"[{self.type.metavar}...]" if self.many else self.type.metavar
        text = self.option if self.is_switch else f"{self.option} {self.type.metavar}"  # type: ignore[union-attr]
        return text if self.required else f"[{text}]"


YES = Param("yes", "do not ask for confirmation (for scripts)")
JSON = Param("json", "print one JSON document instead of tables")


@dataclass(frozen=True)
class CommandSpec:
    """A command: its words, parameters, help and handler.

    :param path: the command words, e.g. ``("system", "set", "hostname")``.
    :param summary: one line for listings and completion.
    :param handler: ``handler(ctx, args) -> Result``; it returns data and never prints.
    :param changes_state: the command changes the node (audited as such).
    :param confirm: ask ``Do you want to continue? (y/n)`` first; implies a ``--yes`` switch.
    :param one_of: groups of switches of which exactly one must be given.
    :param detail: longer help shown by ``help <command>``.
    :param interactive_only: refused outside the interactive shell (``history``).
    :param preflight: checks run before confirmation, changing nothing.
    :param via_agent: with ``[agent] control_socket`` set, the node's agent runs the pre-flight and the
        handler (it holds the credentials; the login user does not), and the shell prints its answer.
    """

    path: tuple[str, ...]
    summary: str
    handler: Handler
    params: tuple[Param, ...] = ()
    changes_state: bool = False
    confirm: bool = False
    one_of: tuple[tuple[str, ...], ...] = ()
    detail: str = ""
    interactive_only: bool = False
    preflight: Preflight | None = None
    via_agent: bool = False

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def json_output(self) -> bool:
        return "get" in self.path or "show" in self.path

    @property
    def all_params(self) -> tuple[Param, ...]:
        extra: tuple[Param, ...] = (YES,) if self.confirm else ()
        extra += (JSON,) if self.json_output else ()
        return self.params + extra

    def positionals(self) -> list[Param]:
        return [p for p in self.all_params if not p.flag]

    def flags(self) -> dict[str, Param]:
        return {p.name: p for p in self.all_params if p.flag}

    def usage(self) -> str:
        return " ".join([self.name, *(p.usage() for p in self.all_params)])


class Args(Mapping[str, Any]):
    """The parsed, typed values of one command line; absent optional flags hold their default."""

    def __init__(self, values: Mapping[str, Any], given: Iterable[str], prepared: Any = None) -> None:
        self._values = dict(values)
        self.given = frozenset(given)
        self.prepared = prepared  # what the command's pre-flight prepared (see Preview), if it has one

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Args({sorted(self.given)})"  # values never shown: some are secrets


@dataclass
class Node:
    """A node of the command word tree: a command here, and/or more words below."""

    word: str
    command: CommandSpec | None = None
    children: dict[str, Node] = field(default_factory=dict)
    summary: str = ""


class Registry:
    """The closed command set, built once from the ``COMMANDS`` tuples of the command modules."""

    def __init__(self, specs: Iterable[CommandSpec], group_help: Mapping[str, str] | None = None) -> None:
        self.specs: tuple[CommandSpec, ...] = tuple(specs)
        self.root = Node("")
        groups = dict(group_help or {})
        for spec in self.specs:
            self._validate(spec)
            node = self.root
            for depth, word in enumerate(spec.path):
                if word not in node.children:
                    prefix = " ".join(spec.path[: depth + 1])
                    node.children[word] = Node(word, summary=groups.get(prefix, ""))
                node = node.children[word]
            if node.command is not None:
                raise ValueError(f"command {spec.name!r} declared twice")
            node.command = spec
            node.summary = spec.summary

    @staticmethod
    def _validate(spec: CommandSpec) -> None:
        if not spec.path or not all(w.isascii() and w.replace("-", "").isalnum() for w in spec.path):
            raise ValueError(f"bad command words {spec.path!r}")
        if not spec.summary:
            raise ValueError(f"command {spec.name!r} has no summary")
        names = [p.name for p in spec.all_params]
        if len(set(names)) != len(names):
            raise ValueError(f"command {spec.name!r} declares a parameter twice")
        for group in spec.one_of:
            for member in group:
                param = spec.flags().get(member)
                if param is None or not param.is_switch:
                    raise ValueError(f"command {spec.name!r}: one_of names unknown switch {member!r}")

    def find(self, words: Iterable[str]) -> Node | None:
        node = self.root
        for word in words:
            child = node.children.get(word)
            if child is None:
                return None
            node = child
        return node

    def secret_flags(self) -> frozenset[str]:
        """Every flag name (canonical, underscores) that carries a secret, across all commands."""
        return frozenset(p.name for s in self.specs for p in s.all_params if p.secret)

    def all_flags(self) -> frozenset[str]:
        return frozenset(p.name for s in self.specs for p in s.all_params if p.flag)
