"""How a running command is interrupted: Ctrl-C (SIGINT), a hang-up (SIGHUP) and SIGTERM take one path.

sshd sends SIGHUP when the client goes away; systemd and ``kill`` send SIGTERM. Python's default for
both is to die on the spot, with no ``finally`` and no audit record, which would leave a ``redirect`` cut
after its registration commit with the node's services stopped. :func:`install` makes both raise
:class:`HangUp`, a :class:`KeyboardInterrupt`, so every command's Ctrl-C handling (a rollback, stopping
a child) runs for them too, and the dispatcher audits the command as interrupted.

On SIGHUP the terminal is gone: a write to it fails (EIO, EPIPE), and a failing write in the middle of a
rollback would cut the rollback short. So the first SIGHUP points standard input, output and error at
``/dev/null`` before anything else runs; the same happens when a write finds the output gone without a
signal (:func:`output_lost`). Only the first signal interrupts: a second one while the command cleans
up is recorded and ignored, and inside :func:`shielded` (an undo in progress) none interrupts at all.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class HangUp(KeyboardInterrupt):
    """The session went away under a command (SIGHUP), or the shell was told to stop (SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _State:
    signum: int | None = None  # the first SIGHUP/SIGTERM seen (or SIGHUP for output found gone)
    shield = 0  # > 0 while an undo runs: signals are recorded, not raised
    divert: Callable[[int], None] | None = None  # set while an event loop runs (the prompt): told, not raised


_state = _State()


def received() -> int | None:
    """The signal that ended the session (SIGHUP or SIGTERM), if one did."""
    return _state.signum


def status_for(signum: int) -> int:
    """The exit status of a command or shell ended by ``signum``: 128 + the signal number, as shells do."""
    return 128 + signum


def install() -> None:
    """Make SIGHUP and SIGTERM raise :class:`HangUp` in the main thread (the shell's process entry)."""
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def _on_signal(signum: int, frame: Any) -> None:
    first = _state.signum is None
    if first:
        _state.signum = signum
        if signum == signal.SIGHUP:
            _detach()
    if first and _state.divert is not None:
        _state.divert(signum)
    elif first and not _state.shield:
        raise HangUp(signum)


@contextmanager
def diverted(tell: Callable[[int], None]) -> Iterator[None]:
    """For the block, a SIGHUP/SIGTERM calls ``tell(signum)`` instead of raising :class:`HangUp`.

    An exception raised by a signal handler inside an asyncio event loop lands in whatever callback
    was running and is reported as "Unhandled exception in event loop"; the prompt asks its
    application to exit instead.
    """
    previous, _state.divert = _state.divert, tell
    try:
        yield
    finally:
        _state.divert = previous


def output_lost() -> HangUp:
    """The terminal or SSH channel went away (a write failed): behave as on SIGHUP; return what to raise."""
    if _state.signum is None:
        _state.signum = signal.SIGHUP
    _detach()
    return HangUp(_state.signum)


def _detach() -> None:
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    for fd in (0, 1, 2):
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


@contextmanager
def shielded() -> Iterator[None]:
    """Nothing interrupts the block: Ctrl-C is ignored, SIGHUP/SIGTERM only recorded (see :func:`received`).

    For undo steps: a half-done rollback is worse than a wait. Outside the main thread signals cannot
    be changed; the block then runs as it is.
    """
    _state.shield += 1
    try:
        with sigint_handled(signal.SIG_IGN):
            yield
    finally:
        _state.shield -= 1


@contextmanager
def sigint_handled(handler: Callable[[int, Any], Any] | int) -> Iterator[None]:
    """Handle SIGINT (Ctrl-C) with ``handler`` (or ``signal.SIG_IGN``) for the block, then restore it.

    Outside the main thread signals cannot be changed; the block then runs with the handler as it was.
    """
    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
