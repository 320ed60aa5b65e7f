"""Schema-driven fuzzing of the local server's REST API against the vendored official schema.

schemathesis generates requests for every operation of uvbench/protocol/openapi.yaml that the
local server serves (valid ones and deliberately invalid ones) and holds each answer to the
schema with its built-in checks: never a 5xx, bodies and headers as the schema says, a 401 when
the key is left out, an unsupported method refused, invalid input refused and valid input
accepted. Some of the generated cases are steered past the first refusal: call ids swapped for
real calls' (unjoined, live, ended), create bodies cut down to what the server can make a call
of, data messages given a type the endpoint takes, list queries given a sort order and durations
the server reads. Operations the server does not serve must give
the documented 404 instead.

Where the official schema cannot describe what the real service does, the check in question is
narrowed, never dropped, and the reason sits next to the narrowing (`documented_status`,
`negative_data_rejection_narrowed`, `positive_data_acceptance_narrowed`).

Bounded for a busy 2-core machine: MAX_EXAMPLES (CALL_BODY_EXAMPLES) generated cases per
operation, no deadline.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import schemathesis
import websockets
import websockets.sync.client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from uvbench.protocol.schema import _NULLABLE_ERRATA, load_openapi
from uvbench.server import ServerConfig
from uvbench.server.app import ServerThread, build_app
from uvbench.server.rest import UUID_RE
from uvbench.server.state import ServerState

# schemathesis's own strategies draw from the `random` module (its semantic overlays and
# mutations), which Hypothesis warns about in every test that uses them; nothing here does.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"
)

MAX_EXAMPLES = 50
"""Generated cases per operation, valid and invalid: the whole file runs in well under a minute
on a loaded 2-core machine."""
CALL_BODY_EXAMPLES = 30
"""The same for CALL_BODY_OPERATIONS."""
CALL_KINDS = ("generated", "unjoined", "live", "ended")
"""What a generated call id becomes: itself (almost surely unknown: 404), or a real call's id."""
CALL_BODY_OPERATIONS = {
    ("POST", "/api/calls"),
    ("POST", "/api/agents/{agent_id}/calls"),
    ("POST", "/api/agents"),
    ("PATCH", "/api/agents/{agent_id}"),
}
"""Operations whose body is a whole call (or call template): a few hundred properties deep and
slow to generate, so they get fewer cases."""
CREATE_OPERATIONS = {("POST", "/api/calls"), ("POST", "/api/agents/{agent_id}/calls")}
SEND_DATA_MESSAGE = "/api/calls/{call_id}/send_data_message"
DELIVERABLE = (
    {"type": "user_text_message", "text": "Where is my parcel?"},
    {"type": "forced_agent_message", "content": "One moment, please."},
    {"type": "hang_up", "message": ""},
)
S16LE_SILENCE_200MS = bytes(6400)  # 16 kHz


def _served_operations() -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the server registers, in the schema's notation."""
    app = build_app(ServerState(ServerConfig()))
    return {(route.method, route.resource.canonical) for route in app.router.routes() if route.resource}


SERVED = _served_operations()
OPENAPI = load_openapi()
# Every operation of the schema, with the query parameters it declares (DRF ignores others).
QUERY_NAMES = {
    (method.upper(), path): {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
    for path, ops in OPENAPI["paths"].items()
    for method, op in ops.items()
    if isinstance(op, dict)
}
UNSERVED = sorted(set(QUERY_NAMES) - SERVED)


def _with_errata(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of the official schema with the errata uvbench's own response validation applies
    (uvbench/protocol/schema.py): properties the real service returns as null although the schema
    does not say they may be (Call.agent of a call made without an agent)."""
    fixed = copy.deepcopy(document)
    for component, prop in _NULLABLE_ERRATA:
        fixed["components"]["schemas"][component]["properties"][prop]["nullable"] = True
    return fixed


API_KEY = "fuzzTest.abcdefghijklmnopqrstuvwxyz012345"
OFFICIAL = schemathesis.openapi.from_dict(
    _with_errata(OPENAPI),
    # The key goes on every case as the schema's security scheme says; left to be generated, the
    # key would be missing from most invalid cases, spending them on 401s. Requests without it
    # are still made, by the built-in ignored_auth check.
    config=schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"apiKeyAuth": {"api_key": API_KEY}}},
            "generation": {"with-security-parameters": False},
        }
    ),
)
FUZZED = sorted(op for op in SERVED if op in QUERY_NAMES)
"""The schema's operations the server routes (the rest are UNSERVED)."""


def _cases(method: str, path: str) -> st.SearchStrategy[schemathesis.Case]:
    """Valid requests and deliberately invalid ones, half and half."""
    operation = OFFICIAL[path][method]
    return st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )


# -- the server and its real calls -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(ServerConfig(api_key=API_KEY)) as running:
        yield running


class RealCalls:
    """Calls on the fuzzed server in known states, re-made whenever the fuzzer deletes or ends one."""

    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.base_url, headers={"X-API-Key": server.api_key}, timeout=10)
        self.ids: dict[str, str] = {}
        self.live_sockets = contextlib.ExitStack()

    def close(self) -> None:
        self.live_sockets.close()
        self.http.close()

    def id_of(self, kind: str) -> str:
        record = self.server.server.store.get(self.ids.get(kind, ""))
        fits = (
            record is not None
            and {
                "unjoined": record.joined_ns is None and record.ended_ns is None,
                "live": record.live,
                "ended": record.ended_ns is not None and record.recording_wav is not None,
            }[kind]
        )
        if not fits:
            self.ids[kind] = getattr(self, f"_make_{kind}")()
        return self.ids[kind]

    def _create(self) -> dict[str, Any]:
        body = {
            "systemPrompt": "You are fuzzed.",
            "medium": {"serverWebSocket": {"inputSampleRate": 16000}},
            "firstSpeakerSettings": {"user": {}},
            "recordingEnabled": True,
            "selectedTools": [{"temporaryTool": {"modelToolName": "lookup", "client": {}}}],
        }
        response = self.http.post("/api/calls", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def _make_unjoined(self) -> str:
        return self._create()["callId"]

    def _make_live(self) -> str:
        call = self._create()
        ws = self.live_sockets.enter_context(websockets.sync.client.connect(call["joinUrl"]))
        # Read whatever the agent says (data messages the fuzzer sends make it speak) so the
        # server's writes never wait on a full socket.
        threading.Thread(target=_read_until_closed, args=(ws,), daemon=True).start()
        return call["callId"]

    def _make_ended(self) -> str:
        call = self._create()
        with websockets.sync.client.connect(call["joinUrl"]) as ws:
            ws.send(S16LE_SILENCE_200MS)
            ws.send('{"type": "user_text_message", "text": "hello"}')
        record = self.server.server.store.get(call["callId"])
        deadline = time.monotonic() + 10
        while record.recording_wav is None:  # written by the session just after the socket closed
            assert time.monotonic() < deadline, "the ended call's recording never appeared"
            time.sleep(0.01)
        return call["callId"]

    def substitute(self, case: schemathesis.Case) -> None:
        """Swaps a generated call id (a well-formed one only: malformed ids stay the fuzzer's)
        for a real call's, chosen by the id itself so a failing case replays the same way."""
        params = case.path_parameters or {}
        generated = params.get("call_id")
        if not isinstance(generated, str) or not UUID_RE.match(generated):
            return
        kind = CALL_KINDS[zlib.crc32(generated.encode()) % len(CALL_KINDS)]
        if kind == "generated":
            return
        call_id = self.id_of(kind)
        swapped = {**params, "call_id": call_id}
        if "call_stage_id" in params:
            swapped["call_stage_id"] = self.server.server.store.get(call_id).call_stage_id
        case.path_parameters = swapped


def _read_until_closed(ws: websockets.sync.client.ClientConnection) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        for _ in ws:
            pass


@pytest.fixture(scope="module")
def real_calls(server: ServerThread) -> Iterator[RealCalls]:
    calls = RealCalls(server)
    yield calls
    calls.close()


# -- checks narrowed where the official schema cannot say what the service does --------------------

# The official schema lists only each operation's success answers, but the service it describes
# answers errors too, with DRF's bodies: 400 for invalid input, 401 without a valid key, 404 for
# an unknown id or cursor, 422 for a data message to a call that is not live, 425 for a recording
# not made yet (the Ultravox docs name all of these). The built-in status_code_conformance would
# fail on every one of them, so this check replaces it and accepts those errors and nothing else,
# and only with a DRF error body.
ERRORS_ANYWHERE = {400, 401, 404}
ERRORS_OF = {
    ("POST", SEND_DATA_MESSAGE): {422},
    ("GET", "/api/calls/{call_id}/recording"): {425},
}


def _operation(case: schemathesis.Case) -> tuple[str, str]:
    return case.operation.method.upper(), case.operation.path


def _is_drf_error(body: Any) -> bool:
    """`{"detail": "..."}`, or field errors: `{"field": ["...", ...]}`, nested for nested objects."""
    if not isinstance(body, dict) or not body:
        return False
    if set(body) == {"detail"}:
        return isinstance(body["detail"], str) and bool(body["detail"])
    return all(
        (isinstance(v, list) and v and all(isinstance(m, str) for m in v)) or _is_drf_error(v)
        for v in body.values()
    )


@schemathesis.check
def documented_status(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    if str(response.status_code) in case.operation.responses.status_codes:
        return
    operation = _operation(case)
    # schemathesis also sends methods the path does not have: DRF answers 405 to those.
    allowed = ERRORS_ANYWHERE | ERRORS_OF.get(operation, set())
    if case.method.upper() != operation[0]:
        allowed = allowed | {405}
    assert response.status_code in allowed, (
        f"{response.status_code} is neither in the schema for {operation} nor an error the service "
        f"documents for it ({sorted(allowed)})"
    )
    assert _is_drf_error(response.json()), f"not a DRF error body: {response.text[:300]}"


BLANK_IS_NOT_GIVEN = {"sort", "durationMin", "durationMax", "agentIds"}


def _sent_query(response: schemathesis.Response) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(response.request.url).query, keep_blank_values=True)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


@schemathesis.check
def negative_data_rejection_narrowed(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """The built-in check, except for leniencies of the real service (DRF, django-filter) the
    schema does not state, which the local server shares (rest.py): a query parameter it does not
    know is ignored, a `pageSize` that is not an integer means the default page size, and a blank
    filter (BLANK_IS_NOT_GIVEN) filters nothing."""
    declared = QUERY_NAMES[_operation(case)]
    for name, value in _sent_query(response):
        if name not in declared and not (name.startswith("metadata.") and "metadata" in declared):
            return
        if name == "pageSize" and not _is_int(value):
            return
        if name in BLANK_IS_NOT_GIVEN and not value:
            return
    checks.negative_data_rejection(ctx, response, case)


# Query parameters the official schema leaves as free strings and the service parses: `sort`
# takes `created` or `-created`, durations are "<seconds>s". Any other value is a 400 naming the
# parameter; a blank one means "not given" (DRF's ordering filter, django-filter), so it must pass.
UNDER_SPECIFIED_QUERY = {
    ("GET", "/api/calls"): {"sort", "durationMin", "durationMax"},
    ("GET", "/api/agents"): {"sort"},
}
TAKEN_VALUES = {"sort": "created", "durationMin": "0.5s", "durationMax": "3600s"}
# Body fields likewise: `type` of a data message is any string in the schema; the endpoint takes
# three types, and `text` with one of them.
UNDER_SPECIFIED_BODY = {("POST", SEND_DATA_MESSAGE): {"type", "text"}}
# Whole-call bodies (CALL_BODY_OPERATIONS): the schema cannot state "exactly one medium", "exactly
# one of agent or user", sample-rate ranges and the other rules its descriptions give, and the
# local server serves only the serverWebSocket medium (README). A 400 on one of these is exempt
# unless it names a query parameter other than `priorCallId` (an id of no call is a 400 in DRF).


@schemathesis.check
def positive_data_acceptance_narrowed(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """The built-in check, except for 400s that name only what the schema under-specifies, and for
    the errors that come from the call's state rather than the request (ERRORS_OF: 422, 425)."""
    operation = _operation(case)
    if response.status_code in ERRORS_OF.get(operation, set()):
        return
    if response.status_code == 400 and _is_drf_error(body := response.json()):
        named = set(body)
        if operation in CALL_BODY_OPERATIONS and not named & (QUERY_NAMES[operation] - {"priorCallId"}):
            return
        if named <= UNDER_SPECIFIED_BODY.get(operation, set()):
            return
        sent = dict(_sent_query(response))
        if named <= UNDER_SPECIFIED_QUERY.get(operation, set()) and all(sent.get(n) for n in named):
            return
    checks.positive_data_acceptance(ctx, response, case)


EXCLUDED = [checks.status_code_conformance, checks.negative_data_rejection, checks.positive_data_acceptance]
NARROWED = [documented_status, negative_data_rejection_narrowed, positive_data_acceptance_narrowed]


# -- creates that get through ---------------------------------------------------------------------

# Fields of a create body that no rule across fields touches: a generated body cut down to these,
# with a medium this server serves, is one the server must accept (201).
CREATABLE_FIELDS = (
    "systemPrompt", "model", "languageHint", "joinTimeout", "maxDuration", "timeExceededMessage",
    "recordingEnabled", "transcriptOptional", "initialOutputMedium", "metadata", "initialState",
)  # fmt: skip


def _make_creatable(case: schemathesis.Case) -> None:
    """Cuts half the generated create bodies (chosen by the body itself, so a failing case replays
    the same way) down to CREATABLE_FIELDS and a serverWebSocket medium. Left whole, a generated
    body all but never passes the rules the schema cannot state (exactly one medium, ...), and the
    fuzzer would never see a call created."""
    if _operation(case) not in CREATE_OPERATIONS or not isinstance(case.body, dict):
        return
    if zlib.crc32(repr(sorted(case.body.items())).encode()) % 2:
        return
    body = {k: v for k, v in case.body.items() if k in CREATABLE_FIELDS}
    body["medium"] = {"serverWebSocket": {"inputSampleRate": 16000}}
    case.body = body


# -- the tests ---------------------------------------------------------------------------------------


def _make_deliverable(case: schemathesis.Case) -> None:
    """Gives half the generated data messages (chosen by the body itself) a type the endpoint
    takes, with the field that type needs: a free string `type` all but never is one, and the
    fuzzer would never see a message delivered (204) or refused for the call's state (422)."""
    if _operation(case) != ("POST", SEND_DATA_MESSAGE) or not isinstance(case.body, dict):
        return
    choice = zlib.crc32(repr(sorted(case.body.items())).encode()) % (2 * len(DELIVERABLE))
    if choice < len(DELIVERABLE):
        case.body = {**case.body, **DELIVERABLE[choice]}


def _make_listable(case: schemathesis.Case) -> None:
    """Gives half the generated list queries (chosen by the query itself) values the server takes
    for the parameters the schema leaves as free strings (UNDER_SPECIFIED_QUERY): a free string is
    all but never one, and the fuzzer would never get past that 400 to the filters."""
    free = UNDER_SPECIFIED_QUERY.get(_operation(case), set())
    query = case.query or {}
    given = sorted(name for name in free if name in query)
    if not given or zlib.crc32(repr(sorted(query.items())).encode()) % 2:
        return
    case.query = {**query, **{name: TAKEN_VALUES[name] for name in given}}


def _fuzz(case: schemathesis.Case, server: ServerThread, real_calls: RealCalls) -> None:
    real_calls.substitute(case)
    _make_creatable(case)
    _make_deliverable(case)
    _make_listable(case)
    case.call_and_validate(
        base_url=server.base_url,
        excluded_checks=EXCLUDED,
        additional_checks=NARROWED,
        timeout=30,
    )


# Plain pytest parametrization and Hypothesis's own @given: schemathesis's pytest integration
# gives all of a test's operations one node id under pytest 9, and pytest-xdist (how the suite
# runs) then runs the first operation only.
@pytest.mark.parametrize(("method", "path"), FUZZED, ids=[f"{m} {p}" for m, p in FUZZED])
def test_served_operation_holds_to_the_official_schema(
    method: str, path: str, server: ServerThread, real_calls: RealCalls
) -> None:
    @settings(
        max_examples=CALL_BODY_EXAMPLES if (method, path) in CALL_BODY_OPERATIONS else MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,  # one inner test for every operation: a saved case would replay elsewhere
    )
    @given(case=_cases(method, path))
    def fuzz(case: schemathesis.Case) -> None:
        _fuzz(case, server, real_calls)

    fuzz()


@pytest.mark.parametrize(("method", "path"), UNSERVED, ids=[f"{m} {p}" for m, p in UNSERVED])
def test_operations_not_served_answer_the_documented_404(
    server: ServerThread, method: str, path: str
) -> None:
    """The rest of the Ultravox API (tools, voices, corpora, ...) is not served: the JSON 404 the
    README documents (or, on a path served for other methods, DRF's 405), never a 5xx."""
    url = server.base_url + path.format_map(_AnyUuid())
    response = httpx.request(method, url, headers={"X-API-Key": server.api_key}, json={}, timeout=10)
    if any(served_path == path for _, served_path in SERVED):
        assert response.status_code == 405, response.text
        assert response.json() == {"detail": f'Method "{method}" not allowed.'}
    else:
        assert response.status_code == 404, response.text
        assert response.json() == {"detail": "Not found."}


class _AnyUuid(dict):
    def __missing__(self, key: str) -> str:
        return str(uuid.uuid4())
