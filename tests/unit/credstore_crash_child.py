"""Child process for test_credstore_crash.py: writes credential sets in a loop until it is killed.

Usage: ``python credstore_crash_child.py ROOT KEYRING START_GEN ROTATE_EVERY``

Prints ``ready`` once set up, then ``w <gen>`` after each completed set write and ``r <gen>``
after each completed key rotation, one flushed line each, so the parent knows what was committed
before it sent SIGKILL. Set ``gen`` holds ``creds_for(gen)``: every file carries the generation
number, and odd generations have a fourth credential, so a mixed or partial set is detectable.
"""

from __future__ import annotations

import sys
from typing import Any

NAMES = ("agent", "shell", "webapp")


def creds_for(gen: int) -> dict[str, dict[str, Any]]:
    names = NAMES + (("reports",) if gen % 2 else ())
    return {
        name: {"gen": gen, "user": name, "password": f"S3cr3t {gen} '{name}' =\\ é", "hosts": ["db1", "db2"]}
        for name in names
    }


def main(argv: list[str]) -> int:
    from appliance.secrets import CredentialStore, Keyring

    root, keys, start, rotate_every = argv[1], argv[2], int(argv[3]), int(argv[4])
    store = CredentialStore(root, Keyring(keys))
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    gen = start
    while True:
        gen += 1
        store.write_set(creds_for(gen))
        out.write(f"w {gen}\n")
        out.flush()
        if rotate_every and gen % rotate_every == 0:
            store.rotate_key()
            out.write(f"r {gen}\n")
            out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
