#!/usr/bin/env bash
# The test command: set-up, lint, type check, then the default (fast) test suite.
# Slow suites (image build and boot, long fault runs) are behind `make test-slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff";  .venv/bin/ruff check appliance commands tests bench scripts
echo "== mypy";  .venv/bin/mypy
echo "== pytest"
exec .venv/bin/pytest -q -m "not slow" -p no:cacheprovider "$@"
