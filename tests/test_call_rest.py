"""The call engine's REST client: retries that honour Retry-After, and clear final failures."""

from __future__ import annotations

import time

import pytest

from uvbench.call.rest import CallFailed, UltravoxApi, retry_after_seconds
from uvbench.server import LocalServer, ServerConfig
from uvbench.server.config import PLANS, Faults

BODY = {"medium": {"serverWebSocket": {"inputSampleRate": 16000}}}


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


async def test_429_and_503_are_retried_after_the_servers_retry_after():
    async with LocalServer(ServerConfig(faults=Faults(rest_429=1, rest_503=1))) as server:
        answers = []
        async with UltravoxApi(server.api_url, server.api_key) as api:
            started = time.monotonic()
            call = await api.create_call(
                BODY, on_attempt=lambda a, t, ans: answers.append(ans and ans.status)
            )
            elapsed = time.monotonic() - started
    assert call["joinUrl"]
    # Sent, 503 (its burst is checked first), sent, 429, sent, 201; each refusal said Retry-After: 1.
    assert answers == [None, 503, None, 429, None, 201]
    assert 2.0 <= elapsed < 4.0


async def test_plan_limits_are_waited_out():
    async with LocalServer(ServerConfig(plan=PLANS["free"])) as server:
        async with UltravoxApi(server.api_url, server.api_key) as api:
            statuses = []
            for _ in range(6):  # the sixth create in one second is refused, then retried
                await api.create_call(BODY, on_attempt=lambda a, t, ans: statuses.append(ans and ans.status))
                for record in server.store.calls.values():  # end them: the free plan allows 5 at once
                    server.store.mark_ended(record, time.monotonic_ns(), "hangup")
    assert statuses.count(201) == 6 and 429 in statuses


async def test_final_failures_say_why():
    async with LocalServer(ServerConfig()) as server:
        async with UltravoxApi(server.api_url, "wrongKey.0000000000000000000000000000000") as api:
            with pytest.raises(CallFailed) as unauthorized:
                await api.create_call(BODY)
        assert unauthorized.value.reason == "unauthorized"
        assert str(unauthorized.value) == (
            'HTTP 401: {"detail": "Invalid API key."} (check the API key in the environment variable '
            "the target names)"
        )
        # A base URL without /api: the refusal names the URL it tried and what is likely wrong.
        root = server.api_url.rsplit("/api", 1)[0]
        async with UltravoxApi(root, server.api_key) as api:
            with pytest.raises(CallFailed) as missing:
                await api.create_call(BODY)
        assert missing.value.reason == "not_found"
        assert str(missing.value).endswith(
            f"(POST {root}/calls: is the base URL right? Ultravox's API is under /api)"
        )
        async with UltravoxApi(server.api_url, server.api_key) as api:
            with pytest.raises(CallFailed) as bad:
                await api.create_call({"medium": {"serverWebSocket": {}}})
        assert bad.value.reason == "bad_request" and "inputSampleRate" in str(bad.value)
        # Retries give up after the last attempt and report the refusal.
        server.state.rest_429_left = 10
        async with UltravoxApi(server.api_url, server.api_key) as api:
            with pytest.raises(CallFailed) as limited:
                await api.create_call(BODY, attempts=2)
        assert limited.value.reason == "rate_limited"
    async with UltravoxApi("http://127.0.0.1:9/api", "k") as api:
        with pytest.raises(CallFailed) as unreachable:
            await api.create_call(BODY)
    assert unreachable.value.reason == "unreachable"
    assert str(unreachable.value) == "cannot reach http://127.0.0.1:9/api/calls (connection refused)"


async def test_the_engines_recording_fetch_keeps_the_key_off_a_signed_url_host():
    import httpx

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "storage.example.com":
            return httpx.Response(200, content=b"RIFF....WAVE")
        return httpx.Response(302, headers={"Location": "https://storage.example.com/r.wav?sig=abc"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with UltravoxApi("https://api.example.com/api", "key.123", client=client) as api:
        assert await api.recording("abc") == b"RIFF....WAVE"
    assert [r.url.host for r in seen] == ["api.example.com", "storage.example.com"]
    assert seen[0].headers["X-API-Key"] == "key.123" and "X-API-Key" not in seen[1].headers
