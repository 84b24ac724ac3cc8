"""This node's identity: hardware id and uptime, read from the system without changing it."""

from __future__ import annotations

from pathlib import Path

# Sources of a stable machine identity, best first: the VM's SMBIOS UUID survives a reinstall of
# the OS; machine-id is generated at first boot and is unique per installed image.
_ID_SOURCES = (Path("/sys/class/dmi/id/product_uuid"), Path("/etc/machine-id"))


def hardware_id(state_dir: Path, sources: tuple[Path, ...] = _ID_SOURCES) -> str:
    """The node's hardware id: the one recorded at initialisation, else derived from the machine.

    Derived ids are a hash, so the raw SMBIOS UUID is never shown or stored.
    """
    recorded = state_dir / "hardware-id"
    try:
        text = recorded.read_text(encoding="ascii").strip()
        if text:
            return text
    except (OSError, UnicodeDecodeError):
        pass
    for source in sources:
        try:
            raw = source.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if raw:
            import hashlib

            return "HW-" + hashlib.sha256(raw.encode()).hexdigest()[:16].upper()
    return "unknown"


def uptime_s(proc_uptime: Path = Path("/proc/uptime")) -> float | None:
    try:
        return float(proc_uptime.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def format_duration(seconds: float) -> str:
    """``93784`` -> ``1 day, 02:03:04``."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    if days:
        return f"{days} day{'s' if days != 1 else ''}, {clock}"
    return clock
