"""The credential backend contract: where this node's DB credential set and its master key live.

A *credential set* maps credential names (``origin``, one per consuming service) to JSON objects
(hosts, ports, user, password, ...). Writing the set is the node's single, atomic switch of "which
database and which role" (see :mod:`appliance.node`), so every backend must give the same
guarantees; the docstrings below say *how* each method must be atomic. Both implementations
(:mod:`appliance.credentials.file`, :mod:`appliance.credentials.memory`) pass one contract test
suite (``tests/unit/test_credential_backends.py``).

Errors are the credential store's (:mod:`appliance.secrets.errors`): one :class:`CredentialError`
subclass per failure kind, each also a semantic base of :mod:`appliance.errors` (a missing key or
set is :class:`~appliance.errors.NotConfigured`, a bad mode :class:`~appliance.errors.PermissionDenied`,
...) with a hint, so the shell and the agent report them like any other error. No method ever puts
a credential value or key material into a message, a log record or a ``repr()``; the mappings
:meth:`CredentialBackend.read_set` returns show their field names only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KeyRotation:
    """What :meth:`CredentialBackend.rotate_key` did (key ids name keys without revealing them)."""

    previous_key_id: str
    key_id: str
    files: int  # credentials re-encrypted under the new key


class CredentialBackend(ABC):
    """One node's encrypted credential set and master key.

    Reads never fall back to defaults or plaintext: a set that cannot be read whole is an error.
    """

    @abstractmethod
    def read_set(self) -> dict[str, Mapping[str, Any]]:
        """Decrypt and return the whole current set: credential name -> its fields.

        Every entry comes from ONE generation: a write that lands during the read is either not
        seen at all or seen whole, never mixed with the set it replaces. The values are read-only
        mappings whose ``repr()`` shows field names only (:class:`~appliance.secrets.Credential`).

        :raises CredentialMissing: no set was ever written (``NotConfigured``).
        :raises UnknownKeyError: the set was written under a key this node no longer holds.
        :raises CredentialError: any other failure (tampered, corrupt, bad owner or mode...).
        """

    @abstractmethod
    def write_set(self, creds: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the whole set with ``creds`` (credential name -> JSON object), atomically.

        All or nothing: a reader, or the node after a crash at any point, finds either the complete
        previous set or the complete new one. The new set is read back and decrypted before this
        returns (verify-after-write); if that fails, the previous set is made current again.

        :raises InvalidCredentialError: an invalid name or payload, or an empty set; nothing changed.
        :raises CredentialMissing: there is no master key (see :meth:`initialise`); nothing changed.
        :raises CredentialWriteError: the write failed; the previous set is still the live one,
            unless the message says otherwise.
        """

    @abstractmethod
    def generation(self) -> str | None:
        """An opaque token naming the current set; ``None`` if there is none (or it cannot be told).

        It changes with every successful :meth:`write_set` and :meth:`rotate_key` (the rotated set
        is a new set), and never on a read. The agent polls it every tenth of a second to notice a
        ``redirect``, so it must cost no more than one ``readlink`` and never raises.
        """

    def changed_since(self, generation: str | None) -> bool:
        """True if the current set is not the one ``generation`` named. Never raises."""
        return self.generation() != generation

    @abstractmethod
    def rotate_key(self) -> KeyRotation:
        """Create a new master key, re-encrypt the whole set under it as one atomic write, then retire
        every other key. The values are unchanged; the set gets a new generation.

        Until the new set is live the old key and set stay valid; if re-encrypting fails, the new
        key is removed again and nothing changed.

        :raises CredentialMissing: there is no master key to rotate.
        :raises CredentialError: the current set cannot be read (nothing changed), or the new set
            could not be written (``CredentialWriteError``).
        """

    @abstractmethod
    def key_id(self) -> str:
        """The id of the current master key (names it without revealing it), for messages.

        Reads only. :raises CredentialMissing: no master key (``NotConfigured``, with a hint).
        """

    @abstractmethod
    def check_ready(self) -> None:
        """Check that the master key is present and usable, so that a :meth:`write_set` can succeed.

        Reads only. :raises CredentialMissing: no master key (``NotConfigured``, with a hint).
        :raises CredentialError: the key is unreadable, of the wrong owner or mode, or damaged.
        """

    @abstractmethod
    def initialise(self) -> bool:
        """Create the master key if there is none (first boot); idempotent.

        The key appears whole or not at all. :returns: True if a key was created, False if a
        usable one was already there.
        :raises CredentialError: the key could not be created, or the existing one is damaged.
        """
