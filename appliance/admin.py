"""``appliance-admin``: root-side node administration (first boot, sandboxes). Not part of the shell.

    appliance-admin [--config PATH] init

Exit statuses are the shell's (0 done, 1 failed, 2 usage).
"""

from __future__ import annotations

import argparse
import os
import sys

from appliance.clock import SystemClock
from appliance.config import config_path, load_config
from appliance.errors import ApplianceError, ExitStatus
from appliance.init import initialise
from appliance.shell.render import render_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance-admin", description="Node administration (root only).")
    parser.add_argument("--config", help="configuration file (default $APPLIANCE_CONFIG or /etc/appliance/...)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("init", help="initialise this node: key, ids, local database, schema, credentials (idempotent)")
    args = parser.parse_args(argv)
    try:
        config = load_config(config_path(args.config, os.environ))
        changed = initialise(config, clock=SystemClock(), say=lambda text: print(f"init: {text}", flush=True))
        print("init: done" if changed else "init: already initialised; nothing changed")
        return ExitStatus.OK
    except ApplianceError as exc:
        render_error(exc, sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
