"""``appliance-shell``: the login shell of the appliance user.

Modes, all through one :class:`~appliance.shell.dispatch.Dispatcher`:

* ``appliance-shell -c "COMMAND LINE"`` (how sshd runs ``ssh ems@vm 'ha get nodes'``), or
  ``$SSH_ORIGINAL_COMMAND``: exactly one command; the exit status is the command's.
* standard input is not a terminal: batch, one command per line, stop at the first failure.
* otherwise: the interactive prompt_toolkit REPL.

File transfer requests (sftp, scp, rsync) are refused silently with status 1: their clients would
choke on text, and there is nothing to transfer to.

Input is read as UTF-8 with invalid bytes kept as lone surrogates (the dispatcher refuses them by
position), output is never refused by the encoder, and SIGHUP/SIGTERM interrupt a command like
Ctrl-C (:mod:`appliance.interrupts`).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence

from appliance import __version__, interrupts
from appliance.config import Config, config_path, environ_user, load_config
from appliance.errors import ApplianceError, CommandFailed, ExitStatus, UsageError
from appliance.masking import mask_line
from appliance.shell.audit import AuditLog, AuditRecord
from appliance.shell.context import Context
from appliance.shell.dispatch import AUDIT_PREFIX, Dispatcher
from appliance.shell.env import Env, read_line
from appliance.shell.render import render_error
from appliance.shell.tokenize import MAX_LINE
from commands import build_registry

USAGE = """usage: appliance-shell [--config PATH] [-c COMMAND]

The appliance's restricted shell.
  -c COMMAND     run one command line and exit with its status
  --config PATH  configuration file (default $APPLIANCE_CONFIG, else /etc/appliance/appliance.toml)
  --help         show this help; inside the shell, 'help' lists the commands
  --version      print the product version
Without -c, commands are read from standard input (one per line) when it is not a terminal.
"""

# Programs an SSH client asks for when it wants a file transfer rather than a command.
_TRANSFER = ("sftp-server", "internal-sftp", "scp", "rsync", "git-upload-pack", "git-receive-pack")


def _is_transfer(command: str) -> bool:
    first = command.strip().split(" ", 1)[0]
    return first.rsplit("/", 1)[-1] in _TRANSFER


def _parse_argv(argv: Sequence[str]) -> tuple[str | None, str | None]:
    config: str | None = None
    command: str | None = None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "-c" and args:
            command = args.pop(0)
        elif arg == "--config" and args:
            config = args.pop(0)
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif arg in ("-h", "--help"):
            raise _Exit(USAGE, ExitStatus.OK, to_stdout=True)
        elif arg == "--version":
            raise _Exit(f"appliance-shell {__version__}\n", ExitStatus.OK, to_stdout=True)
        else:
            raise _Exit(f"error: unexpected argument {arg!r}\n{USAGE}", ExitStatus.USAGE)
    return config, command


class _Exit(Exception):
    def __init__(self, text: str, status: ExitStatus, to_stdout: bool = False) -> None:
        self.text, self.status, self.to_stdout = text, status, to_stdout


def run(argv: Sequence[str], env: Env) -> int:
    """Run the shell with ``argv`` (without the program name) in ``env``; return the exit status."""
    try:
        config_arg, command = _parse_argv(argv)
    except _Exit as stop:
        (env.stdout if stop.to_stdout else env.stderr).write(stop.text)
        return stop.status
    if command is None and env.environ.get("SSH_ORIGINAL_COMMAND"):
        command = env.environ["SSH_ORIGINAL_COMMAND"]
    transfer = command is not None and _is_transfer(command)
    try:
        config = load_config(config_path(config_arg, env.environ))
    except ApplianceError as exc:
        if transfer:
            return ExitStatus.FAILED  # silent, as below
        render_error(exc, env.stderr)
        return ExitStatus.USAGE if isinstance(exc, UsageError) else ExitStatus.FAILED
    if transfer:
        assert command is not None
        _audit_refused_transfer(config, env, command)
        return ExitStatus.FAILED
    registry = build_registry()
    if command is not None:
        ctx = Context(config, env, registry, interactive=False)
        return Dispatcher(ctx, "command").run_line(command)
    if not env.stdin_isatty:
        ctx = Context(config, env, registry, interactive=False)
        return run_batch(Dispatcher(ctx, "batch"))
    from appliance.shell.repl import run_repl  # deferred: prompt_toolkit is heavy, and -c never needs it

    return run_repl(Context(config, env, registry, interactive=True))


def _audit_refused_transfer(config: Config, env: Env, command: str) -> None:
    AuditLog(config, env.stderr).write(AuditRecord(
        time=env.clock.now().isoformat(), user=environ_user(env.environ), origin=env.origin, mode="command",
        line=mask_line(command[:AUDIT_PREFIX], ()), status=int(ExitStatus.FAILED), duration_ms=0, accepted=False,
        outcome="refused", length=len(command) if len(command) > AUDIT_PREFIX else None,
    ))


def run_batch(dispatcher: Dispatcher) -> int:
    """One command per line; blank lines and ``#`` comments skipped; stop at the first failure, naming
    its line number. Each line is read with a bound: an over-long one is refused without being held."""
    number = 0
    while (line := read_line(dispatcher.ctx.env.stdin, MAX_LINE)) is not None:
        number += 1
        where = f"line {number}"
        if line.too_long:
            status = dispatcher.refuse_long(line.text[:AUDIT_PREFIX], line.length, where=where)
        else:
            status = dispatcher.run_line(line.text[:-1] if line.text.endswith("\r") else line.text, where=where)
        if status != ExitStatus.OK:
            if not dispatcher.reported:
                render_error(CommandFailed(f"the command failed (exit status {int(status)}); the lines after it "
                                           "were not run"), dispatcher.ctx.env.stderr, where=where)
            return status
        if dispatcher.ctx.logout:
            break  # exit, quit, logout
    return ExitStatus.OK


def main() -> None:
    # Invalid UTF-8 on standard input arrives as lone surrogates, which the dispatcher refuses by
    # position, instead of a UnicodeDecodeError; nothing printed can fail to encode.
    for stream, errors in ((sys.stdin, "surrogateescape"), (sys.stdout, "backslashreplace"),
                           (sys.stderr, "backslashreplace")):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=errors)
    interrupts.install()
    env = Env()
    try:
        status = run(sys.argv[1:], env)
        env.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`... | head`); exit quietly instead of printing a traceback.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = ExitStatus.FAILED
    except KeyboardInterrupt:
        signum = interrupts.received()
        status = ExitStatus.INTERRUPTED if signum is None else ExitStatus(interrupts.status_for(signum))
    sys.exit(status)
