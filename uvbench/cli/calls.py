"""`uvbench calls list|get|messages|recording`: the Calls API at hand while investigating a run.

Where the calls are (`--target`, the scenario files' vocabulary):
- `ultravox` (the default): https://api.ultravox.ai/api, key from $ULTRAVOX_API_KEY;
- `local`: a running `uvbench serve` at http://127.0.0.1:8765/api, key from $UVBENCH_SERVER_API_KEY
  (the embedded server of `uvbench run` stops with the run, so its calls are gone afterwards);
- a URL: any Ultravox-compatible API, with `--api-key-env NAME` naming the variable that holds
  its key (no default: a key is never sent to a URL you did not pair it with). A URL without a
  path gets `/api`, so the address `uvbench serve` prints works as is.
`--api-key-env` also overrides the variable of `ultravox` and `local`. Keys come only from the
environment.

Exit codes: 0 done; 2 fix what was given (a bad option, no key in the environment, the key
refused (401/403), the request refused (400), no such call or cursor (404)); 3 could not be done
now (the API unreachable or too slow, a recording not ready yet (425), 429 or 5xx after retries).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uvbench.cli.common import API_KEY_ENV, EXIT_NOT_RUN, EXIT_OK, UsageError

LOCAL_API_URL = "http://127.0.0.1:8765/api"
LIST_PAGE = 20
MESSAGES_PAGE = 50
ALL_PAGE = 100
"""Page sizes asked for when --limit is not given: a screenful, a transcript, and for --all."""
WAIT_POLL_S = 0.5
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

END_REASONS = {
    "unjoined": "client never joined",
    "hangup": "client hung up",
    "agent_hangup": "agent hung up",
    "timeout": "call reached maxDuration",
    "connection_error": "connection error",
    "system_error": "system error",
}
"""The API's EndReasonEnum, in words."""

LIST_FILTERS = (
    # (flag, query parameter of GET /api/calls in openapi.yaml, metavar, help)
    ("--from-date", "fromDate", "DATETIME", "created at or after, e.g. 2026-08-20T10:00:00Z (a date: 00:00)"),
    ("--to-date", "toDate", "DATETIME", "created at or before (a date alone: to its end)"),
    ("--time-of-day-start", "timeOfDayStart", "HH:MM:SS", "created at or after this time of day"),
    ("--time-of-day-end", "timeOfDayEnd", "HH:MM:SS", "created at or before this time of day"),
    ("--duration-min", "durationMin", "DURATION", "calls lasting at least this long, e.g. 30s or 2m"),
    ("--duration-max", "durationMax", "DURATION", "calls lasting at most this long"),
    ("--search", "search", "TEXT", "calls matching this text"),
    ("--sort", "sort", "FIELD", "order, e.g. -created (newest first) or created"),
    ("--voice-id", "voiceId", "UUID", "calls with this voice"),
)


# ---------------------------------------------------------------------------------------------
# The command line.


def add_parser(sub) -> None:
    calls = sub.add_parser(
        "calls",
        help="look up calls on the API: list, details, messages, recording",
        description="Look up calls on Ultravox or a compatible API (the local server too). "
        "Target: --target ultravox (default, key from $ULTRAVOX_API_KEY), --target local "
        f"(a running `uvbench serve`, key from ${API_KEY_ENV}) or --target URL --api-key-env NAME.",
    )
    calls_sub = calls.add_subparsers(dest="calls_command", required=True, metavar="COMMAND")

    listing = calls_sub.add_parser("list", help="recent calls as a table, a page at a time")
    listing.add_argument(
        "--limit", type=int, default=None, metavar="N", help=f"calls per page (default {LIST_PAGE})"
    )
    listing.add_argument(
        "--cursor", default=None, metavar="C", help="start at this page (from a previous 'more:' line)"
    )
    listing.add_argument("--all", action="store_true", help="follow the pages to the end")
    filters = listing.add_argument_group("filters (the query parameters of GET /api/calls)")
    for flag, param, metavar, text in LIST_FILTERS:
        filters.add_argument(flag, dest=_dest(param), default=None, metavar=metavar, help=f"{text} [{param}]")
    filters.add_argument(
        "--agent-id",
        action="append",
        default=[],
        metavar="UUID",
        help="calls of this agent; repeatable [agentIds]",
    )
    filters.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="calls whose metadata has KEY=VALUE; repeatable [metadata.KEY]",
    )
    _json_flag(listing)

    get = calls_sub.add_parser("get", help="one call's details and end reason")
    get.add_argument("call_id", metavar="ID", help="the call id")
    _json_flag(get)

    messages = calls_sub.add_parser("messages", help="one call's messages: role, medium, text, timespan")
    messages.add_argument("call_id", metavar="ID", help="the call id")
    messages.add_argument(
        "--limit", type=int, default=None, metavar="N", help=f"messages per page (default {MESSAGES_PAGE})"
    )
    messages.add_argument(
        "--cursor", default=None, metavar="C", help="start at this page (from a previous 'more:' line)"
    )
    messages.add_argument("--all", action="store_true", help="follow the pages to the end")
    messages.add_argument(
        "--mode",
        choices=("last_stage", "in_call"),
        default=None,
        help="last_stage: the last stage's messages (the API's default); in_call: every stage, "
        "without initialMessages",
    )
    _json_flag(messages)

    recording = calls_sub.add_parser("recording", help="save one call's recording to a file")
    recording.add_argument("call_id", metavar="ID", help="the call id")
    recording.add_argument(
        "-o", "--output", type=Path, default=None, metavar="FILE", help="file to write (default ID.wav)"
    )
    recording.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="while the recording is not ready (the call has not ended), keep asking this long",
    )

    for command in (listing, get, messages, recording):
        target = command.add_argument_group("target")
        target.add_argument(
            "--target",
            default="ultravox",
            metavar="local|ultravox|URL",
            help="the API: ultravox (default), local (a running `uvbench serve` on port 8765) "
            "or a URL like http://host:port/api",
        )
        target.add_argument(
            "--api-key-env",
            default=None,
            metavar="NAME",
            # ULTRAVOX_API_KEY is uvbench.scenario's ULTRAVOX_API_KEY_ENV (a test holds them equal):
            # importing that package here would slow every uvbench command by half a second.
            help="environment variable holding the API key (default ULTRAVOX_API_KEY for ultravox, "
            f"{API_KEY_ENV} for local; required with a URL)",
        )
    calls.set_defaults(handler=main)


def _dest(param: str) -> str:
    return "q_" + param


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a summary")


# ---------------------------------------------------------------------------------------------
# Where the calls are.


@dataclass(frozen=True)
class Endpoint:
    api_url: str
    api_key: str
    key_env: str
    label: str
    local: bool


def resolve_target(target: str, api_key_env: str | None) -> Endpoint:
    """The API URL and key of `--target`/`--api-key-env`; UsageError (one line) when unusable."""
    if api_key_env is not None and not _ENV_NAME.match(api_key_env):
        raise UsageError(
            f"--api-key-env {api_key_env!r} is not an environment variable name "
            "(expected a name like MY_API_KEY; put the key itself in that variable)"
        )
    if target == "ultravox":
        from uvbench.scenario.model import ULTRAVOX_API_KEY_ENV, ULTRAVOX_BASE_URL

        url, env, label, local = ULTRAVOX_BASE_URL, api_key_env or ULTRAVOX_API_KEY_ENV, "ultravox", False
    elif target == "local":
        url, env, local = LOCAL_API_URL, api_key_env or API_KEY_ENV, True
        label = f"the local server at {LOCAL_API_URL}"
    elif re.match(r"^https?://[^\s/]+", target):
        url = target.rstrip("/")
        if re.match(r"^https?://[^/]+$", url):
            url += "/api"
        if api_key_env is None:
            raise UsageError(
                f"--target {target}: name the environment variable holding its API key with "
                "--api-key-env NAME (e.g. --api-key-env UVBENCH_SERVER_API_KEY for a local server)"
            )
        env, label, local = api_key_env, url, False
    else:
        from uvbench.scenario.model import did_you_mean

        hint = did_you_mean(target, ("local", "ultravox"))
        raise UsageError(
            f"--target {target!r}: unknown target ({hint + ' ' if hint else ''}"
            "expected local, ultravox or a URL like http://127.0.0.1:8765/api)"
        )
    key = os.environ.get(env)
    if not key:
        where = "the key `uvbench serve` printed" if target == "local" else "your key"
        extra = "" if api_key_env else " or name another variable with --api-key-env"
        raise UsageError(
            f"no API key for {label}: export {env}=<{where}>{extra} (keys are read from the environment only)"
        )
    return Endpoint(url, key, env, label, local)


# ---------------------------------------------------------------------------------------------
# Running a command.


class Failed(Exception):
    """The command could not be carried out (exit 3); the message is the one line to print."""


class NotReady(Failed):
    """The recording is not there yet (425): not an error, just too early (exit 3 all the same)."""


def main(args: argparse.Namespace) -> int:
    # Everything the user typed is checked before the key is looked up or the API asked.
    command = args.calls_command
    if command == "list":
        params = _list_params(args)
    else:
        call_id = _call_id(args.call_id)
    if command == "messages":
        params = _messages_params(args)
    if command == "recording":
        path = _recording_path(args, call_id)
    endpoint = resolve_target(args.target, args.api_key_env)
    if command == "list":
        run = _list(endpoint, args, params)
    elif command == "get":
        run = _get(endpoint, args, call_id)
    elif command == "messages":
        run = _messages(endpoint, args, call_id, params)
    else:
        run = _recording(endpoint, args, call_id, path)
    try:
        asyncio.run(run)
    except NotReady as exc:
        print(f"uvbench: {exc}", file=sys.stderr)
        return EXIT_NOT_RUN
    except Failed as exc:
        print(f"uvbench: error: {exc}", file=sys.stderr)
        return EXIT_NOT_RUN
    return EXIT_OK


def _call_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise UsageError(
            f"{text!r} is not a call id (expected a UUID like 3fa85f64-5717-4562-b3fc-2c963f66afa6; "
            "`uvbench calls list` shows them)"
        ) from None


def _page_size(limit: int | None, everything: bool, default: int) -> str:
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    return str(limit if limit is not None else (ALL_PAGE if everything else default))


def _list_params(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The query of GET /api/calls, named as openapi.yaml names it."""
    from uvbench.protocol.durations import format_duration
    from uvbench.scenario.model import duration_seconds

    params = [("pageSize", _page_size(args.limit, args.all, LIST_PAGE))]
    if args.cursor is not None:
        params.append(("cursor", _nonblank("--cursor", args.cursor)))
    for flag, param, _, _ in LIST_FILTERS:
        value = getattr(args, _dest(param))
        if value is None:
            continue
        value = _nonblank(flag, value)
        if param in ("durationMin", "durationMax"):
            try:
                value = format_duration(duration_seconds(value))
            except ValueError as exc:
                raise UsageError(f"{flag}: {exc}") from None
        if param == "voiceId":
            value = _uuid_option(flag, value)
        params.append((param, value))
    for agent_id in args.agent_id:
        params.append(("agentIds", _uuid_option("--agent-id", agent_id)))
    for pair in args.metadata:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--metadata {pair!r}: expected KEY=VALUE, e.g. --metadata scenario=booking")
        params.append((f"metadata.{key.strip()}", value))
    return params


def _nonblank(flag: str, value: str) -> str:
    if not value.strip():
        raise UsageError(f"{flag}: empty value")
    return value.strip()


def _uuid_option(flag: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a UUID") from None


def _api(endpoint: Endpoint):
    from uvbench.call.rest import UltravoxApi

    return UltravoxApi(endpoint.api_url, endpoint.api_key)


async def _pages(fetch, params: list[tuple[str, str]], everything: bool) -> dict[str, Any]:
    """The first page, or with `everything` all pages merged into one (next/previous null)."""
    from uvbench.call.rest import cursor_of

    page = await fetch(params)
    if not everything:
        return page
    results = list(page.get("results", []))
    seen: set[str] = set()
    while (cursor := cursor_of(page.get("next"))) is not None and cursor not in seen:
        seen.add(cursor)
        page = await fetch([(k, v) for k, v in params if k != "cursor"] + [("cursor", cursor)])
        results.extend(page.get("results", []))
    return {"next": None, "previous": None, "results": results, "total": len(results)}


async def _list(endpoint: Endpoint, args: argparse.Namespace, params: list[tuple[str, str]]) -> None:
    async with _api(endpoint) as api:
        page = await _guard(endpoint, "the call list", _pages(api.list_calls, params, args.all), params)
    if args.json:
        _print_json(page)
        return
    calls = page.get("results", [])
    if calls:
        header = ["CALL ID", "CREATED (UTC)", "JOINED", "ENDED", "END REASON", "DURATION"]
        print(_table(header, _call_rows(calls)))
    print(_footer(page, "call", "calls", args.all))


async def _get(endpoint: Endpoint, args: argparse.Namespace, call_id: str) -> None:
    async with _api(endpoint) as api:
        call = await _guard(endpoint, f"call {call_id}", api.read_call(call_id))
    if args.json:
        _print_json(call)
        return
    print("\n".join(call_summary(call)))


def _messages_params(args: argparse.Namespace) -> list[tuple[str, str]]:
    params = [("pageSize", _page_size(args.limit, args.all, MESSAGES_PAGE))]
    if args.cursor is not None:
        params.append(("cursor", _nonblank("--cursor", args.cursor)))
    if args.mode is not None:
        params.append(("mode", args.mode))
    return params


async def _messages(
    endpoint: Endpoint, args: argparse.Namespace, call_id: str, params: list[tuple[str, str]]
) -> None:
    async with _api(endpoint) as api:

        def fetch(p):
            return api.messages_page(call_id, p)

        page = await _guard(endpoint, f"messages of call {call_id}", _pages(fetch, params, args.all), params)
    if args.json:
        _print_json(page)
        return
    messages = page.get("results", [])
    if messages:
        print(_table(["#", "ROLE", "MEDIUM", "TIMESPAN", "TEXT"], _message_rows(messages)))
    print(_footer(page, "message", "messages", args.all))


def _recording_path(args: argparse.Namespace, call_id: str) -> Path:
    path: Path = args.output if args.output is not None else Path(f"{call_id}.wav")
    if path.is_dir():
        raise UsageError(f"-o {path}: is a folder; name the file, e.g. -o {path / (call_id + '.wav')}")
    if not path.parent.is_dir():
        raise UsageError(f"-o {path}: folder {path.parent} does not exist")
    if args.wait is not None and not args.wait >= 0:
        raise UsageError(f"--wait must be a number of seconds, 0 or more, got {args.wait}")
    return path


async def _recording(endpoint: Endpoint, args: argparse.Namespace, call_id: str, path: Path) -> None:
    from uvbench.call.rest import ApiRequestError

    deadline = time.monotonic() + (args.wait or 0.0)
    async with _api(endpoint) as api:
        while True:
            try:
                size = await api.save_recording(call_id, path)
                break
            except ApiRequestError as exc:
                if exc.status != 425:
                    _fail(endpoint, f"recording of call {call_id}", exc)
                left = deadline - time.monotonic()
                if args.wait is None:
                    raise NotReady(
                        f"recording of call {call_id} is not ready yet, try again in a few seconds "
                        "(or wait for it with --wait SECONDS)"
                    ) from None
                if left <= 0:
                    raise NotReady(
                        f"recording of call {call_id} is still not ready after --wait {args.wait:g} s; "
                        "is the call still going? (`uvbench calls get` shows whether it ended)"
                    ) from None
                await asyncio.sleep(min(exc.retry_after_s or WAIT_POLL_S, WAIT_POLL_S, left))
            except OSError as exc:
                raise UsageError(f"-o {path}: cannot write ({exc.strerror or exc})") from None
    print(f"{path}: recording of call {call_id}{_wav_info(path, size)}")


def _wav_info(path: Path, size: int) -> str:
    """Duration, channels and rate of a readable audio file (", 12.3 s, ..."), else its size."""
    try:
        import soundfile

        info = soundfile.info(str(path))
        channels = "1 channel" if info.channels == 1 else f"{info.channels} channels"
        return f", {info.duration:.1f} s, {channels} at {info.samplerate} Hz"
    except Exception:  # not audio we can read: still saved, say how much
        return f", {size} bytes"


# ---------------------------------------------------------------------------------------------
# Errors: one line each.


async def _guard(endpoint: Endpoint, what: str, awaitable, params: list[tuple[str, str]] | None = None):
    from uvbench.call.rest import ApiRequestError

    try:
        return await awaitable
    except ApiRequestError as exc:
        _fail(endpoint, what, exc, params)


def _fail(endpoint: Endpoint, what: str, exc, params: list[tuple[str, str]] | None = None):
    """Raises UsageError (exit 2) or Failed (exit 3) with one line saying what went wrong."""
    status, words = exc.status, exc.detail
    said = f"HTTP {status}: {words}" if words else f"HTTP {status}"
    if status is None:
        hint = "; is `uvbench serve` running? (it prints its URL and key)" if endpoint.local else ""
        raise Failed(f"{exc}{hint}")
    if status in (401, 403):
        raise UsageError(f"{endpoint.label} refused the API key in ${endpoint.key_env} ({said})")
    if status == 404:
        if params and any(k == "cursor" for k, _ in params) and "cursor" in words.lower():
            raise UsageError(f"--cursor: {endpoint.label} does not know this cursor ({said})")
        if words.strip().rstrip(".").lower() == "not found":
            raise UsageError(f"{what}: not found on {endpoint.label} ({said})")
        raise UsageError(f"{what}: {words} (HTTP 404 from {endpoint.label})")
    if status == 400:
        raise UsageError(f"{endpoint.label} refused the request for {what} ({said}){_flags_named(words)}")
    if status == 429:
        later = f"; try again in {exc.retry_after_s:g} s" if exc.retry_after_s else "; try again later"
        raise Failed(f"{what}: {endpoint.label} is refusing requests for now ({said}){later}")
    raise Failed(f"{what}: {endpoint.label} answered {said}; try again later")


def _flags_named(words: str) -> str:
    named = [flag for flag, param, _, _ in LIST_FILTERS if re.search(rf"\b{param}\b", words)]
    if re.search(r"\bagentIds\b", words):
        named.append("--agent-id")
    return f" [see {', '.join(named)}]" if named else ""


# ---------------------------------------------------------------------------------------------
# Output.


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _footer(page: dict[str, Any], one: str, many: str, everything: bool) -> str:
    from uvbench.call.rest import cursor_of

    shown = len(page.get("results", []))
    total = page.get("total") if isinstance(page.get("total"), int) else None
    if shown == 0:
        line = f"no {many}" if everything or not total else f"no {many} on this page (of {total})"
    elif everything or total is None:
        line = f"{shown} {one if shown == 1 else many}"
    else:
        line = f"{shown} of {total} {one if total == 1 else many}"
    cursor = cursor_of(page.get("next"))
    if cursor and not everything:
        line += f"; more: use --cursor {cursor} (with the same options) or --all"
    return line


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded (it may be long)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _when(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _clock(moment: dt.datetime | None, day: dt.datetime | None) -> str:
    """Time of day to a tenth of a second, with the date when it is not `day`'s."""
    if moment is None:
        return "-"
    text = moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 100_000}"
    if day is not None and moment.date() != day.date():
        text = moment.strftime("%Y-%m-%d ") + text
    return text


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _duration_s(call: dict[str, Any]) -> float | None:
    joined, ended = _when(call.get("joined")), _when(call.get("ended"))
    if joined is None or ended is None:
        return None
    return max(0.0, (ended - joined).total_seconds())


def _state(call: dict[str, Any]) -> str:
    if call.get("endReason"):
        return str(call["endReason"])
    if call.get("ended"):
        return "ended"
    return "live" if call.get("joined") else "not joined yet"


def _call_rows(calls: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for call in calls:
        created = _when(call.get("created"))
        rows.append(
            [
                str(call.get("callId", "?")),
                created.strftime("%Y-%m-%d %H:%M:%S") if created else "-",
                _clock(_when(call.get("joined")), created),
                _clock(_when(call.get("ended")), created),
                _state(call),
                _span(_duration_s(call)),
            ]
        )
    return rows


def call_summary(call: dict[str, Any]) -> list[str]:
    """A call's details for a person: when, how it ended, how it was set up."""
    created, joined, ended = (_when(call.get(k)) for k in ("created", "joined", "ended"))
    lines = [f"call {call.get('callId', '?')}"]

    def at(moment: dt.datetime | None, after_created: bool = True) -> str:
        if moment is None:
            return "-"
        text = moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
        if after_created and created is not None:
            text += f" (+{(moment - created).total_seconds():.2f} s)"
        return text

    lines.append(f"  created      {at(created, after_created=False)}")
    lines.append(f"  joined       {at(joined) if joined else 'not joined'}")
    lines.append(f"  ended        {at(ended) if ended else 'not ended'}")
    reason = call.get("endReason")
    if reason:
        words = END_REASONS.get(reason)
        lines.append(f"  end reason   {reason}" + (f" ({words})" if words else ""))
    else:
        lines.append(f"  state        {_state(call)}")
    duration = _duration_s(call)
    billed = call.get("billedDuration")
    if duration is not None or billed:
        text = _span(duration) if duration is not None else "-"
        if billed:
            text += f" (billed {billed}"
            text += f", {call['billingStatus']})" if call.get("billingStatus") else ")"
        lines.append(f"  duration     {text}")
    setup = [f"model {call['model']}"] if call.get("model") else []
    if call.get("voice"):
        setup.append(f"voice {call['voice']}")
    if call.get("agentId"):
        setup.append(f"agent {call['agentId']}")
    if setup:
        lines.append(f"  setup        {', '.join(setup)}")
    medium = call.get("medium") or {}
    for name, settings in medium.items():
        text = name
        if isinstance(settings, dict) and "inputSampleRate" in settings:
            out = settings.get("outputSampleRate", settings["inputSampleRate"])
            text += f", {settings['inputSampleRate']} Hz in / {out} Hz out"
            if "clientBufferSizeMs" in settings:
                text += f", client buffer {settings['clientBufferSizeMs']} ms"
        lines.append(f"  medium       {text}")
    limits = [f"{k} {call[k]}" for k in ("joinTimeout", "maxDuration") if call.get(k)]
    if limits:
        lines.append(f"  limits       {', '.join(limits)}")
    lines.append(f"  recording    {'enabled' if call.get('recordingEnabled') else 'not enabled'}")
    metadata = call.get("metadata") or {}
    if metadata:
        lines.append(f"  metadata     {', '.join(f'{k}={v}' for k, v in metadata.items())}")
    if call.get("clientVersion"):
        lines.append(f"  client       {call['clientVersion']}")
    summary = call.get("shortSummary") or call.get("summary")
    if summary:
        lines.append(f"  summary      {' '.join(str(summary).split())}")
    return lines


def _message_rows(messages: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for position, message in enumerate(messages):
        index = message.get("callStageMessageIndex", position)
        role = str(message.get("role") or "-").removeprefix("MESSAGE_ROLE_").lower()
        medium = str(message.get("medium") or "-").removeprefix("MESSAGE_MEDIUM_").lower()
        if medium == "unspecified":
            medium = "-"
        text = " ".join(str(message.get("text") or "").split())
        if message.get("toolName"):
            text = f"{message['toolName']}: {text}" if text else str(message["toolName"])
        if message.get("errorDetails"):
            text += f" [error: {' '.join(str(message['errorDetails']).split())}]"
        rows.append([str(index), role, medium, _timespan(message.get("timespan")), text])
    return rows


def _timespan(span: Any) -> str:
    """A {start, end} of duration strings as "1.20-3.45s"; "-" for initial messages (none)."""
    from uvbench.protocol.durations import DurationError, parse_duration

    if not isinstance(span, dict):
        return "-"
    try:
        start = parse_duration(span["start"]) if span.get("start") else None
        end = parse_duration(span["end"]) if span.get("end") else None
    except DurationError:
        return f"{span.get('start')}-{span.get('end')}"
    if start is None and end is None:
        return "-"
    first = f"{start:.2f}" if start is not None else "?"
    last = f"{end:.2f}" if end is not None else "?"
    return f"{first}-{last}s"
