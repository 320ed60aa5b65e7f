"""What a run's outcomes make of its exit code (`RunSummary.exit_code`; the flags' and signals' codes
are the CLI's, tested with it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from uvbench.runner.run import RunSummary


def summary(*outcomes: str, **kwargs) -> RunSummary:
    return RunSummary(Path("."), [{"outcome": o} for o in outcomes], **kwargs)


@pytest.mark.parametrize(
    ("outcomes", "code"),
    [
        (("completed", "completed"), 0),
        # k6's interrupted iterations: a graceful stop cut the call; it is not the agent's failure
        (("completed", "interrupted"), 0),
        (("completed", "failed:missed_turn"), 1),
        (("completed", "invalid:generator_overloaded"), 1),
        (("failed:expect", "interrupted"), 1),
        # nothing measured: the target refused every call, or the generator vouched for none
        (("failed:create", "failed:connect"), 3),
        (("invalid:generator_overloaded", "invalid:generator_overloaded"), 3),
        (("failed:connect", "invalid:generator_overloaded"), 3),
        ((), 3),
    ],
)
def test_outcomes_to_exit_code(outcomes: tuple[str, ...], code: int) -> None:
    assert summary(*outcomes).exit_code == code


def test_a_generator_that_failed_the_load_is_exit_3_whatever_was_measured() -> None:
    assert summary("completed", worker_failures=["pacing process 2 died"]).exit_code == 3
    assert summary("completed", gave_up="every create failed for 30 s").exit_code == 3
