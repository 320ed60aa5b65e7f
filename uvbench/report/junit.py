"""JUnit XML for CI servers (GitLab, Jenkins, GitHub Actions reporters), as their readers expect it.

One `<testsuite>` per scenario with one `<testcase>` per call (`classname` = the scenario, since GitLab
shows the classname as the suite), a `checks` suite with a testcase per check (an expectation of a
scenario's script, counted over its calls as k6 counts checks: it fails when any call failed it),
and a `thresholds` suite with a testcase per threshold named like k6's `"<metric> - <expression>"`.
A call's result child:
- `failure` when the call failed (`failed:*`): a one-line message (what, observed, limit; every
  failed expectation) and the expectation/failure detail and the turn timeline in the body;
- `error` when the call could not be carried out (`failed:create`, `failed:connect`);
- `skipped` when the call is invalid (the generator was overloaded: its figures measure the client);
- none when it completed.

Times, given the run's summary.json `run` object: the document's `time` is the run's duration
(`run.duration_s`; its calls overlap, so the sum of their durations says nothing of it), each
scenario suite's the span of its calls (from the first one's start to the last one's end, as their
`tags.start_offset_s` and durations place them in the run), and every `timestamp` the run's start
in its own local time, without an offset, as JUnit's schema has it. Without it (an old run folder)
a suite's time is the sum of its calls' durations and the timestamp is the one given, or now.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple

from uvbench.metrics.call import describe_check
from uvbench.report.run_folder import run_start

if TYPE_CHECKING:
    from uvbench.metrics.checks import Checks

ERROR_OUTCOMES = ("failed:create", "failed:connect")
"""Outcomes of calls that could not be carried out: reported as `<error>`, not `<failure>`."""

_NUMBER = re.compile(r"(\d+)-")
_INVALID_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MESSAGE_MAX = 500


def _clean(text: Any) -> str:
    """Text XML 1.0 can carry (control characters and lone surrogates dropped)."""
    return _INVALID_XML.sub("", str(text))


def _line(text: Any) -> str:
    """One line, at most `_MESSAGE_MAX` characters: what a CI server shows as the failure's title."""
    line = " ".join(_clean(text).split())
    return line if len(line) <= _MESSAGE_MAX else line[: _MESSAGE_MAX - 1] + "…"


def _seconds(ms: Any) -> float:
    if isinstance(ms, bool) or not isinstance(ms, int | float) or ms != ms or ms < 0:
        return 0.0
    return ms / 1000


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.3f}"


def _fmt_ms(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.0f} ms"


def _file_number(record: dict[str, Any]) -> str | None:
    """The number of the call's file stem (`calls/0003-booking.json`: "0003"), if it has one."""
    timeline = (record.get("artifacts") or {}).get("timeline")
    if isinstance(timeline, str):
        # the file's name: what PurePosixPath(timeline).name is, without its cost for plain paths
        plain = timeline[-1:] not in ("/", ".")
        name = timeline.rpartition("/")[2] if plain else PurePosixPath(timeline).name
        match = _NUMBER.match(name)
        if match:
            return match.group(1)
    return None


def call_number(record: dict[str, Any], position: int) -> str:
    """The call's 4-digit number: from its file stem (`calls/0003-booking.json`), else its position."""
    number = _file_number(record)
    return number if number is not None else f"{position:04d}"


def testcase_name(record: dict[str, Any], position: int) -> str:
    """`call <nnnn> <first 8 characters of the call id>` (unique within a run: the number is)."""
    call_id = record.get("call_id")
    short = str(call_id)[:8] if call_id else "no-call-id"
    return f"call {call_number(record, position)} {short}"


def _kind(outcome: str) -> str:
    return outcome.split(":", 1)[1] if ":" in outcome else outcome


def _failed_expectations(record: dict[str, Any]) -> str:
    """Every failed expectation of the call, on one line ("" when none failed)."""
    failed = [describe_check(e) for e in record.get("expectations") or [] if not e.get("ok")]
    if len(failed) <= 1:
        return "".join(failed)
    return f"{len(failed)} expectations failed: " + "; ".join(failed)


def _failure_message(record: dict[str, Any]) -> str:
    """One line: what failed, what was observed, the limit; and every failed expectation."""
    outcome = str(record.get("outcome") or "")
    expectations = _failed_expectations(record)
    if outcome == "failed:expect" and expectations:
        return _line(expectations)
    if record.get("outcome_detail"):
        what = str(record["outcome_detail"])
    else:
        what = next(
            (
                f"step {f.get('step_index')}: {f.get('kind')}: {f.get('reason')}"
                for f in record.get("failures") or []
            ),
            str(record.get("error") or outcome or "failed"),
        )
    return _line(f"{what}; {expectations}" if expectations else what)


def _set_apart(item: dict[str, Any]) -> str:
    """The figures of a turn or barge-in set apart, with their reasons, as a suffix; "" if none."""
    apart = item.get("set_apart") or {}
    if not apart:
        return ""
    return ", figures set apart: " + ", ".join(
        f"{name} ({entry.get('reason')})" for name, entry in apart.items()
    )


def _turn_timeline(record: dict[str, Any]) -> list[str]:
    lines = []
    for t in record.get("turns") or []:
        m = t.get("metrics") or {}
        state = "MISSED" if t.get("missed") else "ok" + _set_apart(t)
        lines.append(
            f"turn {t.get('index')} ({t.get('file') or '-'}): {state}  ttfa {_fmt_ms(m.get('turn.ttfa_ms'))}"
            f"  ttfb {_fmt_ms(m.get('turn.ttfb_ms'))}  thinking {_fmt_ms(m.get('turn.thinking_ms'))}"
            f"  underflows {m.get('turn.underflow_count', '-')}"
        )
    for b in record.get("barge_ins") or []:
        m = b.get("metrics") or {}
        success = b.get("success")
        state = "stopped" if success else ("FAILED" if success is False else "nothing to interrupt")
        state += _set_apart(b)
        lines.append(
            f"barge-in {b.get('index')} ({b.get('file') or '-'}): {state}"
            f"  clear {_fmt_ms(m.get('interrupt.clear_ms'))}"
            f"  silence {_fmt_ms(m.get('interrupt.silence_ms'))}"
            f"  response {_fmt_ms(m.get('interrupt.response_ms'))}"
        )
    return lines


def _failure_body(record: dict[str, Any]) -> str:
    lines = [f"outcome: {record.get('outcome')}"]
    if record.get("outcome_detail"):
        lines.append(f"detail: {record['outcome_detail']}")
    if record.get("error"):
        lines.append(f"error: {record['error']}")
    failures = record.get("failures") or []
    if failures:
        lines.append("failures:")
        lines += [f"  step {f.get('step_index')}: {f.get('kind')}: {f.get('reason')}" for f in failures]
    expectations = record.get("expectations") or []
    if expectations:
        lines.append("expectations:")
        lines += [f"  {'PASS' if e.get('ok') else 'FAIL'} {describe_check(e)}" for e in expectations]
    timeline = _turn_timeline(record)
    if timeline:
        lines.append("timeline:")
        lines += [f"  {line}" for line in timeline]
    return _clean("\n".join(lines))


def _system_out(record: dict[str, Any]) -> str:
    artifacts = record.get("artifacts") or {}
    lines = [f"call_id={record.get('call_id')}"]
    if record.get("variant"):
        lines.append(f"variant={record['variant']}")
    for key in ("recording", "server_recording", "timeline"):
        if artifacts.get(key):
            lines.append(f"{key}={artifacts[key]}")
    transcripts = record.get("transcripts") or []
    if transcripts:
        lines.append("transcript:")
        lines += [f"  [{t.get('role')}] {t.get('text')}" for t in transcripts]
    return _clean("\n".join(lines))


def _timestamp(value: dt.datetime | str | None, run: Mapping[str, Any] | None = None) -> str:
    """`value`, else the run's start in the run's own local time, else now: to the second, without
    an offset (JUnit's schema has none)."""
    if isinstance(value, str):
        return value
    if value is None:
        start = run_start(run)
        value = start.replace(tzinfo=None) if start is not None else dt.datetime.now()
    return value.replace(microsecond=0).isoformat()


def _duration_s(run: Mapping[str, Any] | None) -> float | None:
    value = run.get("duration_s") if isinstance(run, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return None
    return float(value)


def _span_s(records: Iterable[dict[str, Any]], limit: float) -> float:
    """Seconds from the first of the calls' starts to the last of their ends in the run (by their
    start offsets and durations), at most `limit`; `limit` when a call has no start offset."""
    first, last = None, 0.0
    for record in records:
        offset = (record.get("tags") or {}).get("start_offset_s")
        if isinstance(offset, bool) or not isinstance(offset, int | float):
            return limit
        first = offset if first is None else min(first, offset)
        last = max(last, offset + _seconds(record.get("duration_ms")))
    return 0.0 if first is None else min(limit, max(0.0, last - first))


class _Counts:
    def __init__(self) -> None:
        self.tests = self.failures = self.errors = self.skipped = 0
        self.time = 0.0

    def add(self, other: _Counts) -> None:
        self.tests += other.tests
        self.failures += other.failures
        self.errors += other.errors
        self.skipped += other.skipped
        self.time += other.time

    def set_on(self, element: ET.Element) -> None:
        element.set("tests", str(self.tests))
        element.set("failures", str(self.failures))
        element.set("errors", str(self.errors))
        element.set("skipped", str(self.skipped))
        element.set("time", _fmt_seconds(self.time))


def _call_case(suite: ET.Element, record: dict[str, Any], position: int, counts: _Counts) -> None:
    scenario = str(record.get("scenario"))
    seconds = _seconds(record.get("duration_ms"))
    case = ET.SubElement(
        suite,
        "testcase",
        {"classname": _clean(scenario), "name": _clean(testcase_name(record, position))},
    )
    case.set("time", _fmt_seconds(seconds))
    counts.tests += 1
    counts.time += seconds
    outcome = str(record.get("outcome") or "")
    if outcome.startswith(ERROR_OUTCOMES):
        counts.errors += 1
        child = ET.SubElement(case, "error", {"message": _failure_message(record), "type": _kind(outcome)})
        child.text = _failure_body(record)
    elif outcome == "interrupted":  # the run stopped it: neither a pass nor the agent's failure
        counts.skipped += 1
        detail = record.get("outcome_detail") or "the run stopped while the call ran"
        ET.SubElement(case, "skipped", {"message": _line(f"interrupted: {detail}")})
    elif outcome.startswith("invalid:"):
        counts.skipped += 1
        what = _kind(outcome).replace("_", " ")
        detail = record.get("outcome_detail")
        message = f"invalid: {what}" + (f": {detail}" if detail else "")
        ET.SubElement(case, "skipped", {"message": _line(message)})
    elif outcome != "completed" or record.get("passed") is False:
        counts.failures += 1
        child = ET.SubElement(case, "failure", {"message": _failure_message(record), "type": _kind(outcome)})
        child.text = _failure_body(record)
    ET.SubElement(case, "system-out").text = _system_out(record)


class Case(NamedTuple):
    """A call's `<testcase>` as `junit_xml` writes it (for `junit_xml(..., cases=...)`)."""

    scenario: str
    xml: str
    """The element, indented as it stands in its suite (its own line break and indent not included)."""
    counts: tuple[int, int, int, float]
    """What it adds to its suite's failures, errors, skipped and time."""


def testcase(record: dict[str, Any], position: int | None) -> Case | None:
    """The call's testcase; `position` (1-based, in the run's order) names a call whose file name
    has no number: None then, without a position."""
    if position is None and _file_number(record) is None:
        return None
    holder = ET.Element("testsuite")
    counts = _Counts()
    _call_case(holder, record, position or 0, counts)
    (case,) = holder
    ET.indent(case, level=2)
    return Case(
        str(record.get("scenario")),
        ET.tostring(case, encoding="unicode"),
        (counts.failures, counts.errors, counts.skipped, counts.time),
    )


_PLACE = re.compile(r"<uvbench-cases-(\d+) />")
_CHECK_FAILURES_SHOWN = 3
"""Failed calls a check's failure message names (its body lists every one kept)."""


def _check_case(suite: ET.Element, check: Any, counts: _Counts) -> None:
    """A check's testcase: a failure when any call failed it, with `fails/total` and the first
    failed calls' details."""
    total = check.passes + check.fails
    name = f"{check.scenario}: {check.label}: {check.what}"
    case = ET.SubElement(suite, "testcase", {"classname": "checks", "name": _clean(name), "time": "0.000"})
    counts.tests += 1
    if not check.fails:
        ET.SubElement(case, "system-out").text = f"{check.passes}/{total} calls passed"
        return
    counts.failures += 1
    first = "; ".join(
        f"call {f.get('call_id') or '-'}: {f.get('detail')}" for f in check.failures[:_CHECK_FAILURES_SHOWN]
    )
    message = f"{check.fails}/{total} calls failed: {check.what}" + (f"; {first}" if first else "")
    body = [f"step {check.step} ({check.label}) of {check.scenario}: {check.what}"]
    body.append(f"{check.fails} of {total} calls failed it, {check.passes} passed")
    body += [f"  call {f.get('call_id') or '-'}: {f.get('detail')}" for f in check.failures]
    if check.fails > len(check.failures):
        body.append(f"  ... and {check.fails - len(check.failures)} more calls")
    child = ET.SubElement(case, "failure", {"message": _line(message), "type": "check"})
    child.text = _clean("\n".join(body))


def _threshold_case(suite: ET.Element, threshold: Any, counts: _Counts) -> None:
    name = f"{threshold.metric} - {threshold.expression}"
    case = ET.SubElement(
        suite, "testcase", {"classname": "thresholds", "name": _clean(name), "time": "0.000"}
    )
    counts.tests += 1
    message = _line(getattr(threshold, "message", "") or "")
    if threshold.passed is None:  # not evaluated (no data for the metric)
        counts.skipped += 1
        ET.SubElement(case, "skipped", {"message": message or "not evaluated"})
    elif not threshold.passed:
        counts.failures += 1
        child = ET.SubElement(case, "failure", {"message": message or f"{name} failed", "type": "threshold"})
        child.text = _clean(f"{name}\n{getattr(threshold, 'message', '')}")
    elif message:
        ET.SubElement(case, "system-out").text = message


def junit_xml(
    records: Iterable[dict[str, Any]],
    *,
    threshold_results: Sequence[Any] = (),
    suite_name: str = "uvbench run",
    timestamp: dt.datetime | str | None = None,
    cases: Sequence[Case | None] | None = None,
    generator_failures: Sequence[str] = (),
    run: Mapping[str, Any] | None = None,
    checks: Checks | None = None,
) -> str:
    """The run as a JUnit XML document (UTF-8, with its XML declaration).

    `run`: the run's summary.json `run` object: its duration is the document's time, its start the
    timestamp (the module doc). `checks`: the records' checks counted already
    (`uvbench.metrics.checks.count_checks`, e.g. `Aggregate.checks`); counted here when not given.
    A `checks` suite is written when any call checked an expectation.

    `generator_failures`: one line per pacing process that died (summary.json's
    `workers.failed`): each is an error in a "load generator" suite, so a run that could not
    deliver its load is never green in CI.

    `threshold_results`: objects with `metric`, `expression`, `passed` (True, False, or None when not
    evaluated: reported as skipped) and `message` (the observed value; the failure message).
    `timestamp`: when the run started (default: the run's start, else now), ISO 8601 on `testsuites`
    and every `testsuite`.
    `cases`: the records' testcases made already (`testcase`, e.g. by the processes that rebuilt
    them), one per record (None: made here); the document is the same.
    """
    records = list(records)
    stamp = _timestamp(timestamp, run)
    duration = _duration_s(run)
    root = ET.Element("testsuites", {"name": _clean(suite_name)})
    total = _Counts()
    suites: list[tuple[ET.Element, _Counts]] = []
    placed: list[str] = []
    if cases is None:
        by_scenario: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for position, record in enumerate(records, start=1):
            by_scenario.setdefault(str(record.get("scenario")), []).append((position, record))
        for scenario, calls in by_scenario.items():
            suite = ET.SubElement(root, "testsuite", {"name": _clean(scenario)})
            counts = _Counts()
            for position, record in calls:
                _call_case(suite, record, position, counts)
            if duration is not None:
                counts.time = _span_s((record for _, record in calls), duration)
            suites.append((suite, counts))
    else:
        made: dict[str, list[Case]] = {}
        of_scenario: dict[str, list[dict[str, Any]]] = {}
        for position, (record, case) in enumerate(zip(records, cases, strict=True), start=1):
            case = case or testcase(record, position)
            assert case is not None
            made.setdefault(case.scenario, []).append(case)
            of_scenario.setdefault(case.scenario, []).append(record)
        for scenario, made_cases in made.items():
            suite = ET.SubElement(root, "testsuite", {"name": _clean(scenario)})
            counts = _Counts()
            for case in made_cases:  # added up in the run's order, as the time is a sum of floats
                failures, errors, skipped, seconds = case.counts
                counts.tests += 1
                counts.failures += failures
                counts.errors += errors
                counts.skipped += skipped
                counts.time += seconds
            if duration is not None:
                counts.time = _span_s(of_scenario[scenario], duration)
            ET.SubElement(suite, f"uvbench-cases-{len(placed)}")  # where its testcases go, below
            placed.append("\n    ".join(case.xml for case in made_cases))
            suites.append((suite, counts))
    if generator_failures:
        suite = ET.SubElement(root, "testsuite", {"name": "load generator"})
        counts = _Counts()
        for n, line in enumerate(generator_failures, start=1):
            case = ET.SubElement(
                suite, "testcase", {"classname": "load generator", "name": f"pacing process {n}"}
            )
            case.set("time", "0")
            ET.SubElement(case, "error", {"message": _line(line), "type": "generator_failed"}).text = line
            counts.tests += 1
            counts.errors += 1
        suites.append((suite, counts))
    if checks is None:
        from uvbench.metrics.checks import count_checks

        checks = count_checks(records)
    if checks.checks:
        suite = ET.SubElement(root, "testsuite", {"name": "checks"})
        counts = _Counts()
        for check in checks.checks:
            _check_case(suite, check, counts)
        suites.append((suite, counts))
    if threshold_results:
        suite = ET.SubElement(root, "testsuite", {"name": "thresholds"})
        counts = _Counts()
        for threshold in threshold_results:
            _threshold_case(suite, threshold, counts)
        suites.append((suite, counts))
    for suite, counts in suites:
        counts.set_on(suite)
        suite.set("timestamp", stamp)
        total.add(counts)
    if duration is not None:
        total.time = duration
    total.set_on(root)
    root.set("timestamp", stamp)
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    if placed:  # each suite's one placeholder stands where its testcases go (no "<" in escaped text)
        text = _PLACE.sub(lambda m: placed[int(m.group(1))], text)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"


def add_baseline_case(
    xml_text: str,
    *,
    baseline: str,
    regressed: Sequence[str],
    detail: str = "",
    not_judged: str = "",
) -> str:
    """`xml_text` (a `junit_xml` document) with a `baseline` testsuite of one testcase, "baseline
    comparison": a failure listing the `regressed` figures when there are any, else skipped when
    the comparison could judge nothing (`not_judged`: why, one line), else a pass with the
    comparison in its system-out. Replaces an earlier baseline suite; the counts are recounted (the
    document's time, the run's, stays)."""
    root = ET.fromstring(xml_text)
    for old in root.findall("testsuite[@name='baseline']"):
        if old.find("testcase[@name='baseline comparison']") is not None:
            root.remove(old)
    suite = ET.SubElement(root, "testsuite", {"name": "baseline"})
    case = ET.SubElement(
        suite, "testcase", {"classname": "baseline", "name": "baseline comparison", "time": "0.000"}
    )
    counts = _Counts()
    counts.tests = 1
    if regressed:
        counts.failures = 1
        message = _line(f"regressed against {baseline}: {', '.join(regressed)}")
        ET.SubElement(case, "failure", {"message": message, "type": "regression"}).text = _clean(detail)
    elif not_judged:
        counts.skipped = 1
        ET.SubElement(case, "skipped", {"message": _line(not_judged)})
        if detail:
            ET.SubElement(case, "system-out").text = _clean(detail)
    elif detail:
        ET.SubElement(case, "system-out").text = _clean(detail)
    counts.set_on(suite)
    if root.get("timestamp"):
        suite.set("timestamp", root.get("timestamp", ""))
    total = _Counts()
    for s in root.findall("testsuite"):
        total.tests += int(s.get("tests", 0))
        total.failures += int(s.get("failures", 0))
        total.errors += int(s.get("errors", 0))
        total.skipped += int(s.get("skipped", 0))
        total.time += float(s.get("time", 0))
    if root.get("time"):  # the run's time (or its suites' sum) as junit_xml wrote it: a comparison takes none
        total.time = float(root.get("time", 0))
    total.set_on(root)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
