"""Sending one notification: an HTTP POST (webhook) or an e-mail over SMTP, each bounded in time.

Standard library only (``http.client``, ``smtplib``, ``ssl``). Every network step has the timeout
:data:`~appliance.ha.notify.SEND_TIMEOUT_S`; TLS is verified against the system's CAs (``https://``,
``--starttls``, port 465). A failure is one :class:`DeliveryError` line that names the target and says
why, never the secret. Redirects are not followed (a webhook that moved must be set again).
"""

from __future__ import annotations

import http.client
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

from appliance.errors import Unavailable
from appliance.ha.events import summary
from appliance.ha.notify import SEND_TIMEOUT_S, EmailConfig, WebhookConfig, signature


class DeliveryError(Unavailable):
    """One attempt failed; the message says where and why."""


def post_webhook(conf: WebhookConfig, secret: str | None, raw: bytes, event: dict[str, Any], *,
                 timeout: float = SEND_TIMEOUT_S) -> int:
    """POST ``raw`` to the webhook; return the HTTP status (2xx). :raises DeliveryError: anything else."""
    parts = urlsplit(conf.url)
    host, port = parts.hostname or "", parts.port
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", "User-Agent": "appliance-ha-notify/1",
               "X-Appliance-Event": str(event.get("kind", "")), "X-Appliance-Delivery": str(event.get("id", ""))}
    if secret:
        headers["X-Appliance-Signature"] = signature(secret, raw)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    failure = ""
    try:
        conn.request("POST", path, body=raw, headers=headers)
        response = conn.getresponse()
        response.read(4096)
        if 200 <= response.status < 300:
            return response.status
        failure = f"HTTP {response.status} {response.reason}"
    except ssl.SSLError as exc:
        failure = f"TLS failed ({exc.reason or type(exc).__name__})"
    except TimeoutError:
        failure = f"no answer within {timeout:g} s"
    except (OSError, http.client.HTTPException) as exc:
        failure = getattr(exc, "strerror", None) or type(exc).__name__
    finally:
        conn.close()
    raise DeliveryError(f"webhook {conf.url}: {failure}")


def send_email(conf: EmailConfig, password: str | None, raw: bytes, event: dict[str, Any], *,
               timeout: float = SEND_TIMEOUT_S, hostname: str = "appliance") -> None:
    """Send one message about ``event`` to every recipient. :raises DeliveryError: with the SMTP step."""
    message = EmailMessage()
    what = summary(str(event.get("kind", "")), event.get("details") or {}, event.get("duration_s"))
    test = " (test)" if b'"test": true' in raw else ""
    message["Subject"] = f"[HA{test}] {event.get('kind')} on {event.get('node')}: {what}"[:200]
    message["From"] = conf.sender or f"appliance-ha@{hostname}"
    message["To"] = ", ".join(conf.to)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # The same id on every attempt: a mail system that got it twice keeps one.
    message["Message-ID"] = f"<{event.get('id')}.ha@{hostname}>"
    message["X-Appliance-Event"] = str(event.get("kind", ""))
    message.set_content(f"{event.get('time')} {event.get('node')} {event.get('kind')} (epoch {event.get('epoch')})\n"
                        f"{what}\n\n{raw.decode()}\n")
    where = f"SMTP {conf.smtp_host}:{conf.smtp_port}"
    step = "connect"
    try:
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if conf.smtp_port == 465:
            client = smtplib.SMTP_SSL(conf.smtp_host, conf.smtp_port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(conf.smtp_host, conf.smtp_port, timeout=timeout)
        with client:
            step = "EHLO"
            client.ehlo()
            if conf.starttls:
                step = "STARTTLS"
                client.starttls(context=context)
                client.ehlo()
            if conf.user:
                step = "AUTH"
                client.login(conf.user, password or "")
            step = "send"
            refused = client.send_message(message)
            if refused:
                raise DeliveryError(f"{where}: refused the recipients {', '.join(sorted(refused))}")
        return
    except DeliveryError:
        raise
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        failure = f"{step}: {exc.smtp_code} {text[:120]}"
    except smtplib.SMTPException as exc:
        failure = f"{step}: {type(exc).__name__}"
    except ssl.SSLError as exc:
        failure = f"{step}: TLS failed ({exc.reason or type(exc).__name__})"
    except TimeoutError:
        failure = f"{step}: no answer within {timeout:g} s"
    except OSError as exc:
        failure = f"{step}: {exc.strerror or type(exc).__name__}"
    raise DeliveryError(f"{where}: {failure}")
