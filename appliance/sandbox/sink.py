"""A notification receiver for the sandbox: an HTTP endpoint and an SMTP server that write what they get
to ``DIR/notifications.jsonl``, one JSON object per line.

    python -m appliance.sandbox.sink --file DIR/notifications.jsonl --http-port P --smtp-port Q

Each line: ``{"channel": "webhook", "received_at", "path", "headers": {X-Appliance-*}, "event": {...}}``
or ``{"channel": "email", "received_at", "from", "to", "subject", "event": {...}}`` (the event as sent).
It listens on 127.0.0.1 only and runs until SIGTERM. The SMTP side is aiosmtpd (aio-libs' asyncio SMTP
server), a development dependency: ``appliance-sandbox up --notify-sink`` needs the dev extras.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY = 1 << 20


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, doc: dict[str, Any]) -> None:
        doc = {"received_at": datetime.now(UTC).isoformat(), **doc}
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(doc, default=str) + "\n")


def _handler(journal: Journal) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(min(length, MAX_BODY))
            try:
                event: Any = json.loads(raw)
            except ValueError:
                event = raw.decode(errors="replace")
            headers = {k: v for k, v in self.headers.items() if k.lower().startswith("x-appliance")}
            journal.write({"channel": "webhook", "path": self.path, "headers": headers, "event": event})
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def event_of(message: Message) -> Any:
    """The event's JSON from the message body (the last {...} block)."""
    payload = message.get_payload(decode=True)
    text = payload.decode(errors="replace") if isinstance(payload, bytes) else str(message.get_payload())
    start = text.find("\n{")
    try:
        return json.loads(text[start + 1:].strip()) if start >= 0 else None
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance-sandbox-sink")
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    args = parser.parse_args(argv)
    journal = Journal(args.file)
    http = ThreadingHTTPServer(("127.0.0.1", args.http_port), _handler(journal))
    threading.Thread(target=http.serve_forever, daemon=True).start()

    from aiosmtpd.controller import Controller  # the dev extras

    class Mail:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            message = message_from_bytes(envelope.content)
            journal.write({"channel": "email", "from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                           "subject": message.get("Subject"), "message_id": message.get("Message-ID"),
                           "event": event_of(message)})
            return "250 OK"

    smtp = Controller(Mail(), hostname="127.0.0.1", port=args.smtp_port)
    smtp.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    smtp.stop()
    http.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
