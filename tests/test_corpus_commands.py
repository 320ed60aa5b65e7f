"""`uvbench corpus synth` and `uvbench corpus annotate`: the clips and manifests they write, their errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from uvbench.audio.corpus import CORPUS_DIR, MANIFEST_NAME, load_clip_pcm, load_manifest
from uvbench.audio.corpus_commands import CorpusError, annotate, synth

TOLERANCE_S = 0.002


def manifest_of(folder: Path) -> list[dict]:
    return json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))


def tone_with_silence(rate: int, lead: int, length: int, trail: int, channels: int = 1) -> np.ndarray:
    # A phase offset makes the first and last tone samples non-zero, so the bounds are exact.
    n = np.arange(length)
    mono = np.concatenate([np.zeros(lead), 0.5 * np.sin(2 * np.pi * 440.0 * n / rate + 0.3), np.zeros(trail)])
    return mono if channels == 1 else np.column_stack([mono] * channels)


# --- synth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "ext"), [(8000, ".wav"), (16000, ".flac"), (22050, ".wav"), (48000, ".flac")]
)
def test_synth_bounds_match_what_annotate_finds(tmp_path: Path, rate: int, ext: str):
    out = tmp_path / "clips" / f"order{ext}"  # the folder does not exist yet
    clip = synth("Where is my order?", out, sample_rate=rate)

    info = sf.info(out)
    assert info.samplerate == rate and info.channels == 1 and info.subtype == "PCM_16"
    assert info.format == clip.format == {".wav": "WAV", ".flac": "FLAC"}[ext]
    assert clip.file == out.name and clip.text == "Where is my order?" and clip.path == out
    assert clip.duration_s == round(info.frames / rate, 6)
    assert load_manifest(out.parent) == {out.name: clip}

    audio, _ = sf.read(out, dtype="int16")
    assert not audio[: clip.speech_start_sample].any() and audio[clip.speech_start_sample] != 0
    assert not audio[clip.speech_end_sample :].any() and audio[clip.speech_end_sample - 1] != 0
    assert clip.speech_start_sample >= round(0.3 * rate)
    assert info.frames - clip.speech_end_sample >= round(0.6 * rate)

    found = annotate([out], manifest_dir=tmp_path / "check")[0]
    assert abs(found.speech_start_s - clip.speech_start_s) <= TOLERANCE_S
    assert abs(found.speech_end_s - clip.speech_end_s) <= TOLERANCE_S


def test_synth_padding_and_voice_options(tmp_path: Path):
    short = synth("Yes.", tmp_path / "a.wav", lead_s=0.0, tail_s=0.0, manifest=False)
    padded = synth("Yes.", tmp_path / "b.wav", lead_s=1.0, tail_s=0.5, manifest=False)
    assert padded.speech_start_sample - short.speech_start_sample == 16000
    assert round((padded.duration_s - short.duration_s) * 16000) == 24000
    slow = synth("one two three four five", tmp_path / "slow.wav", wpm=100, manifest=False)
    fast = synth("one two three four five", tmp_path / "fast.wav", wpm=300, manifest=False)
    assert slow.speech_end_s - slow.speech_start_s > fast.speech_end_s - fast.speech_start_s
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_synth_replaces_the_entry_in_place_and_keeps_others(tmp_path: Path):
    synth("First.", tmp_path / "a.wav")
    synth("Second.", tmp_path / "b.flac")
    synth("First, again and longer.", tmp_path / "a.wav")
    entries = manifest_of(tmp_path)
    assert [e["file"] for e in entries] == ["a.wav", "b.flac"]
    assert [e["text"] for e in entries] == ["First, again and longer.", "Second."]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.flac", MANIFEST_NAME]  # no temp files


def test_synth_into_a_copy_of_the_corpus_keeps_its_entries(tmp_path: Path):
    shutil.copytree(CORPUS_DIR, tmp_path / "corpus")
    before = load_manifest(tmp_path / "corpus")
    synth("An extra line.", tmp_path / "corpus" / "extra_24k.wav", sample_rate=24000)
    after = load_manifest(tmp_path / "corpus")
    assert list(after) == [*before, "extra_24k.wav"]
    assert all(after[name].to_entry() == before[name].to_entry() for name in before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"out_path": "clip.mp3"}, r"unknown extension '\.mp3'; name the file clip\.wav or clip\.flac"),
        ({"out_path": "clip"}, r"unknown extension '\(none\)'"),
        ({"text": "   "}, "nothing to say"),
        ({"sample_rate": 96000}, r"cannot synthesize clip\.wav: sample rate 96000 Hz is outside"),
        ({"wpm": 0}, "wpm must be a positive whole number"),
        ({"lead_s": -0.1}, "lead_s must be a number of seconds >= 0"),
        ({"tail_s": float("nan")}, "tail_s must be a number of seconds >= 0"),
        ({"voice": "no-such-voice-xx"}, r"cannot synthesize clip\.wav"),
    ],
)
def test_synth_bad_input(tmp_path: Path, kwargs: dict, match: str):
    args = {"text": "Hello there.", "out_path": "clip.wav", **kwargs}
    args["out_path"] = tmp_path / args["out_path"]
    with pytest.raises(CorpusError, match=match) as info:
        synth(args.pop("text"), args.pop("out_path"), **args)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_synth_into_a_path_that_cannot_be_a_folder(tmp_path: Path):
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(
        CorpusError, match=r"cannot create folder .*taken: .*; choose a folder you can write to"
    ):
        synth("Hello.", tmp_path / "taken" / "clip.wav")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, not root")
def test_synth_into_an_unwritable_folder(tmp_path: Path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CorpusError, match="cannot write to folder .*locked: permission denied"):
            synth("Hello.", folder / "clip.wav")
    finally:
        folder.chmod(0o700)


def test_synth_refuses_a_broken_manifest_before_writing(tmp_path: Path):
    (tmp_path / MANIFEST_NAME).write_text("[{not json")
    with pytest.raises(
        CorpusError, match=r"manifest\.json is not a readable uvbench manifest .*fix it or move it"
    ):
        synth("Hello.", tmp_path / "clip.wav")
    assert not (tmp_path / "clip.wav").exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_synth_writes_clips_with_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int):
    # As any new file: 0666 less the umask (a temporary file's 0600 must not reach the clip).
    previous = os.umask(umask)
    try:
        synth("Hello.", tmp_path / "clip.wav")
        synth("Hello again.", tmp_path / "clip.wav")  # replacing a clip gives it the same mode
    finally:
        os.umask(previous)
    assert (tmp_path / "clip.wav").stat().st_mode & 0o777 == mode
    assert (tmp_path / MANIFEST_NAME).stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", MANIFEST_NAME]  # no temporary left


# --- annotate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "ext", "channels"), [(16000, ".wav", 1), (44100, ".flac", 2), (8000, ".flac", 1)]
)
def test_annotate_a_tone_with_silence(tmp_path: Path, rate: int, ext: str, channels: int):
    lead, length, trail = rate // 2 + 3, rate + 11, rate // 3
    path = tmp_path / f"tone{ext}"
    sf.write(path, tone_with_silence(rate, lead, length, trail, channels), rate, subtype="PCM_16")
    (clip,) = annotate([path])
    assert (clip.speech_start_sample, clip.speech_end_sample) == (lead, lead + length)
    assert clip.sample_rate == rate and clip.channels == channels
    assert clip.format == {".wav": "WAV", ".flac": "FLAC"}[ext]
    assert clip.duration_s == round((lead + length + trail) / rate, 6)
    assert clip.text == "" and clip.file == path.name
    assert load_manifest(tmp_path) == {path.name: clip}


def test_annotate_takes_the_text_from_a_sidecar(tmp_path: Path):
    path = tmp_path / "mine.wav"
    sf.write(path, tone_with_silence(16000, 1600, 8000, 1600), 16000)
    (tmp_path / "mine.txt").write_text("Hello,\n  this is me.\n", encoding="utf-8")
    assert annotate([path])[0].text == "Hello, this is me."


def test_annotate_a_copy_of_the_corpus(tmp_path: Path):
    committed = load_manifest(CORPUS_DIR)
    for clip in committed.values():
        shutil.copy(clip.path, tmp_path / clip.file)
    clips = annotate(sorted(tmp_path.iterdir()))
    assert sorted(c.file for c in clips) == sorted(committed)
    for clip in clips:
        truth = committed[clip.file]
        assert (clip.sample_rate, clip.channels, clip.format) == (
            truth.sample_rate,
            truth.channels,
            truth.format,
        )
        assert clip.duration_s == truth.duration_s
        assert abs(clip.speech_start_s - truth.speech_start_s) <= TOLERANCE_S, clip.file
        assert abs(clip.speech_end_s - truth.speech_end_s) <= TOLERANCE_S, clip.file
        assert clip.text == ""  # no manifest and no sidecars yet

    # With the committed manifest beside them, re-annotating keeps each clip's text.
    shutil.copy(CORPUS_DIR / MANIFEST_NAME, tmp_path / MANIFEST_NAME)
    clips = annotate([tmp_path / name for name in committed])
    assert [c.text for c in clips] == [c.text for c in committed.values()]
    assert [e["file"] for e in manifest_of(tmp_path)] == list(committed)


def test_annotate_into_another_folder(tmp_path: Path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    path = recordings / "take1.flac"
    sf.write(path, tone_with_silence(24000, 2400, 4800, 2400), 24000)
    (clip,) = annotate([str(path)], manifest_dir=tmp_path / "manifests")
    assert clip.file == "../recordings/take1.flac"
    loaded = load_manifest(tmp_path / "manifests")[clip.file]
    assert loaded == clip and loaded.path.resolve() == path
    assert len(load_clip_pcm(loaded, 16000)) == 16000 * 9600 // 24000
    assert not (recordings / MANIFEST_NAME).exists()


def test_annotate_writes_one_manifest_per_folder(tmp_path: Path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "x.wav", tone_with_silence(16000, 800, 1600, 800), 16000)
    annotate([tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav", tmp_path / "a" / "x.wav"])
    assert [e["file"] for e in manifest_of(tmp_path / "a")] == ["x.wav"]
    assert [e["file"] for e in manifest_of(tmp_path / "b")] == ["x.wav"]


def test_annotate_threshold(tmp_path: Path):
    path = tmp_path / "quiet.wav"
    quiet = tone_with_silence(16000, 1000, 1600, 1000) * 10 ** (-50 / 20) / 0.5  # ~ -53 dBFS RMS
    sf.write(path, quiet, 16000, subtype="FLOAT")
    with pytest.raises(CorpusError, match="no speech found"):
        annotate([path])
    (clip,) = annotate([path], threshold_db=-60.0)
    assert (clip.speech_start_sample, clip.speech_end_sample) == (1000, 2600)


def test_annotate_lists_every_file_without_speech_and_writes_nothing(tmp_path: Path):
    sf.write(tmp_path / "speech.wav", tone_with_silence(16000, 800, 1600, 800), 16000)
    sf.write(tmp_path / "silence.wav", np.zeros(16000), 16000)
    sf.write(tmp_path / "hiss.flac", np.random.default_rng(0).normal(0, 10 ** (-70 / 20), 16000), 16000)
    with pytest.raises(CorpusError) as info:
        annotate(sorted(tmp_path.iterdir()))
    message = str(info.value)
    assert message.startswith("no speech found (nothing louder than -45 dBFS) in: ")
    assert "silence.wav" in message and "hiss.flac" in message and "speech.wav" not in message
    assert message.endswith("check the recordings or lower the threshold") and "\n" not in message
    assert not (tmp_path / MANIFEST_NAME).exists()


def not_audio(folder: Path) -> Path:
    (folder / "notes.txt").write_text("hello")
    return folder / "notes.txt"


def empty_file(folder: Path) -> Path:
    (folder / "empty.wav").write_bytes(b"")
    return folder / "empty.wav"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda folder: folder / "missing.wav", r"audio file not found: .*missing\.wav"),
        (not_audio, r"cannot decode audio file .*notes\.txt: Format not recognised"),
        (empty_file, r"is empty \(0 bytes\)"),
    ],
)
def test_annotate_bad_files(tmp_path: Path, make, match: str):
    with pytest.raises(CorpusError, match=match):
        annotate([make(tmp_path)])
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_annotate_bad_arguments(tmp_path: Path):
    with pytest.raises(CorpusError, match="no audio files given"):
        annotate([])
    path = tmp_path / "x.wav"
    sf.write(path, tone_with_silence(16000, 800, 1600, 800), 16000)
    with pytest.raises(CorpusError, match="threshold_db must be a negative number"):
        annotate([path], threshold_db=3.0)
    (tmp_path / MANIFEST_NAME).write_text('[{"file": "x.wav"}]')
    with pytest.raises(CorpusError, match="is not a readable uvbench manifest"):
        annotate([path])


def test_annotate_accepts_a_single_path(tmp_path: Path):
    path = tmp_path / "x.wav"
    sf.write(path, tone_with_silence(16000, 800, 1600, 800), 16000)
    assert [c.file for c in annotate(path)] == ["x.wav"]


@pytest.mark.skipif(
    not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs (never writable, even as root)"
)
def test_synth_into_a_read_only_folder():
    with pytest.raises(
        CorpusError, match=r"cannot write /sys/kernel/uvbench_clip\.wav: .*; choose a folder you can"
    ):
        synth("Hello.", "/sys/kernel/uvbench_clip.wav")
