"""An in-memory :class:`~appliance.credentials.CredentialBackend` for unit tests.

Each method runs under one lock, which gives it the atomicity the contract asks of the files. Values
pass through :class:`~appliance.secrets.Credential` on the way in and out, so they are validated and
normalised exactly as the file backend does it (tuples come back as lists, a bad name or payload is
refused with the same error), and a caller can never change the stored set through what it read.
Key ids are random tokens standing for master keys; the set remembers the key it was written under,
so :meth:`InMemoryCredentialBackend.lose_key` makes reads fail as a deleted key file would.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.credentials.backend import CredentialBackend, KeyRotation
from appliance.secrets import Credential, CredentialMissing, InvalidCredentialError, UnknownKeyError

_NO_KEY_HINT = "initialise the credential backend first"


@dataclass(frozen=True)
class _Set:
    generation: str
    key_id: str
    creds: dict[str, Credential]


class InMemoryCredentialBackend(CredentialBackend):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current_key: str | None = None
        self._keys: set[str] = set()
        self._set: _Set | None = None
        self._writes = 0

    def __repr__(self) -> str:
        return f"InMemoryCredentialBackend(key_id={self._current_key!r}, generation={self.generation()!r})"

    # --- test hooks ----------------------------------------------------------------------------------

    def lose_key(self) -> None:
        """Forget every master key, as if the key directory had been deleted; the set stays."""
        with self._lock:
            self._current_key = None
            self._keys.clear()

    # --- the contract --------------------------------------------------------------------------------

    def read_set(self) -> dict[str, Mapping[str, Any]]:
        with self._lock:
            current = self._readable()
            return {name: Credential(name, cred) for name, cred in current.creds.items()}

    def write_set(self, creds: Mapping[str, Mapping[str, Any]]) -> None:
        if not isinstance(creds, Mapping) or not creds:
            raise InvalidCredentialError("a credential set must be a non-empty mapping of name -> fields")
        # Validated and copied before anything changes: a bad entry leaves the previous set in place.
        staged = {name: Credential(name, fields) for name, fields in creds.items()}
        with self._lock:
            self._set = self._new_set(self._key(), staged)

    def generation(self) -> str | None:
        current = self._set  # one reference read: the set is replaced whole, never changed in place
        return None if current is None else current.generation

    def rotate_key(self) -> KeyRotation:
        with self._lock:
            previous = self._key()
            staged = self._readable().creds if self._set is not None else None
            new = secrets.token_hex(8)
            if staged is not None:
                self._set = self._new_set(new, staged)
            self._current_key, self._keys = new, {new}
            return KeyRotation(previous, new, 0 if staged is None else len(staged))

    def key_id(self) -> str:
        with self._lock:
            return self._key()

    def check_ready(self) -> None:
        with self._lock:
            self._key()

    def initialise(self) -> bool:
        with self._lock:
            if self._current_key is not None:
                return False
            self._current_key = secrets.token_hex(8)
            self._keys.add(self._current_key)
            return True

    # --- internals -----------------------------------------------------------------------------------

    def _key(self) -> str:
        if self._current_key is None:
            raise CredentialMissing("no master key has been created", hint=_NO_KEY_HINT)
        return self._current_key

    def _readable(self) -> _Set:
        if self._set is None:
            raise CredentialMissing("no credential set has been written")
        if self._set.key_id not in self._keys:
            raise UnknownKeyError(f"key {self._set.key_id} is not in the keyring", name=min(self._set.creds))
        return self._set

    def _new_set(self, key_id: str, creds: dict[str, Credential]) -> _Set:
        self._writes += 1
        return _Set(f"memory-{self._writes}", key_id, dict(creds))
