"""The sink agent (agent.mode sink) over real sockets, and its frame parser over every split of a stream.

Most wire tests run twice: against `uvbench serve --agent sink` in its own process (uvloop, as
benchmarks run it) and against a LocalServer on the test's own (asyncio) loop, since the sink takes
the connection over from aiohttp with `transport.set_protocol`, which each loop implements itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import random
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any

import httpx
import pytest
import websockets

from tests.outcomes import MEASURED
from uvbench.audio.tts import synthesize
from uvbench.runner.run import Endpoint, run_call_of
from uvbench.scenario import parse_scenarios
from uvbench.server import LocalServer, ServerConfig
from uvbench.server.config import AgentBehaviour, Faults
from uvbench.server.process import ServerProcess
from uvbench.server.sink import SinkConnection
from uvbench.server.state import ServerState
from uvbench.server.store import CallRecord

GREETING = AgentBehaviour().greeting
REPLY = AgentBehaviour().replies[0]


@pytest.fixture(scope="module")
def served():
    """`uvbench serve --agent sink` in its own process, on uvloop."""
    server = ServerProcess({"agent": {"mode": "sink", "reply_every_s": 0}})
    server.start()
    try:
        yield server.base_url, server.api_key
    finally:
        server.stop()


@pytest.fixture(params=["serve-uvloop", "in-process-asyncio"])
async def http(request):
    if request.param == "serve-uvloop":
        base_url, key = request.getfixturevalue("served")
        async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": key}, timeout=10) as client:
            yield client
        return
    config = ServerConfig(agent=AgentBehaviour(mode="sink", reply_every_s=0))
    async with LocalServer(config) as server:
        async with httpx.AsyncClient(
            base_url=server.base_url, headers={"X-API-Key": server.api_key}, timeout=10
        ) as client:
            yield client


async def create(http: httpx.AsyncClient, agent: dict[str, Any] | None = None, **medium: Any) -> dict:
    body: dict[str, Any] = {"medium": {"serverWebSocket": {"inputSampleRate": 16000, **medium}}}
    if agent:
        body["experimentalSettings"] = {"uvbench": {"agent": agent}}
    response = await http.post("/api/calls", json=body)
    assert response.status_code == 201, response.text
    return response.json()


class Reader:
    """Every frame the server sends, in order, as text (str) or audio (its byte length)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[str | int] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.frames.append(frame if isinstance(frame, str) else len(frame))
        except websockets.ConnectionClosed:
            pass

    def messages(self, type_: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(f) for f in self.frames if isinstance(f, str)]
        return [m for m in out if type_ is None or m["type"] == type_]

    async def wait_for(self, predicate, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; got {self.messages()}"
            await asyncio.sleep(0.01)


def connect(url: str):
    # No flow control on the client: a whole utterance arrives at once and stays unread meanwhile.
    return websockets.connect(url, max_queue=None, compression=None)


async def truth_of(http: httpx.AsyncClient, call_id: str) -> dict[str, Any]:
    response = await http.get(f"/_uvbench/calls/{call_id}/ground_truth")
    assert response.status_code == 200
    return response.json()


def burst(frames: list[str | int], start: int) -> tuple[list[int], list[dict[str, Any]]]:
    """From the `state: speaking` at `start`: the audio frames of the utterance and the text after."""
    assert json.loads(frames[start]) == {"type": "state", "state": "speaking"}
    k = start + 1
    audio = []
    while isinstance(frames[k], int):
        audio.append(frames[k])
        k += 1
    return audio, [json.loads(f) for f in frames[k : k + 2]]


@pytest.mark.parametrize("output_rate", [None, 24000])
async def test_join_gets_call_started_listening_and_the_greeting_in_whole_20ms_frames(http, output_rate):
    medium = {} if output_rate is None else {"outputSampleRate": output_rate}
    call = await create(http, **medium)
    rate = output_rate or 16000
    frame_samples = rate * 20 // 1000
    expected_frames = math.ceil(synthesize(GREETING, rate).pcm.size / frame_samples)
    async with connect(call["joinUrl"]) as ws:
        reader = Reader(ws)
        await reader.wait_for(lambda: len(reader.messages()) >= 5)
    frames = reader.frames
    assert json.loads(frames[0]) == {"type": "call_started", "callId": call["callId"]}
    assert json.loads(frames[1]) == {"type": "state", "state": "listening"}
    audio, after = burst(frames, 2)
    assert len(audio) == expected_frames and set(audio) == {2 * frame_samples}
    transcript = {"type": "transcript", "role": "agent", "medium": "voice", "text": GREETING}
    assert after == [{**transcript, "final": True, "ordinal": 0}, {"type": "state", "state": "listening"}]
    truth = await truth_of(http, call["callId"])
    (greeting,) = truth["replies"]
    assert truth["agent"] == "sink" and greeting["kind"] == "greeting"
    assert greeting["frames"] == expected_frames and greeting["samples"] == expected_frames * frame_samples
    assert truth["joined_ns"] <= greeting["write_ns"]


async def test_a_data_message_ping_gets_its_pong_and_a_websocket_ping_its_pong(http):
    call = await create(http)
    async with connect(call["joinUrl"]) as ws:
        reader = Reader(ws)
        await ws.send(json.dumps({"type": "ping", "timestamp": 1234.5678}))
        await reader.wait_for(lambda: reader.messages("pong"))
        assert reader.messages("pong") == [{"type": "pong", "timestamp": 1234.5678}]
        latency = await asyncio.wait_for(await ws.ping(b"are you there"), 2)
        assert latency < 1
    truth = await truth_of(http, call["callId"])
    assert truth["input"]["pings_answered"] == 1 and truth["input"]["text_frames_received"] == 1


async def test_replies_come_every_reply_every_s_with_growing_ordinals(http):
    call = await create(http, agent={"mode": "sink", "reply_every_s": 0.3})
    async with connect(call["joinUrl"]) as ws:
        reader = Reader(ws)
        await reader.wait_for(lambda: len(reader.messages("transcript")) >= 3)
    transcripts = reader.messages("transcript")
    assert [t["text"] for t in transcripts[:3]] == [GREETING, REPLY, REPLY]
    assert [t["ordinal"] for t in transcripts[:3]] == [0, 1, 2]
    # Each reply is a whole burst of its own: speaking, audio, transcript, listening.
    second = [k for k, f in enumerate(reader.frames) if f == '{"type":"state","state":"speaking"}'][1]
    audio, after = burst(reader.frames, second)
    assert len(audio) == math.ceil(synthesize(REPLY, 16000).pcm.size / 320)
    assert after[0]["ordinal"] == 1 and after[1] == {"type": "state", "state": "listening"}
    truth = await truth_of(http, call["callId"])
    writes = [r["write_ns"] for r in truth["replies"]]
    assert [r["kind"] for r in truth["replies"][:3]] == ["greeting", "reply", "reply"]
    assert (writes[1] - writes[0]) / 1e9 == pytest.approx(0.3, abs=0.1)


async def test_the_clients_close_handshake_completes_at_once_and_ends_the_call_hangup(http):
    call = await create(http)
    async with connect(call["joinUrl"]) as ws:
        reader = Reader(ws)
        await reader.wait_for(lambda: len(reader.messages()) >= 5)
        started = time.monotonic()
        await ws.close(code=1000, reason="bye")
        elapsed = time.monotonic() - started
    assert elapsed < 0.3
    echoed = ws.protocol.close_rcvd  # the client's close frame, echoed
    assert (echoed.code, echoed.reason) == (1000, "bye")
    got = (await http.get(f"/api/calls/{call['callId']}")).json()
    assert got["endReason"] == "hangup" and got["ended"] is not None


async def test_hang_up_ends_the_call_agent_hangup_and_the_server_closes(http):
    call = await create(http)
    async with connect(call["joinUrl"]) as ws:
        reader = Reader(ws)
        await reader.wait_for(lambda: len(reader.messages()) >= 5)
        await ws.send(json.dumps({"type": "hang_up"}))
        await asyncio.wait_for(reader.task, 2)
    assert ws.protocol.close_rcvd.code == 1000 and ws.protocol.close_rcvd.reason == "call ended: agent_hangup"
    got = (await http.get(f"/api/calls/{call['callId']}")).json()
    assert got["endReason"] == "agent_hangup" and got["billingStatus"] == "BILLING_STATUS_BILLED"
    events = (await http.get(f"/api/calls/{call['callId']}/events")).json()["results"]
    assert [e["type"] for e in events] == ["call_created", "call_joined", "call_ended"]


@pytest.mark.parametrize("read_batch_ms", [0, 100])
async def test_a_burst_of_2000_binary_frames_is_counted_in_the_ground_truth(http, read_batch_ms):
    call = await create(http, agent={"mode": "sink", "reply_every_s": 0, "read_batch_ms": read_batch_ms})
    before = await truth_of(http, call["callId"])
    assert before["agent"] == "sink" and before["joined_ns"] is None
    async with connect(call["joinUrl"]) as ws:
        reader = Reader(ws)
        for k in range(2000):
            await ws.send(bytes([k % 256]) * 640)
        await ws.send(json.dumps({"type": "ping", "timestamp": 1}))  # after every frame, on one socket
        await reader.wait_for(lambda: reader.messages("pong"))
        started = time.monotonic()
        await ws.close()
        # Batched reads see the close at the next tick at the latest.
        assert time.monotonic() - started < 0.2 + read_batch_ms / 1000
    truth = await truth_of(http, call["callId"])
    assert truth["input"]["frames_received"] == 2000
    assert truth["input"]["bytes_received"] == 2000 * 640
    assert truth["joined_ns"] <= truth["input"]["first_audio_ns"]
    assert truth["endReason"] == "hangup"


async def test_the_call_ends_in_the_store_on_rest_hang_up_max_duration_and_delete(http):
    by_rest = await create(http)
    timed = (
        await http.post(
            "/api/calls",
            json={"maxDuration": "0.5s", "medium": {"serverWebSocket": {"inputSampleRate": 16000}}},
        )
    ).json()
    deleted = await create(http)
    sockets = [await connect(c["joinUrl"]) for c in (by_rest, timed, deleted)]
    readers = [Reader(ws) for ws in sockets]
    for reader in readers:
        await reader.wait_for(lambda r=reader: r.messages("transcript"))
    answer = await http.post(f"/api/calls/{by_rest['callId']}/send_data_message", json={"type": "hang_up"})
    assert answer.status_code == 204
    assert (await http.delete(f"/api/calls/{deleted['callId']}")).status_code == 204
    await asyncio.wait_for(asyncio.gather(*(r.task for r in readers)), 3)
    assert [ws.protocol.close_rcvd.reason for ws in sockets] == [
        "call ended: agent_hangup",
        "call ended: timeout",
        "call ended: hangup",
    ]
    assert (await http.get(f"/api/calls/{by_rest['callId']}")).json()["endReason"] == "agent_hangup"
    assert (await http.get(f"/api/calls/{timed['callId']}")).json()["endReason"] == "timeout"
    assert (await http.get(f"/api/calls/{deleted['callId']}")).status_code == 404


def test_a_bad_agent_mode_in_the_config_is_one_clear_line(tmp_path):
    path = tmp_path / "server.yaml"
    path.write_text("agent:\n  mode: drain\n")
    result = subprocess.run(
        [sys.executable, "-m", "uvbench", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"uvbench: error: {path}.agent.mode: 'drain' is not one of simulated, sink",
    ]


async def test_the_uvbench_client_completes_a_call_against_a_sink_call():
    # The server's agent is the simulated one; this call asks for the sink in its create body.
    (scenario,) = parse_scenarios(
        textwrap.dedent(
            """\
            name: sink
            call:
              experimentalSettings:
                uvbench: {agent: {mode: sink, greeting: Hello there., replies: [Sure.], reply_every_s: 1}}
            script:
              - wait_for: agent_done
                timeout: 5s
              - say: yes_16k.wav
              - wait_for: agent_done
                timeout: 5s
              - hang_up
            """
        ),
        source="sink.yaml",
        base_dir=".",
    )
    with ServerProcess() as server:  # in a process of its own, as `uvbench run` starts it
        result, metrics, _, _ = await run_call_of(
            scenario, Endpoint(server.api_url, server.api_key, "local", True)
        )
    assert result.failure is None and metrics.outcome in MEASURED, metrics.outcome_detail
    assert result.call["endReason"] == "hangup"
    heard = [e.data["message"] for e in result.timeline.messages_in("transcript")]
    assert heard[0]["text"] == "Hello there." and heard[0]["final"]
    assert {m["text"] for m in heard[1:]} == {"Sure."}
    truth = result.ground_truth
    assert truth["agent"] == "sink" and [r["kind"] for r in truth["replies"]][:2] == ["greeting", "reply"]
    # Every chunk the client's pacer sent arrived, and every ping was answered.
    assert truth["input"]["bytes_received"] == 2 * result.samples_sent
    assert truth["input"]["pings_answered"] == len(result.timeline.messages_in("pong"))


# -- the frame parser, without sockets -------------------------------------------------------------


class FakeTransport:
    def __init__(self, sock: Any = None) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.sock = sock
        self.reading = True
        self.resumed = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" and self.sock is not None else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        self.resumed += 1

    @property
    def written(self) -> bytes:
        return b"".join(self.writes)

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


class HandedFrom:
    """aiohttp's protocol, as the sink hands it the connection loss."""

    def __init__(self) -> None:
        self.lost: list[Any] = []

    def connection_lost(self, exc: Any) -> None:
        self.lost.append(exc)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rng: random.Random) -> bytes:
    """A masked client-to-server frame, as RFC 6455 has clients send them."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = rng.randbytes(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        out.append((opcode, bytes(data[pos : pos + n])))
        pos += n
    return out


def sink_call() -> tuple[ServerState, CallRecord]:
    state = ServerState(ServerConfig())
    record = CallRecord(
        call_id=str(uuid.uuid4()),
        request={"medium": {"serverWebSocket": {"inputSampleRate": 8000}}},
        created_ns=time.monotonic_ns(),
        created=dt.datetime.now(dt.UTC),
        join_url="",
        agent=AgentBehaviour(mode="sink", greeting="Hi.", reply_every_s=0),
        faults=Faults(),
    )
    state.store.add(record)
    return state, record


@pytest.mark.parametrize("seed", range(6))
async def test_the_parser_reads_the_same_stream_whatever_the_reads_split(seed):
    rng = random.Random(seed)
    sizes = [0, 1, 125, 126, 320, 65535, 65536, 70000]
    stream = b""
    binary_frames = binary_bytes = 0
    for size in sizes:
        stream += client_frame(0x2, rng.randbytes(size), rng=rng)
        binary_frames += 1
        binary_bytes += size
        stream += client_frame(0x1, json.dumps({"type": "ping", "timestamp": size}).encode(), rng=rng)
    # A fragmented binary message with a websocket ping between its frames, a fragmented text
    # message (not read), unknown text, and a large text frame (skipped unread).
    stream += client_frame(0x2, b"ab" * 100, fin=False, rng=rng)
    stream += client_frame(0x9, b"hi", rng=rng)
    stream += client_frame(0x0, b"cd" * 100, rng=rng)
    binary_frames += 2
    binary_bytes += 400
    stream += client_frame(0x1, b'{"type":"ping",', fin=False, rng=rng)
    stream += client_frame(0x0, b'"timestamp":-1}', rng=rng)
    stream += client_frame(0x1, b'{"type":"user_text_message","text":"hi"}', rng=rng)
    stream += client_frame(0x1, b"x" * 100_000, rng=rng)
    stream += client_frame(0x8, (1000).to_bytes(2, "big") + b"bye", rng=rng)
    stream += client_frame(0x2, b"after the close", rng=rng)

    state, record = sink_call()
    transport = FakeTransport()
    handed_from = HandedFrom()
    sink = SinkConnection(state, record, transport, handed_from)  # type: ignore[arg-type]
    sink.start(None)
    greeting_bytes = len(transport.written)
    cuts = sorted(rng.sample(range(1, len(stream)), 400)) if seed else list(range(1, 4000))
    pos = 0
    for cut in [*cuts, len(stream)]:
        if cut > pos:
            sink.data_received(stream[pos:cut])
            pos = cut
    sink.connection_lost(None)

    inp = record.truth.input
    assert (inp.frames_received, inp.bytes_received) == (binary_frames, binary_bytes)
    assert inp.text_frames_received == len(sizes) + 1 and inp.pings_answered == len(sizes)
    answers = server_frames(transport.written[greeting_bytes:])
    pongs = [json.loads(p) for op, p in answers if op == 0x1]
    assert pongs == [{"type": "pong", "timestamp": size} for size in sizes]
    assert [(op, p) for op, p in answers if op != 0x1] == [
        (0xA, b"hi"),
        (0x8, (1000).to_bytes(2, "big") + b"bye"),
    ]
    assert transport.closed and record.end_reason == "hangup"
    assert handed_from.lost == [None] and sink.done.done()


async def test_the_join_is_one_write_and_the_greeting_another_of_whole_frames():
    state, record = sink_call()
    transport = FakeTransport()
    sink = SinkConnection(state, record, transport, HandedFrom())  # type: ignore[arg-type]
    sink.start(None)
    hello, greeting = (server_frames(w) for w in transport.writes)
    assert [json.loads(p) for _, p in hello] == [
        {"type": "call_started", "callId": record.call_id},
        {"type": "state", "state": "listening"},
    ]
    audio = [p for op, p in greeting if op == 0x2]
    assert [op for op, _ in greeting] == [0x1, *[0x2] * len(audio), 0x1, 0x1]
    assert {len(p) for p in audio} == {2 * 160}  # 20 ms at 8 kHz
    assert len(audio) == math.ceil(synthesize("Hi.", 8000).pcm.size / 160)
    (reply,) = record.truth.replies
    assert (reply.frames, reply.bytes, reply.ordinal) == (len(audio), len(transport.writes[1]), 0)
    sink.connection_lost(None)
    assert record.end_reason == "hangup"


async def test_a_held_connection_is_read_at_each_tick_without_the_transport_reading_again():
    """agent.read_batch_ms: at a tick the sink reads a held connection's socket itself, so the
    connection stays out of the loop's poll set (a frame sent to it wakes nobody); the end of the
    stream is handed back to the transport."""
    import socket

    rng = random.Random(7)
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    state, record = sink_call()
    record.agent = AgentBehaviour(mode="sink", greeting="Hi.", reply_every_s=0, read_batch_ms=20)
    transport = FakeTransport(ours)
    sink = SinkConnection(state, record, transport, HandedFrom())  # type: ignore[arg-type]
    sink.start(None)
    try:
        frame = client_frame(0x2, b"\x01" * 640, rng=rng)
        sink.data_received(frame)  # the transport's first read: the connection is held from now on
        assert not transport.reading

        async def until(done) -> None:  # ticks come late on a busy machine: wait for them
            deadline = time.monotonic() + 5
            while not done() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

        for k in range(1, 6):
            peer.sendall(frame * 3)
            await until(lambda k=k: sink.input.frames_received == 1 + 3 * k)
            assert sink.input.frames_received == 1 + 3 * k
            assert transport.resumed == 0 and not transport.reading
        peer.sendall(frame)
        peer.close()  # the frame, then the end of the stream
        await until(lambda: transport.resumed)
        assert sink.input.frames_received == 17
        assert transport.resumed == 1  # the transport reads again, and sees the end itself
    finally:
        sink.end_call("hangup")
        ours.close()
