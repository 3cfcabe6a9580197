"""TLS certificates: the server's self-signed certificate and the fingerprint clients pin.

What every client command needs (the fingerprint, the name gRPC checks) is read with
the standard library: importing cryptography.x509, which only making a certificate
needs, cost every command ~20 ms of CPU (issue #15).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import ipaddress
import re
import ssl
from typing import Any

from anysync.errors import UsageError

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


def generate_self_signed(hostnames: list[str], days: int = 3650) -> tuple[bytes, bytes]:
    """(key_pem, cert_pem): EC P-256, SANs for every name and IP address given.

    The certificate is its own CA (basicConstraints CA=true), so a client can use it as
    the only trusted root: that is how the pinned certificate is enforced.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys(hostnames):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the DER certificate (the first of the PEM), 64 lowercase hex digits."""
    found = _PEM_CERTIFICATE.search(cert_pem)
    try:
        der = base64.b64decode(found.group(1)) if found else b""
    except binascii.Error:
        der = b""
    if not der:
        raise ValueError("not a PEM certificate")
    return hashlib.sha256(der).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """Accept 'SHA256:AB:CD…', 'abcd…' and the like; return 64 lowercase hex digits."""
    cleaned = re.sub(r"[\s:]", "", text.strip().lower().removeprefix("sha256:"))
    if not re.fullmatch(r"[0-9a-f]{64}", cleaned):
        raise UsageError(f"not a SHA-256 fingerprint: {text!r} (expected 64 hex digits)")
    return cleaned


def dns_name_for_verification(cert_pem: bytes) -> str:
    """A name from the certificate's SANs for gRPC's host-name check.

    The client trusts exactly this one certificate, so the host-name check adds nothing;
    overriding the target name lets users dial the server by any address.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=cert_pem.decode("ascii"))
    decoded = context.get_ca_certs()
    if len(decoded) != 1:  # a chain, or not a CA (the standard library lists only those)
        return _dns_name_x509(cert_pem)
    cert: dict[str, Any] = decoded[0]  # as SSLSocket.getpeercert() gives it
    sans: tuple[tuple[str, str], ...] = cert.get("subjectAltName", ())
    names = [value for kind, value in sans if kind == "DNS"]
    if names:
        return str(names[0])
    ips = [value for kind, value in sans if kind == "IP Address"]
    if ips:  # OpenSSL spells an IPv6 address out in full; gRPC compares the short form
        return str(ipaddress.ip_address(ips[0]))
    subject: tuple[tuple[tuple[str, str], ...], ...] = cert["subject"]
    cn = [value for rdn in subject for key, value in rdn if key == "commonName"]
    return str(cn[0]) if cn else "localhost"


def _dns_name_x509(cert_pem: bytes) -> str:
    """dns_name_for_verification for any certificate, with cryptography.x509."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return names[0]
        ips = san.get_values_for_type(x509.IPAddress)
        if ips:
            return str(ips[0])
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else "localhost"
