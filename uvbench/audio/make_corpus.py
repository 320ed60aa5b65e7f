"""Build audio_corpus/: synthesized speech clips padded with silence, plus manifest.json.

    python -m uvbench.audio.make_corpus [--out audio_corpus]

The speech bounds in the manifest come from construction (padding + the first and last non-zero
sample of the synthesized speech), and are checked against `speech_bounds` before anything is
written, so the corpus and the detector users run on their own recordings agree.

Deterministic: a fresh process renders the clips in a fixed order and the noise uses fixed
seeds. (eSpeak NG's pitch flutter depends on how much it has spoken in the process, so only a
fresh process reproduces the committed files exactly.)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from uvbench.audio.bounds import speech_bounds
from uvbench.audio.corpus import CORPUS_DIR, Clip, write_manifest
from uvbench.audio.pcm import INT16_SCALE, to_int16
from uvbench.audio.tts import synthesize

LEAD_S = 0.3
TRAIL_S = 0.6
NOISE_DBFS = -65.0
BOUNDS_TOLERANCE_S = 0.002


@dataclass(frozen=True)
class ClipSpec:
    file: str
    text: str
    sample_rate: int
    channels: int = 1
    # Seed of a -65 dBFS noise floor that makes "silence" realistic; None for digital silence.
    # Kept to clips whose speech starts and ends abruptly enough (no long low-level resampler
    # ringing or quiet decay) for the bounds to stay within tolerance of the noise-free truth.
    noise_seed: int | None = None


CLIPS: tuple[ClipSpec, ...] = (
    ClipSpec("hello_16k.wav", "Hi, I'd like to check the status of my order.", 16000),
    ClipSpec("order_number_8k.wav", "My order number is four five seven two.", 8000),
    ClipSpec("question_22k.flac", "Can you tell me when it will arrive?", 22050, noise_seed=3),
    ClipSpec("thanks_44k_stereo.wav", "Thank you, that's all I needed.", 44100, channels=2),
    ClipSpec("interrupt_48k.flac", "Wait, sorry, let me stop you there.", 48000, noise_seed=5),
    ClipSpec("yes_16k.wav", "Yes.", 16000),
    ClipSpec(
        "long_story_24k.wav",
        "I ordered a blue jacket last week and it still has not shipped. "
        "Could you please check what happened and send me a tracking number?",
        24000,
        noise_seed=7,
    ),
)

_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


def build_clip(spec: ClipSpec, out_dir: Path) -> Clip:
    """Render, pad, check and write one clip; returns its manifest entry."""
    rate = spec.sample_rate
    speech = synthesize(spec.text, rate).pcm
    voiced = np.flatnonzero(speech)
    if voiced.size == 0:
        raise RuntimeError(f"{spec.file}: synthesis produced silence")
    lead, trail = round(LEAD_S * rate), round(TRAIL_S * rate)
    start, end = lead + int(voiced[0]), lead + int(voiced[-1]) + 1

    mono = np.concatenate([np.zeros(lead), speech / INT16_SCALE, np.zeros(trail)])
    frames = np.repeat(mono[:, None], spec.channels, axis=1)
    if spec.noise_seed is not None:
        rng = np.random.default_rng(spec.noise_seed)
        frames = frames + rng.normal(0.0, 10.0 ** (NOISE_DBFS / 20.0), frames.shape)
    audio = to_int16(frames)

    found = speech_bounds(audio, rate)
    tolerance = round(BOUNDS_TOLERANCE_S * rate)
    if found is None or abs(found[0] - start) > tolerance or abs(found[1] - end) > tolerance:
        raise RuntimeError(f"{spec.file}: speech_bounds found {found}, construction says {(start, end)}")

    fmt = _FORMATS[Path(spec.file).suffix]
    path = out_dir / spec.file
    sf.write(path, audio if spec.channels > 1 else audio[:, 0], rate, format=fmt, subtype="PCM_16")
    return Clip(
        file=spec.file,
        text=spec.text,
        sample_rate=rate,
        channels=spec.channels,
        format=fmt,
        duration_s=round(len(audio) / rate, 6),
        speech_start_s=round(start / rate, 6),
        speech_end_s=round(end / rate, 6),
        speech_start_sample=start,
        speech_end_sample=end,
        path=path,
    )


def build_corpus(out_dir: Path = CORPUS_DIR) -> list[Clip]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = [build_clip(spec, out_dir) for spec in CLIPS]
    write_manifest(clips, out_dir)
    return clips


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CORPUS_DIR, help="corpus directory")
    args = parser.parse_args(argv)
    for clip in build_corpus(args.out):
        speech = clip.speech_end_s - clip.speech_start_s
        print(f"{clip.file}: {clip.duration_s:.2f} s, speech {speech:.2f} s")
    print(f"wrote {len(CLIPS)} clips and manifest.json to {args.out}")


if __name__ == "__main__":
    main()
