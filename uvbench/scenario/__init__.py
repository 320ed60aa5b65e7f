"""Scenario files: YAML -> validated `Scenario` objects (see scenarios/quickstart.yaml); their
`load:` and `thresholds:` (load_config.py); suite files naming several of them (suite.py).

from uvbench.scenario import load_scenarios, ScenarioError
try:
    scenarios = load_scenarios("scenarios/")      # a file or a folder of *.yaml
except ScenarioError as exc:
    print(*exc.problems, sep="\\n")               # file:line:col: what is wrong (what is expected)
"""

from __future__ import annotations

from typing import Any

from uvbench.scenario.base import JSON_SCHEMA_DIALECT
from uvbench.scenario.load_config import EXECUTORS, CliLoad, LoadConfigError, LoadSpec, apply_cli
from uvbench.scenario.loader import (
    ScenarioError,
    is_suite_file,
    load_scenarios,
    parse_scenarios,
    scenario_files,
)
from uvbench.scenario.model import (
    AGENT_STATES,
    DEFAULT_MEDIUM,
    DEFAULT_WAIT_TIMEOUT,
    MEDIUM_SHORTHANDS,
    METRIC_NAMES,
    TEXT_METRICS,
    ULTRAVOX_API_KEY_ENV,
    ULTRAVOX_BASE_URL,
    AgentAudible,
    AgentDone,
    BargeInStep,
    ClientSettings,
    Expectation,
    ExpectStep,
    HangUpOptions,
    HangUpStep,
    MetricBound,
    SayStep,
    Scenario,
    SilenceCondition,
    SilenceStep,
    SpeechBounds,
    StateCondition,
    Step,
    Target,
    TextStep,
    ToolAnswer,
    ToolCallCondition,
    ToolCalled,
    TranscriptCondition,
    TranscriptContains,
    TranscriptRegex,
    WaitCondition,
    WaitForStep,
    duration_seconds,
)
from uvbench.scenario.suite import LoadedSuite, Suite, SuiteEntry, load_suite, suite_json_schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a scenario file, for `uvbench schema` and editors."""
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        **schema,
        "title": "uvbench scenario",
    }


__all__ = [
    "AGENT_STATES",
    "EXECUTORS",
    "CliLoad",
    "LoadConfigError",
    "LoadSpec",
    "LoadedSuite",
    "Suite",
    "SuiteEntry",
    "apply_cli",
    "is_suite_file",
    "load_suite",
    "suite_json_schema",
    "DEFAULT_MEDIUM",
    "DEFAULT_WAIT_TIMEOUT",
    "MEDIUM_SHORTHANDS",
    "METRIC_NAMES",
    "TEXT_METRICS",
    "ULTRAVOX_API_KEY_ENV",
    "ULTRAVOX_BASE_URL",
    "AgentAudible",
    "AgentDone",
    "BargeInStep",
    "ClientSettings",
    "ExpectStep",
    "Expectation",
    "HangUpOptions",
    "HangUpStep",
    "MetricBound",
    "SayStep",
    "Scenario",
    "ScenarioError",
    "SilenceCondition",
    "SilenceStep",
    "SpeechBounds",
    "StateCondition",
    "Step",
    "Target",
    "TextStep",
    "ToolAnswer",
    "ToolCallCondition",
    "ToolCalled",
    "TranscriptCondition",
    "TranscriptContains",
    "TranscriptRegex",
    "WaitCondition",
    "WaitForStep",
    "duration_seconds",
    "json_schema",
    "load_scenarios",
    "parse_scenarios",
    "scenario_files",
]
