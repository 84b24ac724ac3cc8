"""The golden command table: adding, removing or renaming a command shows up here as a diff.

To accept an intended change: `.venv/bin/python -m tests.unit.test_command_table` rewrites the file.
"""

import subprocess
import sys
from pathlib import Path

from appliance.shell.reference import command_table
from commands import build_registry

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "command_table.txt"


def test_command_table_matches_golden_file():
    assert command_table(build_registry()) == GOLDEN.read_text()


def test_every_state_changing_command_confirms():
    for spec in build_registry().specs:
        if spec.changes_state:
            assert spec.confirm, f"{spec.name} changes state but does not confirm"


def test_every_command_that_asks_says_what_will_change():
    """The question comes after a line saying what changes (old -> new): a pre-flight's Preview."""
    for spec in build_registry().specs:
        if spec.confirm:
            assert spec.preflight is not None, f"{spec.name} asks for confirmation without saying what will change"


def test_every_param_has_help():
    for spec in build_registry().specs:
        for param in spec.all_params:
            assert param.help, f"{spec.name} {param.name} has no help"


def test_readme_reference_is_up_to_date():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_reference.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


if __name__ == "__main__":
    GOLDEN.write_text(command_table(build_registry()))
