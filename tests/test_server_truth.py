"""The ground truth's own playback rule (server/truth.py: heard_ns), written apart from the client's
listener so that the two can be held against each other."""

from uvbench.server.truth import MAX_INPUT_ARRIVALS, GroundTruth, heard_ns

NS = 1_000_000_000
MS = 1_000_000
RATE = 16000
N = 320  # 20 ms frames


def test_frames_on_time_are_heard_from_the_first_byte():
    writes = [0, 0, 0, 21 * MS, 41 * MS]  # a 60 ms buffer filled at once, then paced
    assert heard_ns(writes, N, 0, RATE) == 0
    assert heard_ns(writes, N, 4 * N + 8, RATE) == (4 * N + 8) * NS // RATE


def test_a_frame_that_comes_after_the_audio_ran_out_starts_a_new_run():
    writes = [0, 20 * MS, 95 * MS]  # the third frame is 55 ms late: 15 ms of silence before it
    assert heard_ns(writes, N, 2 * N, RATE) == 95 * MS
    assert heard_ns(writes, N, 2 * N + 16, RATE) == 95 * MS + 16 * NS // RATE
    # Frames before the late one are heard where they always were.
    assert heard_ns(writes, N, N + 1, RATE) == (N + 1) * NS // RATE


def test_a_late_frame_that_comes_while_audio_still_plays_changes_nothing():
    writes = [0, 0, 0, 39 * MS]  # due at 21 ms, 18 ms late, still before 60 ms of audio ran out
    assert heard_ns(writes, N, 3 * N + 5, RATE) == (3 * N + 5) * NS // RATE


def test_a_run_restarted_keeps_counting_from_its_own_start():
    writes = [0, 50 * MS, 60 * MS]  # a gap after the first frame; the third comes in the new run
    assert heard_ns(writes, N, 2 * N, RATE) == 50 * MS + 20 * MS


def test_a_sample_beyond_the_writes_kept_has_no_answer():
    assert heard_ns([0, 20 * MS], N, 2 * N, RATE) is None
    assert heard_ns([], N, 0, RATE) is None
    assert heard_ns([0], 0, 0, RATE) is None


def test_input_arrivals_are_kept_up_to_their_limit_and_the_rest_counted():
    """What `?input=1` lists is bounded per call: the first MAX_INPUT_ARRIVALS frames' read times,
    and how many later frames have none (`input.arrivals_dropped`, with or without `?input=1`)."""
    truth = GroundTruth()
    for k in range(MAX_INPUT_ARRIVALS + 25):
        truth.add_input_arrival(k * 20 * MS, (k + 1) * N)
    assert len(truth.input_arrivals) == 2 * MAX_INPUT_ARRIVALS
    full = truth.to_dict(input_values=True)["input"]
    assert len(full["arrivals"]) == MAX_INPUT_ARRIVALS and full["arrivals_dropped"] == 25
    assert full["arrivals"][0] == [0, N]
    assert full["arrivals"][-1] == [(MAX_INPUT_ARRIVALS - 1) * 20 * MS, MAX_INPUT_ARRIVALS * N]
    summary = truth.to_dict()["input"]
    assert "arrivals" not in summary and summary["arrivals_dropped"] == 25
