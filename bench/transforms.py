"""Cost of the caller audio transforms (uvbench/audio/transforms.py) per call-second.

Clip side: each transform, and a typical chain, applied to a whole 10 s clip once (what the
corpus cache pays per clip per chain), as ms per call-second and as µs per 20 ms of audio.
Stream side: the noise bed, built once per call (ms), then mixed into 20 ms chunks (µs per chunk,
against the chunk's 20 ms budget), with and without a phone line after the noise.

    .venv/bin/python bench/transforms.py
    .venv/bin/python bench/transforms.py --seconds 30 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model  # noqa: E402
from uvbench.audio.transforms import Chain, Codec, Gain, Noise, Reverb, Telephone  # noqa: E402

RATES = (16000, 48000)
CHUNK_S = 0.02


def speechlike(seconds: float, rate: int) -> np.ndarray:
    """Seeded noise shaped by a syllable-rate envelope: a stand-in for a clip, same every run."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    return 0.1 * rng.normal(size=t.size) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def clip_side(rate: int, seconds: float, repeat: int) -> list[dict]:
    x = speechlike(seconds, rate)
    chains = [
        Chain((Gain(-6),)),
        Chain((Telephone(None),)),
        Chain((Telephone("ulaw"),)),
        Chain((Telephone("alaw"),)),
        Chain((Codec("gsm"),)),
        Chain((Codec("mp3", 6),)),
        Chain((Reverb(0.5, 0.3),)),
        Chain((Reverb(0.5, 0.3), Gain(-3), Telephone("ulaw"))),
    ]
    rows = []
    for chain in chains:
        took = best_of(repeat, lambda chain=chain: chain.apply_clip(x, rate))
        rows.append(
            {
                "side": "clip",
                "rate": rate,
                "chain": chain.label,
                "ms_per_call_s": round(1000 * took / seconds, 3),
                "us_per_20ms": round(1e6 * took / seconds * CHUNK_S, 1),
            }
        )
    return rows


def stream_side(rate: int, seconds: float, repeat: int) -> list[dict]:
    noise = speechlike(10.0, 16000)
    chunk = int(CHUNK_S * rate)
    audio = (speechlike(seconds, rate) * 32768).astype(np.int16)
    rows = []
    for chain in (
        Chain((Noise(10, samples=noise, sample_rate=16000),)),
        Chain((Reverb(0.5, 0.3), Noise(10, samples=noise, sample_rate=16000), Telephone("ulaw"))),
    ):
        build = best_of(repeat, lambda chain=chain: chain.stream(rate, 0.05))

        def run(chain=chain):
            stream = chain.stream(rate, 0.05)
            started = time.perf_counter()
            for i in range(0, audio.size - chunk + 1, chunk):
                stream.process(audio[i : i + chunk])
            return time.perf_counter() - started

        mixing = min(run() for _ in range(repeat))
        per_chunk = mixing / (audio.size // chunk)
        rows.append(
            {
                "side": "stream",
                "rate": rate,
                "chain": chain.label,
                "build_ms_per_call": round(1000 * build, 1),
                "us_per_20ms_chunk": round(1e6 * per_chunk, 1),
                "budget_pct": round(100 * per_chunk / CHUNK_S, 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the clip and the stream")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the fastest is kept")
    args = parser.parse_args()
    for rate in RATES:
        for row in clip_side(rate, args.seconds, args.repeat) + stream_side(rate, args.seconds, args.repeat):
            print(json.dumps(row))
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}); load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}; {platform.machine()}, Python {platform.python_version()}; one core, best of "
        f"{args.repeat}"
    )


if __name__ == "__main__":
    main()
