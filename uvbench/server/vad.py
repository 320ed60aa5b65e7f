"""Turn endpointing for the simulated agent: an energy VAD on 32 ms frames (sans-I/O).

Ultravox's built-in VAD works on 32 ms frames and its settings (`vadSettings`) are expressed in
them; this one honours the same settings with a plain energy detector, cheap enough for hundreds of
calls per core (one mean-square per frame). Frames are cut on the input stream's sample clock, so
every decision is tied to an exact stream position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from uvbench.protocol.durations import parse_duration

FRAME_S = 0.032

# Speech probability from frame energy: -50 dBFS and below is silence (0), -20 dBFS and above is
# certain speech (1), linear in between. frameActivationThreshold 0.1 is then about -47 dBFS:
# quiet speech passes, a -60 dBFS noise floor does not.
_FLOOR_DB = -50.0
_SPAN_DB = 30.0


@dataclass(frozen=True)
class VadSettings:
    turn_endpoint_delay_s: float = 0.384
    minimum_turn_duration_s: float = 0.0
    minimum_interruption_duration_s: float = 0.09
    frame_activation_threshold: float = 0.1

    @classmethod
    def from_api(cls, settings: dict | None) -> VadSettings:
        settings = settings or {}
        defaults = cls()

        def seconds(key: str, default: float) -> float:
            return parse_duration(settings[key]) if key in settings else default

        return cls(
            turn_endpoint_delay_s=seconds("turnEndpointDelay", defaults.turn_endpoint_delay_s),
            minimum_turn_duration_s=seconds("minimumTurnDuration", defaults.minimum_turn_duration_s),
            minimum_interruption_duration_s=seconds(
                "minimumInterruptionDuration", defaults.minimum_interruption_duration_s
            ),
            frame_activation_threshold=float(
                settings.get("frameActivationThreshold", defaults.frame_activation_threshold)
            ),
        )

    @property
    def endpoint_frames(self) -> int:
        # Only whole frames matter (1-31 ms behave alike); at least one silent frame ends a turn.
        return max(1, math.ceil(round(self.turn_endpoint_delay_s / FRAME_S, 6)))

    @property
    def interruption_s(self) -> float:
        # The interruption minimum is ignored when below the turn minimum (OpenAPI description).
        return max(self.minimum_interruption_duration_s, self.minimum_turn_duration_s)


@dataclass(frozen=True)
class SpeechStarted:
    start_sample: int


@dataclass(frozen=True)
class SpeechLasted:
    """The current speech segment has now held `speech_s` of speech frames (emitted each frame)."""

    start_sample: int
    speech_s: float


@dataclass(frozen=True)
class TurnEnded:
    start_sample: int
    end_sample: int
    """One past the last sample of the last speech frame."""
    speech_s: float
    is_turn: bool
    """False when shorter than minimumTurnDuration: the agent ignores it."""


VadEvent = SpeechStarted | SpeechLasted | TurnEnded


class TurnDetector:
    """Feed it s16le samples in any chunking; it reports speech starts and turn ends."""

    def __init__(self, sample_rate: int, settings: VadSettings) -> None:
        self.sample_rate = sample_rate
        self.settings = settings
        # A mean square above this is a speech frame.
        db = _FLOOR_DB + settings.frame_activation_threshold * _SPAN_DB
        self._ms_threshold = (10 ** (db / 20) * 32768.0) ** 2
        self._pending = np.empty(0, dtype=np.int16)
        self.samples_seen = 0
        """Samples consumed into whole frames so far (the stream position of the next frame)."""
        self._frame_index = 0
        self._segment_start: int | None = None
        self._last_speech_end = 0
        self._speech_frames = 0
        self._silent_run = 0

    def _frame_bounds(self, index: int) -> int:
        # Frame k starts at floor(k * rate * 0.032): exact on every rate, even 22.05 or 44.1 kHz.
        return (index * self.sample_rate * 32) // 1000

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        if self._pending.size:
            samples = np.concatenate((self._pending, samples))
        events: list[VadEvent] = []
        offset = 0
        frame_s = FRAME_S
        while True:
            start = self._frame_bounds(self._frame_index)
            end = self._frame_bounds(self._frame_index + 1)
            length = end - start
            if samples.size - offset < length:
                break
            frame = samples[offset : offset + length].astype(np.float32)
            offset += length
            self._frame_index += 1
            self.samples_seen = end
            is_speech = float(np.dot(frame, frame)) / length > self._ms_threshold
            if is_speech:
                if self._segment_start is None:
                    self._segment_start = start
                    self._speech_frames = 0
                    events.append(SpeechStarted(start))
                self._speech_frames += 1
                self._silent_run = 0
                self._last_speech_end = end
                events.append(SpeechLasted(self._segment_start, self._speech_frames * frame_s))
            elif self._segment_start is not None:
                self._silent_run += 1
                if self._silent_run >= self.settings.endpoint_frames:
                    speech_s = self._speech_frames * frame_s
                    events.append(
                        TurnEnded(
                            self._segment_start,
                            self._last_speech_end,
                            speech_s,
                            is_turn=speech_s + 1e-9 >= self.settings.minimum_turn_duration_s,
                        )
                    )
                    self._segment_start = None
                    self._silent_run = 0
        self._pending = samples[offset:].copy() if offset < samples.size else np.empty(0, np.int16)
        return events

    @property
    def in_speech(self) -> bool:
        return self._segment_start is not None
