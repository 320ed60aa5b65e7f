"""The caller's audio on a call: `caller:` (uvbench.audio.transforms) applied to what the call sends.

Split as the transforms split it, so the pacer pays per chunk only what must run over the stream:

- each clip goes through its clip-side chain (the step's `caller:`, else the scenario's; every
  transform but the noise) once per (clip, rate, chain), process-wide (`clip_audio`, bounded by
  bytes like the decoded clips of `uvbench.audio.source`);
- the call's noise bed is built once per (chain, rate, speech level) and shared; each call gets its
  own `Stream` over it (`call_stream`), which the Composer mixes into every chunk, silences
  included.

The SNR is set against the speech as it reaches the noise: the clips after the room (gain,
reverb; a step's own, else the scenario's) over their exact speech bounds at the call's input
rate, pooled over every `say`/`barge_in` clip of the script (`speech_level`, once per scenario
and rate). Transforms keep a clip's length, so its speech bounds (`clip_bounds`) hold after any
chain. Blocking (decoding, effects): from asyncio, call through `asyncio.to_thread`.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uvbench.audio.sized_cache import SizedLru
from uvbench.audio.source import load_pcm, speech_bounds_at
from uvbench.audio.transforms import Chain, Gain, Noise, Rendered, Reverb, Stream, loop_start, speech_rms
from uvbench.scenario.model import BargeInStep, SayStep, Scenario

if TYPE_CHECKING:
    from uvbench.call.plan import CallPlan

CLIP_CACHE_BYTES = 256 * 1024 * 1024
"""Transformed clips kept (least recently used dropped first): as many bytes as 256 one-minute
clips at 16 kHz; a load run plays a few clips under a few chains."""
BED_CACHE_BYTES = 64 * 1024 * 1024
"""Noise beds kept: a 12 s loop at 48 kHz is 3.5 MB (int32 to mix, int16 for silent chunks)."""

_clips: SizedLru[Rendered] = SizedLru(CLIP_CACHE_BYTES, lambda r: r.pcm.nbytes)
# A stream prototype per bed, which every call's stream shares (`Stream.at`).
_beds: SizedLru[Stream] = SizedLru(BED_CACHE_BYTES, lambda s: s.nbytes)
_levels: dict[tuple[Any, ...], float] = {}
_levels_lock = threading.Lock()
LEVELS_KEPT = 1024


def clip_side(chain: Chain) -> Chain:
    """The part of `chain` applied to each clip: every transform but the noise, in order."""
    return Chain(tuple(t for t in chain.transforms if not isinstance(t, Noise)))


def room_side(chain: Chain) -> Chain:
    """The part of a clip's chain the speech goes through before it meets the noise (the room:
    gain, reverb; a scenario's `caller:` applies them in that order, before the noise)."""
    return Chain(tuple(t for t in chain.transforms if isinstance(t, Gain | Reverb)))


def _file_key(path: Path) -> tuple[Any, ...]:
    stat = os.stat(path)
    return (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, stat.st_ino)


def clip_audio(path: Path, rate: int, chain: Chain | None) -> Rendered:
    """The clip as the caller sends it: int16 at `rate` after `chain`'s clip side, and how many
    samples hit the int16 limits. Cached per (file identity, rate, clip-side chain); read-only."""
    pcm = load_pcm(path, rate)
    side = clip_side(chain) if chain is not None else Chain()
    if not side.transforms:
        return Rendered(pcm, 0)

    def make() -> Rendered:
        rendered = side.render_clip(pcm, rate)
        rendered.pcm.flags.writeable = False
        return rendered

    return _clips.get_or_make((_file_key(path), rate, side), make)


def clip_bounds(step: SayStep | BargeInStep, length: int, rate: int) -> tuple[int, int]:
    """The speech bounds of a step's clip in samples at `rate`, the clip being `length` samples:
    the corpus manifest's exact ones, else the step's `speech` rounded outwards."""
    clip = step.clip
    if clip is not None and step.speech is None:
        return speech_bounds_at(
            (clip.speech_start_sample, clip.speech_end_sample), clip.sample_rate, rate, target_length=length
        )
    bounds = step.bounds
    return min(length, math.floor(bounds.start * rate)), min(length, math.ceil(bounds.end * rate))


def _clip_chain(step: SayStep | BargeInStep, scenario: Scenario) -> Chain:
    caller = step.clip_caller(scenario.caller)
    return caller.chain() if caller is not None else Chain()


def speech_level(scenario: Scenario, rate: int) -> float:
    """The RMS the scenario's noise is set against: every `say`/`barge_in` clip after its room
    side, over its exact speech bounds, pooled, at `rate`. Cached per (clips, rooms, rate)."""
    steps = [s for s in scenario.script if isinstance(s, SayStep | BargeInStep)]
    if not steps:
        raise ValueError(
            f"scenario {scenario.name}: caller.noise needs speech to set its SNR against"
            " (expected a say or barge_in step)"
        )
    rooms = [room_side(_clip_chain(step, scenario)) for step in steps]
    key = (
        rate,
        tuple(
            (_file_key(s.path), s.bounds, s.speech is None, room)
            for s, room in zip(steps, rooms, strict=True)
        ),
    )
    with _levels_lock:
        level = _levels.get(key)
    if level is not None:
        return level
    clips = []
    for step, room in zip(steps, rooms, strict=True):
        pcm = load_pcm(step.path, rate)
        start, end = clip_bounds(step, pcm.size, rate)
        clips.append((room.before_noise(pcm, rate) if room.transforms else pcm, start, end))
    level = speech_rms(clips)
    with _levels_lock:
        if len(_levels) >= LEVELS_KEPT:
            _levels.clear()
        _levels[key] = level
    return level


def call_stream(
    chain: Chain | None, rate: int, level: float | None, seed: int | None = None
) -> Stream | None:
    """A new stream side for one call (the noise bed from the start `seed` draws, by default the
    noise's own seed), or None when the chain has no noise. The bed is built once per (chain,
    rate, level) and shared read-only."""
    if chain is None or chain.noise is None:
        return None
    if level is None:
        raise ValueError("a chain with noise needs the speech level of its call (speech_level)")
    proto = _beds.get_or_make((chain, rate, level), lambda: chain.stream(rate, level))
    # The copy shares the bed (never written) and starts at the prototype's position, clipped 0.
    if seed is None:
        return proto.at(proto.position)
    return proto.at(loop_start(seed, proto.loop_size))


def plan_stream(plan: CallPlan) -> Stream | None:
    """The noise stream of the call `plan` makes, at the call's start: the one the recording
    rebuilds the sent audio with (audio/recording.py), so the same as the engine mixes in."""
    return call_stream(plan.caller, plan.input_rate, plan.speech_level, seed=plan.call_noise_seed)


def clear_caches() -> None:
    """Forget every transformed clip, noise bed and speech level (tests; or to free memory)."""
    _clips.clear()
    _beds.clear()
    with _levels_lock:
        _levels.clear()


def audio_summary(chain: Chain | None, stream: Stream | None, clipped_in_clips: int) -> dict[str, Any]:
    """The `caller.audio` timeline event's data: the chain's label, its SNR (None without noise)
    and the samples that hit the int16 limits, in the clips and in the stream."""
    noise = chain.noise if chain is not None else None
    return {
        "chain": chain.label if chain is not None else "clean",
        "snr_db": noise.snr_db if noise is not None else None,
        "clipped_samples": int(clipped_in_clips + (stream.clipped if stream is not None else 0)),
    }


__all__ = [
    "audio_summary",
    "call_stream",
    "clear_caches",
    "clip_audio",
    "clip_bounds",
    "clip_side",
    "plan_stream",
    "room_side",
    "speech_level",
]
