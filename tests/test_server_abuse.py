"""Abuse of the simulated agent's websocket, then a normal call on the same server.

On real calls' joinUrls the server takes junk text, JSON nested far too deep, odd-length audio,
frames over its size limit (one of them announcing a terabyte), audio far faster than real time,
wrong call ids, second sockets and a few hundred connections dropped without a goodbye. Each gets
the answer the README promises ("The local server"). Afterwards the same server serves a normal
call correctly, every abusive call has ended and let go of its session, and what the abuse left
behind is bounded: the server's own caps (client errors reported, events per call) held, no
connection task is left over, and the Python heap kept far less than what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import struct
import tracemalloc
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import websockets

from uvbench.audio.tts import synthesize
from uvbench.protocol.strict_json import MAX_DEPTH
from uvbench.server import LocalServer
from uvbench.server.agent import CLIENT_ERRORS_REPORTED, ECHO_MAX_CHARS, INPUT_AHEAD_MAX_S
from uvbench.server.config import MAX_SPOKEN_TEXT_CHARS, AgentBehaviour, Latency
from uvbench.server.probe import run_probe
from uvbench.server.session import MAX_FRAME_BYTES
from uvbench.server.store import MAX_EVENTS, CallRecord

MB = 1 << 20
RATE = 16000
FIXED = AgentBehaviour(latency=Latency(kind="fixed", ms=300))
pytestmark = pytest.mark.server_config(agent=FIXED)


# -- helpers ---------------------------------------------------------------------------------------


async def create(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """A call where the user speaks first: the agent synthesizes nothing until spoken to."""
    payload = {
        "systemPrompt": "You are being abused.",
        "medium": {"serverWebSocket": {"inputSampleRate": RATE}},
        "firstSpeakerSettings": {"user": {}},
        **body,
    }
    response = await api.post("/api/calls", json=payload)
    assert response.status_code == 201, response.text
    return response.json()


async def read_until_closed(ws: Any) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:
            pass


async def ping(ws: Any, stamp: int) -> None:
    """A ping answered: the call is still served after whatever came before."""
    await ws.send(json.dumps({"type": "ping", "timestamp": stamp}))
    async with asyncio.timeout(10):
        while True:
            frame = await ws.recv()
            if isinstance(frame, str) and json.loads(frame).get("type") == "pong":
                assert json.loads(frame)["timestamp"] == stamp
                return


async def ended(server: LocalServer, call_id: str) -> CallRecord:
    """The call's record once it has ended and its session has let go of it (just after the socket
    closed; polled, generously)."""
    record = server.store.get(call_id)
    async with asyncio.timeout(20):
        while record.ended_ns is None or record.session is not None:
            await asyncio.sleep(0.01)
    return record


def mistakes(record: CallRecord) -> list[str]:
    return [e["text"] for e in record.events if e["type"] == "client_message_error"]


def frame_header(opcode: int, length: int) -> bytes:
    """A masked client frame's header announcing `length` bytes of payload (RFC 6455 §5.2)."""
    return struct.pack("!BBQ4s", 0x80 | opcode, 0x80 | 127, length, b"\x00\x00\x00\x00")


BINARY = 0x2


# -- each abuse: what it gets, and how many bytes it sent --------------------------------------------


async def junk_text(api: httpx.AsyncClient, server: LocalServer) -> int:
    """Text frames that are no data message: each a warning event up to CLIENT_ERRORS_REPORTED,
    later ones only counted; the call goes on."""
    call = await create(api)
    junk = [
        "{not json",
        "",
        "\x00",
        "[1, 2]",
        '"a string"',
        '{"type": 7}',
        '{"type": "no_such_type"}',
        '{"type": "ping", "timestamp": NaN}',
        '{"n": 1' + "0" * 5000 + "}",  # more digits than the interpreter converts
    ]
    count = CLIENT_ERRORS_REPORTED + 50
    async with websockets.connect(call["joinUrl"]) as ws:
        for i in range(count):
            await ws.send(junk[i % len(junk)])
        await ping(ws, 1)
    record = await ended(server, call["callId"])
    assert record.truth.input.client_errors == count
    assert len(mistakes(record)) == CLIENT_ERRORS_REPORTED
    assert record.end_reason == "hangup"
    return sum(len(junk[i % len(junk)]) for i in range(count))


async def deeply_nested_json(api: httpx.AsyncClient, server: LocalServer) -> int:
    """JSON nested past MAX_DEPTH is refused as such (no RecursionError, no crash); at MAX_DEPTH it
    is an ordinary message."""
    call = await create(api)
    too_deep = [
        "[" * 500_000 + "]" * 500_000,  # a megabyte of nothing but nesting, under the frame limit
        '{"type": "ping", "timestamp": 1, "x": ' + '{"a":' * 20_000 + "1" + "}" * 20_000 + "}",
        '{"type": "ping", "timestamp": 1, "x": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}",
    ]
    async with websockets.connect(call["joinUrl"]) as ws:
        for text in too_deep:
            await ws.send(text)
        deepest = MAX_DEPTH - 1  # inside the outer object: MAX_DEPTH levels in all
        await ws.send('{"type": "ping", "timestamp": 2, "x": ' + "[" * deepest + "]" * deepest + "}")
        async with asyncio.timeout(10):
            while not (isinstance(frame := await ws.recv(), str) and '"pong"' in frame):
                pass
        assert json.loads(frame)["timestamp"] == 2
    record = await ended(server, call["callId"])
    refused = mistakes(record)
    assert len(refused) == len(too_deep)
    assert all(f"nested more than {MAX_DEPTH} levels" in text for text in refused), refused
    return sum(map(len, too_deep))


async def odd_length_audio(api: httpx.AsyncClient, server: LocalServer) -> int:
    """Audio split mid-sample: reported once, and no byte lost (the stray one waits for the next)."""
    call = await create(api)
    frames = [bytes(641), bytes(1), bytes(3), bytes(639), bytes(2)]
    async with websockets.connect(call["joinUrl"]) as ws:
        for frame in frames:
            await ws.send(frame)
        await ping(ws, 3)
        assert server.store.get(call["callId"]).truth.input.samples_received == sum(map(len, frames)) // 2
    record = await ended(server, call["callId"])
    assert len(mistakes(record)) == 1 and "odd length" in mistakes(record)[0]
    return sum(map(len, frames))


async def oversized_frames(api: httpx.AsyncClient, server: LocalServer) -> int:
    """Frames over MAX_FRAME_BYTES, most of the bytes this test sends: each closes its socket with
    1009 and a reason naming the limit, and ends its call; none of it is kept."""
    sent = 0
    for size in [MAX_FRAME_BYTES + 1] + [8 * MB] * 6:
        call = await create(api)
        async with websockets.connect(call["joinUrl"]) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(bytes(size))
            await read_until_closed(ws)
        assert ws.close_code == 1009 and f"limit of {MAX_FRAME_BYTES} bytes" in ws.close_reason
        record = await ended(server, call["callId"])
        assert record.end_reason == "connection_error"
        assert any(f"limit of {MAX_FRAME_BYTES} bytes" in text for text in mistakes(record))
        sent += size
    return sent


async def terabyte_frame_header(api: httpx.AsyncClient, server: LocalServer) -> int:
    """A header announcing a terabyte and no payload: refused on the header alone. A server that
    waited to read (or buffer) the payload would never answer."""
    call = await create(api)
    header = frame_header(BINARY, 1 << 40)
    async with websockets.connect(call["joinUrl"]) as ws:
        ws.transport.write(header)
        await read_until_closed(ws)
    assert ws.close_code == 1009 and f"limit of {MAX_FRAME_BYTES} bytes" in ws.close_reason
    assert (await ended(server, call["callId"])).end_reason == "connection_error"
    return len(header)


async def audio_far_ahead_of_real_time(api: httpx.AsyncClient, server: LocalServer) -> int:
    """Thirty seconds of audio at once: the call ends with 1008 once the input runs more than
    INPUT_AHEAD_MAX_S ahead, having taken in no more than that."""
    call = await create(api)
    chunk = bytes(RATE * 2 // 50)  # 20 ms
    sent = 0
    async with websockets.connect(call["joinUrl"]) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(int(3 * INPUT_AHEAD_MAX_S * 50)):
                await ws.send(chunk)
                sent += len(chunk)
        await read_until_closed(ws)
    assert ws.close_code == 1008
    record = await ended(server, call["callId"])
    assert record.end_reason == "connection_error"
    assert any(f"limit of {INPUT_AHEAD_MAX_S:g} s" in text for text in mistakes(record))
    inp = record.truth.input
    lasted_s = (record.ended_ns - inp.first_audio_ns) / 1e9
    assert inp.samples_received <= (INPUT_AHEAD_MAX_S + lasted_s) * RATE
    return sent


async def wrong_call_ids(api: httpx.AsyncClient) -> None:
    """Unknown, malformed, differently spelt and deleted ids: 404 at the handshake; ended: 410."""
    call = await create(api)
    gone = await create(api)
    assert (await api.delete(f"/api/calls/{gone['callId']}")).status_code == 204
    base = call["joinUrl"].split("/calls/")[0]
    for call_id in (str(uuid.uuid4()), "not-a-call", call["callId"].upper(), gone["callId"], "x" * 2000):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{base}/calls/{call_id}/server_web_socket")
        assert refused.value.response.status_code == 404, call_id
    async with websockets.connect(call["joinUrl"]):
        pass
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        while True:  # the session ends just after the socket closes
            try:
                await websockets.connect(call["joinUrl"])
            except websockets.InvalidStatus as refused:
                if refused.response.status_code == 410:
                    break
            await asyncio.sleep(0.01)


async def second_sockets(api: httpx.AsyncClient) -> None:
    """More sockets on a joined call: 409 each, and the first one is untouched."""
    call = await create(api)
    async with websockets.connect(call["joinUrl"]) as first:
        for _ in range(5):
            with pytest.raises(websockets.InvalidStatus) as second:
                await websockets.connect(call["joinUrl"])
            assert second.value.response.status_code == 409
        await ping(first, 4)


async def connect_and_drop(api: httpx.AsyncClient, server: LocalServer, times: int) -> None:
    """Connections dropped without a close frame: most after the handshake (a reset), some with
    the upgrade request sent and the answer never read. Every call lets go of its session: it has
    ended, or (dropped before the 101) it is free to join."""
    host, port = urlsplit(server.base_url).hostname, urlsplit(server.base_url).port
    call_ids = []
    for i in range(times):
        call = await create(api)
        call_ids.append(call["callId"])
        if i % 4:
            ws = await websockets.connect(call["joinUrl"])
            ws.transport.abort()
            await ws.wait_closed()
        else:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET /calls/{call['callId']}/server_web_socket HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
            )
            writer.close()
            await writer.wait_closed()
    async with asyncio.timeout(30):
        while any(server.store.get(i).session is not None for i in call_ids):
            await asyncio.sleep(0.05)
    for call_id in call_ids:
        record = server.store.get(call_id)
        assert record.ended_ns is not None or not record.connected, call_id
        assert record.end_reason in (None, "hangup"), record.end_reason


# -- the tests --------------------------------------------------------------------------------------


async def test_abuse_leaves_the_server_serving_and_bounded(
    api: httpx.AsyncClient, server: LocalServer
) -> None:
    # What any first call loads for good (the schema's validators, the synthesizer, a greeting)
    # is not what abuse leaves behind: warm it before the baseline.
    await create(api)
    synthesize(FIXED.greeting, RATE, wpm=FIXED.voice_wpm)
    tracemalloc.start()
    try:
        gc.collect()
        held_before = tracemalloc.get_traced_memory()[0]
        tasks_before = len(asyncio.all_tasks())

        sent = 0
        sent += await junk_text(api, server)
        sent += await deeply_nested_json(api, server)
        sent += await odd_length_audio(api, server)
        sent += await oversized_frames(api, server)
        sent += await terabyte_frame_header(api, server)
        sent += await audio_far_ahead_of_real_time(api, server)
        await wrong_call_ids(api)
        await second_sockets(api)
        await connect_and_drop(api, server, times=200)

        # The same server serves a normal call: greeting, a spoken turn, the reply cut by a
        # barge-in, the conversation and its recording.
        result = await run_probe(server.base_url, server.api_key)
        summary = result.summary()
        assert result.call["endReason"] == "hangup" and summary["closeCode"] == 1000
        assert summary["audioFramesReceived"] > 50 and summary["clearAfterBargeInMs"] is not None
        assert [t["role"] for t in summary["transcripts"][:3]] == ["agent", "user", "agent"]
        assert [r["kind"] for r in result.truth["replies"][:2]] == ["greeting", "reply"]
        assert result.truth["replies"][1]["interrupted"] and result.recording

        # Nothing left running: no session on any call, no connection task left over.
        assert all(record.session is None for record in server.store.calls.values())
        assert server.store.active_counts()[1] == 0
        async with asyncio.timeout(20):
            while len(asyncio.all_tasks()) > tasks_before:  # aiohttp ends a handler just after its socket
                await asyncio.sleep(0.05)

        # The server's own bounds held.
        for record in server.store.calls.values():
            assert len(record.events) <= MAX_EVENTS and record.events_dropped == 0
            assert record.truth.input.client_errors <= CLIENT_ERRORS_REPORTED + 50

        # And what was sent is not what is held: a server that kept the refused frames (or the
        # audio past the limit) would hold most of them.
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - held_before
    finally:
        tracemalloc.stop()
    assert sent > 50 * MB
    assert held < 20 * MB, f"{held / MB:.1f} MiB still held after {sent / MB:.0f} MiB sent"


async def test_a_frame_of_exactly_the_limit_is_taken_and_one_byte_more_is_refused_naming_it(
    api: httpx.AsyncClient, server: LocalServer
) -> None:
    """MAX_FRAME_BYTES is the largest frame taken (aiohttp's own limit stops one byte short of the
    number it is given); one byte more closes the socket with 1009, the reason and the call's
    events naming the limit, and ends the call as a connection error."""
    call = await create(api)
    head = '{"type": "ping", "timestamp": 5, "pad": "'
    exactly = head + "x" * (MAX_FRAME_BYTES - len(head) - 2) + '"}'
    assert len(exactly) == MAX_FRAME_BYTES
    async with websockets.connect(call["joinUrl"]) as ws:
        await ws.send(exactly)
        async with asyncio.timeout(10):
            while not (isinstance(frame := await ws.recv(), str) and '"pong"' in frame):
                pass
        await ws.send(exactly + " ")
        await read_until_closed(ws)
    assert ws.close_code == 1009
    assert ws.close_reason == f"frame over this server's limit of {MAX_FRAME_BYTES} bytes"
    record = await ended(server, call["callId"])
    assert record.end_reason == "connection_error"
    assert mistakes(record) == [f"frame over this server's limit of {MAX_FRAME_BYTES} bytes (closed 1009)"]


async def test_a_frame_header_announcing_a_terabyte_is_refused_at_once(
    api: httpx.AsyncClient, server: LocalServer
) -> None:
    await terabyte_frame_header(api, server)  # asserts the 1009, its reason and the call's end


async def test_long_texts_and_values_are_refused_or_cut_neither_spoken_nor_kept(
    api: httpx.AsyncClient, server: LocalServer
) -> None:
    """Fuzzing found a 50 KB forced_agent_message blocking the server for 5.7 s while it was
    synthesized, and a 500 KB message type sent 20 times leaving 10 MB in the call's events. A text
    over MAX_SPOKEN_TEXT_CHARS is the client's mistake, named as such and never spoken; a value a
    mistake quotes is cut to ECHO_MAX_CHARS."""
    call = await create(api)
    huge_type = "t" * 500_000
    long_text = "word " * 10_000
    async with websockets.connect(call["joinUrl"]) as ws:
        for _ in range(20):
            await ws.send(json.dumps({"type": huge_type}))
        await ws.send(
            json.dumps({"type": "forced_agent_message", "content": long_text, "urgency": "immediate"})
        )
        await ws.send(json.dumps({"type": "hang_up", "message": long_text}))
        await ping(ws, 6)  # still served, and not hung up on
    record = await ended(server, call["callId"])
    assert record.end_reason == "hangup" and record.truth.replies == []
    refused = mistakes(record)
    assert len(refused) == 22
    assert all(f"the first {ECHO_MAX_CHARS} of 500,000 characters" in text for text in refused[:20])
    limit = f"over this server's limit of {MAX_SPOKEN_TEXT_CHARS:,} characters"
    assert refused[20].startswith('forced_agent_message "content" is 50,000 characters, ' + limit)
    assert refused[21].startswith('hang_up "message" is 50,000 characters, ' + limit)
    assert sum(len(json.dumps(event)) for event in record.events) < 20 * 1024
