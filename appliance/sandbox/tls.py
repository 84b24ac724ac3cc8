"""TLS for the sandbox's "remote" PostgreSQL: a CA of its own, and a server certificate it signs.

So that ``redirect --db_sslmode verify-full --db_sslrootcert DIR/ca.crt`` works end to end on one
machine, as it should on a real network: the server certificate names ``localhost``, ``127.0.0.1`` and
``::1`` (the names the sandbox dials), and is signed by a CA made for this sandbox alone. The CA's
private key is used once and never written anywhere, so nothing else can ever be signed with it.
The test suite uses the same builder to give a throw-away cluster TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825  # the longest server certificate lifetime browsers ever accepted; plenty for a sandbox


@dataclass(frozen=True)
class TlsMaterial:
    """PEM texts: the CA certificate (for clients), the server's certificate and its private key."""

    ca_cert: bytes
    server_cert: bytes
    server_key: bytes = b""

    def __repr__(self) -> str:
        return "TlsMaterial(...)"  # the key stays out of any repr


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls(label: str, names: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
             *, ca_label: str | None = None) -> TlsMaterial:
    """A new CA and a server certificate for ``names`` (host names and IP addresses) signed by it.

    :param label: the server certificate's common name.
    :param ca_label: the CA's common name (default: derived from ``label``).
    """
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(ca_label or f"{label} CA")
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder().subject_name(_name(label)).issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return TlsMaterial(
        ca_cert=ca_cert.public_bytes(serialization.Encoding.PEM),
        server_cert=cert.public_bytes(serialization.Encoding.PEM),
        server_key=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
    )
