"""One call on the wire: create, join, stream in real time, receive, run the script. Nothing else.

The I/O shell around the sans-I/O parts: `Schedule`/`Composer` decide what audio leaves and when,
the script decides what the user does, and everything observed goes into the call's `Timeline`.
The socket (`wsclient.CallSocket`) hands every frame it reads to `_Receiver` as it arrives; the
paced sender (`PacedSender`) is sent by the process's one `Scheduler`; two tasks remain: the
pinger and the script. No task wakes up per audio frame in either direction.

What a call needs after it ends (reading the call back from the API, the listener, the metrics,
the recording, the record and its files) is not done here: it is the analysis's work
(uvbench/analysis/), in another process when calls run under load, so that it never holds up the
loop that paces the other calls. Agent audio is written to a file as it arrives (when the
recording may be kept), never held in memory. A fault in one call (refused create, dropped
socket, bad message) ends that call with a reason; it never raises out of `run_call`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from uvbench.audio.pacer import Composer, Schedule, drift_ms
from uvbench.audio.sender import LAG_FLOOR_NS, PROBE_NS, PacedSender, Scheduler, network_impairment
from uvbench.audio.transforms import Chain
from uvbench.call.caller import audio_summary, plan_stream
from uvbench.call.live import LivePlayback, LiveState
from uvbench.call.plan import CallPlan
from uvbench.call.rest import CallFailed, UltravoxApi
from uvbench.call.timeline import Timeline
from uvbench.call.wsclient import CallSocket, JoinError, proxy_for
from uvbench.protocol import messages as wire

log = logging.getLogger(__name__)

NS = 1_000_000_000
CLOSE_WAIT_S = 10.0


@dataclass
class CallResult:
    """What the wire part of a call leaves: its timeline and what the analysis needs besides."""

    plan: CallPlan
    timeline: Timeline
    call_id: str | None = None
    user_audio: list[tuple[int, Path, Chain | None]] = field(default_factory=list)
    """(stream start sample, audio file, the caller chain its clip was sent through or None) of
    every scripted utterance, for the recording (audio/recording.py); an entry of two (older)
    is a clean clip."""
    samples_sent: int = 0
    agent_audio_path: Path | None = None
    """The agent's audio frames as received, back to back (s16le), in timeline `audio_in` order."""
    failure: str | None = None
    """None, or "<reason>: <message>" when the call could not be carried out as scripted."""
    # Read back from the API after the call, by the analysis (uvbench.analysis.call.read_back):
    call: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    ground_truth: dict[str, Any] | None = None


class CallContext:
    """What the script drives: the live state, the outgoing stream, the socket."""

    def __init__(self, plan: CallPlan, timeline: Timeline, result: CallResult) -> None:
        self.plan = plan
        self.timeline = timeline
        self.result = result
        self.live = LiveState(LivePlayback(plan.output_rate, plan.honor_clear))
        # The caller's room noise, mixed into every chunk; None (and the plain composer) without.
        # Started where the call's own seed says: calls of one scenario hear different stretches.
        self.caller_stream = plan_stream(plan)
        self.composer = Composer(plan.chunk_samples, stream=self.caller_stream)
        # Samples of the clips sent that hit the int16 limits in their caller chain (call/script.py).
        self.clipped_in_clips = 0
        self.schedule: Schedule | None = None
        self.ws: CallSocket | None = None
        self.sender: PacedSender | None = None
        self.hung_up = False

    async def send_message(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        self.timeline.add(time.monotonic_ns(), "msg.out", message=message)
        self.ws.send_text(wire.encode(message))

    async def close(self) -> None:
        """Hang up: the user's audio stream ends here, then the closing handshake."""
        assert self.ws is not None
        self.hung_up = True
        if self.sender is not None:
            self.sender.stop()
        await self.ws.close()

    def stream_samples_sent(self) -> int:
        return self.composer.samples_sent

    def dispose(self) -> None:
        """Once the call is over: let go of the socket, the sender and the live state, which point
        at each other and at this context. Freed by reference counting at once, a call leaves no
        cycle for the garbage collector, whose full passes over a thousand calls would hold up the
        loop (pacing processes run without the automatic collector: eventloop.py)."""
        if self.ws is not None:
            self.ws.detach()
        self.ws = self.sender = None
        self.live.changed = asyncio.Event()


Script = Callable[[CallContext], Awaitable[None]]


async def run_call(
    plan: CallPlan,
    script: Script,
    *,
    api: UltravoxApi | None = None,
    on_interrupted: Callable[[CallResult], None] | None = None,
) -> CallResult:
    """Run one call; never raises for a fault of the call itself (see `CallResult.failure`).

    Cancelled (the run stopped: Ctrl-C, SIGTERM, a graceful stop's end), the call ends at once,
    what was measured so far is kept with a `call.interrupted` event, `on_interrupted` is given
    that partial result, and the cancellation goes on."""
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
        caller=plan.caller_label,
        network=plan.network_label,
        # The seeds this call drew its noise start and impairment from, to reproduce it; only
        # for a call that has them, so a plain call's config is as it was.
        **_seeds_of(plan),
    )
    own_api = api is None
    api = api or UltravoxApi(plan.api_url, plan.api_key)
    scheduler = Scheduler.of()
    lag_token = scheduler.call_started()
    interrupted = False
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
        try:
            await _converse(ctx, call["joinUrl"], script)
        finally:
            ctx.dispose()
    except asyncio.CancelledError as exc:
        interrupted = True
        # The runner cancels with its reason when it has one (it gave up on an unreachable target).
        why = exc.args[0] if exc.args and isinstance(exc.args[0], str) else STOPPED
        timeline.add(time.monotonic_ns(), "call.interrupted", message=why)
    except Exception as exc:  # a bug or an unexpected fault must end this call only
        log.exception("call of %s failed", plan.scenario)
        timeline.add(time.monotonic_ns(), "error", where="engine", message=repr(exc), reason="internal")
        result.failure = result.failure or f"internal: {exc!r}"
    finally:
        # The loop's late wake-ups over the call's life: what its stamps may be off by.
        timeline.add(
            time.monotonic_ns(),
            "loop.lag",
            period_ns=PROBE_NS,
            floor_ns=LAG_FLOOR_NS,
            late=scheduler.lag_since(timeline.mono_epoch_ns),
        )
        scheduler.call_ended(lag_token)
        if own_api:
            await api.close()
    if interrupted:
        if on_interrupted is not None:
            on_interrupted(result)
        raise asyncio.CancelledError()
    return result


STOPPED = "the run stopped while the call ran"


def _seeds_of(plan: CallPlan) -> dict[str, int]:
    seeds = {"noise_seed": plan.call_noise_seed, "network_seed": plan.call_network_seed}
    return {name: seed for name, seed in seeds.items() if seed is not None}


def warm_up() -> None:
    """Import now what a process's first call would import mid-call (httpx's network backend on the
    first request, the websocket client's proxy lookup on the first join): tens of milliseconds
    that would hold up the event loop under the first calls' audio."""
    import anyio._backends._asyncio  # noqa: F401  (httpx, in run_call_of and the analysis)
    import anyio.streams.stapled  # noqa: F401
    import anyio.streams.tls  # noqa: F401
    import anyio.to_thread  # noqa: F401

    proxy_for("ws://localhost/")


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
        ws = ctx.ws = await CallSocket.connect(url, open_timeout=plan.join_timeout_s)
    except (OSError, TimeoutError, JoinError, websockets.WebSocketException) as exc:
        timeline.add(time.monotonic_ns(), "error", where="join", message=str(exc), reason="join_failed")
        result.failure = f"join_failed: {exc}"
        return
    # Stamped when the server's handshake response was read, not when this task resumed.
    opened = ws.opened_ns
    timeline.add(opened, "ws.open")
    # The stream's epoch: on the process scheduler's grid, in its least used phase (audio/sender.py).
    chunk_ns, off_grid = divmod(plan.chunk_samples * NS, plan.input_rate)
    scheduler = Scheduler.of()
    t0, phase = scheduler.stream_epoch(opened, 0 if off_grid else chunk_ns)
    schedule = ctx.schedule = Schedule(plan.input_rate, plan.chunk_samples, t0)
    timeline.add(
        opened, "pacer.started", t0_ns=t0, sample_rate=plan.input_rate, chunk_samples=plan.chunk_samples
    )
    # A network impairment delays chunks after the pacer's deadlines (audio/impairment.py).
    impairment = network_impairment(plan, t0)
    sender = ctx.sender = PacedSender(
        schedule, ctx.composer, ws, watch=ctx.live, scheduler=scheduler, phase=phase, impairment=impairment
    )
    receiver = _Receiver(ctx)
    ws.yield_at = scheduler.next_wake_ns
    ws.start(receiver.on_binary, receiver.on_text)
    sender.start()
    ws.closed.add_done_callback(receiver.on_closed)
    pinger = asyncio.create_task(_ping(ctx)) if plan.ping_interval_s else None
    script_task = asyncio.create_task(script(ctx))
    try:
        done, _ = await asyncio.wait({script_task, ws.closed}, return_when=asyncio.FIRST_COMPLETED)
        if script_task not in done and ctx.hung_up:
            # The script hung up and the socket closed before the script resumed: let it finish.
            done, _ = await asyncio.wait({script_task}, timeout=CLOSE_WAIT_S)
        if script_task in done:
            script_error = script_task.exception()
            if script_error is not None:
                raise script_error
            if not ctx.live.closed and not ctx.hung_up:
                await ctx.close()
        else:
            # The server ended the call while the script still ran.
            script_task.cancel()
            if not ctx.hung_up and ws.error is None:
                code = ws.close_code
                timeline.add(
                    time.monotonic_ns(),
                    "error",
                    where="script",
                    reason="closed_by_server",
                    message=f"the server closed the socket (code {code}) before the script finished",
                )
                result.failure = result.failure or f"closed_by_server: code {code}"
        # asyncio.wait rather than wait_for, which on 3.11 can swallow a cancellation (Ctrl-C).
        await asyncio.wait({ws.closed}, timeout=CLOSE_WAIT_S)  # then aborted below if not closed
    finally:
        for task in (pinger, script_task):
            if task is not None and not task.done():
                task.cancel()
        # The stream ended when the user hung up, or when the socket closed or refused a chunk,
        # whichever came first (the sender keeps that time): the closing handshake that follows
        # is no part of the pacer's record.
        sender.stop()
        stream_end = sender.stopped_ns
        assert stream_end is not None
        timeline.audio_out = sender.chunk_rows()
        timeline.audio_out_release = sender.release_rows()
        if not ws.closed.done():
            ws.abort()
            await ws.closed
        sent = ctx.composer.samples_sent
        timeline.add(
            stream_end,
            "pacer.stopped",
            samples_sent=sent,
            samples_due=schedule.samples_due_on_grid(stream_end),
            drift_ms=drift_ms(schedule, sent, stream_end),
        )
        result.samples_sent = sent
        if plan.caller is not None:
            timeline.add(
                stream_end,
                "caller.audio",
                **audio_summary(plan.caller, ctx.caller_stream, ctx.clipped_in_clips),
            )
        by = "client" if ctx.hung_up else "server"
        timeline.add(
            time.monotonic_ns(), "ws.closed", code=ws.close_code, reason=ws.close_reason or "", by=by
        )
        receiver.close()
    for error in (ws.error, sender.error):  # a bug in a frame handler or in the pacer's callback
        if error is not None:
            raise error


class _Receiver:
    """What the call does with each frame, called by the socket as the frame arrives."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.message_in = ctx.timeline.message_in
        self.live = ctx.live
        self.playback = ctx.live.playback
        self.playback.rows = ctx.timeline.audio_in
        path = ctx.plan.agent_audio_path
        # Buffered: one write system call per 32 KiB of audio (a second of 16 kHz), not per frame;
        # written as the frames are settled (call/live.py), many frames in one write.
        self.spool = open(path, "wb", buffering=32768) if path is not None else None  # noqa: SIM115
        self.playback.record = self.spool.write if self.spool is not None else None
        ctx.result.agent_audio_path = path

    def on_binary(self, frame: bytes, now: int) -> None:
        # Where its audible samples lie is worked out when someone asks (a script step's check,
        # the call's end), for every frame received since in one pass (call/live.py).
        self.playback.receive(now, frame)
        if self.live.audio_waiters:
            self.live.notify()

    def close(self) -> None:
        self.playback.settle()  # every frame's row in the timeline, its audio in the spool
        self.playback.record = None
        spool, self.spool = self.spool, None
        if spool is not None:
            spool.close()

    def on_text(self, frame: str, now: int) -> None:
        self.message_in(now, frame)  # kept as it came; parsed into the timeline after the call
        parsed = wire.parse_server_message(frame)
        if isinstance(parsed, wire.InvalidMessage):
            return
        _apply(self.ctx, now, parsed)
        self.live.notify()

    def on_closed(self, _: Any) -> None:
        if self.ctx.sender is not None:
            self.ctx.sender.stop()
        self.live.closed = True
        self.live.notify()


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
