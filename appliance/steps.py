"""A change made of steps, each recording how to undo it: the journal, the rollback and the progress lines.

Shared by ``redirect``, ``ha join`` (which is a redirect as a standby) and ``ha leave``: every step that
changes something records its undo; on a failure, Ctrl-C, a hang-up or SIGTERM the undo steps run in
reverse, shielded from all three, and one error says what failed, what was rolled back and what to do.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from appliance.clock import Clock
from appliance.errors import ApplianceError, CommandFailed
from appliance.interrupts import HangUp, shielded


@dataclass
class Journal:
    """The undo steps of what was done so far, in order."""

    undo: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def add(self, what: str, action: Callable[[], object]) -> None:
        self.undo.append((what, action))


def rollback(
    clock: Clock, journal: Journal, step: str, error: BaseException, what: str = "redirect"
) -> Generator[str, None, BaseException]:
    """Run the undo steps in reverse, yielding progress; return the exception to raise."""
    interrupted = isinstance(error, KeyboardInterrupt)
    reason = _interruption(error) if interrupted else (
        error.message if isinstance(error, ApplianceError) else f"internal error ({type(error).__name__})")
    failures: list[str] = []
    done: list[str] = []
    # Nothing interrupts the node being put back (Ctrl-C, a hang-up, SIGTERM): a half-done rollback is
    # worse than a wait.
    with shielded():
        yield line(clock, "ERROR", f"Failed while {step}: {reason}")
        for undone, action in reversed(journal.undo):
            try:
                action()
                done.append(undone)
                yield line(clock, "INFO", f"Rolled back: {undone}")
            except Exception as exc:  # keep going: every other undo step still matters
                text = exc.message if isinstance(exc, ApplianceError) else type(exc).__name__
                failures.append(f"{undone}: {text}")
                yield line(clock, "ERROR", f"Could not roll back ({undone}): {text}")
    if interrupted:
        return HangUp(error.signum) if isinstance(error, HangUp) else KeyboardInterrupt()
    restored = "the node was left as it was" if not failures else \
        f"the rollback was incomplete ({'; '.join(failures)})"
    hint = error.hint if isinstance(error, ApplianceError) and error.hint else "fix the cause above and run it again"
    if failures:
        hint = "check the node with 'system get status' and 'ha get nodes' before retrying; " + hint
    return CommandFailed(f"{what} failed while {step}: {reason}; {restored}", hint=hint)


def _interruption(error: BaseException) -> str:
    if isinstance(error, HangUp):
        return "interrupted (the session hung up)" if error.signum == signal.SIGHUP else "interrupted (SIGTERM)"
    return "interrupted (Ctrl-C)"


def line(clock: Clock, level: str, text: str) -> str:
    return f"{clock.now().strftime('%Y-%m-%d %H:%M:%S')} {level} - {text}"


def took(clock: Clock, since: float) -> str:
    return f"{clock.monotonic() - since:.3f} s"
