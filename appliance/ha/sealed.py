"""Secrets the whole cluster needs, sealed in its database: the webhook's signing secret, the SMTP password.

Every node of a cluster holds the cluster's database credential in its credential set (``redirect``
and ``ha join`` put it there), and nothing else is shared by all of them. The key is derived from it:
``scrypt(password, salt = "appliance-cluster-secrets/v1/" + cluster id)``, 32 bytes (scrypt rather than
HKDF: a human-chosen password must not make a stolen table cheap to open). A secret is sealed with
AES-256-GCM under that key, its name bound as associated data, and stored in ``cluster_secrets``; the
table (a dump, a read-only account, the wire without TLS) gives nothing usable away, and a node reads
a secret only through its credential backend (:func:`key_for`). A node redirected with another database
account cannot open them: it reports so and leaves the sending to the nodes that can.
"""

from __future__ import annotations

import os
from functools import lru_cache

from appliance.config import Config
from appliance.errors import ApplianceError, NotConfigured
from appliance.node import read_targets

VERSION = b"\x01"


class SealError(ApplianceError):
    """A sealed secret cannot be opened here (another database credential, or damaged)."""


@lru_cache(maxsize=4)
def cluster_key(password: str, cluster_id: str) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # heavy: only when a secret is used

    return Scrypt(salt=f"appliance-cluster-secrets/v1/{cluster_id}".encode(), length=32, n=2**14, r=8,
                  p=1).derive(password.encode())


def key_for(config: Config) -> bytes:
    """This node's key for the cluster's sealed secrets, from its credential set (through the backend)."""
    _origin, active = read_targets(config)
    if not active.cluster_id:
        raise NotConfigured("this node has no cluster id", hint="run appliance-admin init")
    return cluster_key(active.target.password, active.cluster_id)


def seal(key: bytes, name: str, value: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return VERSION + nonce + AESGCM(key).encrypt(nonce, value.encode(), b"appliance-secret/v1/" + name.encode())


def unseal(key: bytes, name: str, blob: bytes) -> str:
    """:raises SealError: sealed under another key, for another name, or damaged."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(blob) < 29 or blob[:1] != VERSION:
        raise SealError(f"the sealed {name} is damaged", hint="set it again")
    try:
        return AESGCM(key).decrypt(blob[1:13], blob[13:], b"appliance-secret/v1/" + name.encode()).decode()
    except (InvalidTag, UnicodeDecodeError):
        pass
    raise SealError(f"the {name} was sealed under another database credential than this node's",
                    hint="set it again from a node that uses the cluster's database account")
