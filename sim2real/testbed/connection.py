"""One client connection of the testbed server: frames split and timed, TLS started, messages handed to the server.

A connection moves through the handshake states NEW → CHALLENGED (a key is required) → READY;
everything it decides beyond framing (what a message means, who controls the env) is the
server's, which it calls back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from sim2real.testbed.auth import FrameTags
from sim2real.testbed.protocol import Code, FrameDecoder, ProtocolError, error_message, frame, pack_body, unpack_message

if TYPE_CHECKING:
    from sim2real.testbed.server import TestbedServer

logger = logging.getLogger("sim2real.testbed.server")  # what a connection logs is the server's to say

NEW, CHALLENGED, READY = "new", "challenged", "ready"


class Connection(asyncio.Protocol):
    """One TCP connection: splits frames, hands messages to the server, enforces the frame timeout."""

    def __init__(self, server: TestbedServer) -> None:
        self.server = server
        self.decoder = FrameDecoder(server.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.session: str | None = None
        self.state = NEW
        self.wanted_session: str | None = None
        self.client_nonce = b""
        self.server_nonce = b""
        self.tags: FrameTags | None = None
        self.peer = "?"
        self.peer_host = "?"
        self.opened_at = self.last_seen = time.monotonic()
        self.partial_since: float | None = None
        self.closed_at: float | None = None
        self.tls_pending = server.tls is not None
        self._tls_task: asyncio.Task[None] | None = None
        self._early = bytearray()  # decrypted bytes that arrive before start_tls() hands back the TLS transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer_host, self.peer = str(host), f"{host}:{port}"
        self.server._on_connect(self)
        if self.tls_pending and self.closed_at is None:
            self._tls_task = asyncio.get_running_loop().create_task(self._start_tls())

    async def _start_tls(self) -> None:
        """TLS over the accepted connection (after the rate limit), so a failed TLS handshake is refused and logged."""
        assert self.transport is not None and self.server.tls is not None
        try:
            transport = await asyncio.get_running_loop().start_tls(
                self.transport, self, self.server.tls, server_side=True,
                ssl_handshake_timeout=self.server.handshake_timeout,
            )
        except Exception as exc:  # ssl errors, a timeout, a reset: the peer did not finish TLS with us
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self.fail(Code.HANDSHAKE, f"TLS handshake failed ({reason})")
            return
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.tls_pending = transport, False
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self.data_received(early)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._on_lost(self)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.closed_at is None:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        if self.decoder.pending:
            self.fail(Code.BAD_FRAME, f"the connection ended inside a frame ({self.decoder.pending} bytes read)")
        return False

    def data_received(self, data: bytes) -> None:
        if self.tls_pending:
            self._early += data[: self.decoder.max_bytes + 4 - len(self._early)]
            return
        if self.closed_at is not None:
            return
        now = time.monotonic()
        self.last_seen = now
        try:
            bodies = self.decoder.feed(data)
            for body in bodies:
                if self.closed_at is not None:
                    return
                if self.tags is not None:
                    body = self.tags.open(body)
                self.server._dispatch(self, unpack_message(body, self.decoder.max_bytes), now)
        except ProtocolError as exc:
            self.fail(exc.code, exc.detail)
            return
        except Exception as exc:
            logger.exception("internal error serving %s", self.peer)
            self.fail(Code.INTERNAL, f"internal server error: {type(exc).__name__}")
            return
        if not self.decoder.pending:
            self.partial_since = None
        elif bodies or self.partial_since is None:
            self.partial_since = now

    def send(self, body: bytes) -> None:
        """Frame a message body (tagged once the connection is authenticated) and write it."""
        if self.transport is not None and self.closed_at is None:
            self.transport.write(frame(body if self.tags is None else self.tags.seal(body)))

    def fail(self, code: str, message: str) -> None:
        """Answer a protocol violation with a typed ERROR, then close this connection."""
        if self.closed_at is not None:
            return
        self.server._record_error(code, fatal=True)
        if self.state == READY:
            logger.info("closing %s: %s", self.peer, message)
        else:
            self.server._counts["refused"] += 1
            logger.warning("refused %s: %s", self.peer, message)
        if not self.tls_pending:  # before TLS is up, a plain frame would only garble the peer's handshake
            self.send(pack_body(error_message(code, message)))
        self.close()

    def close(self) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()
            self.server._release(self)
            if self.transport is not None:
                self.transport.close()
