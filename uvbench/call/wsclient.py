"""A lean websocket client for one call: RFC 6455 on an asyncio protocol, no task per frame.

Why not the `websockets` connection object: at a few hundred concurrent calls the client's CPU
went into its per-message machinery (a send lock and context manager per frame, a task wake-up
per received frame, a generator-based parser), not into the audio. Here the hot paths are plain
calls: `send_binary` frames, masks and writes in one go (a send is one `transport.write`, i.e.
one system call), and every frame read is handed to the call's handlers from `data_received`,
stamped once with the time its bytes arrived. Frames that arrive together are stamped together,
as they arrived (earlier and more exactly than a receiver task could stamp them).

What a call needs and nothing more: ws:// and wss:// (directly, or through the HTTP(S) proxy the
environment names, as `websockets` would use it), the opening handshake (the accept key is
checked; no extensions, no subprotocols, no redirects), text and binary messages (fragmented or
not), pings answered, the closing handshake in both directions. Errors reuse the `websockets`
exception classes (`ConnectionClosedOK` / `ConnectionClosedError`), so code written against that
library reads the same. Client frames are masked as RFC 6455 requires, with keys from `os.urandom` read
in blocks, and the XOR done by `websockets`' C speedup when it is compiled.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import ssl as ssl_module
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.frames import OK_CLOSE_CODES, Close

try:  # the C version, when websockets was built with it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER_BYTES = 64 * 1024
CLOSE_TIMEOUT_S = 10.0
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NO_STATUS, ABNORMAL, PROTOCOL_ERROR, INVALID_DATA = 1005, 1006, 1002, 1007
MASK_POOL_BYTES = 4096
BURST_SLICE_NS = 1_000_000
"""Longest stretch spent parsing one read before yielding to the event loop."""


def _never() -> int:
    return 1 << 62


OnBinary = Callable[[bytes, int], None]
OnText = Callable[[str, int], None]


@functools.cache
def tls_context() -> ssl_module.SSLContext:
    """One default TLS context for every call: making one loads the CA store (milliseconds of CPU
    that would stall every other call's pacer at each join)."""
    return ssl_module.create_default_context()


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for this URL (HTTPS_PROXY, NO_PROXY, ...), as `websockets`
    would choose it; None for a direct connection (or a `websockets` without proxy support)."""
    try:
        from websockets.proxy import get_proxy
        from websockets.uri import parse_uri
    except ImportError:  # pragma: no cover - websockets < 15
        return None
    return get_proxy(parse_uri(url))


class JoinError(Exception):
    """The websocket could not be opened: the server refused the upgrade or answered wrongly."""


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


@functools.lru_cache(maxsize=256)
def frame_header(opcode: int, length: int) -> bytes:
    """FIN + opcode, MASK bit + payload length (7, 7+16 or 7+64 bits). Cached: a call's chunks all
    have one length."""
    if length < 126:
        return bytes((0x80 | opcode, 0x80 | length))
    if length < 1 << 16:
        return bytes((0x80 | opcode, 0xFE)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, 0xFF)) + length.to_bytes(8, "big")


class CallSocket(asyncio.Protocol):
    """One client websocket. `await CallSocket.connect(url)`, then `start(on_binary, on_text)`.

    Handlers run inside `data_received` with the arrival time (`time.monotonic_ns()`) of the
    bytes that completed the frame; they must not block. If a handler raises, the connection is
    aborted and the exception is kept in `error`. `closed` is a future done when the TCP
    connection is gone; then `close_code` is the code the server sent (1005 for none, 1006 when
    there was no closing handshake) and `close_reason` its reason.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.opened_ns = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.error: BaseException | None = None
        self.writing_paused = False
        self._opened: asyncio.Future[None] = self.loop.create_future()
        self._reading_frames = False
        """The handshake's response has been read: what arrives now is frames."""
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._head = bytearray()
        self._pending: list[tuple[int, bytes]] | None = []
        """Bytes not yet parsed, with their arrival times: those that came after the handshake
        before `start`, and the rest of a burst while the loop runs other callbacks."""
        self._buffer = b""
        self._fragments: list[bytes] | None = None
        self._fragment_opcode = 0
        self._close_sent: Close | None = None
        self._close_rcvd: Close | None = None
        self._close_rcvd_then_sent: bool | None = None
        self._on_binary: OnBinary | None = None
        self._on_text: OnText | None = None
        self._on_writable: list[Callable[[], None]] = []
        self._masks = b""
        self._mask_at = MASK_POOL_BYTES
        self._binary_length = -1
        self._binary_header = b""
        self.yield_at: Callable[[], int] = _never
        """When parsing a burst must give the loop back (CLOCK_MONOTONIC ns): the engine gives the
        process scheduler's next wake-up, so a burst never holds up a chunk that is due."""

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    async def connect(cls, url: str, *, open_timeout: float = 10.0) -> CallSocket:
        """Open the TCP (or TLS) connection and do the opening handshake; JoinError if refused."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise JoinError(f"not a websocket URL: {url}")
        secure = parts.scheme == "wss"
        host = parts.hostname or ""
        port = parts.port or (443 if secure else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = port == (443 if secure else 80)
        netloc = f"[{host}]" if ":" in host else host
        host_header = netloc if default_port else f"{netloc}:{port}"
        socket = cls()
        loop = socket.loop
        proxy = proxy_for(url)
        try:
            async with asyncio.timeout(open_timeout):
                if proxy is None:
                    await loop.create_connection(
                        lambda: socket,
                        host,
                        port,
                        ssl=tls_context() if secure else None,
                        server_hostname=host if secure else None,
                    )
                else:
                    await socket._connect_via(proxy, url, host if secure else None)
                socket._send_request(resource, host_header)
                await socket._opened
        except BaseException as exc:
            if socket.transport is not None:
                socket.transport.abort()
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"timed out during the opening handshake ({open_timeout:g} s)") from None
            raise
        return socket

    async def _connect_via(self, proxy: str, url: str, tls_host: str | None) -> None:
        """Through an HTTP(S) proxy's CONNECT tunnel, as `websockets` does, then TLS if wss://."""
        from websockets.asyncio.client import connect_http_proxy
        from websockets.proxy import parse_proxy
        from websockets.uri import parse_uri

        parsed = parse_proxy(proxy)
        if not parsed.scheme.startswith("http"):
            raise JoinError(
                f"the {parsed.scheme} proxy from the environment is not supported for the call's "
                "websocket (an http:// or https:// proxy is); set NO_PROXY for this host to connect directly"
            )
        extra = {"ssl": True} if parsed.scheme == "https" else {}
        transport = await connect_http_proxy(parsed, parse_uri(url), user_agent_header="uvbench", **extra)
        transport.set_protocol(self)
        if tls_host is not None:
            tls = await self.loop.start_tls(transport, self, tls_context(), server_hostname=tls_host)
            assert tls is not None
            transport = tls
        self.connection_made(transport)

    def _send_request(self, resource: str, host: str) -> None:
        request = (
            f"GET {resource} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "User-Agent: uvbench\r\n"
            "\r\n"
        )
        assert self.transport is not None
        self.transport.write(request.encode())

    def _handshake(self, data: bytes) -> None:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEADER_BYTES:
                self._refuse("the server's handshake response is too long")
            return
        now = time.monotonic_ns()
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
        self._head = bytearray()
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(status) < 2 or not status[0].startswith("HTTP/"):
            return self._refuse(f"not an HTTP response: {lines[0][:100]!r}")
        if status[1] != "101":
            return self._refuse(f"server rejected WebSocket connection: HTTP {status[1]}")
        if headers.get("upgrade", "").lower() != "websocket":
            return self._refuse(f"bad Upgrade header in the handshake: {headers.get('upgrade')!r}")
        if "upgrade" not in headers.get("connection", "").lower():
            return self._refuse(f"bad Connection header in the handshake: {headers.get('connection')!r}")
        if headers.get("sec-websocket-accept") != accept_key(self._key):
            return self._refuse("bad Sec-WebSocket-Accept in the handshake")
        if headers.get("sec-websocket-extensions") or headers.get("sec-websocket-protocol"):
            return self._refuse("the server chose an extension or subprotocol that was not offered")
        self.opened_ns = now
        if rest:
            assert self._pending is not None
            self._pending.append((now, rest))
        self._reading_frames = True
        self._opened.set_result(None)

    def _refuse(self, message: str) -> None:
        if not self._opened.done():
            self._opened.set_exception(JoinError(message))
        if self.transport is not None:
            self.transport.abort()

    def start(self, on_binary: OnBinary, on_text: OnText) -> None:
        """Deliver frames from now on (and those that arrived since the handshake)."""
        self._on_binary, self._on_text = on_binary, on_text
        self._resume()

    def _resume(self) -> None:
        pending, self._pending = self._pending or [], None
        for i, (t_ns, data) in enumerate(pending):
            self._feed(data, t_ns, time.monotonic_ns())
            if self._pending is not None:  # it stopped for the loop again: keep the order
                self._pending.extend(pending[i + 1 :])
                return

    # -- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._reading_frames:
            if not self._opened.done():
                self._handshake(data)
        elif self._pending is not None:
            self._pending.append((time.monotonic_ns(), data))
        else:
            self._feed(data, time.monotonic_ns())

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._opened.done():
            self._opened.set_exception(
                JoinError("the connection closed during the handshake")
                if exc is None
                else JoinError(f"the connection failed during the handshake: {exc}")
            )
        if self._close_rcvd is not None:
            self.close_code, self.close_reason = self._close_rcvd.code, self._close_rcvd.reason
        else:
            self.close_code, self.close_reason = ABNORMAL, ""
        self.writing_paused = False
        if not self.closed.done():
            self.closed.set_result(None)
        self._writable()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._writable()

    def call_when_writable(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the transport's buffer drained below its low-water mark (or on close)."""
        self._on_writable.append(callback)

    def _writable(self) -> None:
        callbacks, self._on_writable = self._on_writable, []
        for callback in callbacks:
            callback()

    # -- reading --------------------------------------------------------------------------------
    def _feed(self, data: bytes, t_ns: int, started_ns: int = 0) -> None:
        """Parse `data`, which arrived at `t_ns`, handing each whole frame on; parsing began at
        `started_ns` (`t_ns` when 0)."""
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        n = len(data)
        i = 0
        frames = 0
        stop = 0  # worked out at the 8th frame: most reads hold one frame
        while n - i >= 2 and self._close_rcvd is None:
            frames += 1
            if not frames % 8:
                if not stop:
                    stop = min((started_ns or t_ns) + BURST_SLICE_NS, self.yield_at())
                if time.monotonic_ns() >= stop:
                    # A burst (a server sending seconds of audio at once): let the loop send the
                    # chunks falling due before going on. Frames keep the time their bytes arrived.
                    self._pending = [(t_ns, data[i:])]
                    self.loop.call_soon(self._resume)
                    return
            b0, b1 = data[i], data[i + 1]
            length = b1 & 0x7F
            h = i + 2
            if length == 126:
                if n - h < 2:
                    break
                length = (data[h] << 8) | data[h + 1]
                h += 2
            elif length == 127:
                if n - h < 8:
                    break
                length = int.from_bytes(data[h : h + 8], "big")
                h += 8
            end = h + length
            if end > n:
                break
            i = end
            if b1 & 0x80 or b0 & 0x70:
                return self._fail(PROTOCOL_ERROR, "masked or reserved bits set in a server frame")
            try:
                if b0 == 0x82 and self._fragments is None:  # a whole binary frame: agent audio
                    self._on_binary(data[h:end], t_ns)  # type: ignore[misc]
                    continue
                self._frame(b0 & 0x80, b0 & 0x0F, data[h:end], t_ns)
            except Exception as exc:  # a handler's bug: end this connection, keep the reason
                self.error = exc
                if self.transport is not None:
                    self.transport.abort()
                return
        self._buffer = data[i:] if i < n else b""

    def _frame(self, fin: int, opcode: int, payload: bytes, t_ns: int) -> None:
        if opcode == OP_BINARY or opcode == OP_TEXT:
            if self._fragments is not None:
                return self._fail(PROTOCOL_ERROR, "a new message started inside a fragmented one")
            if not fin:
                self._fragments, self._fragment_opcode = [payload], opcode
                return
            self._deliver(opcode, payload, t_ns)
        elif opcode == OP_CONT:
            if self._fragments is None:
                return self._fail(PROTOCOL_ERROR, "a continuation frame outside a fragmented message")
            self._fragments.append(payload)
            if fin:
                whole, self._fragments = b"".join(self._fragments), None
                self._deliver(self._fragment_opcode, whole, t_ns)
        elif opcode == OP_PING:
            if self.open:
                self._write_frame(OP_PONG, payload)
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            self._closing_frame(payload)
        else:
            self._fail(PROTOCOL_ERROR, f"unknown opcode {opcode}")

    def _deliver(self, opcode: int, payload: bytes, t_ns: int) -> None:
        if opcode == OP_BINARY:
            assert self._on_binary is not None
            self._on_binary(payload, t_ns)
            return
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            return self._fail(INVALID_DATA, "a text frame that is not UTF-8")
        assert self._on_text is not None
        self._on_text(text, t_ns)

    def _closing_frame(self, payload: bytes) -> None:
        if len(payload) == 1:
            return self._fail(PROTOCOL_ERROR, "a close frame of one byte")
        if payload:
            code = int.from_bytes(payload[:2], "big")
            reason = payload[2:].decode(errors="replace")
        else:
            code, reason = NO_STATUS, ""
        self._close_rcvd = Close(code, reason)
        if self._close_sent is None:
            # Echo the server's close frame as it came (RFC 6455 §5.5.1); it then closes TCP.
            self._close_sent = self._close_rcvd
            self._close_rcvd_then_sent = True
            self._write_frame(OP_CLOSE, payload)
        elif self._close_rcvd_then_sent is None:
            self._close_rcvd_then_sent = False

    def _fail(self, code: int, reason: str) -> None:
        """A protocol error from the server: close with `code` and drop the connection."""
        if self._close_sent is None and self.transport is not None and not self.transport.is_closing():
            self._close_sent = Close(code, reason)
            self._write_frame(OP_CLOSE, code.to_bytes(2, "big") + reason.encode())
        if self.transport is not None:
            self.transport.close()

    # -- writing --------------------------------------------------------------------------------
    @property
    def open(self) -> bool:
        return (
            self._close_sent is None
            and self._close_rcvd is None
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def send_binary(self, data: bytes) -> None:
        # The hot path (50 chunks a second per call): the common case first, `open` only if needed.
        transport = self.transport
        if (
            self._close_sent is not None
            or self._close_rcvd is not None
            or transport is None
            or transport.is_closing()
        ):
            raise self._closed_error()
        n = len(data)
        if n != self._binary_length:  # a call's chunks all have one length: one header
            self._binary_length, self._binary_header = n, frame_header(OP_BINARY, n)
        at = self._mask_at
        if at >= MASK_POOL_BYTES:
            self._masks, at = os.urandom(MASK_POOL_BYTES), 0
        mask = self._masks[at : at + 4]
        self._mask_at = at + 4
        transport.write(b"".join((self._binary_header, mask, apply_mask(data, mask))))

    def send_text(self, text: str) -> None:
        if not self.open:
            raise self._closed_error()
        self._write_frame(OP_TEXT, text.encode())

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        at = self._mask_at
        if at >= MASK_POOL_BYTES:
            self._masks, at = os.urandom(MASK_POOL_BYTES), 0
        mask = self._masks[at : at + 4]
        self._mask_at = at + 4
        assert self.transport is not None
        self.transport.write(frame_header(opcode, len(payload)) + mask + apply_mask(payload, mask))

    def _closed_error(self) -> Exception:
        sent, rcvd = self._close_sent, self._close_rcvd
        ok = (
            sent is not None
            and rcvd is not None
            and sent.code in OK_CLOSE_CODES
            and rcvd.code in OK_CLOSE_CODES
        )
        kind = ConnectionClosedOK if ok else ConnectionClosedError
        both = sent is not None and rcvd is not None
        return kind(rcvd, sent, self._close_rcvd_then_sent if both else None)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake: send a close frame, wait for the server's and for it to close TCP."""
        if self.transport is None:
            return
        if self._close_sent is None and not self.transport.is_closing():
            self._close_sent = Close(code, reason)
            if self._close_rcvd is None:
                self._close_rcvd_then_sent = False
            self._write_frame(OP_CLOSE, code.to_bytes(2, "big") + reason.encode())
        # asyncio.wait, not wait_for: on Python 3.11 wait_for swallows a cancellation that comes
        # as the awaited future completes, and a cancelled run must stop.
        if not self.closed.done():
            done, _ = await asyncio.wait({self.closed}, timeout=CLOSE_TIMEOUT_S)
            if not done:
                self.transport.abort()
                await self.closed

    def detach(self) -> None:
        """Drop the handlers (and what they hold): the connection is over."""
        self._on_binary = self._on_text = None
        self.yield_at = _never
        self._on_writable = []

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
