"""The one dispatcher behind every mode (interactive, ``-c``, batch).

``run_line`` takes a raw command line and returns an exit status; it never raises. In between: the
line's length is checked before anything else touches it (an over-long line is refused and audited as
its length and a masked prefix, never masked whole), a recalled history line whose secret was masked
is recognised, characters are checked, words split, the command matched and typed, secrets asked for
(bounded, with the prompt's idle timeout), the command's pre-flight shown and the command confirmed if
it changes the node, the handler run and its result rendered, and the audit records written with
secrets masked: one when a state-changing command starts, one when any line ends (finished, failed,
interrupted, refused).

Ctrl-C, a hang-up (SIGHUP) and SIGTERM interrupt a command the same way (:mod:`appliance.interrupts`):
the handler's own clean-up runs, the line is audited as interrupted, and after a hang-up or SIGTERM
the session ends.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from appliance import interrupts
from appliance.config import environ_user
from appliance.errors import AgentDown, ApplianceError, ConfirmationRefused, ExitStatus, UsageError
from appliance.masking import MASK, mask_line
from appliance.safetext import is_safe, safe
from appliance.shell.audit import AuditLog, AuditRecord
from appliance.shell.context import Context
from appliance.shell.env import read_line
from appliance.shell.parse import Invocation, parse_words
from appliance.shell.render import INTERNAL_ERROR, render, render_binary, render_error, render_stream
from appliance.shell.result import Binary, Stream
from appliance.shell.spec import CommandSpec, Param
from appliance.shell.tokenize import MAX_LINE, Word, is_comment, scan_words, split_flag, split_words

if TYPE_CHECKING:
    from appliance.agentctl.client import AgentClient

CONFIRM_QUESTION = "Do you want to continue? (y/n) "
AUDIT_PREFIX = 256  # how much of an over-long line the audit keeps (masked)
_ANSWER_MAX = 64  # a y/n answer longer than this is not one
SWITCH_SECRET_MAX = 1024  # what a reads_secret switch accepts


class Dispatcher:
    def __init__(self, ctx: Context, mode: str) -> None:
        self.ctx = ctx
        self.mode = mode  # interactive | command | batch
        self.audit = AuditLog(ctx.config, ctx.env.stderr)
        self._secret_flags = ctx.registry.secret_flags()
        self._all_flags = ctx.registry.all_flags()
        self._askable = {p.name: p for s in ctx.registry.specs for p in s.all_params if p.ask}
        self._secrets_seen: list[str] = []
        self._record: dict[str, Any] = {}
        self.reported = False  # the last line's failure was explained on stderr

    def mask(self, line: str) -> str:
        return mask_line(line, self._secret_flags, self._all_flags)

    # --- the one entry point ----------------------------------------------------------------------

    def run_line(self, line: str, *, where: str | None = None) -> ExitStatus:
        """Run one command line; print its output or error; audit it; return its exit status.

        :param where: prefixed to an error (``line 3`` in batch mode).
        """
        if len(line) > MAX_LINE:
            return self.refuse_long(line[:AUDIT_PREFIX], len(line), where=where)
        if not line.strip() or is_comment(line):
            return ExitStatus.OK
        clock = self.ctx.env.clock
        started_wall, started = clock.now(), clock.monotonic()
        self._record = {"time": started_wall.isoformat(), "line": line, "started": started}
        accepted = interrupted = False
        self.reported = False
        self._secrets_seen = []
        try:
            self._refuse_masked_secret(line)
            words = split_words(line)
            invocation = parse_words(self.ctx.registry, words)
            accepted = True
            status = self._execute(invocation, words)
        except ApplianceError as exc:
            self._error(exc, where)
            status = exc.status
        except KeyboardInterrupt:
            status, interrupted = self._interrupted(), True
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EIO):
                status = self._internal_error(line, where)
            else:  # the terminal or the SSH channel went away while we wrote to it
                interrupts.output_lost()
                status, interrupted = self._interrupted(), True
        except Exception:  # a bug: the user gets one line, the log gets the traceback
            status = self._internal_error(line, where)
        finally:
            self._secrets_seen = []
        if interrupts.received() is not None:
            self.ctx.logout = True  # the session hung up or was told to stop: nothing more is read
        self._audit(status, accepted=accepted, outcome=_outcome(status, accepted, interrupted))
        return status

    def refuse_long(self, prefix: str, length: int, *, where: str | None = None) -> ExitStatus:
        """Refuse a line of ``length`` characters of which only ``prefix`` was kept; audit its length and
        the prefix, masked (the rest was never held, so it cannot be masked or leak)."""
        self._error(UsageError(f"the command line is too long ({length} characters, at most {MAX_LINE}); "
                               "nothing was run", hint="type a shorter line"), where)
        clock = self.ctx.env.clock
        self._record = {"time": clock.now().isoformat(), "line": prefix[:AUDIT_PREFIX],
                        "started": clock.monotonic(), "length": length}
        self._audit(ExitStatus.USAGE, accepted=False, outcome="refused")
        return ExitStatus.USAGE

    # --- steps ------------------------------------------------------------------------------------

    def _execute(self, inv: Invocation, words: list[Word]) -> ExitStatus:
        spec, args = inv.spec, inv.args
        if spec.interactive_only and not self.ctx.interactive:
            raise UsageError(f"'{spec.name}' is only available in the interactive shell")
        values: dict[str, Any] = dict(args)
        for param in spec.all_params:
            if param.secret:
                values[param.name] = self._secret_value(param, values[param.name])
                if values[param.name]:
                    self._secrets_seen.append(values[param.name])
            elif param.reads_secret and values[param.name]:
                values[param.name] = self._switch_secret(param)
                self._secrets_seen.append(values[param.name])
        args = type(args)(values, args.given)
        asking = spec.confirm and not args.get("yes")
        agent = self._agent(spec)
        secrets = {p.name: values[p.name] for p in spec.all_params
                   if (p.secret or p.reads_secret) and isinstance(values[p.name], str)}
        sent = [(w.text, w.quoted) for w in words]
        if spec.preflight is not None:
            preview = agent.preview(sent, secrets) if agent is not None else spec.preflight(self.ctx, args)
            if preview is not None:
                if preview.text and (not preview.with_question or (asking and self._can_ask())):
                    self.ctx.env.stdout.write(safe(preview.text.rstrip("\n"), newlines=True) + "\n")
                    self.ctx.env.stdout.flush()
                args = type(args)(values, args.given, prepared=preview.prepared)
        if asking:
            self._confirm(spec.name)
        if spec.changes_state:
            self._audit(None, accepted=True, outcome="started", event="start")
        if agent is not None:  # its answer is printed as it comes, as the renderer would print it here
            try:
                return agent.run(sent, secrets, args.prepared, self.ctx.env.stdout)
            except AgentDown as down:
                # A read is most wanted when the agent is down: where this account can read the
                # credentials itself (root on the appliance, the sandbox's one user), it reads directly.
                if spec.changes_state or not self._credentials_readable():
                    raise
                self.ctx.env.stderr.write(f"note: {safe(down.message)}; reading the database directly instead\n")
                self.ctx.env.stderr.flush()
        outcome = spec.handler(self.ctx, args)
        if isinstance(outcome, Stream):
            return render_stream(outcome, self.ctx.env.stdout)
        if isinstance(outcome, Binary):
            return render_binary(outcome, self.ctx.env.stdout)
        render(outcome, self.ctx.env.stdout, as_json=bool(args.get("json")))
        self.ctx.env.stdout.flush()
        return outcome.status

    def _agent(self, spec: CommandSpec) -> AgentClient | None:
        """The agent's client when the node's agent runs this command (:mod:`appliance.agentctl`): it holds
        the credentials, the login user does not. The question stays here, with the user."""
        if not spec.via_agent or self.ctx.config.agent.control_socket is None:
            return None
        from appliance.agentctl.client import AgentClient  # only commands that need it pay for it

        return AgentClient(self.ctx.config, changes_state=spec.changes_state)

    def _credentials_readable(self) -> bool:
        from appliance.credentials import backend_for  # only when the agent is down

        try:
            backend_for(self.ctx.config).check_ready()
        except (ApplianceError, OSError):
            return False
        return True

    def _ask_secret(self, option: str, limit: int) -> str:
        """Ask for ``option``'s secret without echo, with the prompt's idle timeout."""
        timeout = self.ctx.config.shell.idle_timeout_s
        value = self.ctx.env.getpass(f"{option[2:]} (not shown): ", float(timeout), limit)
        if value is None:
            self._idle_logout()
            raise ConfirmationRefused(f"no answer within {timeout} s: nothing was changed")
        return value

    def _switch_secret(self, param: Param) -> str:
        """The secret a ``reads_secret`` switch stands for: asked without echo, or one line of standard
        input when there is no terminal (never in batch mode: standard input holds the commands)."""
        env, option = self.ctx.env, param.option
        value: str | None
        if self._can_ask():
            value = self._ask_secret(option, SWITCH_SECRET_MAX)
        elif self.mode == "batch":
            raise UsageError(f"{option} cannot read its secret in batch mode (standard input holds the commands)",
                             hint="run it on its own: ssh ems@vm '<command> --yes' < secret-file")
        else:
            line = read_line(env.stdin, SWITCH_SECRET_MAX)
            value = None if line is None or line.too_long else line.text
        if not value or not is_safe(value):
            raise UsageError(f"{option}: no usable secret was entered (1-{SWITCH_SECRET_MAX} characters, no "
                             "control characters)", hint="type it when asked, or write it on standard input")
        return value

    def _refuse_masked_secret(self, line: str) -> None:
        """A line recalled from history carries ``********`` where its secret was: say so, plainly."""
        if MASK not in line:
            return
        words = scan_words(line)
        for index, word in enumerate(words):
            split = split_flag(word.text) if not word.quoted else None
            if split is None or split[0] not in self._secret_flags:
                continue
            name, tail = split
            nxt = words[index + 1] if index + 1 < len(words) else None
            if tail == "=" + MASK or (not tail and nxt is not None and nxt.text == MASK and not nxt.quoted):
                ask = self._askable.get(name)
                raise UsageError(
                    f"the value of --{name} was masked ({MASK}) when this line was stored in the history; "
                    "type the secret again",
                    hint=f"replace {MASK} with the value" + (f", or leave --{name} out to be asked for it"
                                                             if ask is not None else ""),
                )

    def _secret_value(self, param: Param, value: str | None) -> str | None:
        env, option = self.ctx.env, param.option
        assert param.type is not None
        limit = getattr(param.type, "max_len", 1024)
        if value == "-":
            if self.mode == "batch":
                raise UsageError(
                    f"{option} - cannot read standard input in batch mode (it holds the commands)"
                )
            line = read_line(env.stdin, limit)
            if line is None or not line.text:
                raise UsageError(f"{option} -: nothing was read from standard input")
            if line.too_long:
                raise UsageError(f"{option} -: the value on standard input is too long "
                                 f"({line.length} characters, at most {limit})")
            value = line.text
        elif value is None and param.ask:
            if not env.stdin_isatty or self.mode == "batch":
                raise UsageError(
                    f"{option} is required when there is no terminal to ask on",
                    hint=f"pass {option} - and write the value on standard input",
                )
            value = self._ask_secret(option, limit)
            if not value:
                raise UsageError(f"{option}: no value entered")
        if value is None:
            return None
        if not is_safe(value):
            # Named by position only: the value is a secret.
            raise UsageError(f"{option}: the value holds a control character or invalid UTF-8",
                             hint="type the secret again, in UTF-8, without control characters")
        try:
            return str(param.type.parse(value))
        except ValueError as exc:
            raise UsageError(f"{option} {exc}") from None

    def _can_ask(self) -> bool:
        return self.ctx.env.stdin_isatty and self.mode != "batch"

    def _confirm(self, name: str) -> None:
        env = self.ctx.env
        if not self._can_ask():
            raise ConfirmationRefused(
                f"'{name}' changes the node and needs confirmation, but there is no terminal to ask on",
                hint="add --yes to run it from a script",
            )
        env.stdout.write(CONFIRM_QUESTION)
        env.stdout.flush()
        timeout = self.ctx.config.shell.idle_timeout_s
        if timeout and not _readable_within(env.stdin, timeout):
            # An unattended question must not stay open for whoever comes to the terminal later.
            env.stdout.write("\n")
            self._idle_logout()
            raise ConfirmationRefused(f"no answer within {timeout} s: nothing was changed")
        answer = read_line(env.stdin, _ANSWER_MAX)
        if answer is None:
            env.stdout.write("\n")
        if answer is None or answer.too_long or answer.text.strip().lower() not in ("y", "yes"):
            raise ConfirmationRefused("not confirmed: nothing was changed")

    def _idle_logout(self) -> None:
        self.ctx.logout = self.mode == "interactive"

    # --- outcomes ---------------------------------------------------------------------------------

    def _error(self, exc: ApplianceError, where: str | None) -> None:
        render_error(exc, self.ctx.env.stderr, where=where)
        self.reported = True

    def _interrupted(self) -> ExitStatus:
        signum = interrupts.received()
        if signum is None:
            self._say("\ninterrupted\n")
            return ExitStatus.INTERRUPTED
        # A hang-up or SIGTERM: the command was interrupted like Ctrl-C, and the session ends with it.
        self.ctx.logout = True
        self._say("\ninterrupted: the session is ending\n")
        return ExitStatus(interrupts.status_for(signum))

    def _say(self, text: str) -> None:
        try:
            self.ctx.env.stderr.write(text)
            self.ctx.env.stderr.flush()
        except OSError:
            interrupts.output_lost()
        self.reported = True

    def _internal_error(self, line: str, where: str | None) -> ExitStatus:
        self._log_internal_error(line)
        self._error(INTERNAL_ERROR, where)
        return ExitStatus.FAILED

    def _audit(self, status: int | None, *, accepted: bool, outcome: str, event: str = "end") -> None:
        record = self._record
        if "masked" not in record:
            record["masked"] = self.mask(record["line"])
        self.audit.write(
            AuditRecord(
                time=record["time"],
                user=_user(self.ctx.env.environ),
                origin=self.ctx.env.origin,
                mode=self.mode,
                line=record["masked"],
                status=None if status is None else int(status),
                duration_ms=int((self.ctx.env.clock.monotonic() - record["started"]) * 1000),
                accepted=accepted,
                event=event,
                outcome=outcome,
                length=record.get("length"),
            )
        )

    def _log_internal_error(self, line: str) -> None:
        import traceback

        text = "".join(traceback.format_exc())
        for secret in self._secrets_seen:
            text = text.replace(secret, MASK)
        _ensure_log(self.ctx)
        import logging

        logging.getLogger(__name__).error("internal error running %s:\n%s", safe(self.mask(line)),
                                          safe(text, newlines=True))


def _outcome(status: int, accepted: bool, interrupted: bool) -> str:
    if interrupted or status in (ExitStatus.INTERRUPTED, ExitStatus.HANGUP, ExitStatus.TERMINATED):
        return "interrupted"
    if not accepted or status in (ExitStatus.USAGE, ExitStatus.NOT_CONFIRMED):
        return "refused"
    return "finished" if status == ExitStatus.OK else "failed"


def _readable_within(stream: Any, seconds: float) -> bool:
    """True if ``stream`` has input within ``seconds`` (always True for streams without a descriptor)."""
    import select

    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return True
    return bool(select.select([fd], [], [], seconds)[0])


def _user(environ: Any) -> str:
    return environ_user(environ)


def _ensure_log(ctx: Context) -> None:
    """Attach the diagnostic log file (0600) the first time something needs logging."""
    import logging  # not at import time: most commands never log, and start-up must stay fast

    root = logging.getLogger()
    if any(getattr(h, "_appliance", False) for h in root.handlers):
        return
    path = ctx.config.paths.log
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(fd)
        handler = logging.FileHandler(path)
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler._appliance = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
