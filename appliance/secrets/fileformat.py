"""On-disk format of one credential file (version 1).

A file is three newline-terminated ASCII lines::

    APPLIANCE-CREDENTIAL
    {"alg":"AES-256-GCM","created":1700000000,"kdf":"HKDF-SHA256","kid":"<16 hex>","name":"<name>",
     "nonce":"<base64, 12 bytes>","salt":"<base64, 16 bytes>","set":"<16 hex>","v":1}
    <base64 of AES-256-GCM ciphertext || 16-byte tag>

(the header is one line on disk: canonical JSON, sorted keys, no spaces).

* ``v`` is the format version, read first: a reader rejects any other version explicitly rather
  than guessing. ``alg``/``kdf`` name the algorithms; anything else is "unsupported", not "corrupt".
* ``kid`` is the id of the master key (see :mod:`appliance.secrets.keyring`); ``name`` the credential;
  ``set`` the id of the credential set (generation) the file was written with; ``created`` a Unix time.
* The per-file key is ``HKDF-SHA256(master, salt=<salt>, info="appliance/secrets/v1/aes-256-gcm\\0" +
  name)``, 32 bytes. The random 16-byte salt makes every file's key unique even for the same name
  and master key, so the random 96-bit GCM nonce can never repeat under one key.
* The associated data is the exact bytes of the first two lines. Any change to the header (version,
  algorithm, key id, name, set, salt, nonce, even re-ordering JSON keys) fails authentication; the
  name is bound twice (AAD and HKDF info) so a file renamed to, or swapped with, another credential's
  name never decrypts under that name.
* The plaintext is the credential as canonical UTF-8 JSON (an object).

A 3-field payload gives a file of about 400 bytes. Readers refuse files above :data:`MAX_FILE_SIZE`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.secrets.credential import NAME_PATTERN
from appliance.secrets.errors import CredentialCorrupt, UnsupportedFormatError, safe_token
from appliance.secrets.keyring import KEY_ID_PATTERN, MasterKey

MAGIC = b"APPLIANCE-CREDENTIAL\n"
FORMAT_VERSION = 1
ALGORITHM = "AES-256-GCM"
KDF = "HKDF-SHA256"
NONCE_SIZE = 12
SALT_SIZE = 16
TAG_SIZE = 16
MAX_FILE_SIZE = 256 * 1024
_MAX_HEADER = 4096
_HKDF_INFO = b"appliance/secrets/v1/aes-256-gcm\x00"
SET_ID_PATTERN = re.compile(r"[0-9a-f]{16}")
_FIELDS = frozenset({"v", "alg", "kdf", "kid", "name", "set", "created", "salt", "nonce"})


@dataclass(frozen=True)
class Header:
    """The clear-text header of a credential file (nothing in it is secret)."""

    version: int
    key_id: str
    name: str
    set_id: str
    created: int
    salt: bytes
    nonce: bytes


@dataclass(frozen=True)
class Sealed:
    """A parsed file: header, the associated data it authenticates, and the ciphertext."""

    header: Header
    aad: bytes
    body: bytes


def _file_key(key: MasterKey, name: str, salt: bytes) -> AESGCM:
    return AESGCM(key.derive(salt=salt, info=_HKDF_INFO + name.encode("ascii")))


def seal(key: MasterKey, name: str, plaintext: bytes, *, set_id: str, created: int) -> bytes:
    """Encrypt ``plaintext`` (canonical JSON) for credential ``name`` into a complete file image."""
    salt = secrets.token_bytes(SALT_SIZE)
    nonce = secrets.token_bytes(NONCE_SIZE)
    header = {
        "v": FORMAT_VERSION,
        "alg": ALGORITHM,
        "kdf": KDF,
        "kid": key.key_id,
        "name": name,
        "set": set_id,
        "created": created,
        "salt": base64.b64encode(salt).decode("ascii"),
        "nonce": base64.b64encode(nonce).decode("ascii"),
    }
    aad = MAGIC + json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"
    body = _file_key(key, name, salt).encrypt(nonce, plaintext, aad)
    return aad + base64.b64encode(body) + b"\n"


def parse(data: bytes, *, name: str | None, path: str | None) -> Sealed:
    """Parse a file image. Raises :class:`CredentialCorrupt` or :class:`UnsupportedFormatError`.

    Nothing here is authenticated yet: the caller must still decrypt with :func:`unseal`.
    """

    def corrupt(detail: str) -> CredentialCorrupt:
        return CredentialCorrupt(detail, name=name, path=path)

    if not data.startswith(MAGIC):
        raise corrupt("not a credential file (bad magic line)" if data else "file is empty")
    lines = data[len(MAGIC) :].split(b"\n")
    if len(lines) != 3 or lines[2] != b"":
        raise corrupt("file is truncated or has extra lines")
    header_line, body_line = lines[0], lines[1]
    if len(header_line) > _MAX_HEADER:
        raise corrupt("header is too long")
    try:
        fields = json.loads(header_line)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise corrupt("header is not a JSON object")
    version = fields.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise corrupt("header has no format version")
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"format version {safe_token(version)} is not supported (this software reads version {FORMAT_VERSION})",
            name=name,
            path=path,
        )
    if set(fields) != _FIELDS:
        raise corrupt("header fields are missing or unexpected")
    if fields["alg"] != ALGORITHM or fields["kdf"] != KDF:
        raise UnsupportedFormatError(
            f"algorithm {safe_token(fields['alg'])}/{safe_token(fields['kdf'])} is not supported "
            f"(this software uses {ALGORITHM}/{KDF})",
            name=name,
            path=path,
        )
    kid, cname, set_id, created = fields["kid"], fields["name"], fields["set"], fields["created"]
    if not isinstance(kid, str) or not KEY_ID_PATTERN.fullmatch(kid):
        raise corrupt("header has a malformed key id")
    if not isinstance(cname, str) or not NAME_PATTERN.fullmatch(cname):
        raise corrupt("header has a malformed credential name")
    if not isinstance(set_id, str) or not SET_ID_PATTERN.fullmatch(set_id):
        raise corrupt("header has a malformed set id")
    if not isinstance(created, int) or isinstance(created, bool) or created < 0:
        raise corrupt("header has a malformed creation time")
    salt = _b64(fields["salt"])
    nonce = _b64(fields["nonce"])
    if salt is None or len(salt) != SALT_SIZE or nonce is None or len(nonce) != NONCE_SIZE:
        raise corrupt("header has a malformed salt or nonce")
    body = _b64(body_line)
    if body is None or len(body) < TAG_SIZE:
        raise corrupt("encrypted body is malformed or truncated")
    header = Header(version=version, key_id=kid, name=cname, set_id=set_id, created=created, salt=salt, nonce=nonce)
    return Sealed(header=header, aad=MAGIC + header_line + b"\n", body=body)


def unseal(key: MasterKey, name: str, sealed: Sealed) -> bytes | None:
    """Decrypt and authenticate; ``None`` if authentication fails.

    ``name`` is the name the caller asked for (the file name), not the one in the header: a file
    renamed to another credential's name then fails here even if its header was edited to match.
    """
    try:
        return _file_key(key, name, sealed.header.salt).decrypt(sealed.header.nonce, sealed.body, sealed.aad)
    except InvalidTag:
        return None


def _b64(value: object) -> bytes | None:
    if isinstance(value, str):
        value = value.encode("ascii", "replace")
    if not isinstance(value, bytes):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
