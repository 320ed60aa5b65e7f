"""The Ultravox REST API as a call needs it: create (with retries), then read back what happened.

Retries follow Ultravox's guidance (PROTOCOL.md §5): on 429 and 503 honour `Retry-After` (seconds
or an HTTP date), otherwise back off exponentially; other errors are final and reported with the
status and the server's own words. The API key goes in a header and nowhere else.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

RETRY_STATUSES = (429, 503)
DEFAULT_ATTEMPTS = 5
MAX_BACKOFF_S = 30.0


class CallFailed(Exception):
    """A call could not be set up; `reason` is the short outcome tag, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after_s: float | None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _detail(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:300] + ("…" if len(text) > 300 else "")


class UltravoxApi:
    """An async client of one Ultravox-compatible API (the real service or the local server)."""

    def __init__(
        self, api_url: str, api_key: str, *, timeout_s: float = 15.0, client: httpx.AsyncClient | None = None
    ):
        self.api_url = api_url.rstrip("/")
        self._own_client = client is None
        self.http = client or httpx.AsyncClient(timeout=timeout_s)
        self._headers = {"X-API-Key": api_key}

    async def close(self) -> None:
        if self._own_client:
            await self.http.aclose()

    async def __aenter__(self) -> UltravoxApi:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def create_call(
        self,
        body: dict[str, Any],
        *,
        prior_call_id: str | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        on_attempt: Callable[[int, int, Answer | None], None] | None = None,
        rng: random.Random | None = None,
    ) -> dict[str, Any]:
        """POST /calls; the created Call. `on_attempt(attempt, t_ns, answer)` is told of each try
        (answer None when it is sent, then its status)."""
        params = {"priorCallId": prior_call_id} if prior_call_id else None
        rng = rng or random.Random()
        for attempt in range(1, attempts + 1):
            if on_attempt:
                on_attempt(attempt, time.monotonic_ns(), None)
            try:
                response = await self.http.post(
                    f"{self.api_url}/calls", json=body, params=params, headers=self._headers
                )
            except httpx.TimeoutException:
                raise CallFailed("create_timeout", f"POST {self.api_url}/calls timed out") from None
            except httpx.TransportError as exc:
                raise CallFailed("unreachable", f"cannot reach {self.api_url}: {exc}") from None
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if on_attempt:
                on_attempt(attempt, time.monotonic_ns(), Answer(response.status_code, retry_after))
            if response.status_code == 201 or (
                200 <= response.status_code < 300 and "joinUrl" in response.text
            ):
                call = response.json()
                if not call.get("joinUrl"):
                    raise CallFailed(
                        "no_join_url", "the created call has no joinUrl (is the medium serverWebSocket?)"
                    )
                return call
            if response.status_code in RETRY_STATUSES and attempt < attempts:
                wait = retry_after if retry_after is not None else min(MAX_BACKOFF_S, 2**attempt)
                # A little jitter so many calls refused together do not come back together.
                await asyncio.sleep(min(MAX_BACKOFF_S, wait) * (1 + 0.1 * rng.random()))
                continue
            raise CallFailed(
                _reason(response.status_code), f"HTTP {response.status_code}: {_detail(response)}"
            )
        raise AssertionError("unreachable")

    async def get_call(self, call_id: str) -> dict[str, Any]:
        response = await self.http.get(f"{self.api_url}/calls/{call_id}", headers=self._headers)
        response.raise_for_status()
        return response.json()

    async def messages(self, call_id: str) -> list[dict[str, Any]]:
        """All messages of the call, following pagination."""
        url: str | None = f"{self.api_url}/calls/{call_id}/messages"
        out: list[dict[str, Any]] = []
        while url:
            response = await self.http.get(url, headers=self._headers)
            response.raise_for_status()
            page = response.json()
            out.extend(page.get("results", []))
            url = page.get("next")
        return out

    async def recording(self, call_id: str, *, wait_s: float = 5.0) -> bytes | None:
        """The server's recording once available (425 means not yet); None if there is none."""
        deadline = time.monotonic() + wait_s
        while True:
            response = await self.http.get(
                f"{self.api_url}/calls/{call_id}/recording", headers=self._headers, follow_redirects=True
            )
            if response.status_code == 200:
                return response.content
            if response.status_code != 425 or time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)

    async def ground_truth(self, call_id: str) -> dict[str, Any] | None:
        """The local server's record of the call (uvbench extension); None on other servers."""
        base = self.api_url.rsplit("/api", 1)[0]
        try:
            response = await self.http.get(
                f"{base}/_uvbench/calls/{call_id}/ground_truth", headers=self._headers
            )
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None


def _reason(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        429: "rate_limited",
        503: "unavailable",
    }.get(status, f"http_{status}")
