"""What the agent runs for a control-socket request: a command of the closed table, by its own handler.

Only commands declared ``via_agent`` in their ``COMMANDS`` table are run here. The words the shell sent
are parsed again with the same registry and parameter types (the agent trusts no check made by its
client), the secrets the shell asked for are put back in their parameters, and the command's own
pre-flight and handler run, as they would in the shell without a socket: the same core code, one copy.
The result is rendered here by the one renderer (text or ``--json``), so the shell prints exactly what
it would have printed itself.

A pre-flight's plan (``redirect``'s) is kept for a few minutes under a random token bound to the
asking uid and the same command line, so the run after the question does not check everything twice.
Nothing here logs a word of the command line beyond the command's name; secrets are masked out of any
traceback.
"""

from __future__ import annotations

import io
import logging
import secrets as secrets_
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from appliance.agentctl.protocol import Words
from appliance.clock import Clock
from appliance.config import Config
from appliance.errors import ApplianceError, ExitStatus, UsageError
from appliance.masking import MASK
from appliance.shell.context import Context
from appliance.shell.env import Env
from appliance.shell.parse import Invocation, parse_words
from appliance.shell.render import INTERNAL_ERROR, render
from appliance.shell.result import Binary, Result, Stream
from appliance.shell.spec import Args, Registry
from appliance.shell.tokenize import Word

logger = logging.getLogger("appliance.agent.control")

PLAN_TTL_S = 600.0  # a pre-flight's plan waits this long for the question's answer
MAX_PLANS = 16


def _refuse_getpass(prompt: str) -> str:
    raise UsageError("the agent cannot ask for a value", hint="the shell asks for it and sends it")


@dataclass(frozen=True)
class _Kept:
    uid: int
    words: Words
    prepared: Any
    until: float


class Runner:
    """Runs the ``via_agent`` commands of ``registry`` for a peer; ``config`` is asked at each request
    (the agent reloads it on SIGHUP)."""

    def __init__(self, registry: Registry, config: Callable[[], Config], clock: Clock) -> None:
        self.registry = registry
        self.config = config
        self.clock = clock
        self.allowed = frozenset(spec.path for spec in registry.specs if spec.via_agent)
        self._plans: dict[str, _Kept] = {}
        self._lock = threading.Lock()

    def command_name(self, words: Words) -> str:
        """The command words at the start of ``words`` (for the log: never a value, which may be a secret)."""
        node, path, name = self.registry.root, [], "?"
        for text, quoted in words:
            child = None if quoted else node.children.get(text)
            if child is None:
                break
            node = child
            path.append(text)
            if node.command is not None:
                name = " ".join(path)
        return name

    def _context(self) -> Context:
        env = Env(stdin=io.StringIO(""), stdout=io.StringIO(), stderr=io.StringIO(), environ={}, clock=self.clock,
                  stdin_isatty=False, stdout_isatty=False, getpass=_refuse_getpass)
        return Context(self.config(), env, self.registry, interactive=False)

    def _invocation(self, words: Words, given_secrets: dict[str, str]) -> Invocation:
        inv = parse_words(self.registry, [Word(text, quoted, 0) for text, quoted in words])
        if inv.spec.path not in self.allowed:
            raise UsageError(f"'{inv.spec.name}' is not run by the agent", hint="run it in the shell")
        values = dict(inv.args)
        for param in inv.spec.all_params:
            if param.secret:
                value = given_secrets.get(param.name, values.get(param.name))
                if value == "-":
                    raise UsageError(f"{param.option} -: the shell must read the value and send it")
                values[param.name] = value
        unknown = set(given_secrets) - {p.name for p in inv.spec.all_params if p.secret}
        if unknown:
            raise UsageError(f"'{inv.spec.name}' has no secret parameter {sorted(unknown)[0]}")
        return Invocation(inv.spec, Args(values, inv.args.given))

    def preview(self, uid: int, words: Words, given_secrets: dict[str, str]) -> tuple[str | None, str | None]:
        inv = self._invocation(words, given_secrets)
        if inv.spec.preflight is None:
            return None, None
        found = inv.spec.preflight(self._context(), inv.args)
        if found is None:
            return None, None
        token = None
        if found.prepared is not None:
            token = secrets_.token_hex(16)
            with self._lock:
                now = time.monotonic()
                self._plans = {k: v for k, v in self._plans.items() if v.until > now}
                while len(self._plans) >= MAX_PLANS:
                    self._plans.pop(next(iter(self._plans)))
                self._plans[token] = _Kept(uid, words, found.prepared, now + PLAN_TTL_S)
        return found.text, token

    def run(self, uid: int, words: Words, given_secrets: dict[str, str], token: str | None,
            cancelled: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        """The answers to a ``run``: ``out`` or ``line`` messages, then ``end``. An error raises (the
        caller answers it). ``cancelled()`` (the client's Ctrl-C, or its going away) is asked between
        a stream's lines and thrown into the producer as a Ctrl-C, so a redirect rolls back."""
        inv = self._invocation(words, given_secrets)
        prepared = None
        if token is not None:
            with self._lock:
                kept = self._plans.pop(token, None)
            if kept is not None and kept.uid == uid and kept.words == words and kept.until > time.monotonic():
                prepared = kept.prepared
        args = Args(dict(inv.args), inv.args.given, prepared=prepared)
        outcome = inv.spec.handler(self._context(), args)
        if isinstance(outcome, Binary):
            raise UsageError(f"'{inv.spec.name}' writes bytes: not over the control socket")
        if isinstance(outcome, Stream):
            return self._stream(outcome, cancelled)
        return self._result(outcome, bool(args.get("json")))

    @staticmethod
    def _result(result: Result, as_json: bool) -> Iterator[dict[str, Any]]:
        buffer = io.StringIO()
        render(result, buffer, as_json=as_json)
        yield {"out": buffer.getvalue()}
        yield {"end": int(result.status)}

    @staticmethod
    def _stream(stream: Stream, cancelled: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        lines, thrown = stream.lines, False
        while True:
            try:
                if not thrown and isinstance(lines, Generator) and cancelled():
                    thrown = True
                    line = lines.throw(KeyboardInterrupt())
                else:
                    line = next(lines)
            except StopIteration:
                break
            except KeyboardInterrupt:  # the producer rolled back and passed the Ctrl-C on, as in the shell
                yield {"end": int(ExitStatus.INTERRUPTED)}
                return
            yield {"line": line}
        yield {"end": int(stream.status())}


def error_answer(exc: BaseException, secrets: dict[str, str], what: str) -> dict[str, Any]:
    """The answer for an exception raised by a request: its one line, or "internal error" (logged with
    the traceback, secrets masked)."""
    if isinstance(exc, ApplianceError):
        return {"error": exc.message, "hint": exc.hint, "status": int(exc.status)}
    import traceback

    text = traceback.format_exc()
    for value in secrets.values():
        if value:
            text = text.replace(value, MASK)
    logger.error("control socket: internal error running %s:\n%s", what, text)
    return {"error": INTERNAL_ERROR.message, "hint": INTERNAL_ERROR.hint, "status": int(ExitStatus.FAILED)}
