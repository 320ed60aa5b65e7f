"""The Ultravox REST API as a call needs it: create (with retries), then read back what happened.

Retries follow Ultravox's documented guidance: on 429 and 503 honour `Retry-After` (seconds
or an HTTP date), otherwise back off exponentially; other errors are final and reported with the
status and the server's own words. The API key goes in a header and nowhere else.

The lookups `uvbench calls` uses (list_calls, read_call, messages_page, save_recording) retry
reads on 429/503 too and raise ApiRequestError for anything else, so a command can say what
went wrong in one line.

Two HTTP clients, for two jobs: the create request runs in the process that paces every call's
audio, where its CPU holds up the other calls' chunks, so it goes through aiohttp's client (about
0.3 ms of CPU per request where httpx takes 2.5 ms alone and over 4 ms with 50 in flight, whose
pool is scanned once per queued request); the reads after a call, in the analysis process and
`uvbench calls`, use httpx. Both honour the HTTP(S)_PROXY environment variables.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import json
import os
import random
import socket
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from uvbench.call.target_health import TargetHealth

RETRY_STATUSES = (429, 503)
DEFAULT_ATTEMPTS = 5
MAX_BACKOFF_S = 30.0
READ_ATTEMPTS = 3
"""Tries of a read (GET) refused with 429/503, for the lookups of `uvbench calls`."""
MAX_REDIRECTS = 5

Params = Sequence[tuple[str, str]] | dict[str, str] | None


class CallFailed(Exception):
    """A call could not be set up; `reason` is the short outcome tag, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ApiRequestError(Exception):
    """A read of the API that did not succeed.

    `status` is the HTTP status (None when the API was not reached: refused, timed out, DNS),
    `detail` the server's own words (its `{"detail": ...}` or the body's start), `retry_after_s`
    the server's Retry-After when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.retry_after_s = retry_after_s


def cursor_of(page_url: str | None) -> str | None:
    """The `cursor` query value of a page's `next`/`previous` URL (decoded), or None."""
    if not page_url:
        return None
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(page_url).query).get("cursor")
    return values[0] if values else None


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
    return _shortened(response.text)


def _shortened(text: str) -> str:
    text = text.strip().replace("\n", " ")
    return text[:300] + ("…" if len(text) > 300 else "")


def _server_words(response: httpx.Response) -> str:
    """What the server said about an error: DRF's `detail`, its field errors, else the body."""
    try:
        body = response.json()
    except ValueError:
        return _detail(response)
    if isinstance(body, dict):
        if isinstance(body.get("detail"), str):
            return body["detail"]
        parts = []
        for name, value in body.items():
            text = "; ".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{name}: {text}")
        if parts:
            return "; ".join(parts)[:300]
    return _detail(response)


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


class UltravoxApi:
    """An async client of one Ultravox-compatible API (the real service or the local server)."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout_s: float = 15.0,
        client: httpx.AsyncClient | None = None,
        give_up_after_s: float | None = None,
    ):
        self.api_url = api_url.rstrip("/")
        self.health = TargetHealth(self.api_url, give_up_after_s)
        """Shared by every call created through this client: backs creates off while they all fail."""
        self._recovered: asyncio.Event | None = None
        self._own_client = client is None
        self.http = client or httpx.AsyncClient(timeout=timeout_s)
        self._headers = {"X-API-Key": api_key}
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _creator(self) -> aiohttp.ClientSession:
        """The create requests' client, made on first use (on the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(limit=0),  # one connection per call created at once
                trust_env=True,
            )
        return self._session

    async def open(self) -> None:
        """Make the clients now rather than under the first call."""
        self._creator()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
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
        url = f"{self.api_url}/calls"
        await self._admitted()
        sent_at = time.monotonic()
        try:
            call = await self._create(body, url, params, attempts, on_attempt, rng)
        except CallFailed as exc:
            self.health.failed(time.monotonic(), str(exc), sent_at)
            raise
        self.health.succeeded()
        if self._recovered is not None:  # the calls waiting for a try go now
            self._recovered.set()
            self._recovered = None
        return call

    async def _admitted(self) -> None:
        """Wait while creates at this API all fail: one try per backoff period (target_health.py)."""
        while (wait := self.health.admit(time.monotonic())) > 0:
            if self._recovered is None:
                self._recovered = asyncio.Event()
            try:
                await asyncio.wait_for(self._recovered.wait(), wait)
            except TimeoutError:
                pass

    async def _create(
        self,
        body: dict[str, Any],
        url: str,
        params: dict[str, str] | None,
        attempts: int,
        on_attempt: Callable[[int, int, Answer | None], None] | None,
        rng: random.Random,
    ) -> dict[str, Any]:
        for attempt in range(1, attempts + 1):
            if on_attempt:
                on_attempt(attempt, time.monotonic_ns(), None)
            try:
                async with self._creator().post(
                    url, json=body, params=params, headers=self._headers
                ) as response:
                    status, text = response.status, await response.text()
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            except TimeoutError:
                raise CallFailed(
                    "create_timeout", f"POST {url} timed out after {self._timeout_s:g} s"
                ) from None
            except aiohttp.ClientError as exc:
                raise CallFailed("unreachable", f"cannot reach {url} ({_why(exc)})") from None
            if on_attempt:
                on_attempt(attempt, time.monotonic_ns(), Answer(status, retry_after))
            if status == 201 or (200 <= status < 300 and "joinUrl" in text):
                try:
                    call = json.loads(text)
                except ValueError:
                    raise CallFailed("bad_answer", f"HTTP {status}: not JSON: {_shortened(text)}") from None
                if not isinstance(call, dict) or not call.get("joinUrl"):
                    raise CallFailed(
                        "no_join_url", "the created call has no joinUrl (is the medium serverWebSocket?)"
                    )
                return call
            if status in RETRY_STATUSES and attempt < attempts:
                wait = retry_after if retry_after is not None else min(MAX_BACKOFF_S, 2**attempt)
                # A little jitter so many calls refused together do not come back together.
                await asyncio.sleep(min(MAX_BACKOFF_S, wait) * (1 + 0.1 * rng.random()))
                continue
            raise CallFailed(_reason(status), f"HTTP {status}: {_shortened(text)}{_hint(status, url)}")
        raise AssertionError("unreachable")

    async def messages(self, call_id: str) -> list[dict[str, Any]]:
        """All messages of the call, page after page."""
        out: list[dict[str, Any]] = []
        params: Params = None
        while True:
            page = await self.messages_page(call_id, params)
            out.extend(page.get("results", []))
            cursor = cursor_of(page.get("next"))
            if cursor is None:
                return out
            params = {"cursor": cursor}

    async def recording(self, call_id: str, *, wait_s: float = 5.0) -> bytes | None:
        """The server's recording once available (425 means not yet); None if there is none."""
        deadline = time.monotonic() + wait_s
        while True:
            response = await self._get_following(self._recording_url(call_id))
            if response.status_code == 200:
                return response.content
            if response.status_code != 425 or time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)

    # -- lookups for `uvbench calls`: retries on 429/503, every failure an ApiRequestError ------

    async def _get(
        self,
        url: str,
        params: Params = None,
        *,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        attempts: int = READ_ATTEMPTS,
    ) -> httpx.Response:
        """One GET, retried on 429/503 (Retry-After honoured); any answer that is not retried.

        With `stream`, the caller must close the response. Redirects are not followed here.
        """
        headers = self._headers if headers is None else headers
        for attempt in range(1, attempts + 1):
            request = self.http.build_request("GET", url, params=params, headers=headers)
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.TimeoutException:
                raise ApiRequestError(f"GET {_shown(request.url)} timed out") from None
            except httpx.TransportError as exc:
                raise ApiRequestError(f"cannot reach {_shown(request.url)} ({_why(exc)})") from None
            if response.status_code in RETRY_STATUSES and attempt < attempts:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                await response.aclose()
                wait = retry_after if retry_after is not None else 2**attempt
                await asyncio.sleep(min(MAX_BACKOFF_S, wait))
                continue
            return response
        raise AssertionError("unreachable")

    async def _get_json(self, path: str, params: Params = None) -> Any:
        response = await self._get(f"{self.api_url}{path}", params)
        if response.status_code != 200:
            raise _request_error(response)
        try:
            return response.json()
        except ValueError:
            raise ApiRequestError(
                f"GET {_shown(response.url)} answered 200 but not with JSON: {_detail(response)}",
                status=response.status_code,
            ) from None

    async def list_calls(self, params: Params = None) -> dict[str, Any]:
        """One page of GET /calls: `{next, previous, results, total}`. `params` are the API's query
        parameters as they are named there (cursor, pageSize, fromDate, sort, ...)."""
        return await self._get_json("/calls", params)

    async def read_call(self, call_id: str) -> dict[str, Any]:
        """GET /calls/{id}; raises ApiRequestError (404 for an unknown call)."""
        return await self._get_json(f"/calls/{urllib.parse.quote(call_id, safe='')}")

    async def messages_page(self, call_id: str, params: Params = None) -> dict[str, Any]:
        """One page of GET /calls/{id}/messages (params: cursor, pageSize, mode)."""
        return await self._get_json(f"/calls/{urllib.parse.quote(call_id, safe='')}/messages", params)

    async def save_recording(self, call_id: str, path: Path) -> int:
        """GET /calls/{id}/recording into `path`; the number of bytes written.

        The file appears whole or not at all. A recording not ready yet is ApiRequestError with
        status 425.
        """
        url = self._recording_url(call_id)
        response = await self._get_following(url, stream=True)
        try:
            if response.status_code != 200:
                await response.aread()
                raise _request_error(response)
            try:
                return await _stream_to(response, path)
            except httpx.TransportError as exc:
                raise ApiRequestError(f"GET {_shown(url)}: download broke off ({_why(exc)})") from None
        finally:
            await response.aclose()

    def _recording_url(self, call_id: str) -> httpx.URL:
        return httpx.URL(f"{self.api_url}/calls/{urllib.parse.quote(call_id, safe='')}/recording")

    async def _get_following(self, url: httpx.URL, *, stream: bool = False) -> httpx.Response:
        """`_get`, following redirects by hand: the real API may answer with a signed URL on a
        storage host, which must never receive the API key (httpx keeps custom headers across
        hosts), so the key goes only to the API's own origin."""
        origin = url
        for _ in range(MAX_REDIRECTS + 1):
            headers = self._headers if _same_origin(url, origin) else {}
            response = await self._get(str(url), headers=headers, stream=stream)
            if not (response.is_redirect and "Location" in response.headers):
                return response
            await response.aclose()
            url = response.url.join(response.headers["Location"])
        raise ApiRequestError(f"GET {_shown(origin)}: more than {MAX_REDIRECTS} redirects")

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


def _shown(url: httpx.URL | str) -> str:
    """A URL for messages: without its query (a signed URL's signature stays out of logs)."""
    url = httpx.URL(str(url))
    return str(url.copy_with(query=None, fragment=None))


def _why(exc: BaseException) -> str:
    """A transport failure in a few words: "connection refused", "unknown host (...)", ..."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or getattr(seen, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"  # aiohttp's connector error is not the subclass but keeps errno
        if isinstance(seen, socket.gaierror):
            return f"unknown host: {seen.strerror}"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


def _request_error(response: httpx.Response) -> ApiRequestError:
    status = response.status_code
    words = _server_words(response)
    return ApiRequestError(
        f"GET {_shown(response.url)}: HTTP {status}: {words}",
        status=status,
        detail=words,
        retry_after_s=retry_after_seconds(response.headers.get("Retry-After")),
    )


async def _stream_to(response: httpx.Response, path: Path) -> int:
    partial = path.with_name(f".{path.name}.part")
    written = 0
    try:
        with open(partial, "wb") as out:
            async for chunk in response.aiter_bytes():
                out.write(chunk)
                written += len(chunk)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written


def _hint(status: int, url: str) -> str:
    """What a refused create most likely means, where the status alone does not say it."""
    if status == 404:
        return f" (POST {url}: is the base URL right? Ultravox's API is under /api)"
    if status in (401, 403):
        return " (check the API key in the environment variable the target names)"
    return ""


def _reason(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        429: "rate_limited",
        503: "unavailable",
    }.get(status, f"http_{status}")
