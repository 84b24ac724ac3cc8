"""The appliance library: shell engine, configuration, rendering, and (later) DB, HA and secrets."""

__version__ = "0.1.0"
