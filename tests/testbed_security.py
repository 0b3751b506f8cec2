"""Test helpers for the authenticated testbed: certificates made on the spot, and the three ways to connect."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sim2real.testbed.auth import generate_key_file
from sim2real.testbed.credentials import Credentials
from sim2real.testbed.tls import certificate_fingerprint, server_context


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class Authority:
    """A certificate authority that signs server certificates for 127.0.0.1 / localhost."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_file: Path

    @classmethod
    def create(cls, folder: Path, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert, _write_cert(cert, folder / f"{name}.pem"))

    def issue(self, folder: Path, name: str, *, expired: bool = False) -> tuple[Path, Path]:
        """(certificate, private key) files for 127.0.0.1 and localhost; `expired`: valid until yesterday."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        start, end = (now - dt.timedelta(days=10), now - dt.timedelta(days=1)) if expired else (
            now - dt.timedelta(days=1), now + dt.timedelta(days=30))
        names = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                             x509.DNSName("localhost")])
        cert = (x509.CertificateBuilder().subject_name(_name("testbed")).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end).add_extension(names, critical=False)
                .sign(self.key, hashes.SHA256()))
        return _write_cert(cert, folder / f"{name}.pem"), _write_key(key, folder / f"{name}.key")


@dataclass
class Lab:
    """A key file, a CA and the certificates a test needs, all under one temporary folder."""

    folder: Path
    key_file: Path
    ca: Authority
    other_ca: Authority
    cert: Path
    cert_key: Path
    expired_cert: Path
    expired_key: Path

    @classmethod
    def create(cls, folder: Path) -> Lab:
        ca, other = Authority.create(folder, "lab-ca"), Authority.create(folder, "other-ca")
        cert, cert_key = ca.issue(folder, "server")
        expired, expired_key = ca.issue(folder, "expired", expired=True)
        return cls(folder, generate_key_file(folder / "lab.key"), ca, other, cert, cert_key, expired, expired_key)

    def server_tls(self) -> ssl.SSLContext:
        """The server's TLS context: the certificate the lab CA signed for 127.0.0.1."""
        return server_context(self.cert, self.cert_key)

    def credentials(self, *, tls: bool, pin: bool = False) -> Credentials:
        """The client side: the key, and for TLS the CA file (or the server certificate's pin)."""
        if not tls:
            return Credentials.load(self.key_file)
        if pin:
            return Credentials.load(self.key_file, tls_fingerprint=certificate_fingerprint(self.cert))
        return Credentials.load(self.key_file, tls_ca=self.ca.cert_file)
