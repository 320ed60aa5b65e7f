"""Properties of the agent's output pacing, for any buffer, chunk, rate and stall (fake clock)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_agent import MS, Driver, make_agent
from uvbench.server.config import Faults, Stall


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]),
    buffer_ms=st.one_of(st.integers(0, 200), st.sampled_from([500, 2000, 30000])),
    chunk_ms=st.sampled_from([10, 20, 40, 100]),
    words=st.integers(1, 8),
    stall=st.one_of(st.none(), st.tuples(st.integers(0, 2000), st.integers(1, 700))),
)
def test_pacing_sends_every_sample_once_within_the_client_buffer(rate, buffer_ms, chunk_ms, words, stall):
    faults = Faults(output_stalls=(Stall(*stall),) if stall else ())
    text = " ".join(["word"] * words)
    agent = make_agent(
        out_rate=rate, buffer_ms=buffer_ms, latency_ms=50, greeting=text, faults=faults, chunk_ms=chunk_ms
    )
    assert agent.chunk_samples == rate * chunk_ms // 1000
    d = Driver(agent)
    d.run_for(words * 0.3 + 2.0)
    reply = agent.truth.replies[0]
    audio = d.audio()
    chunk = agent.chunk_samples
    limit = max(agent.buffer_samples, chunk)

    # Every sample leaves exactly once, in chunks of the configured size (the last may be short).
    assert sum(len(a.payload) for a in audio) // 2 == reply.total_samples == reply.sent_samples
    assert all(len(a.payload) == 2 * chunk for a in audio[:-1])
    # Right after every send, the modelled client buffer holds at most the client's buffer size.
    first = audio[0].at
    sent = 0
    for a in audio:
        sent += len(a.payload) // 2
        played_at_most = (a.at - first) * rate / 1e9
        assert sent - played_at_most <= limit + 1e-6
    # The fake clock wakes the pacer exactly on time.
    assert max(agent.truth.pacing_lateness_ms) <= 1.0
    # Without a stall the client never runs dry: playback ends when the audio's length has played.
    end = reply.playback_end_ns - reply.first_byte_ns
    if not stall or stall[0] * rate / 1000 >= reply.total_samples:
        assert abs(end - reply.total_samples / rate * 1e9) <= 1 * MS
    else:
        assert end >= reply.total_samples / rate * 1e9 - 1 * MS
    # Deltas of every word were sent, then one final transcript.
    transcripts = [m.payload for m in d.messages("transcript")]
    assert [t["final"] for t in transcripts] == [False] * words + [True]
