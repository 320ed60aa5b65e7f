"""The validated form of a scenario file: pydantic models, frozen, unknown keys rejected.

A scenario says which agent to call (`target`), how to create the call (`call`, the body of
POST /api/calls), how the simulated client behaves (`client`), how it answers client tools
(`tools`) and what the user does and checks, step by step (`script`). The loader
(`uvbench.scenario.loader`) turns YAML into these models and reports every problem with its
file, line and column; the models can also be built directly from plain data.

Durations are float seconds after validation. Audio steps resolve their file and speech bounds
during validation (`SayStep.path`, `SayStep.bounds`), so the call engine never touches the
filesystem to learn what it will send.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import uuid
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import soundfile as sf
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from uvbench.audio.corpus import CORPUS_DIR, MANIFEST_NAME, Clip, load_manifest
from uvbench.audio.impairment import Bursts, Jitter, Mix, Stalls
from uvbench.audio.impairment import Spec as ImpairmentSpec
from uvbench.audio.impairment import label as impairment_label
from uvbench.audio.transforms import Chain, Codec, Gain, Noise, Reverb, Telephone
from uvbench.metrics import GLOSSARY
from uvbench.protocol.schema import MSG_PRIOR_CALL, RequestValidationError, validate_start_call
from uvbench.scenario.base import (  # noqa: F401 (re-exported: the names other modules import from here)
    DURATION_EXPECTED,
    Duration,
    _Model,
    did_you_mean,
    duration_seconds,
    problem,
    show,
)
from uvbench.scenario.load_config import LOAD_TAGS, FileLoad, Thresholds

# --------------------------------------------------------------------------------------------
# Vocabulary

# Every figure uvbench computes, by its exact name (docs/metrics.md; the metrics module's glossary is the
# one list). `expect: [{metric: ...}]` accepts these only.
METRIC_NAMES: tuple[str, ...] = tuple(GLOSSARY)
# Metrics whose value is text (compare them with == or != only).
TEXT_METRICS: tuple[str, ...] = ("call.end_reason", "call.outcome")

# Agent states of the `state` data message (as Ultravox documents them).
AGENT_STATES: tuple[str, ...] = ("idle", "listening", "thinking", "speaking")

ULTRAVOX_BASE_URL = "https://api.ultravox.ai/api"
ULTRAVOX_API_KEY_ENV = "ULTRAVOX_API_KEY"

# What `call.medium` becomes when a scenario does not set it: uvbench only speaks serverWebSocket.
DEFAULT_MEDIUM: dict[str, Any] = {"serverWebSocket": {"inputSampleRate": 16000}}
# `matrix` shorthands: bare keys of call.medium.serverWebSocket.
MEDIUM_SHORTHANDS: tuple[str, ...] = ("inputSampleRate", "outputSampleRate", "clientBufferSizeMs")

DEFAULT_WAIT_TIMEOUT = 30.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NAME_PATTERN = r"^[a-z0-9_-]+$"


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise problem(
            f"{show(value)} is not a valid regular expression: {exc} (expected a Python regular expression)"
        ) from None
    return value


Role = Literal["agent", "user"]


# --------------------------------------------------------------------------------------------
# Target, client, tools


class Target(_Model):
    """Where calls go. `local` (the default) is uvbench's embedded Ultravox-compatible server;
    `ultravox` is https://api.ultravox.ai/api with the key from $ULTRAVOX_API_KEY; a mapping
    names any compatible API. API keys come only from the environment."""

    base_url: str | None = None
    """The API's base URL, e.g. https://api.ultravox.ai/api; unset = the embedded local server."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data: Any) -> Any:
        if data is None or data == "local":
            return {}
        if data == "ultravox":
            return {"base_url": ULTRAVOX_BASE_URL, "api_key_env": ULTRAVOX_API_KEY_ENV}
        if isinstance(data, str):
            hint = did_you_mean(data, ("local", "ultravox"))
            raise problem(
                f"unknown target {show(data)} ("
                + (hint + " " if hint else "")
                + "expected local, ultravox or {base_url: ..., api_key_env: ...})"
            )
        return data

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise problem(f"{show(value)} is not a URL (expected http://host[:port]/path or https://...)")
        if value is None:
            return value
        value = value.rstrip("/")
        # A bare host means its API root, as `uvbench calls --target` reads it: the address
        # `uvbench serve` prints works, and so does https://api.ultravox.ai.
        return value + "/api" if re.match(r"^https?://[^/]+$", value) else value

    @field_validator("api_key_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise problem(
                f"{show(value)} is not an environment variable name (expected a name like MY_API_KEY;"
                " put the key itself in that variable, never in the file)"
            )
        return value

    @property
    def is_local(self) -> bool:
        """True for the embedded server (no base_url)."""
        return self.base_url is None

    @property
    def label(self) -> str:
        """ "local", "ultravox" or the base URL."""
        if self.base_url is None:
            return "local"
        if self.base_url == ULTRAVOX_BASE_URL:
            return "ultravox"
        return self.base_url

    def api_key(self) -> str | None:
        """The API key from the environment (None if no variable is named or it is unset)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


_TARGET_SCHEMA = {
    "description": Target.__doc__.replace("\n    ", " ") if Target.__doc__ else "",
    "anyOf": [
        {"enum": ["local", "ultravox"]},
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "base_url": {"type": "string", "pattern": "^https?://", "description": "The API's base URL."},
                "api_key_env": {
                    "type": "string",
                    "pattern": _ENV_NAME.pattern,
                    "description": "Name of the environment variable holding the API key.",
                },
            },
        },
    ],
}


class ClientSettings(_Model):
    """How the simulated client streams, listens and records."""

    chunk_ms: Literal[10, 20, 40, 100] = 20
    """Size of each user audio chunk sent on the socket, in ms."""
    honor_clear: bool = True
    """Drop buffered agent audio on playback_clear_buffer (false: keep playing, like a naive client)."""
    prebuffer_ms: Annotated[float, Field(ge=0)] = 0
    """Playback of an utterance starts once this much agent audio is buffered (or the utterance ended)."""
    ping_interval: Duration | None = 1.0
    """Interval of data-message pings that measure the round trip; 0 or null disables them."""
    record: Literal["all", "failed", "none"] = "all"
    """Which calls keep their stereo recording (left: the user as sent, right: the agent as heard,
    FLAC) and the server's own recording: every call, only calls that did not complete, or none.
    (true and false still mean all and none.)"""
    join_timeout: Duration = 10.0
    """How long to wait for the websocket to open."""

    @field_validator("ping_interval")
    @classmethod
    def _ping_off(cls, value: float | None) -> float | None:
        return None if not value else value

    @field_validator("record", mode="before")
    @classmethod
    def _record_bool(cls, value: Any) -> Any:
        return {True: "all", False: "none"}.get(value, value) if isinstance(value, bool) else value


def _json_text(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value


class ToolAnswer(_Model):
    """How the client answers an invocation of one client tool (client_tool_result)."""

    result: Annotated[str | None, BeforeValidator(_json_text)] = None
    """The result text (a mapping or list is sent as its JSON text)."""
    error: Literal["undefined", "implementation-error"] | None = None
    """Answer with this errorType instead of a result."""
    message: str | None = None
    """errorMessage sent with `error` (not shown to the model)."""
    delay: Duration = 0.0
    """Wait this long after the invocation before answering."""
    response_type: Literal["tool-response", "hang-up", "new-stage", "send-to-thread"] | None = None
    """responseType of the result; unset = the server's default (tool-response)."""
    agent_reaction: Literal["speaks", "listens", "speaks-once"] | None = None
    """agentReaction of the result; unset = the server's default (speaks)."""
    update_call_state: dict[str, Any] | None = None
    """updateCallState of the result."""

    @model_validator(mode="after")
    def _one_answer(self) -> ToolAnswer:
        if self.result is not None and self.error is not None:
            raise problem("both result and error are set (expected one of them)", at="error")
        if self.result is None and self.error is None:
            raise problem("no answer (expected result: ... or error: undefined|implementation-error)")
        if self.message is not None and self.error is None:
            raise problem("message is only sent with an error (expected error: ... next to it)", at="message")
        return self

    def message_fields(self) -> dict[str, Any]:
        """The client_tool_result fields (without type and invocationId)."""
        fields: dict[str, Any] = {}
        if self.error is not None:
            fields["errorType"] = self.error
            if self.message is not None:
                fields["errorMessage"] = self.message
        else:
            fields["result"] = self.result
        if self.response_type is not None:
            fields["responseType"] = self.response_type
        if self.agent_reaction is not None:
            fields["agentReaction"] = self.agent_reaction
        if self.update_call_state is not None:
            fields["updateCallState"] = copy.deepcopy(self.update_call_state)
        return fields


# --------------------------------------------------------------------------------------------
# Audio files


class SpeechBounds(_Model):
    """Where the speech in an audio file starts and ends, in seconds from the file's start."""

    start: Duration
    """Time of the first speech sample."""
    end: Duration
    """Time just after the last speech sample."""

    @model_validator(mode="after")
    def _ordered(self) -> SpeechBounds:
        if self.end <= self.start:
            raise problem(
                f"end {self.end:g}s is not after start {self.start:g}s (expected start < end)", at="end"
            )
        return self


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


@functools.lru_cache(maxsize=64)
def _manifest(directory: str, mtime_ns: int) -> dict[str, Clip]:
    return load_manifest(Path(directory))


def manifest_clip(path: Path) -> Clip | None:
    """The manifest entry of an audio file, from the manifest.json next to it (if any)."""
    manifest_path = path.parent / MANIFEST_NAME
    try:
        mtime = manifest_path.stat().st_mtime_ns
    except OSError:
        return None
    clip = _manifest(str(path.parent), mtime).get(path.name)
    return clip


def resolve_audio(name: str, base_dir: Path) -> Path | None:
    """An audio file named in a step: relative to the scenario's folder, then audio_corpus/."""
    given = Path(name).expanduser()
    candidates = [given] if given.is_absolute() else [base_dir / given, CORPUS_DIR / given]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return None


def _audio_names(*directories: Path) -> list[str]:
    names: list[str] = []
    for directory in directories:
        try:
            names += [p.name for p in sorted(directory.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES]
        except OSError:
            continue
    return names


STEP_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
"""A step's `name:`, a tag value in reports and thresholds (`turn.ttfa_ms{turn:ask_order}`)."""
UNNAMED_LABEL = re.compile(r"^step\d+$")
"""What an unnamed step is called in reports (`step3`): no step may take such a name."""


class _Step(_Model):
    name: Annotated[str, Field(pattern=STEP_NAME_PATTERN)] | None = None
    """A name for the step, unique in the script: its figures and checks are reported under it
    (a say step's under `turn.*{turn:<name>}`); unnamed steps are reported as step<index>."""


class _AudioStep(_Step):
    _file_field: ClassVar[str] = "say"
    _path: Path | None = PrivateAttr(default=None)
    _bounds: SpeechBounds | None = PrivateAttr(default=None)
    _clip: Clip | None = PrivateAttr(default=None)

    @property
    def file(self) -> str:
        return getattr(self, self._file_field)

    @property
    def path(self) -> Path:
        """The audio file, resolved (absolute)."""
        assert self._path is not None
        return self._path

    @property
    def bounds(self) -> SpeechBounds:
        """Speech bounds in seconds within the file: the step's `speech`, else the manifest's."""
        assert self._bounds is not None
        return self._bounds

    @property
    def clip(self) -> Clip | None:
        """The corpus manifest entry of the file, if it has one."""
        return self._clip

    @model_validator(mode="after")
    def _clip_only(self) -> _AudioStep:
        caller = getattr(self, "caller", None)
        if caller is not None and caller.noise is not None:
            raise problem(
                "a step cannot set noise: the noise bed runs over the whole call, silences included"
                " (expected caller: {noise: ...} at the scenario's top level; a step may set gain_db,"
                " reverb, telephone and codec)",
                at="caller.noise",
            )
        return self

    def clip_caller(self, scenario_caller: CallerAudio | None) -> CallerAudio | None:
        """The caller audio of this step's clip: the step's own `caller`, else the scenario's."""
        own = getattr(self, "caller", None)
        return own if own is not None else scenario_caller

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> _AudioStep:
        field = self._file_field
        name = self.file
        base_dir = Path((info.context or {}).get("base_dir") or Path.cwd())
        path = resolve_audio(name, base_dir)
        if path is None:
            hint = did_you_mean(Path(name).name, _audio_names(base_dir, CORPUS_DIR))
            raise problem(
                f"audio file {show(name)} not found (expected a file next to the scenario or in"
                f" audio_corpus/{'; ' + hint if hint else ''})",
                at=field,
            )
        clip = manifest_clip(path)
        speech = getattr(self, "speech", None)
        if speech is None:
            if clip is None:
                raise problem(
                    f"no speech bounds for {show(name)}: it is in no corpus manifest"
                    " (expected speech: {start: ..., end: ...} in this step)",
                    at=field,
                )
            bounds = SpeechBounds(start=clip.speech_start_s, end=clip.speech_end_s)
        else:
            bounds = speech
            try:
                length = sf.info(str(path)).duration
            except (RuntimeError, sf.LibsndfileError) as exc:
                raise problem(
                    f"{show(name)} is not a readable audio file: {exc} (expected WAV or FLAC)", at=field
                ) from None
            if bounds.end > length + 1e-6:
                raise problem(
                    f"speech end {bounds.end:g}s is past the end of {show(name)} ({length:g}s)"
                    " (expected a time inside the file)",
                    at="speech.end",
                )
        self._path = path
        self._bounds = bounds
        self._clip = clip
        return self


# --------------------------------------------------------------------------------------------
# wait_for conditions


class AgentAudible(_Model):
    """The listener hears the agent (its first non-silent sample)."""

    @model_validator(mode="before")
    @classmethod
    def _word(cls, data: Any) -> Any:
        return {} if data == "agent_audible" else data


class AgentDone(_Model):
    """The agent's current or next utterance finished (final agent transcript or state back to listening)."""

    @model_validator(mode="before")
    @classmethod
    def _word(cls, data: Any) -> Any:
        return {} if data == "agent_done" else data


class StateCondition(_Model):
    """The agent's state (the `state` data message) becomes this."""

    state: Literal["idle", "listening", "thinking", "speaking"]
    """idle, listening, thinking or speaking."""


class TranscriptCondition(_Model):
    """A transcript of `role` matches the regex (re.search, case-insensitive)."""

    transcript: str
    """A regular expression searched in each transcript."""
    role: Role = "agent"
    """Whose transcripts: agent or user."""

    @field_validator("transcript")
    @classmethod
    def _check(cls, value: str) -> str:
        return _regex(value)

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.transcript, re.IGNORECASE)


class ToolCallCondition(_Model):
    """The agent invokes this client tool."""

    tool_call: str
    """The tool's name (as the model sees it)."""


class SilenceCondition(_Model):
    """No agent audio is heard for this long."""

    silence: Duration
    """How long the agent must stay silent."""


_CONDITION_KEYS: dict[str, type[_Model]] = {
    "state": StateCondition,
    "transcript": TranscriptCondition,
    "tool_call": ToolCallCondition,
    "silence": SilenceCondition,
}
_CONDITION_WORDS: dict[str, type[_Model]] = {"agent_audible": AgentAudible, "agent_done": AgentDone}


def _condition_tag(data: Any) -> str | None:
    if isinstance(data, str):
        return f"wait:{data}" if data in _CONDITION_WORDS else None
    if isinstance(data, dict):
        kinds = [key for key in data if key in _CONDITION_KEYS]
        return f"wait:{kinds[0]}" if len(kinds) == 1 else None
    if isinstance(data, BaseModel):
        for key, cls in {**_CONDITION_KEYS, **_CONDITION_WORDS}.items():
            if type(data) is cls:
                return f"wait:{key}"
    return None


WaitCondition = Annotated[
    Annotated[
        AgentAudible,
        Tag("wait:agent_audible"),
        WithJsonSchema({"const": "agent_audible", "description": AgentAudible.__doc__}),
    ]
    | Annotated[
        AgentDone,
        Tag("wait:agent_done"),
        WithJsonSchema({"const": "agent_done", "description": AgentDone.__doc__}),
    ]
    | Annotated[StateCondition, Tag("wait:state")]
    | Annotated[TranscriptCondition, Tag("wait:transcript")]
    | Annotated[ToolCallCondition, Tag("wait:tool_call")]
    | Annotated[SilenceCondition, Tag("wait:silence")],
    Discriminator(_condition_tag),
]


# --------------------------------------------------------------------------------------------
# Expectations


class TranscriptContains(_Model):
    """Some transcript of `role` contains this text (case-insensitive)."""

    transcript_contains: str
    """The text to find."""
    role: Role = "agent"
    """Whose transcripts: agent or user."""


class TranscriptRegex(_Model):
    """Some transcript of `role` matches this regular expression (re.search, case-insensitive)."""

    transcript_regex: str
    """A regular expression."""
    role: Role = "agent"
    """Whose transcripts: agent or user."""

    @field_validator("transcript_regex")
    @classmethod
    def _check(cls, value: str) -> str:
        return _regex(value)

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.transcript_regex, re.IGNORECASE)


class ToolCalled(_Model):
    """The agent invoked this client tool (so far in the call), optionally with these parameters."""

    model_config = ConfigDict(populate_by_name=False)

    tool_called: str
    """The tool's name."""
    with_: dict[str, Any] | None = Field(default=None, alias="with")
    """Parameters the invocation must include (each key equal; others may be present too)."""


_OPERATORS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


class MetricBound(_Model):
    """A bound on a metric (docs/metrics.md), e.g. {metric: turn.ttfa_ms, turn: 1, "<": 1500}."""

    metric: Annotated[str, Field(json_schema_extra={"enum": list(METRIC_NAMES)})]
    """A metric name (docs/metrics.md, or `uvbench schema`), e.g. turn.ttfa_ms."""
    turn: Annotated[int, Field(ge=0)] | None = None
    """For turn.* metrics: the turn (0-based over `say` steps); unset = every turn so far."""
    barge_in: Annotated[int, Field(ge=0)] | None = None
    """For interrupt.* metrics: the barge-in (0-based over `barge_in` steps); unset = every one so far."""
    lt: float | None = Field(default=None, alias="<")
    """The value must be less than this."""
    le: float | None = Field(default=None, alias="<=")
    """The value must be at most this."""
    gt: float | None = Field(default=None, alias=">")
    """The value must be greater than this."""
    ge: float | None = Field(default=None, alias=">=")
    """The value must be at least this."""
    eq: float | str | None = Field(default=None, alias="==")
    """The value must equal this."""
    ne: float | str | None = Field(default=None, alias="!=")
    """The value must differ from this."""

    @field_validator("metric")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in METRIC_NAMES:
            hint = did_you_mean(name, METRIC_NAMES)
            raise problem(
                f"unknown metric {show(name)} ("
                + (hint if hint else "expected a metric of docs/metrics.md, e.g. turn.ttfa_ms")
                + ")"
            )
        return name

    @model_validator(mode="after")
    def _consistent(self) -> MetricBound:
        if not self.bounds():
            raise problem('no bound (expected one or more of "<", "<=", ">", ">=", "==", "!=")')
        if self.turn is not None and not self.metric.startswith("turn."):
            raise problem(
                f"turn only applies to turn.* metrics (expected no turn for {self.metric})", at="turn"
            )
        if self.barge_in is not None and not self.metric.startswith("interrupt."):
            raise problem(
                f"barge_in only applies to interrupt.* metrics (expected no barge_in for {self.metric})",
                at="barge_in",
            )
        for field, op in _OPERATORS.items():
            value = getattr(self, field)
            if value is None:
                continue
            if self.metric in TEXT_METRICS and field not in ("eq", "ne"):
                raise problem(f"{self.metric} is text (expected == or != for it)", at=op)
            if self.metric not in TEXT_METRICS and isinstance(value, str):
                raise problem(f"{show(value)} is not a number (expected a number for {self.metric})", at=op)
        return self

    def bounds(self) -> list[tuple[str, float | str]]:
        """The bounds as (operator, value) pairs, e.g. [("<", 1500.0)]."""
        return [(op, getattr(self, f)) for f, op in _OPERATORS.items() if getattr(self, f) is not None]


_EXPECT_KEYS: dict[str, type[_Model]] = {
    "transcript_contains": TranscriptContains,
    "transcript_regex": TranscriptRegex,
    "tool_called": ToolCalled,
    "metric": MetricBound,
}


def _expect_tag(data: Any) -> str | None:
    if isinstance(data, dict):
        kinds = [key for key in data if key in _EXPECT_KEYS]
        return f"expect:{kinds[0]}" if len(kinds) == 1 else None
    if isinstance(data, BaseModel):
        for key, cls in _EXPECT_KEYS.items():
            if type(data) is cls:
                return f"expect:{key}"
    return None


Expectation = Annotated[
    Annotated[TranscriptContains, Tag("expect:transcript_contains")]
    | Annotated[TranscriptRegex, Tag("expect:transcript_regex")]
    | Annotated[ToolCalled, Tag("expect:tool_called")]
    | Annotated[MetricBound, Tag("expect:metric")],
    Discriminator(_expect_tag),
]


# --------------------------------------------------------------------------------------------
# Caller audio and network (the realistic caller: uvbench.audio.transforms, uvbench.audio.impairment)

TELEPHONE_LINES: tuple[str, ...] = ("ulaw", "alaw", "band")
"""`caller.telephone`: an 8 kHz line with a G.711 mu-law or A-law round trip, or the band alone."""


def _spec(make: Any, at: str | None = None) -> Any:
    """A transform or impairment spec, its own one-line ValueError turned into a scenario problem."""
    try:
        return make()
    except ValueError as exc:
        raise problem(str(exc), at=at) from None


def _noise_dir() -> Path:
    from uvbench.audio.noise import NOISE_DIR  # imported on use: it brings the noise generators

    return NOISE_DIR


@functools.lru_cache(maxsize=8)
def _noise_manifest(directory: str, mtime_ns: int) -> tuple[str, ...]:
    from uvbench.audio.noise import load_noise_manifest

    return tuple(load_noise_manifest(Path(directory)))


def shipped_noises() -> tuple[str, ...]:
    """The file names of audio_corpus/noise/manifest.json (empty if it cannot be read)."""
    directory = _noise_dir()
    try:
        return _noise_manifest(str(directory), (directory / "manifest.json").stat().st_mtime_ns)
    except (OSError, ValueError):
        return ()


def resolve_noise(name: str, base_dir: Path) -> Path | None:
    """A noise file named in `caller.noise.file`: relative to the scenario's folder, then one of
    audio_corpus/noise/'s manifest."""
    given = Path(name).expanduser()
    if given.is_absolute():
        return given.resolve() if given.is_file() else None
    if (base_dir / given).is_file():
        return (base_dir / given).resolve()
    if name in shipped_noises():
        return (_noise_dir() / name).resolve()
    return None


class CallerReverb(_Model):
    """Room reverberation: the caller is in a room, not a studio."""

    room_size: float = 0.5
    """0 (small) .. 1 (large)."""
    wet: float = 0.3
    """The reverberated share, 0..1; the direct sound keeps 1 - wet (and its timing)."""

    @model_validator(mode="after")
    def _valid(self) -> CallerReverb:
        for field in ("room_size", "wet"):
            _spec(lambda field=field: Reverb(**{field: getattr(self, field)}), at=field)
        return self

    def spec(self) -> Reverb:
        return Reverb(room_size=self.room_size, wet=self.wet)


class CallerNoise(_Model):
    """Background noise mixed over the whole call, silences included, at `snr_db` against the
    level of the call's speech (over its exact speech bounds)."""

    file: str
    """A WAV or FLAC file: relative to the scenario's folder, else one of audio_corpus/noise/
    (pink.flac, brown.flac, hum.flac, babble.flac, cafe.flac, street.flac)."""
    snr_db: float
    """Speech to noise ratio in dB (-10..60)."""
    seed: int = 0
    """With the run's `--seed` and each call's number, where in the noise loop each call starts
    (the same seed, the same start for the n-th call of a rerun)."""
    _path: Path | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path:
        """The noise file, resolved (absolute)."""
        assert self._path is not None
        return self._path

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> CallerNoise:
        _spec(lambda: Noise(snr_db=self.snr_db, file=self.file), at="snr_db")
        base_dir = Path((info.context or {}).get("base_dir") or Path.cwd())
        path = resolve_noise(self.file, base_dir)
        if path is None:
            names = _audio_names(base_dir) + list(shipped_noises())
            hint = did_you_mean(Path(self.file).name, names)
            raise problem(
                f"noise file {show(self.file)} not found (expected a file next to the scenario or in"
                " audio_corpus/noise/" + (f"; {hint}" if hint else ": " + ", ".join(shipped_noises())) + ")",
                at="file",
            )
        self._path = path
        return self

    def spec(self) -> Noise:
        return Noise(snr_db=self.snr_db, file=str(self.path), seed=self.seed)


class CallerCodec(_Model):
    """A lossy low-bitrate codec round trip: `gsm` (GSM 06.10, 13 kbit/s) or `mp3`, or
    {kind: mp3, vbr_quality: 0..9}."""

    kind: str
    """gsm or mp3."""
    vbr_quality: float | None = None
    """mp3 only: LAME VBR quality, 0 (best) .. 9 (smallest); 6 when not given."""

    @model_validator(mode="before")
    @classmethod
    def _word(cls, data: Any) -> Any:
        return {"kind": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _valid(self) -> CallerCodec:
        at = "kind" if self.kind not in ("gsm", "mp3") else "vbr_quality"
        _spec(self.spec, at=at)
        return self

    def spec(self) -> Codec:
        return Codec(kind=self.kind, vbr_quality=self.vbr_quality)


_CODEC_SCHEMA = {
    "description": CallerCodec.__doc__,
    "anyOf": [
        {"enum": ["gsm", "mp3"]},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind"],
            "properties": {"kind": {"enum": ["gsm", "mp3"]}, "vbr_quality": {"type": "number"}},
        },
    ],
}


class CallerAudio(_Model):
    """How the caller sounds, applied in this order whatever the order of the keys: gain,
    reverb, noise (the room), then telephone, codec (the line). Each is optional."""

    gain_db: float | None = None
    """A level change in dB (-40..20)."""
    reverb: CallerReverb | None = None
    """Room reverberation: {room_size: 0..1, wet: 0..1}."""
    noise: CallerNoise | None = None
    """Background noise over the whole call: {file: cafe.flac, snr_db: 10}."""
    telephone: str | None = None
    """An 8 kHz phone line: ulaw, alaw (a G.711 round trip) or band (the band alone)."""
    codec: (
        Annotated[CallerCodec, WithJsonSchema({"anyOf": [{"enum": ["gsm", "mp3"]}, {"type": "object"}]})]
        | None
    ) = None
    """A lossy codec: gsm, mp3 or {kind: mp3, vbr_quality: 0..9}."""

    @field_validator("gain_db")
    @classmethod
    def _gain(cls, value: float | None) -> float | None:
        if value is not None:
            _spec(lambda: Gain(value))
        return value

    @field_validator("telephone", mode="before")
    @classmethod
    def _line(cls, value: Any) -> Any:
        if value is not None and value not in TELEPHONE_LINES:
            hint = did_you_mean(str(value), TELEPHONE_LINES)
            raise problem(
                f"telephone {show(value)} is not a line ("
                + (hint + " " if hint else "")
                + "expected ulaw, alaw, band or null)"
            )
        return value

    def transforms(self) -> tuple[Gain | Reverb | Noise | Telephone | Codec, ...]:
        """The transforms, in the documented order."""
        out: list[Gain | Reverb | Noise | Telephone | Codec] = []
        if self.gain_db is not None:
            out.append(Gain(self.gain_db))
        if self.reverb is not None:
            out.append(self.reverb.spec())
        if self.noise is not None:
            out.append(self.noise.spec())
        if self.telephone is not None:
            out.append(Telephone(None if self.telephone == "band" else self.telephone))
        if self.codec is not None:
            out.append(self.codec.spec())
        return tuple(out)

    def chain(self) -> Chain:
        return Chain(self.transforms())

    @property
    def label(self) -> str:
        """The chain's label for reports ("clean" for none), e.g. gain=-6dB+snr=10dB+ulaw."""
        return self.chain().label


def _chain_label(caller: CallerAudio | None) -> str:
    return caller.label if caller is not None else "clean"


class NetworkJitter(_Model):
    """Each chunk delayed by a random draw, order kept (as TCP keeps it)."""

    mean_ms: float
    """Mean delay in ms."""
    max_ms: float | None = None
    """Longest delay in ms; 5 x the mean when not given."""
    distribution: str = "exponential"
    """exponential or uniform."""

    @model_validator(mode="after")
    def _valid(self) -> NetworkJitter:
        _impairment(self.spec)
        return self

    def spec(self) -> Jitter:
        return Jitter(mean_ms=self.mean_ms, max_ms=self.max_ms, distribution=self.distribution)


class NetworkBursts(_Model):
    """The link holds audio for `hold_ms` every `every_ms`, then flushes it."""

    hold_ms: float
    """How long each window holds the audio, ms."""
    every_ms: float
    """How often a window opens, ms."""
    phase_ms: float | None = None
    """Where the first window starts after the stream's start; drawn from the seed when not given."""

    @model_validator(mode="after")
    def _valid(self) -> NetworkBursts:
        _impairment(self.spec)
        return self

    def spec(self) -> Bursts:
        return Bursts(hold_ms=self.hold_ms, every_ms=self.every_ms, phase_ms=self.phase_ms)


class NetworkStalls(_Model):
    """The link stops at random, `rate_per_min` times a minute on average, each time for `duration_ms`."""

    rate_per_min: float
    """Stalls per minute on average."""
    duration_ms: float
    """How long each stall lasts, ms."""

    @model_validator(mode="after")
    def _valid(self) -> NetworkStalls:
        _impairment(self.spec)
        return self

    def spec(self) -> Stalls:
        return Stalls(rate_per_min=self.rate_per_min, duration_ms=self.duration_ms)


def _impairment(make: Any) -> Any:
    """An impairment spec; its problem placed at the field its message starts with
    ("jitter mean_ms: ..." is about mean_ms)."""
    try:
        return make()
    except ValueError as exc:
        text = str(exc)
        head = text.split(":", 1)[0].split()
        at = head[1] if len(head) == 2 and head[1].isidentifier() else None
        raise problem(text.split(": ", 1)[1] if at else text, at=at) from None


class Network(_Model):
    """Impairment of the outgoing audio stream, after the pacer: jitter, bursts and stalls, each
    optional; several are mixed in that order."""

    jitter: NetworkJitter | None = None
    """{mean_ms, max_ms?, distribution?}."""
    bursts: NetworkBursts | None = None
    """{hold_ms, every_ms, phase_ms?}."""
    stalls: NetworkStalls | None = None
    """{rate_per_min, duration_ms}."""
    seed: int | None = None
    """With the run's `--seed` and each call's number, each call's impairment schedule (the same
    seed, the same schedule for the n-th call of a rerun); unset: the run's seed and the call alone."""

    @model_validator(mode="after")
    def _valid(self) -> Network:
        _spec(self.spec)
        return self

    def spec(self) -> ImpairmentSpec | None:
        """The impairment (one stage, or a `Mix` in the order jitter, bursts, stalls); None for none."""
        parts = [part.spec() for part in (self.jitter, self.bursts, self.stalls) if part is not None]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else Mix(parts)

    @property
    def label(self) -> str:
        return impairment_label(self.spec())


# --------------------------------------------------------------------------------------------
# Steps


class SayStep(_AudioStep):
    """The user speaks an audio file (a turn): streamed in real time, then silence."""

    say: str
    """The audio file: relative to the scenario's folder, else in audio_corpus/."""
    speech: SpeechBounds | None = None
    """Speech bounds in the file; needed when the file is in no corpus manifest."""
    caller: CallerAudio | None = None
    """How this clip sounds, instead of the scenario's caller: (gain, reverb, telephone, codec;
    the noise is the call's)."""


class BargeInStep(_AudioStep):
    """The user speaks over the agent: waits until the agent is audible, then `after`, then the file."""

    _file_field: ClassVar[str] = "barge_in"

    barge_in: str
    """The audio file: relative to the scenario's folder, else in audio_corpus/."""
    after: Duration = 0.0
    """Start the utterance this long into the agent's audible speech."""
    speech: SpeechBounds | None = None
    """Speech bounds in the file; needed when the file is in no corpus manifest."""
    timeout: Duration = DEFAULT_WAIT_TIMEOUT
    """How long to wait for the agent to become audible."""
    caller: CallerAudio | None = None
    """How this clip sounds, instead of the scenario's caller: (gain, reverb, telephone, codec;
    the noise is the call's)."""


class TextStep(_Step):
    """The user sends a text message (user_text_message)."""

    text: str
    """The message text."""
    urgency: Literal["immediate", "soon", "later"] | None = None
    """immediate (interrupts the agent), soon or later; unset = the server's default (soon)."""


class SilenceStep(_Step):
    """The user stays silent for this long (the client keeps streaming silence)."""

    silence: Duration
    """How long."""


class WaitForStep(_Step):
    """Wait until a condition holds; a timeout fails the call's step."""

    wait_for: WaitCondition
    """agent_audible, agent_done, {state: ...}, {transcript: regex, role: ...}, {tool_call: name} or
    {silence: duration}."""
    timeout: Duration = DEFAULT_WAIT_TIMEOUT
    """How long to wait."""


class ExpectStep(_Step):
    """Check what happened so far; each failed expectation fails the call."""

    expect: Annotated[list[Expectation], Field(min_length=1)]
    """transcript_contains, transcript_regex, tool_called or metric bounds."""


class HangUpOptions(_Model):
    """How to hang up."""

    message: str | None = None
    """Send the hang_up data message with this message; unset = the client closes the socket."""


class HangUpStep(_Step):
    """End the call: `hang_up`, or {hang_up: {message: ...}}."""

    hang_up: Annotated[HangUpOptions, BeforeValidator(lambda v: {} if v is None else v)] = HangUpOptions()
    """Options; the bare string `hang_up` takes the defaults."""

    @model_validator(mode="before")
    @classmethod
    def _word(cls, data: Any) -> Any:
        return {} if data == "hang_up" else data


_HANG_UP_SCHEMA = {
    "description": HangUpStep.__doc__,
    "anyOf": [
        {"const": "hang_up"},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["hang_up"],
            "properties": {
                "name": {"type": "string", "pattern": STEP_NAME_PATTERN},
                "hang_up": {
                    "anyOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "message": {
                                    "type": "string",
                                    "description": "Send the hang_up data message with this message.",
                                }
                            },
                        },
                    ]
                },
            },
        },
    ],
}

STEP_KINDS: dict[str, type[_Model]] = {
    "say": SayStep,
    "barge_in": BargeInStep,
    "text": TextStep,
    "silence": SilenceStep,
    "wait_for": WaitForStep,
    "expect": ExpectStep,
    "hang_up": HangUpStep,
}


def _step_tag(data: Any) -> str | None:
    if data == "hang_up":
        return "step:hang_up"
    if isinstance(data, dict):
        kinds = [key for key in data if key in STEP_KINDS]
        return f"step:{kinds[0]}" if len(kinds) == 1 else None
    if isinstance(data, BaseModel):
        for key, cls in STEP_KINDS.items():
            if type(data) is cls:
                return f"step:{key}"
    return None


Step = Annotated[
    Annotated[SayStep, Tag("step:say")]
    | Annotated[BargeInStep, Tag("step:barge_in")]
    | Annotated[TextStep, Tag("step:text")]
    | Annotated[SilenceStep, Tag("step:silence")]
    | Annotated[WaitForStep, Tag("step:wait_for")]
    | Annotated[ExpectStep, Tag("step:expect")]
    | Annotated[HangUpStep, Tag("step:hang_up"), WithJsonSchema(_HANG_UP_SCHEMA)],
    Discriminator(_step_tag),
]

# Every tag used in the unions above, to the model it selects (the loader strips them from
# error locations).
UNION_TAGS: dict[str, type[_Model]] = {
    **{f"step:{k}": v for k, v in STEP_KINDS.items()},
    **{f"expect:{k}": v for k, v in _EXPECT_KEYS.items()},
    **{f"wait:{k}": v for k, v in {**_CONDITION_KEYS, **_CONDITION_WORDS}.items()},
    **LOAD_TAGS,
}
EXPECT_KINDS: tuple[str, ...] = tuple(_EXPECT_KEYS)
CONDITION_KINDS: tuple[str, ...] = (*_CONDITION_WORDS, *_CONDITION_KEYS)


# --------------------------------------------------------------------------------------------
# The scenario


def with_default_medium(call: dict[str, Any]) -> dict[str, Any]:
    """`call` with medium set to DEFAULT_MEDIUM when it has none."""
    if "medium" in call and call["medium"] is not None:
        return call
    return {**call, "medium": copy.deepcopy(DEFAULT_MEDIUM)}


def _get(mapping: Any, *names: str) -> Any:
    """A field by its camelCase or snake_case name (tolerant of unvalidated data)."""
    if not isinstance(mapping, dict):
        return None
    for name in names:
        if mapping.get(name) is not None:
            return mapping[name]
    return None


def tool_names(call: dict[str, Any]) -> set[str] | None:
    """The model names of the call's selected tools, or None when some cannot be known here
    (a durable tool referenced by id)."""
    names: set[str] = set()
    tools = _get(call, "selectedTools", "selected_tools") or []
    if not isinstance(tools, list):
        return None
    for tool in tools:
        name = _get(tool, "nameOverride", "name_override") or _get(tool, "toolName", "tool_name")
        if name is None:
            name = _get(_get(tool, "temporaryTool", "temporary_tool"), "modelToolName", "model_tool_name")
        if not isinstance(name, str):
            return None
        names.add(name)
    return names


Loc = tuple[str | int, ...]


def cross_problems(data: dict[str, Any]) -> list[tuple[Loc, str, bool]]:
    """Problems that involve several parts of a scenario, as (location, message, at the key?).

    Works on plain scenario data (as written or as dumped from a Scenario) and tolerates values
    of the wrong type (they are reported elsewhere), so it can run on a file with other problems.
    """
    found: list[tuple[Loc, str, bool]] = []
    call = data.get("call") if isinstance(data.get("call"), dict) else {}
    medium = call.get("medium")
    if isinstance(medium, dict) and medium and _get(medium, "serverWebSocket", "server_web_socket") is None:
        found.append(
            (
                ("call", "medium"),
                "uvbench streams audio over a server websocket"
                " (expected medium: {serverWebSocket: {inputSampleRate: ...}})",
                True,
            )
        )
    if data.get("prior_call_id") is not None and _get(call, "initialMessages", "initial_messages"):
        found.append((("call", "initialMessages"), MSG_PRIOR_CALL, True))

    names = tool_names(call)

    def check_tool(loc: Loc, name: Any) -> None:
        if names is None or not isinstance(name, str) or name in names:
            return
        hint = did_you_mean(name, sorted(names))
        if hint is None:
            hint = (
                "expected one of: " + ", ".join(sorted(names))
                if names
                else "expected a tool declared in call.selectedTools; none are"
            )
        found.append((loc, f"tool {show(name)} is not among call.selectedTools ({hint})", False))

    answers = data.get("tools") if isinstance(data.get("tools"), dict) else {}
    if names is not None:
        # Answers for tools the call does not select are allowed (shared answer sets), except
        # when the name looks like a typo of a selected tool that has no answer.
        unanswered = sorted(names - set(answers))
        for name in answers:
            hint = did_you_mean(str(name), unanswered) if name not in names else None
            if hint:
                found.append(
                    (("tools", name), f"tool {show(name)} is not among call.selectedTools ({hint})", True)
                )

    script = data.get("script") if isinstance(data.get("script"), list) else []
    turns = barge_ins = 0
    named: dict[str, int] = {}
    for i, step in enumerate(script):
        if not isinstance(step, dict):
            continue
        name = step.get("name")
        if isinstance(name, str):
            if UNNAMED_LABEL.match(name):
                why = "is how unnamed steps are reported (expected another name, e.g. ask_order)"
                found.append((("script", i, "name"), f"{show(name)} {why}", False))
            elif name in named:
                why = f"already names step {named[name]} (expected a name unique in the script)"
                found.append((("script", i, "name"), f"{show(name)} {why}", False))
            named.setdefault(name, i)
        if "say" in step:
            turns += 1
        elif "barge_in" in step:
            barge_ins += 1
        elif isinstance(step.get("wait_for"), dict) and "tool_call" in step["wait_for"]:
            check_tool(("script", i, "wait_for", "tool_call"), step["wait_for"]["tool_call"])
        elif isinstance(step.get("expect"), list):
            for j, exp in enumerate(step["expect"]):
                if not isinstance(exp, dict):
                    continue
                loc = ("script", i, "expect", j)
                if "tool_called" in exp:
                    check_tool((*loc, "tool_called"), exp["tool_called"])
                if "metric" not in exp:
                    continue
                for field, count, what in (("turn", turns, "say"), ("barge_in", barge_ins, "barge_in")):
                    index = exp.get(field)
                    if isinstance(index, bool) or not isinstance(index, int) or index < count or index < 0:
                        continue
                    if count > 1:
                        expected = f"expected 0..{count - 1}: {count} {what} steps before it"
                    elif count == 1:
                        expected = f"expected 0: 1 {what} step before it"
                    else:
                        expected = f"expected no {field}: no {what} step before it"
                    found.append(
                        ((*loc, field), f"{field} {index} has not happened by this step ({expected})", False)
                    )
    return found


class Scenario(FileLoad):
    """One scenario: who to call, how, and the user's script. See scenarios/quickstart.yaml."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lowercase letters, digits, _ and -; expanded matrix variants get a [key=value,...] suffix."""
    description: str = ""
    """What the scenario exercises."""
    target: Annotated[Target, WithJsonSchema(_TARGET_SCHEMA)] = Field(
        default_factory=Target, json_schema_extra={"default": "local"}
    )
    """local (the embedded server), ultravox, or {base_url: ..., api_key_env: ...}."""
    call: dict[str, Any] = Field(default_factory=lambda: {"medium": copy.deepcopy(DEFAULT_MEDIUM)})
    """The POST /api/calls body, passed through (validated against the official schema). medium
    defaults to {serverWebSocket: {inputSampleRate: 16000}}."""
    prior_call_id: str | None = None
    """Continue a conversation: sent as ?priorCallId=."""
    client: ClientSettings = ClientSettings()
    """The simulated client's settings."""
    tools: dict[str, ToolAnswer] = {}
    """Client tool answers, by tool name."""
    variables: dict[str, Any] = {}
    """Values for ${name} references anywhere else in the file."""
    matrix: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    """Expands the file into the cartesian product of these values. Keys: inputSampleRate,
    outputSampleRate, clientBufferSizeMs (shorthands for call.medium.serverWebSocket.<key>) or a
    dotted path into the scenario such as client.honor_clear."""
    script: Annotated[list[Step], Field(min_length=1)]
    """The user's steps, in order."""
    caller: CallerAudio | None = None
    """How the caller sounds over the whole call: {gain_db, reverb, noise, telephone, codec}, applied
    in that order (the room, then the line); `say`/`barge_in` steps may replace it for their clip
    (all but the noise). Matrix axes: caller.noise.snr_db, caller.telephone, ..."""
    network: Network | None = None
    """Impairment of the outgoing audio stream: {jitter: {mean_ms, max_ms}, bursts: {hold_ms,
    every_ms}, stalls: {rate_per_min, duration_ms}, seed}; several are mixed in that order."""

    # load, vus, duration, iterations, stages: FileLoad's (listed here in the schema and messages)
    thresholds: Thresholds = {}
    """k6 thresholds gating the run: {"turn.ttfa_ms": ["p(95) < 1200"], "call.failed": ["rate < 0.01"]};
    --threshold adds to them."""

    variant: SkipJsonSchema[dict[str, Any]] = {}
    """The matrix values of this expanded scenario (empty without a matrix); set by the loader."""
    source: SkipJsonSchema[str | None] = None
    """The file the scenario came from; set by the loader."""

    @field_validator("call", mode="before")
    @classmethod
    def _call(cls, value: Any) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise problem(f"{show(value)} is not valid (expected a mapping: the POST /api/calls body)")
        try:
            return validate_start_call(with_default_medium(value))
        except RequestValidationError as exc:
            raise problem("invalid create-call body: " + "; ".join(exc.lines())) from None

    @field_validator("prior_call_id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            uuid.UUID(value)
        except ValueError:
            raise problem(
                f"{show(value)} is not a call id (expected a UUID, the callId of an earlier call)"
            ) from None
        return value

    @model_validator(mode="after")
    def _cross_check(self, info: ValidationInfo) -> Scenario:
        if (info.context or {}).get("cross_check", True):
            found = cross_problems(self.model_dump(by_alias=True))
            if found:
                raise problem("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg, _ in found))
        return self

    @property
    def base_name(self) -> str:
        """The name without the matrix suffix."""
        return self.name.split("[", 1)[0]

    @property
    def input_sample_rate(self) -> int:
        return self.call["medium"]["serverWebSocket"]["inputSampleRate"]

    @property
    def output_sample_rate(self) -> int:
        ws = self.call["medium"]["serverWebSocket"]
        return ws.get("outputSampleRate", ws["inputSampleRate"])

    @property
    def caller_label(self) -> str:
        """The scenario-level caller chain's label ("clean" without `caller:`)."""
        return _chain_label(self.caller)

    @property
    def network_label(self) -> str:
        """The network impairment's label ("none" without `network:`)."""
        return self.network.label if self.network is not None else "none"

    @property
    def turn_count(self) -> int:
        """Number of `say` steps (turns)."""
        return sum(isinstance(step, SayStep) for step in self.script)
