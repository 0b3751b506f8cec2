"""What a client brings to a testbed: the shared key and, for tls://, how to check the server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sim2real.testbed.auth import load_key_file
from sim2real.testbed.tls import ClientTLS, parse_fingerprint


@dataclass(frozen=True)
class Credentials:
    """A client's key (None: the server must run without one) and TLS check (needed for tls:// only)."""

    key: bytes | None = None
    tls: ClientTLS | None = None

    @classmethod
    def load(
        cls, key_file: str | Path | None = None, tls_ca: str | Path | None = None, tls_fingerprint: str | None = None
    ) -> Credentials:
        """Read a key file (private, hex) and the TLS settings given; each argument is optional."""
        key = load_key_file(key_file) if key_file else None
        tls = None
        if tls_ca or tls_fingerprint:
            tls = ClientTLS(ca_file=Path(tls_ca) if tls_ca else None,
                            fingerprint=parse_fingerprint(tls_fingerprint) if tls_fingerprint else None)
        return cls(key=key, tls=tls)
