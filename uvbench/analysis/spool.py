"""The hand-over of a finished call from the process that paced it to the one that analyses it.

One file per call (`<key>.call`) in a spool folder on local disk, written once by the pacing
process when the call's wire part ends and deleted by the analysis once the call's files are
written. A file rather than a pipe: a backlog of calls waiting for analysis (a thousand calls
ending together) waits on disk, not in either process's memory, and the pacing process pays one
pickle and one write per call, never a blocked send. The agent's audio is already in its own
file beside it (`<key>.pcm`, written as it arrived).

What is pickled is what only the call knows: its timeline (events as plain tuples, the text
frames received as they came, the audio rows and the network impairment's releases as raw bytes),
the call id, its failure, the samples sent and where its audio is (each utterance's clip with the
caller chain it was sent through, so the recording can rebuild what was sent). The plan is rebuilt
from the scenario by the analysis, then given back the call's run seed and identity, which pick
its own noise start (the recording's noise bed must start where the call's did). A spool file
lives within one run: a file of another VERSION is refused, not read. Both ends are uvbench
processes of one run on one machine, so pickle is safe here.
"""

from __future__ import annotations

import dataclasses
import pickle
from array import array
from pathlib import Path

from uvbench.call.engine import CallPlan, CallResult
from uvbench.call.timeline import Event, Timeline

VERSION = 3


def save(result: CallResult, path: Path) -> None:
    timeline = result.timeline
    payload = {
        "version": VERSION,
        "mono_epoch_ns": timeline.mono_epoch_ns,
        "wall_epoch_ns": timeline.wall_epoch_ns,
        "events": [(e.t_ns, e.kind, e.data) for e in timeline.events],
        "raw_in": timeline.raw_in,
        "audio_out": timeline.audio_out.tobytes(),
        "audio_out_release": timeline.audio_out_release.tobytes(),
        "audio_in": timeline.audio_in.tobytes(),
        "call_id": result.call_id,
        "failure": result.failure,
        "samples_sent": result.samples_sent,
        "user_audio": [(start, str(clip), *chain) for start, clip, *chain in result.user_audio],
        "agent_audio_path": None if result.agent_audio_path is None else str(result.agent_audio_path),
        "run_seed": result.plan.run_seed,
        "call_identity": result.plan.call_identity,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.rename(path)  # the analysis never sees half a file


def _rows(packed: bytes) -> array:
    rows = array("q")
    rows.frombytes(packed)
    return rows


def load(path: Path, plan: CallPlan) -> CallResult:
    p = pickle.loads(path.read_bytes())
    version = p.get("version") if isinstance(p, dict) else p[0]
    if version != VERSION:
        raise ValueError(f"{path}: spool version {version}, expected {VERSION}")
    plan = dataclasses.replace(plan, run_seed=p["run_seed"], call_identity=p["call_identity"])
    timeline = Timeline(p["mono_epoch_ns"], p["wall_epoch_ns"])
    timeline.events = [Event(t, kind, data) for t, kind, data in p["events"]]
    timeline.raw_in = p["raw_in"]
    timeline.audio_out = _rows(p["audio_out"])
    timeline.audio_out_release = _rows(p["audio_out_release"])
    timeline.audio_in = _rows(p["audio_in"])
    agent = p["agent_audio_path"]
    return CallResult(
        plan,
        timeline,
        call_id=p["call_id"],
        failure=p["failure"],
        samples_sent=p["samples_sent"],
        user_audio=[(start, Path(clip), *chain) for start, clip, *chain in p["user_audio"]],
        agent_audio_path=None if agent is None else Path(agent),
    )
