"""The stereo recording: every sample where the listener heard it, written block by block as FLAC
and read back sample for sample."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from uvbench.audio import recording
from uvbench.audio.recording import agent_audio, recording_samples, segments, write_recording
from uvbench.call.timeline import Timeline
from uvbench.listener import Listener, ListenerConfig

NS = 1_000_000_000
RATE = 16000
T0 = 5 * NS


def call(frames: list[tuple[int, np.ndarray]], *, clear_at: int | None = None):
    """A timeline whose stream starts at T0, with agent frames arriving at the given times."""
    timeline = Timeline(T0, 0)
    timeline.add(T0, "pacer.started", t0_ns=T0, sample_rate=RATE, chunk_samples=320)
    listener = Listener(ListenerConfig(sample_rate=RATE))
    for t, pcm in frames:
        if clear_at is not None and clear_at <= t:
            listener.on_clear(clear_at)
            clear_at = None
        timeline.frame_received(t, pcm.size, 0, pcm.size - 1)
        listener.on_audio(t, pcm.size, 0, pcm.size - 1)
    return timeline, listener.finish(max(t for t, _ in frames) + NS)


def spool(tmp_path: Path, frames: list[tuple[int, np.ndarray]]) -> Path:
    path = tmp_path / "agent.pcm"
    path.write_bytes(b"".join(pcm.astype("<i2").tobytes() for _, pcm in frames))
    return path


def noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-20000, 20000, n, dtype=np.int16)


def test_each_sample_lands_where_it_was_heard_and_flac_gives_it_back_exactly(tmp_path):
    # Two agent frames back to back from 1 s, a third after a 0.5 s gap (an underflow: silence).
    frames = [(T0 + NS, noise(320, 1)), (T0 + NS, noise(320, 2)), (T0 + 2 * NS, noise(640, 3))]
    timeline, playback = call(frames)
    user = [(800, noise(4000, 4))]  # the user's clip from stream sample 800 (50 ms)
    placed = segments(
        timeline, playback, user, agent_audio(spool(tmp_path, frames)), input_rate=RATE, output_rate=RATE
    )
    expected = np.zeros((2 * RATE + 640, 2), dtype=np.int16)
    expected[800 : 800 + 4000, 0] = user[0][1]
    expected[RATE : RATE + 320, 1] = frames[0][1]
    expected[RATE + 320 : RATE + 640, 1] = frames[1][1]
    expected[2 * RATE : 2 * RATE + 640, 1] = frames[2][1]
    assert np.array_equal(recording_samples(placed), expected)
    path = tmp_path / "call.flac"
    write_recording(path, placed, RATE)
    audio, rate = sf.read(path, dtype="int16")
    assert rate == RATE and sf.info(str(path)).format == "FLAC"
    assert np.array_equal(audio, expected)  # lossless: sample for sample


def test_blocks_join_without_a_seam_and_a_clear_cuts_the_agent(tmp_path, monkeypatch):
    monkeypatch.setattr(recording, "BLOCK_S", 1)  # many small blocks: segments cross their edges
    frames = [(T0 + NS // 2 + k * NS // 50, noise(320, 10 + k)) for k in range(150)]  # 3 s of audio
    clear = T0 + 2 * NS + NS // 4
    timeline, playback = call(frames, clear_at=clear)
    placed = segments(
        timeline, playback, [], agent_audio(spool(tmp_path, frames)), input_rate=RATE, output_rate=RATE
    )
    whole = recording_samples(placed)
    buffer = io.BytesIO()
    write_recording(buffer, placed, RATE)
    buffer.seek(0)
    audio, _ = sf.read(buffer, dtype="int16")
    assert np.array_equal(audio, whole)
    # The agent is heard up to the clear (mid-frame), then nothing until the next frame arrives
    # 10 ms later, which plays from its arrival like every frame after it.
    heard = (clear - T0) * RATE // NS
    resumed = heard + RATE // 100
    expected = np.concatenate([pcm for _, pcm in frames])
    expected[heard - RATE // 2 : resumed - RATE // 2] = 0
    assert np.array_equal(whole[RATE // 2 :, 1], expected)
    assert not whole[: RATE // 2, 1].any()


def test_wav_too_and_an_empty_call_is_one_silent_frame(tmp_path):
    timeline = Timeline(T0, 0)
    timeline.add(T0, "pacer.started", t0_ns=T0, sample_rate=RATE, chunk_samples=320)
    assert segments(timeline, Listener(ListenerConfig(RATE)).finish(T0), [], np.zeros(0, np.int16),
                    input_rate=RATE, output_rate=RATE) == []  # fmt: skip
    path = tmp_path / "empty.wav"
    write_recording(path, [], RATE, fmt="wav")
    audio, _ = sf.read(path, dtype="int16")
    assert audio.shape == (1, 2) and not audio.any()
    assert agent_audio(None).size == 0 and agent_audio(tmp_path / "missing.pcm").size == 0


@pytest.mark.parametrize("out_rate", [24000, 8000])
def test_user_audio_is_resampled_to_the_output_rate_at_its_stream_time(tmp_path, out_rate):
    frames = [(T0 + NS, noise(out_rate // 50, 7))]
    timeline, playback = call(frames)
    clip = recording.user_audio([(RATE, Path(__file__).parents[1] / "audio_corpus" / "yes_16k.wav")],
                                RATE, out_rate)  # fmt: skip
    placed = segments(timeline, playback, clip, np.zeros(0, np.int16), input_rate=RATE, output_rate=out_rate)
    (user,) = [s for s in placed if s.channel == 0]
    assert user.offset == out_rate  # stream sample 16000 at 16 kHz is 1 s in
    assert abs(len(user.samples) - len(clip[0][1])) == 0
