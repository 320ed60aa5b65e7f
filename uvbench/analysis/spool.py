"""The hand-over of a finished call from the process that paced it to the one that analyses it.

One file per call (`<key>.call`) in a spool folder on local disk, written once by the pacing
process when the call's wire part ends and deleted by the analysis once the call's files are
written. A file rather than a pipe: a backlog of calls waiting for analysis (a thousand calls
ending together) waits on disk, not in either process's memory, and the pacing process pays one
pickle and one write per call, never a blocked send. The agent's audio is already in its own
file beside it (`<key>.pcm`, written as it arrived).

What is pickled is what only the call knows: its timeline (events as plain tuples, the text
frames received as they came, the audio rows as raw bytes), the call id, its failure, the samples
sent and where its audio is (each utterance's clip with the caller chain it was sent through, so
the recording can rebuild what was sent); the plan is rebuilt from the scenario by the analysis,
then given back the call's run seed and identity, which pick its own noise start (the recording's
noise bed must start where the call's did). Files written before these were kept still read:
an utterance of two fields is a clean clip, and without the seed and identity the plan is kept
as given. Both ends are
uvbench processes of one run on one machine, so pickle is safe here.
"""

from __future__ import annotations

import dataclasses
import pickle
from array import array
from pathlib import Path

from uvbench.call.engine import CallPlan, CallResult
from uvbench.call.timeline import Event, Timeline

VERSION = 2


def save(result: CallResult, path: Path) -> None:
    timeline = result.timeline
    payload = (
        VERSION,
        timeline.mono_epoch_ns,
        timeline.wall_epoch_ns,
        [(e.t_ns, e.kind, e.data) for e in timeline.events],
        timeline.raw_in,
        timeline.audio_out.tobytes(),
        timeline.audio_in.tobytes(),
        result.call_id,
        result.failure,
        result.samples_sent,
        [(start, str(clip), *chain) for start, clip, *chain in result.user_audio],
        None if result.agent_audio_path is None else str(result.agent_audio_path),
        (result.plan.run_seed, result.plan.call_identity),
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.rename(path)  # the analysis never sees half a file


def load(path: Path, plan: CallPlan) -> CallResult:
    payload = pickle.loads(path.read_bytes())
    if payload[0] != VERSION:
        raise ValueError(f"{path}: spool version {payload[0]}, expected {VERSION}")
    (_, mono, wall, events, raw_in, out_rows, in_rows, call_id, failure, sent, user, agent) = payload[:12]
    if len(payload) > 12:
        run_seed, call_identity = payload[12]
        plan = dataclasses.replace(plan, run_seed=run_seed, call_identity=call_identity)
    timeline = Timeline(mono, wall)
    timeline.events = [Event(t, kind, data) for t, kind, data in events]
    timeline.raw_in = raw_in
    timeline.audio_out = array("q")
    timeline.audio_out.frombytes(out_rows)
    timeline.audio_in = array("q")
    timeline.audio_in.frombytes(in_rows)
    return CallResult(
        plan,
        timeline,
        call_id=call_id,
        failure=failure,
        samples_sent=sent,
        user_audio=[(start, Path(clip), *chain) for start, clip, *chain in user],
        agent_audio_path=None if agent is None else Path(agent),
    )
