"""The client's end of one testbed connection: the socket (TLS for tls://), frames with deadlines, the handshake.

Plain blocking sockets with per-call deadlines (no event loop on the client side: lower latency,
simpler failure modes). A broken connection raises :class:`Lost`, which the caller may answer by
reconnecting and resending; everything else is final. With a key the link answers the server's
challenge and tags every frame (see ``auth``); it refuses a server that cannot prove it holds the
same key.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from sim2real.testbed.auth import KEY_FILE_ENV, FrameTags, client_proof, new_nonce, session_tags
from sim2real.testbed.credentials import Credentials
from sim2real.testbed.protocol import (
    AUTH,
    CHALLENGE,
    ERROR,
    HELLO,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    WELCOME,
    Code,
    FrameDecoder,
    ProtocolError,
    RemoteError,
    TestbedError,
    TestbedTimeout,
    check_version,
    frame,
    pack_body,
    unpack_message,
)

SCHEMES = ("tcp", "tls")
_KEEPS_CONNECTION = (
    Code.EPISODE, Code.SEQ_GAP, Code.STALE_SEQ, Code.EPISODE_OVER, Code.BAD_ACTION, Code.ENV_ERROR,
)


class Lost(Exception):
    """The connection broke (reset, EOF, broken pipe): the request may be resent."""


def parse_address(address: str) -> tuple[str, str, int]:
    """Split "tcp://host:port" or "tls://host:port" into (scheme, host, port)."""
    try:
        parts = urlsplit(address)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError:
        scheme = host = port = None
    if scheme not in SCHEMES or not host or port is None:
        raise TestbedError(f"testbed address {address!r} is not accepted; expected tcp://HOST:PORT or tls://HOST:PORT")
    return scheme, host, port


class Link:
    """One connection at a time to the testbed at `address`; reopened by :meth:`connect` after :meth:`drop`."""

    def __init__(self, address: str, credentials: Credentials) -> None:
        self.address = address
        self.scheme, self.host, self.port = parse_address(address)
        self.credentials = credentials
        if (self.scheme == "tls") != (credentials.tls is not None):
            raise TestbedError(
                f"testbed {address}: a tls:// address needs a CA file (--tls-ca) or a pinned fingerprint "
                f"(--tls-fingerprint), and those apply to tls:// addresses only"
            )
        self._tls_context = credentials.tls.context() if credentials.tls else None
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(MAX_FRAME_BYTES)
        self._bodies: deque[bytes] = deque()
        self._tags: FrameTags | None = None
        self.handshaking = False
        self.opened = 0
        """Sockets opened (TLS included) so far: every connection, first or not."""
        self.last_io = time.monotonic()

    @property
    def connected(self) -> bool:
        """Whether a socket is open (it may still turn out broken at the next send or receive)."""
        return self._sock is not None

    def connect(self, deadline: float, session: str | None) -> dict[str, Any]:
        """Open the socket and run the handshake, asking to resume `session`; the server's WELCOME."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TestbedTimeout(f"testbed {self.address}: no time left to connect")
        try:
            sock = socket.create_connection((self.host, self.port), timeout=remaining)
        except ConnectionRefusedError as exc:
            raise TestbedError(f"testbed {self.address} refused the connection: {exc}") from None
        except TimeoutError:
            raise TestbedTimeout(f"testbed {self.address}: no connection within the deadline") from None
        except OSError as exc:
            raise TestbedError(f"testbed {self.address} is unreachable: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.drop()
        self.handshaking = True
        self._sock = self._wrap_tls(sock, deadline) if self._tls_context is not None else sock
        self.opened += 1
        nonce = new_nonce()
        self.send(pack_body({"type": HELLO, "version": PROTOCOL_VERSION, "session": session, "nonce": nonce}),
                  deadline)
        reply = self.receive(deadline)
        key = self.credentials.key
        if reply["type"] == CHALLENGE:
            if key is None:
                raise TestbedError(
                    f"testbed {self.address} requires a key: pass --key-file FILE (or set {KEY_FILE_ENV})"
                )
            proof = client_proof(key, nonce, reply["nonce"], session)
            self.send(pack_body({"type": AUTH, "proof": proof}), deadline)
            self._tags = session_tags(key, nonce, reply["nonce"], server=False)
            reply = self.receive(deadline)
        elif key is not None and reply["type"] == WELCOME:
            raise TestbedError(
                f"testbed {self.address} runs without a key, so it cannot prove it is the testbed the key is for; "
                f"refusing to connect (drop --key-file to use a key-less server on this machine)"
            )
        welcome = self.expect(reply, WELCOME)
        check_version(PROTOCOL_VERSION, welcome["version"], us="client", them=f"testbed {self.address}")
        return welcome

    def handshake_done(self) -> None:
        """The client accepted the WELCOME: from now on a non-frame or an untagged frame is an error."""
        self.handshaking = False

    def _wrap_tls(self, sock: socket.socket, deadline: float) -> ssl.SSLSocket:
        """Run the TLS handshake and check the server's certificate; failures are final, one line each."""
        assert self._tls_context is not None and self.credentials.tls is not None
        try:
            sock.settimeout(max(1e-3, deadline - time.monotonic()))
            wrapped = self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise TestbedError(
                f"testbed {self.address}: its certificate failed verification ({exc.verify_message}); "
                f"refusing to connect"
            ) from None
        except ssl.SSLEOFError as exc:
            sock.close()
            raise Lost(f"the connection ended in the TLS handshake ({exc.reason})") from None
        except ssl.SSLError as exc:
            sock.close()
            raise TestbedError(
                f"testbed {self.address}: TLS handshake failed ({exc.reason or exc}); "
                f"if the server does not serve TLS, connect with tcp://"
            ) from None
        except TimeoutError:
            sock.close()
            raise TestbedTimeout(f"testbed {self.address}: no TLS handshake within the deadline") from None
        except OSError as exc:
            sock.close()
            raise Lost(f"the connection broke in the TLS handshake ({exc})") from None
        try:
            self.credentials.tls.check_pin(wrapped.getpeercert(binary_form=True), self.address)
        except TestbedError:
            wrapped.close()
            raise
        return wrapped

    def expect(self, reply: dict[str, Any], kind: str) -> dict[str, Any]:
        """The reply if it is of `kind`; a server ERROR raised as RemoteError (dropping the link unless it keeps)."""
        if reply["type"] == ERROR:
            if reply["code"] not in _KEEPS_CONNECTION:
                self.drop()
            raise RemoteError(reply["code"], reply["message"])
        if reply["type"] != kind:
            self.drop()
            raise ProtocolError(Code.BAD_MESSAGE, f"got a {reply['type']} reply; expected {kind}")
        return reply

    def send(self, body: bytes, deadline: float) -> None:
        """Frame (and tag) one message body and send it before the deadline."""
        sock = self._live_socket(deadline)
        try:
            sock.sendall(self._frame(body))
        except TimeoutError:
            raise TestbedTimeout(f"testbed {self.address}: could not send within the deadline") from None
        except OSError as exc:
            raise Lost(f"send failed: {exc}") from None
        self.last_io = time.monotonic()

    def say_goodbye(self, body: bytes, timeout: float) -> None:
        """Send a last message without waiting for an answer, then close; a broken link is simply closed."""
        try:
            if self._sock is not None:
                self._sock.settimeout(timeout)
                self._sock.sendall(self._frame(body))
        except OSError:
            pass
        finally:
            self.drop()

    def _frame(self, body: bytes) -> bytes:
        return frame(body if self._tags is None else self._tags.seal(body))

    def receive(self, deadline: float) -> dict[str, Any]:
        """Read one frame before the deadline and return the validated message (tag checked and removed)."""
        while not self._bodies:
            sock = self._live_socket(deadline)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise TestbedTimeout(
                    f"testbed {self.address}: no reply within the deadline (server hung or network stalled)"
                ) from None
            except OSError as exc:
                raise Lost(f"receive failed: {exc}") from None
            if not chunk:
                raise Lost("the server closed the connection")
            self._bodies.extend(self._split(chunk))
        self.last_io = time.monotonic()
        return self._open(self._bodies.popleft())

    def _split(self, chunk: bytes) -> list[bytes]:
        """Complete frame bodies; in the handshake, a non-frame means the server speaks something else."""
        try:
            return self._decoder.feed(chunk)
        except ProtocolError:
            if not self.handshaking:
                raise
            hint = "tcp://" if self.scheme == "tls" else "tls:// if it serves TLS"
            raise TestbedError(
                f"testbed {self.address} does not answer in the sim2real testbed protocol; connect with {hint}"
            ) from None

    def _open(self, body: bytes) -> dict[str, Any]:
        """Check the tag and decode; in the handshake an untagged ERROR is taken (it can only end the attempt)."""
        if self._tags is None:
            return unpack_message(body)
        try:
            return unpack_message(self._tags.open(body))
        except ProtocolError:
            if self.handshaking:
                message = unpack_message(body)
                if message["type"] == ERROR:
                    return message
            raise

    def _live_socket(self, deadline: float) -> socket.socket:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TestbedTimeout(f"testbed {self.address}: deadline passed")
        if self._sock is None:
            raise Lost("not connected")
        self._sock.settimeout(remaining)
        return self._sock

    def drop(self) -> None:
        """Close the socket and forget its frames and tags (the next request reconnects)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._decoder = FrameDecoder(MAX_FRAME_BYTES)
        self._bodies.clear()
        self._tags = None
