#!/usr/bin/env bash
# Runs the product: a local two-node sandbox cluster under ./.sandbox (a "remote" PostgreSQL, and per
# node its own PostgreSQL, config, key, state and HA agent; nothing on this machine is renamed or
# reconfigured), then opens node1's appliance shell. Leaving the shell leaves the sandbox running:
# `.venv/bin/appliance-sandbox down` stops it. Extra arguments go to `appliance-sandbox up`
# (e.g. --cluster to have the redirects done for you, --nodes 3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/appliance-sandbox up --dir .sandbox --nodes 2 "$@"
cat <<'TEXT'

The remote database for `redirect` is described in .sandbox/sandbox.json ("remote": host, port,
user, dbname, and its throwaway password). Opening node1's shell; type `help`, or see the README
walkthrough. Another node: .venv/bin/appliance-sandbox shell node2
TEXT
exec .venv/bin/appliance-sandbox shell node1 --dir .sandbox
