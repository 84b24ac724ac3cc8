"""The join code: what ``ha add node`` prints and ``ha join --code`` takes. Pure.

A code is ``EMS1-`` and the URL-safe base64 of, in order: a version byte; the code's public id (5
bytes, shown as 10 hex digits by ``ha get join-codes``); a 128-bit one-time secret; the cluster id
(16 bytes); the SHA-256 fingerprint of the issuing node's join-service certificate (32 bytes: the
joining node pins it, so it talks to that node or to nobody); the expiry (Unix seconds, for messages
only: the issuing cluster's database decides); the join service's port and host; and a CRC-32 of all
that, so a mistyped code is refused at once, before any network. About 120 characters: one word for
copy and paste, scripts and ``ssh`` command lines.

The model is kubeadm's bootstrap token (a public id, a secret, the CA's hash for discovery), in one word.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import uuid
import zlib
from dataclasses import dataclass, field

from appliance.errors import UsageError

PREFIX = "EMS1-"
VERSION = 1
ID_BYTES, SECRET_BYTES, FP_BYTES = 5, 16, 32


@dataclass(frozen=True)
class JoinCode:
    code_id: str  # 10 hex digits
    secret: bytes = field(repr=False)
    cluster_id: str
    fingerprint: bytes  # SHA-256 of the issuing node's join-service certificate (DER)
    host: str
    port: int
    expires: int  # Unix seconds

    def text(self) -> str:
        host = self.host.encode()
        if not 1 <= len(host) <= 253 or not 1 <= self.port <= 65535:
            raise ValueError("bad join service address")
        raw = (bytes([VERSION]) + bytes.fromhex(self.code_id) + self.secret + uuid.UUID(self.cluster_id).bytes
               + self.fingerprint + struct.pack(">IH", self.expires, self.port) + bytes([len(host)]) + host)
        raw += struct.pack(">I", zlib.crc32(raw))
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def secret_hash(secret: bytes) -> bytes:
    """What the cluster's database keeps of a code's secret."""
    return hashlib.sha256(b"appliance-join-v1/" + secret).digest()


def parse(text: str) -> JoinCode:
    """:raises UsageError: not a join code of this product (mistyped, cut, or of another version)."""
    bad = UsageError("--code is not a join code (mistyped or cut short?)",
                     hint="copy the whole code 'ha add node' printed (it starts with EMS1-)")
    if not text.startswith(PREFIX) or len(text) > 600:
        raise bad
    try:
        body = text[len(PREFIX):]
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError):
        raise bad from None
    fixed = 1 + ID_BYTES + SECRET_BYTES + 16 + FP_BYTES + 6 + 1
    if len(raw) < fixed + 1 + 4 or raw[0] != VERSION or zlib.crc32(raw[:-4]) != struct.unpack(">I", raw[-4:])[0]:
        raise bad
    at = 1
    code_id = raw[at:at + ID_BYTES].hex()
    at += ID_BYTES
    secret = raw[at:at + SECRET_BYTES]
    at += SECRET_BYTES
    cluster_id = str(uuid.UUID(bytes=raw[at:at + 16]))
    at += 16
    fingerprint = raw[at:at + FP_BYTES]
    at += FP_BYTES
    expires, port = struct.unpack(">IH", raw[at:at + 6])
    at += 6
    length = raw[at]
    host = raw[at + 1:at + 1 + length]
    if len(host) != length or at + 1 + length != len(raw) - 4 or not port:
        raise bad
    try:
        return JoinCode(code_id, secret, cluster_id, fingerprint, host.decode("ascii"), port, expires)
    except UnicodeDecodeError:
        raise bad from None
