"""Encrypted credential files for the appliance's services.

One small file per consuming service (``agent``, ``shell``, ``webapp``...), each holding a JSON
object (hosts, ports, user, password, database...), encrypted with AES-256-GCM under a per-file key
derived by HKDF-SHA256 from a random 256-bit master key, with an authenticated header. The files
are replaced as one atomic set; reads check type, owner and mode, and report every failure as a
distinct :class:`CredentialError` subclass. Nothing here ever puts a payload value or a key into a
message, a log record or a ``repr()``.

Typical use::

    keyring = Keyring("/var/lib/appliance/keys")
    keyring.create()                      # idempotent
    store = CredentialStore("/var/lib/appliance/creds", keyring)
    store.write_set({"agent": {...}, "webapp": {...}}, groups={"webapp": webapp_gid})
    store.read("agent")["password"]
    store.rotate_key()

Modules: :mod:`.credstore` (the set store; layout and write protocol), :mod:`.fileformat` (the file
format), :mod:`.keyring` (master keys), :mod:`.credential` (the payload holder), :mod:`.errors`.
"""

from appliance.secrets.credential import Credential
from appliance.secrets.credstore import CredentialStore
from appliance.secrets.errors import (
    CredentialCorrupt,
    CredentialError,
    CredentialErrorKind,
    CredentialIOError,
    CredentialMissing,
    CredentialPermissionError,
    CredentialTampered,
    CredentialWriteError,
    InvalidCredentialError,
    UnknownKeyError,
    UnsupportedFormatError,
    WrongKeyError,
)
from appliance.secrets.fileformat import FORMAT_VERSION
from appliance.secrets.keyring import Keyring, MasterKey

__all__ = [
    "FORMAT_VERSION",
    "Credential",
    "CredentialCorrupt",
    "CredentialError",
    "CredentialErrorKind",
    "CredentialIOError",
    "CredentialMissing",
    "CredentialPermissionError",
    "CredentialStore",
    "CredentialTampered",
    "CredentialWriteError",
    "InvalidCredentialError",
    "Keyring",
    "MasterKey",
    "UnknownKeyError",
    "UnsupportedFormatError",
    "WrongKeyError",
]
