"""The REST API over real sockets; every 2xx body is held against the official schema."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import time
import uuid
from typing import Any

import httpx
import pytest

from uvbench.protocol.schema import validate_response
from uvbench.server import LocalServer
from uvbench.server.agent import ECHO_MAX_CHARS
from uvbench.server.config import (
    MAX_SPOKEN_TEXT_CHARS,
    PLANS,
    ConfigError,
    Faults,
    Plan,
    server_config_from_dict,
)
from uvbench.server.store import CallRecord

MEDIUM = {"serverWebSocket": {"inputSampleRate": 16000}}
S = 1_000_000_000


# -- helpers -------------------------------------------------------------------------------------


def ok(response: httpx.Response, status: int, schema: str | None = None) -> Any:
    """The JSON body of a response that must have `status` and, if named, match `schema`."""
    assert response.status_code == status, response.text
    if status == 204:
        return None
    body = response.json()
    if schema is not None:
        assert validate_response(body, schema) == []
    return body


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


async def create(api: httpx.AsyncClient, params: dict[str, str] | None = None, **body: Any) -> dict:
    payload = {"systemPrompt": "You are a test agent.", "medium": MEDIUM, **body}
    return ok(await api.post("/api/calls", json=payload, params=params), 201, "Call")


class FakeSession:
    """Stands in for the websocket session of a joined call."""

    def __init__(self) -> None:
        self.delivered: list[dict[str, Any]] = []
        self.ended: list[str] = []

    def deliver_data_message(self, message: dict[str, Any]) -> None:
        self.delivered.append(message)

    def end_call(self, reason: str) -> None:
        self.ended.append(reason)


def join(server: LocalServer, call_id: str) -> FakeSession:
    record = server.store.get(call_id)
    session = FakeSession()
    record.session = session
    server.store.mark_joined(record, server.store.clock.now_ns(), "test_1")
    return session


def end(server: LocalServer, call_id: str, after_s: float = 0.0, reason: str = "hangup") -> None:
    store = server.store
    record = store.get(call_id)
    store.mark_ended(record, max(store.clock.now_ns(), (record.joined_ns or 0) + int(after_s * S)), reason)


async def walk(api: httpx.AsyncClient, url: str, params: dict | None = None) -> list[dict]:
    """Every page of a list from its first page, following `next`."""
    pages = [ok(await api.get(url, params=params), 200)]
    while pages[-1]["next"]:
        pages.append(ok(await api.get(pages[-1]["next"]), 200))
    return pages


# -- auth, routing, errors -----------------------------------------------------------------------


async def test_auth_missing_wrong_and_any_case_header(server: LocalServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as bare:
        assert error(await bare.get("/api/calls"), 401) == {
            "detail": "Authentication credentials were not provided."
        }
        wrong = await bare.get("/api/calls", headers={"X-API-Key": "Zk9Ht7Lm.wrong"})
        assert error(wrong, 401) == {"detail": "Invalid API key."}
        for header in ("x-api-key", "X-Api-Key", "X-API-KEY", "X-Unsafe-API-Key"):
            ok(
                await bare.get("/api/calls", headers={header: server.api_key}),
                200,
                "PaginatedCallList",
            )
        assert error(await bare.get("/_uvbench/faults"), 401)["detail"].startswith("Authentication")
        # Health is for readiness probes: no key needed.
        assert ok(await bare.get("/_uvbench/health"), 200)["status"] == "ok"
        # An unknown path is 404 before authentication; a wrong method authenticates first.
        assert error(await bare.get("/api/nope"), 404) == {"detail": "Not found."}
        assert error(await bare.put("/api/calls"), 401)


async def test_unknown_route_and_wrong_method(api: httpx.AsyncClient) -> None:
    assert error(await api.get("/api/no/such/route"), 404) == {"detail": "Not found."}
    assert error(await api.get("/elsewhere"), 404) == {"detail": "Not found."}
    response = await api.put("/api/calls")
    assert error(response, 405) == {"detail": 'Method "PUT" not allowed.'}
    assert "POST" in response.headers["Allow"]


async def test_bad_json_and_non_object_bodies(api: httpx.AsyncClient) -> None:
    bad = await api.post("/api/calls", content=b"{not json", headers={"Content-Type": "application/json"})
    assert error(bad, 400)["detail"].startswith("JSON parse error - ")
    listed = await api.post("/api/calls", json=[1, 2])
    assert error(listed, 400) == {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}
    # Not JSON although Python's json reads it, or nested past what anything should walk: 400, not 500.
    for body, reason in [
        (b'{"systemPrompt": "x", "temperature": NaN}', "NaN is not a JSON value"),
        (b'{"temperature": 1e999}', "out of range"),
        (b'{"a":' * 1000 + b"1" + b"}" * 1000, "nested more than 64 levels deep"),  # 6 KB
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 64 levels deep"),
    ]:
        refused = await api.post("/api/calls", content=body, headers={"Content-Type": "application/json"})
        detail = error(refused, 400)["detail"]
        assert detail.startswith("JSON parse error - ") and reason in detail


async def test_unexpected_exception_is_a_json_500(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    call = await create(api)

    def boom(self: CallRecord) -> dict:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(CallRecord, "to_api", boom)
    body = error(await api.get(f"/api/calls/{call['callId']}"), 500)
    assert set(body) == {"detail"}
    assert "RuntimeError" in body["detail"] and "secret" not in body["detail"]
    assert "Traceback" not in body["detail"]
    assert any("unhandled error" in r.message for r in caplog.records)


# -- creating calls ------------------------------------------------------------------------------


async def test_create_call_answers_201_with_a_full_call(api: httpx.AsyncClient, server: LocalServer) -> None:
    call = await create(api, metadata={"run": "r1"})
    call_id = call["callId"]
    assert uuid.UUID(call_id).version == 4
    ws_base = "ws" + server.base_url[len("http") :]
    assert call["joinUrl"] == f"{ws_base}/calls/{call_id}/server_web_socket"
    assert call["joined"] is None and call["ended"] is None and call["endReason"] is None
    assert call["billingStatus"] == "BILLING_STATUS_PENDING"
    # Server defaults for the socket are filled in and shown.
    assert call["medium"] == {
        "serverWebSocket": {
            "inputSampleRate": 16000,
            "outputSampleRate": 16000,
            "clientBufferSizeMs": 60,
        }
    }
    assert call["metadata"] == {"run": "r1"}
    assert ok(await api.get(f"/api/calls/{call_id}"), 200, "Call") == call
    record = server.store.get(call_id)
    assert record.initial_message_count == 0 and record.agent == server.config.agent
    assert [e["type"] for e in record.events] == ["call_created"]


async def test_create_keeps_explicit_medium_values_and_accepts_snake_case(
    api: httpx.AsyncClient,
) -> None:
    medium = {
        "serverWebSocket": {
            "inputSampleRate": 48000,
            "outputSampleRate": 24000,
            "clientBufferSizeMs": 30000,
        }
    }
    assert (await create(api, medium=medium))["medium"] == medium
    snake = {
        "system_prompt": "snake",
        "join_timeout": "20s",
        "medium": {"server_web_socket": {"input_sample_rate": 8000}},
    }
    call = ok(await api.post("/api/calls", json=snake), 201, "Call")
    assert call["systemPrompt"] == "snake" and call["joinTimeout"] == "20s"
    assert call["medium"]["serverWebSocket"] == {
        "inputSampleRate": 8000,
        "outputSampleRate": 8000,
        "clientBufferSizeMs": 60,
    }


async def test_create_validation_errors_are_drf_dicts(api: httpx.AsyncClient) -> None:
    no_rate = await api.post("/api/calls", json={"medium": {"serverWebSocket": {}}})
    assert error(no_rate, 400) == {
        "medium": {"serverWebSocket": {"inputSampleRate": ["This field is required."]}}
    }
    several = await api.post(
        "/api/calls",
        json={"medium": MEDIUM, "temperature": 2, "joinTimeout": "30", "bogusField": 1},
    )
    body = error(several, 400)
    assert {"temperature", "joinTimeout", "bogusField"} <= set(body)
    assert all(isinstance(v, list) and all(isinstance(m, str) for m in v) for v in body.values())


async def test_language_hint_longer_than_the_call_keeps_is_refused(api: httpx.AsyncClient) -> None:
    """The create body's `languageHint` has no length limit in the schema, but the `Call` it makes
    holds at most 16 characters: a longer one is refused, not echoed back in a Call that breaks
    the schema (found by tests/test_rest_fuzz.py)."""
    assert (await create(api, languageHint="x" * 16))["languageHint"] == "x" * 16
    refused = await api.post("/api/calls", json={"medium": MEDIUM, "languageHint": "en-US-x-" + "y" * 9})
    message = error(refused, 400)["languageHint"][0]
    assert "16 characters" in message and "BCP47" in message


async def test_only_the_server_websocket_medium_is_served(api: httpx.AsyncClient) -> None:
    for body in ({"systemPrompt": "x"}, {"medium": {"webRtc": {}}}):
        errors = error(await api.post("/api/calls", json=body), 400)
        assert list(errors) == ["medium"]
        assert errors["medium"][0].startswith("The uvbench local server serves only medium.serverWebSocket; ")


async def test_query_parameters_enable_greeting_prompt_and_throttle(api: httpx.AsyncClient) -> None:
    await create(api, params={"enableGreetingPrompt": "false", "throttle": "burst"})
    bad = await api.post("/api/calls", params={"enableGreetingPrompt": "maybe"}, json={"medium": MEDIUM})
    assert error(bad, 400) == {"enableGreetingPrompt": ["Must be a valid boolean."]}


async def test_per_call_agent_and_fault_settings(api: httpx.AsyncClient, server: LocalServer) -> None:
    uvbench = {
        "agent": {"greeting": "Hi from the test", "latency": {"kind": "fixed", "ms": 5}},
        "faults": {"output_jitter_ms": 3},
    }
    call = await create(api, experimentalSettings={"uvbench": uvbench})
    record = server.store.get(call["callId"])
    assert record.agent.greeting == "Hi from the test"
    assert record.agent.latency.kind == "fixed" and record.agent.latency.ms == 5
    assert record.agent.replies == server.config.agent.replies  # merged over the server's agent
    assert record.faults.output_jitter_ms == 3
    for settings in ({"agent": {"chunk_ms": -1}}, {"faults": {"nope": 1}}, {"other": {}}, "x"):
        response = await api.post(
            "/api/calls", json={"medium": MEDIUM, "experimentalSettings": {"uvbench": settings}}
        )
        body = error(response, 400)
        assert list(body) == ["experimentalSettings"]
        assert body["experimentalSettings"][0].startswith("experimentalSettings.uvbench")


async def test_prior_call_id_inherits_properties_and_history(
    api: httpx.AsyncClient, server: LocalServer
) -> None:
    initial = [{"role": "MESSAGE_ROLE_USER", "text": "My name is Steve"}]
    first = await create(
        api,
        systemPrompt="First prompt",
        voice="Jessica",
        metadata={"k": "v"},
        initialMessages=initial,
    )
    record = server.store.get(first["callId"])
    # Messages the session would have added during the call, with timespans.
    span = {"start": "1s", "end": "2s"}
    record.messages += [
        {
            "role": "MESSAGE_ROLE_AGENT",
            "text": "Hello Steve",
            "medium": "MESSAGE_MEDIUM_VOICE",
            "callStageMessageIndex": 1,
            "callStageId": record.call_stage_id,
            "timespan": span,
            "wallClockTimespan": span,
        },
        {"role": "MESSAGE_ROLE_UNSPECIFIED", "text": "not part of the history"},
    ]
    second = ok(
        await api.post(
            "/api/calls", params={"priorCallId": first["callId"]}, json={"systemPrompt": "Second"}
        ),
        201,
        "Call",
    )
    assert second["systemPrompt"] == "Second"  # overridden by the body
    assert second["voice"] == "Jessica" and second["metadata"] == {"k": "v"}  # inherited
    assert second["medium"] == first["medium"]
    new = server.store.get(second["callId"])
    assert new.prior_call_id == first["callId"]
    messages = ok(
        await api.get(f"/api/calls/{second['callId']}/messages"),
        200,
        "Paginatedultravox.v1.MessageList",
    )
    assert [(m["role"], m["text"]) for m in messages["results"]] == [
        ("MESSAGE_ROLE_USER", "My name is Steve"),
        ("MESSAGE_ROLE_AGENT", "Hello Steve"),
    ]
    assert all("timespan" not in m and "wallClockTimespan" not in m for m in messages["results"])
    assert [m["callStageMessageIndex"] for m in messages["results"]] == [0, 1]
    assert {m["callStageId"] for m in messages["results"]} == {new.call_stage_id}
    in_call = ok(await api.get(f"/api/calls/{second['callId']}/messages", params={"mode": "in_call"}), 200)
    assert in_call["results"] == [] and new.initial_message_count == 2


async def test_prior_call_id_errors(api: httpx.AsyncClient) -> None:
    first = await create(api)
    conflict = await api.post(
        "/api/calls",
        params={"priorCallId": first["callId"]},
        json={"initialMessages": [{"role": "MESSAGE_ROLE_USER", "text": "hi"}]},
    )
    assert list(error(conflict, 400)) == ["initialMessages"]
    unknown = await api.post("/api/calls", params={"priorCallId": str(uuid.uuid4())}, json={"medium": MEDIUM})
    assert list(error(unknown, 400)) == ["priorCallId"]
    malformed = await api.post(
        "/api/calls",
        params={"priorCallId": "not-a-uuid"},
        json={"medium": MEDIUM, "temperature": 7},
    )
    assert set(error(malformed, 400)) == {"priorCallId", "temperature"}  # reported together


async def test_agent_calls(api: httpx.AsyncClient, server: LocalServer) -> None:
    agent_id = str(uuid.uuid4())
    body = {"medium": MEDIUM, "templateContext": {"name": "Ann"}, "metadata": {"a": "1"}}
    call = ok(await api.post(f"/api/agents/{agent_id}/calls", json=body), 201, "Call")
    assert call["agentId"] == agent_id and call["agent"]["agentId"] == agent_id
    assert server.store.get(call["callId"]).agent_id == agent_id
    await create(api)  # not an agent call
    listed = ok(await api.get(f"/api/agents/{agent_id}/calls"), 200, "PaginatedCallList")
    assert [c["callId"] for c in listed["results"]] == [call["callId"]]
    filtered = ok(await api.get("/api/calls", params={"agentIds": agent_id}), 200)
    assert [c["callId"] for c in filtered["results"]] == [call["callId"]]
    # StartAgentCallRequest has no systemPrompt.
    assert "systemPrompt" in error(
        await api.post(f"/api/agents/{agent_id}/calls", json={**body, "systemPrompt": "x"}), 400
    )
    assert error(await api.post("/api/agents/not-a-uuid/calls", json=body), 404) == {"detail": "Not found."}


# -- limits and faults ---------------------------------------------------------------------------


@pytest.mark.server_config(plan=PLANS["free"])
async def test_free_plan_refuses_the_sixth_create(api: httpx.AsyncClient, server: LocalServer) -> None:
    for _ in range(5):
        await create(api)
    refused = await api.post("/api/calls", json={"medium": MEDIUM})
    detail = error(refused, 429)["detail"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert "Concurrency limit" in detail and "5 calls per second" in detail
    assert len(server.store.calls) == 5  # nothing was created


@pytest.mark.server_config(plan=Plan("cap", max_concurrent=2))
async def test_concurrency_cap_counts_created_calls_until_they_end(
    api: httpx.AsyncClient, server: LocalServer
) -> None:
    first = await create(api)
    await create(api)
    refused = await api.post("/api/calls", json={"medium": MEDIUM})
    assert "Concurrency limit" in error(refused, 429)["detail"]
    assert refused.headers["Retry-After"] == "1"
    end(server, first["callId"])
    await create(api)


@pytest.mark.server_config(plan=Plan("rate", creates_per_second=5))
async def test_sixth_create_within_a_second_is_refused(api: httpx.AsyncClient) -> None:
    for _ in range(5):
        await create(api)
    refused = await api.post("/api/calls", json={"medium": MEDIUM})
    assert (
        error(refused, 429)["detail"]
        == "Call creation rate limit exceeded: the rate plan allows 5 calls per second."
    )
    assert refused.headers["Retry-After"] == "1"


@pytest.mark.server_config(faults=Faults(rest_503=1, rest_429=2))
async def test_fault_bursts_refuse_the_next_creates(api: httpx.AsyncClient) -> None:
    statuses = []
    for _ in range(4):
        response = await api.post("/api/calls", json={"systemPrompt": "x", "medium": MEDIUM})
        statuses.append(response.status_code)
        if response.status_code != 201:
            assert response.headers["Retry-After"] == "1"
            assert "uvbench fault injection" in response.json()["detail"]
    assert statuses == [503, 429, 429, 201]
    # Set again at runtime through the control route.
    faults = ok(await api.put("/_uvbench/faults", json={"rest_429": 1}), 200)
    assert faults["rest_429"] == 1
    assert (await api.post("/api/calls", json={"medium": MEDIUM})).status_code == 429
    assert ok(await api.get("/_uvbench/faults"), 200)["rest_429"] == 0
    await create(api)


async def test_rest_delay_slows_api_answers_but_not_controls(api: httpx.AsyncClient) -> None:
    ok(await api.put("/_uvbench/faults", json={"rest_delay_ms": 300}), 200)
    started = time.perf_counter()
    ok(await api.get("/api/calls"), 200)
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    ok(await api.get("/_uvbench/health"), 200)
    assert time.perf_counter() - started < 0.3
    ok(await api.put("/_uvbench/faults", json={}), 200)
    started = time.perf_counter()
    ok(await api.get("/api/calls"), 200)
    assert time.perf_counter() - started < 0.3


async def test_faults_control_route(api: httpx.AsyncClient, server: LocalServer) -> None:
    faults = ok(await api.get("/_uvbench/faults"), 200)
    assert faults["extra_latency_ms"] == 0 and faults["output_stalls"] == []
    stalls = [{"after_ms": 100, "duration_ms": 50}]
    faults = ok(
        await api.put("/_uvbench/faults", json={"extra_latency_ms": 20, "output_stalls": stalls}),
        200,
    )
    assert faults["extra_latency_ms"] == 20 and faults["output_stalls"] == stalls
    assert server.state.faults.extra_latency_ms == 20
    # Calls created now start from the server-wide faults.
    call = await create(api, experimentalSettings={"uvbench": {"faults": {"output_jitter_ms": 1}}})
    record = server.store.get(call["callId"])
    assert record.faults.extra_latency_ms == 20 and record.faults.output_jitter_ms == 1
    assert "nope" in error(await api.put("/_uvbench/faults", json={"nope": 1}), 400)["detail"]
    assert error(await api.put("/_uvbench/faults", content=b"{"), 400)["detail"].startswith(
        "JSON parse error"
    )
    assert server.state.faults.extra_latency_ms == 20  # unchanged by the refused updates


async def test_join_timeout_ends_the_call_unjoined(api: httpx.AsyncClient, server: LocalServer) -> None:
    call = await create(api, joinTimeout="1s")
    joined = await create(api, joinTimeout="1s")
    join(server, joined["callId"])
    deadline = time.monotonic() + 3
    while True:
        got = ok(await api.get(f"/api/calls/{call['callId']}"), 200, "Call")
        if got["ended"] is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert got["endReason"] == "unjoined"
    assert got["billingStatus"] == "BILLING_STATUS_FREE_ZERO_EFFECTIVE_DURATION"
    events = ok(await api.get(f"/api/calls/{call['callId']}/events"), 200)["results"]
    assert [e["type"] for e in events] == ["call_created", "call_ended"]
    still = ok(await api.get(f"/api/calls/{joined['callId']}"), 200, "Call")
    assert still["ended"] is None  # joined in time


# -- listing ------------------------------------------------------------------------------------


async def test_pagination_walks_forward_and_back_without_duplicates(api: httpx.AsyncClient) -> None:
    ids = [(await create(api, metadata={"batch": "p"}))["callId"] for _ in range(7)]
    await create(api, metadata={"batch": "other"})
    params = {"pageSize": "3", "metadata.batch": "p"}
    pages = await walk(api, "/api/calls", params)
    for page in pages:
        assert validate_response(page, "PaginatedCallList") == []
        assert page["total"] == 7
    assert [len(p["results"]) for p in pages] == [3, 3, 1]
    assert pages[0]["previous"] is None and pages[-1]["next"] is None
    assert "metadata.batch=p" in pages[0]["next"] and "pageSize=3" in pages[0]["next"]
    forward = [c["callId"] for p in pages for c in p["results"]]
    assert forward == ids[::-1]  # newest first by default
    # Back from the last page via previous.
    back = [pages[-1]]
    while back[-1]["previous"]:
        back.append(ok(await api.get(back[-1]["previous"]), 200, "PaginatedCallList"))
    assert [[c["callId"] for c in p["results"]] for p in back] == [
        [c["callId"] for c in p["results"]] for p in pages[::-1]
    ]
    # Oldest first on request.
    ascending = await walk(api, "/api/calls", {**params, "sort": "created"})
    assert [c["callId"] for p in ascending for c in p["results"]] == ids


async def test_pagination_is_stable_while_calls_are_created(api: httpx.AsyncClient) -> None:
    ids = [(await create(api))["callId"] for _ in range(4)]
    first = ok(await api.get("/api/calls", params={"pageSize": "2"}), 200)
    await create(api)  # newer than everything: lands before the first page, not in the next
    second = ok(await api.get(first["next"]), 200)
    assert [c["callId"] for c in first["results"] + second["results"]] == ids[::-1]
    assert second["next"] is None and second["total"] == 5


async def test_page_size_and_cursor_edge_cases(api: httpx.AsyncClient) -> None:
    for _ in range(3):
        await create(api)
    for size in ("0", "-1", "x"):  # like DRF: falls back to the default page size
        assert len(ok(await api.get("/api/calls", params={"pageSize": size}), 200)["results"]) == 3
    assert error(await api.get("/api/calls", params={"cursor": "garbage!"}), 404) == {
        "detail": "Invalid cursor"
    }
    deep = base64.urlsafe_b64encode(b'{"p":' + b"[" * 2000 + b"]" * 2000 + b',"r":false}').decode()
    assert error(await api.get("/api/calls", params={"cursor": deep}), 404) == {"detail": "Invalid cursor"}


async def test_call_list_filters(api: httpx.AsyncClient, server: LocalServer) -> None:
    short = await create(api, systemPrompt="Book a TABLE", metadata={"team": "a"})
    long = await create(api, systemPrompt="Other", metadata={"team": "b", "note": "vip table"})
    plain = await create(api, systemPrompt="Nothing", metadata={"team": "a"})
    join(server, short["callId"])
    end(server, short["callId"], after_s=10)
    join(server, long["callId"])
    end(server, long["callId"], after_s=100)

    async def ids(**params: str) -> set[str]:
        body = ok(await api.get("/api/calls", params=params), 200, "PaginatedCallList")
        return {c["callId"] for c in body["results"]}

    assert await ids(**{"metadata.team": "a"}) == {short["callId"], plain["callId"]}
    assert await ids(**{"metadata.team": "a", "metadata.note": "x"}) == set()
    assert await ids(search="table") == {
        short["callId"],
        long["callId"],
    }  # prompt or metadata value
    assert await ids(durationMin="50s") == {long["callId"]}
    assert await ids(durationMax="50s") == {short["callId"]}
    today = dt.datetime.now(dt.UTC).date()
    everything = {short["callId"], long["callId"], plain["callId"]}
    assert await ids(fromDate=today.isoformat(), toDate=today.isoformat()) == everything
    assert await ids(fromDate=(today + dt.timedelta(days=1)).isoformat()) == set()
    assert await ids(toDate=(today - dt.timedelta(days=1)).isoformat()) == set()
    created = dt.datetime.fromisoformat(plain["created"])
    assert await ids(fromDate=created.isoformat()) == {plain["callId"]}
    for name, value in (
        ("fromDate", "yesterday"),
        ("toDate", "2026-13-01"),
        ("durationMin", "5"),
        ("durationMax", "ten"),
        ("sort", "duration"),
        ("search", ""),
        ("agentIds", "nope"),
        ("timeOfDayStart", "25:00"),
    ):
        body = error(await api.get("/api/calls", params={name: value}), 400)
        assert list(body) == [name]


async def test_time_of_day_filters_with_a_utc_offset(api: httpx.AsyncClient) -> None:
    """The schema's `time` format may carry an offset ("10:00:00Z", "12:00:00+02:00"): the time of
    day is compared in UTC (found by tests/test_rest_fuzz.py: comparing it was a TypeError, a 500)."""
    call = await create(api)
    whole_day = [
        {"timeOfDayStart": "00:00:00Z", "timeOfDayEnd": "23:59:59.999999Z"},
        # 00:00 to 23:59:59 UTC; read without its offset, this window would hold no time at all.
        {"timeOfDayStart": "02:00:00+02:00", "timeOfDayEnd": "01:59:59.999999+02:00"},
    ]
    for window in whole_day:
        body = ok(await api.get("/api/calls", params=window), 200, "PaginatedCallList")
        assert [c["callId"] for c in body["results"]] == [call["callId"]], window


async def test_blank_sort_and_duration_filters_count_as_not_given(api: httpx.AsyncClient) -> None:
    """The schema types `sort`, `durationMin` and `durationMax` as free strings, so a blank one is a
    valid request; DRF's ordering filter and django-filter read blank as not given (found by
    tests/test_rest_fuzz.py: `?sort=` was a 400)."""
    older = await create(api)
    newer = await create(api)  # neither joined: no duration, so any duration filter drops them
    for params in ({"sort": ""}, {"durationMin": ""}, {"durationMax": ""}):
        body = ok(await api.get("/api/calls", params=params), 200, "PaginatedCallList")
        assert [c["callId"] for c in body["results"]] == [newer["callId"], older["callId"]], params


# -- one call ------------------------------------------------------------------------------------


async def test_get_and_delete_unknown_or_malformed_ids(api: httpx.AsyncClient) -> None:
    call = await create(api)
    for call_id in (str(uuid.uuid4()), "not-a-uuid", call["callId"].upper()):
        for method, path in (
            ("GET", ""),
            ("DELETE", ""),
            ("GET", "/messages"),
            ("GET", "/events"),
            ("GET", "/recording"),
            ("GET", "/stages"),
            ("GET", "/tools"),
        ):
            response = await api.request(method, f"/api/calls/{call_id}{path}")
            assert error(response, 404) == {"detail": "Not found."}


async def test_delete_then_get_is_404(api: httpx.AsyncClient, server: LocalServer) -> None:
    call = await create(api)
    ok(await api.delete(f"/api/calls/{call['callId']}"), 204)
    assert error(await api.get(f"/api/calls/{call['callId']}"), 404) == {"detail": "Not found."}
    assert error(await api.delete(f"/api/calls/{call['callId']}"), 404)
    assert call["callId"] in server.store.deleted
    assert server.store.active_counts() == (0, 0)


async def test_delete_ends_a_live_call_first(api: httpx.AsyncClient, server: LocalServer) -> None:
    call = await create(api)
    session = join(server, call["callId"])
    record = server.store.get(call["callId"])
    assert server.store.active_counts() == (1, 1)
    ok(await api.delete(f"/api/calls/{call['callId']}"), 204)
    assert session.ended == ["hangup"]
    assert record.end_reason == "hangup" and server.store.get(call["callId"]) is None
    assert server.store.concurrency[-1].total == 0


async def test_messages_modes(api: httpx.AsyncClient, server: LocalServer) -> None:
    initial = [
        {"role": "MESSAGE_ROLE_USER", "text": "Hi"},
        {"role": "MESSAGE_ROLE_AGENT", "text": "Hello"},
    ]
    call = await create(api, initialMessages=initial)
    record = server.store.get(call["callId"])
    record.messages.append(
        {
            "role": "MESSAGE_ROLE_USER",
            "text": "In call",
            "medium": "MESSAGE_MEDIUM_VOICE",
            "callStageMessageIndex": 2,
            "callStageId": record.call_stage_id,
            "timespan": {"start": "0.5s", "end": "1.2s"},
            "wallClockTimespan": {"start": "0.6s", "end": "1.3s"},
            "_private": 1,
        }
    )
    url = f"/api/calls/{call['callId']}/messages"
    all_messages = ok(await api.get(url), 200, "Paginatedultravox.v1.MessageList")
    assert [m["text"] for m in all_messages["results"]] == ["Hi", "Hello", "In call"]
    assert all("_private" not in m for m in all_messages["results"])
    in_call = ok(await api.get(url, params={"mode": "in_call"}), 200, "Paginatedultravox.v1.MessageList")
    assert [m["text"] for m in in_call["results"]] == ["In call"] and in_call["total"] == 1
    pages = await walk(api, url, {"pageSize": "1"})
    assert [p["results"][0]["text"] for p in pages] == ["Hi", "Hello", "In call"]
    assert error(await api.get(url, params={"mode": "everything"}), 400) == {
        "mode": ['"everything" is not a valid choice.']
    }


async def test_events_severity_and_type_filters(api: httpx.AsyncClient, server: LocalServer) -> None:
    call = await create(api)
    record = server.store.get(call["callId"])
    clock = server.store.clock
    now = clock.now_ns()
    record.add_event(now, clock.wall(now), "debug", "vad_frame", "debug detail")
    record.add_event(now, clock.wall(now), "warning", "audio_underflow", "behind", {"deficitMs": 80.0})
    record.add_event(now, clock.wall(now), "error", "media_idle_timeout", "idle")
    url = f"/api/calls/{call['callId']}/events"

    async def types(**params: str) -> list[str]:
        body = ok(await api.get(url, params=params), 200, "PaginatedCallEventList")
        assert all(not k.startswith("_") for e in body["results"] for k in e)
        return [e["type"] for e in body["results"]]

    assert await types() == ["call_created", "audio_underflow", "media_idle_timeout"]
    assert await types(minimum_severity="debug") == [
        "call_created",
        "vad_frame",
        "audio_underflow",
        "media_idle_timeout",
    ]
    assert await types(minimum_severity="warning") == ["audio_underflow", "media_idle_timeout"]
    assert await types(minimum_severity="error") == ["media_idle_timeout"]
    assert await types(type="audio_underflow") == ["audio_underflow"]
    assert list(error(await api.get(url, params={"minimum_severity": "loud"}), 400)) == ["minimum_severity"]
    assert list(error(await api.get(url, params={"type": ""}), 400)) == ["type"]


async def test_recording(api: httpx.AsyncClient, server: LocalServer) -> None:
    plain = await create(api)
    response = await api.get(f"/api/calls/{plain['callId']}/recording")
    assert error(response, 404) == {
        "detail": "Recording was not enabled for this call; create it with recordingEnabled: true."
    }
    call = await create(api, recordingEnabled=True)
    url = f"/api/calls/{call['callId']}/recording"
    too_early = {"detail": "Recording not available yet: the call has not ended."}
    assert error(await api.get(url), 425) == too_early
    join(server, call["callId"])
    end(server, call["callId"])
    assert error(await api.get(url), 425) == too_early  # ended, WAV not written yet
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt "
    server.store.get(call["callId"]).recording_wav = wav
    response = await api.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav" and response.content == wav
    # Ended without anyone joining: nothing will ever be recorded, so not "too early" but 404.
    unjoined = await create(api, recordingEnabled=True)
    end(server, unjoined["callId"])
    assert error(await api.get(f"/api/calls/{unjoined['callId']}/recording"), 404) == {
        "detail": "Nothing was recorded: the call ended without anyone joining it."
    }


async def test_send_data_message(api: httpx.AsyncClient, server: LocalServer) -> None:
    call = await create(api)
    url = f"/api/calls/{call['callId']}/send_data_message"
    message = {"type": "user_text_message", "text": "Hello there", "urgency": "immediate"}
    not_active = {"detail": "call is not active (not joined yet or already ended)"}
    assert error(await api.post(url, json=message), 422) == not_active
    session = join(server, call["callId"])
    for sent in (
        message,
        {"type": "forced_agent_message", "content": "Say this"},
        {"type": "hang_up"},
    ):
        ok(await api.post(url, json=sent), 204)
    assert [m["type"] for m in session.delivered] == [
        "user_text_message",
        "forced_agent_message",
        "hang_up",
    ]
    assert session.delivered[0] == message
    assert list(error(await api.post(url, json={"type": "ping", "timestamp": 1.0}), 400)) == ["type"]
    deep = b'{"type": "user_text_message", "text": "x", "a": ' + b"[" * 900 + b"]" * 900 + b"}"
    refused = await api.post(url, content=deep, headers={"Content-Type": "application/json"})
    assert "nested more than 64 levels deep" in error(refused, 400)["detail"]
    nan = b'{"type": "user_text_message", "text": "x", "at": NaN}'
    refused = await api.post(url, content=nan, headers={"Content-Type": "application/json"})
    assert "NaN is not a JSON value" in error(refused, 400)["detail"]
    assert error(await api.post(url, json={"text": "no type"}), 400) == {"type": ["This field is required."]}
    assert list(error(await api.post(url, json={"type": "user_text_message"}), 400)) == ["text"]
    end(server, call["callId"])
    assert error(await api.post(url, json=message), 422) == not_active
    assert len(session.delivered) == 3


async def test_stages_and_tools(api: httpx.AsyncClient, server: LocalServer) -> None:
    tools = [
        {
            "temporaryTool": {
                "modelToolName": "lookup",
                "description": "Looks up",
                "client": {},
                "timeout": "5s",
                "dynamicParameters": [],
            }
        },
        {
            "temporaryTool": {"modelToolName": "other", "description": "d", "client": {}},
            "nameOverride": "renamed",
            "descriptionOverride": "better",
        },
        {"toolName": "hangUp"},
    ]
    call = await create(api, selectedTools=tools, temperature=0.4, languageHint="en")
    call_id = call["callId"]
    stage_id = server.store.get(call_id).call_stage_id
    stages = ok(await api.get(f"/api/calls/{call_id}/stages"), 200, "PaginatedCallStageList")
    assert [s["callStageId"] for s in stages["results"]] == [stage_id]
    stage = ok(await api.get(f"/api/calls/{call_id}/stages/{stage_id}"), 200, "CallStage")
    assert stage["temperature"] == 0.4 and stage["systemPrompt"] == "You are a test agent."
    assert stage["languageHint"] == "en" and stage["voice"] == call["voice"]
    assert error(await api.get(f"/api/calls/{call_id}/stages/{uuid.uuid4()}"), 404)
    ok(
        await api.get(f"/api/calls/{call_id}/stages/{stage_id}/messages"),
        200,
        "Paginatedultravox.v1.MessageList",
    )
    listed = ok(await api.get(f"/api/calls/{call_id}/tools"), 200)
    for tool in listed:
        assert validate_response(tool, "CallTool") == []
    assert [t["name"] for t in listed] == ["lookup", "renamed", "hangUp"]
    assert listed[0]["definition"] == {
        "description": "Looks up",
        "client": {},
        "timeout": "5s",
        "dynamicParameters": [],
    }
    assert listed[1]["definition"]["description"] == "better"
    assert listed[2]["definition"] == {} and listed[2]["toolId"] is None
    assert len({t["callToolId"] for t in listed}) == 3
    assert ok(await api.get(f"/api/calls/{call_id}/stages/{stage_id}/tools"), 200) == listed


# -- account usage and uvbench extensions --------------------------------------------------------


async def test_concurrency_series_reflects_created_calls(api: httpx.AsyncClient, server: LocalServer) -> None:
    calls = [await create(api) for _ in range(3)]
    join(server, calls[0]["callId"])
    body = ok(await api.get("/api/accounts/me/usage/concurrency"), 200, "ConcurrencyResponse")
    series = body["timeSeries"]
    assert 1 <= len(series) <= 2  # only buckets since the server started
    assert max(b["maxTotalCalls"] for b in series) == 3
    assert max(b["maxJoinedCalls"] for b in series) == 1
    for bucket in ("5min", "hour", "day"):
        body = ok(
            await api.get("/api/accounts/me/usage/concurrency", params={"bucket": bucket}),
            200,
            "ConcurrencyResponse",
        )
        assert len(body["timeSeries"]) == 1 and body["timeSeries"][0]["maxTotalCalls"] == 3
    past = {"end": (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()}
    assert ok(await api.get("/api/accounts/me/usage/concurrency", params=past), 200)["timeSeries"] == []
    assert list(
        error(await api.get("/api/accounts/me/usage/concurrency", params={"bucket": "week"}), 400)
    ) == ["bucket"]
    assert list(
        error(await api.get("/api/accounts/me/usage/concurrency", params={"start": "soon"}), 400)
    ) == ["start"]


async def test_concurrency_ending_on_the_first_day_of_year_one_is_empty(api: httpx.AsyncClient) -> None:
    """The default start, a day before `end`, is before the first representable date: that range
    is simply empty (found by tests/test_rest_fuzz.py: it was an OverflowError, a 500)."""
    for end in ("0001-01-01T00:00:00Z", "0001-01-01T12:00:00+01:00"):
        body = ok(await api.get("/api/accounts/me/usage/concurrency", params={"end": end}), 200)
        assert body == {"timeSeries": []}, end


async def test_ground_truth(api: httpx.AsyncClient, server: LocalServer) -> None:
    call = await create(api)
    record = server.store.get(call["callId"])
    url = f"/_uvbench/calls/{call['callId']}/ground_truth"
    truth = ok(await api.get(url), 200)
    assert truth["callId"] == call["callId"] and truth["created_ns"] == record.created_ns
    assert truth["joined_ns"] is None and truth["ended_ns"] is None and truth["endReason"] is None
    assert {"clock", "input", "turns", "replies", "clears", "pacing"} <= set(truth)
    assert "lateness_ms" not in truth["pacing"]
    record.truth.pacing_lateness_ms.extend([0.5, 1.5])
    join(server, call["callId"])
    end(server, call["callId"], reason="agent_hangup")
    truth = ok(await api.get(url, params={"lateness": "1"}), 200)
    assert truth["pacing"]["lateness_ms"] == [0.5, 1.5]
    assert truth["joined_ns"] == record.joined_ns and truth["ended_ns"] == record.ended_ns
    assert truth["endReason"] == "agent_hangup"
    assert error(await api.get(f"/_uvbench/calls/{uuid.uuid4()}/ground_truth"), 404)
    async with httpx.AsyncClient(base_url=server.base_url) as bare:
        assert error(await bare.get(url), 401)


async def test_health(api: httpx.AsyncClient, server: LocalServer) -> None:
    calls = [await create(api) for _ in range(2)]
    join(server, calls[0]["callId"])
    assert ok(await api.get("/_uvbench/health"), 200) == {
        "status": "ok",
        "activeCalls": 2,
        "joinedCalls": 1,
    }


def over_the_spoken_limit(chars: int) -> str:
    return (
        f"{chars:,} characters, over this server's limit of {MAX_SPOKEN_TEXT_CHARS:,} characters for a "
        "text the agent speaks (MAX_SPOKEN_TEXT_CHARS)"
    )


async def test_texts_too_long_to_speak_are_refused_at_create_naming_the_field_and_limit(
    api: httpx.AsyncClient,
) -> None:
    """The agent synthesizes speech on the event loop every call shares, so a text it would speak
    is refused past MAX_SPOKEN_TEXT_CHARS when the call is created, whichever field holds it."""
    at_limit, too_long = "a" * MAX_SPOKEN_TEXT_CHARS, "a" * (MAX_SPOKEN_TEXT_CHARS + 1)
    refusal = [f"This text is {over_the_spoken_limit(MAX_SPOKEN_TEXT_CHARS + 1)}; shorten it."]
    body = {
        "medium": MEDIUM,
        "timeExceededMessage": too_long,
        "firstSpeakerSettings": {"agent": {"text": too_long}},
    }
    assert error(await api.post("/api/calls", json=body), 400) == {
        "timeExceededMessage": refusal,
        "firstSpeakerSettings": {"agent": {"text": refusal}},
    }
    fallback = {"user": {"fallback": {"delay": "2s", "text": too_long}}}
    refused = await api.post("/api/calls", json={"medium": MEDIUM, "firstSpeakerSettings": fallback})
    assert error(refused, 400) == {"firstSpeakerSettings": {"user": {"fallback": {"text": refusal}}}}
    for agent, where in (
        ({"greeting": too_long}, "greeting"),
        ({"replies": ["Fine.", too_long]}, "replies[1]"),
        ({"tool_reply": too_long}, "tool_reply"),
    ):
        settings = {"uvbench": {"agent": agent}}
        refused = await api.post("/api/calls", json={"medium": MEDIUM, "experimentalSettings": settings})
        assert error(refused, 400) == {
            "experimentalSettings": [
                f"experimentalSettings.uvbench.agent.{where}: "
                f"{over_the_spoken_limit(MAX_SPOKEN_TEXT_CHARS + 1)}; shorten it"
            ]
        }
    uvbench = {"agent": {"greeting": at_limit, "replies": [at_limit], "tool_reply": at_limit}}
    await create(
        api,
        timeExceededMessage=at_limit,
        firstSpeakerSettings={"agent": {"text": at_limit}},
        experimentalSettings={"uvbench": uvbench},
    )
    # An agent's template is a source of the call's texts too: refused when it is stored (and
    # when a PATCH brings it), not at each call made from it.
    template = {"medium": MEDIUM, "timeExceededMessage": too_long}
    refused = await api.post("/api/agents", json={"name": "talkative", "callTemplate": template})
    assert error(refused, 400) == {"callTemplate": {"timeExceededMessage": refusal}}
    stored = ok(
        await api.post("/api/agents", json={"name": "terse", "callTemplate": {"medium": MEDIUM}}), 201
    )
    patched = await api.patch(f"/api/agents/{stored['agentId']}", json={"callTemplate": template})
    assert error(patched, 400) == {"callTemplate": {"timeExceededMessage": refusal}}


def test_agent_frames_are_held_to_the_servers_range() -> None:
    from uvbench.server.config import CHUNK_MS_RANGE

    low, high = CHUNK_MS_RANGE
    assert server_config_from_dict({"agent": {"chunk_ms": low}}).agent.chunk_ms == low
    for bad in (low - 1, high + 1, 0, "20", True):
        with pytest.raises(
            ConfigError, match=rf"agent.chunk_ms: expected a whole number of ms from {low} to {high}"
        ):
            server_config_from_dict({"agent": {"chunk_ms": bad}})


def test_agent_texts_of_a_server_config_are_held_to_the_spoken_limit_and_template_fields() -> None:
    too_long = "a" * (MAX_SPOKEN_TEXT_CHARS + 1)
    with pytest.raises(ConfigError) as refused:
        server_config_from_dict({"agent": {"greeting": too_long}})
    assert str(refused.value) == (
        f"server config.agent.greeting: {over_the_spoken_limit(MAX_SPOKEN_TEXT_CHARS + 1)}; shorten it"
    )
    # tool_reply's one field is {result}: another failed only once a tool answered, mid-call.
    for template, problem in (
        ("Done: {outcome}", "unknown field {outcome}: the only field is {result}"),
        ("Done: {}", "unknown field {}: the only field is {result}"),
        ("Done: {result", "expected '}' before end of string"),
    ):
        with pytest.raises(ConfigError, match=re.escape(problem)):
            server_config_from_dict({"agent": {"tool_reply": template}})
    config = server_config_from_dict({"agent": {"tool_reply": "Done: {result} {{literally}}"}})
    assert config.agent.tool_reply.format(result="ok") == "Done: ok {literally}"


async def test_rest_faults_in_a_create_body_are_refused_saying_they_are_server_wide(
    api: httpx.AsyncClient, server: LocalServer
) -> None:
    """rest_delay_ms, rest_429 and rest_503 act before a call exists: a create body naming one was
    taken with a 201 and ignored; it is a 400 saying where such a fault is set."""
    for key, value in (("rest_delay_ms", 1000), ("rest_429", 1), ("rest_503", 1)):
        settings = {"uvbench": {"faults": {"output_jitter_ms": 1, key: value}}}
        refused = await api.post("/api/calls", json={"medium": MEDIUM, "experimentalSettings": settings})
        assert error(refused, 400) == {
            "experimentalSettings": [
                f"experimentalSettings.uvbench.faults.{key}: a server-wide fault, not one of a call (the "
                f"REST API acts before the call exists): set {key} in the server config's faults or "
                "with PUT /_uvbench/faults"
            ]
        }
    assert server.state.faults == Faults() and server.state.rest_429_left == server.state.rest_503_left == 0
    call = await create(api, experimentalSettings={"uvbench": {"faults": {"output_jitter_ms": 1}}})
    assert server.store.get(call["callId"]).faults.output_jitter_ms == 1


async def test_send_data_message_refuses_a_text_too_long_to_speak_and_cuts_a_quoted_type(
    api: httpx.AsyncClient, server: LocalServer
) -> None:
    call = await create(api)
    url = f"/api/calls/{call['callId']}/send_data_message"
    session = join(server, call["callId"])
    too_long = "a" * (MAX_SPOKEN_TEXT_CHARS + 1)
    refusal = [f"This text is {over_the_spoken_limit(MAX_SPOKEN_TEXT_CHARS + 1)}; shorten it."]
    forced = {"type": "forced_agent_message", "content": too_long}
    assert error(await api.post(url, json=forced), 400) == {"content": refusal}
    assert error(await api.post(url, json={"type": "hang_up", "message": too_long}), 400) == {
        "message": refusal
    }
    at_limit = {"type": "forced_agent_message", "content": "a" * MAX_SPOKEN_TEXT_CHARS}
    ok(await api.post(url, json=at_limit), 204)
    assert session.delivered == [at_limit]
    (unsupported,) = error(await api.post(url, json={"type": "x" * 500_000}), 400)["type"]
    assert unsupported.startswith(f"Unsupported data message type {'x' * ECHO_MAX_CHARS!r}... (the first ")
    assert "of 500,000 characters)" in unsupported and len(unsupported) < 4 * ECHO_MAX_CHARS
