"""Regenerate the README's command reference from the command table (`make readme`).

With --check, exit 1 if the README is out of date (the test suite runs this check).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.shell.reference import reference_markdown  # noqa: E402
from commands import build_registry  # noqa: E402

BEGIN, END = "<!-- reference:begin -->", "<!-- reference:end -->"


def updated(readme: str) -> str:
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{reference_markdown(build_registry())}{END}{tail}"


def main() -> int:
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    new = updated(text)
    if "--write" in sys.argv:
        path.write_text(new, encoding="utf-8")
        return 0
    if new != text:
        sys.stderr.write("README.md command reference is out of date: run `make readme`\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
