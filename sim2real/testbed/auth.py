"""Testbed authentication: shared key files, the challenge–response proof and per-frame tags.

The key is random bytes in a file only its owner can read; it never crosses the wire. In the
handshake the client answers the server's fresh nonce with HMAC-SHA256(key, label | client nonce |
server nonce | session), which the server compares in constant time, so a proof captured from one
connection is worthless on the next. Both sides then derive one key per direction from the two
nonces, and every later frame carries a keyed BLAKE2b tag over a frame counter and the body: a frame
injected, replayed, reordered or reflected on a plain TCP link is refused, and the server's first
tagged frame (WELCOME) proves to the client that the server holds the key too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Any

from sim2real.testbed.protocol import NONCE_BYTES, TAG_BYTES, Code, ProtocolError, TestbedError

KEY_BYTES = 32
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 1024
KEY_FILE_ENV = "SIM2REAL_TESTBED_KEY_FILE"
_PROOF_LABEL = b"sim2real-testbed/2 client proof\0"
_CLIENT_TO_SERVER = b"sim2real-testbed/2 client to server\0"
_SERVER_TO_CLIENT = b"sim2real-testbed/2 server to client\0"


def generate_key_file(path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a fresh random key (hex) to `path`, readable by its owner alone; refuse to replace one unasked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        raise TestbedError(f"key file {path} exists: a key is never replaced unasked (--force replaces it)") from None
    except OSError as exc:
        raise TestbedError(f"cannot write key file {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(os.urandom(KEY_BYTES).hex() + "\n")
    return path


def load_key_file(path: str | Path) -> bytes:
    """Read a key file; refuse one that others can read, or that holds no hex key of 16-1024 bytes."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise TestbedError(f"key file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TestbedError(f"key file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise TestbedError(
            f"key file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"a key must be private: chmod 600 {path}"
        )
    text = path.read_text(errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise TestbedError(
            f"key file {path} does not hold a key; accepted: {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes as hex "
            f"(`sim2real testbed keygen {path}` writes one)"
        )
    return key


def new_nonce() -> bytes:
    """A fresh random nonce for one handshake."""
    return os.urandom(NONCE_BYTES)


def client_proof(key: bytes, client_nonce: bytes, server_nonce: bytes, session: str | None) -> bytes:
    """The client's answer to a challenge: HMAC-SHA256 over both nonces and the session it asked for."""
    bound = (session or "").encode()
    return hmac.digest(key, _PROOF_LABEL + client_nonce + server_nonce + bound, hashlib.sha256)


def proof_is_valid(
    key: bytes, proof: bytes, client_nonce: bytes, server_nonce: bytes, session: str | None
) -> bool:
    """Check a client's proof in constant time."""
    return hmac.compare_digest(proof, client_proof(key, client_nonce, server_nonce, session))


class FrameTags:
    """Tags the frames one side sends and checks those it receives, each direction with its own key and counter."""

    def __init__(self, send_key: bytes, receive_key: bytes) -> None:
        self._send = hashlib.blake2b(key=send_key, digest_size=TAG_BYTES)  # keyed once, copied per frame
        self._receive = hashlib.blake2b(key=receive_key, digest_size=TAG_BYTES)
        self._sent = 0
        self._received = 0

    def seal(self, body: bytes) -> bytes:
        """Append the tag of the next outgoing frame."""
        tag = _tag(self._send, self._sent, body)
        self._sent += 1
        return body + tag

    def open(self, sealed: bytes) -> bytes:
        """Check and strip the tag of the next incoming frame; a bad tag is a ProtocolError (auth)."""
        body = sealed[:-TAG_BYTES]
        if len(sealed) <= TAG_BYTES or not hmac.compare_digest(sealed[-TAG_BYTES:],
                                                               _tag(self._receive, self._received, body)):
            raise ProtocolError(Code.AUTH, f"frame {self._received} of this connection failed authentication")
        self._received += 1
        return body


def _tag(keyed: Any, counter: int, body: bytes) -> bytes:
    """Keyed BLAKE2b over the frame's counter and body."""
    state = keyed.copy()
    state.update(counter.to_bytes(8, "big"))
    state.update(body)
    return state.digest()


def session_tags(key: bytes, client_nonce: bytes, server_nonce: bytes, *, server: bool) -> FrameTags:
    """The frame tags of one connection, derived from the shared key and both nonces."""
    nonces = client_nonce + server_nonce
    upstream = hmac.digest(key, _CLIENT_TO_SERVER + nonces, hashlib.sha256)[:32]
    downstream = hmac.digest(key, _SERVER_TO_CLIENT + nonces, hashlib.sha256)[:32]
    return FrameTags(downstream, upstream) if server else FrameTags(upstream, downstream)
