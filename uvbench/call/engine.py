"""One call, end to end: create, join, stream in real time, receive, run the script, read back.

The I/O shell around the sans-I/O parts: `Schedule`/`Composer` decide what audio leaves and when,
the script decides what the user does, and everything observed goes into the call's `Timeline`.
Four tasks share the socket: the paced sender, the receiver, the pinger and the script. A fault in
one call (refused create, dropped socket, bad message) ends that call with a reason; it never
raises out of `run_call`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets

from uvbench.audio.pacer import Composer, Schedule, drift_ms
from uvbench.audio.sender import send_paced
from uvbench.call.live import LivePlayback, LiveState
from uvbench.call.rest import CallFailed, UltravoxApi
from uvbench.call.timeline import Timeline
from uvbench.protocol import messages as wire
from uvbench.protocol.audio import AUDIBLE_THRESHOLD

log = logging.getLogger(__name__)

NS = 1_000_000_000
CLOSE_WAIT_S = 10.0


@dataclass(frozen=True)
class ToolReply:
    result: str | None = None
    delay_s: float = 0.0
    error_type: str | None = None
    error_message: str | None = None
    response_type: str | None = None
    agent_reaction: str | None = None


@dataclass
class CallPlan:
    """Everything one call needs, resolved from a scenario and its target."""

    scenario: str
    api_url: str
    api_key: str
    body: dict[str, Any]
    prior_call_id: str | None = None
    chunk_ms: int = 20
    honor_clear: bool = True
    prebuffer_ms: float = 0.0
    ping_interval_s: float | None = 1.0
    record: bool = True
    join_timeout_s: float = 10.0
    tools: dict[str, ToolReply] = field(default_factory=dict)
    local: bool = False
    """The target is uvbench's local server: its ground truth is fetched after the call."""

    @property
    def medium(self) -> dict[str, Any]:
        return self.body["medium"]["serverWebSocket"]

    @property
    def input_rate(self) -> int:
        return int(self.medium["inputSampleRate"])

    @property
    def output_rate(self) -> int:
        return int(self.medium.get("outputSampleRate") or self.input_rate)

    @property
    def client_buffer_ms(self) -> int:
        return int(self.medium.get("clientBufferSizeMs") or 60)

    @property
    def chunk_samples(self) -> int:
        return self.input_rate * self.chunk_ms // 1000


@dataclass
class CallResult:
    plan: CallPlan
    timeline: Timeline
    call_id: str | None = None
    call: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    server_recording: bytes | None = None
    ground_truth: dict[str, Any] | None = None
    user_audio: list[tuple[int, np.ndarray]] = field(default_factory=list)
    """(stream start sample, pcm) of every scripted utterance, for the recording."""
    samples_sent: int = 0
    agent_audio: list[bytes] = field(default_factory=list)
    """Every agent audio frame as received (when recording), in timeline `audio_in` order."""
    failure: str | None = None
    """None, or "<reason>: <message>" when the call could not be carried out as scripted."""


class CallContext:
    """What the script drives: the live state, the outgoing stream, the socket."""

    def __init__(self, plan: CallPlan, timeline: Timeline, result: CallResult) -> None:
        self.plan = plan
        self.timeline = timeline
        self.result = result
        self.live = LiveState(LivePlayback(plan.output_rate, plan.honor_clear))
        self.composer = Composer(plan.chunk_samples)
        self.schedule: Schedule | None = None
        self.ws: Any = None
        self.stop_sending = asyncio.Event()
        self.hung_up = False

    async def send_message(self, message: dict[str, Any]) -> None:
        self.timeline.add(time.monotonic_ns(), "msg.out", message=message)
        await self.ws.send(wire.encode(message))

    async def close(self) -> None:
        self.hung_up = True
        await self.ws.close()

    def stream_samples_sent(self) -> int:
        return self.composer.samples_sent


Script = Callable[[CallContext], Awaitable[None]]


async def run_call(plan: CallPlan, script: Script, *, api: UltravoxApi | None = None) -> CallResult:
    """Run one call; never raises for a fault of the call itself (see `CallResult.failure`)."""
    timeline = Timeline(time.monotonic_ns(), time.time_ns())
    result = CallResult(plan, timeline)
    timeline.add(
        timeline.mono_epoch_ns,
        "call.config",
        scenario=plan.scenario,
        input_sample_rate=plan.input_rate,
        output_sample_rate=plan.output_rate,
        client_buffer_ms=plan.client_buffer_ms,
        chunk_ms=plan.chunk_ms,
        honor_clear=plan.honor_clear,
        prebuffer_ms=plan.prebuffer_ms,
    )
    own_api = api is None
    api = api or UltravoxApi(plan.api_url, plan.api_key)
    try:
        try:
            call = await api.create_call(
                plan.body, prior_call_id=plan.prior_call_id, on_attempt=_attempts(timeline)
            )
        except CallFailed as exc:
            timeline.add(time.monotonic_ns(), "error", where="create", message=str(exc), reason=exc.reason)
            result.failure = f"{exc.reason}: {exc}"
            return result
        result.call_id = call["callId"]
        timeline.add(time.monotonic_ns(), "call.created", call_id=call["callId"], join_url=call["joinUrl"])
        ctx = CallContext(plan, timeline, result)
        await _converse(ctx, call["joinUrl"], script)
        await _read_back(api, result)
    except Exception as exc:  # a bug or an unexpected fault must end this call only
        log.exception("call of %s failed", plan.scenario)
        timeline.add(time.monotonic_ns(), "error", where="engine", message=repr(exc), reason="internal")
        result.failure = result.failure or f"internal: {exc!r}"
    finally:
        if own_api:
            await api.close()
    return result


def _attempts(timeline: Timeline) -> Callable[[int, int, Any], None]:
    def on_attempt(attempt: int, t_ns: int, answer: Any) -> None:
        if answer is None:
            timeline.add(t_ns, "call.create_sent", attempt=attempt)
        else:
            timeline.add(
                t_ns,
                "call.create_answered",
                attempt=attempt,
                status=answer.status,
                retry_after_s=answer.retry_after_s,
            )

    return on_attempt


async def _converse(ctx: CallContext, join_url: str, script: Script) -> None:
    timeline, plan, result = ctx.timeline, ctx.plan, ctx.result
    url = join_url + ("&" if "?" in join_url else "?") + "apiVersion=1"
    timeline.add(time.monotonic_ns(), "ws.connect_started")
    try:
        ctx.ws = await websockets.connect(
            url, open_timeout=plan.join_timeout_s, max_size=None, compression=None, ping_interval=20
        )
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        timeline.add(time.monotonic_ns(), "error", where="join", message=str(exc), reason="join_failed")
        result.failure = f"join_failed: {exc}"
        return
    opened = time.monotonic_ns()
    timeline.add(opened, "ws.open")
    ctx.schedule = Schedule(plan.input_rate, plan.chunk_samples, opened)
    timeline.add(
        opened, "pacer.started", t0_ns=opened, sample_rate=plan.input_rate, chunk_samples=plan.chunk_samples
    )
    receiver = asyncio.create_task(_receive(ctx))
    sender = asyncio.create_task(_send_audio(ctx))
    pinger = asyncio.create_task(_ping(ctx)) if plan.ping_interval_s else None
    script_task = asyncio.create_task(script(ctx))
    try:
        done, _ = await asyncio.wait({script_task, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if script_task in done:
            script_error = script_task.exception()
            if script_error is not None:
                raise script_error
            if not ctx.live.closed and not ctx.hung_up:
                await ctx.close()
        else:
            # The server ended the call while the script still ran.
            script_task.cancel()
            if not ctx.hung_up:
                code = ctx.ws.close_code
                timeline.add(
                    time.monotonic_ns(),
                    "error",
                    where="script",
                    reason="closed_by_server",
                    message=f"the server closed the socket (code {code}) before the script finished",
                )
                result.failure = result.failure or f"closed_by_server: code {code}"
        await asyncio.wait_for(receiver, CLOSE_WAIT_S)
    except TimeoutError:
        receiver.cancel()
    finally:
        for task in (pinger, script_task):
            if task is not None and not task.done():
                task.cancel()
        ctx.stop_sending.set()
        await asyncio.gather(sender, return_exceptions=True)
        if ctx.ws.close_code is None:
            await ctx.ws.close()
        now = time.monotonic_ns()
        sent = ctx.composer.samples_sent
        timeline.add(
            now,
            "pacer.stopped",
            samples_sent=sent,
            samples_due=ctx.schedule.samples_due(now),
            drift_ms=drift_ms(ctx.schedule, sent, now),
        )
        result.samples_sent = sent
        by = "client" if ctx.hung_up else "server"
        timeline.add(now, "ws.closed", code=ctx.ws.close_code, reason=ctx.ws.close_reason or "", by=by)


async def _send_audio(ctx: CallContext) -> None:
    """Real-time paced audio on absolute deadlines; silence whenever the user says nothing."""
    assert ctx.schedule is not None
    timeline, live = ctx.timeline, ctx.live

    def on_sent(due_ns: int, sent_ns: int, start: int, end: int) -> None:
        timeline.chunk_sent(due_ns, sent_ns, start, end)
        if live.stream_waiters:
            live.notify()

    try:
        await send_paced(ctx.schedule, ctx.composer, ctx.ws.send, ctx.stop_sending, on_sent)
    except websockets.ConnectionClosed:
        return


async def _receive(ctx: CallContext) -> None:
    timeline, live, plan = ctx.timeline, ctx.live, ctx.plan
    record = plan.record
    try:
        async for frame in ctx.ws:
            now = time.monotonic_ns()
            if isinstance(frame, bytes):
                samples = np.frombuffer(frame[: len(frame) // 2 * 2], dtype="<i2")
                loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > AUDIBLE_THRESHOLD)
                first, last = (int(loud[0]), int(loud[-1])) if loud.size else (-1, -1)
                timeline.frame_received(now, samples.size, first, last)
                live.playback.on_audio(now, samples.size, first, last)
                if record:
                    ctx.result.agent_audio.append(frame)
                live.notify()
                continue
            parsed = wire.parse_server_message(frame)
            if isinstance(parsed, wire.InvalidMessage):
                timeline.add(now, "msg.in_invalid", text=frame[:500], error=parsed.error)
                continue
            timeline.add(now, "msg.in", message=parsed.to_current())
            _apply(ctx, now, parsed)
            live.notify()
    except websockets.ConnectionClosed:
        pass
    finally:
        live.closed = True
        live.notify()


def _apply(ctx: CallContext, now: int, message: Any) -> None:
    live = ctx.live
    if isinstance(message, wire.State):
        live.state = message.state
        live.states_seen.append(message.state)
    elif isinstance(message, wire.Transcript):
        live.add_transcript(
            message.role, message.medium, message.text, message.delta, message.final, message.ordinal
        )
    elif isinstance(message, wire.PlaybackClearBuffer):
        live.playback.on_clear(now)
    elif isinstance(message, wire.ClientToolInvocation):
        live.tool_calls.append({"name": message.tool_name, "parameters": message.parameters, "at_ns": now})
        asyncio.get_running_loop().create_task(_answer_tool(ctx, message))


async def _answer_tool(ctx: CallContext, invocation: Any) -> None:
    reply = ctx.plan.tools.get(invocation.tool_name)
    if reply is None:
        message = wire.client_tool_result(
            invocation.invocation_id,
            error_type="undefined",
            error_message=f"uvbench: no answer for tool {invocation.tool_name!r} in the scenario's tools:",
        )
    else:
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        message = wire.client_tool_result(
            invocation.invocation_id,
            reply.result,
            response_type=reply.response_type,
            agent_reaction=reply.agent_reaction,
            error_type=reply.error_type,
            error_message=reply.error_message,
        )
    try:
        await ctx.send_message(message)
    except websockets.ConnectionClosed:
        pass


async def _ping(ctx: CallContext) -> None:
    interval = ctx.plan.ping_interval_s or 1.0
    try:
        while True:
            await asyncio.sleep(interval)
            # The server echoes the value verbatim, so a monotonic clock works and matches the timeline.
            await ctx.send_message(wire.ping(time.monotonic_ns() / NS))
    except websockets.ConnectionClosed:
        return


async def _read_back(api: UltravoxApi, result: CallResult) -> None:
    """After the call: its end reason, messages, the server's recording and ground truth."""
    call_id = result.call_id
    assert call_id is not None
    timeline = result.timeline
    try:
        for _ in range(30):
            result.call = await api.get_call(call_id)
            if result.call.get("ended"):
                break
            await asyncio.sleep(0.1)
        timeline.add(
            time.monotonic_ns(),
            "call.fetched",
            end_reason=result.call.get("endReason"),
            ended=result.call.get("ended"),
        )
        result.messages = await api.messages(call_id)
        if result.call.get("recordingEnabled"):
            result.server_recording = await api.recording(call_id)
        if result.plan.local:
            result.ground_truth = await api.ground_truth(call_id)
    except Exception as exc:  # reading back is best effort: the call itself is already measured
        timeline.add(time.monotonic_ns(), "warning", where="read_back", message=str(exc))
