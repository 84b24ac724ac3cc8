"""The cluster's virtual IP on this node: ``python -m appliance.ha.vip``, a primary-only service.

Why a service of its own and not the agent: the address must go at the fence deadline even when the
agent is frozen (SIGSTOP, starvation) or blocked on a dead database, so the piece that holds it must
not be the agent. Like the demo service it follows the fence file the agent writes after every
renewal (:mod:`appliance.ha.fence`), on the same monotonic clock:

* while the fence is open it keeps the address on ``[vip] interface`` with a kernel lifetime of the
  whole seconds left in the trust window (refreshed after every renewal): if this process is killed
  with SIGKILL, the kernel deletes the address by itself within about a second of the deadline;
* it deletes the address itself at the exact deadline (the lifetime counts whole seconds, which at
  I = 1 s is not precise enough on its own), when the fence is revoked, on SIGTERM, and then exits;
* when it adds the address it announces it (gratuitous ARP / unsolicited neighbour advertisement) in
  a burst, and again every ``[vip] refresh_announce_s`` while it holds it.

The new primary's agent starts this service only after it holds the lease, which is after the old
primary's deadline, so two nodes never hold the address at once. Which address: the cluster setting
``vip`` (``ha set vip``), which every agent copies into ``<run_dir>/vip`` (:func:`write_wanted`).
What it holds is in ``<run_dir>/vip-status.json`` for ``ha get status``. It needs CAP_NET_ADMIN (the
address) and CAP_NET_RAW (the announcements), nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from appliance.config import Config, config_path, load_config
from appliance.errors import ApplianceError
from appliance.fsutil import write_atomic
from appliance.ha.fence import read_fence
from appliance.net import iproute
from appliance.net.addresses import Interface, parse_vip
from appliance.net.announce import Announcer

logger = logging.getLogger("appliance.vip")

TICK_S = 0.05  # how often the fence is read; the deadline itself is slept to exactly
REFRESH_MARGIN_S = 0.3  # refresh the kernel lifetime this long before it would run out
RETRY_S = 1.0  # after a failed `ip` call
ANNOUNCE_BURST_S = (0.0, 0.1, 0.3, 1.0, 2.0, 5.0)  # after adding: at once, then a few more (lost frames)


# --- what the agent writes, what the shell reads -------------------------------------------------------


def wanted_path(config: Config) -> Path:
    return config.paths.run_dir / "vip"


def status_path(config: Config) -> Path:
    return config.paths.run_dir / "vip-status.json"


def write_wanted(config: Config, address: str | None) -> None:
    """The agent's copy of the cluster's VIP setting (None: no VIP), rewritten only when it changed."""
    path = wanted_path(config)
    text = json.dumps({"address": address}) + "\n"
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, mode=0o644)


def read_wanted(path: Path) -> Interface | None:
    try:
        address = json.loads(path.read_text()).get("address")
        return parse_vip(address) if isinstance(address, str) and address else None
    except (OSError, ValueError, AttributeError):
        return None


def read_status(config: Config) -> dict[str, Any] | None:
    try:
        doc = json.loads(status_path(config).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def describe_vip(config: Config, cluster_vip: str | None) -> str:
    """One line for ``ha get status``: the cluster's VIP and whether this node holds it (as its holder
    last reported, if the holder still runs)."""
    if not cluster_vip:
        return "none"
    if not config.vip.interface:
        return f"{cluster_vip}: this node never holds it (no [vip] interface)"
    status = read_status(config)
    if status is not None and status.get("held") == cluster_vip and _alive(status.get("pid")):
        return f"{cluster_vip}: held by this node on {config.vip.interface} (epoch {status.get('epoch')})"
    error = status.get("error") if status is not None and _alive(status.get("pid")) else None
    return f"{cluster_vip}: not held by this node" + (f" ({error})" if error else "")


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


# --- the holder ----------------------------------------------------------------------------------------


class AddressOps(Protocol):
    """The kernel side, replaceable in unit tests (:mod:`appliance.net.iproute` in production)."""

    def replace(self, vip: Interface, device: str, lifetime_s: int) -> None: ...

    def delete(self, vip: Interface, device: str) -> bool: ...

    def announce(self, vip: Interface, device: str) -> None: ...


@dataclass
class _Held:
    vip: Interface
    until: float  # the fence deadline the lifetime was set for
    expires: float  # when the kernel would delete it (monotonic, approximately)
    epoch: int
    announce_at: list[float]


class Holder:
    """One pass at a time (:meth:`step`); :func:`main` loops and sleeps what it returns."""

    def __init__(self, config: Config, ops: AddressOps, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.device = config.vip.interface
        self.ops = ops
        self.monotonic = monotonic
        self.held: _Held | None = None
        self.error: str | None = None
        self.retry_at = 0.0
        self._last_status: dict[str, Any] | None = None

    def step(self) -> float | None:
        """Bring the kernel in line with the fence and the wanted address; return how long to sleep, or
        None once the fence is closed (the address is gone: exit)."""
        now = self.monotonic()
        fence = read_fence(self.config.fence_file)
        if fence is None or now >= fence[0]:
            self.release("the fence is closed" if fence is None else "the fence deadline passed")
            return None
        until, epoch = fence
        wanted = read_wanted(wanted_path(self.config)) if self.device else None
        if self.held is not None and self.held.vip != wanted:
            self.release("the cluster's virtual IP changed" if wanted else "the cluster's virtual IP was removed")
        if wanted is not None and now >= self.retry_at:
            self._keep(wanted, until, epoch, now)
        self._write_status(epoch)
        wake = until - self.monotonic()  # sleep exactly to the deadline when it is near
        if self.held is not None:
            pending = [t for t in self.held.announce_at if t > now]
            if pending:
                wake = min(wake, pending[0] - self.monotonic())
        return max(0.0, min(TICK_S, wake))

    def _keep(self, vip: Interface, until: float, epoch: int, now: float) -> None:
        held = self.held
        stale = held is None or held.until != until or held.expires - now < REFRESH_MARGIN_S
        if stale:
            # Whole seconds left in the trust window (at least 1: 0 would mean "forever" to the kernel).
            lifetime = max(1, math.floor(until - now))
            try:
                self.ops.replace(vip, self.device, lifetime)
            except (ApplianceError, OSError) as exc:
                self._failed(f"cannot add {vip} on {self.device}: {_reason(exc)}", now)
                return
            if held is None:
                held = self.held = _Held(vip, until, now + lifetime, epoch, [now + t for t in ANNOUNCE_BURST_S])
                logger.info("holding %s on %s (epoch %d, trusted for %.2f s)", vip, self.device, epoch, until - now)
            else:
                held.until, held.expires, held.epoch = until, now + lifetime, epoch
        assert held is not None
        if held.announce_at and held.announce_at[0] <= now:
            while held.announce_at and held.announce_at[0] <= now:
                held.announce_at.pop(0)
            try:
                self.ops.announce(vip, self.device)
                self.error = None
            except (OSError, ValueError) as exc:
                self._failed(f"cannot announce {vip} on {self.device}: {_reason(exc)}", now)
            refresh = self.config.vip.refresh_announce_s
            if not held.announce_at and refresh > 0:
                held.announce_at.append(now + refresh)
        elif stale:
            self.error = None

    def _failed(self, message: str, now: float) -> None:
        if message != self.error:
            logger.error("%s", message)
        self.error, self.retry_at = message, now + RETRY_S

    def release(self, why: str) -> None:
        """Delete the address if this holder added it (every exit path comes here)."""
        held, self.held = self.held, None
        if held is None:
            return
        try:
            self.ops.delete(held.vip, self.device)
            logger.info("released %s on %s: %s", held.vip, self.device, why)
        except (ApplianceError, OSError) as exc:
            # The kernel lifetime still removes it within about a second of the deadline.
            logger.error("cannot delete %s on %s (%s); its kernel lifetime ends it", held.vip, self.device,
                         _reason(exc))
        self._write_status(held.epoch)

    def _write_status(self, epoch: int | None) -> None:
        doc = {"held": str(self.held.vip) if self.held else None, "interface": self.device, "epoch": epoch,
               "error": self.error, "pid": os.getpid()}
        if doc == self._last_status:
            return
        try:
            write_atomic(status_path(self.config), json.dumps(doc) + "\n", mode=0o644)
            self._last_status = doc
        except OSError as exc:
            logger.warning("cannot write %s: %s", status_path(self.config), exc.strerror)


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ApplianceError) else (getattr(exc, "strerror", None) or str(exc))


class KernelOps:
    """:class:`AddressOps` with ``ip`` (:mod:`appliance.net.iproute`) and in-process announcements."""

    def __init__(self, config: Config) -> None:
        self.ip = config.tools.ip
        self._announcers: dict[tuple[str, str], Announcer] = {}

    def replace(self, vip: Interface, device: str, lifetime_s: int) -> None:
        iproute.replace(self.ip, vip, device, lifetime_s)

    def delete(self, vip: Interface, device: str) -> bool:
        announcer = self._announcers.pop((str(vip), device), None)
        if announcer is not None:
            announcer.close()
        return iproute.delete(self.ip, vip, device)

    def announce(self, vip: Interface, device: str) -> None:
        key = (str(vip), device)
        if key not in self._announcers:
            self._announcers[key] = Announcer(device, vip)
        self._announcers[key].send()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.ha.vip",
                                     description="Hold the cluster's virtual IP while this node's fence is open.")
    parser.add_argument("--config", help="configuration file (default $APPLIANCE_CONFIG or /etc/appliance/...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_config(config_path(args.config, os.environ))
    except ApplianceError as exc:
        logger.error("%s", exc.message)
        return exc.status
    holder = Holder(config, KernelOps(config))

    def on_term(signum: int, frame: object) -> None:
        sys.exit(0)  # unwinds to the `finally` below, which deletes the address

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if not config.vip.interface:
        logger.warning("no [vip] interface in %s: this node never holds the cluster's virtual IP", config.source)
    try:
        while True:
            wait = holder.step()
            if wait is None:
                return 0
            time.sleep(wait)
    finally:
        holder.release("exiting")


if __name__ == "__main__":
    sys.exit(main())
