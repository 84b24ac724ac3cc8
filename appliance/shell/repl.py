"""The interactive shell: prompt_toolkit glue around the one dispatcher.

Emacs line editing, history (masked and escaped before it is stored), Tab completion and ``?`` help
derived from the registry (a parameter type may offer values known only at run time, such as the
cluster's node names, read when Tab is pressed), an idle timeout. prompt_toolkit's escape hatches
(system prompt, open in editor, suspend) stay off, and no pager or editor is ever started.

Input is bounded: a paste is refused whole when it would make the line longer than the dispatcher
accepts (it is never held whole: :mod:`appliance.shell.paste`), and keys typed past that length are
dropped and make the line refused at Enter. What is echoed (the line before ``?``, the prompt's
hostname) passes through the one sanitiser. A hang-up or SIGTERM at the prompt ends the session.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app, run_in_terminal
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import History
from prompt_toolkit.input import create_input
from prompt_toolkit.input.vt100 import Vt100Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput
from prompt_toolkit.layout.utils import explode_text_fragments

from appliance import interrupts
from appliance.config import Config
from appliance.errors import ExitStatus
from appliance.fsutil import write_atomic
from appliance.hostname import backend_for
from appliance.safetext import safe
from appliance.shell.context import Context
from appliance.shell.dispatch import AUDIT_PREFIX, Dispatcher
from appliance.shell.help import completions, context_help
from appliance.shell.paste import BoundedParser
from appliance.shell.spec import Registry
from appliance.shell.tokenize import MAX_LINE

BANNER = "Appliance shell. Type 'help' for the commands, '?' for what may come next, Tab to complete."


class IdleTimeout(Exception):
    pass


class MaskedHistory(History):
    """History kept in a file in the state dir (mode 0600), one entry per line, secrets masked.

    Entries are masked and escaped (:func:`~appliance.safetext.safe`) before they are kept, in memory
    and on disk, so neither Up-arrow recall nor ``history`` nor the file can ever show a password, and
    an entry is one line in every reader's eyes: a newline, U+2028 or invalid UTF-8 in a refused line
    is stored as its escape, and the file is split on ``\\n`` only (never ``splitlines``, which also
    splits on U+2028, U+0085, FS, GS, RS...), each entry escaped again when read.
    """

    def __init__(self, path: Path, dispatcher: Dispatcher, size: int) -> None:
        super().__init__()
        self.path, self.dispatcher, self.size = path, dispatcher, size

    def clean(self, line: str) -> str:
        if len(line) > MAX_LINE:  # refused whole; only a masked prefix is worth keeping
            return safe(self.dispatcher.mask(line[:AUDIT_PREFIX])) + " ..."
        return safe(self.dispatcher.mask(line))

    def load_history_strings(self) -> Iterable[str]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        lines = [safe(line) for line in text.split("\n") if line]
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
    def __init__(self, registry: Registry, config: Config | None = None) -> None:
        self.registry, self.config = registry, config

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        found, typing = completions(self.registry, document.text_before_cursor, self.config)
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


class EscapedDisplay(Processor):
    """Shows the line being typed through the one sanitiser: a pasted ESC, C1 or bidi control appears as
    ``\\x1b`` or ``\\u202e`` in the input line instead of reaching the terminal (prompt_toolkit itself
    only maps C0 and C1 controls, and passes bidi controls and separators through). Display only: the
    buffer keeps what was typed, and the dispatcher refuses it by position."""

    def apply_transformation(self, ti: TransformationInput) -> Transformation:
        fragments = explode_text_fragments(ti.fragments)
        if all(text.isprintable() for _style, text, *_rest in fragments):
            return Transformation(ti.fragments)
        shown: StyleAndTextTuples = []
        starts: list[int] = []  # where each source character starts on the screen
        at = 0
        for style, text, *_rest in fragments:
            starts.append(at)
            text = safe(text)
            shown.append((style, text))
            at += len(text)
        starts += [at, at + 1]  # the cursor may stand after the line

        def display_to_source(position: int) -> int:
            return max((i for i, start in enumerate(starts) if start <= position), default=0)

        return Transformation(shown, source_to_display=lambda i: starts[min(i, len(starts) - 1)],
                              display_to_source=display_to_source)


class Overflow:
    """Characters typed past the longest accepted line since the prompt appeared (they were dropped)."""

    def __init__(self) -> None:
        self.dropped = 0


def key_bindings(registry: Registry, out: IO[str], *, config: Config | None = None,
                 dispatcher: Dispatcher | None = None, parser: BoundedParser | None = None,
                 overflow: Overflow | None = None) -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("?")
    def _(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        before = buffer.document.text_before_cursor
        if _inside_quotes(before):
            buffer.insert_text("?")  # a literal '?' inside a quoted value
            return
        text = context_help(registry, before, config)

        def show() -> None:
            # Printed above the prompt, which is then drawn again with the line as it was; the echo of
            # the line is escaped (a pasted ESC ]2;... must not set the terminal's title).
            out.write(f"? {safe(before)}\n{safe(text, newlines=True)}\n")
            out.flush()

        run_in_terminal(show)

    if overflow is not None:
        full = Condition(lambda: len(get_app().current_buffer.text) >= MAX_LINE)

        @bindings.add(Keys.Any, filter=full)
        def _(event: KeyPressEvent) -> None:
            overflow.dropped += len(event.data)  # the line is refused at Enter, with its real length

    if dispatcher is not None:

        @bindings.add(Keys.BracketedPaste)
        def _(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            data = event.data.replace("\r\n", "\n").replace("\r", "\n")  # as prompt_toolkit's own paste
            length = max(parser.last_paste_length, len(data)) if parser is not None else len(data)
            if len(buffer.text) + length <= MAX_LINE:
                buffer.insert_text(data)
                return
            prefix, total = buffer.text + data[:AUDIT_PREFIX], len(buffer.text) + length

            def refuse() -> None:
                dispatcher.refuse_long(prefix, total)  # says so and audits the length and a masked prefix

            run_in_terminal(refuse)

    return bindings


def _bounded_input() -> tuple[Any, BoundedParser | None]:
    """Standard input for prompt_toolkit, with a paste parser that never holds a paste whole."""
    source = create_input()
    if not isinstance(source, Vt100Input):
        return source, None
    parser = BoundedParser(source.vt100_parser.feed_key_callback, MAX_LINE)
    source.vt100_parser = parser
    return source, parser


def build_session(ctx: Context, dispatcher: Dispatcher,
                  overflow: Overflow | None = None) -> tuple[PromptSession[str], MaskedHistory]:
    history = MaskedHistory(ctx.config.paths.history, dispatcher, ctx.config.shell.history_size)
    source, parser = _bounded_input()
    session: PromptSession[str] = PromptSession(
        input=source,
        input_processors=[EscapedDisplay()],
        history=history,
        completer=RegistryCompleter(ctx.registry, ctx.config),
        complete_while_typing=False,
        key_bindings=key_bindings(ctx.registry, ctx.env.stdout, config=ctx.config, dispatcher=dispatcher,
                                  parser=parser, overflow=overflow or Overflow()),
        enable_system_prompt=False,
        enable_open_in_editor=False,
        enable_suspend=False,
        enable_history_search=False,
        mouse_support=False,
    )
    return session, history


class _PromptSignals:
    """Turns a hang-up or SIGTERM at the prompt into the prompt application's orderly exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._exit: Callable[[], None] | None = None

    def __call__(self, signum: int) -> None:
        self.signum = signum
        if self._exit is not None:
            self._exit()

    def attach(self) -> None:
        """Called as the prompt starts (its event loop runs): from now on a signal ends the prompt."""
        import asyncio

        app, loop = get_app(), asyncio.get_running_loop()

        def exit_prompt() -> None:
            if not app.is_done and self.signum is not None:
                app.exit(exception=interrupts.HangUp(self.signum))

        def from_the_handler() -> None:  # the loop may be anywhere: schedule, do not act here
            loop.call_soon_threadsafe(exit_prompt)

        self._exit = from_the_handler
        if self.signum is not None:  # arrived while the prompt was being set up
            exit_prompt()


def _pre_run(timeout_s: int, signals: _PromptSignals) -> Callable[[], None]:
    """The prompt's start hook: signals end it cleanly; ``timeout_s`` without a key press ends it too."""

    def pre_run() -> None:
        signals.attach()
        if not timeout_s:
            return
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


def one_iteration(ctx: Context, dispatcher: Dispatcher, session: PromptSession[str],
                  overflow: Overflow | None = None) -> bool:
    """Read one line and run it. Returns False when the session should end."""
    try:
        hostname = backend_for(ctx.config).get()
    except Exception:  # the prompt must always come up, whatever the backend does
        hostname = ctx.config.node.default_hostname
    timeout = ctx.config.shell.idle_timeout_s
    overflow = overflow or Overflow()
    overflow.dropped = 0
    signals = _PromptSignals()
    try:
        with interrupts.diverted(signals):
            line = session.prompt(
                ctx.config.shell.prompt.format(hostname=safe(hostname)),
                pre_run=_pre_run(timeout, signals),
            )
    except interrupts.HangUp:
        return False  # the terminal went away, or SIGTERM: nothing more to read
    except KeyboardInterrupt:
        return True  # Ctrl-C at the prompt clears the line
    except EOFError:
        return False  # Ctrl-D on an empty line logs out
    except IdleTimeout:
        ctx.env.stdout.write(f"\nidle for {timeout} s: logged out\n")
        return False
    if overflow.dropped:
        dispatcher.refuse_long(line[:AUDIT_PREFIX], len(line) + overflow.dropped)
    else:
        dispatcher.run_line(line)
    return not ctx.logout


def run_repl(ctx: Context) -> int:
    # A login shell has no job-control parent to resume it: a stopped shell would hang the session.
    for sig in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    dispatcher = Dispatcher(ctx, "interactive")
    overflow = Overflow()
    session, history = build_session(ctx, dispatcher, overflow)
    ctx.history = history.entries
    ctx.env.stdout.write(BANNER + "\n")
    while one_iteration(ctx, dispatcher, session, overflow):
        pass
    signum = interrupts.received()
    return ExitStatus.OK if signum is None else interrupts.status_for(signum)
