"""The ``file`` credential backend: :mod:`appliance.secrets`' encrypted files and keyring.

The set lives in a :class:`~appliance.secrets.CredentialStore` directory (one AES-256-GCM file per
credential, switched as a set through the ``current`` symlink) and the master key in a
:class:`~appliance.secrets.Keyring` directory. This module only maps the contract onto them; the
layout, the write protocol and every check are the store's, unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.credentials.backend import CredentialBackend, KeyRotation
from appliance.secrets import CredentialStore, Keyring
from appliance.secrets.credstore import CURRENT


class FileCredentialBackend(CredentialBackend):
    """The credential set in ``directory``, its master key in ``key_dir``; both owned by this user.

    Building one touches no file: the directories are created by :meth:`initialise` (the key) and
    the first :meth:`write_set` (the set).
    """

    def __init__(self, directory: Path, key_dir: Path) -> None:
        self._keyring = Keyring(key_dir)
        self._store = CredentialStore(directory, self._keyring)
        self._current = os.path.join(self._store.root, CURRENT)

    def __repr__(self) -> str:
        return f"FileCredentialBackend({self._store.root!r}, key_dir={self._keyring.directory!r})"

    def read_set(self) -> dict[str, Mapping[str, Any]]:
        return dict(self._store.read_all())

    def write_set(self, creds: Mapping[str, Mapping[str, Any]]) -> None:
        self._store.write_set(creds)

    def generation(self) -> str | None:
        # The target of `current` names the generation (".gen-<set id>"): the store switches sets by
        # renaming a new symlink over it, so one readlink sees the old or the new one.
        try:
            return os.readlink(self._current)
        except OSError:
            return None

    def rotate_key(self) -> KeyRotation:
        previous = self._keyring.load_current().key_id
        new = self._store.rotate_key().key_id
        return KeyRotation(previous, new, len(self._store.names()))

    def key_id(self) -> str:
        return self._keyring.load_current().key_id

    def check_ready(self) -> None:
        self._keyring.load_current()

    def initialise(self) -> bool:
        # Keyring.create() returns the current key whether or not it made it: compare with what was
        # there before. A keyring directory that does not exist yet holds no key.
        before = set(self._keyring.key_ids()) if os.path.exists(self._keyring.directory) else set()
        return self._keyring.create().key_id not in before
