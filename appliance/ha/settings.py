"""The cluster-wide settings every node follows, with the rule each value must meet.

Settings live in the store (``cluster_settings`` in PostgreSQL) as text; the stores check a value with
:meth:`Setting.check` before writing it, so a bad value can never reach the other nodes. The shell's
commands apply their own, narrower ranges (``ha set keepalive-interval`` takes 1-30 whole seconds);
the store accepts any positive interval, which the tests use to run fast.
"""

from __future__ import annotations

import enum
import math

from appliance.ha.notify import email_from_json, webhook_from_json
from appliance.net.addresses import parse_vip


class Setting(enum.StrEnum):
    KEEPALIVE = "keepalive_interval_s"  # seconds between heartbeats/renewals (I)
    MAINTENANCE = "maintenance"  # on: automatic failover paused cluster-wide
    DB_CHECK = "db_check_interval_s"  # seconds between probes of every configured database host
    VIP = "vip"  # the cluster's virtual IP, ADDRESS/PREFIX; "" (or no row): none
    FAILBACK = "failback"  # on: a preferred (higher-priority) node coming back takes the role over
    NOTIFY_WEBHOOK = "notify_webhook"  # JSON (appliance.ha.notify); "": no webhook
    NOTIFY_EMAIL = "notify_email"  # JSON (appliance.ha.notify); "": no e-mail

    def check(self, value: str) -> str:
        """``value`` if it is valid for this setting. :raises ValueError: with a short reason."""
        if self is Setting.VIP:
            try:
                return str(parse_vip(value)) if value else ""  # "": no virtual IP
            except ValueError as exc:
                raise ValueError(f"{self.value} {exc}") from None
        if self in (Setting.NOTIFY_WEBHOOK, Setting.NOTIFY_EMAIL):
            try:
                (webhook_from_json if self is Setting.NOTIFY_WEBHOOK else email_from_json)(value) if value else None
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.value} {exc}") from None
            return value
        if self in (Setting.MAINTENANCE, Setting.FAILBACK):
            if value not in ("on", "off"):
                raise ValueError(f"{self.value} must be 'on' or 'off', not {value[:20]!r}")
            return value
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"{self.value} must be a positive number of seconds, not {value[:20]!r}")
        return value


def setting(key: Setting | str) -> Setting:
    """The setting named ``key``. :raises ValueError: not a cluster setting."""
    try:
        return Setting(key)
    except ValueError:
        known = ", ".join(s.value for s in Setting)
        raise ValueError(f"unknown cluster setting {str(key)[:40]!r} (known: {known})") from None
