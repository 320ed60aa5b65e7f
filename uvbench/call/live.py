"""What a running call knows right now, for the script's `wait_for` steps.

The metrics come afterwards from the whole timeline (uvbench.metrics); this is the small online
view the script needs while the call runs: what the agent said, its state, and when the listener
hears agent audio (an online version of the playback model: real-time playback of what arrived,
cut by an honoured clear).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uvbench.protocol.audio import audible_bounds_of

NS = 1_000_000_000


MERGE_GAP_NS = NS
"""Agent audio heard with gaps shorter than this (pauses between words and sentences) counts as
one stretch of speech: "800 ms into the agent's audible speech" counts from the stretch's start."""


SETTLE_FRAMES = 64
"""Frames received are settled (scanned for audible samples) when someone asks, or once this many
are waiting: about 1.3 s of 20 ms frames (40 KiB at 16 kHz), never more held per call."""


@dataclass
class LivePlayback:
    sample_rate: int
    honor_clear: bool = True
    play_end_ns: int = 0
    """When everything received so far will have been played."""
    stretches: list[list[int]] = field(default_factory=list)
    """[start, end) of each stretch of audible agent speech, as the listener hears (or will hear) it."""
    rows: Any = None
    """Where each settled frame's row goes (the timeline's `audio_in`: arrival, samples, first and
    last audible sample), in arrival order; None to keep none."""
    record: Callable[[bytes], Any] | None = None
    """Given the PCM of the frames settled (whole samples), in arrival order: the agent's audio
    written to disk a settle at a time, not a frame at a time."""
    _pending: list[tuple[int, bytes]] = field(default_factory=list)

    def receive(self, t_ns: int, frame: bytes) -> None:
        """An agent audio frame arrived at `t_ns`. Its audible samples are found later, with those
        of the frames after it (`settle`): a frame costs the pacing loop next to nothing."""
        pending = self._pending
        pending.append((t_ns, frame))
        if len(pending) >= SETTLE_FRAMES:
            self.settle()

    def settle(self) -> None:
        """Take in every frame received so far; every reader below does this first."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        frames = [frame for _, frame in pending]
        bounds = audible_bounds_of(frames)
        rows = self.rows
        # Each frame in turn: it plays from its arrival or when the audio before it ends, and its
        # audible samples extend the last stretch of speech or start one. Prebuffering is left to
        # the offline model (listener.py): a live wait needs no more precision.
        rate, play_end, stretches = self.sample_rate, self.play_end_ns, self.stretches
        last_stretch = stretches[-1] if stretches else None
        for (t_ns, frame), (first, last) in zip(pending, bounds, strict=True):
            samples = len(frame) >> 1
            if rows is not None:
                rows.extend((t_ns, samples, first, last))
            start = t_ns if t_ns > play_end else play_end
            if first >= 0:
                a = start + first * NS // rate
                b = start + (last + 1) * NS // rate
                if last_stretch is not None and a - last_stretch[1] < MERGE_GAP_NS:
                    if b > last_stretch[1]:
                        last_stretch[1] = b
                else:
                    last_stretch = [a, b]
                    stretches.append(last_stretch)
            play_end = start + samples * NS // rate
        self.play_end_ns = play_end
        if self.record is not None:
            self.record(b"".join(f if not len(f) & 1 else f[:-1] for f in frames))

    def on_clear(self, t_ns: int) -> None:
        if not self.honor_clear:
            return
        self.settle()
        self.play_end_ns = min(self.play_end_ns, t_ns)
        self.stretches = [s for s in self.stretches if s[0] < t_ns]
        if self.stretches:
            self.stretches[-1][1] = min(self.stretches[-1][1], t_ns)

    @property
    def first_audible_ns(self) -> int | None:
        self.settle()
        return self.stretches[0][0] if self.stretches else None

    @property
    def last_audible_heard_ns(self) -> int:
        """When the last non-silent sample received so far will have been heard."""
        self.settle()
        return self.stretches[-1][1] if self.stretches else 0

    def audible_since(self, t_ns: int) -> int | None:
        """When the stretch of agent speech heard at `t_ns` started; None if none is heard then."""
        self.settle()
        for start, end in reversed(self.stretches):
            if start <= t_ns < end:
                return start
            if end <= t_ns:
                return None
        return None

    def audible_at(self, t_ns: int) -> bool:
        return self.audible_since(t_ns) is not None

    def next_audible_start(self, t_ns: int) -> int | None:
        """The first stretch that starts being heard after `t_ns` (audio already buffered)."""
        self.settle()
        later = [start for start, _ in self.stretches if start > t_ns]
        return min(later) if later else None


@dataclass
class LiveState:
    playback: LivePlayback
    state: str | None = None
    transcripts: dict[int, dict[str, Any]] = field(default_factory=dict)
    """By ordinal: {"role", "medium", "text", "final"}."""
    agent_finals: int = 0
    states_seen: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stream_targets: list[int] = field(default_factory=list)
    """Stream positions (in samples) that script steps wait for the outgoing stream to reach: a
    chunk sent wakes them only once it reaches the nearest (not 50 times a second per call)."""
    stream_wake_sample: int = 1 << 62
    """The nearest of `stream_targets` (far off when none): the paced sender notifies once a chunk
    reaches it (audio/sender.py, `StreamWatch`)."""
    audio_waiters: int = 0
    """Script steps waiting for agent audio to become audible: only then does each agent audio
    frame wake them. Other waits need no frame-by-frame wake-up: messages wake them, and what the
    listener will hear of audio already received is a time they can sleep until (`wake_at`)."""

    def notify(self) -> None:
        self.changed.set()

    def watch_stream(self, sample: int) -> None:
        """Be woken once the outgoing stream reaches `sample`."""
        self.stream_targets.append(sample)
        self.stream_wake_sample = min(self.stream_targets)

    def unwatch_stream(self, sample: int) -> None:
        self.stream_targets.remove(sample)
        self.stream_wake_sample = min(self.stream_targets, default=1 << 62)

    async def wait_change(self, deadline_ns: int) -> bool:
        """Wait until something changes or `deadline_ns` passes; False at the deadline.

        The caller clears `changed` before it last looked at the state, so nothing is missed. A
        plain timer rather than asyncio.wait_for: this runs for every waiting script step on every
        change, and wait_for costs a task each time."""
        loop = asyncio.get_running_loop()
        remaining = (deadline_ns - time.monotonic_ns()) / NS
        if remaining <= 0:
            return False
        timer = loop.call_at(loop.time() + remaining, self.changed.set)
        try:
            await self.changed.wait()
        finally:
            timer.cancel()
        return time.monotonic_ns() < deadline_ns

    def add_transcript(
        self, role: str, medium: str, text: str | None, delta: str | None, final: bool, ordinal: int | None
    ) -> None:
        key = ordinal if ordinal is not None else -(len(self.transcripts) + 1)
        entry = self.transcripts.setdefault(key, {"role": role, "medium": medium, "text": "", "final": False})
        if text is not None:
            entry["text"] = text
        elif delta:
            entry["text"] += delta
        if final and not entry["final"]:
            entry["final"] = True
            if role == "agent":
                self.agent_finals += 1

    def text_of(self, role: str | None) -> list[str]:
        return [t["text"] for _, t in sorted(self.transcripts.items()) if role in (None, t["role"])]

    def matches(self, pattern: re.Pattern[str], role: str | None) -> bool:
        return any(pattern.search(text) for text in self.text_of(role))
