"""Who owns the master key and the credential set: the agent's own user, when the node has one.

On the appliance the agent runs as ``appliance-agent`` and is the only reader and writer of the key and
the credential set (the login user ``ems`` can read neither; it hands passwords to the agent over the
control socket). ``appliance-admin init`` runs as root at first boot and must leave the files to that
user: the stores refuse files not owned by the process reading them, so files written as root would
lock the agent out. :func:`as_owner` therefore runs the credential steps of a root process with the
effective uid and gid of that user (and back to root after), so every file and directory is created by
it, with the stores' own modes; no chown after the fact, no window with the wrong owner.

Without that user (sandboxes, tests, a development machine) or when not root, nothing changes: the
files belong to whoever runs the tool, as before.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager

from appliance.config import Config

AGENT_USER = "appliance-agent"


@contextmanager
def as_owner(config: Config, user: str = AGENT_USER) -> Iterator[str | None]:
    """Run the body as ``user`` (effective ids only) if this process is root and the user exists; yield the
    name used, or None when nothing changed. Single-threaded callers only (the ids are per process)."""
    if os.geteuid() != 0:
        yield None
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        yield None
        return
    for directory in {config.credentials_dir.parent, config.key_dir.parent}:
        if not directory.exists():
            # Its parent (the agent's StateDirectory on the appliance) may not exist before the agent's
            # first start: made here for that user, as systemd would (0700).
            directory.mkdir(parents=True, mode=0o700)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
    os.setegid(entry.pw_gid)
    os.seteuid(entry.pw_uid)
    try:
        yield user
    finally:
        os.seteuid(0)
        os.setegid(0)
