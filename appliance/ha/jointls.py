"""The join service's TLS identity: a self-signed certificate per node, pinned by the join codes it issues.

No CA is involved: a join code carries the SHA-256 fingerprint of the issuing node's certificate, and
the joining node accepts exactly that certificate (:func:`fingerprint_of`). The key (EC P-256) is made
once by the agent, in ``<state_dir>/join/`` (key 0600, certificate 0644), written atomically; the shell
only reads the certificate to put its fingerprint in a code.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from appliance.config import Config
from appliance.errors import NotConfigured
from appliance.fsutil import write_atomic


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def files(config: Config) -> TlsFiles:
    base = config.paths.state_dir / "join"
    return TlsFiles(base / "cert.pem", base / "key.pem")


def ensure(config: Config, name: str) -> TlsFiles:
    """The node's certificate and key, made now if there are none (by the agent, at start)."""
    paths = files(config)
    if paths.cert.exists() and paths.key.exists():
        return paths
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"appliance join service {name}"[:64])])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650)).sign(key, hashes.SHA256()))
    paths.cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(paths.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode(), mode=0o600)
    write_atomic(paths.cert, cert.public_bytes(serialization.Encoding.PEM).decode(), mode=0o644)
    return paths


def fingerprint_of(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


def own_fingerprint(config: Config) -> bytes:
    """The fingerprint of this node's join-service certificate.

    :raises NotConfigured: the agent has not made one yet (it does when it starts).
    """
    try:
        pem = files(config).cert.read_text()
    except OSError:
        raise NotConfigured("this node's join service has no certificate yet",
                            hint="start the node's agent (appliance-agent); it makes one") from None
    return fingerprint_of(ssl.PEM_cert_to_DER_cert(pem))


def server_context(paths: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(paths.cert, paths.key)
    return context


def pinned_client_context() -> ssl.SSLContext:
    """A client context that checks nothing by itself: the caller compares the peer's fingerprint."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
