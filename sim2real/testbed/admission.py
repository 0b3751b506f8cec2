"""Who may reach the env: loopback or a key, the server's key and certificate from files, handshakes rationed.

A server without a key listens on loopback only (unless told ``insecure``); failed or abandoned
handshakes are limited per peer host, so guessing, scanning and fuzzing are slowed.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
from pathlib import Path

from sim2real.testbed.auth import MAX_KEY_BYTES, MIN_KEY_BYTES, load_key_file
from sim2real.testbed.protocol import TestbedError
from sim2real.testbed.tls import server_context

FORGET_AFTER = 60.0
"""Seconds after which an idle peer's bucket may be dropped (only once 10,000 hosts are tracked)."""


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1): reachable from this machine alone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_security(
    key_file: str | Path | None, tls_cert: str | Path | None, tls_key: str | Path | None
) -> tuple[bytes | None, ssl.SSLContext | None]:
    """The key and TLS context a server runs with, from its files (TLS needs both certificate and key)."""
    if (tls_cert is None) != (tls_key is None):
        raise TestbedError("TLS needs both a certificate (--tls-cert) and its private key (--tls-key)")
    key = load_key_file(key_file) if key_file else None
    tls = server_context(tls_cert, tls_key) if tls_cert and tls_key else None
    return key, tls


def check_exposure(host: str, key: bytes | None, insecure: bool) -> None:
    """Refuse a server reachable beyond this machine without a key (unless insecure), and a key of the wrong size."""
    if key is None and not insecure and not is_loopback(host):
        raise TestbedError(
            f"refusing to serve on {host} without a key: anyone who reaches the port could drive the env; "
            f"give a key (`sim2real testbed keygen FILE`, then --key-file FILE), listen on 127.0.0.1, "
            f"or pass --insecure to accept the risk"
        )
    if key is not None and not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise TestbedError(f"a key of {len(key)} bytes; accepted: {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes")


class HandshakeLimit:
    """Token bucket per peer host: `burst` handshakes at once, refilled at `rate` per second.

    Every connection takes a token and a finished handshake gives it back, so what is limited is
    failed or abandoned handshakes: guessing, scanning, fuzzing.
    """

    def __init__(self, burst: int, rate: float) -> None:
        self.burst, self.rate = burst, rate
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, host: str) -> bool:
        """Take a token for a new connection from `host`; False when its bucket is empty."""
        now = time.monotonic()
        tokens, since = self._buckets.get(host, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - since) * self.rate)
        if len(self._buckets) > 10_000:
            self._buckets = {h: b for h, b in self._buckets.items() if now - b[1] < FORGET_AFTER}
        self._buckets[host] = (tokens - 1.0 if tokens >= 1.0 else tokens, now)
        return tokens >= 1.0

    def refund(self, host: str) -> None:
        """A finished handshake costs nothing: the limit is on strangers, not on a client that reconnects."""
        tokens, since = self._buckets.get(host, (float(self.burst), time.monotonic()))
        self._buckets[host] = (min(float(self.burst), tokens + 1.0), since)
