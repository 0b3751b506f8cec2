"""TLS for the testbed link (`tls://HOST:PORT`): the server's context, the client's, certificate pins.

The client checks the server's identity one of two ways: against a CA file (the certificate must be
valid now and name the host), or against a pinned SHA-256 fingerprint of the server's certificate
(for a lab's self-signed certificate; `sim2real testbed fingerprint CERT` prints it).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sim2real.testbed.protocol import TestbedError


def server_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context for the certificate chain and its private key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except FileNotFoundError as exc:
        raise TestbedError(f"TLS certificate or key not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise TestbedError(
            f"TLS certificate {cert_file} and key {key_file} cannot be used: {exc}; accepted: PEM files of one pair"
        ) from None
    return context


def self_signed_certificate(cert_file: str | Path, key_file: str | Path, hosts: list[str], days: int = 365) -> str:
    """Write a self-signed certificate for `hosts` (names or IPs) and its private key (mode 600) with the
    `openssl` command; return the fingerprint clients pin. Refuses to replace either file."""
    cert_file, key_file = Path(cert_file), Path(key_file)
    for path in (cert_file, key_file):
        if path.exists():
            raise TestbedError(f"{path} exists: a certificate or key is never replaced unasked")
    if not hosts:
        raise TestbedError("a certificate needs at least one host name or IP address the clients connect to")
    if not (isinstance(days, int) and days >= 1):
        raise TestbedError(f"days={days!r}; accepted: an int >= 1")
    openssl = shutil.which("openssl")
    for path in (cert_file, key_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    if openssl is None:
        raise TestbedError("the openssl command is not installed; install it, or bring a certificate of your own")
    names = ",".join(f"{'IP' if _is_ip(host) else 'DNS'}:{host}" for host in hosts)
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-days", str(days), "-subj", f"/CN={hosts[0]}", "-addext", f"subjectAltName={names}",
               "-keyout", str(key_file), "-out", str(cert_file)]
    made = subprocess.run(command, capture_output=True, text=True, check=False,
                          preexec_fn=lambda: os.umask(0o077))
    if made.returncode != 0:
        raise TestbedError(f"openssl could not make the certificate: {made.stderr.strip().splitlines()[-1:]}")
    key_file.chmod(0o600)
    cert_file.chmod(0o644)
    return certificate_fingerprint(cert_file)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_fingerprint(text: str) -> bytes:
    """A SHA-256 certificate fingerprint given as 64 hex digits; colons and a `sha256:` prefix are optional."""
    digits = re.sub(r"^sha256[:/]", "", text.strip(), flags=re.IGNORECASE).replace(":", "")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", digits):
        raise TestbedError(
            f"certificate fingerprint {text[:80]!r} is not accepted; expected SHA-256 as 64 hex digits "
            f"(`sim2real testbed fingerprint CERT` prints it)"
        )
    return bytes.fromhex(digits)


def certificate_fingerprint(cert_file: str | Path) -> str:
    """The SHA-256 fingerprint of a PEM certificate, as colon-separated hex (what a client pins)."""
    try:
        der = ssl.PEM_cert_to_DER_cert(Path(cert_file).read_text())
    except OSError as exc:
        raise TestbedError(f"certificate {cert_file} cannot be read: {exc.strerror}") from None
    except ValueError:
        raise TestbedError(f"{cert_file} is not a PEM certificate") from None
    return format_fingerprint(hashlib.sha256(der).digest())


def format_fingerprint(digest: bytes) -> str:
    """Colon-separated upper-case hex, as `openssl x509 -fingerprint -sha256` prints it."""
    return ":".join(f"{byte:02X}" for byte in digest)


@dataclass(frozen=True)
class ClientTLS:
    """How a client checks the server: a CA file, or a pinned certificate fingerprint (SHA-256)."""

    ca_file: Path | None = None
    fingerprint: bytes | None = None

    def __post_init__(self) -> None:
        if (self.ca_file is None) == (self.fingerprint is None):
            raise TestbedError(
                "a tls:// testbed needs one way to check the server: a CA file (--tls-ca) or a pinned "
                "certificate fingerprint (--tls-fingerprint)"
            )

    def context(self) -> ssl.SSLContext:
        """The client context: CA verification with the host name checked, or none (the pin is checked after)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca_file is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            context.load_verify_locations(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TestbedError(f"CA file {self.ca_file} cannot be used: {exc}") from None
        return context

    def check_pin(self, der: bytes | None, address: str) -> None:
        """Refuse a server whose certificate is not the pinned one."""
        if self.fingerprint is None:
            return
        actual = hashlib.sha256(der or b"").digest()
        if not hmac.compare_digest(actual, self.fingerprint):
            raise TestbedError(
                f"testbed {address} presented certificate {format_fingerprint(actual)}, not the pinned "
                f"{format_fingerprint(self.fingerprint)}: refusing to connect"
            )
