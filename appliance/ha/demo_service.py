"""A small primary-only demo service for sandboxes and tests: ``python -m appliance.ha.demo_service LOG``.

While the fence (``$APPLIANCE_FENCE_FILE``) allows it, it appends one line per tick to LOG:
``<monotonic> <wall time> <node> epoch=<N>``; when the fence closes it logs ``fenced`` and exits, so
an outside observer sees exactly when each node acted as primary. SIGTERM ends it at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from appliance.ha.fence import may_act

TICK_S = 0.05


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m appliance.ha.demo_service LOG\n")
        return 2
    log = Path(args[0])
    fence = Path(os.environ.get("APPLIANCE_FENCE_FILE", ""))
    node = os.environ.get("APPLIANCE_NODE", "?")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with log.open("a", buffering=1) as out:
        while True:
            allowed, epoch = may_act(fence)
            now = time.monotonic()
            if not allowed:
                out.write(f"{now:.3f} {time.time():.3f} {node} fenced\n")
                return 0
            out.write(f"{now:.3f} {time.time():.3f} {node} epoch={epoch}\n")
            time.sleep(TICK_S)


if __name__ == "__main__":
    sys.exit(main())
