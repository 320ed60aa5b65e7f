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
import json
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

import pytest

from uvbench.listener import Listener, ListenerConfig
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
    # Histogram, CDF, by concurrency, by buffer size, barge-ins, and one timeline per shown call.
    shown = text.count('<article class="call">')
    assert 2 <= shown <= 4
    assert len(svgs) == 5 + shown
    for title in (
        "Turn latency distribution",
        "Turn latency CDF",
        "Turn latency against concurrency",
        "Underflows against the client buffer size",
        "After a barge-in",
    ):
        assert title in text, title
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
    thresholds = text[text.index('id="thresholds"') : text.index('id="plots"')]
    rows = re.findall(r"<tr class=\"(fail)?\">.*?<code>([^<]*)</code>.*?<code>([^<]*)</code>", thresholds)
    assert rows[0] == ("fail", "turn.ttfa_ms", "p(50) &lt; 1")
    assert [r[0] for r in rows[1:]] == ["", ""]

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
    assert chromium.evaluate("document.querySelectorAll('svg.plot').length") == 5 + shown >= 7
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
        "metrics": {"call.underflow_count": extra.pop("underflows", 0), "call.first_audio_ms": 300.0 + n},
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
    records = _synthetic(1000)
    started = time.perf_counter()
    text = render_html(tmp_path, records, {})
    elapsed = time.perf_counter() - started
    assert elapsed < 8, f"{elapsed:.1f} s for 1000 calls"
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
    2 x MAX_DOTS dots of about 120 bytes: ~125 kB), TIMELINE_CALLS call timelines (~15 kB each),
    MAX_CALL_ROWS table rows (~350 bytes each) and MAX_SCENARIOS groups of statistics (~40 kB): about
    0.5 MB, so 1 MB bounds it with room, where every dot and every call drawn would be megabytes."""
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
            )
        )
    text = render_html(tmp_path, records, {"calls": len(records)})
    assert len(text) < 1_000_000, len(text)
    page = _parse(text)
    assert len(page.of("svg")) == 5 + TIMELINE_CALLS
    table = text[text.index('id="calls"') :]
    assert table.count("<tr class=") == MAX_CALL_ROWS
    assert f"{len(records) - MAX_CALL_ROWS} more calls left out" in text
    scenarios = text[text.index('id="scenarios"') : text.index('id="shown"')]
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
