"""The shipped noise corpus (audio_corpus/noise/) and its generators: each noise's defining
property measured on its output, seamless loops, levels, determinism, the files matching their
manifest and their generator, and the manifest's validation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from uvbench.audio import noise as nz

RATE = nz.SAMPLE_RATE
SPECS = {spec.kind: spec for spec in nz.NOISES}
SLOPE_TOLERANCE = 0.05
"""Per Hz, i.e. +-0.15 dB per octave. The fit runs over ~71,000 periodogram bins (100 Hz..6 kHz
at 1/12 Hz), each an exponential variable whose log10 has a standard deviation of 0.56; with
log10(f) spread 0.35 the slope's standard error is 0.56 / (sqrt(71000) * 0.35) = 0.006, so the
tolerance is 8 standard errors: a wrong method (white noise is 0, a first-order filter's slope
bends) is far outside it, a right one never fails by chance."""


def _shipped(name: str) -> np.ndarray:
    data, rate = sf.read(nz.NOISE_DIR / name, dtype="int16")
    assert rate == RATE
    return data


def _float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) / 32768.0


def _slope(x: np.ndarray, low: float = 100.0, high: float = 6000.0) -> float:
    """Slope of log10(power) against log10(frequency): -1 for pink, -2 for brown."""
    power = np.abs(np.fft.rfft(_float(x))) ** 2  # the file is one period: no window needed
    freqs = np.fft.rfftfreq(len(x), 1.0 / RATE)
    band = (freqs >= low) & (freqs <= high)
    return float(np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0])


def _seam_is_smooth(x: np.ndarray, half: int = 16) -> tuple[float, float]:
    """(first-difference RMS across the loop point, the 99th percentile of the same measure over
    every window of the file): a click at the seam lands far above the file's own range."""
    y = _float(x)
    seam = np.diff(np.concatenate([y[-half:], y[:half]]))
    d = np.diff(y)
    windows = d[: len(d) // (2 * half - 1) * (2 * half - 1)].reshape(-1, 2 * half - 1)
    normal = np.sqrt(np.mean(windows**2, axis=1))
    return float(np.sqrt(np.mean(seam**2))), float(np.percentile(normal, 99))


# --- defining properties ---------------------------------------------------------------------------


def test_pink_noise_falls_3_db_per_octave():
    slope = _slope(nz.render(SPECS["pink"]))
    assert slope == pytest.approx(-1.0, abs=SLOPE_TOLERANCE), f"{10 * math.log10(2) * slope:.2f} dB/octave"


def test_brown_noise_falls_6_db_per_octave():
    slope = _slope(nz.render(SPECS["brown"]))
    assert slope == pytest.approx(-2.0, abs=SLOPE_TOLERANCE), f"{10 * math.log10(2) * slope:.2f} dB/octave"


def test_slope_measure_tells_white_from_pink():
    """The measure has teeth: white noise is flat (slope 0), not within tolerance of pink."""
    white = nz._pcm.to_int16(np.random.default_rng(1).normal(0, 0.03, 12 * RATE))
    assert abs(_slope(white)) < SLOPE_TOLERANCE


def test_hum_energy_peaks_at_50_100_150_hz():
    x = _float(nz.render(SPECS["hum"]))
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / RATE)
    band = (freqs >= 20) & (freqs <= 1000)
    top3 = sorted(freqs[band][np.argsort(power[band])[-3:]])
    assert top3 == pytest.approx([50.0, 100.0, 150.0])
    floor = np.median(power[band])
    for hz in (50, 100, 150):
        assert 10 * math.log10(power[np.argmin(abs(freqs - hz))] / floor) > 40  # lines, not a hump
    # "a little noise": there is some, well below the tone
    assert 0 < floor


def test_babble_has_several_talkers_at_every_moment():
    """No single word is intelligible: at least three talkers speak in every 50 ms of the loop."""
    tracks = np.array(nz.babble_tracks(SPECS["babble"].seed))
    frame = RATE // 20
    frames = tracks[:, : tracks.shape[1] // frame * frame].reshape(len(tracks), -1, frame)
    active = (np.mean(frames**2, axis=2) > 10 ** (-30 / 10)).sum(axis=0)  # -30 dB under a talker
    assert len(tracks) == len(nz.BABBLE_TALKERS) >= 6
    assert active.min() >= 3


def _transient_frames(x: np.ndarray) -> int:
    """10 ms frames whose 2.5..7 kHz energy jumps 10 dB above that band's median: clinks."""
    frame = RATE // 100
    frames = _float(x)[: len(x) // frame * frame].reshape(-1, frame)
    spectra = np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1)) ** 2
    freqs = np.fft.rfftfreq(frame, 1.0 / RATE)
    band = 10 * np.log10(spectra[:, (freqs >= 2500) & (freqs <= 7000)].sum(axis=1) + 1e-20)
    return int((band > np.median(band) + 10).sum())


def test_cafe_has_clinks_over_babble():
    assert _transient_frames(_shipped("babble.flac")) < 3
    assert _transient_frames(_shipped("cafe.flac")) >= 5


def test_street_is_low_rumble_with_passing_cars_and_horns():
    x = _float(_shipped("street.flac"))
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / RATE)
    assert power[freqs < 500].sum() / power.sum() > 0.75  # rumble (pink noise has ~0.6)
    half_s = x[: len(x) // (RATE // 2) * (RATE // 2)].reshape(-1, RATE // 2)
    levels = 10 * np.log10(np.mean(half_s**2, axis=1))
    assert levels.max() - levels.min() > 5  # cars swell and fade
    for hz in nz.STREET_HORN_HZ:  # the horn's two tones stand out of their neighbourhood
        near = (freqs > hz - 20) & (freqs < hz + 20)
        peak = power[np.argmin(abs(freqs - hz)) - 2 : np.argmin(abs(freqs - hz)) + 3].max()
        assert 10 * math.log10(peak / np.median(power[near])) > 10


# --- loops, levels, determinism ------------------------------------------------------------------


@pytest.mark.parametrize("spec", nz.NOISES, ids=lambda spec: spec.kind)
def test_shipped_noise_loops_without_a_click(spec):
    seam, normal = _seam_is_smooth(_shipped(spec.file))
    assert seam <= normal


def test_seam_check_catches_a_click_and_crossfade_loop_removes_it():
    rng = np.random.default_rng(3)
    # A drifting signal: its end is far from its start, so looping it clicks.
    raw = np.cumsum(rng.normal(0, 0.002, 6 * RATE)) + np.linspace(0, 0.3, 6 * RATE)
    clicking = nz._pcm.to_int16(raw)
    seam, normal = _seam_is_smooth(clicking)
    assert seam > 3 * normal
    looped = nz.crossfade_loop(raw, RATE, 0.5)
    assert len(looped) == len(raw) - RATE // 2
    seam, normal = _seam_is_smooth(nz._pcm.to_int16(looped))
    assert seam <= normal


@pytest.mark.parametrize("spec", nz.NOISES, ids=lambda spec: spec.kind)
def test_shipped_noise_is_at_its_stated_level(spec):
    assert nz.rms_dbfs(_shipped(spec.file)) == pytest.approx(nz.RMS_DBFS, abs=0.5)
    assert np.abs(_shipped(spec.file)).max() < 32767  # no clipping


@pytest.mark.parametrize("kind", ["pink", "brown", "hum", "street"])
def test_same_seed_same_samples_other_seed_other_samples(kind):
    make = SPECS[kind].make
    a, b, c = make(7), make(7), make(8)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert nz.rms_dbfs(make(7, level_dbfs=-20.0)) == pytest.approx(-20.0, abs=1e-9)


def test_babble_same_seed_same_samples():
    assert np.array_equal(nz.babble(7), nz.babble(7))
    assert not np.allclose(nz.babble(7), nz.babble(8))


# --- the shipped files -------------------------------------------------------------------------


def test_shipped_files_match_their_manifest():
    noises = nz.load_noise_manifest()
    assert list(noises) == [spec.file for spec in nz.NOISES]
    for spec in nz.NOISES:
        entry = noises[spec.file]
        info = sf.info(str(entry.path))
        assert (entry.kind, entry.seed, entry.loop) == (spec.kind, spec.seed, True)
        assert entry.sample_rate == info.samplerate == RATE and info.channels == 1
        assert entry.duration_s == pytest.approx(info.frames / info.samplerate, abs=1e-6)
        assert entry.duration_s == pytest.approx(nz.DURATION_S)
        assert nz.rms_dbfs(_shipped(spec.file)) == pytest.approx(entry.rms_dbfs, abs=0.5)
        assert nz.noise_level_dbfs(entry) == entry.rms_dbfs
        assert entry.path.stat().st_size < 400 * 1024  # keeps the repository small


@pytest.mark.parametrize("kind", ["pink", "brown", "hum", "street"])
def test_shipped_numpy_noises_are_what_the_generator_makes(kind):
    """Sample-identical on the machine that made them; 1 LSB allowed for another CPU's FFT
    rounding a sample the other way. (FLAC bytes are not compared: they depend on libsndfile.)"""
    spec = SPECS[kind]
    made, shipped = nz.render(spec).astype(np.int32), _shipped(spec.file).astype(np.int32)
    assert made.shape == shipped.shape
    assert np.abs(made - shipped).max() <= 1


def test_regenerating_in_a_fresh_process_reproduces_every_file(tmp_path):
    """`uvbench corpus noise` in a fresh process (babble and café need one: eSpeak NG's output
    depends on what the process spoke before) writes the shipped samples and manifest again."""
    result = subprocess.run(
        [sys.executable, "-m", "uvbench", "corpus", "noise", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "manifest.json").read_text()) == json.loads(
        (nz.NOISE_DIR / "manifest.json").read_text()
    )
    for spec in nz.NOISES:
        made, _ = sf.read(tmp_path / spec.file, dtype="int16")
        assert np.abs(made.astype(np.int32) - _shipped(spec.file)).max() <= 1, spec.file


# --- manifest validation -----------------------------------------------------------------------


def _folder(tmp_path: Path, entries: object, files: tuple[str, ...] = ("a.wav",)) -> Path:
    for name in files:
        sf.write(tmp_path / name, np.full(RATE, 0.1) * np.sin(np.arange(RATE) / 5), RATE, subtype="PCM_16")
    (tmp_path / "manifest.json").write_text(json.dumps(entries))
    return tmp_path


def test_minimal_user_entry_loads_and_its_level_is_measured(tmp_path):
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(2 * RATE) / RATE)
    sf.write(tmp_path / "tone.flac", np.stack([tone, tone], axis=1), 22050, subtype="PCM_16")
    (tmp_path / "manifest.json").write_text(json.dumps([{"file": "tone.flac", "kind": "tone"}]))
    entry = nz.load_noise_manifest(tmp_path)["tone.flac"]
    assert (entry.rms_dbfs, entry.loop, entry.seed, entry.description) == (None, False, None, "")
    assert nz.noise_level_dbfs(entry) == pytest.approx(20 * math.log10(0.1 / math.sqrt(2)), abs=0.01)
    assert len(nz.load_noise(entry, 16000)) == pytest.approx(2 * RATE * 16000 / 22050, abs=2)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([{"file": "a.wav", "kind": "x", "level": -30}], r"entry 0 \(a.wav\) has unknown field\(s\) level"),
        ([{"file": "a.wav"}], r"entry 0 \(a.wav\) lacks kind"),
        ([{"file": "a.wav", "kind": "x", "loop": "yes"}], r"entry 0 \(a.wav\): loop must be true or false"),
        ([{"file": "a.wav", "kind": "x", "rms_dbfs": 3}], r"rms_dbfs must be a number of dBFS <= 0"),
        ([{"file": "a.wav", "kind": "x", "seed": 1.5}], r"seed must be a whole number"),
        ([{"file": "a.wav", "kind": "x"}, {"file": "a.wav", "kind": "y"}], r"entry 1 lists 'a.wav' again"),
        ([{"file": "b.wav", "kind": "x"}], r"entry 0 \(b.wav\): no such file"),
        (
            [{"file": "a.wav", "kind": "x", "sample_rate": 8000}],
            r"sample_rate says 8000 but the file is 16000 Hz",
        ),
        (
            [{"file": "a.wav", "kind": "x", "duration_s": 2.0}],
            r"duration_s says 2.0 but the file lasts 1.000 s",
        ),
        ({"file": "a.wav"}, r"must hold a JSON list of entries"),
        (["a.wav"], r"entry 0 must be an object"),
    ],
)
def test_manifest_errors_name_the_manifest_and_entry(tmp_path, entries, expected):
    folder = _folder(tmp_path, entries)
    with pytest.raises(nz.NoiseManifestError, match=expected) as raised:
        nz.load_noise_manifest(folder)
    message = str(raised.value)
    assert "\n" not in message and str(folder / "manifest.json") in message


def test_manifest_that_is_not_json_or_missing(tmp_path):
    with pytest.raises(nz.NoiseManifestError, match="no noise manifest at"):
        nz.load_noise_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[{")
    with pytest.raises(nz.NoiseManifestError, match="is not valid JSON"):
        nz.load_noise_manifest(tmp_path)


def test_crossfade_loop_rejects_a_fade_longer_than_half_the_audio():
    with pytest.raises(ValueError, match="needs at least twice"):
        nz.crossfade_loop(np.zeros(1000), RATE, 0.5)
