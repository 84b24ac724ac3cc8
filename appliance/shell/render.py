"""The one renderer: turns a handler's :class:`Result` into text (tabulate) or one JSON document.

Errors are rendered here too, so every command's failure looks the same: ``error: ...`` and an
optional ``hint: ...`` on stderr.

Every value this module prints passes through :func:`appliance.safetext.safe` (table cells, headers and
titles, fields, messages, errors, hints, streamed lines), and JSON escapes every control character, so
a command added anywhere gets a terminal-safe output without doing anything: a node name or a server
error carrying ``ESC ] 0;...`` is shown as ``\\x1b]0;...``, and a newline in a cell cannot forge a row.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import IO, Any

from appliance import interrupts
from appliance.errors import ApplianceError, ExitStatus
from appliance.safetext import safe
from appliance.shell.result import Binary, Result, Stream, Table


def json_key(label: str) -> str:
    """``"Hardware ID"`` -> ``"hardware_id"``: JSON keys derived from the text labels."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, tuple | list):
        return ",".join(_text(v) for v in value)
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def to_json(result: Result) -> Any:
    """The JSON document of a result."""
    if result.data is not None:
        return _plain(result.data)
    doc: dict[str, Any] = {json_key(label): _plain(value) for label, value in result.fields}
    for table in result.tables:
        keys = [json_key(h) for h in table.headers]
        doc[table.key] = [dict(zip(keys, (_plain(v) for v in row), strict=True)) for row in table.rows]
    if result.message is not None and not doc:
        doc["message"] = result.message
    return doc


def format_table(table: Table) -> str:
    from tabulate import tabulate  # imported only when a table is printed: keeps start-up fast

    rows = [[safe(_text(v)) for v in row] for row in table.rows]
    headers = [safe(h) for h in table.headers]
    return tabulate(rows, headers=headers, tablefmt="presto", disable_numparse=True)


def format_fields(fields: Sequence[tuple[str, Any]]) -> str:
    width = max(len(label) for label, _ in fields)
    return "\n".join(f"{safe(label).ljust(width)} : {safe(_text(value))}" for label, value in fields)


def to_json_text(result: Result) -> str:
    """The JSON document as text: ASCII only, so every control character is a ``\\uXXXX`` escape."""
    import json

    # json escapes C0 controls and (ensure_ascii) everything above ASCII, but not DEL.
    return json.dumps(to_json(result), indent=2, sort_keys=False, ensure_ascii=True).replace("\x7f", "\\u007f")


def render(result: Result, out: IO[str], *, as_json: bool = False) -> None:
    """Print ``result`` on ``out``."""
    if as_json:
        out.write(to_json_text(result) + "\n")
        return
    parts: list[str] = []
    if result.message is not None:
        parts.append(safe(result.message, newlines=True))
    if result.fields:
        parts.append(format_fields(result.fields))
    for table in result.tables:
        body = format_table(table) if table.rows else "(none)"
        parts.append(f"{safe(table.title)}\n{body}" if table.title else body)
    if parts:
        out.write("\n\n".join(parts) + "\n")


def render_stream(stream: Stream, out: IO[str]) -> ExitStatus:
    """Print each line as it comes; return the stream's status once it is exhausted.

    A Ctrl-C (or a hang-up, or SIGTERM) that arrives while a line is being printed is thrown into the
    producer at the point it is paused, so its own clean-up (a rollback, stopping a child) runs and is
    reported, just as if the interrupt had arrived while it was working. If the output itself is gone
    (the terminal or the SSH channel closed: the write fails), that is a hang-up: the producer gets it
    the same way and runs to its end with nothing more printed.
    """
    lines = stream.lines
    pending: BaseException | None = None
    lost = False
    while True:
        try:
            if pending is not None and isinstance(lines, Generator):
                line = lines.throw(pending)
            elif pending is not None:
                raise pending
            else:
                line = next(lines)
        except StopIteration:
            break
        pending = None
        if lost:
            continue
        try:
            out.write(safe(line) + "\n")
            out.flush()
        except KeyboardInterrupt as exc:
            pending = exc
        except OSError:
            lost = True
            pending = interrupts.output_lost()
    return stream.status()


def render_binary(binary: Binary, out: IO[str]) -> ExitStatus:
    """Write the chunks to the byte stream under ``out``; return the producer's status.

    Refused when ``out`` is a terminal (an archive would garble it) or has no byte stream under it.
    """
    sink = getattr(out, "buffer", None)
    if sink is None or out.isatty():
        close = getattr(binary.chunks, "close", None)
        if close is not None:
            close()
        raise ApplianceError("standard output is a terminal: binary output is not written to it",
                             hint="redirect it to a file: ssh ems@vm '... --output -' > FILE")
    out.flush()
    try:
        for chunk in binary.chunks:
            sink.write(chunk)
        sink.flush()
    finally:
        close = getattr(binary.chunks, "close", None)
        if close is not None:
            close()
    return binary.status()


def render_error(error: ApplianceError, err: IO[str], *, where: str | None = None) -> None:
    """``error: [WHERE: ]MESSAGE`` and ``hint: HINT``, each one line whatever the text holds."""
    prefix = f"{where}: " if where else ""
    err.write(f"error: {safe(prefix + error.message)}\n")
    if error.hint:
        err.write(f"hint: {safe(error.hint)}\n")
    err.flush()


INTERNAL_ERROR = ApplianceError(
    "internal error: the command failed unexpectedly (details are in the log)",
    hint="retry; if it persists, report it with the time of the failure",
)


def exit_status_of(error: BaseException) -> ExitStatus:
    if isinstance(error, ApplianceError):
        return error.status
    if isinstance(error, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    return ExitStatus.FAILED
