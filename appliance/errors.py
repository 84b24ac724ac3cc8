"""One exception tree for the whole product, with user-facing messages.

Every error a user can see is an :class:`ApplianceError`: a one-line ``message`` saying what failed and
why, an optional ``hint`` saying what to do, and the exit status it maps to. The shell prints
``error: <message>`` and ``hint: <hint>`` on stderr; anything that is *not* an ``ApplianceError``
is a bug, logged with its traceback and shown to the user only as "internal error".

Messages must never contain a secret value: callers build them from names, hosts and ports only.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Exit statuses of ``appliance-shell``; documented in the README and stable."""

    OK = 0
    FAILED = 1  # the command ran and failed (including internal errors)
    USAGE = 2  # usage or validation error: nothing was executed
    NOT_CONFIRMED = 3  # confirmation needed but not given (no terminal and no --yes, or answered no)
    AGENT_DOWN = 4  # the node's agent did not answer on its control socket (stopped, frozen)
    INTERRUPTED = 130  # Ctrl-C / SIGINT


class ApplianceError(Exception):
    """Base of every user-facing error.

    :param message: one line: what failed and why (no secrets).
    :param hint: optional one line: what the user can do about it.
    """

    status: ExitStatus = ExitStatus.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ApplianceError):
    """The command line is malformed or a value fails validation; nothing was executed."""

    status = ExitStatus.USAGE


class ConfirmationRefused(ApplianceError):
    """A state-changing command was not confirmed (answered no, or no terminal and no ``--yes``)."""

    status = ExitStatus.NOT_CONFIRMED


class ConfigError(ApplianceError):
    """The configuration file is missing or invalid; the message names the file and the key."""


class NotConfigured(ApplianceError):
    """The node lacks something the command needs (not initialised, no cluster, no key...)."""


class Unavailable(ApplianceError):
    """A transient failure: a database, peer or service cannot be reached now. Retrying may help."""


class AgentDown(ApplianceError):
    """The node's agent does not answer on its control socket (not running, frozen); scripts may retry."""

    status = ExitStatus.AGENT_DOWN


class PermissionDenied(ApplianceError):
    """The operation is not allowed (privileges, file ownership or mode)."""


class Conflict(ApplianceError):
    """The request conflicts with the current state (another primary, another cluster, a lock held)."""


class CommandFailed(ApplianceError):
    """A command ran and reported failure (for example ping got no reply); the message says so."""


class InternalError(ApplianceError):
    """A bug or an impossible state; details are in the log."""


class FatalError(ApplianceError):
    """The agent must exit (it cannot continue safely)."""
