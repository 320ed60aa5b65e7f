"""The sink agent: a call's websocket end that costs the server almost nothing per input frame.

For client capacity benchmarks: one client process must be measured at 1,000+ concurrent calls,
which the simulated agent cannot serve from one core (aiohttp wakes a task per message, then VAD,
pacing and ground truth run per frame). The sink does the least a call needs:

- input: reads only frame headers, every frame of a read in one pass; binary payloads are skipped
  where they lie (never unmasked or copied) and counted; small text and control frames are
  unmasked and read: a close is echoed and the TCP closed, a ping gets its pong, the data message
  `{"type": "ping"}` gets `{"type": "pong"}` with its timestamp, `hang_up` ends the call
  (`agent_hangup`), any other text is ignored. With `agent.read_batch_ms` a connection that has
  read pauses until a shared tick, which reads its socket directly, so one read takes several
  frames and no frame wakes the server (fewer system calls and callbacks per frame; pongs and the
  close then wait up to that long).
- output: on join `call_started` and `state: listening`; then the greeting, and every
  `agent.reply_every_s` the canned reply (`agent.replies[0]`), each as ONE write of pre-encoded
  frames: `state: speaking`, the synthesized speech as 20 ms (`agent.chunk_ms`) binary frames at
  the call's output rate, the agent's final transcript, `state: listening`. The whole utterance
  leaves at once, as a real server may when `clientBufferSizeMs` is large.
- the store: joined, ended (hang_up `agent_hangup`, the client's close `hangup`, maxDuration
  `timeout`, DELETE `hangup`, shutdown `system_error`), call_joined/call_ended events, and a
  `SinkTruth` for the ground-truth route. No VAD, turns, messages, pacing, recording or faults.

How: aiohttp answers the upgrade as for every call, but the connection's asyncio protocol is
swapped for a `SinkConnection` (`transport.set_protocol`, which asyncio's and uvloop's transports
both support) just before the 101 response is written, so every byte the client sends after the
handshake reaches the sink directly. The aiohttp handler stays parked on a future until the
connection is lost; the sink then hands the loss on to aiohttp's own protocol, so aiohttp's
bookkeeping of the connection ends as for any other.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from uvbench.audio.tts import synthesize
from uvbench.protocol import strict_json
from uvbench.server.agent import MESSAGE_FLAGS
from uvbench.server.state import ServerState
from uvbench.server.store import CallRecord
from uvbench.server.truth import SinkReply, SinkTruth

log = logging.getLogger(__name__)

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FIN = 0x80
MASKED = 0x80
SMALL_TEXT = 64 * 1024
"""Text frames up to this size are unmasked and read; larger ones are skipped like audio."""
CONTROL_MAX = 125
"""RFC 6455 §5.5: a control frame's payload is at most 125 bytes."""
CLOSE_WAIT_S = 2.0
"""After the server's close frame, how long the client has to answer it before the TCP is cut."""
HELD_READ_BYTES = 256 * 1024
"""One read of a held connection at a tick; a full one is followed by another."""


# ---------------------------------------------------------------------------------------------
# Pre-encoded output


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked server-to-client websocket frame."""
    n = len(payload)
    if n < 126:
        head = bytes((FIN | opcode, n))
    elif n < 1 << 16:
        head = bytes((FIN | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((FIN | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def text_frame(message: dict[str, Any]) -> bytes:
    return frame(TEXT, json.dumps(message, separators=(",", ":")).encode())


def unmask(payload: bytes, mask: bytes) -> bytes:
    """A client frame's payload XORed with its 4-byte masking key (for small frames only)."""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


SPEAKING = text_frame({"type": "state", "state": "speaking"})
LISTENING = text_frame({"type": "state", "state": "listening"})


@dataclass(frozen=True)
class CannedSpeech:
    frames: bytes
    """The utterance as consecutive binary websocket frames of `frame_samples` each."""
    count: int
    samples: int


@functools.lru_cache(maxsize=64)
def canned_speech(text: str, sample_rate: int, frame_samples: int, wpm: int) -> CannedSpeech:
    """`text` synthesized at `sample_rate`, framed; the last frame padded with silence. Built once."""
    pcm = synthesize(text, sample_rate, wpm=wpm).pcm.astype("<i2").tobytes() if text else b""
    size = 2 * frame_samples
    pcm += bytes(-len(pcm) % size)
    frames = b"".join(frame(BINARY, pcm[i : i + size]) for i in range(0, len(pcm), size))
    count = len(pcm) // size
    return CannedSpeech(frames, count, count * frame_samples)


def frame_samples(sample_rate: int, chunk_ms: int) -> int:
    return max(1, sample_rate * chunk_ms // 1000)


def _enabled(record: CallRecord) -> dict[str, bool]:
    """medium.serverWebSocket.dataMessages over the defaults, as the simulated agent reads them."""
    flags = {flag: default for flag, default in MESSAGE_FLAGS.values()}
    flags.update({k: bool(v) for k, v in (record.medium.get("dataMessages") or {}).items()})
    return flags


# ---------------------------------------------------------------------------------------------
# Batched reads (agent.read_batch_ms)


class ReadTick:
    """Reads every held sink connection at once, `period_s` after the first was held.

    A connection that has read pauses its transport and is held until the next tick, which reads
    its socket directly (`SinkConnection.read_held`): all the frames of a period in one system call
    and one callback, one timer for all calls, and no wake-up per frame. A paused connection leaves
    the loop's poll set, so a frame the client sends it wakes nobody: on loopback a wake-up of the
    server would run on the client's CPU at every chunk, which a server on another machine (what the
    sink stands in for in a client's capacity bench) never costs it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, period_s: float) -> None:
        self.loop = loop
        self.period_s = period_s
        self._held: list[SinkConnection] = []
        self._handle: asyncio.TimerHandle | None = None

    def hold(self, conn: SinkConnection) -> None:
        conn.transport.pause_reading()
        self._held.append(conn)
        if self._handle is None:
            self._handle = self.loop.call_later(self.period_s, self._release)

    def _release(self) -> None:
        held, self._held = self._held, []
        self._handle = None
        for conn in held:
            conn.read_held()


def read_tick(state: ServerState, loop: asyncio.AbstractEventLoop, batch_ms: float) -> ReadTick | None:
    """The server's shared tick for `batch_ms` (None for 0: read as data arrives)."""
    if batch_ms <= 0:
        return None
    tick = state.read_ticks.get(batch_ms)
    if tick is None or tick.loop is not loop:
        tick = state.read_ticks[batch_ms] = ReadTick(loop, batch_ms / 1000)
    return tick


# ---------------------------------------------------------------------------------------------
# The connection


class SinkConnection(asyncio.Protocol):
    """The protocol of a sink call's TCP connection once aiohttp has done the handshake."""

    def __init__(
        self,
        state: ServerState,
        record: CallRecord,
        transport: asyncio.Transport,
        handed_from: asyncio.BaseProtocol,
    ) -> None:
        self.state = state
        self.record = record
        self.transport = transport
        self._handed_from = handed_from
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        """Resolved once the connection is lost (the aiohttp handler waits on it)."""
        assert isinstance(record.truth, SinkTruth)  # CallRecord makes it for agent.mode sink
        self.truth = record.truth
        self.input = self.truth.input
        flags = _enabled(record)
        self._call_started = flags["callStarted"]
        self._states = flags["state"]
        self._transcripts = flags["transcript"]
        self._pongs = flags["pong"]
        self._frame_samples = frame_samples(record.output_sample_rate, record.agent.chunk_ms)
        self._read_tick = read_tick(state, self.loop, record.agent.read_batch_ms)
        sock = transport.get_extra_info("socket")
        self._fd: int | None = sock.fileno() if sock is not None else None
        # Parser state between reads.
        self._pending = b""
        """The start of a frame whose header (or small payload) is not all here yet."""
        self._skip = 0
        """Payload bytes of the current frame still to come, skipped unread."""
        self._skip_binary = False
        self._fragment: int | None = None
        """Opcode of the fragmented message in progress, if any."""
        # Call state.
        self._ordinal = 0
        self.started = False
        self.ended = False
        self._close_sent = False
        self._close_received = False
        self._lost = False
        self._reply_timer: asyncio.TimerHandle | None = None
        self._end_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # -- the call ----------------------------------------------------------------------------
    def start(self, client_version: str | None) -> None:
        """The handshake is done: join the call, greet, arm the reply and maxDuration timers."""
        if self._lost:
            return
        self.started = True
        record, store = self.record, self.state.store
        now = time.monotonic_ns()
        store.mark_joined(record, now, client_version)
        record.session = self
        self.truth.joined_ns = now
        record.add_event(now, store.clock.wall(now), "info", "call_joined", "Client joined the call (sink).")
        hello = []
        if self._call_started:
            hello.append(text_frame({"type": "call_started", "callId": record.call_id}))
            self.truth.call_started_sent_ns = now
        if self._states:
            hello.append(LISTENING)
        self._write(b"".join(hello))
        agent = record.agent
        self._say("greeting", agent.greeting)
        if agent.reply_every_s > 0:
            self._reply_timer = self.loop.call_later(agent.reply_every_s, self._reply_due)
        self._end_timer = self.loop.call_later(record.max_duration_s, self.end_call, "timeout")

    def _reply_due(self) -> None:
        agent = self.record.agent
        self._say("reply", agent.replies[0])
        self._reply_timer = self.loop.call_later(agent.reply_every_s, self._reply_due)

    def _say(self, kind: str, text: str) -> None:
        """One canned utterance in one write."""
        agent = self.record.agent
        speech = canned_speech(text, self.record.output_sample_rate, self._frame_samples, agent.voice_wpm)
        ordinal = self._ordinal
        self._ordinal += 1
        parts = [SPEAKING] if self._states else []
        parts.append(speech.frames)
        if self._transcripts:
            transcript = {"type": "transcript", "role": "agent", "medium": "voice", "text": text}
            parts.append(text_frame({**transcript, "final": True, "ordinal": ordinal}))
        if self._states:
            parts.append(LISTENING)
        data = b"".join(parts)
        now = time.monotonic_ns()
        self._write(data)
        unsent = 0 if self._lost else self.transport.get_write_buffer_size()
        replies = self.truth.replies
        replies.append(
            SinkReply(len(replies), kind, text, ordinal, speech.count, speech.samples, len(data), now, unsent)
        )

    def end_call(self, reason: str) -> None:
        """The server ends the call: a close frame, then the client's answer closes the TCP."""
        if self.ended or self._lost:
            return
        self._end(reason)
        status = self.state.config.close_code.to_bytes(2, "big")
        self._write(frame(CLOSE, status + f"call ended: {reason}".encode()[: CONTROL_MAX - 2]))
        self._close_sent = True
        self._close_timer = self.loop.call_later(CLOSE_WAIT_S, self.transport.abort)

    def deliver_data_message(self, message: dict[str, Any]) -> None:
        """A data message through REST send_data_message: hang_up ends the call, others are ignored."""
        if message.get("type") == "hang_up":
            self.end_call("agent_hangup")

    def _end(self, reason: str) -> None:
        self.ended = True
        for timer in (self._reply_timer, self._end_timer):
            if timer is not None:
                timer.cancel()
        self._reply_timer = self._end_timer = None
        store = self.state.store
        now = time.monotonic_ns()
        if store.mark_ended(self.record, now, reason):
            self.record.add_event(now, store.clock.wall(now), "info", "call_ended", f"Call ended: {reason}.")

    def _write(self, data: bytes) -> None:
        if data and not self._lost and not self.transport.is_closing():
            self.transport.write(data)

    # -- asyncio.Protocol --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._close_received:
            return
        if self._pending:
            data = self._pending + data
            self._pending = b""
        n = len(data)
        pos = frames = payload = 0
        skip = self._skip
        if skip:
            if skip > n:
                self._skip = skip - n
                if self._skip_binary:
                    self._count(0, n)
                return
            self._skip = 0
            pos = skip
            if self._skip_binary:
                frames, payload = 1, skip
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                length = int.from_bytes(data[start : start + 2], "big")
                start += 2
            elif length == 127:
                length = int.from_bytes(data[start : start + 8], "big")
                start += 8
            if b1 & MASKED:
                start += 4
            if start > n:
                break  # the header continues in the next read
            end = start + length
            if b0 == FIN | BINARY and end <= n:  # the usual frame: a whole audio chunk
                frames += 1
                payload += length
                pos = end
                continue
            opcode = b0 & 0x0F
            if opcode == CONTINUATION:
                binary = self._fragment == BINARY
                if b0 & FIN:
                    self._fragment = None
                readable = False  # the rest of a fragmented message: only counted if binary
            else:
                if opcode < CLOSE:  # a data frame starts a message (control frames may interleave)
                    self._fragment = None if b0 & FIN else opcode
                binary = opcode == BINARY
                readable = b0 & FIN and length <= (SMALL_TEXT if opcode == TEXT else CONTROL_MAX)
            if binary or not readable:  # skipped unread, counted if binary
                if end > n:
                    self._skip, self._skip_binary = end - n, binary
                    if binary:
                        payload += n - start
                    pos = n
                    break
                if binary:
                    frames += 1
                    payload += length
                pos = end
                continue
            if end > n:
                break  # a small frame split across reads: kept whole for the next one
            body = data[start:end]
            if b1 & MASKED:
                body = unmask(body, data[start - 4 : start])
            pos = end
            self._on_frame(opcode, body)
            if self._close_received or self._lost:
                pos = n
                break
        if pos < n:
            self._pending = data[pos:]
        if frames or payload:
            self._count(frames, payload)
        if self._read_tick is not None and not self._close_received and not self.transport.is_closing():
            self._read_tick.hold(self)

    def _count(self, frames: int, payload: int) -> None:
        inp = self.input
        inp.frames_received += frames
        inp.bytes_received += payload
        if inp.first_audio_ns is None:
            inp.first_audio_ns = time.monotonic_ns()

    def resume_reading(self) -> None:
        if not self._lost and not self.transport.is_closing():
            self.transport.resume_reading()

    def read_held(self) -> None:
        """A read tick: what came since the last one, read from the socket without waiting (the
        transport stays paused, out of the poll set); then held for the next tick. The end of the
        stream and socket errors are the transport's to see: it reads again, and gets them."""
        if self._lost or self._close_received or self.transport.is_closing():
            return
        if self._fd is None:  # no socket to read directly: the transport reads again
            return self.resume_reading()
        chunks = []
        try:
            while len(chunk := os.read(self._fd, HELD_READ_BYTES)) == HELD_READ_BYTES:
                chunks.append(chunk)
            chunks.append(chunk)
        except (BlockingIOError, InterruptedError):  # no more for now
            pass
        except OSError:
            return self.resume_reading()
        if chunks and not chunks[-1]:  # the end of the stream, after what came before it
            chunks.pop()
            if chunks:
                self.data_received(b"".join(chunks))
            return self.resume_reading()
        if chunks:
            self.data_received(b"".join(chunks))  # which holds it again
        elif self._read_tick is not None:
            self._read_tick.hold(self)

    def _on_frame(self, opcode: int, body: bytes) -> None:
        if opcode == TEXT:
            self._on_text(body)
        elif opcode == PING:
            self._write(frame(PONG, body))
        elif opcode == CLOSE:
            self._close_received = True
            if not self._close_sent:  # the client closes: echo its close frame, then the TCP
                self._write(frame(CLOSE, body))
                self._close_sent = True
                if self.started and not self.ended:
                    self._end("hangup")
            self.transport.close()

    def _on_text(self, body: bytes) -> None:
        self.input.text_frames_received += 1
        if self.ended:
            return
        try:
            message = strict_json.loads(body)
        except ValueError:  # malformed, NaN, too deep: the sink answers nothing it cannot read
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "ping":
            if self._pongs:
                self.input.pings_answered += 1
                self._write(text_frame({"type": "pong", "timestamp": message.get("timestamp")}))
        elif kind == "hang_up":
            self.end_call("agent_hangup")

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self.started and not self.ended:
            self._end("hangup")
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self.record.session is self:
            self.record.session = None
        try:
            # aiohttp's protocol still owns the connection's bookkeeping (its server's
            # connection list, the request, the handler task): it hears of the loss as usual.
            self._handed_from.connection_lost(exc)
        except Exception:
            log.exception("call %s: handing the connection loss back to aiohttp", self.record.call_id)
        if not self.done.done():
            self.done.set_result(None)


async def serve(request: web.Request, state: ServerState, record: CallRecord) -> web.StreamResponse:
    """The websocket handler of a sink call (see the module's docstring)."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the connection was lost before the handshake")
    ws = web.WebSocketResponse(autoping=False, compress=False)
    handed_from = transport.get_protocol()
    sink = SinkConnection(state, record, transport, handed_from)
    # Swapped before the 101 response leaves, so no frame the client sends can reach aiohttp.
    transport.set_protocol(sink)
    try:
        await ws.prepare(request)
    except BaseException:
        transport.set_protocol(handed_from)
        record.connected = False
        raise
    sink.start(request.query.get("clientVersion"))
    try:
        await sink.done
    finally:
        if not sink.done.done():  # the handler was cancelled (server shutdown): drop the connection
            transport.abort()
    return ws
