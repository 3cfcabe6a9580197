"""anysync.tls reads certificates with the standard library (issue #15); these check it
gives what cryptography.x509 gives, for the certificates a server makes and others."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from anysync import tls


def x509_fingerprint(cert_pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def make_cert(common_name: str, sans: list[x509.GeneralName], ca: bool) -> bytes:
    """A self-signed certificate, with or without SANs, a CA or not."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_fingerprint_is_the_sha256_of_the_der() -> None:
    _, cert = tls.generate_self_signed(["localhost", "127.0.0.1"])
    assert tls.fingerprint(cert) == x509_fingerprint(cert)


def test_fingerprint_takes_the_first_certificate_of_a_pem() -> None:
    _, first = tls.generate_self_signed(["one.example"])
    _, second = tls.generate_self_signed(["two.example"])
    assert tls.fingerprint(b"Subject: one\n" + first + second) == x509_fingerprint(first)


@pytest.mark.parametrize("pem", [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\n"])
def test_fingerprint_refuses_what_is_no_certificate(pem: bytes) -> None:
    with pytest.raises(ValueError, match="not a PEM certificate"):
        tls.fingerprint(pem)


@pytest.mark.parametrize(
    ("hostnames", "expected"),
    [
        (["localhost", "127.0.0.1", "pi.lan"], "localhost"),
        (["127.0.0.1", "pi.lan"], "pi.lan"),  # a DNS name first, wherever it is
        (["10.1.2.3"], "10.1.2.3"),
        (["::1", "fe80::1"], "::1"),  # the short form gRPC compares with
    ],
)
def test_the_name_checked_is_the_certificates(hostnames: list[str], expected: str) -> None:
    _, cert = tls.generate_self_signed(hostnames)
    assert tls.dns_name_for_verification(cert) == expected
    assert tls._dns_name_x509(cert) == expected


def test_without_sans_the_common_name_is_checked() -> None:
    cert = make_cert("server.example", [], ca=True)
    assert tls.dns_name_for_verification(cert) == "server.example"


def test_a_certificate_that_is_no_ca_is_read_too() -> None:
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("192.0.2.7"))]
    cert = make_cert("leaf", sans, ca=False)
    assert tls.dns_name_for_verification(cert) == "192.0.2.7"
