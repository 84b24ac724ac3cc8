"""The interactive shell: prompt_toolkit glue around the one dispatcher.

Emacs line editing, history (masked before it is stored), Tab completion and ``?`` help derived from
the registry, an idle timeout. prompt_toolkit's escape hatches (system prompt, open in editor,
suspend) stay off, and no pager or editor is ever started.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app, run_in_terminal
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import History
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from appliance.errors import ExitStatus
from appliance.fsutil import write_atomic
from appliance.ha.statusfile import node_names
from appliance.hostname import backend_for
from appliance.masking import printable
from appliance.shell.context import Context
from appliance.shell.dispatch import Dispatcher
from appliance.shell.help import Sources, completions, context_help
from appliance.shell.spec import Registry

BANNER = "Appliance shell. Type 'help' for the commands, '?' for what may come next, Tab to complete."


class IdleTimeout(Exception):
    pass


class MaskedHistory(History):
    """History kept in a file in the state dir (mode 0600), one entry per line, secrets masked.

    Entries are masked and escaped before they are kept, in memory and on disk, so neither Up-arrow
    recall nor ``history`` nor the file can ever show a password.
    """

    def __init__(self, path: Path, dispatcher: Dispatcher, size: int) -> None:
        super().__init__()
        self.path, self.dispatcher, self.size = path, dispatcher, size

    def clean(self, line: str) -> str:
        return printable(self.dispatcher.mask(line))

    def load_history_strings(self) -> Iterable[str]:
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        if len(lines) > self.size:
            lines = lines[-self.size :]
            self._rewrite(lines)
        return list(reversed(lines))  # newest first, as prompt_toolkit expects

    def append_string(self, string: str) -> None:
        super().append_string(self.clean(string))

    def store_string(self, string: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, (string + "\n").encode("utf-8"))
            finally:
                os.close(fd)
        except OSError:
            pass  # history is a convenience; a read-only state dir must not break the shell

    def _rewrite(self, lines: list[str]) -> None:
        try:
            write_atomic(self.path, "".join(line + "\n" for line in lines), mode=0o600)
        except OSError:
            pass

    def entries(self) -> list[str]:
        return self.get_strings()  # oldest first


class RegistryCompleter(Completer):
    def __init__(self, registry: Registry, sources: Sources | None = None) -> None:
        self.registry = registry
        self.sources = sources

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        found, typing = completions(self.registry, document.text_before_cursor, self.sources)
        for cand in found:
            # Complete a word with a trailing space, like appliance CLIs do, so the next Tab goes on.
            yield Completion(cand.text + " ", start_position=-len(typing), display=cand.text,
                             display_meta=cand.meta)


def _inside_quotes(text: str) -> bool:
    single = double = False
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and not single:
            escaped = True
        elif char == "'" and not double:
            single = not single
        elif char == '"' and not single:
            double = not double
    return single or double


def key_bindings(registry: Registry, out: IO[str], sources: Sources | None = None) -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("?")
    def _(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        before = buffer.document.text_before_cursor
        if _inside_quotes(before):
            buffer.insert_text("?")  # a literal '?' inside a quoted value
            return
        text = context_help(registry, before, sources)

        def show() -> None:
            # Printed above the prompt, which is then drawn again with the line as it was.
            out.write(f"? {before}\n{text}\n")
            out.flush()

        run_in_terminal(show)

    return bindings


def build_session(ctx: Context, dispatcher: Dispatcher) -> tuple[PromptSession[str], MaskedHistory]:
    history = MaskedHistory(ctx.config.paths.history, dispatcher, ctx.config.shell.history_size)
    # The cluster's node names, as this node's agent last saw them (its status file: no database round trip).
    sources: Sources = {"node": lambda: node_names(ctx.config)}
    session: PromptSession[str] = PromptSession(
        history=history,
        completer=RegistryCompleter(ctx.registry, sources),
        complete_while_typing=False,
        key_bindings=key_bindings(ctx.registry, ctx.env.stdout, sources),
        enable_system_prompt=False,
        enable_open_in_editor=False,
        enable_suspend=False,
        enable_history_search=False,
        mouse_support=False,
    )
    return session, history


def _idle_watch(timeout_s: int) -> Any:
    """A pre_run hook that ends the prompt after ``timeout_s`` seconds without a key press."""

    def pre_run() -> None:
        app = get_app()
        clock = {"last": _monotonic()}

        def touched(_: object) -> None:
            clock["last"] = _monotonic()

        app.key_processor.after_key_press += touched

        async def watch() -> None:
            import asyncio

            while True:
                idle = _monotonic() - clock["last"]
                if idle >= timeout_s:
                    app.exit(exception=IdleTimeout())
                    return
                await asyncio.sleep(min(1.0, timeout_s - idle))

        app.create_background_task(watch())

    return pre_run


def _monotonic() -> float:
    import time

    return time.monotonic()


def one_iteration(ctx: Context, dispatcher: Dispatcher, session: PromptSession[str]) -> bool:
    """Read one line and run it. Returns False when the session should end."""
    try:
        hostname = backend_for(ctx.config).get()
    except Exception:  # the prompt must always come up, whatever the backend does
        hostname = ctx.config.node.default_hostname
    timeout = ctx.config.shell.idle_timeout_s
    try:
        line = session.prompt(
            ctx.config.shell.prompt.format(hostname=hostname),
            pre_run=_idle_watch(timeout) if timeout else None,
        )
    except KeyboardInterrupt:
        return True  # Ctrl-C at the prompt clears the line
    except EOFError:
        return False  # Ctrl-D on an empty line logs out
    except IdleTimeout:
        ctx.env.stdout.write(f"\nidle for {timeout} s: logged out\n")
        return False
    dispatcher.run_line(line)
    return not ctx.logout


def run_repl(ctx: Context) -> int:
    # A login shell has no job-control parent to resume it: a stopped shell would hang the session.
    for sig in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    dispatcher = Dispatcher(ctx, "interactive")
    session, history = build_session(ctx, dispatcher)
    ctx.history = history.entries
    ctx.env.stdout.write(BANNER + "\n")
    while one_iteration(ctx, dispatcher, session):
        pass
    return ExitStatus.OK
