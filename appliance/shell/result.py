"""What handlers return: plain data that one renderer prints as text or JSON.

Handlers never print. A handler returns one of these, or raises an
:class:`~appliance.errors.ApplianceError`. The exceptions to "data first" are :class:`Stream`, for
commands such as ``execute ping`` whose lines must appear as they come, and :class:`Binary`, for an
archive streamed to standard output (``ssh ems@vm 'execute backup --output -' > file``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.errors import ExitStatus


@dataclass(frozen=True)
class Table:
    """One table. ``key`` names it in JSON output; ``title`` is printed above it as text."""

    key: str
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    title: str | None = None


@dataclass(frozen=True)
class Result:
    """A command's outcome.

    :param message: free text lines (``help``, confirmations of a change).
    :param fields: an ordered record of ``label -> value`` (``system get status``).
    :param tables: zero or more tables (``ha get nodes`` has two).
    :param data: the JSON document for ``--json`` when it is not derivable from the above.
    """

    status: ExitStatus = ExitStatus.OK
    message: str | None = None
    fields: Sequence[tuple[str, Any]] = ()
    tables: Sequence[Table] = ()
    data: Any = None


@dataclass
class Stream:
    """Lines printed as they are produced; ``status()`` is asked once the lines are exhausted."""

    lines: Iterator[str]
    status: Callable[[], ExitStatus] = field(default=lambda: ExitStatus.OK)


class Binary:
    """Bytes for standard output, written as they are produced; never sent to a terminal.

    ``status()`` is asked once the chunks are exhausted. The producer cleans up in ``finally`` (the
    renderer closes it when the reader goes away). A plain class: every shell start defines it.
    """

    def __init__(self, chunks: Iterator[bytes], status: Callable[[], ExitStatus] = lambda: ExitStatus.OK) -> None:
        self.chunks = chunks
        self.status = status


Outcome = Result | Stream | Binary
