"""The scenario's script, step by step, against a live call.

Each step either queues user audio on the outgoing stream (which keeps flowing, silence between
steps, as Ultravox requires continuous input), sends a data message, or waits for something the
agent does. Anchors go into the timeline as they are fixed: a scripted utterance's stream
position and its exact speech bounds (from the corpus manifest, never guessed from a VAD), so the
metrics afterwards know t_ss, t_se and t_bi to the sample. A step that cannot be carried out
(a wait that times out, a socket the server closed) stops the script with an `error` event.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets

from uvbench.audio.source import load_pcm
from uvbench.call.caller import clip_audio, clip_bounds
from uvbench.call.engine import CallContext
from uvbench.protocol import messages as wire
from uvbench.scenario import (
    AgentAudible,
    AgentDone,
    BargeInStep,
    Expectation,
    ExpectStep,
    HangUpStep,
    SayStep,
    Scenario,
    SilenceCondition,
    SilenceStep,
    StateCondition,
    TextStep,
    ToolCallCondition,
    TranscriptCondition,
    WaitForStep,
)

NS = 1_000_000_000
HANG_UP_WAIT_S = 30.0


class StepFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class ScriptRun:
    """What the script leaves for after the call: the expectations to check."""

    expectations: list[tuple[int, Expectation]] = field(default_factory=list)


def step_kind(step: Any) -> str:
    return {
        SayStep: "say",
        BargeInStep: "barge_in",
        TextStep: "text",
        SilenceStep: "silence",
        WaitForStep: "wait_for",
        ExpectStep: "expect",
        HangUpStep: "hang_up",
    }[type(step)]


def make_script(scenario: Scenario, run: ScriptRun) -> Callable[[CallContext], Any]:
    async def script(ctx: CallContext) -> None:
        for index, step in enumerate(scenario.script):
            kind = step_kind(step)
            ctx.timeline.add(time.monotonic_ns(), "step.started", index=index, kind=kind)
            try:
                detail = await _run_step(ctx, run, index, step)
            except StepFailed as exc:
                now = time.monotonic_ns()
                ctx.timeline.add(now, "step.finished", index=index, kind=kind, ok=False, detail=str(exc))
                ctx.timeline.add(
                    now, "error", where=f"script step {index} ({kind})", message=str(exc), reason=exc.reason
                )
                return
            except websockets.ConnectionClosed:
                now = time.monotonic_ns()
                message = f"the socket closed during step {index} ({kind})"
                ctx.timeline.add(now, "step.finished", index=index, kind=kind, ok=False, detail=message)
                if not ctx.hung_up:
                    ctx.timeline.add(
                        now,
                        "error",
                        where=f"script step {index} ({kind})",
                        message=message,
                        reason="closed_by_server",
                    )
                return
            ctx.timeline.add(
                time.monotonic_ns(), "step.finished", index=index, kind=kind, ok=True, detail=detail
            )

    return script


async def _run_step(ctx: CallContext, run: ScriptRun, index: int, step: Any) -> str | None:
    if isinstance(step, SayStep):
        await _speak(ctx, index, step, "say")
    elif isinstance(step, BargeInStep):
        heard_from = await _until(
            ctx,
            step.timeout,
            "the agent to be audible",
            lambda now: ctx.live.playback.audible_since(now),
            _audible_wake(ctx),
            audio=True,
        )
        start_at = heard_from + round(step.after * NS)
        await _sleep_until(ctx, start_at)
        await _speak(ctx, index, step, "barge_in")
    elif isinstance(step, TextStep):
        await ctx.send_message(wire.user_text_message(step.text, urgency=step.urgency))
    elif isinstance(step, SilenceStep):
        composer = ctx.composer
        target = max(composer.busy_until, composer.samples_sent) + math.ceil(
            step.silence * ctx.plan.input_rate
        )
        await _until(
            ctx,
            step.silence + 30,
            "the silence to be sent",
            lambda now: composer.samples_sent >= target or None,
            stream=target,
        )
    elif isinstance(step, WaitForStep):
        await _wait_for(ctx, step)
    elif isinstance(step, ExpectStep):
        run.expectations.extend((index, e) for e in step.expect)
    elif isinstance(step, HangUpStep):
        if step.hang_up.message is None:
            await ctx.close()
        else:
            ctx.hung_up = True
            await ctx.send_message(wire.hang_up(step.hang_up.message))
            await _until(
                ctx,
                HANG_UP_WAIT_S,
                "the server to end the call",
                lambda now: ctx.live.closed or None,
                closing_ok=True,
            )
    return None


async def _speak(ctx: CallContext, index: int, step: SayStep | BargeInStep, kind: str) -> None:
    rate = ctx.plan.input_rate
    chain = step.caller.chain() if step.caller is not None else ctx.plan.caller
    if chain is None:
        pcm = await asyncio.to_thread(load_pcm, step.path, rate)
    else:
        # The clip side of the caller chain, once per (clip, rate, chain) process-wide; the length
        # and so the speech bounds are the clean clip's.
        rendered = await asyncio.to_thread(clip_audio, step.path, rate, chain)
        pcm = rendered.pcm
        ctx.clipped_in_clips += rendered.clipped
    start, end = clip_bounds(step, len(pcm), rate)
    utterance = ctx.composer.enqueue(pcm)
    ctx.result.user_audio.append((utterance.start_sample, step.path, chain))
    ctx.timeline.add(
        time.monotonic_ns(),
        "utterance.queued",
        step=index,
        name=step.name,
        kind=kind,
        file=step.file,
        start_sample=utterance.start_sample,
        speech_start_sample=utterance.start_sample + start,
        speech_end_sample=utterance.start_sample + end,
        end_sample=utterance.end_sample,
    )
    await _until(
        ctx,
        pcm.size / rate + 30,
        "the utterance to be sent",
        lambda now: ctx.composer.samples_sent >= utterance.end_sample or None,
        stream=utterance.end_sample,
    )


async def _wait_for(ctx: CallContext, step: WaitForStep) -> None:
    live = ctx.live
    cond = step.wait_for
    started = time.monotonic_ns()
    if isinstance(cond, AgentAudible):
        await _until(
            ctx,
            step.timeout,
            "the agent to be audible",
            lambda now: live.playback.audible_since(now),
            _audible_wake(ctx),
            audio=True,
        )
    elif isinstance(cond, AgentDone):
        finals_before = live.agent_finals
        # An utterance still being heard is the current one, even when its final transcript and
        # `listening` are in already: a server may send a whole utterance faster than it plays (the
        # local server's sink agent sends its greeting with the handshake's answer).
        seen_speaking = [live.state == "speaking" or live.playback.last_audible_heard_ns > started]

        def ended() -> bool:
            if live.state == "speaking":
                seen_speaking[0] = True
            return live.agent_finals > finals_before or (seen_speaking[0] and live.state == "listening")

        def done(now: int) -> Any:
            # Heard to its end: the listener has played everything received so far.
            return ended() and now >= live.playback.last_audible_heard_ns or None

        def heard_to_end() -> int | None:
            # Until the utterance has ended (a message says so, and messages wake the step) the
            # time its audio is heard to keeps moving: waking for it would wake at every frame.
            return live.playback.last_audible_heard_ns if ended() else None

        await _until(ctx, step.timeout, "the agent to finish speaking", done, heard_to_end)
    elif isinstance(cond, StateCondition):
        await _until(ctx, step.timeout, f"state {cond.state!r}", lambda now: live.state == cond.state or None)
    elif isinstance(cond, TranscriptCondition):
        pattern = cond.regex
        await _until(
            ctx,
            step.timeout,
            f"a {cond.role} transcript matching {cond.transcript!r}",
            lambda now: live.matches(pattern, cond.role) or None,
        )
    elif isinstance(cond, ToolCallCondition):
        await _until(
            ctx,
            step.timeout,
            f"a call of tool {cond.tool_call!r}",
            lambda now: any(c["name"] == cond.tool_call for c in live.tool_calls) or None,
        )
    elif isinstance(cond, SilenceCondition):
        quiet_ns = round(cond.silence * NS)

        def quiet_since() -> int:
            return max(started, live.playback.last_audible_heard_ns)

        await _until(
            ctx,
            step.timeout,
            f"{cond.silence:g} s without agent audio",
            lambda now: now >= quiet_since() + quiet_ns or None,
            lambda: quiet_since() + quiet_ns,
        )
    else:  # pragma: no cover - the model's union is closed
        raise StepFailed("internal", f"unknown wait condition {cond!r}")


def _audible_wake(ctx: CallContext) -> Callable[[], int | None]:
    """Audio heard in the future (buffered): wake when it starts being heard."""

    def wake() -> int | None:
        return ctx.live.playback.next_audible_start(time.monotonic_ns())

    return wake


async def _until(
    ctx: CallContext,
    timeout_s: float,
    what: str,
    check: Callable[[int], Any],
    wake_at: Callable[[], int | None] | None = None,
    *,
    closing_ok: bool = False,
    stream: int | None = None,
    audio: bool = False,
) -> Any:
    """Wait until `check(now)` returns a value (not None); StepFailed after `timeout_s`.

    Re-checked whenever the call's live state changes (a data message, the socket closing), at
    `wake_at()` if it names a future time (things the listener will hear later, from audio
    already buffered), when the outgoing stream reaches sample `stream`, and on every agent
    audio frame if `audio`.
    """
    deadline = time.monotonic_ns() + round(timeout_s * NS)
    live = ctx.live
    if stream is not None:
        live.watch_stream(stream)
        try:
            return await _until(ctx, timeout_s, what, check, wake_at, closing_ok=closing_ok, audio=audio)
        finally:
            live.unwatch_stream(stream)
    if audio:
        live.audio_waiters += 1
        try:
            return await _until(ctx, timeout_s, what, check, wake_at, closing_ok=closing_ok)
        finally:
            live.audio_waiters -= 1
    while True:
        ctx.live.changed.clear()
        now = time.monotonic_ns()
        value = check(now)
        if value is not None:
            return value
        if ctx.live.closed:
            if closing_ok:
                return True
            raise websockets.ConnectionClosedOK(None, None)
        if now >= deadline:
            raise StepFailed("wait_timeout", f"timed out after {timeout_s:g} s waiting for {what}")
        until = deadline
        if wake_at is not None:
            at = wake_at()
            if at is not None and now < at < until:
                until = at
        await ctx.live.wait_change(until)


async def _sleep_until(ctx: CallContext, t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / NS
    if delay > 0:
        await asyncio.sleep(delay)
