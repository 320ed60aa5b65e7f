"""The local server over real sockets: a websockets client against the aiohttp server."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets

from uvbench.audio.corpus import load_clip_pcm, load_manifest
from uvbench.protocol.schema import validate_response
from uvbench.server import LocalServer, ServerConfig
from uvbench.server.config import AgentBehaviour, Latency
from uvbench.server.probe import run_probe

FIXED = AgentBehaviour(latency=Latency(kind="fixed", ms=300))


@pytest.fixture
async def local():
    async with LocalServer(ServerConfig(agent=FIXED)) as server:
        yield server


@pytest.fixture
async def http(local):
    async with httpx.AsyncClient(
        base_url=local.base_url, headers={"X-API-Key": local.api_key}, timeout=10
    ) as client:
        yield client


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    """The server in its own process, so client timestamps are not taken on the server's loop."""
    config = tmp_path_factory.mktemp("server") / "server.yaml"
    config.write_text("agent:\n  latency: {kind: fixed, ms: 300}\n")
    key = "procTest.abcdefghijklmnopqrstuvwxyz123456"
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvbench", "serve", "--port", "0", "--config", str(config)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, UVBENCH_SERVER_API_KEY=key),
    )
    try:
        line = proc.stdout.readline()
        url = re.search(r"(http://\S+)", line)
        assert url, f"server did not start: {line!r}"
        yield url.group(1), key
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def ws_body(rate: int = 16000, **extra: Any) -> dict[str, Any]:
    medium = {"inputSampleRate": rate, **extra.pop("medium_extra", {})}
    return {"systemPrompt": "test", "medium": {"serverWebSocket": medium}, **extra}


async def create(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await http.post("/api/calls", json=ws_body(**body))
    assert response.status_code == 201, response.text
    return response.json()


class Client:
    """A bare websocket client that records every frame with its arrival time."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[tuple[int, Any]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.frames.append((time.monotonic_ns(), frame))
        except websockets.ConnectionClosed:
            pass

    def messages(self, type_: str | None = None) -> list[dict[str, Any]]:
        out = []
        for _, frame in self.frames:
            if isinstance(frame, str):
                try:
                    message = json.loads(frame)
                except ValueError:
                    continue
                if type_ is None or message.get("type") == type_:
                    out.append(message)
        return out

    def mistakes(self) -> list[str]:
        """The server's reports of this client's mistakes (debug messages, when asked for)."""
        prefix = "client_message_error: "
        return [
            m["message"][len(prefix) :]
            for m in self.messages("debug")
            if m.get("message", "").startswith(prefix)
        ]

    async def wait_for(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {self.messages()}")
            await asyncio.sleep(0.01)

    async def stream(self, pcm: np.ndarray, rate: int, chunk_ms: int = 20) -> None:
        """Send PCM in real time on absolute deadlines."""
        chunk = rate * chunk_ms // 1000
        t0 = time.monotonic()
        for k, start in enumerate(range(0, pcm.size, chunk)):
            delay = t0 + (k + 1) * chunk_ms / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.ws.send(pcm[start : start + chunk].astype("<i2").tobytes())


async def test_probe_call_greeting_turn_barge_in_against_ground_truth(server_process):
    result = await run_probe(*server_process)
    summary = result.summary()
    truth = result.truth
    # The greeting and the reply were spoken as real audio, then cut by the barge-in.
    assert summary["audioFramesReceived"] > 50
    assert [r["kind"] for r in truth["replies"][:2]] == ["greeting", "reply"]
    reply = truth["replies"][1]
    assert reply["interrupted"] and reply["clear_sent_ns"] == truth["clears"][0]["sent_ns"]
    # Client-side arrival times agree with the server's own record (same host clock): within a
    # millisecond or so on an idle machine; this plain probe client has no lag record to set a
    # busy machine's late stamps apart, hence the margin (tests/test_call_accuracy.py holds
    # uvbench's own client to its tolerance).
    first_reply_audio = result.first_audio_after(result.speech_end_ns)
    assert abs(first_reply_audio - reply["first_byte_ns"]) < 25_000_000
    clear_at = result.messages("playback_clear_buffer")[0].at_ns
    assert abs(clear_at - truth["clears"][0]["sent_ns"]) < 25_000_000
    # The server's endpointing found the end of the corpus clip's speech within a VAD frame or two,
    # and answered after its 300 ms latency.
    turn = truth["turns"][0]
    assert turn["end_decided_ns"] - result.speech_end_ns == pytest.approx(384e6, abs=80e6)
    # (never sooner; later only by what a busy machine makes the server's loop wait)
    assert 300e6 <= reply["first_byte_ns"] - turn["end_decided_ns"] < 350e6
    # The clear comes once three 32 ms frames held speech (minimumInterruptionDuration 90 ms); the
    # first of them may begin up to a frame before the speech does, so 64..96 ms plus delivery.
    assert 64 <= summary["clearAfterBargeInMs"] <= 150
    finals = summary["transcripts"]
    assert [t["role"] for t in finals[:3]] == ["agent", "user", "agent"]
    ordinals = [t["ordinal"] for t in finals]
    assert ordinals == sorted(ordinals) and len(set(ordinals)) == len(ordinals)
    assert len(finals[2]["text"]) < len(reply["text"])  # truncated to what was heard
    assert result.call["endReason"] == "hangup" and result.call["ended"]
    assert validate_response(result.call, "Call") == []
    # The server's recording: stereo WAV, user left, agent right.
    audio, rate = sf.read(io.BytesIO(result.recording), dtype="int16")
    assert rate == 16000 and audio.shape[1] == 2
    assert np.abs(audio[:, 0]).max() > 1000 and np.abs(audio[:, 1]).max() > 1000


async def test_messages_endpoint_lists_the_conversation(local, http):
    result = await run_probe(local.base_url, local.api_key)
    page = (await http.get(f"/api/calls/{result.call_id}/messages")).json()
    assert validate_response(page, "Paginatedultravox.v1.MessageList") == []
    roles = [m["role"] for m in page["results"]]
    assert roles[:3] == ["MESSAGE_ROLE_AGENT", "MESSAGE_ROLE_USER", "MESSAGE_ROLE_AGENT"]
    assert all("timespan" in m and "wallClockTimespan" in m for m in page["results"])


@pytest.mark.parametrize("rate", [8000, 24000, 48000])
async def test_agent_audio_arrives_at_the_output_rate(http, rate):
    call = await create(
        http, rate=16000, medium_extra={"outputSampleRate": rate, "clientBufferSizeMs": 30000}
    )
    async with websockets.connect(call["joinUrl"]) as ws:
        client = Client(ws)
        await client.wait_for(lambda: any(m.get("final") for m in client.messages("transcript")))
    audio = b"".join(f for _, f in client.frames if isinstance(f, bytes))
    truth = (await http.get(f"/_uvbench/calls/{call['callId']}/ground_truth")).json()
    greeting = truth["replies"][0]
    assert len(audio) // 2 == greeting["total_samples"]
    # The greeting lasts as long at every rate (same text), so samples scale with the rate.
    assert greeting["total_samples"] / rate == pytest.approx(3.0, abs=1.5)


async def test_second_connection_unknown_and_ended_calls_are_refused(http):
    call = await create(http)
    async with websockets.connect(call["joinUrl"]) as ws:
        Client(ws)
        with pytest.raises(websockets.InvalidStatus) as second:
            await websockets.connect(call["joinUrl"])
        assert second.value.response.status_code == 409
        assert b"only one is allowed" in second.value.response.body
    base = call["joinUrl"].rsplit("/calls/", 1)[0]
    with pytest.raises(websockets.InvalidStatus) as unknown:
        await websockets.connect(base + "/calls/00000000-0000-4000-8000-000000000000/server_web_socket")
    assert unknown.value.response.status_code == 404
    await asyncio.sleep(0.1)
    with pytest.raises(websockets.InvalidStatus) as ended:
        await websockets.connect(call["joinUrl"])
    assert ended.value.response.status_code == 410


@pytest.mark.parametrize("mode", ["simulated", "sink"])
async def test_a_failed_handshake_leaves_the_call_to_join(mode):
    """A plain GET (or a broken upgrade) on the joinUrl is refused with 400 and does not count as
    the call's one connection: the proper join that follows is served."""
    config = ServerConfig(agent=FIXED if mode == "simulated" else AgentBehaviour(mode="sink"))
    async with (
        LocalServer(config) as server,
        httpx.AsyncClient(
            base_url=server.base_url, headers={"X-API-Key": server.api_key}, timeout=10
        ) as http,
    ):
        call = await create(http, firstSpeakerSettings={"user": {}})
        url = call["joinUrl"].replace("ws://", "http://", 1)
        plain = await http.get(url)
        assert plain.status_code == 400 and "websocket upgrade" in plain.json()["detail"]
        broken = await http.get(
            url, headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
        )  # no Sec-WebSocket-Key
        assert broken.status_code == 400
        async with websockets.connect(call["joinUrl"]) as ws:
            await ws.send(json.dumps({"type": "ping", "timestamp": 3}))
            while True:
                message = await asyncio.wait_for(ws.recv(), 5)
                if isinstance(message, str) and json.loads(message)["type"] == "pong":
                    break


async def test_audio_streamed_faster_than_real_time_ends_the_call_with_1008(http):
    call = await create(http, firstSpeakerSettings={"user": {}}, recordingEnabled=True)
    async with websockets.connect(call["joinUrl"]) as ws:
        client = Client(ws)
        second = bytes(32_000)  # a second of 16 kHz audio
        for _ in range(30):  # thirty seconds at once
            await ws.send(second)
        await client.task
        assert ws.close_code == 1008
        assert "ahead of real time" in ws.close_reason and "limit of 10 s" in ws.close_reason
    got = (await http.get(f"/api/calls/{call['callId']}")).json()
    assert got["endReason"] == "connection_error"


async def test_bad_input_gets_clear_errors_and_other_calls_go_on(http):
    victim = await create(http, firstSpeakerSettings={"user": {}})
    bystander = await create(http, firstSpeakerSettings={"user": {}})
    async with websockets.connect(bystander["joinUrl"]) as ws2:
        other = Client(ws2)
        async with websockets.connect(victim["joinUrl"] + "?experimentalMessages=debug") as ws:
            client = Client(ws)
            await ws.send(b"\x00\x01\x02")  # odd length
            await ws.send(b"")  # empty
            await ws.send("{not json")
            await ws.send(json.dumps({"type": "no_such_type"}))
            await ws.send(json.dumps(["not", "an", "object"]))
            await ws.send(json.dumps({"type": "user_text_message"}))  # no text
            await ws.send('{"type": "ping", "timestamp": NaN}')  # echoed, it would not be JSON
            await ws.send('{"type": "ping", "x": ' + "[" * 1000 + "]" * 1000 + "}")  # 2 KB, 1,000 deep
            await client.wait_for(lambda: len(client.mistakes()) == 7)
            errors = client.mistakes()
            assert "odd length" in errors[0] and "not JSON" in errors[1] and "'no_such_type'" in errors[2]
            assert "NaN is not a JSON value" in errors[5] and "nested more than 64 levels" in errors[6]
            assert not client.messages("pong")
            # Still alive: ping answers.
            await ws.send(json.dumps({"type": "ping", "timestamp": 1.25}))
            await client.wait_for(lambda: client.messages("pong"))
            # An oversized frame closes this socket with 1009 and a reason...
            await ws.send(b"\x00" * ((1 << 20) + 2))
            await client.task
            assert ws.close_code == 1009
        # ...and the other call still answers.
        await ws2.send(json.dumps({"type": "ping", "timestamp": 7}))
        await other.wait_for(lambda: other.messages("pong"))
        assert other.messages("pong")[0]["timestamp"] == 7
    events = (
        await http.get(f"/api/calls/{victim['callId']}/events", params={"minimum_severity": "warning"})
    ).json()
    assert validate_response(events, "PaginatedCallEventList") == []
    assert {e["type"] for e in events["results"]} >= {"client_message_error"}


async def test_ping_echoes_the_exact_timestamp_and_legacy_text_message(http):
    call = await create(http, firstSpeakerSettings={"user": {}})
    async with websockets.connect(call["joinUrl"] + "?apiVersion=1&clientVersion=test_1.0") as ws:
        client = Client(ws)
        stamp = 1732380000.123456789
        await ws.send(json.dumps({"type": "ping", "timestamp": stamp}))
        await ws.send(json.dumps({"type": "input_text_message", "text": "hello", "deferResponse": False}))
        await client.wait_for(
            lambda: (
                client.messages("pong")
                and any(m.get("role") == "agent" for m in client.messages("transcript"))
            )
        )
        assert client.messages("pong")[0]["timestamp"] == stamp
        user = [m for m in client.messages("transcript") if m["role"] == "user"][0]
        assert user == {
            "type": "transcript",
            "role": "user",
            "medium": "text",
            "text": "hello",
            "final": True,
            "ordinal": 0,
        }
    got = (await http.get(f"/api/calls/{call['callId']}")).json()
    assert got["clientVersion"] == "test_1.0"


async def test_data_message_flags_and_debug_messages(http):
    call = await create(http, medium_extra={"dataMessages": {"state": False, "userStartedSpeaking": True}})
    async with websockets.connect(call["joinUrl"] + "?experimentalMessages=debug") as ws:
        client = Client(ws)
        pcm = load_clip_pcm(load_manifest()["yes_16k.wav"], 16000)
        await client.wait_for(lambda: any(m.get("final") for m in client.messages("transcript")))
        await client.stream(np.concatenate((pcm, np.zeros(8000, dtype=np.int16))), 16000)
        await client.wait_for(lambda: client.messages("debug"))
    assert not client.messages("state")
    assert client.messages("user_started_speaking")
    assert any("user_turn_ended" in m["message"] for m in client.messages("debug"))


async def test_send_data_message_reaches_the_live_call(http):
    call = await create(http, firstSpeakerSettings={"user": {}})
    async with websockets.connect(call["joinUrl"]) as ws:
        client = Client(ws)
        await client.wait_for(lambda: client.messages("call_started"))
        response = await http.post(
            f"/api/calls/{call['callId']}/send_data_message",
            json={"type": "user_text_message", "text": "via rest", "urgency": "immediate"},
        )
        assert response.status_code == 204
        await client.wait_for(lambda: any(m.get("text") == "via rest" for m in client.messages("transcript")))
        response = await http.post(
            f"/api/calls/{call['callId']}/send_data_message",
            json={"type": "hang_up", "message": ""},
        )
        assert response.status_code == 204
        await client.task
        assert ws.close_code == 1000
    got = (await http.get(f"/api/calls/{call['callId']}")).json()
    assert got["endReason"] == "agent_hangup"


async def test_max_duration_and_time_exceeded_message(http):
    call = await create(
        http,
        maxDuration="1s",
        timeExceededMessage="Time is up.",
        firstSpeakerSettings={"user": {}},
        medium_extra={"clientBufferSizeMs": 30000},
    )
    async with websockets.connect(call["joinUrl"]) as ws:
        client = Client(ws)
        await asyncio.wait_for(client.task, 10)
        assert ws.close_code == 1000 and "timeout" in ws.close_reason
    assert any(m.get("text") == "Time is up." for m in client.messages("transcript"))
    got = (await http.get(f"/api/calls/{call['callId']}")).json()
    assert got["endReason"] == "timeout" and got["billedDuration"] == "6s"


async def test_socket_drop_fault_and_malformed_message_fault(http):
    faults = {"drop_socket_after_ms": 300, "malformed_messages": True, "unknown_messages": True}
    call = await create(http, experimentalSettings={"uvbench": {"faults": faults}})
    async with websockets.connect(call["joinUrl"]) as ws:
        client = Client(ws)
        await asyncio.wait_for(client.task, 5)
        assert ws.close_code == 1006  # no close frame: the connection was dropped
    texts = [f for _, f in client.frames if isinstance(f, str)]
    assert texts[0].startswith('{"type":"call_started"') and texts[1] == "{this is not json"
    assert json.loads(texts[2])["type"] == "uvbench_unknown_message"
    got = (await http.get(f"/api/calls/{call['callId']}")).json()
    assert got["endReason"] == "connection_error"


async def test_extra_latency_fault_delays_the_reply(http):
    call = await create(http, experimentalSettings={"uvbench": {"faults": {"extra_latency_ms": 400}}})
    async with websockets.connect(call["joinUrl"]) as ws:
        client = Client(ws)
        await client.wait_for(lambda: any(isinstance(f, bytes) for _, f in client.frames))
    truth = (await http.get(f"/_uvbench/calls/{call['callId']}/ground_truth")).json()
    greeting = truth["replies"][0]
    assert greeting["latency_ms"] == pytest.approx(700)
    assert greeting["first_byte_ns"] - truth["joined_ns"] == pytest.approx(700e6, abs=10e6)


async def test_input_audio_underflow_becomes_a_warning_event(http):
    call = await create(http, firstSpeakerSettings={"user": {}})
    async with websockets.connect(call["joinUrl"]) as ws:
        client = Client(ws)
        silence = np.zeros(320, dtype=np.int16).tobytes()
        for _ in range(40):  # 20 ms of audio every 40 ms: half real time
            await ws.send(silence)
            await asyncio.sleep(0.04)
        assert client.messages("call_started")
    events = (
        await http.get(f"/api/calls/{call['callId']}/events", params={"minimum_severity": "warning"})
    ).json()
    underflows = [e for e in events["results"] if e["type"] == "audio_underflow"]
    assert len(underflows) == 1 and underflows[0]["severity"] == "warning"
    truth = (await http.get(f"/_uvbench/calls/{call['callId']}/ground_truth")).json()
    assert truth["input"]["max_deficit_ms"] > 500
    assert "arrivals" not in truth["input"]
    # ?input=1: when the server read each frame, and the samples it had then (40 frames of 320).
    frames = (await http.get(f"/_uvbench/calls/{call['callId']}/ground_truth", params={"input": 1})).json()
    arrivals = frames["input"]["arrivals"]
    assert [end for _, end in arrivals] == [320 * (k + 1) for k in range(40)]
    reads = [t for t, _ in arrivals]
    assert reads == sorted(reads) and reads[0] >= frames["joined_ns"]
    assert (reads[-1] - reads[0]) / 1e6 == pytest.approx(39 * 40, rel=0.2)  # one frame every 40 ms


async def test_client_tool_over_the_wire(http):
    tool = {"temporaryTool": {"modelToolName": "getWeather", "description": "weather", "client": {}}}
    behaviour = {"tool_calls": [{"turn": 1, "name": "getWeather", "parameters": {"city": "Oslo"}}]}
    call = await create(
        http,
        selectedTools=[tool],
        firstSpeakerSettings={"user": {}},
        experimentalSettings={"uvbench": {"agent": behaviour}},
    )
    async with websockets.connect(call["joinUrl"]) as ws:
        client = Client(ws)
        await ws.send(json.dumps({"type": "user_text_message", "text": "weather?"}))
        await client.wait_for(lambda: client.messages("client_tool_invocation"))
        invocation = client.messages("client_tool_invocation")[0]
        assert invocation["toolName"] == "getWeather" and invocation["parameters"] == {"city": "Oslo"}
        await ws.send(
            json.dumps(
                {
                    "type": "client_tool_result",
                    "invocationId": invocation["invocationId"],
                    "result": "sunny",
                }
            )
        )
        await client.wait_for(
            lambda: any(m.get("final") and m["role"] == "agent" for m in client.messages("transcript")),
            timeout=15,
        )
    final = [m for m in client.messages("transcript") if m["role"] == "agent" and m["final"]][0]
    assert final["text"] == "The tool answered: sunny"


def test_server_thread_serves_synchronous_callers():
    from uvbench.server import ServerThread

    with ServerThread(ServerConfig()) as server:
        response = httpx.post(
            f"{server.base_url}/api/calls",
            json=ws_body(),
            headers={"X-API-Key": server.api_key},
        )
        assert response.status_code == 201
        assert response.json()["joinUrl"].startswith(server.base_url.replace("http", "ws"))


# -- what the LiveKit (1.8.9) and Pipecat (1.14) Ultravox clients make of the wire -----------------

DOCUMENTED_SERVER_TYPES = {"call_started", "state", "transcript", "pong", "playback_clear_buffer"}


def livekit_generations(messages: list[dict[str, Any]]) -> list[str]:
    """The generations LiveKit's plugin makes of these messages, each as its text: one opens on
    `thinking`, `speaking` or an agent transcript when none is open and closes on `listening` or
    an agent final transcript; only deltas (or non-final text) add text."""
    done: list[str] = []
    current: str | None = None
    for m in messages:
        if m["type"] == "state" and m["state"] == "listening":
            if current is not None:
                done.append(current)
            current = None
        elif m["type"] == "state" and m["state"] in ("thinking", "speaking"):
            current = "" if current is None else current
        elif m["type"] == "transcript" and m["role"] == "agent":
            current = ("" if current is None else current) + (
                m.get("delta") or (None if m["final"] else m.get("text")) or ""
            )
            if m["final"]:
                done.append(current)
                current = None
    return done


def pipecat_responses(frames: list[Any]) -> int:
    """How many bot responses Pipecat's service makes of these frames: agent audio starts one
    when none is open; any state but `speaking` ends it."""
    responding = False
    count = 0
    for frame in frames:
        if isinstance(frame, bytes) and frame and not responding:
            responding = True
            count += 1
        elif isinstance(frame, str):
            message = json.loads(frame)
            if message.get("type") == "state" and message.get("state") != "speaking":
                responding = False
    return count


SHORT = {"uvbench": {"agent": {"greeting": "Hi there.", "replies": ["Sure thing, happy to help."]}}}


async def test_livekit_generate_reply_and_interrupt_over_the_wire(http):
    """generate_reply() without instructions sends empty text and wants a reply within 5 s;
    interrupt() sends empty text, immediate, deferResponse: the cut reply's final transcript comes
    before `listening`, so no generation is left empty. Junk gets no message LiveKit cannot parse."""
    call = await create(
        http,
        firstSpeaker="FIRST_SPEAKER_USER",
        experimentalSettings=SHORT,
        medium_extra={"outputSampleRate": 24000, "clientBufferSizeMs": 30000},
    )
    async with websockets.connect(call["joinUrl"]) as ws:
        client = Client(ws)
        await client.wait_for(lambda: client.messages("call_started"))
        await ws.send(json.dumps({"type": "user_text_message", "text": "", "deferResponse": False}))
        await client.wait_for(
            lambda: {"state": "speaking"} in [{"state": m["state"]} for m in client.messages("state")]
        )
        await ws.send(
            json.dumps(
                {"type": "user_text_message", "text": "", "urgency": "immediate", "deferResponse": True}
            )
        )
        await client.wait_for(
            lambda: (
                client.messages("playback_clear_buffer")
                and client.messages("state")[-1]["state"] == "listening"
            )
        )
        await ws.send(json.dumps({"type": "no_such_type"}))
        await ws.send(json.dumps({"type": "ping", "timestamp": 2.5}))
        await client.wait_for(lambda: client.messages("pong"))
    messages = client.messages()
    assert {m["type"] for m in messages} <= DOCUMENTED_SERVER_TYPES
    assert not [m for m in client.messages("transcript") if m["role"] == "user"]  # nothing to echo
    after_clear = messages[messages.index({"type": "playback_clear_buffer"}) :][:3]
    assert [m["type"] for m in after_clear] == ["playback_clear_buffer", "transcript", "state"]
    generations = livekit_generations(messages)
    assert len(generations) == 1 and generations[0]  # the reply, with the words that were heard


async def test_a_reply_queued_behind_the_greeting_is_a_response_of_its_own(http):
    """Text sent while the greeting is due is answered after it: Pipecat and LiveKit each see two
    responses, not one merged."""
    call = await create(http, experimentalSettings=SHORT, medium_extra={"clientBufferSizeMs": 30000})
    async with websockets.connect(call["joinUrl"]) as ws:
        client = Client(ws)
        await client.wait_for(lambda: client.messages("call_started"))
        await ws.send(json.dumps({"type": "user_text_message", "text": "Hello?"}))
        await client.wait_for(
            lambda: (
                len([m for m in client.messages("transcript") if m["role"] == "agent" and m["final"]]) == 2
            ),
            timeout=15,
        )
    texts = [t for t in livekit_generations(client.messages()) if t]
    assert texts == ["Hi there.", "Sure thing, happy to help."]
    assert pipecat_responses([f for _, f in client.frames]) == 2
    agent_ordinals = [
        m["ordinal"] for m in client.messages("transcript") if m["role"] == "agent" and m["final"]
    ]
    assert len(set(agent_ordinals)) == 2
