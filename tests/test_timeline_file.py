"""A call's timeline file: this version's (audio rows packed as little-endian int64) and earlier runs'
(audio rows as JSON lists) both read back to the same timeline and the same figures."""

from __future__ import annotations

import base64
import json
import struct
from array import array
from pathlib import Path

import pytest

from uvbench.call.timeline import AUDIO_ENCODING, Event, Timeline
from uvbench.metrics import compute
from uvbench.report.run_folder import load_timeline

MS = 1_000_000


def _timeline() -> Timeline:
    """A short call: config, pacer, one utterance, agent frames (one silent, one empty), big stamps."""
    t0 = 1_796_000_000_000_000  # larger than 2**32 and than a float holds exactly
    tl = Timeline(mono_epoch_ns=t0, wall_epoch_ns=1_796_211_144_959_709_593)
    tl.add(t0, "call.config", scenario="s", input_sample_rate=16000, output_sample_rate=16000, chunk_ms=20)
    tl.add(t0 + 1 * MS, "ws.open")
    tl.add(t0 + 2 * MS, "pacer.started", t0_ns=t0 + 2 * MS, sample_rate=16000, chunk_samples=320)
    tl.add(
        t0 + 3 * MS,
        "utterance.queued",
        step=1,
        kind="say",
        file="x.wav",
        start_sample=0,
        speech_start_sample=0,
        speech_end_sample=3200,
        end_sample=3200,
    )
    for k in range(12):
        due = t0 + 2 * MS + (k + 1) * 20 * MS
        tl.chunk_sent(due, due + 37_000 + k, k * 320, (k + 1) * 320)
    tl.frame_received(t0 + 400 * MS, 480, 0, 479)
    tl.frame_received(t0 + 420 * MS, 480, -1, -1)
    tl.frame_received(t0 + 430 * MS, 0, -1, -1)
    tl.frame_received(t0 + 440 * MS, 480, 10, 200)
    tl.add(t0 + 900 * MS, "ws.closed", code=1000, reason="", by="client")
    return tl


def _old_format(tl: Timeline) -> dict:
    """The file as uvbench wrote it before: the audio rows as JSON lists of integers."""
    data = tl.to_json()
    for direction in ("audio_out", "audio_in"):
        del data[f"{direction}_le64"]
        data[direction] = list(getattr(tl, direction))
    del data["audio_encoding"]
    return data


def _same(a: Timeline, b: Timeline) -> None:
    assert (a.mono_epoch_ns, a.wall_epoch_ns) == (b.mono_epoch_ns, b.wall_epoch_ns)
    assert a.events == b.events
    assert a.audio_out == b.audio_out and a.audio_in == b.audio_in
    assert a.audio_out.typecode == b.audio_out.typecode == "q"


def test_a_timeline_round_trips_through_its_file(tmp_path: Path) -> None:
    tl = _timeline()
    path = tmp_path / "0001-s.timeline.json"
    path.write_text(json.dumps(tl.to_json()), encoding="utf-8")
    back = load_timeline(path)
    _same(back, tl)
    assert back.audio_out_rows() == tl.audio_out_rows() and back.audio_in_rows() == tl.audio_in_rows()
    assert compute(back).to_json() == compute(tl).to_json()
    assert isinstance(back.events[0], Event)


def test_the_audio_rows_are_little_endian_int64_in_base64() -> None:
    tl = _timeline()
    data = tl.to_json()
    assert data["audio_encoding"] == AUDIO_ENCODING
    assert "audio_out" not in data and "audio_in" not in data
    raw = base64.b64decode(data["audio_out_le64"])
    assert len(raw) == 8 * len(tl.audio_out)
    assert list(struct.unpack(f"<{len(tl.audio_out)}q", raw)) == list(tl.audio_out)
    raw_in = base64.b64decode(data["audio_in_le64"])
    assert list(struct.unpack(f"<{len(tl.audio_in)}q", raw_in)) == list(tl.audio_in)
    assert json.loads(json.dumps(data)) == data  # plain JSON: the events stay readable as they were


def test_an_earlier_runs_timeline_file_still_reads(tmp_path: Path) -> None:
    tl = _timeline()
    path = tmp_path / "0001-s.timeline.json"
    path.write_text(json.dumps(_old_format(tl)), encoding="utf-8")
    back = load_timeline(path)
    _same(back, tl)
    assert compute(back).to_json() == compute(tl).to_json()


def test_an_empty_timeline_round_trips() -> None:
    tl = Timeline(mono_epoch_ns=1, wall_epoch_ns=2)
    back = Timeline.from_json(json.loads(json.dumps(tl.to_json())))
    _same(back, tl)
    assert back.audio_out == array("q") and back.audio_in_rows() == []


def test_audio_rows_that_are_not_rows_of_four_are_refused() -> None:
    data = _timeline().to_json()
    data["audio_in_le64"] = base64.b64encode(array("q", [1, 2, 3]).tobytes()).decode()
    with pytest.raises(ValueError, match="rows of 4"):
        Timeline.from_json(data)
    old = _old_format(_timeline())
    old["audio_out"] = old["audio_out"][:-1]
    with pytest.raises(ValueError, match="rows of 4"):
        Timeline.from_json(old)


def test_raw_text_frames_settle_into_events_where_they_arrived_and_compute_settles_them() -> None:
    timeline = Timeline(0, 0)
    timeline.add(10, "ws.open")
    timeline.message_in(20, '{"type": "state", "state": "listening"}')
    timeline.add(30, "utterance.queued", kind="say")
    timeline.message_in(40, "{this is not json")
    assert [e.kind for e in timeline.events] == ["ws.open", "utterance.queued"]  # held raw meanwhile
    compute(timeline)
    assert timeline.raw_in == []
    assert [(e.t_ns, e.kind) for e in timeline.events] == [
        (10, "ws.open"),
        (20, "msg.in"),
        (30, "utterance.queued"),
        (40, "msg.in_invalid"),
    ]
    assert timeline.events[1].data["message"]["state"] == "listening"
    assert timeline.events[3].data["text"] == "{this is not json"
    timeline.settle_messages()  # again: nothing more to do
    assert len(timeline.events) == 4
