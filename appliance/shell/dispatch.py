"""The one dispatcher behind every mode (interactive, ``-c``, batch).

``run_line`` takes a raw command line and returns an exit status; it never raises. In between:
characters are checked, words split, the command matched and typed, secrets asked for, the
command confirmed if it changes the node, the handler run, its result rendered, and one audit
record written with secrets masked.
"""

from __future__ import annotations

import os
from typing import Any

from appliance.config import environ_user
from appliance.errors import ApplianceError, ConfirmationRefused, ExitStatus, UsageError
from appliance.masking import MASK, mask_line
from appliance.shell.audit import AuditLog, AuditRecord
from appliance.shell.context import Context
from appliance.shell.parse import Invocation, parse_words
from appliance.shell.render import INTERNAL_ERROR, render, render_binary, render_error, render_stream
from appliance.shell.result import Binary, Stream
from appliance.shell.spec import Args, CommandSpec
from appliance.shell.tokenize import Word, is_comment, split_words

CONFIRM_QUESTION = "Do you want to continue? (y/n) "


class Dispatcher:
    def __init__(self, ctx: Context, mode: str) -> None:
        self.ctx = ctx
        self.mode = mode  # interactive | command | batch
        self.audit = AuditLog(ctx.config, ctx.env.stderr)
        self._secret_flags = ctx.registry.secret_flags()
        self._all_flags = ctx.registry.all_flags()
        self._secrets_seen: list[str] = []

    def mask(self, line: str) -> str:
        return mask_line(line, self._secret_flags, self._all_flags)

    # --- the one entry point ----------------------------------------------------------------------

    def run_line(self, line: str) -> ExitStatus:
        """Run one command line; print its output or error; audit it; return its exit status."""
        if not line.strip() or is_comment(line):
            return ExitStatus.OK
        clock = self.ctx.env.clock
        started_wall, started = clock.now(), clock.monotonic()
        accepted = False
        self._secrets_seen = []
        try:
            words = split_words(line)
            invocation = parse_words(self.ctx.registry, words)
            accepted = True
            status = self._execute(invocation, words)
        except ApplianceError as exc:
            render_error(exc, self.ctx.env.stderr)
            status = exc.status
        except KeyboardInterrupt:
            self.ctx.env.stderr.write("\ninterrupted\n")
            status = ExitStatus.INTERRUPTED
        except BrokenPipeError:
            raise
        except Exception:  # a bug: the user gets one line, the log gets the traceback
            self._log_internal_error(line)
            render_error(INTERNAL_ERROR, self.ctx.env.stderr)
            status = ExitStatus.FAILED
        finally:
            self._secrets_seen = []
        self.audit.write(
            AuditRecord(
                time=started_wall.isoformat(),
                user=_user(self.ctx.env.environ),
                origin=self.ctx.env.origin,
                mode=self.mode,
                line=self.mask(line),
                status=int(status),
                duration_ms=int((clock.monotonic() - started) * 1000),
                accepted=accepted,
            )
        )
        return status

    # --- steps ------------------------------------------------------------------------------------

    def _execute(self, inv: Invocation, words: list[Word]) -> ExitStatus:
        spec, args = inv.spec, inv.args
        if spec.interactive_only and not self.ctx.interactive:
            raise UsageError(f"'{spec.name}' is only available in the interactive shell")
        values: dict[str, Any] = dict(args)
        for param in spec.all_params:
            if param.secret:
                values[param.name] = self._secret_value(param.option, values[param.name], param.ask)
                if values[param.name]:
                    self._secrets_seen.append(values[param.name])
        args = type(args)(values, args.given)
        if spec.via_agent and self.ctx.config.agent.control_socket is not None:
            secrets = {p.name: values[p.name] for p in spec.all_params if p.secret and values[p.name] is not None}
            return self._through_agent(spec, args, [(w.text, w.quoted) for w in words], secrets)
        if spec.preflight is not None:
            preview = spec.preflight(self.ctx, args)
            if preview is not None:
                if preview.text:
                    self.ctx.env.stdout.write(preview.text.rstrip("\n") + "\n")
                    self.ctx.env.stdout.flush()
                args = type(args)(values, args.given, prepared=preview.prepared)
        if spec.confirm and not args.get("yes"):
            self._confirm(spec.name)
        outcome = spec.handler(self.ctx, args)
        if isinstance(outcome, Stream):
            return render_stream(outcome, self.ctx.env.stdout)
        if isinstance(outcome, Binary):
            return render_binary(outcome, self.ctx.env.stdout)
        render(outcome, self.ctx.env.stdout, as_json=bool(args.get("json")))
        self.ctx.env.stdout.flush()
        return outcome.status

    def _through_agent(self, spec: CommandSpec, args: Args, words: list[tuple[str, bool]],
                       secrets: dict[str, str]) -> ExitStatus:
        """The same steps, with the pre-flight and the handler run by the node's agent over its control
        socket (:mod:`appliance.agentctl`); the question stays here, with the user."""
        from appliance.agentctl.client import AgentClient  # only commands that need it pay for it

        client = AgentClient(self.ctx.config, changes_state=spec.changes_state)
        token = None
        if spec.preflight is not None:
            text, token = client.preview(words, secrets)
            if text:
                self.ctx.env.stdout.write(text.rstrip("\n") + "\n")
                self.ctx.env.stdout.flush()
        if spec.confirm and not args.get("yes"):
            self._confirm(spec.name)
        return client.run(words, secrets, token, self.ctx.env.stdout)

    def _secret_value(self, option: str, value: str | None, ask: bool) -> str | None:
        env = self.ctx.env
        if value == "-":
            if self.mode == "batch":
                raise UsageError(
                    f"{option} - cannot read standard input in batch mode (it holds the commands)"
                )
            line = env.stdin.readline()
            secret = line[:-1] if line.endswith("\n") else line
            if not secret:
                raise UsageError(f"{option} -: nothing was read from standard input")
            return secret
        if value is None and ask:
            if not env.stdin_isatty or self.mode == "batch":
                raise UsageError(
                    f"{option} is required when there is no terminal to ask on",
                    hint=f"pass {option} - and write the value on standard input",
                )
            secret = env.getpass(f"{option[2:]} (not shown): ")
            if not secret:
                raise UsageError(f"{option}: no value entered")
            return secret
        return value

    def _confirm(self, name: str) -> None:
        env = self.ctx.env
        if not env.stdin_isatty or self.mode == "batch":
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
            self.ctx.logout = self.mode == "interactive"
            raise ConfirmationRefused(f"no answer within {timeout} s: nothing was changed")
        answer = env.stdin.readline()
        if not answer:
            env.stdout.write("\n")
        if answer.strip().lower() not in ("y", "yes"):
            raise ConfirmationRefused("not confirmed: nothing was changed")

    def _log_internal_error(self, line: str) -> None:
        import traceback

        text = "".join(traceback.format_exc())
        for secret in self._secrets_seen:
            text = text.replace(secret, MASK)
        _ensure_log(self.ctx)
        import logging

        logging.getLogger(__name__).error("internal error running %r:\n%s", self.mask(line), text)


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
