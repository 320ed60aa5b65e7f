"""The committed audio corpus: short speech clips with exact speech bounds (audio_corpus/).

Each clip's manifest entry records where its speech begins and ends, so user-turn metrics can
be anchored on the stream time of the last speech sample without running a detector at load
time. Rebuild the clips with `python -m uvbench.audio.make_corpus`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from uvbench.audio import pcm as _pcm

CORPUS_DIR = Path(__file__).resolve().parents[2] / "audio_corpus"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Clip:
    """One manifest entry. Bounds are sample indices at `sample_rate`: the first speech sample
    and one past the last, so end - start is the speech length."""

    file: str
    text: str
    sample_rate: int
    channels: int
    format: str  # soundfile's name for the container: "WAV" or "FLAC" (always 16-bit PCM)
    duration_s: float
    speech_start_s: float
    speech_end_s: float
    speech_start_sample: int
    speech_end_sample: int
    path: Path

    def to_entry(self) -> dict[str, Any]:
        """The manifest entry: every field but `path`, which depends on where the corpus is."""
        entry = dataclasses.asdict(self)
        del entry["path"]
        return entry


_ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(Clip) if f.name != "path")


def load_manifest(directory: Path = CORPUS_DIR) -> dict[str, Clip]:
    """The corpus's clips keyed by file name, in manifest order."""
    directory = Path(directory)
    entries = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    clips: dict[str, Clip] = {}
    for i, entry in enumerate(entries):
        if set(entry) != set(_ENTRY_FIELDS):
            raise ValueError(
                f"{directory / MANIFEST_NAME}: entry {i} has fields {sorted(entry)}, "
                f"expected {sorted(_ENTRY_FIELDS)}"
            )
        clips[entry["file"]] = Clip(**entry, path=directory / entry["file"])
    return clips


def write_manifest(clips: list[Clip], directory: Path = CORPUS_DIR) -> Path:
    """Write the manifest for `clips` (in the given order); returns its path."""
    path = Path(directory) / MANIFEST_NAME
    text = json.dumps([clip.to_entry() for clip in clips], indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def load_clip_pcm(clip: Clip, sample_rate: int) -> np.ndarray:
    """The clip as int16 mono at `sample_rate`: channels averaged, soxr HQ when rates differ.

    Speech bounds scale with the rate: clip.speech_end_sample * sample_rate / clip.sample_rate.
    """
    _pcm.check_rate(sample_rate)
    data, file_rate = sf.read(clip.path, dtype="float64", always_2d=True)
    return _pcm.to_int16(_pcm.resample(_pcm.mono_float(data), file_rate, sample_rate))
