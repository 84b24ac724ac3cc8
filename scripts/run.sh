#!/usr/bin/env bash
# Runs the product: the appliance shell on a sandbox configuration under ./.sandbox (hostname
# backend "file", state in ./.sandbox/state), so nothing on this machine is changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p .sandbox/state
config=.sandbox/appliance.toml
if [[ ! -e $config ]]; then
    cat > "$config" <<TOML
# Sandbox configuration written by scripts/run.sh; see appliance/data/appliance.toml for every key.
[paths]
state_dir = "state"
[hostname]
backend = "file"
[audit]
target = "file"
TOML
fi
exec .venv/bin/appliance-shell --config "$config" "$@"
