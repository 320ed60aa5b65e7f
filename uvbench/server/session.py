"""The websocket I/O shell of a call: feeds the sans-I/O `Agent` and writes what it produces.

One connection per call at `/calls/<callId>/server_web_socket`. The receive loop hands each frame
to the agent with its arrival time; a timer armed at the agent's next deadline wakes it for output
pacing and call timers. Both paths write through one lock so frames never interleave.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from uvbench.audio.tts import synthesize
from uvbench.server import sink
from uvbench.server.agent import Agent, Outgoing
from uvbench.server.recording import build_recording
from uvbench.server.state import STATE_KEY, ServerState
from uvbench.server.store import CallRecord

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 1 << 20
"""Largest frame accepted (over 10 s of 48 kHz audio); a larger one closes the socket with 1009,
the reason naming this limit, as soon as its header is read (none of its payload is kept), and
ends the call (`connection_error`)."""
TOO_BIG_REASON = f"frame over this server's limit of {MAX_FRAME_BYTES} bytes"


def _synthesize(text: str, sample_rate: int, wpm: int):
    return synthesize(text, sample_rate, wpm=wpm)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/calls/{call_id}/server_web_socket", handle_join)


def _refuse(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)


async def handle_join(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    call_id = request.match_info["call_id"]
    record = state.store.get(call_id)
    if record is None:
        return _refuse(404, f"No call with id {call_id!r}: create it with POST /api/calls first.")
    if record.ended_ns is not None:
        return _refuse(410, f"Call {call_id} has ended ({record.end_reason}); create a new call.")
    if record.connected:
        return _refuse(
            409, f"Call {call_id} already has a websocket connection; only one is allowed per call."
        )
    # aiohttp refuses a frame of max_msg_size bytes itself (it takes only smaller ones), hence + 1.
    ws = _CallSocket(max_msg_size=MAX_FRAME_BYTES + 1, autoping=True, compress=False)
    if not ws.can_prepare(request).ok:
        # Not a websocket upgrade (a plain GET, a bad key or version): the call stays unjoined.
        return _refuse(
            400,
            f"{request.path} is the call's websocket: join it with a websocket upgrade "
            "(GET with 'Upgrade: websocket' and a valid Sec-WebSocket-Key, version 13).",
        )
    record.connected = True
    if record.agent.mode == "sink":
        return await sink.serve(request, state, record)
    transport = request.transport
    try:
        await ws.prepare(request)
    except BaseException:
        record.connected = False  # the handshake failed: a proper join may still come
        raise
    experimental = {part for part in request.query.get("experimentalMessages", "").split(",") if part}
    session = Session(state, record, ws, transport, experimental)
    await session.run(client_version=request.query.get("clientVersion"))
    return ws


class _CallSocket(web.WebSocketResponse):
    """aiohttp closes the socket of an oversized frame with 1009 and no reason: this one names the
    limit, so the client can tell what to change."""

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = TOO_BIG_REASON.encode()
        return await super().close(code=code, message=message, drain=drain)


class Session:
    """A joined call: the agent, its socket and the timer that wakes it."""

    def __init__(
        self,
        state: ServerState,
        record: CallRecord,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        experimental: set[str],
    ) -> None:
        self.state = state
        self.record = record
        self.ws = ws
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.agent = Agent(
            record, _synthesize, wall=state.store.clock.wall, experimental_messages=experimental
        )
        self._write_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: int | None = None
        self._closed = False
        # Output produced on a timer is written by one long-lived task, woken per batch: cheaper
        # than a task per chunk, and the lock keeps it ordered with the receive path's writes.
        self._wake = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None

    async def run(self, client_version: str | None) -> None:
        store = self.state.store
        now = time.monotonic_ns()
        store.mark_joined(self.record, now, client_version)
        self.record.session = self
        self.agent.start(now)
        self._writer_task = self.loop.create_task(self._write_when_woken())
        await self._flush()
        agent = self.agent
        try:
            async for msg in self.ws:
                now = time.monotonic_ns()
                if msg.type == WSMsgType.BINARY:
                    agent.on_audio(now, msg.data)
                elif msg.type == WSMsgType.TEXT:
                    agent.on_text(now, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    self._on_protocol_error(now, msg.data)
                    break
                if agent.out:
                    await self._flush()
                else:
                    self._arm()
                if self._closed:
                    break
        except Exception:  # a fault in one call must never reach the server or other calls
            log.exception("call %s: session failed", self.record.call_id)
            self.agent.end(time.monotonic_ns(), "system_error")
        finally:
            await self._finish()

    def _on_protocol_error(self, now: int, error: BaseException) -> None:
        """aiohttp has already closed the socket (1009 for a frame over the limit, 1002 or 1007 for
        a broken one): the call ends as a connection error, its events saying why."""
        log.info("call %s: websocket error %s", self.record.call_id, error)
        # The code sent, not ws.close_code: that turns 1006 when the client resets the connection.
        code = getattr(error, "code", self.ws.close_code)
        why = TOO_BIG_REASON if code == WSCloseCode.MESSAGE_TOO_BIG else f"websocket protocol error: {error}"
        wall = self.state.store.clock.wall(now)
        self.record.add_event(now, wall, "warning", "client_message_error", f"{why} (closed {code})")
        self.agent.end(now, "connection_error")

    # -- the agent's clock -----------------------------------------------------------------------
    def _arm(self) -> None:
        deadline = self.agent.next_deadline_ns()
        if deadline == self._armed_for:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = deadline
        if deadline is not None and not self._closed:
            # The event loop's clock is time.monotonic(), the clock of the agent's timestamps.
            self._timer = self.loop.call_at(deadline / 1e9, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._armed_for = None
        self.agent.tick(time.monotonic_ns())
        self._kick()

    def _kick(self) -> None:
        """After the agent ran outside the receive loop: write what it produced, or re-arm."""
        if self.agent.out:
            self._wake.set()
        else:
            self._arm()

    async def _write_when_woken(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    # -- writing ---------------------------------------------------------------------------------
    async def _flush(self) -> None:
        async with self._write_lock:
            for item in self.agent.drain():
                await self._write(item)
        if not self._closed:
            self._arm()

    async def _write(self, item: Outgoing) -> None:
        if self._closed or self.ws.closed:
            return
        try:
            await self._write_item(item)
            if item.on_sent is not None:
                item.on_sent(time.monotonic_ns())
        except (ConnectionError, RuntimeError) as exc:
            # The client went away mid-write; the receive loop sees the close and ends the call.
            log.debug("call %s: write failed: %s", self.record.call_id, exc)
            self._closed = True

    async def _write_item(self, item: Outgoing) -> None:
        if item.kind == "audio":
            await self.ws.send_bytes(item.payload)
        elif item.kind == "json":
            await self.ws.send_str(json.dumps(item.payload, separators=(",", ":")))
        elif item.kind == "raw":
            await self.ws.send_str(item.payload)
        elif item.kind == "close":
            code, reason = item.payload
            self._closed = True
            await self.ws.close(
                code=self.state.config.close_code if code == 1000 else code,
                message=reason.encode(),
            )
        elif item.kind == "abort":
            self._closed = True
            if self.transport is not None:
                self.transport.abort()

    # -- REST hooks (LiveSession) ----------------------------------------------------------------
    def deliver_data_message(self, message: dict[str, Any]) -> None:
        self.agent.on_message(time.monotonic_ns(), message)
        self._kick()

    def end_call(self, reason: str) -> None:
        self.agent.end(time.monotonic_ns(), reason)
        self._kick()

    # -- the end ---------------------------------------------------------------------------------
    async def _finish(self) -> None:
        now = time.monotonic_ns()
        self.agent.on_client_closed(now)
        await self._flush()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer_task is not None:
            self._writer_task.cancel()
        record = self.record
        self.state.store.mark_ended(record, now, self.agent.end_reason or "hangup")
        record.session = None
        if not self.ws.closed:
            await self.ws.close()
        if self.agent.input_pcm is not None:
            try:
                record.recording_wav = build_recording(
                    bytes(self.agent.input_pcm),
                    self.agent.settings.input_rate,
                    self.agent.truth.input.first_audio_ns or record.joined_ns or now,
                    self.agent.voice_segments,
                    self.agent.settings.output_rate,
                )
            except Exception:
                log.exception("call %s: recording failed", record.call_id)


async def close_all(state: ServerState) -> None:
    """Server shutdown: end every live call so clients see a close, not a reset."""
    for record in list(state.store.calls.values()):
        session = record.session
        if session is not None:
            session.end_call("system_error")
    await asyncio.sleep(0)
