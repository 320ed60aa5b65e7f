"""Scenario files: the shipped examples, matrix expansion, variables, and every validation
problem with its exact text and file:line:col."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf
import yaml
from pydantic import ValidationError

from uvbench.audio.corpus import CORPUS_DIR, load_manifest
from uvbench.scenario import (
    METRIC_NAMES,
    AgentAudible,
    AgentDone,
    BargeInStep,
    ExpectStep,
    HangUpStep,
    MetricBound,
    SayStep,
    Scenario,
    ScenarioError,
    SilenceStep,
    StateCondition,
    TextStep,
    ToolCallCondition,
    ToolCalled,
    TranscriptCondition,
    TranscriptContains,
    TranscriptRegex,
    WaitForStep,
    duration_seconds,
    json_schema,
    load_scenarios,
    parse_scenarios,
)
from uvbench.server.config import agent_from_dict

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"

MINIMAL = """\
name: t
script:
  - say: hello_16k.wav
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, name: str = "s.yaml") -> tuple[str, list[str]]:
    path = write(tmp_path, text, name)
    with pytest.raises(ScenarioError) as info:
        load_scenarios(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return str(path), info.value.problems


# --------------------------------------------------------------------------------------------
# The shipped scenarios


def test_quickstart_loads() -> None:
    [s] = load_scenarios(SCENARIOS / "quickstart.yaml")
    assert s.name == "order-status" and s.variant == {} and s.source == str(SCENARIOS / "quickstart.yaml")
    assert s.target.is_local and s.target.label == "local" and s.target.api_key() is None
    assert s.call["medium"] == {
        "serverWebSocket": {"inputSampleRate": 16000, "outputSampleRate": 24000, "clientBufferSizeMs": 30000}
    }
    assert s.input_sample_rate == 16000 and s.output_sample_rate == 24000
    assert s.prior_call_id is None
    assert s.client.chunk_ms == 20 and s.client.honor_clear and s.client.ping_interval == 1.0
    assert s.client.join_timeout == 10.0 and s.client.record and s.client.prebuffer_ms == 0
    assert s.tools["lookupOrder"].result == '{"status": "shipped"}'
    assert s.tools["lookupOrder"].delay == pytest.approx(0.2)
    assert s.tools["brokenTool"].message_fields() == {
        "errorType": "implementation-error",
        "errorMessage": "boom",
    }
    assert s.tools["endCall"].message_fields() == {"result": "bye", "responseType": "hang-up"}

    kinds = [type(step) for step in s.script]
    assert kinds == [
        WaitForStep,
        SayStep,
        WaitForStep,
        SayStep,
        WaitForStep,
        WaitForStep,
        BargeInStep,
        WaitForStep,
        TextStep,
        WaitForStep,
        WaitForStep,
        SilenceStep,
        ExpectStep,
        HangUpStep,
    ]
    greeting = s.script[0]
    assert isinstance(greeting.wait_for, AgentDone) and greeting.timeout == 10.0  # ${greeting_timeout}
    hello = s.script[1]
    clip = load_manifest()["hello_16k.wav"]
    assert hello.path == (CORPUS_DIR / "hello_16k.wav").resolve()
    assert (hello.bounds.start, hello.bounds.end) == (clip.speech_start_s, clip.speech_end_s)
    assert hello.clip == clip
    order = s.script[3]
    assert (order.bounds.start, order.bounds.end) == (0.3, 2.49)  # the step's override
    assert s.script[4].wait_for == ToolCallCondition(tool_call="lookupOrder") and s.script[4].timeout == 5.0
    assert isinstance(s.script[5].wait_for, AgentAudible) and s.script[5].timeout == 30.0
    barge = s.script[6]
    assert barge.barge_in == "interrupt_48k.flac" and barge.after == pytest.approx(0.8)
    assert barge.path.name == "interrupt_48k.flac" and barge.bounds.end > barge.bounds.start
    assert s.script[8] == TextStep(text="What's the status?", urgency="soon")
    transcript = s.script[9].wait_for
    assert transcript == TranscriptCondition(transcript="shipped|delivered", role="agent")
    assert transcript.regex.search("It has SHIPPED")
    assert s.script[10].wait_for == StateCondition(state="listening")
    assert s.script[11].silence == 1.5
    expect = s.script[12].expect
    assert expect[0] == TranscriptContains(transcript_contains="order", role="agent")
    assert isinstance(expect[1], TranscriptRegex) and expect[1].regex.search("order 4572")
    assert isinstance(expect[2], ToolCalled) and expect[2].with_ == {"id": "4572"}
    assert (
        isinstance(expect[3], MetricBound) and expect[3].turn == 0 and expect[3].bounds() == [("<", 1500.0)]
    )
    assert expect[4].metric == "interrupt.clear_ms" and expect[4].bounds() == [("<=", 400.0)]
    assert s.script[13].hang_up.message is None
    assert s.turn_count == 2


def test_quickstart_agent_settings_are_valid_for_the_local_server() -> None:
    [s] = load_scenarios(SCENARIOS / "quickstart.yaml")
    agent = agent_from_dict(s.call["experimentalSettings"]["uvbench"]["agent"])
    assert agent.tool_calls[0].name == "lookupOrder" and agent.tool_calls[0].turn == 2
    # What the expectations look for is what the simulated agent will say.
    assert any("4572" in reply and "shipped" in reply for reply in agent.replies)


def test_buffer_matrix_expands_to_nine() -> None:
    scenarios = load_scenarios(SCENARIOS / "buffer_matrix.yaml")
    assert len(scenarios) == 9
    assert scenarios[0].name == "buffer-matrix[clientBufferSizeMs=60,inputSampleRate=8000]"
    assert scenarios[-1].name == "buffer-matrix[clientBufferSizeMs=30000,inputSampleRate=48000]"
    seen = set()
    for s in scenarios:
        ws = s.call["medium"]["serverWebSocket"]
        assert s.variant == {
            "clientBufferSizeMs": ws["clientBufferSizeMs"],
            "inputSampleRate": ws["inputSampleRate"],
        }
        assert s.base_name == "buffer-matrix"
        seen.add((ws["clientBufferSizeMs"], ws["inputSampleRate"]))
    assert seen == {(b, r) for b in (60, 500, 30000) for r in (8000, 16000, 48000)}


def test_a_folder_loads_every_yaml_file() -> None:
    names = [s.name for s in load_scenarios(SCENARIOS)]
    assert "order-status" in names and sum(n.startswith("buffer-matrix[") for n in names) == 9
    assert len(set(names)) == len(names)


# --------------------------------------------------------------------------------------------
# Matrix and variables


def test_matrix_shorthand_and_dotted_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: order-status
        matrix:
          clientBufferSizeMs: [60, 30000]
          client.honor_clear: [true, false]
        script:
          - say: hello_16k.wav
        """,
    )
    scenarios = load_scenarios(path)
    assert [s.name for s in scenarios] == [
        "order-status[clientBufferSizeMs=60,client.honor_clear=true]",
        "order-status[clientBufferSizeMs=60,client.honor_clear=false]",
        "order-status[clientBufferSizeMs=30000,client.honor_clear=true]",
        "order-status[clientBufferSizeMs=30000,client.honor_clear=false]",
    ]
    values = [
        (s.call["medium"]["serverWebSocket"]["clientBufferSizeMs"], s.client.honor_clear) for s in scenarios
    ]
    assert values == [(60, True), (60, False), (30000, True), (30000, False)]
    # The default medium is in place before the shorthand applies.
    assert all(s.call["medium"]["serverWebSocket"]["inputSampleRate"] == 16000 for s in scenarios)
    assert scenarios[1].variant == {"clientBufferSizeMs": 60, "client.honor_clear": False}
    assert scenarios[0].matrix == {"clientBufferSizeMs": [60, 30000], "client.honor_clear": [True, False]}


def test_matrix_into_call_and_variables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: sweep
        variables: {wait: 2s}
        matrix:
          call.vadSettings.turnEndpointDelay: ["0.2s", "0.5s"]
          variables.wait: [1s, 3s]
        script:
          - say: hello_16k.wav
          - wait_for: agent_done
            timeout: ${wait}
        """,
    )
    scenarios = load_scenarios(path)
    assert len(scenarios) == 4
    first = scenarios[0]
    assert first.name == "sweep[call.vadSettings.turnEndpointDelay=0.2s,variables.wait=1s]"
    assert first.call["vadSettings"] == {"turnEndpointDelay": "0.2s"}
    assert [s.script[1].timeout for s in scenarios] == [1.0, 3.0, 1.0, 3.0]


def test_a_bad_value_from_the_matrix_points_at_the_matrix(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        matrix:
          clientBufferSizeMs: [60, -1]
          client.chunk_ms: [20, 30]
        script:
          - say: hello_16k.wav
        """,
    )
    assert found == [
        f"{path}:3:28: call.medium.serverWebSocket.clientBufferSizeMs:"
        " Ensure this value is greater than or equal to 0.",
        f"{path}:4:25: client.chunk_ms: 30 is not valid (expected 10, 20, 40 or 100)",
    ]


def test_variables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: vars
        variables: {who: Ada, t: 1.5s, n: 3, rate: 8000}
        call:
          systemPrompt: "Greet ${who}; cost $${price}."
          medium: {serverWebSocket: {inputSampleRate: "${rate}"}}
        script:
          - text: "I am ${who}, ticket ${n}"
          - silence: ${t}
          - wait_for: {silence: "${t}"}
            timeout: ${n}
        """,
    )
    [s] = load_scenarios(path)
    assert s.call["systemPrompt"] == "Greet Ada; cost ${price}."
    assert s.input_sample_rate == 8000  # a whole ${var} keeps the variable's type
    assert s.script[0].text == "I am Ada, ticket 3"
    assert s.script[1].silence == 1.5
    assert s.script[2].wait_for.silence == 1.5 and s.script[2].timeout == 3.0
    assert s.variables == {"who": "Ada", "t": "1.5s", "n": 3, "rate": 8000}


def test_parse_scenarios_several_documents() -> None:
    text = MINIMAL + "---\n" + MINIMAL.replace("name: t", "name: u")
    scenarios = parse_scenarios(text, source="inline.yaml")
    assert [s.name for s in scenarios] == ["t", "u"]
    assert scenarios[0].source == "inline.yaml"


def test_durations() -> None:
    assert duration_seconds("1.5s") == 1.5
    assert duration_seconds("200ms") == pytest.approx(0.2)
    assert duration_seconds("2m") == 120
    assert duration_seconds("1m30s") == 90
    assert duration_seconds("1h") == 3600
    assert duration_seconds(3) == 3.0 and duration_seconds(0.25) == 0.25
    for bad in ("1.5", "soon", "-1s", -1, True, "1 s s", ""):
        with pytest.raises(ValueError):
            duration_seconds(bad)


def test_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULTRAVOX_API_KEY", "secret-from-env")
    [s] = parse_scenarios(MINIMAL + "target: ultravox\n")
    assert s.target.base_url == "https://api.ultravox.ai/api" and s.target.label == "ultravox"
    assert s.target.api_key() == "secret-from-env"
    [s] = parse_scenarios(MINIMAL + "target: {base_url: 'http://localhost:9000/api/', api_key_env: MY_KEY}\n")
    assert s.target.base_url == "http://localhost:9000/api" and s.target.api_key_env == "MY_KEY"
    assert s.target.api_key() is None
    # A bare host (the address `uvbench serve` prints) means its API root; a path is kept as given.
    for given, used in [
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765/api"),
        ("https://api.ultravox.ai/", "https://api.ultravox.ai/api"),
        ("http://gateway.example/ultravox/api", "http://gateway.example/ultravox/api"),
    ]:
        [s] = parse_scenarios(MINIMAL + f"target: {{base_url: '{given}', api_key_env: MY_KEY}}\n")
        assert s.target.base_url == used


def test_client_settings() -> None:
    [s] = parse_scenarios(
        MINIMAL + "client: {ping_interval: 0, chunk_ms: 40, prebuffer_ms: 120, join_timeout: 2m}\n"
    )
    assert s.client.ping_interval is None and s.client.chunk_ms == 40
    assert s.client.prebuffer_ms == 120 and s.client.join_timeout == 120
    [s] = parse_scenarios(MINIMAL + "client: {ping_interval: null}\n")
    assert s.client.ping_interval is None


def test_audio_next_to_the_scenario_with_explicit_bounds(tmp_path: Path) -> None:
    sf.write(tmp_path / "mine.wav", np.zeros(16000, dtype=np.int16), 16000, subtype="PCM_16")
    path = write(tmp_path, "name: t\nscript:\n  - say: mine.wav\n    speech: {start: 100ms, end: 0.9}\n")
    [s] = load_scenarios(path)
    assert s.script[0].path == (tmp_path / "mine.wav").resolve()
    assert (s.script[0].bounds.start, s.script[0].bounds.end) == (0.1, 0.9)
    assert s.script[0].clip is None


def test_the_models_work_without_the_loader() -> None:
    s = Scenario.model_validate({"name": "x", "script": ["hang_up", {"say": "hello_16k.wav"}]})
    assert s.call == {"medium": {"serverWebSocket": {"inputSampleRate": 16000}}}
    assert isinstance(s.script[0], HangUpStep)
    with pytest.raises(ValidationError, match="turn 1 has not happened by this step"):
        Scenario.model_validate(
            {
                "name": "x",
                "script": [
                    {"say": "hello_16k.wav"},
                    {"expect": [{"metric": "turn.ttfa_ms", "turn": 1, "<": 1}]},
                ],
            }
        )


# --------------------------------------------------------------------------------------------
# Every problem: exact text and position


def test_unknown_keys_with_suggestions(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        descripton: x
        client:
          honour_clear: false
          zzz: 1
        script:
          - say: hello_16k.wav
            timout: 3s
        """,
    )
    assert found == [
        f'{path}:2:1: descripton: unknown key (did you mean "description"?)',
        f'{path}:4:3: client.honour_clear: unknown key (did you mean "honor_clear"?)',
        f"{path}:5:3: client.zzz: unknown key (expected one of: chunk_ms, honor_clear, prebuffer_ms,"
        " ping_interval, record, join_timeout)",
        f"{path}:8:5: script[0].timout: unknown key (expected one of: say, speech, caller, name)",
    ]


def test_unknown_and_malformed_steps(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        script:
          - sya: hello_16k.wav
          - {say: hello_16k.wav, text: hi}
          - agent_done
          - 42
          - wait_for: agent_speaking
          - expect: [{transcript_has: x}]
        """,
    )
    assert found == [
        f'{path}:3:5: script[0].sya: unknown step kind (did you mean "say"?)',
        f"{path}:4:26: script[1].text: a second step kind in one step (expected one per item;"
        ' this one is already "say")',
        f'{path}:5:5: script[2]: unknown step "agent_done" (expected wait_for: agent_done)',
        f"{path}:6:5: script[3]: 42 is not a step (expected a mapping such as say: file.wav,"
        " or the bare word hang_up)",
        f'{path}:7:15: script[4].wait_for: unknown wait_for condition "agent_speaking" (expected'
        " agent_audible, agent_done, or a mapping with state, transcript, tool_call or silence)",
        f"{path}:8:15: script[5].expect[0].transcript_has: unknown expectation kind"
        ' (did you mean "transcript_contains"?)',
    ]


def test_wrong_types_and_values(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: Order Status
        client: {chunk_ms: 25, record: maybe}
        tools: [lookupOrder]
        script:
          - text: hi
            urgency: now
          - wait_for: {transcript: "(", role: bot}
        """,
    )
    assert found == [
        f'{path}:1:7: name: "Order Status" is not valid (expected a name matching [a-z0-9_-]+)',
        f"{path}:2:20: client.chunk_ms: 25 is not valid (expected 10, 20, 40 or 100)",
        f'{path}:2:32: client.record: "maybe" is not valid (expected "all", "failed" or "none")',
        f"{path}:3:1: tools: a list is not valid (expected a mapping)",
        f'{path}:6:14: script[0].urgency: "now" is not valid (expected "immediate", "soon" or "later")',
        f'{path}:7:28: script[1].wait_for.transcript: "(" is not a valid regular expression: missing ),'
        " unterminated subpattern at position 0 (expected a Python regular expression)",
        f'{path}:7:39: script[1].wait_for.role: "bot" is not valid (expected "agent" or "user")',
    ]


def test_missing_keys(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        description: no name, no script
        """,
    )
    assert found == [
        f'{path}:1:1: missing key "name" (required: name, script)',
        f'{path}:1:1: missing key "script" (required: name, script)',
    ]
    path, found = problems(
        tmp_path,
        """\
        name: t
        script:
          - say: hello_16k.wav
            speech: {start: 0.1s}
        """,
    )
    assert found == [f'{path}:4:5: script[0].speech: missing key "end" (required: start, end)']


def test_missing_audio_file(tmp_path: Path) -> None:
    path, found = problems(tmp_path, "name: t\nscript:\n  - say: helo_16k.wav\n  - barge_in: nothing.wav\n")
    assert found == [
        f'{path}:3:10: script[0].say: audio file "helo_16k.wav" not found (expected a file next to the'
        ' scenario or in audio_corpus/; did you mean "hello_16k.wav"?)',
        f'{path}:4:15: script[1].barge_in: audio file "nothing.wav" not found (expected a file next to the'
        " scenario or in audio_corpus/)",
    ]


def test_audio_without_speech_bounds(tmp_path: Path) -> None:
    sf.write(tmp_path / "mine.wav", np.zeros(8000, dtype=np.int16), 8000, subtype="PCM_16")
    path, found = problems(
        tmp_path,
        """\
        name: t
        script:
          - say: mine.wav
          - say: mine.wav
            speech: {start: 0.2s, end: 3s}
          - say: mine.wav
            speech: {start: 0.5s, end: 0.4s}
        """,
    )
    assert found == [
        f'{path}:3:10: script[0].say: no speech bounds for "mine.wav": it is in no corpus manifest'
        " (expected speech: {start: ..., end: ...} in this step)",
        f'{path}:5:32: script[1].speech.end: speech end 3s is past the end of "mine.wav" (1s)'
        " (expected a time inside the file)",
        f"{path}:7:32: script[2].speech.end: end 0.4s is not after start 0.5s (expected start < end)",
    ]


def test_durations_that_do_not_parse(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        client: {ping_interval: 1 sec}
        tools:
          lookupOrder: {result: x, delay: fast}
        script:
          - say: hello_16k.wav
          - wait_for: agent_done
            timeout: -2
          - barge_in: interrupt_48k.flac
            after: "800"
        """,
    )
    assert found == [
        f'{path}:2:25: client.ping_interval: "1 sec" is not a duration'
        ' (expected e.g. "1.5s", "200ms", "2m" or a number of seconds)',
        f'{path}:4:35: tools.lookupOrder.delay: "fast" is not a duration'
        ' (expected e.g. "1.5s", "200ms", "2m" or a number of seconds)',
        f'{path}:8:14: script[1].timeout: -2 is not a duration (expected e.g. "1.5s", "200ms", "2m"'
        " or a number of seconds, not negative)",
        f'{path}:10:12: script[2].after: "800" is not a duration'
        ' (expected e.g. "1.5s", "200ms", "2m" or a number of seconds)',
    ]


def test_undefined_variables(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        variables: {greeting_timeout: 10s}
        script:
          - wait_for: agent_done
            timeout: ${greeting_timout}
          - text: "hello ${who}"
        """,
    )
    assert found == [
        f"{path}:5:14: script[0].timeout: undefined variable ${{greeting_timout}}"
        " (did you mean ${greeting_timeout}?)",
        f"{path}:6:11: script[1].text: undefined variable ${{who}} (expected one of: greeting_timeout)",
    ]
    path, found = problems(tmp_path, "name: t\nscript:\n  - silence: ${pause}\n")
    assert found == [
        f"{path}:3:14: script[0].silence: undefined variable ${{pause}}"
        " (no variables are defined; expected it under variables:)"
    ]


def test_matrix_keys_that_do_not_exist(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        matrix:
          client.honour_clear: [true, false]
          clientBufferSize: [60]
          bogus: [1]
          call.vadSettings.turnEndpointDelays: ["0.2s"]
          script.5.timeout: [1s]
          inputSampleRate: []
        script:
          - say: hello_16k.wav
        """,
    )
    assert found == [
        f'{path}:3:3: matrix["client.honour_clear"]: no such setting (did you mean "client.honor_clear"?)',
        f'{path}:4:3: matrix.clientBufferSize: no such setting (did you mean "clientBufferSizeMs"?)',
        f"{path}:5:3: matrix.bogus: no such setting (expected inputSampleRate, outputSampleRate,"
        " clientBufferSizeMs or a dotted path into the scenario such as client.honor_clear)",
        f'{path}:6:3: matrix["call.vadSettings.turnEndpointDelays"]: no such setting'
        ' (did you mean "call.vadSettings.turnEndpointDelay"?)',
        f'{path}:7:3: matrix["script.5.timeout"]: script has no item 5 (expected an index below 1)',
        f"{path}:8:3: matrix.inputSampleRate: a list is not valid (expected a non-empty list of values)",
    ]


def test_unknown_metrics_and_bad_bounds(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        script:
          - say: hello_16k.wav
          - expect:
              - {metric: turn.ttfa, "<": 1500}
              - {metric: turn.latency, "<": 1500}
              - {metric: call.join_ms}
              - {metric: interrupt.clear_ms, turn: 0, "<": 400}
              - {metric: call.outcome, "<": 1}
              - {metric: turn.ttfa_ms, turn: 1, "<": 1500}
        """,
    )
    assert found == [
        f'{path}:5:18: script[1].expect[0].metric: unknown metric "turn.ttfa" (did you mean "turn.ttfa_ms"?)',
        f'{path}:6:18: script[1].expect[1].metric: unknown metric "turn.latency"'
        " (expected a metric of docs/metrics.md, e.g. turn.ttfa_ms)",
        f"{path}:7:9: script[1].expect[2]: no bound"
        ' (expected one or more of "<", "<=", ">", ">=", "==", "!=")',
        f"{path}:8:44: script[1].expect[3].turn: turn only applies to turn.* metrics"
        " (expected no turn for interrupt.clear_ms)",
        f'{path}:9:37: script[1].expect[4]["<"]: call.outcome is text (expected == or != for it)',
        f"{path}:10:38: script[1].expect[5].turn: turn 1 has not happened by this step"
        " (expected 0: 1 say step before it)",
    ]


def test_literal_api_key(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        target:
          base_url: https://api.ultravox.ai/api
          api_key: Zk9Ht7Wx.abcdef
        script:
          - say: hello_16k.wav
        """,
    )
    assert found == [
        f"{path}:4:3: target.api_key: a literal API key does not belong in a scenario file"
        " (expected api_key_env: the name of an environment variable holding the key)"
    ]
    path, found = problems(
        tmp_path, MINIMAL + "target: {base_url: 'https://x.example/api', api_key_env: Zk9Ht7Wx.abcdef}\n"
    )
    assert found == [
        f'{path}:4:58: target.api_key_env: "Zk9Ht7Wx.abcdef" is not an environment variable name'
        " (expected a name like MY_API_KEY; put the key itself in that variable, never in the file)"
    ]
    path, found = problems(tmp_path, MINIMAL + "target: ultravx\n")
    assert found == [
        f'{path}:4:9: target: unknown target "ultravx" (did you mean "ultravox"?'
        " expected local, ultravox or {base_url: ..., api_key_env: ...})"
    ]


def test_call_errors_point_at_their_line(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        call:
          systemPromt: hi
          temperature: 3
          medium: {serverWebSocket: {inputSampleRate: 4000}}
          selectedTools:
            - temporaryTool: {modelToolName: lookupOrder, description: x}
        script:
          - say: hello_16k.wav
        """,
    )
    assert found == [
        f'{path}:3:3: call.systemPromt: unknown key (did you mean "systemPrompt"?)',
        f"{path}:4:16: call.temperature: Ensure this value is less than or equal to 1.",
        f"{path}:5:47: call.medium.serverWebSocket.inputSampleRate: Ensure this sample rate is between"
        " 8000 and 48000 Hz (the range this server supports).",
        f"{path}:7:7: call.selectedTools[0].temporaryTool: Exactly one implementation"
        " (http, client or dataConnection) must be set.",
    ]
    path, found = problems(
        tmp_path,
        """\
        name: t
        call:
          medium:
            server_web_socket:
              output_sample_rate: 24000
        script:
          - say: hello_16k.wav
        """,
    )
    assert found == [
        f'{path}:4:5: call.medium.server_web_socket: missing key "inputSampleRate"'
        " (required by POST /api/calls)"
    ]


def test_call_cross_checks(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        prior_call_id: 2b7c8a4e-9d55-4c39-8d0e-1a6f0c3b9e21
        call:
          medium: {webRtc: {}}
          initialMessages: [{role: MESSAGE_ROLE_USER, text: hi}]
          selectedTools: [{temporaryTool: {modelToolName: lookupOrder, client: {}}}]
        tools:
          lookupOrdr: {result: x}
          otherTool: {result: y}
        script:
          - say: hello_16k.wav
          - wait_for: {tool_call: lookupOrdr}
          - expect: [{tool_called: nope}]
        """,
    )
    assert found == [
        f"{path}:4:3: call.medium: uvbench streams audio over a server websocket"
        " (expected medium: {serverWebSocket: {inputSampleRate: ...}})",
        f"{path}:5:3: call.initialMessages: initialMessages may not be set together with priorCallId.",
        f'{path}:8:3: tools.lookupOrdr: tool "lookupOrdr" is not among call.selectedTools'
        ' (did you mean "lookupOrder"?)',
        f'{path}:12:27: script[1].wait_for.tool_call: tool "lookupOrdr" is not among call.selectedTools'
        ' (did you mean "lookupOrder"?)',
        f'{path}:13:28: script[2].expect[0].tool_called: tool "nope" is not among call.selectedTools'
        " (expected one of: lookupOrder)",
    ]


def test_yaml_problems(tmp_path: Path) -> None:
    path, found = problems(tmp_path, "name: t\nname: u\nscript:\n  - say: hello_16k.wav\n")
    assert found == [f"{path}:2:1: name: duplicate key (expected each key once; it is first set on line 1)"]
    path, found = problems(tmp_path, "name: t\nscript: [\n")
    assert found == [
        f"{path}:2:9: invalid YAML: in the [...] that opens here, expected the node content, but found"
        " '<stream end>' at line 3, column 1 (expected items separated by , and a closing ])"
    ]
    path, found = problems(tmp_path, "")
    assert found == [f"{path}:1:1: empty file (expected a scenario: a mapping with name and script)"]
    path, found = problems(tmp_path, "- a\n- b\n")
    assert found == [f"{path}:1:1: a list is not a scenario (expected a mapping with name and script)"]
    path, found = problems(tmp_path, "name: t\nscript: !include x.yaml\n")
    assert found == [
        f"{path}:2:9: script: could not determine a constructor for the tag '!include'"
        " (expected a plain YAML value)"
    ]


def test_reserved_keys_and_duplicate_names(tmp_path: Path) -> None:
    path, found = problems(tmp_path, MINIMAL + "variant: {a: 1}\n")
    assert found[0].startswith(f"{path}:4:1: variant: unknown key (set by the loader; expected one of: name,")
    write(tmp_path, MINIMAL, "a.yaml")
    write(tmp_path, MINIMAL, "b.yaml")
    (tmp_path / "s.yaml").unlink()
    with pytest.raises(ScenarioError) as info:
        load_scenarios(tmp_path)
    assert info.value.problems == [
        f'{tmp_path / "b.yaml"}:1:7: name: "t" is already used at {tmp_path / "a.yaml"}:1'
        " (expected unique scenario names)"
    ]


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenarios(tmp_path / "nope.yaml")
    assert info.value.problems == [
        f"{tmp_path / 'nope.yaml'}: no such file or folder"
        " (expected a scenario .yaml file or a folder of them)"
    ]


def test_several_problems_are_all_reported_in_file_order(tmp_path: Path) -> None:
    write(tmp_path, "name: fine\nscript: [hang_up]\n", "a.yaml")
    write(
        tmp_path,
        """\
        name: b
        client: {chunk_ms: 7}
        call:
          medium: {serverWebSocket: {inputSampleRate: 16000, clientBufferSizeMs: lots}}
        script:
          - say: nowhere.wav
          - silence: ${nothing}
          - expect: [{metric: nope}]
        """,
        "b.yaml",
    )
    write(tmp_path, "name: c\nscript:\n  - wait_for: {state: dancing}\n", "c.yaml")
    with pytest.raises(ScenarioError) as info:
        load_scenarios(tmp_path)
    b, c = tmp_path / "b.yaml", tmp_path / "c.yaml"
    assert info.value.problems == [
        f"{b}:2:20: client.chunk_ms: 7 is not valid (expected 10, 20, 40 or 100)",
        f"{b}:4:74: call.medium.serverWebSocket.clientBufferSizeMs: A valid integer is required.",
        f'{b}:6:10: script[0].say: audio file "nowhere.wav" not found (expected a file next to the'
        " scenario or in audio_corpus/)",
        f"{b}:7:14: script[1].silence: undefined variable ${{nothing}}"
        " (no variables are defined; expected it under variables:)",
        f'{b}:8:23: script[2].expect[0].metric: unknown metric "nope"'
        " (expected a metric of docs/metrics.md, e.g. turn.ttfa_ms)",
        f'{c}:3:23: script[0].wait_for.state: "dancing" is not valid'
        ' (expected "idle", "listening", "thinking" or "speaking")',
    ]


def test_tool_answers(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        tools:
          a: {result: x, error: undefined}
          b: {delay: 1s}
          c: {result: x, message: oops}
          d: {error: nope}
        script: [hang_up]
        """,
    )
    assert found == [
        f"{path}:3:25: tools.a.error: both result and error are set (expected one of them)",
        f"{path}:4:3: tools.b: no answer (expected result: ... or error: undefined|implementation-error)",
        f"{path}:5:27: tools.c.message: message is only sent with an error (expected error: ... next to it)",
        f'{path}:6:14: tools.d.error: "nope" is not valid (expected "undefined" or "implementation-error")',
    ]
    [s] = parse_scenarios("name: t\ntools: {a: {result: {status: ok}}}\nscript: [hang_up]\n")
    assert json.loads(s.tools["a"].result) == {"status": "ok"}


# --------------------------------------------------------------------------------------------
# JSON Schema


def test_json_schema_is_valid_and_describes_the_script() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    script = schema["properties"]["script"]
    assert script["type"] == "array" and script["description"] == "The user's steps, in order."
    members = script["items"]["oneOf"]
    refs = {m["$ref"].rsplit("/", 1)[-1] for m in members if "$ref" in m}
    assert refs == {"SayStep", "BargeInStep", "TextStep", "SilenceStep", "WaitForStep", "ExpectStep"}
    assert any({"const": "hang_up"} in m.get("anyOf", []) for m in members)
    say = schema["$defs"]["SayStep"]
    assert say["required"] == ["say"] and "audio_corpus" in say["properties"]["say"]["description"]
    assert "variant" not in schema["properties"] and "source" not in schema["properties"]
    metric = schema["$defs"]["MetricBound"]["properties"]["metric"]
    assert metric["enum"] == list(METRIC_NAMES)
    assert {"<", "<=", ">", ">=", "==", "!="} <= set(schema["$defs"]["MetricBound"]["properties"])


@pytest.mark.parametrize("name", ["quickstart.yaml", "buffer_matrix.yaml"])
def test_shipped_files_match_the_json_schema(name: str) -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    data = yaml.safe_load((SCENARIOS / name).read_text())
    assert [e.message for e in validator.iter_errors(data)] == []
    assert list(validator.iter_errors({"name": "x", "script": [{"sya": "a.wav"}]}))


# --------------------------------------------------------------------------------------------
# Step names


def test_steps_take_a_name_reported_under_it(tmp_path: Path) -> None:
    [s] = load_scenarios(
        write(
            tmp_path,
            """\
            name: t
            script:
              - {say: hello_16k.wav, name: greet_back}
              - {wait_for: agent_done, name: heard.it}
              - {expect: [{transcript_contains: hi}], name: Said-Hi}
              - {hang_up: null, name: bye}
              - say: hello_16k.wav
            """,
        )
    )
    assert [step.name for step in s.script] == ["greet_back", "heard.it", "Said-Hi", "bye", None]
    schema = json_schema()
    assert "name" in json.dumps(schema["$defs"]["SayStep"]["properties"])


def test_step_names_are_unique_tag_values_and_not_unnamed_labels(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        name: t
        script:
          - {say: hello_16k.wav, name: ask}
          - {say: hello_16k.wav, name: ask}
          - {say: hello_16k.wav, name: step3}
          - {say: hello_16k.wav, name: "two words"}
        """,
    )
    unique = "already names step 0 (expected a name unique in the script)"
    assert f'{path}:4:32: script[1].name: "ask" {unique}' in found
    assert any("script[2].name" in line and "how unnamed steps are reported" in line for line in found)
    assert any("script[3].name" in line and "two words" in line for line in found), found
    assert len(found) == 3


def test_caller_and_network_keys_in_the_schema_and_through_the_matrix() -> None:
    schema = json_schema()
    props = schema["properties"]
    assert "caller" in props and "network" in props
    (variant,) = parse_scenarios(
        textwrap.dedent(
            """
            name: keys
            caller: {noise: {file: brown.flac, snr_db: 15}, codec: gsm}
            network: {jitter: {mean_ms: 10}}
            matrix: {caller.gain_db: [-3]}
            script:
              - say: hello_16k.wav
                caller: {reverb: {room_size: 0.2, wet: 0.1}}
            """
        ),
        source="k.yaml",
        base_dir=".",
    )
    assert variant.name == "keys[caller.gain_db=-3]"
    assert variant.caller_label == "gain=-3dB+snr=15dB+gsm-fr"
    assert variant.network_label == "jitter=10ms"
    assert variant.script[0].caller.label == "reverb=0.2/0.1"
    assert (
        parse_scenarios("name: k\nscript: [say: yes_16k.wav]", source="k.yaml", base_dir=".")[0].caller
        is None
    )
