"""`uvbench calls`: list, get, messages and recording against a local server in a thread."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from types import SimpleNamespace

import httpx
import pytest
import soundfile
import websockets

from uvbench.cli import calls as calls_cli
from uvbench.cli import main
from uvbench.server import ServerConfig, ServerThread
from uvbench.server.config import AgentBehaviour, Latency

KEY_ENV = "UVBENCH_TEST_CALLS_KEY"
SPARE_ENV = "UVBENCH_TEST_SPARE_KEY"
MEDIUM = {"serverWebSocket": {"inputSampleRate": 16000}}
UNKNOWN_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def _create(base_url: str, key: str, **body) -> str:
    payload = {"systemPrompt": "You are a test agent.", "medium": MEDIUM, **body}
    response = httpx.post(f"{base_url}/api/calls", json=payload, headers={"X-API-Key": key})
    assert response.status_code == 201, response.text
    return response.json()["callId"]


async def _talk(
    join_url: str,
    joined: threading.Event | None = None,
    linger_s: float = 0.0,
    until: threading.Event | None = None,
) -> None:
    """A short text-mode call: 200 ms of silence, one user text, the agent's two replies, hang up
    (after `linger_s`, or once `until` is set, 10 s at most)."""
    async with websockets.connect(join_url) as ws:
        if joined is not None:
            joined.set()
        await ws.send(b"\0" * 6400)
        await ws.send(json.dumps({"type": "user_text_message", "text": "hello there"}))
        finals = 0
        while finals < 2:
            message = await asyncio.wait_for(ws.recv(), 5)
            if isinstance(message, str):
                data = json.loads(message)
                finals += data.get("type") == "transcript" and data["role"] == "agent" and data["final"]
        await asyncio.sleep(linger_s)
        if until is not None:
            await asyncio.to_thread(until.wait, 10)


def _talked_call(base_url: str, key: str, **body) -> dict:
    payload = {
        "systemPrompt": "You are a test agent.",
        "medium": MEDIUM,
        "recordingEnabled": True,
        "initialOutputMedium": "MESSAGE_MEDIUM_TEXT",
        **body,
    }
    response = httpx.post(f"{base_url}/api/calls", json=payload, headers={"X-API-Key": key})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def local():
    """A server with three REST-created calls and one finished call that talked."""
    agent = AgentBehaviour(greeting="Hi.", replies=("Okay.",), latency=Latency(kind="fixed", ms=5))
    with ServerThread(ServerConfig(agent=agent)) as server:
        url, key = server.base_url, server.api_key
        created = [_create(url, key, metadata={"batch": f"b{i}"}) for i in range(3)]
        call = _talked_call(url, key, metadata={"batch": "talked"})
        asyncio.run(_talk(call["joinUrl"]))
        for _ in range(100):  # the session writes the recording just after the end
            if server.server.store.get(call["callId"]).recording_wav is not None:
                break
            threading.Event().wait(0.02)
        yield SimpleNamespace(url=url, key=key, server=server, created=created, talked=call["callId"])


@pytest.fixture
def cli(local, monkeypatch, capsys):
    """Runs `uvbench calls ...` against the local server; (exit code, stdout, stderr)."""
    monkeypatch.setenv(KEY_ENV, local.key)

    def run(*args: str, target: tuple[str, ...] | None = None):
        if target is None:
            target = ("--target", local.url, "--api-key-env", KEY_ENV)
        code = main(["calls", *args, *target])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def spare(monkeypatch):
    """A server of its own, for tests that add calls (the module's server keeps its four)."""
    agent = AgentBehaviour(greeting="Hi.", replies=("Okay.",), latency=Latency(kind="fixed", ms=5))
    with ServerThread(ServerConfig(agent=agent)) as server:
        monkeypatch.setenv(SPARE_ENV, server.api_key)
        yield SimpleNamespace(
            url=server.base_url,
            key=server.api_key,
            target=("--target", server.base_url, "--api-key-env", SPARE_ENV),
        )


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def cursor_hint(out: str) -> str:
    last = out.strip().splitlines()[-1]
    assert "more: use --cursor " in last, out
    return last.split("more: use --cursor ")[1].split()[0]


# -- list ----------------------------------------------------------------------------------------


def test_list_shows_every_call_in_a_table(cli, local):
    code, out, err = cli("list")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["CALL", "ID", "CREATED"]
    for call_id in [*local.created, local.talked]:
        assert call_id in out
    talked = next(line for line in lines if local.talked in line)
    assert "hangup" in talked and talked.rstrip().endswith("s")
    assert "not joined yet" in next(line for line in lines if local.created[0] in line)
    assert lines[-1] == "4 of 4 calls"


def test_list_pages_with_a_cursor_hint_and_all_follows_them(cli, local):
    code, out, _ = cli("list", "--limit", "1")
    assert code == 0
    newest = local.talked  # -created is the default order
    assert newest in out and not any(c in out for c in local.created)
    assert "1 of 4 calls; more: use --cursor" in out
    code, out, _ = cli("list", "--limit", "1", "--cursor", cursor_hint(out))
    assert code == 0 and local.created[2] in out and newest not in out

    code, out, _ = cli("list", "--limit", "1", "--all")
    assert code == 0
    assert all(c in out for c in [*local.created, local.talked])
    assert out.strip().splitlines()[-1] == "4 calls"

    code, out, _ = cli("list", "--limit", "1", "--all", "--json")
    page = json.loads(out)
    assert [c["callId"] for c in page["results"]] == [local.talked, *reversed(local.created)]
    assert page["next"] is None and page["total"] == 4


def test_list_filters_use_the_api_parameters(cli, local):
    code, out, _ = cli("list", "--metadata", "batch=b1", "--json")
    assert code == 0 and [c["callId"] for c in json.loads(out)["results"]] == [local.created[1]]
    code, out, _ = cli("list", "--sort", "created", "--limit", "1")
    assert code == 0 and local.created[0] in out
    code, out, _ = cli("list", "--duration-max", "1m", "--from-date", "2000-01-01")
    assert code == 0 and local.talked in out and local.created[0] not in out  # only ended calls last
    code, out, _ = cli("list", "--search", "no call says this")
    assert code == 0 and out.strip() == "no calls"

    code, _, err = cli("list", "--from-date", "yesterday-ish")
    assert code == 2 and "fromDate" in one_line(err) and "--from-date" in err
    code, _, err = cli("list", "--duration-min", "soon")
    assert code == 2 and one_line(err).startswith("uvbench: error: --duration-min")
    code, _, err = cli("list", "--cursor", "not-a-cursor")
    assert code == 2 and "--cursor" in one_line(err)
    code, _, err = cli("list", "--limit", "0")
    assert code == 2 and "--limit" in one_line(err)


# -- get and messages ----------------------------------------------------------------------------


def test_get_summarizes_the_call_and_json_is_the_api_object(cli, local):
    code, out, _ = cli("get", local.talked)
    assert code == 0
    assert out.startswith(f"call {local.talked}\n")
    assert "end reason   hangup (client hung up)" in out
    assert "recording    enabled" in out and "metadata     batch=talked" in out
    code, out, _ = cli("get", local.talked.upper(), "--json")  # any UUID spelling
    call = json.loads(out)
    assert code == 0 and call["callId"] == local.talked and call["endReason"] == "hangup"


def test_messages_table_pages_and_json(cli, local):
    code, out, _ = cli("messages", local.talked)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["#", "ROLE", "MEDIUM", "TIMESPAN", "TEXT"]
    user = next(line for line in lines if "hello there" in line)
    assert user.split()[1:3] == ["user", "text"] and user.split()[3].endswith("s")
    assert any(line.split()[1] == "agent" and line.endswith("Okay.") for line in lines[1:-1])
    assert lines[-1] == "3 of 3 messages"

    code, out, _ = cli("messages", local.talked, "--limit", "1")
    # One message on the page (the greeting or the user's text: whichever the server had first).
    assert code == 0 and sum(text in out for text in ("hello there", "Okay.", "Hi.")) == 1
    assert "1 of 3 messages; more: use --cursor" in out
    code, out, _ = cli("messages", local.talked, "--limit", "1", "--all")
    assert code == 0 and "hello there" in out and "Okay." in out and out.rstrip().endswith("3 messages")
    code, out, _ = cli("messages", local.talked, "--all", "--json")
    texts = [m["text"] for m in json.loads(out)["results"]]
    assert code == 0 and "hello there" in texts and len(texts) == 3


# -- recording -----------------------------------------------------------------------------------


def test_recording_is_saved_as_a_wav(cli, local, tmp_path, monkeypatch):
    target = tmp_path / "talk.wav"
    code, out, _ = cli("recording", local.talked, "-o", str(target))
    assert code == 0 and out.startswith(f"{target}: recording of call {local.talked}")
    info = soundfile.info(str(target))
    assert info.format == "WAV" and info.samplerate == 16000 and info.frames > 0
    monkeypatch.chdir(tmp_path)
    code, _, _ = cli("recording", local.talked)
    assert code == 0 and soundfile.info(f"{local.talked}.wav").frames == info.frames
    assert not list(tmp_path.glob(".*.part"))


def test_recording_not_ready_is_one_line_exit_3(cli, spare, tmp_path):
    live = _create(spare.url, spare.key, recordingEnabled=True)  # not ended: the API answers 425
    target = tmp_path / "early.wav"
    code, _, err = cli("recording", live, "-o", str(target), target=spare.target)
    assert code == 3
    assert one_line(err) == (
        f"uvbench: recording of call {live} is not ready yet, try again in a few seconds "
        "(or wait for it with --wait SECONDS)"
    )
    assert not target.exists()
    code, _, err = cli("recording", live, "-o", str(target), "--wait", "0.2", target=spare.target)
    assert code == 3 and "still not ready after --wait 0.2 s" in one_line(err)


def test_recording_wait_retries_until_the_call_ends(cli, spare, tmp_path, monkeypatch):
    from uvbench.call.rest import ApiRequestError, UltravoxApi

    answers: list[int] = []
    asked = threading.Event()
    save = UltravoxApi.save_recording

    async def counted(self, call_id, path):
        try:
            size = await save(self, call_id, path)
        except ApiRequestError as exc:
            answers.append(exc.status)
            raise
        finally:
            asked.set()  # the call hangs up once asked: however slow the CLI was to ask
        answers.append(200)
        return size

    monkeypatch.setattr(UltravoxApi, "save_recording", counted)
    call = _talked_call(spare.url, spare.key)
    joined = threading.Event()
    talker = threading.Thread(target=lambda: asyncio.run(_talk(call["joinUrl"], joined, until=asked)))
    talker.start()
    try:
        assert joined.wait(5)
        target = tmp_path / "waited.wav"
        code, out, err = cli(
            "recording", call["callId"], "-o", str(target), "--wait", "10", target=spare.target
        )
    finally:
        talker.join(10)
    assert code == 0, err
    assert answers[0] == 425 and answers[-1] == 200  # asked while the call was live, then again
    assert soundfile.info(str(target)).frames > 0


def test_recording_of_a_call_without_one_is_a_404_line(cli, local, tmp_path):
    code, _, err = cli("recording", local.created[0], "-o", str(tmp_path / "x.wav"))
    assert code == 2 and "Recording was not enabled" in one_line(err)


# -- errors: one line each -----------------------------------------------------------------------


def test_unknown_or_malformed_call_id(cli):
    for command in ("get", "messages", "recording"):
        code, _, err = cli(command, UNKNOWN_ID)
        assert code == 2
        assert f"{UNKNOWN_ID}" in one_line(err) and "HTTP 404" in err
    code, _, err = cli("get", "call-42")
    assert code == 2 and "is not a call id" in one_line(err)


def test_missing_or_refused_key(cli, local, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    code, _, err = cli("list")
    assert code == 2 and f"export {KEY_ENV}=" in one_line(err)
    monkeypatch.delenv("ULTRAVOX_API_KEY", raising=False)
    code, _, err = cli("list", target=())  # the default target is ultravox
    assert code == 2 and "export ULTRAVOX_API_KEY=" in one_line(err)
    code, _, err = cli("list", target=("--target", local.url))  # a URL needs its key variable named
    assert code == 2 and "--api-key-env" in one_line(err)
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    code, _, err = cli("get", UNKNOWN_ID)
    assert code == 2 and f"refused the API key in ${KEY_ENV}" in one_line(err) and "401" in err


def test_connection_refused_is_one_line_exit_3(cli):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = cli("list", target=("--target", f"http://127.0.0.1:{port}", "--api-key-env", KEY_ENV))
    assert code == 3
    assert (
        one_line(err)
        == f"uvbench: error: cannot reach http://127.0.0.1:{port}/api/calls (connection refused)"
    )


def test_bad_target(cli):
    code, _, err = cli("list", target=("--target", "loacl"))
    assert code == 2 and 'did you mean "local"' in one_line(err)


def test_target_names(monkeypatch):
    monkeypatch.setenv("UVBENCH_SERVER_API_KEY", "k-local")
    monkeypatch.setenv("ULTRAVOX_API_KEY", "k-real")
    local = calls_cli.resolve_target("local", None)
    assert (local.api_url, local.api_key) == ("http://127.0.0.1:8765/api", "k-local")
    real = calls_cli.resolve_target("ultravox", None)
    assert (real.api_url, real.api_key) == ("https://api.ultravox.ai/api", "k-real")
    other = calls_cli.resolve_target("https://uv.example.com/api/", "UVBENCH_SERVER_API_KEY")
    assert (other.api_url, other.api_key) == ("https://uv.example.com/api", "k-local")


# -- what only a remote API does: retries, 5xx, redirect to a signed URL -------------------------


def _mock_api(monkeypatch, handler) -> list[httpx.Request]:
    from uvbench.call.rest import UltravoxApi

    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    def api(endpoint):
        client = httpx.AsyncClient(transport=httpx.MockTransport(record))
        return UltravoxApi(endpoint.api_url, endpoint.api_key, client=client)

    monkeypatch.setattr(calls_cli, "_api", api)
    return seen


def test_5xx_is_retried_for_503_and_reported_in_one_line(cli, monkeypatch):
    answers = iter([httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "busy"})])

    def handler(request):
        return next(answers, httpx.Response(500, text="<html>oops</html>"))

    seen = _mock_api(monkeypatch, handler)
    code, _, err = cli("get", UNKNOWN_ID)
    assert code == 3 and len(seen) == 2
    assert "answered HTTP 500: <html>oops</html>; try again later" in one_line(err)


def test_recording_follows_a_redirect_without_sending_the_key_elsewhere(cli, monkeypatch, tmp_path):
    def handler(request):
        if request.url.host == "storage.example.com":
            return httpx.Response(200, content=b"RIFF....WAVE", headers={"Content-Type": "audio/wav"})
        signed = "https://storage.example.com/rec.wav?X-Goog-Signature=abc"
        return httpx.Response(302, headers={"Location": signed})

    seen = _mock_api(monkeypatch, handler)
    target = tmp_path / "r.wav"
    code, out, _ = cli("recording", UNKNOWN_ID, "-o", str(target))
    assert code == 0 and target.read_bytes() == b"RIFF....WAVE" and "12 bytes" in out
    assert [r.url.host for r in seen] == ["127.0.0.1", "storage.example.com"]
    assert "X-API-Key" in seen[0].headers and "X-API-Key" not in seen[1].headers


def test_the_ultravox_key_variable_named_in_the_help_is_the_scenarios(capsys):
    from uvbench.scenario import ULTRAVOX_API_KEY_ENV

    with pytest.raises(SystemExit):
        main(["calls", "list", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default {ULTRAVOX_API_KEY_ENV} for ultravox," in help_text
