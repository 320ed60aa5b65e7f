"""report.html: a self-contained page of a run folder, built from real calls and checked in a browser.

- a real run (a short scenario, two clientBufferSizeMs variants, 3 calls at once) is finished with
  `finish_run`; the page must hold every plot, the thresholds (breaches first), the transcripts and
  audio players pointing at WAVs that exist, and load nothing from the network;
- headless Chromium (Debian's `chromium`) opens it: the plots are in the DOM, the console is clean
  and no resource fails to load; the same check run on a deliberately broken page must fail, so the
  check itself is known to work;
- the plots module on synthetic records: every figure, and the empty cases that return None.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
import re
import select
import shutil
import subprocess
import textwrap
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from uvbench.listener import Listener, ListenerConfig
from uvbench.metrics.aggregate import percentile
from uvbench.metrics.thresholds import parse_thresholds
from uvbench.report import plots
from uvbench.report.finish import finish_run
from uvbench.report.html import MAX_CALL_ROWS, render_html, write_html_report
from uvbench.runner.load import LoadProfile
from uvbench.runner.run import run_scenarios
from uvbench.scenario.loader import load_scenarios

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"

SCENARIO = """
    # Short: a one-word greeting, one turn, a barge-in. The 60 ms variant's replies stall for 150 ms
    # (underflows); the 30000 ms variant buffers a whole reply, which its expectation forbids, so
    # those calls fail:expect and the report has failed calls to put first.
    name: report
    call:
      systemPrompt: You are a helpful agent.
      medium: {serverWebSocket: {inputSampleRate: 16000, outputSampleRate: 24000, clientBufferSizeMs: 60}}
      experimentalSettings:
        uvbench:
          agent:
            greeting: Hi there.
            replies: ["Sure, I can check your order for you right now.", "Sorry, go ahead."]
            latency: {kind: fixed, ms: 150}
          faults:
            output_stalls: [{after_ms: 400, duration_ms: 150}]
    matrix:
      clientBufferSizeMs: [60, 30000]
    client: {ping_interval: 0}
    script:
      - wait_for: agent_done
        timeout: 10s
      - say: hello_16k.wav
      - wait_for: agent_audible
      - barge_in: yes_16k.wav
        after: 300ms
      - wait_for: agent_done
      - expect:
          - {metric: call.max_buffered_ms, "<": 1000}
      - hang_up
"""

THRESHOLDS = {"turn.ttfa_ms": ["p(95) < 5000", "p(50) < 1"], "interrupt.silence_ms": ["p(95) < 3000"]}


class _Page(HTMLParser):
    """Tags, attributes and text of a page, for checks that do not depend on the markup's layout."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def of(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _external_refs(text: str) -> list[str]:
    """Anything in the page that would make a browser fetch from outside the run folder."""
    found = re.findall(
        r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]*)""", text, re.I
    )
    found += re.findall(r"url\(\s*['\"]?((?:https?:)?//[^)'\"]*)", text, re.I)
    found += re.findall(r"@import", text)
    found += re.findall(r"https?://", text)
    return found


# -- a real run, once for the module ----------------------------------------------------------------


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("report_html")
    scenario_file = tmp / "report.yaml"
    scenario_file.write_text(textwrap.dedent(SCENARIO))
    started = time.monotonic()
    summary = run_scenarios(
        load_scenarios(scenario_file),
        tmp / "runs",
        "report",
        profile=LoadProfile(concurrency=3, iterations=3),
    )
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"the real calls took {elapsed:.1f} s"
    finished = finish_run(summary.folder, summary.records, parse_thresholds(THRESHOLDS))
    assert not finished.thresholds_passed  # "p(50) < 1" cannot pass
    return summary.folder, summary.records


def test_report_html_holds_every_part_of_a_real_run(run_folder):
    folder, records = run_folder
    outcomes = sorted(r["outcome"] for r in records)
    assert "completed" in outcomes and "failed:expect" in outcomes, outcomes
    assert sorted(r["concurrency"] for r in records) == [1, 2, 3]
    report = folder / "report.html"
    text = report.read_text(encoding="utf-8")
    page = _parse(text)

    # Offline: nothing fetched from anywhere, no script, plots inline.
    assert _external_refs(text) == []
    assert page.of("script") == [] and page.of("link") == [] and page.of("img") == []
    svgs = page.of("svg")
    # Four charts over the run; histogram, CDF, by concurrency, by buffer size, barge-ins; one
    # timeline per shown call. By buffer size only with UNDERFLOW_MIN_AUDIO_S of audio per size:
    # these calls' replies are short, so the page may say there was too little instead.
    shown = text.count('<article class="call">')
    assert 2 <= shown <= 4
    by_buffer = "Underflows against the client buffer size" in text
    assert by_buffer != ("Too little agent audio was heard for an underflow rate." in text)
    assert len(svgs) == 4 + 4 + by_buffer + shown
    for title in (
        "Turn latency over the run",
        "Calls in flight and calls started",
        "Outcomes over the run",
        "Underflows and barge-ins over the run",
        "Turn latency distribution",
        "Turn latency CDF",
        "Turn latency against concurrency",
        "After a barge-in",
    ):
        assert title in text, title
    assert "no start time in the run" not in text  # every real call has its start_offset_s
    # The thresholds on turn.ttfa_ms levels are lines on the latency chart, labelled.
    over = text[text.index('id="over-the-run"') : text.index('id="plots"')]
    assert "p(95) &lt; 5000" in over and "p(50) &lt; 1 ✗ breached" in over
    assert "No barge-ins in this run" not in text

    # Headline: the run's name, target, load and calls (completed / failed / invalid).
    assert "uvbench run: report" in text and "peak concurrency 3" in text
    completed = outcomes.count("completed")
    failed = sum(o.startswith("failed:") for o in outcomes)
    invalid = sum(o.startswith("invalid:") for o in outcomes)  # a busy machine's, set apart
    assert f"{completed} completed" in text and f"{failed} failed" in text and f"{invalid} invalid" in text
    for name in (
        "turn.ttfa_ms",
        "turn.ttfb_ms",
        "interrupt.clear_ms",
        "interrupt.silence_ms",
        "call.first_audio_ms",
    ):
        assert name in text

    # Thresholds: the breach is listed first and marked.
    thresholds = text[text.index('id="thresholds"') : text.index('id="checks"')]
    rows = re.findall(r"<tr class=\"(fail)?\">.*?<code>([^<]*)</code>.*?<code>([^<]*)</code>", thresholds)
    assert rows[0] == ("fail", "turn.ttfa_ms", "p(50) &lt; 1")
    assert [r[0] for r in rows[1:]] == ["", ""]

    # Checks: the buffer expectation, failed by every call of the 30000 ms variant, each listed and
    # linked to its call JSON.
    checks = text[text.index('id="checks"') : text.index('id="over-the-run"')]
    failed_expect = [r for r in records if r["outcome"] == "failed:expect"]
    assert "call.max_buffered_ms" in checks and f"✗ {len(failed_expect)}" in checks
    for r in failed_expect:
        assert f'title="{r["call_id"]}"' in checks

    # The call table puts failed calls first and links each call's JSON, which exists.
    table = text[text.index('id="calls"') :]
    first_row = re.search(r"<tbody><tr class=\"([^\"]*)\">", table)
    assert first_row and first_row.group(1) == "fail"
    for a in page.of("a"):
        href = a.get("href") or ""
        if href.startswith("calls/"):
            assert (folder / href).is_file(), href

    # Transcripts of the shown calls, and players for their recordings by relative path.
    shown_text = text[text.index('id="shown"') : text.index('id="calls"')]
    assert "Hi there." in shown_text and "s of speech]" in shown_text  # agent and user lines
    audios = page.of("audio")
    assert audios and len(audios) <= 12
    for audio in audios:
        src = audio["src"] or ""
        assert re.fullmatch(r"calls/[^/]+\.(flac|server\.wav)", src), src
        assert (folder / src).is_file()
        assert audio.get("preload") == "none"
    assert "base64" not in text
    assert len(text) < 1_500_000


def test_a_rebuild_writes_the_report_again(run_folder, tmp_path):
    folder, _ = run_folder
    copy = Path(shutil.copytree(folder, tmp_path / folder.name))
    (copy / "report.html").unlink()
    from uvbench.report.rebuild import rebuild

    result = rebuild(copy)
    finish_run(copy, result.records, [])
    text = (copy / "report.html").read_text(encoding="utf-8")
    assert "No thresholds were set" in text and text.count("<svg") >= 5


# -- in a browser ---------------------------------------------------------------------------------


class _Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: no
    port is opened). It opens a page and collects what DevTools would show as problems: console
    messages, uncaught exceptions, log entries (a failed load is one) and failed network loads."""

    PROBLEMS = (
        "Runtime.consoleAPICalled",
        "Runtime.exceptionThrown",
        "Log.entryAdded",
        "Network.loadingFailed",
    )

    def __init__(self, profile: Path) -> None:
        if not Path(CHROMIUM).exists():
            pytest.skip("chromium not installed: apt-get install chromium (Debian) to run the browser check")
        r_cmd, self._w_cmd = os.pipe()
        self._r_evt, w_evt = os.pipe()

        def fds_3_and_4() -> None:  # the protocol's pipe: commands on fd 3, replies on fd 4
            os.dup2(r_cmd, 3)
            os.dup2(w_evt, 4)

        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=fds_3_and_4,
        )
        os.close(r_cmd)
        os.close(w_evt)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def _read(self, timeout: float) -> None:
        if timeout <= 0 or not select.select([self._r_evt], [], [], timeout)[0]:
            raise TimeoutError
        chunk = os.read(self._r_evt, 1 << 16)
        if not chunk:
            raise RuntimeError("chromium closed its DevTools pipe")
        self._buf += chunk
        *messages, self._buf = self._buf.split(b"\0")
        self.events.extend(json.loads(m) for m in messages if m)

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._w_cmd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.events):
                if m.get("id") == self._id:
                    del self.events[i]
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m.get("result", {})
            self._read(deadline - time.monotonic())

    def open(self, page: Path) -> None:
        """Load `page` and wait for its load event, then a little for late messages."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": page.resolve().as_uri()})
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self._read(deadline - time.monotonic())
        settle = time.monotonic() + 0.5
        with contextlib.suppress(TimeoutError):
            while True:
                self._read(settle - time.monotonic())

    def evaluate(self, expression: str) -> Any:
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"].get(
            "value"
        )

    def problems(self) -> list[str]:
        return [json.dumps(e["params"])[:400] for e in self.events if e.get("method") in self.PROBLEMS]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w_cmd)
        os.close(self._r_evt)


@pytest.fixture
def chromium(tmp_path: Path):
    browser = _Chromium(tmp_path / "chromium-profile")
    try:
        yield browser
    finally:
        browser.close()


def test_the_browser_check_catches_a_broken_page(chromium, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><body><p>broken</p><img src='missing.png'>"
        "<script>console.error('deliberate'); undefinedFunction();</script></body></html>"
    )
    chromium.open(broken)
    methods = {e["method"] for e in chromium.events if e.get("method") in chromium.PROBLEMS}
    assert methods == set(_Chromium.PROBLEMS), chromium.problems()
    assert any("missing.png" in p for p in chromium.problems())


def test_chromium_opens_the_report_cleanly(chromium, run_folder):
    folder, _ = run_folder
    chromium.open(folder / "report.html")
    assert chromium.problems() == []
    shown = chromium.evaluate("document.querySelectorAll('article.call').length")
    by_buffer = chromium.evaluate("!!document.querySelector('svg[aria-label^=\"underflows against\"]')")
    assert chromium.evaluate("document.querySelectorAll('svg.plot').length") == 8 + by_buffer + shown >= 10
    assert chromium.evaluate("document.querySelectorAll('#over-the-run svg.plot').length") == 4
    # Every plot is laid out with a size, and the page loaded nothing but itself.
    sizes = chromium.evaluate(
        "[...document.querySelectorAll('svg.plot')].map(s => s.getBoundingClientRect().width)"
    )
    assert all(w > 300 for w in sizes), sizes
    assert chromium.evaluate("performance.getEntriesByType('resource').length") == 0
    assert chromium.evaluate("document.title") == "uvbench · report"
    assert chromium.evaluate("document.querySelectorAll('audio').length") >= 1


# -- the plots module on synthetic records -----------------------------------------------------------


def _record(
    n: int, *, ttfa: float | None, concurrency: int, buffer_ms: int | None, **extra: Any
) -> dict[str, Any]:
    medium = {"serverWebSocket": {"clientBufferSizeMs": buffer_ms}} if buffer_ms is not None else {}
    base = n * 20_000_000_000
    record = {
        "scenario": "synthetic",
        "outcome": "completed",
        "concurrency": concurrency,
        "call_id": f"{n:08d}-0000-0000-0000-000000000000",
        "metrics": {
            "call.underflow_count": extra.pop("underflows", 0),
            "call.first_audio_ms": 300.0 + n,
            "call.agent_audio_ms": 4000.0,
        },
        "turns": [
            {
                "index": 0,
                "missed": ttfa is None,
                "metrics": {
                    "turn.ttfa_ms": ttfa,
                    "turn.ttfb_ms": None if ttfa is None else ttfa - 12,
                    "turn.agent_audio_ms": 3000.0,
                    "turn.underflow_count": extra.pop("turn_underflows", 0),
                },
                "t_ss_ns": base + 1_000_000_000,
                "t_se_ns": base + 2_500_000_000,
            }
        ],
        "barge_ins": extra.pop("barge_ins", []),
        "anchors": {"ws_open_ns": base, "ws_closed_ns": base + 6_000_000_000},
        "config": {"call": {"medium": medium}},
        "transcripts": [{"role": "agent", "text": f"reply {n} <b>&", "first_ns": base + 500_000_000}],
    }
    record.update(extra)
    return record


def _synthetic(count: int = 40) -> list[dict[str, Any]]:
    records = []
    for n in range(count):
        barge = (
            [
                {
                    "index": 0,
                    "success": True,
                    "metrics": {"interrupt.clear_ms": 90.0 + n, "interrupt.silence_ms": 110.0 + n},
                }
            ]
            if n % 3 == 0
            else []
        )
        records.append(
            _record(
                n,
                ttfa=600.0 + 7 * n,
                concurrency=1 + n % 5,
                buffer_ms=(60, 500, 30000)[n % 3],
                barge_ins=barge,
                turn_underflows=1 if n % 3 == 0 else 0,
                underflows=1 if n % 3 == 0 else 0,
            )
        )
    records.append(_record(99, ttfa=None, concurrency=2, buffer_ms=None, outcome="failed:missed_turn"))
    records.append(
        _record(98, ttfa=50_000.0, concurrency=1, buffer_ms=60, outcome="invalid:generator_overloaded")
    )
    return records


def _is_svg(text: str | None) -> bool:
    return isinstance(text, str) and text.startswith("<svg") and text.rstrip().endswith("</svg>")


def test_plots_draw_synthetic_records():
    records = _synthetic()
    for fn in (
        plots.latency_histogram,
        plots.latency_cdf,
        plots.latency_by_concurrency,
        plots.underflow_by_buffer,
        plots.barge_in_distribution,
    ):
        svg = fn(records)
        assert _is_svg(svg), fn.__name__
        assert "http" not in svg and "<?xml" not in svg and "<metadata" not in svg
    # The invalid call's 50 s TTFA is not in the figures (as in the aggregates).
    assert max(plots.metric_values(records, "turn.ttfa_ms")) == 600.0 + 7 * 39
    rows = plots.underflow_rows(records)
    assert [r.buffer_ms for r in rows] == [60, 500, 30000, None]
    assert rows[0].underflows == 14 and rows[1].underflows == 0


def test_plots_of_nothing_are_none():
    assert plots.latency_histogram([]) is None
    assert plots.latency_cdf([]) is None
    assert plots.latency_by_concurrency([]) is None
    assert plots.underflow_by_buffer([]) is None
    assert plots.barge_in_distribution([]) is None
    no_barge = [_record(1, ttfa=700.0, concurrency=1, buffer_ms=60)]
    assert plots.barge_in_distribution(no_barge) is None
    assert _is_svg(plots.latency_histogram(no_barge))  # one value is still a histogram
    missed = [_record(1, ttfa=None, concurrency=1, buffer_ms=60, outcome="failed:missed_turn")]
    assert plots.latency_histogram(missed) is None and plots.latency_by_concurrency(missed) is None
    assert plots.history_plot(None) is None and plots.history_plot([]) is None
    one = [{"run": "a", "started": "2026-01-01T00:00:00", "metrics": {"turn.ttfa_ms.p95": 800.0}}]
    assert plots.history_plot(one) is None


def test_history_plot_needs_two_runs_of_a_metric():
    history = [
        {
            "run": f"run-{i} $x$",
            "started": f"2026-01-{i + 1:02d}T00:00:00",
            "metrics": {"turn.ttfa_ms.p95": 800.0 + i},
        }
        for i in range(3)
    ]
    svg = plots.history_plot(history)
    assert _is_svg(svg) and "run-2 $x$" in svg  # a dollar sign is text, not TeX


def test_svg_ids_are_unique_across_figures():
    records = _synthetic(10)
    svgs = [plots.latency_histogram(records), plots.latency_cdf(records)]
    ids = [i for svg in svgs for i in re.findall(r'\bid="([^"]+)"', svg)]
    assert len(ids) == len(set(ids))
    for svg in svgs:  # every reference points inside its own figure
        own = set(re.findall(r'\bid="([^"]+)"', svg))
        refs = re.findall(r'(?:href="#|url\(#)([^")]+)', svg)
        assert refs and set(refs) <= own


def test_buffer_level_follows_arrivals_playback_and_clears():
    rate = 1000  # 1 sample per ms keeps the arithmetic readable
    ms = 1_000_000
    listener = Listener(ListenerConfig(sample_rate=rate))
    listener.on_audio(0, 100, 0, 99)  # 100 ms arrives at 0
    listener.on_audio(50 * ms, 100, 0, 99)  # 100 more at 50 ms: 150 ms buffered
    listener.on_clear(120 * ms)  # 80 ms left; the clear drops it
    listener.on_audio(200 * ms, 40, 0, 39)  # a new utterance
    pb = listener.finish(300 * ms)
    t, lo, hi = plots.buffer_level(pb, 0, 300 * ms, bins=300)
    at = {round(x / ms): (a, b) for x, a, b in zip(t, lo, hi, strict=True)}
    assert at[0][1] == pytest.approx(100, abs=1)
    assert at[50][1] == pytest.approx(150, abs=1)  # max just after the second arrival
    assert at[100][1] == pytest.approx(100, abs=1.5)
    assert at[120][0] == pytest.approx(0, abs=0.5) and at[150] == (0, 0)  # dropped at the clear
    assert at[200][1] == pytest.approx(40, abs=1) and at[260] == (0, 0)


def test_call_timeline_of_a_synthetic_call():
    ms = 1_000_000
    listener = Listener(ListenerConfig(sample_rate=24000))
    for k in range(100):  # 2 s of audio in 20 ms frames, a 300 ms gap after 1 s (an underflow)
        t = k * 20 * ms + (300 * ms if k >= 50 else 0)
        listener.on_audio(t, 480, 0, 479)
    pb = listener.finish(3_000 * ms)
    assert pb.underflows
    record = _record(1, ttfa=500.0, concurrency=1, buffer_ms=60)
    record["anchors"] = {"ws_open_ns": 0, "ws_closed_ns": 3_000 * ms}
    record["turns"][0].update(t_ss_ns=0, t_se_ns=200 * ms)
    view = plots.call_view(record, pb, "synthetic · call 1")
    assert view is not None and view.underflows and view.user == [(0.0, 0.2)]
    assert max(view.buffer_hi) == pytest.approx(
        20, abs=0.5
    )  # 60 ms buffer never filled: frames play as they come
    assert _is_svg(plots.call_timeline(view))
    # Without a playback (no timeline) the record alone still draws.
    bare = plots.call_view(record, None, "bare")
    assert bare is not None and len(bare.buffer_t) == 0
    assert _is_svg(plots.call_timeline(bare))
    # A call that never connected has nothing to draw.
    assert plots.call_view({"anchors": {}, "turns": []}, None, "x") is None


def test_html_of_synthetic_records_is_bounded_and_escaped(tmp_path):
    records = _synthetic(30) * 10  # 320 records
    records.append(
        _record(
            7,
            ttfa=None,
            concurrency=1,
            buffer_ms=60,
            outcome="failed:error",
            outcome_detail="<script>alert(1)</script>",
            scenario="evil<i>",
        )
    )
    summary = {"calls": len(records), "thresholds": [], "interrupted": True}
    text = render_html(tmp_path, records, summary, history=None)
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "evil<i>" not in text and "evil&lt;i&gt;" in text
    assert "reply 3 <b>&" not in text
    page = _parse(text)
    table = text[text.index('id="calls"') :]
    assert table.count("<tr class=") == MAX_CALL_ROWS
    assert f"{len(records) - MAX_CALL_ROWS} more calls left out" in text
    assert "interrupted" in text
    assert page.of("script") == []
    assert 'id="history"' not in text  # no history given: no section


def test_many_invalid_calls_say_so_first(tmp_path):
    records = _synthetic(5) + [
        _record(50 + n, ttfa=700.0, concurrency=1, buffer_ms=60, outcome="invalid:generator_overloaded")
        for n in range(5)
    ]
    path = write_html_report(tmp_path, records, {}, history=[])
    text = path.read_text(encoding="utf-8")
    body = text[text.index("<main>") :]
    assert body.index("were invalid (generator overloaded)") < body.index("<h1>")
    assert "Fewer than two runs" in text  # history given but empty
    assert "No barge-ins" not in text


def _set_apart_turn(record: dict[str, Any], reason: str) -> dict[str, Any]:
    """The record with its turn's ttfa and ttfb set apart (out of `metrics`, into `set_apart`)."""
    turn = record["turns"][0]
    turn["set_apart"] = {
        name: {"value": turn["metrics"].pop(name), "reason": reason}
        for name in ("turn.ttfa_ms", "turn.ttfb_ms")
    }
    turn["validity"] = f"set_apart:{reason}"
    return record


def test_many_set_apart_figures_say_so_first_with_their_reasons(tmp_path):
    records = [_record(n, ttfa=700.0 + n, concurrency=1, buffer_ms=60) for n in range(5)] + [
        _set_apart_turn(_record(50 + n, ttfa=9000.0 + n, concurrency=1, buffer_ms=60), reason)
        for n, reason in enumerate(["anchor_late"] * 4 + ["loop_lag"])
    ]
    finished = finish_run(tmp_path, records, [])
    # 10 of 30 anchored figures (each call: call.first_audio_ms, turn.ttfa_ms, turn.ttfb_ms).
    warning = (
        "10 of 30 anchored figures of valid calls were set apart (anchor_late 8, loop_lag 2): "
        "the load generator was late around them; they are left out of the figures"
    )
    assert finished.lines[0] == f"uvbench: warning: {warning}"
    assert finished.lines[-1] == (
        "  set apart (not in the figures): 10 of 30 anchored figures (anchor_late 8, loop_lag 2):"
        " turn.ttfa_ms anchor_late 4, loop_lag 1; turn.ttfb_ms anchor_late 4, loop_lag 1"
    )
    assert any(line.startswith("  turn.ttfa_ms") and " 5 " in line for line in finished.lines)  # 5 counted
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["aggregate"]["set_apart"] == {
        "turn.ttfa_ms": {"anchor_late": 4, "loop_lag": 1},
        "turn.ttfb_ms": {"anchor_late": 4, "loop_lag": 1},
    }
    assert summary["aggregate"]["set_apart_warning"] == warning
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    body = text[text.index("<main>") :]
    assert body.index("anchored figures of valid calls were set apart") < body.index("<h1>")
    assert "figures set apart (generator late around them)" in body
    assert "of 30 anchored · anchor_late 8, loop_lag 2 · turn.ttfa_ms 5, turn.ttfb_ms 5" in body
    assert "9000" not in body.split('id="plots"')[1].split("</section>")[0]  # no set-apart value drawn


def test_a_few_set_apart_figures_are_counted_without_a_warning(tmp_path):
    records = [_record(n, ttfa=700.0 + n, concurrency=1, buffer_ms=60) for n in range(11)]
    _set_apart_turn(records[0], "loop_lag")  # 2 of 33
    text = render_html(tmp_path, records, {})
    assert "were set apart" not in text
    assert "figures set apart (generator late around them)" in text


def test_malformed_messages_from_the_server_show_in_the_report(tmp_path):
    records = [_record(n, ttfa=700.0 + n, concurrency=1, buffer_ms=60) for n in range(4)]
    assert "server sent malformed messages" not in render_html(tmp_path, records, {})
    records[1]["metrics"]["call.malformed_count"] = 3
    for record in records:
        record["metrics"].setdefault("call.malformed_count", 0)
    text = render_html(tmp_path, records, {})
    assert "server sent malformed messages" in text
    assert "calls with text frames that are not data messages (of 4;" in text


def test_a_run_without_barge_ins_says_so(tmp_path):
    records = [_record(n, ttfa=700.0 + n, concurrency=1, buffer_ms=60) for n in range(3)]
    text = render_html(tmp_path, records, {})
    assert "No barge-ins in this run." in text


def test_report_of_many_calls_renders_fast(tmp_path):
    # A guard against a blow-up (something quadratic in the calls), not a speed claim (those are in
    # bench/report_scale.py): CPU time of this process, which draws it all, so a busy machine's other
    # work does not count.
    records = _synthetic(1000)
    started = time.process_time()
    text = render_html(tmp_path, records, {})
    elapsed = time.process_time() - started
    assert elapsed < 8, f"{elapsed:.1f} s of CPU for 1000 calls"
    assert len(text) < 1_000_000
    json.dumps(records)  # the synthetic records stay JSON, like real ones


def test_an_empty_run_still_writes_a_page(tmp_path):
    path = write_html_report(tmp_path, [], {"calls": 0, "interrupted": True})
    text = path.read_text(encoding="utf-8")
    assert "No call finished in this run." in text and "interrupted" in text
    assert "No barge-ins in this run." in text and "No turn latency" in text
    assert "<svg" not in text


def test_the_load_line_reads_like_the_command_line():
    from uvbench.report.html import _load_dict_text

    stages = [{"duration": "15s", "target": 50}, {"duration": "45s", "target": 50}]
    text = _load_dict_text({"executor": "ramping-vus", "startVUs": 1, "stages": stages, "gracefulStop": None})
    assert text == "executor ramping-vus, startVUs 1, stages 15s:50,45s:50"


def test_the_runs_aggregate_draws_the_same_plots(tmp_path):
    """The page drawn from the aggregate finish_run computed (invalid calls included in its records)
    is the page drawn from the valid calls' own aggregate: an aggregate's metrics are the valid calls'."""
    from uvbench.metrics.aggregate import aggregate

    records = _synthetic(12) + [
        _record(50 + n, ttfa=9000.0 + n, concurrency=1, buffer_ms=60, outcome="invalid:generator_overloaded")
        for n in range(3)
    ]

    def normalised(text: str) -> str:
        text = re.sub(r"\buv\d+-", "uvN-", text)  # each figure's id prefix
        return re.sub(r"generated [0-9: -]+", "generated", text)

    overall = aggregate(records, by="scenario")
    summary = {"aggregate": overall.to_json()}
    given = render_html(tmp_path, records, summary, overall=overall)
    computed = render_html(tmp_path, records, summary)
    assert normalised(given) == normalised(computed)
    assert "9000" not in given.split('id="plots"')[1].split("</section>")[0]  # no invalid call drawn


def test_the_preferred_history_lines_are_among_the_figures_read():
    read = {f"{m}.{s}" for m in plots.HISTORY_METRICS for s in plots.HISTORY_STATS}
    assert set(plots.HISTORY_PREFERRED) <= read


def test_the_page_of_thousands_of_calls_stays_small(tmp_path):
    """3000 synthetic calls (records only: no real call), each a turn and two barge-ins, over 300
    concurrency levels, 30 buffer sizes, 50 scenarios and 9 targets: nothing on the page grows with
    the calls. What is left is fixed: five plots (the biggest, the barge-in strip, at most
    2 x MAX_DOTS dots of about 120 bytes: ~125 kB), four charts over the run (at most
    MAX_RUN_BUCKETS buckets each: ~25 kB each), TIMELINE_CALLS call timelines (~15 kB each),
    MAX_CALL_ROWS table rows (~350 bytes each) and MAX_SCENARIOS groups of statistics (~40 kB): about
    0.6 MB, so 1 MB bounds it with room, where every dot and every call drawn would be megabytes."""
    from uvbench.report.html import MAX_SCENARIOS, TIMELINE_CALLS

    records = []
    for n in range(3000):
        barge = [
            {
                "index": k,
                "success": (n + k) % 4 != 0,
                "metrics": {
                    "interrupt.clear_ms": 80.0 + (n * 7 + k) % 300,
                    "interrupt.silence_ms": 100.0 + (n * 11 + k) % 500,
                },
            }
            for k in range(2)
        ]
        records.append(
            _record(
                n,
                ttfa=None if n % 10 == 0 else 600.0 + (n * 37) % 900,
                outcome="failed:missed_turn" if n % 10 == 0 else "completed",
                concurrency=1 + n % 300,
                buffer_ms=40 + 20 * (n % 30),
                barge_ins=barge,
                turn_underflows=n % 2,
                underflows=n % 2,
                target=f"target-{n % 9}",
                scenario=f"scenario-{n % 50}",
                tags={"start_offset_s": n * 0.2},
            )
        )
    text = render_html(tmp_path, records, {"calls": len(records)})
    assert len(text) < 1_000_000, len(text)
    page = _parse(text)
    assert len(page.of("svg")) == 9 + TIMELINE_CALLS
    table = text[text.index('id="calls"') :]
    assert table.count("<tr class=") == MAX_CALL_ROWS
    assert f"{len(records) - MAX_CALL_ROWS} more calls left out" in text
    scenarios = text[text.index('id="scenarios"') : text.index('id="turns"')]
    assert scenarios.count('class="l scen"') == MAX_SCENARIOS
    assert f"{50 - MAX_SCENARIOS} more scenarios left out" in text
    assert "and 3 more" in text  # targets beyond the first 6
    # The barge-in strip: at most MAX_DOTS dots a series, and it says so; 6 buffer sizes not drawn.
    strip = text[text.index('aria-label="time to silence') :]
    strip = strip[: strip.index("</svg>")]
    assert strip.count("<use") <= 2 * plots.MAX_DOTS + 20
    assert f"{plots.MAX_DOTS} drawn as dots" in strip
    assert f"{30 - plots.MAX_BARS} more sizes with fewer calls not drawn" in text
    # 300 concurrency levels: lines without a marker per level.
    by_level = text[text.index('aria-label="turn latency against concurrency') :]
    assert by_level[: by_level.index("</svg>")].count("<use") < 50


def test_a_big_runs_page_is_the_page_whoever_draws_its_figures(tmp_path):
    """From 1000 calls on, finish_run has a forked process draw the figures that need only the records
    (and write the tables) while it computes the aggregate: the page is the one drawn in one process,
    figure ids apart, and the tables are written."""
    from uvbench.metrics.aggregate import aggregate
    from uvbench.report.finish import SIDE_MIN_RECORDS
    from uvbench.report.history import history_for_run

    records = _synthetic(SIDE_MIN_RECORDS)
    finish_run(tmp_path, records, [])
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    summary = json.loads((tmp_path / "summary.json").read_text())
    history = history_for_run(tmp_path, plots.HISTORY_METRICS, plots.HISTORY_STATS)  # as finish_run reads it
    alone = render_html(
        tmp_path, records, summary, overall=aggregate(records, by="scenario"), history=history
    )

    def normalised(text: str) -> str:
        text = re.sub(r"\buv\d+-", "uvN-", text)
        return re.sub(r"generated [0-9: -]+", "generated", text)

    assert normalised(page) == normalised(alone)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    for name in ("calls.csv", "stats.csv", "junit.xml"):
        assert (tmp_path / name).stat().st_size > 0


# -- over the run's time ----------------------------------------------------------------------------


def _timed_record(
    k: int,
    offset_s: float | None,
    *,
    duration_s: float = 6.0,
    ttfa: float | None = 700.0,
    outcome: str = "completed",
    underflows_at_s: tuple[float, ...] = (),
    barge_in: bool | None = None,
    scenario: str = "timed",
) -> dict[str, Any]:
    """A call starting `offset_s` into the run (None: an old run's record without the tag): a turn
    whose user speech ends 2 s after the create was sent, underflows and a barge-in at the given
    seconds after it. Each record runs on its own clock, as records from different processes do."""
    ns = 1_000_000_000
    base = 7_000 * ns + k * 13_370_000_000 + 123_456  # never shared between records
    turn_metrics = {"turn.ttfb_ms": None if ttfa is None else ttfa - 20, "turn.agent_audio_ms": 2500.0}
    turn_metrics["turn.ttfa_ms"] = ttfa
    record = {
        "scenario": scenario,
        "outcome": outcome,
        "concurrency": 1,
        "call_id": f"{k:08d}-1111-0000-0000-000000000000",
        "tags": {"vu": k % 7} | ({} if offset_s is None else {"start_offset_s": offset_s}),
        "duration_ms": duration_s * 1000 - 40,
        "metrics": {
            "call.underflow_count": len(underflows_at_s),
            "call.agent_audio_ms": 4000.0,
            "call.first_audio_ms": 310.0,
        },
        "anchors": {
            "create_sent_ns": base,
            "ws_open_ns": base + 40_000_000,
            "ws_closed_ns": base + int(duration_s * ns),
        },
        "turns": [
            {
                "index": 0,
                "step": 1,
                "name": "ask_order",
                "missed": ttfa is None,
                "metrics": turn_metrics,
                "t_ss_ns": base + 1 * ns,
                "t_se_ns": base + 2 * ns,
            }
        ],
        "underflows": [
            {"start_ns": base + int(t * ns), "end_ns": base + int(t * ns) + 30_000_000}
            for t in underflows_at_s
        ],
        "barge_ins": []
        if barge_in is None
        else [
            {
                "index": 0,
                "step": 3,
                "success": barge_in,
                "t_bi_ns": base + 4 * ns,
                "t_be_ns": base + 5 * ns,
                "metrics": {"interrupt.clear_ms": 120.0, "interrupt.silence_ms": 180.0},
            }
        ],
    }
    return record


def _minutes_of_calls(
    minutes: float = 4.0, calls: int = 240, scenario: str = "timed"
) -> list[dict[str, Any]]:
    """A synthetic run of `minutes`: calls starting ever more often, TTFA rising with the load, every
    11th call failed, every 13th invalid, an underflow in every third, a barge-in in every second
    (every fifth of them not stopping the agent)."""
    span = minutes * 60 - 10
    return [
        _timed_record(
            k,
            round(span * (k / calls) ** 0.5, 3),
            duration_s=5.0 + k % 4,
            ttfa=500.0 + 4 * k + (k * 37) % 150,
            outcome="invalid:generator_overloaded"
            if k % 13 == 0
            else "failed:expect"
            if k % 11 == 0
            else "completed",
            underflows_at_s=(3.0,) if k % 3 == 0 else (),
            barge_in=None if k % 2 else k % 5 != 0,
            scenario=scenario,
        )
        for k in range(calls)
    ]


TTFA_THRESHOLDS = [
    {"metric": "turn.ttfa_ms", "expression": "p(95) < 1200", "passed": True, "observed": 1100.0},
    {"metric": "turn.ttfa_ms{turn:ask_order}", "expression": "p(50)<900", "passed": False, "observed": 950.0},
    {"metric": "turn.ttfa_ms", "expression": "avg < 60000", "passed": True, "observed": 800.0},
    {"metric": "turn.ttfa_ms", "expression": "count > 10", "passed": True, "observed": 200.0},
    {"metric": "turn.ttfb_ms", "expression": "p(95) < 1000", "passed": True, "observed": 900.0},
    {"metric": "call.failed", "expression": "rate < 0.01", "passed": False, "observed": 0.05},
]


def test_bucket_width_cuts_any_run_into_30_to_120_buckets():
    for span in (0.4, 1.0, 6.5, 59.0, 61.0, 240.0, 299.0, 3600.0, 7300.0, 86_400.0, 3 * 86_400.0):
        width = plots.bucket_width(span)
        assert 30 <= math.ceil(span / width) <= plots.MAX_RUN_BUCKETS, (span, width)


def test_run_series_places_calls_turns_and_events_in_run_time():
    records = [
        _timed_record(0, 0.0, duration_s=10.0, ttfa=600.0, underflows_at_s=(3.0, 3.5), barge_in=True),
        _timed_record(1, 5.0, duration_s=10.0, ttfa=800.0, outcome="failed:expect", barge_in=False),
        _timed_record(
            2,
            5.0,
            duration_s=4.0,
            ttfa=5_000.0,
            outcome="invalid:generator_overloaded",
            underflows_at_s=(1.0,),
            barge_in=True,
        ),
        _timed_record(3, 20.0, duration_s=10.0, ttfa=None),  # its turn was missed: no latency
        _timed_record(4, None),
    ]
    records[1]["turns"][0]["metrics"].pop("turn.ttfa_ms")  # set apart: not in the turn's metrics
    records[1]["turns"][0]["set_apart"] = {"turn.ttfa_ms": {"value": 9000.0, "reason": "loop_lag"}}
    series = plots.run_series(records)
    assert series.unplaced == 1 and series.placed == 4
    # The run spans 30 s: 0.5 s buckets, 60 of them.
    assert series.width_s == 0.5 and series.buckets == 60
    assert list(series.starts) == [0.0, 5.0, 5.0, 20.0]
    assert list(series.ends) == pytest.approx([10.0, 15.0, 9.0, 30.0])
    # Latency: the valid calls' answered turns only, at t_se (2 s after the create was sent).
    assert list(series.turn_t) == pytest.approx([2.0]) and list(series.turn_ms) == [600.0]
    p50, p95, counts = series.latency()
    assert counts[4] == 1 and counts.sum() == 1 and p50[4] == p95[4] == 600.0
    assert np.isnan(p50[0]) and np.isnan(p95[5])
    # Underflows and barge-ins of valid calls, at their own time in the run.
    assert list(series.underflow_t) == pytest.approx([3.0, 3.5])
    assert list(series.barge_t) == pytest.approx([4.0, 9.0]) and list(series.barge_ok) == [True, False]
    # In flight: 1 call over [0, 5), 3 over [5, 9), 2 over [9, 15), 0 over [15, 20), 1 over [20, 30).
    mean, peak = series.in_flight()
    assert mean[:10] == pytest.approx([1.0] * 10) and peak[9] == 1
    assert mean[10] == pytest.approx(3.0) and peak[10] == 3
    assert mean[18] == pytest.approx(2.0) and peak[17] == 3 and peak[18] == 2
    assert mean[30:40] == pytest.approx([0.0] * 10) and peak[30:40].max() == 0
    assert mean[40:] == pytest.approx([1.0] * 20)
    assert series.count(series.starts)[10] == 2
    # Outcomes by the time each call ended.
    outcomes = series.outcome_counts()
    assert outcomes.sum() == 4
    assert outcomes[0][20] == 1 and outcomes[1][30] == 1 and outcomes[2][18] == 1  # 10 s, 15 s, 9 s
    assert outcomes[0][59] == 1  # the last call ends on the run's last instant: the last bucket


def test_run_latency_percentiles_are_the_summarys_per_bucket():
    records = _minutes_of_calls(4.0, 300)
    series = plots.run_series(records)
    assert 30 <= series.buckets <= plots.MAX_RUN_BUCKETS
    p50, p95, counts = series.latency()
    by_bucket: dict[int, list[float]] = {}
    for r in records:
        if r["outcome"].startswith("invalid:"):
            continue
        t = r["tags"]["start_offset_s"] + 2.0
        by_bucket.setdefault(int(t // series.width_s), []).append(r["turns"][0]["metrics"]["turn.ttfa_ms"])
    assert sum(counts) == sum(len(v) for v in by_bucket.values())
    for b, values in by_bucket.items():
        values.sort()
        assert p50[b] == pytest.approx(percentile(values, 50)) and p95[b] == pytest.approx(
            percentile(values, 95)
        )


def test_threshold_lines_are_the_ttfa_levels():
    lines = plots.threshold_lines(TTFA_THRESHOLDS)
    assert [(t.value, t.label, t.passed) for t in lines] == [
        (1200.0, "p(95) < 1200", True),
        (900.0, "p(50)<900 {turn:ask_order}", False),
        (60000.0, "avg < 60000", True),
    ]
    assert plots.threshold_lines(None) == [] and plots.threshold_lines([{"metric": 3}]) == []


def test_the_latency_chart_draws_its_thresholds_red_when_breached(figures):
    series = plots.run_series(_minutes_of_calls())
    svg = plots.run_latency(series, TTFA_THRESHOLDS)
    assert _is_svg(svg)
    assert "p(95) &lt; 1200 ✓" in svg and "p(50)&lt;900 {turn:ask_order} ✗ breached" in svg
    assert "off the chart: avg &lt; 60000 ✓" in svg  # 50x the data: named, not drawn
    (label, fig, faults), *_ = figures
    assert label == "turn latency over the run" and faults == []
    ax = fig.axes[0]
    levels = {
        line.get_ydata()[0]: line.get_color()
        for line in ax.get_lines()
        if len(set(line.get_ydata())) == 1 and len(line.get_ydata()) == 2
    }
    assert levels == {1200.0: "#555555", 900.0: "#d62728"}
    assert 1200 < ax.get_ylim()[1] < 3000
    assert f"buckets of {series.width_text}" in ax.get_xlabel()


def test_charts_over_a_run_of_one_call():
    series = plots.run_series([_timed_record(0, 0.0, duration_s=6.0, underflows_at_s=(3.0,), barge_in=True)])
    assert series.placed == 1 and 30 <= series.buckets <= plots.MAX_RUN_BUCKETS
    latency = plots.run_latency(series)
    assert _is_svg(latency) and "<use" in latency  # the one turn is a marker (a line needs two)
    for chart in (plots.run_load, plots.run_outcomes, plots.run_audio):
        assert _is_svg(chart(series)), chart.__name__
    empty = plots.run_series([_timed_record(0, None)])
    assert empty.placed == 0 and empty.unplaced == 1
    assert all(chart(empty) is None for chart in (plots.run_load, plots.run_outcomes, plots.run_audio))
    assert plots.run_latency(empty) is None


def test_the_page_says_which_calls_the_charts_over_the_run_leave_out(tmp_path):
    records = _minutes_of_calls(3.0, 60)
    for r in records[:7]:
        del r["tags"]["start_offset_s"]
    text = render_html(tmp_path, records, {})
    over = text[text.index('id="over-the-run"') : text.index('id="plots"')]
    assert "7 of 60 calls have no start time in the run" in over
    assert over.count("<svg") == 4
    for r in records:
        r["tags"].pop("start_offset_s", None)
    text = render_html(tmp_path, records, {})
    over = text[text.index('id="over-the-run"') : text.index('id="plots"')]
    assert "nothing to draw over the run's time" in over and "<svg" not in over


def test_chromium_shows_the_charts_over_a_multi_minute_run(chromium, tmp_path):
    records = _minutes_of_calls(5.0, 400, scenario="a-scenario-with-a-rather-long-name-for-a-booking-flow")
    write_html_report(tmp_path, records, {"thresholds": TTFA_THRESHOLDS})
    chromium.open(tmp_path / "report.html")
    assert chromium.problems() == []
    labels = chromium.evaluate(
        "[...document.querySelectorAll('#over-the-run svg.plot')].map(s => s.getAttribute('aria-label'))"
    )
    assert labels == [
        "turn latency over the run",
        "calls in flight and calls started over the run",
        "outcomes over the run",
        "underflows and barge-ins over the run",
    ]
    sizes = chromium.evaluate(
        "[...document.querySelectorAll('#over-the-run svg.plot')].map(s => s.getBoundingClientRect().width"
        " / document.querySelector('#over-the-run').clientWidth)"
    )
    assert all(w > 0.9 for w in sizes), sizes  # across the page
    texts = chromium.evaluate(
        "[...document.querySelectorAll('#over-the-run svg text')].map(t => t.textContent.trim())"
    )
    assert "p(95) < 1200 ✓" in texts and "p(50)<900 {turn:ask_order} ✗ breached" in texts
    assert any(t.startswith("seconds since the run started (buckets of ") for t in texts)
    assert chromium.evaluate("!!document.querySelector('nav a[href=\"#over-the-run\"]')")
    # No header or cell says its unit twice ("turn.ttfa_ms ms"), and the glossary names its source.
    body = chromium.evaluate("document.body.innerText")
    assert re.search(r"\bms\s+ms\b", body) is None
    glossary = chromium.evaluate("document.querySelector('#glossary').textContent")
    assert "docs/metrics.md" in glossary and "uvbench schema" in glossary and "turn.ttfa_ms" in glossary
    assert "http" not in glossary


def test_no_cell_of_the_page_says_ms_twice(tmp_path):
    text = render_html(tmp_path, _synthetic(12), {})
    cells = re.sub(r"<svg.*?</svg>", "", text, flags=re.S)
    cells = html.unescape(re.sub(r"<[^>]+>", " ", cells))
    assert re.search(r"\bms\s+ms\b", cells) is None
    assert "turn.ttfa_ms" in cells


# -- labels apart ------------------------------------------------------------------------------------


def _layout_faults(fig: Any) -> list[str]:
    """What is wrong with a drawn figure's layout: text outside the figure, tick labels of one axis
    or annotations of one axes overlapping, a legend over a title, an axis label or a tick label.
    (A legend inside its axes is placed where the data is not: `loc` does that.)"""
    from matplotlib.legend import Legend
    from matplotlib.text import Annotation, Text

    fig.draw_without_rendering()
    faults: list[str] = []
    page = fig.bbox

    def shown(t: Text) -> bool:
        return t.get_visible() and bool(t.get_text().strip())

    ticks: list[Text] = []
    left_out: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            labels = []
            for tick in axis.get_major_ticks():
                inside = lo - 1e-9 * (hi - lo) <= tick.get_loc() <= hi + 1e-9 * (hi - lo)
                if not inside or not shown(tick.label1) or not tick.label1.get_visible():
                    left_out.add(id(tick.label1))
                    continue
                labels.append(tick.label1)
            ticks += labels
            boxes = [t.get_window_extent() for t in labels]
            rotated = any(t.get_rotation() % 180 for t in labels)
            for k in range(len(labels) - 1):
                (a, ta), (b, tb) = (boxes[k], labels[k]), (boxes[k + 1], labels[k + 1])
                if rotated:  # parallel slanted labels: their lines must be a text height apart
                    angle = math.radians(ta.get_rotation())
                    apart = abs((b.x0 + b.x1) - (a.x0 + a.x1)) / 2 * abs(math.sin(angle))
                    if apart < ta.get_fontsize() * fig.dpi / 72:
                        faults.append(f"tick labels {ta.get_text()!r} and {tb.get_text()!r} overlap")
                elif a.padded(-0.5).overlaps(b.padded(-0.5)):
                    faults.append(f"tick labels {ta.get_text()!r} and {tb.get_text()!r} overlap")
    texts = [t for t in fig.findobj(Text) if shown(t) and id(t) not in left_out]
    for t in texts:
        box = t.get_window_extent()
        if box.x0 < page.x0 - 1 or box.x1 > page.x1 + 1 or box.y0 < page.y0 - 1 or box.y1 > page.y1 + 1:
            faults.append(f"text {t.get_text()!r} leaves the figure")
    for ax in fig.axes:
        notes = [t for t in ax.texts if isinstance(t, Annotation) and shown(t)]
        boxes = [n.get_window_extent() for n in notes]
        for i in range(len(notes)):
            for j in range(i + 1, len(notes)):
                if boxes[i].overlaps(boxes[j]):
                    faults.append(f"annotations {notes[i].get_text()!r} and {notes[j].get_text()!r} overlap")
    legends = [lg for lg in fig.findobj(Legend) if lg.get_visible()]
    for legend in legends:
        box = legend.get_window_extent()
        for t in (
            ticks
            + [a.title for a in fig.axes]
            + [a.xaxis.label for a in fig.axes]
            + [a.yaxis.label for a in fig.axes]
        ):
            if shown(t) and box.overlaps(t.get_window_extent()):
                faults.append(f"a legend covers {t.get_text()!r}")
    return faults


@pytest.fixture
def figures(monkeypatch):
    """Every figure drawn while the test runs: (label, the matplotlib figure, its `_layout_faults`)."""
    import matplotlib as mpl

    drawn: list[tuple[str, Any, list[str]]] = []
    render = plots._render

    def keep(build, label):
        with mpl.rc_context(plots._RC):
            from matplotlib.figure import Figure

            fig = build(Figure)
            drawn.append((label, fig, _layout_faults(fig)))
        return render(build, label)

    monkeypatch.setattr(plots, "_render", keep)
    return drawn


def test_the_histograms_legend_is_off_the_bars(figures):
    svg = plots.latency_histogram(_synthetic(200))
    assert _is_svg(svg)
    ((label, fig, faults),) = figures
    assert label == "turn latency distribution" and faults == []
    (ax,) = fig.axes
    bars = [p.get_window_extent() for p in ax.patches]
    assert bars and ax.get_legend() is None  # the figure's legend, below the axes
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert not box.overlaps(ax.get_window_extent()) and not any(box.overlaps(b) for b in bars)
    assert box.y1 < ax.get_window_extent().y0


def test_no_label_of_any_figure_meets_another(figures, tmp_path):
    """Every figure of a page of many groups with long names: 300 concurrency levels, 30 buffer
    sizes with notes over their bars, 40 past runs with long names, the charts over a run with its
    thresholds, the call timelines; then a few groups, where every note fits whole."""
    long = "a-scenario-with-a-rather-long-name-for-the-booking-flow"
    records = []
    for n in range(1500):
        record = _record(
            n,
            ttfa=600.0 + (n * 37) % 900,
            concurrency=1 + n % 300,
            buffer_ms=40 + 20 * (n % 30),
            turn_underflows=n % 2,
            underflows=(n % 2) * 1000,
            scenario=f"{long}-{n % 50}",
            barge_ins=[
                {"index": 0, "success": n % 4 != 0, "metrics": {"interrupt.silence_ms": 100.0 + n % 500}}
            ],
        )
        records.append(record)
    records += _minutes_of_calls(30.0, 500, scenario=long)
    history = [
        {
            "run": f"20260101-0000{i:02d}-{long}",
            "started": f"2026-01-01T00:{i:02d}:00",
            "metrics": {"turn.ttfa_ms.p95": 800.0 + i, "turn.ttfa_ms.p50": 600.0 + i},
        }
        for i in range(40)
    ]
    render_html(tmp_path, records, {"thresholds": TTFA_THRESHOLDS}, history=history)
    render_html(tmp_path, _synthetic(30), {"thresholds": TTFA_THRESHOLDS})
    names = {label.split(" of ")[0] for label, _, _ in figures}
    assert {
        "turn latency distribution",
        "turn latency CDF",
        "turn latency against concurrency",
        "underflows against clientBufferSizeMs",
        "time to silence and to the clear after a barge-in",
        "timeline",
        "figures across runs",
        "turn latency over the run",
        "calls in flight and calls started over the run",
        "outcomes over the run",
        "underflows and barge-ins over the run",
    } <= names
    faults = [(label, faults) for label, _, faults in figures if faults]
    assert faults == [], "\n".join(map(str, faults))


# -- checks, per turn, the underflow headline ----------------------------------------------------------


def test_the_page_lists_every_check_failed_first_with_its_failed_calls(tmp_path):
    records = _minutes_of_calls(2.0, 30)
    for k, r in enumerate(records):
        r["expectations"] = [
            {
                "step": 4,
                "ok": True,
                "what": "agent transcript contains 'order'",
                "detail": "",
                "name": "greeted",
            },
            {
                "step": 5,
                "ok": k % 4 != 1,
                "what": "call.max_buffered_ms < 1000",
                "detail": f"call.max_buffered_ms was {1200 + k} <b>",
                "name": None,
            },
        ]
    text = render_html(tmp_path, records, {})
    section = text[text.index('id="checks"') : text.index('id="over-the-run"')]
    valid = [r for r in records if not r["outcome"].startswith("invalid:")]
    failing = [r for r in valid if not r["expectations"][1]["ok"]]
    passes = 2 * len(valid) - len(failing)
    assert f"checks ✓ {passes} ✗ {len(failing)}" in section
    rows = re.findall(r"<tr class=\"(fail)?\">.*?<code>([^<]*)</code>", section)
    assert rows == [("fail", "step5"), ("", "greeted")]  # the failed check first, labelled by its step
    for r in failing:  # every failed call, not the first only, with what it measured
        assert r["call_id"][:8] in section and f"was {1200 + int(r['call_id'][:8])} &lt;b&gt;" in section
    assert "<b>" not in section.split("</h2>", 1)[1]


def test_a_run_without_expectations_says_so_in_checks(tmp_path):
    text = render_html(tmp_path, _synthetic(5), {})
    assert "No expectation was checked in this run" in text


def test_the_page_breaks_figures_down_by_turn(tmp_path):
    records = _minutes_of_calls(2.0, 40)
    for k, r in enumerate(records):
        tool = dict(r["turns"][0], name=None, step=6, missed=k % 10 == 0)
        tool["metrics"] = dict(tool["metrics"], **{"turn.ttfa_ms": 2500.0 + k})
        r["turns"].append(tool)
    text = render_html(tmp_path, records, {})
    section = text[text.index('id="turns"') : text.index('id="shown"')]
    assert "<code>ask_order</code>" in section and "<code>step6</code>" in section
    ask = section[section.index("<code>ask_order</code>") : section.index("<code>step6</code>")]
    tool = section[section.index("<code>step6</code>") :]
    assert "turn.ttfa_ms" in ask and "turn.ttfa_ms" in tool
    assert " missed" not in ask and " missed" in tool
    # The tool turn's slow replies stay in its own rows: each turn's TTFA count and max are its own.
    valid = [r for r in records if not r["outcome"].startswith("invalid:")]

    def ttfa_cells(rows: str) -> list[str]:
        row = rows[rows.index("<code>turn.ttfa_ms</code>") :]
        return re.findall(r"<td>([^<]*)</td>", row[: row.index("</tr>")])

    plain = [r["turns"][0]["metrics"]["turn.ttfa_ms"] for r in valid]
    slow = [r["turns"][1]["metrics"]["turn.ttfa_ms"] for r in valid if not r["turns"][1]["missed"]]
    assert ttfa_cells(ask)[0] == str(len(plain)) and ttfa_cells(ask)[-1] == f"{max(plain):.0f}"
    assert ttfa_cells(tool)[0] == str(len(slow)) and ttfa_cells(tool)[-1] == f"{max(slow):.0f}"


def test_the_underflow_headline_says_how_much_audio_it_rests_on(tmp_path):
    records = [_record(n, ttfa=700.0, concurrency=1, buffer_ms=60, underflows=n % 2) for n in range(12)]
    text = render_html(tmp_path, records, {})
    tile = text[text.index("underflows per min of agent audio") :]
    tile = tile[: tile.index("</div></div>")]
    # 6 underflows in 12 calls x 4 s of agent audio: 0.8 min, 7.5 a minute.
    assert '<div class="big">7.5</div>' in tile and "6 underflows in 0.8 min of agent audio heard" in tile
    few = render_html(tmp_path, records[:2], {})
    tile = few[few.index("underflows per min of agent audio") :]
    tile = tile[: tile.index("</div></div>")]
    assert '<div class="big">—</div>' in tile and "too little for a rate" in tile


# -- by impairment level -----------------------------------------------------------------------------


def _impaired(
    n: int, *, caller: str | None, network: str | None = None, variant: dict | None = None, ttfa: float | None
) -> dict[str, Any]:
    """A synthetic call with the tags and figures the levels read (`uvbench.metrics.levels`)."""
    tags = {k: v for k, v in (("caller", caller), ("network", network)) if v is not None}
    record = _record(n, ttfa=ttfa, concurrency=1, buffer_ms=60, tags=tags, variant=variant)
    record["metrics"]["call.false_barge_in_count"] = n % 3 // 2
    record["metrics"]["call.agent_audio_ms"] = 20_000.0
    record["metrics"]["call.underflow_count"] = n % 2
    record["turns"][0]["metrics"]["turn.talk_over_ms"] = 10.0 * (n % 7)
    return record


def _snr_by_jitter(snrs=(30, 20, 10, 0), jitters=(0, 40, 120), per_cell: int = 3) -> list[dict[str, Any]]:
    records = []
    for snr in snrs:
        for jitter in jitters:
            for _ in range(per_cell):
                n = len(records)
                missed = snr == 0 and n % 4 == 0
                records.append(
                    _impaired(
                        n,
                        caller=f"snr={snr}dB",
                        network=f"jitter={jitter}ms" if len(jitters) > 1 else None,
                        variant={"caller.noise.snr_db": snr}
                        | ({"network.jitter.mean_ms": jitter} if len(jitters) > 1 else {}),
                        ttfa=None if missed else 600.0 + 4 * jitter + 9 * (30 - snr) + n,
                    )
                )
    return records


def _level_rows(section: str) -> dict[str, list[str]]:
    """The first table's rows of the levels section: level label -> its cells' text."""
    table = section[section.index('<table class="levels">') :]
    table = table[: table.index("</table>")]
    rows = {}
    for row in re.findall(r"<tr><td.*?</tr>", table, re.S):
        cells = [
            html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row)
        ]
        rows[cells[0]] = cells[1:]
    return rows


def test_the_levels_section_shows_summary_jsons_numbers_per_level(tmp_path):
    folder = tmp_path / "20260101-000000-sweep"
    folder.mkdir()
    records = _snr_by_jitter(jitters=(0,), per_cell=8)
    finish_run(folder, records, [])
    summary = json.loads((folder / "summary.json").read_text())
    text = (folder / "report.html").read_text()
    assert '<a href="#levels">by impairment level</a>' in text
    section = text[text.index('<section id="levels">') : text.index('<section id="scenarios">')]
    assert "noisier to the right" in section
    rows = _level_rows(section)
    levels = summary["levels"]["dimensions"]["caller"]["levels"]
    assert sorted(rows) == sorted(lv["label"] for lv in levels) and len(levels) == 4
    for lv in levels:
        calls, p50, p95, answered, missed, per_call, share, talk_over, per_min = rows[lv["label"]]
        assert calls == str(lv["calls"])
        assert p50 == f"{lv['turn.ttfa_ms']['p50']:.0f}" and p95 == f"{lv['turn.ttfa_ms']['p95']:.0f}"
        assert answered == str(lv["turn.ttfa_ms"]["count"])
        assert missed == f"{100 * lv['turn.miss_rate']['value']:.1f}%"
        assert per_call == f"{lv['call.false_barge_in_count']['mean']:.2f}"
        assert share == f"{100 * lv['call.false_barge_in_rate']['value']:.1f}%"
        assert talk_over == f"{lv['turn.talk_over_ms']['mean']:.0f}"
        assert per_min == f"{lv['audio.underflow_per_min']['value']:.2f}"
    # The noisiest level is the one that missed turns, and the table says so.
    assert rows["snr=0dB"][4] != "0.0%" and rows["snr=30dB"][4] == "0.0%"
    assert len(re.findall(r'aria-label="[^"]* by impairment level"', section)) == len(plots.LEVEL_FIGURES)


def test_a_run_without_impairment_levels_has_no_such_section(tmp_path):
    text = render_html(tmp_path, _synthetic(12), {})
    assert 'id="levels"' not in text and "#levels" not in text and "by impairment level" not in text
    # One impairment for every call is no sweep: nothing to plot against.
    same = [_impaired(n, caller="snr=10dB", ttfa=700.0) for n in range(6)]
    text = render_html(tmp_path, same, {})
    assert 'id="levels"' not in text


def test_level_plots_are_numeric_along_a_matrix_axis_and_categorical_otherwise(figures, tmp_path):
    numeric = _snr_by_jitter(jitters=(0,))
    render_html(tmp_path, numeric, {})
    drawn = {label: fig for label, fig, _ in figures if label.endswith("by impairment level")}
    assert len(drawn) == len(plots.LEVEL_FIGURES)
    ax = drawn["turn latency by impairment level"].axes[0]
    assert ax.xaxis_inverted() and "caller.noise.snr_db" in ax.get_xlabel()  # 30 dB left, 0 dB right
    x = sorted(ax.lines[0].get_xdata())
    assert x == [0, 10, 20, 30]
    figures.clear()
    labels = ["snr=10dB+ulaw+reverb=0.4s", "clean", "snr=0dB+gain=-12dB+a-long-telephone-chain"]
    categorical = [_impaired(n, caller=labels[n % 3], ttfa=700.0 + n) for n in range(12)]
    text = render_html(tmp_path, categorical, {})
    assert "in the order the run first met them" in text
    drawn = {label: fig for label, fig, _ in figures if label.endswith("by impairment level")}
    ax = drawn["turn latency by impairment level"].axes[0]
    assert not ax.xaxis_inverted() and ax.get_xlabel() == "caller level"
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[:2] == ["snr=10dB+ulaw+reverb=0.4s", "clean"] and ticks[2].endswith("…")
    assert [label for label, _, faults in figures if faults] == []


def test_both_dimensions_draw_a_line_per_level_of_the_other(figures, tmp_path):
    records = _snr_by_jitter()
    for r in records[::5]:
        r["barge_ins"] = [{"index": 0, "success": True, "metrics": {"interrupt.talk_over_ms": 120.0}}]
    text = render_html(tmp_path, records, {})
    drawn = {label: fig for label, fig, _ in figures if label.endswith("by impairment level")}
    ax = drawn["turn latency by impairment level"].axes[0]
    # SNR (4 levels) along x, a line per jitter level (3), p50 and p95 each.
    assert len(ax.lines) == 2 * 3 and all(len(line.get_xdata()) == 4 for line in ax.lines)
    (legend,) = drawn["turn latency by impairment level"].legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "jitter=0ms",
        "jitter=40ms",
        "jitter=120ms",
        "p50",
        "p95",
    ]
    talk = drawn["talk-over by impairment level"]
    assert len(talk.axes[0].lines) == 2 * 3  # turns and barge-ins
    section = text[text.index('<section id="levels">') : text.index('<section id="scenarios">')]
    assert "A line per network level." in section and "barge-in talk-over" in section
    assert "Every caller level crossed with every network level (12)" in section
    assert [label for label, _, faults in figures if faults] == []


def test_no_label_of_a_level_plot_meets_another_at_the_bound(figures, tmp_path):
    """Every level kept in both dimensions, with long labels: legends, ticks and titles stay apart."""
    from uvbench.metrics.levels import MAX_LEVELS

    records = []
    for c in range(MAX_LEVELS + 2):
        for j in range(MAX_LEVELS):
            records.append(
                _impaired(
                    len(records),
                    caller=f"snr={c}dB+ulaw+a-rather-long-reverb-chain-{c}",
                    network=f"jitter={10 * j}ms,max=120ms+bursts=300ms/1000ms",
                    variant={"network.jitter.mean_ms": 10 * j},
                    ttfa=700.0 + c * 10 + j,
                )
            )
    text = render_html(tmp_path, records, {})
    assert "2 more caller levels with fewer calls are left out" in text
    drawn = [(label, faults) for label, _, faults in figures if label.endswith("by impairment level")]
    assert len(drawn) == len(plots.LEVEL_FIGURES)
    assert [(label, faults) for label, faults in drawn if faults] == []


def test_chromium_opens_a_page_with_levels_cleanly(chromium, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(render_html(tmp_path, _snr_by_jitter(), {}))
    chromium.open(path)
    assert chromium.problems() == []
    assert chromium.evaluate("document.querySelectorAll('#levels svg.plot').length") == len(
        plots.LEVEL_FIGURES
    )
    widths = chromium.evaluate(
        "[...document.querySelectorAll('#levels svg.plot')].map(s => s.getBoundingClientRect().width)"
    )
    assert all(w > 300 for w in widths), widths
