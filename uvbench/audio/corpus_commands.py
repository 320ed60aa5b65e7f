"""What `uvbench corpus synth` and `uvbench corpus annotate` do, as plain functions.

synth: speak a line offline (eSpeak NG), pad it with silence and write it with its exact speech
bounds into the folder's manifest.json, so a scenario can use it like a committed corpus clip.

annotate: for recordings of your own voice. Decode each file, find where its speech begins and
ends (`uvbench.audio.bounds.speech_bounds`) and write the bounds into a manifest.json, so
user-turn metrics can be anchored on the last speech sample without a detector at run time.

Both write the same manifest format as audio_corpus/ (`uvbench.audio.corpus`): existing entries
for other files are kept, an entry for the same file is replaced in place. Bad input raises
`CorpusError` with a one-line message saying what is wrong and how to fix it.
"""

from __future__ import annotations

import errno
import math
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

from uvbench.audio.bounds import speech_bounds
from uvbench.audio.corpus import MANIFEST_NAME, Clip, load_manifest, write_manifest
from uvbench.audio.source import AudioFileError, DecodedAudio, read_audio
from uvbench.audio.tts import DEFAULT_VOICE, DEFAULT_WPM, SynthesisError, synthesize

__all__ = ["CorpusError", "synth", "annotate", "WRITE_FORMATS"]

WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
"""Extensions `synth` writes (16-bit PCM), and the soundfile container each one means."""


class CorpusError(ValueError):
    """Bad input to a corpus command; the message is one line: what, where, how to fix it."""


def _clip(
    file: str, text: str, rate: int, channels: int, fmt: str, frames: int, bounds: tuple[int, int], path: Path
) -> Clip:
    start, end = bounds
    return Clip(
        file=file,
        text=text,
        sample_rate=rate,
        channels=channels,
        format=fmt,
        duration_s=round(frames / rate, 6),
        speech_start_s=round(start / rate, 6),
        speech_end_s=round(end / rate, 6),
        speech_start_sample=int(start),
        speech_end_sample=int(end),
        path=path,
    )


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(
            f"cannot create folder {folder}: {_reason(exc)}; choose a folder you can write to"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CorpusError(
            f"cannot write to folder {folder}: permission denied; choose a folder you can write to"
        )


def _load_existing(folder: Path) -> dict[str, Clip]:
    if not (folder / MANIFEST_NAME).exists():
        return {}
    try:
        return load_manifest(folder)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        message = " ".join(str(exc).split())
        raise CorpusError(
            f"{folder / MANIFEST_NAME} is not a readable uvbench manifest ({message}); fix it or move it away"
        ) from None


def _update_manifest(folder: Path, clips: list[Clip]) -> None:
    """Add `clips` to the folder's manifest: same file name -> replaced in place, else appended."""
    entries = _load_existing(folder)
    for clip in clips:
        entries[clip.file] = clip
    try:
        write_manifest(list(entries.values()), folder)
    except OSError as exc:
        raise CorpusError(
            f"cannot write {folder / MANIFEST_NAME}: {_reason(exc)}; choose a folder you can write to"
        ) from None


def _temporary_beside(path: Path) -> str:
    """A new empty file next to `path`, made with the mode any new file gets (0666 less the umask,
    so 0644 usually): `tempfile.mkstemp` makes it 0600, which the rename would hand on to the clip."""
    for _ in range(100):
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{path.suffix}")
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return str(temp)
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def _write_audio(path: Path, audio: np.ndarray, rate: int, fmt: str) -> None:
    """Write through a temporary file in the same folder, so a reader never sees half a file."""
    try:
        temp = _temporary_beside(path)
        try:
            sf.write(temp, audio, rate, format=fmt, subtype="PCM_16")
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    except OSError as exc:
        raise CorpusError(f"cannot write {path}: {_reason(exc)}; choose a folder you can write to") from None


def synth(
    text: str,
    out_path: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    lead_s: float = 0.3,
    tail_s: float = 0.6,
    wpm: int = DEFAULT_WPM,
    voice: str = DEFAULT_VOICE,
    manifest: bool = True,
) -> Clip:
    """Speak `text` into a new clip at `out_path` (.wav or .flac, 16-bit mono) and return its entry.

    The speech is synthesized offline at `sample_rate` (8000..48000) and `wpm`, with `lead_s`
    seconds of silence before it and `tail_s` after. Its bounds are exact, from construction: the
    first and one past the last non-zero sample of the synthesized speech. With `manifest`, the
    entry is added to (or replaces the same file's entry in) manifest.json in the output folder,
    which is created if missing. The folder itself is created too.
    """
    out_path = Path(out_path)
    fmt = WRITE_FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise CorpusError(
            f"cannot write {out_path}: unknown extension {out_path.suffix or '(none)'!r}; "
            f"name the file {out_path.stem}.wav or {out_path.stem}.flac"
        )
    if not isinstance(text, str) or not text.strip():
        raise CorpusError("nothing to say: give the text of the clip")
    for name, value in (("lead_s", lead_s), ("tail_s", tail_s)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise CorpusError(f"{name} must be a number of seconds >= 0, got {value!r}")
    try:
        speech = synthesize(text, sample_rate, wpm=wpm, voice=voice)
    except (ValueError, TypeError) as exc:  # bad rate or wpm
        raise CorpusError(f"cannot synthesize {out_path.name}: {exc}") from None
    except SynthesisError as exc:
        raise CorpusError(f"cannot synthesize {out_path.name}: {' '.join(str(exc).split())}") from None
    voiced = np.flatnonzero(speech.pcm)
    if voiced.size == 0:
        raise CorpusError(f"no speech found: the synthesizer produced silence for {text!r}; check the text")

    lead, tail = round(lead_s * sample_rate), round(tail_s * sample_rate)
    audio = np.concatenate([np.zeros(lead, np.int16), speech.pcm, np.zeros(tail, np.int16)])
    bounds = (lead + int(voiced[0]), lead + int(voiced[-1]) + 1)

    folder = out_path.parent
    _ensure_folder(folder)
    clip = _clip(out_path.name, text, sample_rate, 1, fmt, len(audio), bounds, out_path)
    if manifest:
        _load_existing(folder)  # a broken manifest fails before any file is written
    _write_audio(out_path, audio, sample_rate, fmt)
    if manifest:
        _update_manifest(folder, [clip])
    return clip


def _entry_name(path: Path, folder: Path) -> str:
    """The file's name as the manifest in `folder` records it (relative, forward slashes)."""
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return path.as_posix()


def _sidecar_text(path: Path) -> str | None:
    sidecar = path.with_suffix(".txt")
    if not sidecar.is_file():
        return None
    try:
        return " ".join(sidecar.read_text(encoding="utf-8-sig").split())
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise CorpusError(f"cannot read the transcript {sidecar}: {reason}; save it as UTF-8 text") from None


def annotate(
    paths: Iterable[str | os.PathLike[str]],
    *,
    manifest_dir: str | os.PathLike[str] | None = None,
    threshold_db: float = -45.0,
) -> list[Clip]:
    """Find the speech bounds of your own recordings and record them in a manifest.json.

    Each file is decoded as it is (any format libsndfile reads; its own rate and channels) and
    its bounds found with `speech_bounds(..., threshold_db=threshold_db)`: speech is where the
    5 ms RMS exceeds `threshold_db` dBFS. The manifest goes in `manifest_dir` if given (entries
    then name the files relative to it), else next to each file (one manifest per folder).
    Existing entries for other files are kept. A clip's text comes from a sidecar `<name>.txt`
    next to it if there is one, else from the file's existing manifest entry, else it is empty.

    All files are checked before anything is written: a file that cannot be decoded, or in which
    no speech is found (the error lists them all), raises CorpusError and changes nothing.
    Returns the clips in the order given.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files: list[Path] = []
    for given in paths:
        path = Path(given).expanduser().resolve()
        if path not in files:
            files.append(path)
    if not files:
        raise CorpusError("no audio files given: name the recordings to annotate")
    if isinstance(threshold_db, bool) or not isinstance(threshold_db, int | float) or not threshold_db < 0:
        raise CorpusError(f"threshold_db must be a negative number of dBFS, got {threshold_db!r}")
    target = Path(manifest_dir).expanduser().resolve() if manifest_dir is not None else None

    found: list[tuple[Path, Path, tuple[int, int], DecodedAudio]] = []  # file, manifest folder, bounds, audio
    silent: list[str] = []
    for path in files:
        try:
            decoded = read_audio(path)
        except AudioFileError as exc:
            raise CorpusError(str(exc)) from None
        bounds = speech_bounds(decoded.samples, decoded.sample_rate, threshold_db=threshold_db)
        if bounds is None:
            silent.append(str(path))
            continue
        found.append((path, target or path.parent, bounds, decoded))
    if silent:
        raise CorpusError(
            f"no speech found (nothing louder than {threshold_db:g} dBFS) in: {', '.join(silent)}; "
            "check the recordings or lower the threshold"
        )

    by_folder: dict[Path, list[Clip]] = {}
    clips: list[Clip] = []
    for path, folder, bounds, decoded in found:
        _ensure_folder(folder)
        existing = _load_existing(folder)
        name = _entry_name(path, folder)
        text = _sidecar_text(path)
        if text is None:
            text = existing[name].text if name in existing else ""
        clip = _clip(
            name,
            text,
            decoded.sample_rate,
            decoded.channels,
            decoded.format,
            decoded.frames,
            bounds,
            folder / name,
        )
        by_folder.setdefault(folder, []).append(clip)
        clips.append(clip)
    for folder, folder_clips in by_folder.items():
        _update_manifest(folder, folder_clips)
    return clips
