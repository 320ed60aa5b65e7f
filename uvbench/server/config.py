"""How the local server and its simulated agent behave: defaults, plan limits and faults.

Everything here can be set for the whole server (`uvbench serve --config FILE`, or the
`ServerConfig` handed to `LocalServer`) and, for the agent and the faults of a call, per call
through the create-call body: `experimentalSettings: {"uvbench": {"agent": {...}, "faults": {...}}}`.
Per-call values are merged over the server's, key by key. The REST faults (`SERVER_WIDE_FAULTS`:
`rest_delay_ms`, `rest_429`, `rest_503`) act before any call exists, so they are server-wide only
(the config, or `PUT /_uvbench/faults`); a create body naming one is refused.
"""

from __future__ import annotations

import dataclasses
import math
import random
import secrets
import string
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A server or per-call setting that cannot be used; the message says which and why."""


MAX_LATENCY_MS = 60_000.0
"""The longest agent latency the server simulates: a minute, far past any voice agent's."""

MAX_SPOKEN_TEXT_CHARS = 2_000
"""Longest text the simulated agent speaks (greeting, replies, tool reply, `timeExceededMessage`,
a forced or goodbye message): about two minutes of speech at 175 words a minute, longer than any
voice agent's turn. Speech is synthesized on the server's event loop, so a text's length is time
every call on the server waits: at this length and rate a few tenths of a second of one core and
11 MB of 48 kHz audio (a 50 KB text blocked the server for 5.7 s and took 63 MB)."""


def spoken_text_excess(text: str) -> str | None:
    """Why the agent will not speak `text`, naming MAX_SPOKEN_TEXT_CHARS; None when it will."""
    if len(text) <= MAX_SPOKEN_TEXT_CHARS:
        return None
    return (
        f"{len(text):,} characters, over this server's limit of {MAX_SPOKEN_TEXT_CHARS:,} characters "
        "for a text the agent speaks (MAX_SPOKEN_TEXT_CHARS)"
    )


def _spoken_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string")
    excess = spoken_text_excess(value)
    if excess is not None:
        raise ConfigError(f"{where}: {excess}; shorten it")
    return value


@dataclass(frozen=True)
class Latency:
    """The agent's response latency: from the server's end-of-turn decision to its first audio.

    kind: "fixed" (ms), "uniform" (min_ms..max_ms), "normal" (ms, sd_ms) or "lognormal"
    (median ms, sigma = the log-space standard deviation). Draws never go below min_ms.
    """

    kind: str = "lognormal"
    ms: float = 350.0
    sd_ms: float = 50.0
    sigma: float = 0.25
    min_ms: float = 0.0
    max_ms: float = 0.0

    def draw(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            value = self.ms
        elif self.kind == "uniform":
            value = rng.uniform(self.min_ms, self.max_ms if self.max_ms > self.min_ms else self.min_ms)
        elif self.kind == "normal":
            value = rng.gauss(self.ms, self.sd_ms)
        elif self.kind == "lognormal":
            value = rng.lognormvariate(0.0, self.sigma) * self.ms
        else:  # validated in from_dict; kept for direct construction
            raise ConfigError(f"latency kind {self.kind!r} is not one of fixed, uniform, normal, lognormal")
        return max(self.min_ms, value)


LATENCY_KINDS = ("fixed", "uniform", "normal", "lognormal")
AGENT_MODES = ("simulated", "sink")
"""simulated: the conversational agent (agent.py); sink: the near-zero-cost agent (sink.py)."""


CHUNK_MS_RANGE = (5, 1000)
"""Agent frames from 5 ms to a second: 1 ms frames meant a thousand timer wake-ups a second per
speaking call, and a pacing record growing by 8 KB a second."""


@dataclass(frozen=True)
class ToolCall:
    """The agent invokes `name` with `parameters` before replying to user turn `turn` (1-based)."""

    turn: int
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentBehaviour:
    greeting: str = "Hello! Thanks for calling. How can I help you today?"
    replies: tuple[str, ...] = (
        "Sure, I can help with that. Let me tell you what I found.",
        "Thanks, that makes sense. Is there anything else you would like to know?",
        "Of course. Your request has been noted and will be handled shortly.",
    )
    latency: Latency = Latency()
    chunk_ms: int = 20
    """Size of each agent audio frame sent on the socket (CHUNK_MS_RANGE)."""
    voice_wpm: int = 175
    """Speaking rate of the synthesized voice, words per minute."""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_reply: str = "The tool answered: {result}"
    """What the agent says after a tool result; `{result}` is the result text."""
    seed: int | None = None
    """Seeds the latency draws so a run can be repeated; None draws from the call id."""
    mode: str = "simulated"
    """"simulated" (the agent above) or "sink": an agent that costs the server almost nothing per
    input frame, for client capacity benchmarks (sink.py): it counts input, answers pings, speaks
    the greeting and then `replies[0]` every `reply_every_s`, each utterance in one write."""
    reply_every_s: float = 5.0
    """Sink mode: seconds between canned replies after the greeting; 0 = never."""
    read_batch_ms: float = 0.0
    """Sink mode: read each connection at most this often (0: as soon as data arrives). At 100 a
    read takes about 5 frames at once, which halves the server's CPU per input frame, but pongs
    and the close handshake may wait that long."""


@dataclass(frozen=True)
class Stall:
    """Output stops for `duration_ms` once `after_ms` of an agent utterance has been sent."""

    after_ms: float
    duration_ms: float


@dataclass(frozen=True)
class Faults:
    extra_latency_ms: float = 0.0
    output_jitter_ms: float = 0.0
    """Each agent audio frame leaves up to this much later than its schedule (uniform)."""
    output_stalls: tuple[Stall, ...] = ()
    drop_socket_after_ms: float | None = None
    """The server aborts the TCP connection this long after the client joined."""
    malformed_messages: bool = False
    """Send a text frame that is not JSON right after call_started."""
    unknown_messages: bool = False
    """Send a data message of an unknown type right after call_started (and after each turn)."""
    rest_delay_ms: float = 0.0
    """Every `/api` answer waits this long (server-wide)."""
    rest_429: int = 0
    """The next N create-call requests are refused with 429 (server-wide)."""
    rest_503: int = 0
    """The next N create-call requests are refused with 503 (server-wide)."""


SERVER_WIDE_FAULTS = ("rest_delay_ms", "rest_429", "rest_503")
"""Faults of the REST API, which acts before a call exists: set for the server only (its config,
or `PUT /_uvbench/faults`), never in a create body (`call_faults_from_dict` refuses them)."""


@dataclass(frozen=True)
class Plan:
    """Call-creation limits of an Ultravox plan (as Ultravox documents them); 0 means no limit."""

    name: str
    max_concurrent: int = 0
    creates_per_second: int = 0
    creates_per_minute: int = 0


PLANS: dict[str, Plan] = {
    "unlimited": Plan("unlimited"),
    "free": Plan("free", max_concurrent=5, creates_per_second=5, creates_per_minute=30),
    "paygo": Plan("paygo", max_concurrent=5, creates_per_second=5, creates_per_minute=30),
    "pro": Plan("pro", creates_per_second=10, creates_per_minute=120),
    "scale": Plan("scale", creates_per_second=30, creates_per_minute=360),
}


def generate_api_key() -> str:
    """A key of Ultravox's shape: 8 alphanumerics, a dot, 32 alphanumerics."""
    alphabet = string.ascii_letters + string.digits
    head = "".join(secrets.choice(alphabet) for _ in range(8))
    tail = "".join(secrets.choice(alphabet) for _ in range(32))
    return f"{head}.{tail}"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    api_key: str = field(default_factory=generate_api_key)
    plan: Plan = PLANS["unlimited"]
    agent: AgentBehaviour = AgentBehaviour()
    faults: Faults = Faults()
    close_code: int = 1000
    """Close code the server uses when it ends a call (agent hang-up, timeouts)."""
    keep_calls: int = 1_000
    """Ended calls kept for reading back (store.KEEP_ENDED_CALLS); the oldest ended goes first."""


# ---------------------------------------------------------------------------------------------
# Building the dataclasses from plain mappings (YAML files, JSON call settings), strictly.


def _build(cls: type, data: Any, where: str) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _convert(cls, name, value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where}: {exc}") from None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _convert(cls: type, name: str, value: Any, where: str) -> Any:
    if cls is AgentBehaviour:
        if name == "latency":
            lat = _build(Latency, value, where)
            if lat.kind not in LATENCY_KINDS:
                raise ConfigError(f"{where}.kind: {lat.kind!r} is not one of {', '.join(LATENCY_KINDS)}")
            for field_name in ("ms", "sd_ms", "sigma", "min_ms", "max_ms"):
                amount = getattr(lat, field_name)
                if not math.isfinite(amount) or amount < 0:
                    raise ConfigError(f"{where}.{field_name}: expected a number of 0 or more, got {amount:g}")
                if amount > MAX_LATENCY_MS and field_name.endswith("ms"):
                    raise ConfigError(
                        f"{where}.{field_name}: {amount:g} ms is above this server's limit of "
                        f"{MAX_LATENCY_MS:g} ms (a minute)"
                    )
            return lat
        if name == "replies":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: expected a non-empty list of strings")
            return tuple(_spoken_text(v, f"{where}[{i}]") for i, v in enumerate(value))
        if name == "tool_calls":
            if not isinstance(value, list):
                raise ConfigError(f"{where}: expected a list of {{turn, name, parameters}}")
            return tuple(_build(ToolCall, v, f"{where}[{i}]") for i, v in enumerate(value))
        if name == "greeting":
            return _spoken_text(value, where)
        if name == "tool_reply":
            return _tool_reply(_spoken_text(value, where), where)
        if name == "chunk_ms":
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not CHUNK_MS_RANGE[0] <= value <= CHUNK_MS_RANGE[1]
            ):
                low, high = CHUNK_MS_RANGE
                raise ConfigError(
                    f"{where}: expected a whole number of ms from {low} to {high} (this server's limits on"
                    f" agent frames), got {value!r}"
                )
            return value
        if name == "voice_wpm":
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{where}: expected a positive whole number")
            return value
        if name == "seed":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{where}: expected a whole number or null")
            return value
        if name == "mode":
            if value not in AGENT_MODES:
                raise ConfigError(f"{where}: {value!r} is not one of {', '.join(AGENT_MODES)}")
            return value
        if name in ("reply_every_s", "read_batch_ms"):
            number = _number(value, where)
            if number < 0:
                raise ConfigError(f"{where}: must be >= 0 (0 = off)")
            return number
    if cls is Faults:
        if name == "output_stalls":
            if not isinstance(value, list):
                raise ConfigError(f"{where}: expected a list of {{after_ms, duration_ms}}")
            return tuple(_build(Stall, v, f"{where}[{i}]") for i, v in enumerate(value))
        if name in ("malformed_messages", "unknown_messages"):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: expected true or false")
            return value
        if name in ("rest_429", "rest_503"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{where}: expected a whole number >= 0")
            return value
        if name == "drop_socket_after_ms" and value is None:
            return None
        number = _number(value, where)
        if number < 0:
            raise ConfigError(f"{where}: must be >= 0")
        return number
    if cls in (Latency, Stall):
        if name == "kind":
            return value
        return _number(value, where)
    if cls is ToolCall:
        if name == "turn" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{where}: expected a user turn number >= 1")
        if name == "name" and not isinstance(value, str):
            raise ConfigError(f"{where}: expected a tool name")
        if name == "parameters" and not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of parameters")
        return value
    return value


def _tool_reply(template: str, where: str) -> str:
    """The tool reply template, whose one field is `{result}`: any other would fail only when a
    tool answered, mid-call."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:  # a lone "{" or "}"
        raise ConfigError(f"{where}: {exc} (write {{{{ and }}}} for literal braces)") from None
    for name in names:
        if name != "result":
            raise ConfigError(
                f"{where}: unknown field {{{name}}}: the only field is {{result}}, the tool's result "
                "(write {{ and }} for literal braces)"
            )
    return template


def agent_from_dict(
    data: dict[str, Any], base: AgentBehaviour | None = None, where: str = "agent"
) -> AgentBehaviour:
    """`base` with the keys of `data` replaced (latency merged key by key)."""
    base = base or AgentBehaviour()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping")
    merged = dataclasses.asdict(base)
    merged["replies"] = list(base.replies)
    merged["tool_calls"] = [dataclasses.asdict(t) for t in base.tool_calls]
    for key, value in data.items():
        if key == "latency" and isinstance(value, dict):
            merged["latency"] = {**merged["latency"], **value}
        else:
            merged[key] = value
    return _build(AgentBehaviour, merged, where)


def faults_from_dict(data: dict[str, Any], base: Faults | None = None, where: str = "faults") -> Faults:
    base = base or Faults()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping")
    merged = dataclasses.asdict(base)
    merged["output_stalls"] = list(merged["output_stalls"])
    merged.update(data)
    return _build(Faults, merged, where)


def call_faults_from_dict(data: dict[str, Any], base: Faults, where: str = "faults") -> Faults:
    """A call's faults from a create body: `base` (the server's) with the keys of `data` replaced;
    a server-wide fault (SERVER_WIDE_FAULTS) in `data` is refused, not silently ignored."""
    if isinstance(data, dict):
        for key in SERVER_WIDE_FAULTS:
            if key in data:
                raise ConfigError(
                    f"{where}.{key}: a server-wide fault, not one of a call (the REST API acts before "
                    f"the call exists): set {key} in the server config's faults or with "
                    "PUT /_uvbench/faults"
                )
    return faults_from_dict(data, base=base, where=where)


def server_config_from_dict(data: dict[str, Any], where: str = "server config") -> ServerConfig:
    """A ServerConfig from a mapping such as a `uvbench serve --config` YAML file."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping")
    known = {"host", "port", "api_key", "plan", "agent", "faults", "close_code", "keep_calls"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    if "host" in data:
        kwargs["host"] = str(data["host"])
    if "port" in data:
        kwargs["port"] = int(data["port"])
    if "api_key" in data:
        kwargs["api_key"] = str(data["api_key"])
    if "close_code" in data:
        kwargs["close_code"] = int(data["close_code"])
    if "keep_calls" in data:
        kwargs["keep_calls"] = keep_calls_value(data["keep_calls"], f"{where}.keep_calls")
    if "plan" in data:
        kwargs["plan"] = plan_from_value(data["plan"], f"{where}.plan")
    if "agent" in data:
        kwargs["agent"] = agent_from_dict(data["agent"], where=f"{where}.agent")
    if "faults" in data:
        kwargs["faults"] = faults_from_dict(data["faults"], where=f"{where}.faults")
    return ServerConfig(**kwargs)


MAX_KEEP_CALLS = 1_000_000


def keep_calls_value(value: Any, where: str) -> int:
    """How many ended calls the server keeps: a whole number from 1 to MAX_KEEP_CALLS."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_KEEP_CALLS:
        raise ConfigError(
            f"{where}: expected a whole number of calls from 1 to {MAX_KEEP_CALLS:,}, got {value!r}"
        )
    return value


def plan_from_value(value: Any, where: str = "plan") -> Plan:
    """A plan by name ("free", "pro", ...) or as a mapping of its limits."""
    if isinstance(value, str):
        if value not in PLANS:
            raise ConfigError(f"{where}: unknown plan {value!r} (known: {', '.join(PLANS)})")
        return PLANS[value]
    if isinstance(value, dict):
        return _build(Plan, {"name": "custom", **value}, where)
    raise ConfigError(f"{where}: expected a plan name or a mapping of limits")
