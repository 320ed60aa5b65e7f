"""REST routes of the local server: the Ultravox call API plus uvbench's `/_uvbench` extensions.

Shapes follow the official OpenAPI schema (uvbench/protocol/openapi.yaml) and the Django REST
Framework conventions Ultravox is built on (as Ultravox documents them): `{"detail": ...}` for auth,
not-found and throttling errors, `{"<field>": ["<message>", ...]}` for validation errors, cursor
pagination with `{next, previous, results, total}`.

Choices where the spec is silent (as Ultravox documents them), all local-server behaviour:
- Default page size 100, largest 1000; an invalid `pageSize` falls back to the default and a
  larger one is cut to 1000, as DRF's pagination does. An unusable cursor is 404 "Invalid cursor".
- `GET /api/calls` sorts by `-created` by default; `sort` accepts `created` and `-created`
  (another value is a 400 naming it; a blank one is the default, as DRF's ordering filter reads it).
  A blank `durationMin`, `durationMax` or `agentIds` filters nothing (django-filter); a time of
  day with an offset (`timeOfDayStart=12:00:00+02:00`) is compared in UTC.
- Operations of the Ultravox API not routed here (tools, voices, corpora, ...) answer as an
  unknown path does: 404 `{"detail": "Not found."}`.
- `GET .../recording` of a call created without `recordingEnabled` is 404 even before the call
  ends: it will never become available, so "425 Too Early" would invite pointless retries. The
  same holds for a call that ended without anyone joining it.
- `DELETE` of a live call ends it (`endReason: hangup`, socket closed) and then deletes it.
- `faults.rest_delay_ms` delays every `/api` answer, errors included, but not `/_uvbench`: the
  control routes stay fast so a test can always turn the fault off again. It and the `rest_429`,
  `rest_503` bursts are server-wide: in a create body's `experimentalSettings.uvbench.faults`
  they are a 400 saying where to set them, not ignored.
- A text the agent would speak (`timeExceededMessage`, `firstSpeakerSettings` texts, the
  uvbench agent's greeting, replies and tool_reply; `content` or `message` of a data message
  sent here) over `config.MAX_SPOKEN_TEXT_CHARS` is a 400 naming the field and the limit: speech
  is synthesized on the event loop every call shares.
- `enableGreetingPrompt` and `throttle` are validated and otherwise ignored: the simulated agent
  has no greeting prompt and the local server has no call throttles.
- Only calls actually created count toward the plan's rate windows; refused or invalid creates
  do not (see limits.py).
- Cursors hold the sort key of a page boundary, not an offset: walking pages while calls are
  created or deleted gives no duplicates and no gaps.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import dataclasses
import datetime as dt
import hmac
import inspect
import json
import logging
import re
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiohttp import web

from uvbench.protocol import strict_json
from uvbench.protocol.durations import DurationError, parse_duration
from uvbench.protocol.schema import RequestValidationError, validate_start_call
from uvbench.server.agent import shown
from uvbench.server.config import (
    AgentBehaviour,
    ConfigError,
    Faults,
    agent_from_dict,
    call_faults_from_dict,
    faults_from_dict,
    spoken_text_excess,
)
from uvbench.server.limits import CreateLimiter
from uvbench.server.state import STATE_KEY, ServerState
from uvbench.server.store import (
    DEFAULT_CLIENT_BUFFER_MS,
    SEVERITIES,
    AgentRecord,
    CallRecord,
    ToolOverrideError,
    agent_call_request,
    iso,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
BUCKETS_S = {"minute": 60, "5min": 300, "hour": 3600, "day": 86400}
DATA_MESSAGE_TYPES = ("forced_agent_message", "hang_up", "user_text_message")
SPOKEN_MESSAGE_FIELDS = {"forced_agent_message": "content", "hang_up": "message"}
"""The field of a data message whose text the agent speaks (at most MAX_SPOKEN_TEXT_CHARS)."""
HISTORY_ROLES = (
    "MESSAGE_ROLE_USER",
    "MESSAGE_ROLE_AGENT",
    "MESSAGE_ROLE_TOOL_CALL",
    "MESSAGE_ROLE_TOOL_RESULT",
)
CALL_TOOL_FIELDS = (
    "description", "dynamicParameters", "staticParameters", "automaticParameters", "timeout",
    "precomputable", "http", "client", "dataConnection", "defaultReaction", "staticResponse",
)  # fmt: skip
"""Keys of `ultravox.v1.CallTool`: a temporary tool's definition minus name and requirements."""
# Django's <uuid:...> path converter: lowercase canonical form only; anything else is a 404.
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DATE_ONLY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A "+hh:mm" offset in an unencoded query string arrives as " hh:mm".
SPACE_OFFSET_RE = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")
TRUE_VALUES = {"t", "y", "yes", "true", "on", "1"}
FALSE_VALUES = {"f", "n", "no", "false", "off", "0"}
REST_PREFIXES = ("/api/", "/_uvbench/")
UNAUTHENTICATED_PATHS = {"/_uvbench/health"}

LIMITER_KEY: web.AppKey[CreateLimiter] = web.AppKey("uvbench_create_limiter", CreateLimiter)
JOIN_TIMERS_KEY: web.AppKey[dict[str, asyncio.TimerHandle]] = web.AppKey("uvbench_join_timers", dict)


# ---------------------------------------------------------------------------------------------
# Errors: handlers raise ApiError; one middleware turns it (and everything else) into JSON.


class ApiError(Exception):
    """An error answer: status, JSON body and extra headers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}

    @classmethod
    def detail(cls, status: int, text: str, headers: dict[str, str] | None = None) -> ApiError:
        return cls(status, {"detail": text}, headers)

    @classmethod
    def field(cls, name: str, message: str) -> ApiError:
        """A DRF validation error on one field (a query parameter or a body key)."""
        return cls(400, {name: [message]})


def not_found() -> ApiError:
    return ApiError.detail(404, "Not found.")


def _error_response(error: ApiError) -> web.Response:
    return web.json_response(error.body, status=error.status, headers=error.headers)


def _is_rest(request: web.Request) -> bool:
    return request.path.startswith(REST_PREFIXES)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors for REST routes and unknown paths; never a traceback in a 500."""
    unmatched = request.match_info.http_exception is not None
    if not (_is_rest(request) or unmatched):
        return await handler(request)  # the websocket route answers for itself
    try:
        return await handler(request)
    except ApiError as error:
        return _error_response(error)
    except web.HTTPException as exc:
        return _error_response(_from_http_exception(request, exc))
    except Exception as exc:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error_response(
            ApiError.detail(500, f"Internal server error ({type(exc).__name__}); see the uvbench server log.")
        )


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return not_found()
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return ApiError.detail(
            405,
            f'Method "{request.method}" not allowed.',
            {"Allow": ", ".join(sorted(exc.allowed_methods))},
        )
    return ApiError.detail(exc.status, exc.text or exc.reason)


@web.middleware
async def delay_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The `rest_delay_ms` fault: a slow API, before anything else is decided."""
    delay_ms = request.app[STATE_KEY].faults.rest_delay_ms
    if delay_ms > 0 and request.path.startswith("/api/"):
        await asyncio.sleep(delay_ms / 1000)
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """X-API-Key (or X-Unsafe-API-Key) on every REST route.

    Like Django, an unknown path is a 404 before any authentication, while a known path with the
    wrong method authenticates first (DRF's dispatch) and only then answers 405.
    """
    routing_error = request.match_info.http_exception
    needs_auth = (
        _is_rest(request)
        and request.path not in UNAUTHENTICATED_PATHS
        and (routing_error is None or routing_error.status == 405)
    )
    if needs_auth:
        _authenticate(request)
    return await handler(request)


def _authenticate(request: web.Request) -> None:
    # aiohttp's headers are case-insensitive, so "x-api-key" and "X-Api-Key" match too.
    given = request.headers.get("X-API-Key")
    if given is None:
        given = request.headers.get("X-Unsafe-API-Key")
    if given is None:
        raise ApiError.detail(401, "Authentication credentials were not provided.")
    expected = request.app[STATE_KEY].config.api_key
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError.detail(401, "Invalid API key.")


# ---------------------------------------------------------------------------------------------
# Small request helpers.


def _state(request: web.Request) -> ServerState:
    return request.app[STATE_KEY]


def _is_uuid(value: Any) -> bool:
    return isinstance(value, str) and UUID_RE.match(value) is not None


def _record(request: web.Request) -> CallRecord:
    """The call named in the path; 404 for a malformed, unknown or deleted id."""
    call_id = request.match_info["call_id"]
    record = _state(request).store.get(call_id) if _is_uuid(call_id) else None
    if record is None:
        raise not_found()
    return record


def _parse_json(raw: bytes) -> Any:
    """The body as DRF's JSONParser reads it: an empty body is an empty object."""
    if not raw.strip():
        return {}
    try:
        return strict_json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:  # malformed, NaN, too deep, a huge integer
        raise ApiError.detail(400, f"JSON parse error - {exc}") from None


def _json_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(
            400,
            {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(data).__name__}."]},
        )
    return data


async def _read_json_object(request: web.Request) -> dict[str, Any]:
    return _json_object(_parse_json(await request.read()))


def _query_bool(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() in TRUE_VALUES:
        return True
    if value.lower() in FALSE_VALUES:
        return False
    raise ApiError.field(name, "Must be a valid boolean.")


def _query_nonblank(request: web.Request, name: str) -> str | None:
    """A string parameter with minLength 1 in the schema: absent is fine, empty is not."""
    value = request.query.get(name)
    if value is not None and not value:
        raise ApiError.field(name, "This field may not be blank.")
    return value


def _query_choice(request: web.Request, name: str, choices: Iterable[str], default: str) -> str:
    value = request.query.get(name, default)
    if value not in choices:
        raise ApiError.field(name, f'"{value}" is not a valid choice.')
    return value


def _query_sort(request: web.Request, choices: Iterable[str], default: str) -> str:
    """`sort` as DRF's ordering filter reads it: absent or blank is the default order."""
    if not request.query.get("sort"):
        return default
    return _query_choice(request, "sort", choices, default)


def _query_datetime(request: web.Request, name: str, *, end_of_day: bool = False) -> dt.datetime | None:
    """An ISO-8601 date-time (naive = UTC); a bare date is the start (or end) of that day."""
    value = request.query.get(name)
    if value is None:
        return None
    try:
        if DATE_ONLY_RE.match(value):
            day = dt.date.fromisoformat(value)
            moment = dt.time.max if end_of_day else dt.time.min
            return dt.datetime.combine(day, moment, tzinfo=dt.UTC)
        parsed = dt.datetime.fromisoformat(SPACE_OFFSET_RE.sub(r"\1+\2", value))
    except ValueError:
        raise ApiError.field(name, "Enter a valid date/time.") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _query_time(request: web.Request, name: str) -> dt.time | None:
    """A time of day in UTC, naive; one given with an offset ("12:00:00+02:00") is moved to UTC."""
    value = request.query.get(name)
    if value is None:
        return None
    try:
        parsed = dt.time.fromisoformat(value)
    except ValueError:
        raise ApiError.field(name, "Enter a valid time.") from None
    if parsed.tzinfo is None:
        return parsed
    # Any date does: the offset of a fixed-offset zone is the same every day.
    moment = dt.datetime.combine(dt.date(2000, 1, 1), parsed).astimezone(dt.UTC)
    return moment.time()


def _query_duration(request: web.Request, name: str) -> float | None:
    value = request.query.get(name)
    if not value:  # django-filter: a blank filter value filters nothing
        return None
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise ApiError.field(name, str(exc)) from None


def _public(item: dict[str, Any]) -> dict[str, Any]:
    """Drops the server's private keys (`_ns`, `_wall`, ...) from a stored object."""
    return {k: v for k, v in item.items() if not k.startswith("_")}


async def _maybe_await(result: Any) -> None:
    # The session's hooks are plain functions today; a coroutine would also be fine.
    if inspect.isawaitable(result):
        await result


# ---------------------------------------------------------------------------------------------
# Cursor pagination, one helper for every list (DRF CursorPagination semantics).
#
# A cursor holds the sort key of the item at a page boundary and a direction, not an offset, so
# walking pages stays free of duplicates and gaps while calls are created or deleted meanwhile.


def _encode_cursor(position: tuple[Any, ...], reverse: bool) -> str:
    raw = json.dumps({"p": list(position), "r": reverse}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[tuple[Any, ...], bool]:
    try:
        data = strict_json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        position, reverse = data["p"], data["r"]
        if not isinstance(position, list) or not isinstance(reverse, bool):
            raise ValueError("bad cursor shape")
        if not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in position):
            raise ValueError("bad cursor position")
        return tuple(position), reverse
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ApiError.detail(404, "Invalid cursor") from None


def _page_size(request: web.Request) -> int:
    # DRF: a missing, malformed or non-positive page size means the default; too large is cut.
    try:
        size = int(request.query["pageSize"])
    except (KeyError, ValueError):
        return DEFAULT_PAGE_SIZE
    if size <= 0:
        return DEFAULT_PAGE_SIZE
    return min(size, MAX_PAGE_SIZE)


def paginated(
    request: web.Request,
    items: Iterable[T],
    key: Callable[[T], tuple[Any, ...]],
    render: Callable[[T], dict[str, Any]],
) -> web.Response:
    """One page of `items` in ascending `key` order, as `{next, previous, results, total}`.

    `key` must be unique per item and stable over time (e.g. (created_ns, call_id) or a list
    index in an append-only list); negate a component to sort descending.
    """
    ordered = sorted(items, key=key)
    keys = [key(item) for item in ordered]
    size = _page_size(request)
    cursor = request.query.get("cursor")
    if cursor is None:
        start, end = 0, min(size, len(ordered))
    else:
        position, reverse = _decode_cursor(cursor)
        try:
            if reverse:  # the page that ends just before `position`
                end = bisect_left(keys, position)
                start = max(0, end - size)
            else:  # the page that starts just after `position`
                start = bisect_right(keys, position)
                end = min(start + size, len(ordered))
        except TypeError:  # a cursor made for another sort order
            raise ApiError.detail(404, "Invalid cursor") from None
    next_url = previous_url = None
    if end < len(ordered):
        next_url = _page_url(request, _encode_cursor(keys[end - 1] if end > start else position, False))
    if start > 0:
        previous_url = _page_url(request, _encode_cursor(keys[start] if end > start else position, True))
    body = {
        "next": next_url,
        "previous": previous_url,
        "results": [render(item) for item in ordered[start:end]],
        "total": len(ordered),
    }
    return web.json_response(body)


def _page_url(request: web.Request, cursor: str) -> str:
    """The request's own URL with every parameter kept and the cursor replaced."""
    query = [(k, v) for k, v in request.query.items() if k != "cursor"]
    query.append(("cursor", cursor))
    return str(request.url.with_query(query))


# ---------------------------------------------------------------------------------------------
# Creating calls.


async def create_call(request: web.Request) -> web.Response:
    return await _create(request, "ultravox.v1.StartCallRequest", agent_id=None)


async def create_agent_call(request: web.Request) -> web.Response:
    """Starts a call of an agent: its call template (agents.py stores agents), the body over it.

    An agent id this server never stored is accepted too, and the call made from the body alone
    (it needs its own `medium`, and `systemPrompt` etc. stay unset), so that scenarios written
    for agents of the real service run here; the call's events say so.
    """
    agent_id = request.match_info["agent_id"]
    if not _is_uuid(agent_id):
        raise not_found()
    return await _create(request, "ultravox.v1.StartAgentCallRequest", agent_id=agent_id)


async def _create(request: web.Request, schema_name: str, agent_id: str | None) -> web.Response:
    state = _state(request)
    store = state.store
    # Read the body first so the rest runs without an await: limit check and record stay atomic.
    raw = await request.read()
    now = store.clock.now_ns()
    _refuse_by_fault(state)
    refusal = request.app[LIMITER_KEY].check(now, store.active_counts()[0])
    if refusal is not None:
        raise ApiError.detail(refusal.status, refusal.detail, {"Retry-After": str(refusal.retry_after_s)})
    _query_bool(request, "enableGreetingPrompt", True)
    _query_nonblank(request, "throttle")
    body = _json_object(_parse_json(raw))
    body, prior = _validate_body(request, body, schema_name, with_prior=agent_id is None)
    request_body = _effective_request(body, prior)
    stored_agent = None if agent_id is None else store.agents.get(agent_id)
    if agent_id is not None:
        request_body = _agent_request(stored_agent, request_body)
    _check_medium(request_body)
    _check_spoken_texts(request_body)
    agent, faults = _call_settings(state, request_body)
    _fill_medium_defaults(request_body)

    record = CallRecord(
        call_id=str(uuid.uuid4()),
        request=request_body,
        created_ns=now,
        created=store.clock.wall(now),
        join_url="",
        agent=agent,
        faults=faults,
        agent_id=agent_id,
        agent_name=None if stored_agent is None else stored_agent.name,
        prior_call_id=None if prior is None else prior.call_id,
    )
    record.join_url = f"{state.ws_base_url}/calls/{record.call_id}/server_web_socket"
    history = _history(prior) if prior is not None else request_body.get("initialMessages", [])
    record.messages = [
        {**message, "callStageMessageIndex": index, "callStageId": record.call_stage_id}
        for index, message in enumerate(history)
    ]
    record.initial_message_count = len(record.messages)
    store.add(record)
    request.app[LIMITER_KEY].record(now)
    record.add_event(now, record.created, "info", "call_created", "Call created.")
    if agent_id is not None and stored_agent is None:
        record.add_event(
            now,
            record.created,
            "info",
            "agent_not_stored",
            f"Agent {agent_id} is not stored on this server (POST /api/agents): the call was made "
            "from the request body alone.",
        )
    _schedule_join_timeout(request.app, record)
    return web.json_response(record.to_api(), status=201)


def _refuse_by_fault(state: ServerState) -> None:
    """The rest_503 / rest_429 fault bursts: the next N creates are refused, server-wide."""
    if state.rest_503_left > 0:
        state.rest_503_left -= 1
        raise ApiError.detail(
            503,
            "Service temporarily unavailable; try again later. (uvbench fault injection: rest_503)",
            {"Retry-After": "1"},
        )
    if state.rest_429_left > 0:
        state.rest_429_left -= 1
        raise ApiError.detail(
            429,
            "Request was throttled. Expected available in 1 second. (uvbench fault injection: rest_429)",
            {"Retry-After": "1"},
        )


def _validate_body(
    request: web.Request, body: dict[str, Any], schema_name: str, *, with_prior: bool
) -> tuple[dict[str, Any], CallRecord | None]:
    """The normalized body and the prior call (`?priorCallId=`, create-call only), if any.

    Errors of the query parameter and of the body come back together in one DRF dict.
    """
    prior_id = request.query.get("priorCallId") if with_prior else None
    errors: dict[str, Any] = {}
    prior = None
    if prior_id is not None:
        if not _is_uuid(prior_id):
            errors["priorCallId"] = [f'"{prior_id}" is not a valid UUID.']
        else:
            prior = _state(request).store.get(prior_id)
            if prior is None:
                errors["priorCallId"] = [f'Invalid pk "{prior_id}" - object does not exist.']
    normalized: dict[str, Any] = {}
    try:
        normalized = validate_start_call(body, schema_name=schema_name, prior_call_id=prior_id)
    except RequestValidationError as exc:
        errors = {**exc.errors, **errors}
    if errors:
        raise ApiError(400, errors)
    return normalized, prior


def _effective_request(body: dict[str, Any], prior: CallRecord | None) -> dict[str, Any]:
    """The body, over the prior call's properties when there is one (field by field)."""
    if prior is None:
        return copy.deepcopy(body)
    inherited = {k: v for k, v in copy.deepcopy(prior.request).items() if k != "initialMessages"}
    inherited.update(copy.deepcopy(body))
    return inherited


def _agent_request(agent: AgentRecord | None, body: dict[str, Any]) -> dict[str, Any]:
    """A call of an agent: its template (none for an agent this server never stored), body over."""
    try:
        return agent_call_request(None if agent is None else agent.call_template, body)
    except ToolOverrideError as exc:
        raise ApiError(400, {"toolOverrides": exc.errors}) from None


def _history(prior: CallRecord) -> list[dict[str, Any]]:
    """The prior call's conversation as initial messages: no timespans, stage fields renewed."""
    drop = {"timespan", "wallClockTimespan", "callStageMessageIndex", "callStageId"}
    return [
        {k: copy.deepcopy(v) for k, v in _public(message).items() if k not in drop}
        for message in prior.messages
        if message.get("role") in HISTORY_ROLES
    ]


def _check_medium(request_body: dict[str, Any]) -> None:
    medium = request_body.get("medium")
    if not isinstance(medium, dict) or set(medium) != {"serverWebSocket"}:
        given = (
            ", ".join(sorted(medium)) if isinstance(medium, dict) and medium else "none (webRtc by default)"
        )
        raise ApiError.field(
            "medium",
            "The uvbench local server serves only medium.serverWebSocket; got "
            f"{given}. Create the call with "
            '"medium": {"serverWebSocket": {"inputSampleRate": 16000}}.',
        )


SPOKEN_REQUEST_FIELDS = (
    ("timeExceededMessage",),
    ("firstSpeakerSettings", "agent", "text"),
    ("firstSpeakerSettings", "user", "fallback", "text"),
)
"""Where a call's request holds a text the agent speaks (config.MAX_SPOKEN_TEXT_CHARS)."""


def _check_spoken_texts(request_body: dict[str, Any]) -> None:
    """Each text the agent would speak within MAX_SPOKEN_TEXT_CHARS. Checked on the request as the
    call will run it (an agent's template and a prior call's properties merged), so a text is
    refused whatever it came from; every one over the limit in one DRF error body."""
    errors: dict[str, Any] = {}
    for path in SPOKEN_REQUEST_FIELDS:
        value: Any = request_body
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        excess = spoken_text_excess(value) if isinstance(value, str) else None
        if excess is None:
            continue
        node = errors
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = [f"This text is {excess}; shorten it."]
    if errors:
        raise ApiError(400, errors)


def _call_settings(state: ServerState, request_body: dict[str, Any]) -> tuple[AgentBehaviour, Faults]:
    """The call's simulated agent and faults: the server's, experimentalSettings.uvbench over."""
    settings = (request_body.get("experimentalSettings") or {}).get("uvbench")
    if settings is None:
        return state.config.agent, state.faults
    where = "experimentalSettings.uvbench"
    try:
        if not isinstance(settings, dict):
            raise ConfigError(f"{where}: expected a mapping with agent and/or faults")
        unknown = sorted(set(settings) - {"agent", "faults"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: agent, faults)")
        agent = agent_from_dict(settings.get("agent", {}), base=state.config.agent, where=f"{where}.agent")
        faults = call_faults_from_dict(settings.get("faults", {}), base=state.faults, where=f"{where}.faults")
    except ConfigError as exc:
        raise ApiError.field("experimentalSettings", str(exc)) from None
    return agent, faults


def _fill_medium_defaults(request_body: dict[str, Any]) -> None:
    # Stored as the server applies them, so GET shows the rates the socket will use (PROTOCOL §3.3).
    ws = request_body["medium"]["serverWebSocket"]
    ws.setdefault("outputSampleRate", ws["inputSampleRate"])
    ws.setdefault("clientBufferSizeMs", DEFAULT_CLIENT_BUFFER_MS)


def _schedule_join_timeout(app: web.Application, record: CallRecord) -> None:
    state = app[STATE_KEY]
    timers = app[JOIN_TIMERS_KEY]

    def expire() -> None:
        timers.pop(record.call_id, None)
        if record.joined_ns is not None or state.store.get(record.call_id) is not record:
            return  # joined in time, or deleted
        now = state.store.clock.now_ns()
        if state.store.mark_ended(record, now, "unjoined"):
            record.add_event(now, state.store.clock.wall(now), "info", "call_ended", "Call ended: unjoined.")

    loop = asyncio.get_running_loop()
    timers[record.call_id] = loop.call_later(max(0.0, record.join_timeout_s), expire)


async def _cancel_join_timers(app: web.Application) -> None:
    for handle in app[JOIN_TIMERS_KEY].values():
        handle.cancel()
    app[JOIN_TIMERS_KEY].clear()


# ---------------------------------------------------------------------------------------------
# Listing, reading and deleting calls.


def _call_duration_s(record: CallRecord) -> float | None:
    if record.joined_ns is None or record.ended_ns is None:
        return None
    return (record.ended_ns - record.joined_ns) / 1e9


def _call_filters(request: web.Request, agent_id: str | None) -> list[Callable[[CallRecord], bool]]:
    """The list filters of GET /api/calls, each validated up front (400 names the parameter)."""
    q = request.query
    checks: list[Callable[[CallRecord], bool]] = []
    agent_ids = [a for v in q.getall("agentIds", []) for a in v.split(",") if a]
    if agent_id is not None:
        agent_ids = [agent_id]
    for value in agent_ids:
        if not _is_uuid(value):
            raise ApiError.field("agentIds", f'"{value}" is not a valid UUID.')
    if agent_ids:
        checks.append(lambda r: r.agent_id in agent_ids)
    from_date = _query_datetime(request, "fromDate")
    if from_date is not None:
        checks.append(lambda r: r.created >= from_date)
    to_date = _query_datetime(request, "toDate", end_of_day=True)
    if to_date is not None:
        checks.append(lambda r: r.created <= to_date)
    day_start = _query_time(request, "timeOfDayStart")
    if day_start is not None:
        checks.append(lambda r: r.created.astimezone(dt.UTC).time() >= day_start)
    day_end = _query_time(request, "timeOfDayEnd")
    if day_end is not None:
        checks.append(lambda r: r.created.astimezone(dt.UTC).time() <= day_end)
    duration_min = _query_duration(request, "durationMin")
    if duration_min is not None:  # calls without a duration (not joined or not ended) never match
        checks.append(lambda r: (d := _call_duration_s(r)) is not None and d >= duration_min)
    duration_max = _query_duration(request, "durationMax")
    if duration_max is not None:
        checks.append(lambda r: (d := _call_duration_s(r)) is not None and d <= duration_max)
    voice_id = q.get("voiceId")
    if voice_id is not None:
        if not _is_uuid(voice_id):
            raise ApiError.field("voiceId", f'"{voice_id}" is not a valid UUID.')
        checks.append(lambda r: r.request.get("voice") == voice_id)
    for name, value in q.items():
        if name.startswith("metadata."):
            meta_key = name[len("metadata.") :]
            checks.append(lambda r, k=meta_key, v=value: (r.request.get("metadata") or {}).get(k) == v)
    search = _query_nonblank(request, "search")
    if search is not None:
        checks.append(lambda r: _matches_search(r, search))
    return checks


def _matches_search(record: CallRecord, text: str) -> bool:
    needle = text.casefold()
    haystack = [
        record.request.get("systemPrompt") or "",
        *(record.request.get("metadata") or {}).values(),
    ]
    return any(needle in str(value).casefold() for value in haystack)


async def list_calls(request: web.Request) -> web.Response:
    return _list_calls(request, agent_id=None)


async def list_agent_calls(request: web.Request) -> web.Response:
    agent_id = request.match_info["agent_id"]
    if not _is_uuid(agent_id):
        raise not_found()
    return _list_calls(request, agent_id=agent_id)


def _list_calls(request: web.Request, agent_id: str | None) -> web.Response:
    sort = _query_sort(request, ("created", "-created"), "-created")
    checks = _call_filters(request, agent_id)
    calls = [r for r in _state(request).store.calls.values() if all(check(r) for check in checks)]
    sign = -1 if sort.startswith("-") else 1
    return paginated(request, calls, key=lambda r: (sign * r.created_ns, r.call_id), render=CallRecord.to_api)


async def get_call(request: web.Request) -> web.Response:
    return web.json_response(_record(request).to_api())


async def delete_call(request: web.Request) -> web.Response:
    record = _record(request)
    store = _state(request).store
    if record.session is not None and record.live:
        await _maybe_await(record.session.end_call("hangup"))
    if record.ended_ns is None:
        # Ending first keeps the concurrency series right; the session's own (later) end is a no-op.
        now = store.clock.now_ns()
        if store.mark_ended(record, now, "hangup"):
            record.add_event(
                now, store.clock.wall(now), "info", "call_ended", "Call ended: hangup (deleted)."
            )
    timer = request.app[JOIN_TIMERS_KEY].pop(record.call_id, None)
    if timer is not None:
        timer.cancel()
    store.delete(record.call_id)
    return web.Response(status=204)


async def list_messages(request: web.Request) -> web.Response:
    record = _record(request)
    mode = _query_choice(request, "mode", ("last_stage", "in_call"), "last_stage")
    # One stage per call: last_stage is every message; in_call drops the initial messages.
    first = record.initial_message_count if mode == "in_call" else 0
    indexed = list(enumerate(record.messages))[first:]
    return paginated(request, indexed, key=lambda im: (im[0],), render=lambda im: _public(im[1]))


async def list_events(request: web.Request) -> web.Response:
    record = _record(request)
    minimum = _query_choice(request, "minimum_severity", SEVERITIES, "info")
    event_type = _query_nonblank(request, "type")
    floor = SEVERITIES.index(minimum)
    indexed = [
        (i, event)
        for i, event in enumerate(record.events)
        if SEVERITIES.index(event["severity"]) >= floor
        and (event_type is None or event["type"] == event_type)
    ]
    return paginated(request, indexed, key=lambda ie: (ie[0],), render=lambda ie: _public(ie[1]))


async def get_recording(request: web.Request) -> web.Response:
    record = _record(request)
    if not record.recording_enabled:
        raise ApiError.detail(
            404, "Recording was not enabled for this call; create it with recordingEnabled: true."
        )
    if record.agent.mode == "sink":
        raise ApiError.detail(404, "Nothing is recorded: the call's agent is the sink (agent.mode sink).")
    if record.ended_ns is not None and record.joined_ns is None:
        # Nobody joined, so nothing was recorded: 425 would have the client retry forever.
        raise ApiError.detail(404, "Nothing was recorded: the call ended without anyone joining it.")
    if record.ended_ns is None or record.recording_wav is None:
        # The session writes the WAV just after the end, so "ended but no bytes" is also too early.
        raise ApiError.detail(425, "Recording not available yet: the call has not ended.")
    return web.Response(body=record.recording_wav, content_type="audio/wav")


async def send_data_message(request: web.Request) -> web.Response:
    record = _record(request)
    message = await _read_json_object(request)
    kind = message.get("type")
    if kind is None:
        raise ApiError.field("type", "This field is required.")
    if kind not in DATA_MESSAGE_TYPES:
        raise ApiError.field(
            "type",
            f"Unsupported data message type {shown(kind)}; this endpoint accepts "
            f"{', '.join(DATA_MESSAGE_TYPES)}.",
        )
    if kind == "user_text_message" and not isinstance(message.get("text"), str):
        raise ApiError.field("text", "This field is required.")
    spoken_field = SPOKEN_MESSAGE_FIELDS.get(kind)
    if spoken_field is not None and isinstance(spoken := message.get(spoken_field), str):
        excess = spoken_text_excess(spoken)
        if excess is not None:
            raise ApiError.field(spoken_field, f"This text is {excess}; shorten it.")
    if not record.live or record.session is None:
        raise ApiError.detail(422, "call is not active (not joined yet or already ended)")
    await _maybe_await(record.session.deliver_data_message(message))
    return web.Response(status=204)


# ---------------------------------------------------------------------------------------------
# Stages and tools: the local server has exactly one stage per call.


def _stage(record: CallRecord) -> dict[str, Any]:
    req = record.request
    call = record.to_api()
    stage: dict[str, Any] = {
        "callId": record.call_id,
        "callStageId": record.call_stage_id,
        "created": iso(record.created),
        "inactivityMessages": req.get("inactivityMessages", []),
        "initialTokenCount": None,
        "latestTokenCount": None,
        "languageHint": req.get("languageHint"),
        "model": call["model"],
        "systemPrompt": req.get("systemPrompt"),
        "temperature": float(req.get("temperature", 0.0)),
        "timeExceededMessage": req.get("timeExceededMessage"),
        "voice": call["voice"],
        "errorCount": sum(1 for e in record.events if e["severity"] == "error"),
        "experimentalSettings": req.get("experimentalSettings"),
        "initialState": req.get("initialState", {}),
    }
    for optional in ("externalVoice", "voiceOverrides"):
        if optional in req:
            stage[optional] = req[optional]
    return stage


def _stage_record(request: web.Request) -> CallRecord:
    record = _record(request)
    if request.match_info["call_stage_id"] != record.call_stage_id:
        raise not_found()
    return record


async def list_stages(request: web.Request) -> web.Response:
    record = _record(request)
    return paginated(request, [record], key=lambda r: (0,), render=_stage)


async def get_stage(request: web.Request) -> web.Response:
    return web.json_response(_stage(_stage_record(request)))


async def list_stage_messages(request: web.Request) -> web.Response:
    record = _stage_record(request)
    indexed = list(enumerate(record.messages))
    return paginated(request, indexed, key=lambda im: (im[0],), render=lambda im: _public(im[1]))


def _selected_tools(record: CallRecord) -> list[dict[str, Any]]:
    # An agent call's toolOverrides are already applied to its selectedTools (agent_call_request).
    return list(record.request.get("selectedTools") or [])


def _call_tool(record: CallRecord, index: int, selected: dict[str, Any]) -> dict[str, Any]:
    """A `CallTool`: a temporary tool's definition as the call uses it.

    Durable tools (toolId / toolName) are not stored by the local server: their definition is empty.
    """
    temporary = selected.get("temporaryTool") or {}
    definition = {k: copy.deepcopy(v) for k, v in temporary.items() if k in CALL_TOOL_FIELDS}
    if "descriptionOverride" in selected:
        definition["description"] = selected["descriptionOverride"]
    name = (
        selected.get("nameOverride")
        or temporary.get("modelToolName")
        or selected.get("toolName")
        or selected.get("toolId")
        or f"tool_{index}"
    )
    tool_id = selected.get("toolId")
    return {
        "callToolId": str(uuid.uuid5(uuid.UUID(record.call_id), f"tool-{index}")),
        "toolId": tool_id if _is_uuid(tool_id) else None,
        "name": name,
        "definition": definition,
    }


async def list_tools(request: web.Request) -> web.Response:
    record = _record(request)
    return web.json_response([_call_tool(record, i, t) for i, t in enumerate(_selected_tools(record))])


async def list_stage_tools(request: web.Request) -> web.Response:
    record = _stage_record(request)
    return web.json_response([_call_tool(record, i, t) for i, t in enumerate(_selected_tools(record))])


# ---------------------------------------------------------------------------------------------
# Account usage.


def _day_before(moment: dt.datetime) -> dt.datetime:
    try:
        return moment - dt.timedelta(hours=24)
    except OverflowError:  # within a day of year 1; the range is clipped to the server's life anyway
        return dt.datetime.min.replace(tzinfo=dt.UTC)


async def usage_concurrency(request: web.Request) -> web.Response:
    store = _state(request).store
    bucket = _query_choice(request, "bucket", BUCKETS_S, "minute")
    clock = store.clock
    now_ns = clock.now_ns()
    end = _query_datetime(request, "end") or clock.wall(now_ns)
    start = _query_datetime(request, "start") or _day_before(end)

    def to_ns(moment: dt.datetime) -> int:
        return clock.anchor_ns + round((moment - clock.anchor_wall).total_seconds() * 1e9)

    # Nothing is known before the server started or after now: clip instead of inventing zeros.
    start_ns = max(to_ns(start), store.concurrency[0].ns)
    end_ns = min(to_ns(end), now_ns)
    series = store.concurrency_series(BUCKETS_S[bucket], start_ns, end_ns)
    return web.json_response({"timeSeries": series})


# ---------------------------------------------------------------------------------------------
# uvbench extensions (not part of the Ultravox API).


async def ground_truth(request: web.Request) -> web.Response:
    record = _record(request)
    lateness = _query_bool(request, "lateness", False)
    arrivals = _query_bool(request, "input", False)
    truth = record.truth.to_dict(lateness_values=lateness, input_values=arrivals)
    body = {
        "callId": record.call_id,
        "created_ns": record.created_ns,
        **truth,
        # The store's join time stands in while the session has not written its own yet.
        "joined_ns": truth["joined_ns"] if truth["joined_ns"] is not None else record.joined_ns,
        "ended_ns": record.ended_ns,
        "endReason": record.end_reason,
    }
    return web.json_response(body)


def _faults_mapping(faults: Faults) -> dict[str, Any]:
    """A Faults as the plain mapping faults_from_dict takes (output_stalls a list, not a tuple)."""
    mapping = dataclasses.asdict(faults)
    mapping["output_stalls"] = list(mapping["output_stalls"])
    return mapping


def _faults_view(state: ServerState) -> dict[str, Any]:
    # rest_429/rest_503 show what is left of the bursts, so the answer can be PUT back as is.
    view = _faults_mapping(state.faults)
    view["rest_429"] = state.rest_429_left
    view["rest_503"] = state.rest_503_left
    return view


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(_faults_view(_state(request)))


async def put_faults(request: web.Request) -> web.Response:
    """Replaces the server-wide faults (keys not given return to their defaults)."""
    state = _state(request)
    body = await _read_json_object(request)
    try:
        faults = faults_from_dict(body, where="faults")
    except ConfigError as exc:
        raise ApiError.detail(400, str(exc)) from None
    state.set_faults(faults)
    return web.json_response(_faults_view(state))


async def health(request: web.Request) -> web.Response:
    total, joined = _state(request).store.active_counts()
    return web.json_response({"status": "ok", "activeCalls": total, "joinedCalls": joined})


# ---------------------------------------------------------------------------------------------


def setup_routes(app: web.Application) -> None:
    app[LIMITER_KEY] = CreateLimiter(app[STATE_KEY].config.plan)
    app[JOIN_TIMERS_KEY] = {}
    app.on_cleanup.append(_cancel_join_timers)
    # Outermost first: errors wrap everything, the delay precedes auth so 401s are slow too.
    app.middlewares.extend([error_middleware, delay_middleware, auth_middleware])
    call = "/api/calls/{call_id}"
    stage = call + "/stages/{call_stage_id}"
    routes = [
        web.post("/api/calls", create_call),
        web.get("/api/calls", list_calls),
        web.post("/api/agents/{agent_id}/calls", create_agent_call),
        web.get("/api/agents/{agent_id}/calls", list_agent_calls),
        web.get(call, get_call),
        web.delete(call, delete_call),
        web.get(call + "/messages", list_messages),
        web.get(call + "/events", list_events),
        web.get(call + "/recording", get_recording),
        web.post(call + "/send_data_message", send_data_message),
        web.get(call + "/stages", list_stages),
        web.get(stage, get_stage),
        web.get(stage + "/messages", list_stage_messages),
        web.get(stage + "/tools", list_stage_tools),
        web.get(call + "/tools", list_tools),
        web.get("/api/accounts/me/usage/concurrency", usage_concurrency),
        web.get("/_uvbench/calls/{call_id}/ground_truth", ground_truth),
        web.get("/_uvbench/faults", get_faults),
        web.put("/_uvbench/faults", put_faults),
        web.get("/_uvbench/health", health),
    ]
    app.add_routes(routes)
