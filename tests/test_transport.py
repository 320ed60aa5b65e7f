"""The call's lean transport: the websocket client against a reference server, the timer-driven
pacer, the audible-sample scan, and the pacer's record at the end of a call."""

from __future__ import annotations

import asyncio
import textwrap
import time

import numpy as np
import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from websockets.asyncio.server import serve

from tests.loaded_loop import block_the_loop, probe_the_loop
from uvbench.audio.pacer import Composer, Schedule
from uvbench.audio.sender import PacedSender
from uvbench.call.wsclient import CallSocket, JoinError, accept_key
from uvbench.protocol.audio import AUDIBLE_THRESHOLD, audible_bounds, audible_bounds_of

NS = 1_000_000_000


class Inbox:
    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes | str, int]] = []
        self.changed = asyncio.Event()

    def on_binary(self, data: bytes, t_ns: int) -> None:
        self.frames.append(("binary", data, t_ns))
        self.changed.set()

    def on_text(self, text: str, t_ns: int) -> None:
        self.frames.append(("text", text, t_ns))
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count:
                self.changed.clear()
                await self.changed.wait()


async def open_socket(url: str, inbox: Inbox) -> CallSocket:
    ws = await CallSocket.connect(url, open_timeout=5)
    ws.start(inbox.on_binary, inbox.on_text)
    return ws


@pytest.fixture
async def server():
    """A reference websocket server (the `websockets` library): what it receives, and a hook."""
    state: dict = {"received": [], "behaviour": None}

    async def handler(ws):
        if state["behaviour"] is not None:
            await state["behaviour"](ws)
            return
        async for message in ws:  # echo, and keep what came
            state["received"].append(message)
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        state["url"] = f"ws://127.0.0.1:{port}/calls/x?apiVersion=1"
        yield state


async def test_messages_both_ways_are_masked_and_framed_as_the_reference_server_expects(server):
    inbox = Inbox()
    ws = await open_socket(server["url"], inbox)
    assert ws.opened_ns > 0
    small, medium, large = b"\x01\x02", bytes(range(256)) * 3, bytes(70_000)
    for payload in (small, medium, large):
        ws.send_binary(payload)
    ws.send_text('{"type": "ping", "timestamp": 1.5}')
    ws.send_text("héllo")
    await inbox.wait_for(5)
    assert server["received"] == [small, medium, large, '{"type": "ping", "timestamp": 1.5}', "héllo"]
    assert [(kind, data) for kind, data, _ in inbox.frames] == [
        ("binary", small),
        ("binary", medium),
        ("binary", large),
        ("text", '{"type": "ping", "timestamp": 1.5}'),
        ("text", "héllo"),
    ]
    stamps = [t for _, _, t in inbox.frames]
    assert stamps == sorted(stamps) and stamps[0] >= ws.opened_ns
    await ws.close()
    assert ws.closed.done() and ws.close_code == 1000
    with pytest.raises(websockets.ConnectionClosedOK):
        ws.send_binary(b"late")


async def test_fragmented_messages_and_pings_from_the_server(server):
    async def behaviour(ws):
        await ws.send([b"ab", b"cd", b"ef"])  # one binary message in three frames
        await ws.send(["par", "tial"])
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 2)  # answered by the client's pong
        await ws.send("after the ping")
        await ws.wait_closed()

    server["behaviour"] = behaviour
    inbox = Inbox()
    ws = await open_socket(server["url"], inbox)
    await inbox.wait_for(3)
    assert [data for _, data, _ in inbox.frames] == [b"abcdef", "partial", "after the ping"]
    await ws.close()


async def test_the_server_closing_gives_its_code_and_reason(server):
    async def behaviour(ws):
        await ws.send("bye")
        await ws.close(4000, "call over")

    server["behaviour"] = behaviour
    inbox = Inbox()
    ws = await open_socket(server["url"], inbox)
    await asyncio.wait_for(ws.closed, 5)
    assert (ws.close_code, ws.close_reason) == (4000, "call over")
    assert inbox.frames[0][1] == "bye"
    with pytest.raises(websockets.ConnectionClosedError):
        ws.send_text("too late")


async def test_sending_while_the_closing_handshake_is_under_way_raises_connection_closed():
    """A bare server that accepts the upgrade, then leaves the client's close unanswered."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
        )
        await asyncio.sleep(0.3)
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        ws = await open_socket(f"ws://127.0.0.1:{port}/", Inbox())
        closing = asyncio.create_task(ws.close())
        await asyncio.sleep(0.05)
        assert not ws.closed.done()
        with pytest.raises(websockets.ConnectionClosedError):
            ws.send_text("during the close")
        await closing
    assert ws.close_code == 1006  # the server dropped TCP without its close frame


async def test_a_dropped_connection_is_an_abnormal_closure(server):
    async def behaviour(ws):
        ws.transport.abort()

    server["behaviour"] = behaviour
    ws = await open_socket(server["url"], Inbox())
    await asyncio.wait_for(ws.closed, 5)
    assert ws.close_code == 1006


async def test_a_refused_upgrade_is_a_join_error():
    async def handler(ws):  # pragma: no cover - never reached
        pass

    def refuse(connection, request):
        return connection.respond(404, "no such call\n")

    async with serve(handler, "127.0.0.1", 0, process_request=refuse) as srv:
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(JoinError, match="HTTP 404"):
            await CallSocket.connect(f"ws://127.0.0.1:{port}/calls/nope", open_timeout=5)


async def test_the_http_proxy_from_the_environment_is_used(server, monkeypatch):
    """HTTP_PROXY/NO_PROXY are honoured as `websockets` (and httpx, for the REST calls) honour them."""
    tunnels: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        target = head.split(" ")[1]
        tunnels.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    srv = await asyncio.start_server(proxy, "127.0.0.1", 0)
    async with srv:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        inbox = Inbox()
        ws = await open_socket(server["url"], inbox)
        ws.send_text("through the tunnel")
        await inbox.wait_for(1)
        assert inbox.frames[0][1] == "through the tunnel"
        await ws.close()
        assert tunnels == [server["url"].split("/")[2]]


async def test_a_server_that_never_answers_the_upgrade_times_out():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2)
        writer.close()

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with srv:
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(TimeoutError, match="opening handshake"):
            await CallSocket.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.2)


async def test_a_failing_handler_ends_the_connection_and_keeps_the_error(server):
    ws = await CallSocket.connect(server["url"], open_timeout=5)

    def broken(data: bytes, t_ns: int) -> None:
        raise ValueError("bug in a handler")

    ws.start(broken, lambda text, t: None)
    ws.send_binary(b"echo me")
    await asyncio.wait_for(ws.closed, 5)
    assert isinstance(ws.error, ValueError)


async def test_a_burst_is_parsed_in_slices_so_timers_still_run(server):
    """A server sending seconds of audio at once must not hold the loop for the whole burst:
    between slices the loop runs other callbacks (the pacers' timers)."""
    frame = bytes(960)
    count = 3000

    async def behaviour(ws):
        await ws.send(b"".join([b"go"]))
        for _ in range(count):
            await ws.send(frame)
        await ws.wait_closed()

    server["behaviour"] = behaviour
    loop = asyncio.get_running_loop()
    ticks: list[int] = []
    in_handler = [0]
    slow = Inbox()

    def on_binary(data: bytes, t_ns: int) -> None:
        slow.on_binary(data, t_ns)
        end = time.perf_counter() + 20e-6  # a handler's per-frame work
        while time.perf_counter() < end:
            pass
        in_handler[0] += 1

    def tick() -> None:
        ticks.append(in_handler[0])
        if in_handler[0] < count + 1:
            loop.call_later(0.001, tick)

    ws = await CallSocket.connect(server["url"], open_timeout=5)
    ws.start(on_binary, slow.on_text)
    loop.call_soon(tick)
    await slow.wait_for(count + 1, timeout=20)
    assert [len(data) for _, data, _ in slow.frames[1:]] == [960] * count
    # The timer ran in the middle of the burst, not only before and after it.
    assert any(0 < n < count for n in ticks)
    await ws.close()


# -- the audible-sample scan -----------------------------------------------------------------------


def reference_bounds(frame: bytes) -> tuple[int, int]:
    samples = np.frombuffer(frame[: len(frame) // 2 * 2], dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > AUDIBLE_THRESHOLD)
    return (int(loud[0]), int(loud[-1])) if loud.size else (-1, -1)


@given(hnp.arrays(np.int16, st.integers(0, 400), elements=st.integers(-32768, 32767)), st.booleans())
def test_audible_bounds_match_the_plain_definition(samples, odd):
    frame = samples.astype("<i2").tobytes() + (b"\x07" if odd else b"")
    assert audible_bounds(frame) == reference_bounds(frame)


@given(
    st.lists(
        st.tuples(
            hnp.arrays(
                np.int16, st.integers(0, 60), elements=st.sampled_from([0, 5, -33, 32, 33, -32768, 900])
            ),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_frames_scanned_together_have_the_bounds_of_each_alone(frames):
    frames = [samples.astype("<i2").tobytes() + (b"\x07" if odd else b"") for samples, odd in frames]
    assert audible_bounds_of(frames) == [reference_bounds(frame) for frame in frames]


@given(st.data(), st.integers(1, 50))
def test_frames_of_one_size_scanned_together_have_the_bounds_of_each_alone(data, n):
    """Frames of one size are scanned as a matrix (the usual case); the answer is the same."""
    values = st.sampled_from([0, 5, -33, 32, 33, -32768, 900])
    frames = data.draw(st.lists(hnp.arrays(np.int16, n, elements=values), min_size=1, max_size=12))
    frames = [samples.astype("<i2").tobytes() for samples in frames]
    assert audible_bounds_of(frames) == [reference_bounds(frame) for frame in frames]


def test_frames_whose_sizes_only_add_up_like_one_size_are_scanned_each_at_its_place():
    sizes = [2, 1, 3]  # six samples, as three frames of two would be: read as such, the last
    # frame's loud sample would be at 1, not 2
    frames = [np.array(v, dtype="<i2").tobytes() for v in ([0, 500], [5], [0, 0, 500])]
    assert [len(f) // 2 for f in frames] == sizes  # none with a cheap answer: all three scanned
    assert audible_bounds_of(frames) == [reference_bounds(frame) for frame in frames]


def test_audible_bounds_at_the_threshold_and_the_extremes():
    t = AUDIBLE_THRESHOLD
    for value, loud in [
        (t, False),
        (-t, False),
        (t + 1, True),
        (-t - 1, True),
        (-32768, True),
        (32767, True),
    ]:
        frame = np.array([0, value, 0], dtype="<i2").tobytes()
        assert audible_bounds(frame) == ((1, 1) if loud else (-1, -1))
        both_ends = np.array([value, 0, 0, value], dtype="<i2").tobytes()  # the fast path's case
        assert audible_bounds(both_ends) == ((0, 3) if loud else (-1, -1))
    assert audible_bounds(bytes(640)) == (-1, -1) == audible_bounds(bytes(641))  # digital silence
    assert audible_bounds(bytes(640) + b"\x07") == (-1, -1)  # the odd byte is no sample


# -- the timer-driven pacer ------------------------------------------------------------------------


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.writing_paused = False
        self.closed = False
        self._waiting: list = []

    def send_binary(self, data: bytes) -> None:
        if self.closed:
            raise websockets.ConnectionClosedError(None, None)
        self.sent.append((time.monotonic_ns(), data))

    def call_when_writable(self, callback) -> None:
        self._waiting.append(callback)

    def resume(self) -> None:
        self.writing_paused = False
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback()


def chunk_rows(sender: PacedSender) -> list[tuple[int, ...]]:
    flat = sender.chunk_rows()
    return [tuple(flat[i : i + 4]) for i in range(0, len(flat), 4)]


class Rows:
    """The sender's chunk records (deadline, sent, first sample, end sample), read when asked."""

    def __init__(self, sender: PacedSender) -> None:
        self.sender = sender

    def _all(self) -> list[tuple[int, ...]]:
        return chunk_rows(self.sender)

    def __len__(self) -> int:
        return len(self.sender.sent_ns)

    def __getitem__(self, i):
        return self._all()[i]

    def __iter__(self):
        return iter(self._all())


def pacer(rate: int = 16000, n: int = 320):
    socket = FakeSocket()
    schedule = Schedule(rate, n, time.monotonic_ns())
    sender = PacedSender(schedule, Composer(n), socket)
    return sender, socket, Rows(sender)


async def test_chunks_never_leave_early_and_keep_real_time_on_a_loaded_loop():
    sender, socket, rows = pacer()
    stop = asyncio.Event()
    probe_lateness: list[float] = []
    loader = asyncio.create_task(block_the_loop(stop))
    prober = asyncio.create_task(probe_the_loop(stop, probe_lateness))
    sender.start()
    await asyncio.sleep(3)
    stop.set()
    await asyncio.gather(loader, prober)
    sender.stop()
    await sender.done
    lateness = np.array([(sent - due) / 1e6 for due, sent, _, _ in rows])
    assert lateness.min() >= 0  # never before its last sample exists
    # Its chunks are no later than the loop's own worst wake-up (the 3 ms blocks, and whatever a
    # busy machine adds to both; about 4 ms on an idle machine) plus a millisecond or two.
    loop_worst = max(probe_lateness)
    assert np.percentile(lateness, 99) <= max(loop_worst, 4.0) + 2.0, (sorted(lateness)[-5:], loop_worst)
    assert [row[2] for row in rows] == [k * 320 for k in range(len(rows))]
    due_by_now = sender.schedule.samples_due(sender.stopped_ns)
    assert 0 <= due_by_now - sender.composer.samples_sent < 2 * 320


async def test_a_late_wake_up_sends_every_chunk_due_at_once():
    sender, socket, rows = pacer()
    sender.start()
    await asyncio.sleep(0.05)
    time.sleep(0.1)  # the loop is blocked for five chunks
    await asyncio.sleep(0.01)
    sender.stop()
    latest = max(rows, key=lambda row: row[1] - row[0])
    burst = [row for row in rows if abs(row[1] - latest[1]) < 1_000_000]
    assert len(burst) >= 4  # sent together when the loop came back, each with its own lateness
    assert latest[1] - latest[0] > 70 * 1_000_000
    assert sender.composer.samples_sent >= sender.schedule.samples_due(sender.stopped_ns) - 320


async def test_a_full_socket_buffer_holds_the_next_chunk_and_shows_as_lateness():
    sender, socket, rows = pacer()
    sender.start()
    await asyncio.sleep(0.05)
    socket.writing_paused = True
    before = len(rows)
    await asyncio.sleep(0.1)
    assert len(rows) == before
    socket.resume()
    assert len(rows) >= before + 4
    assert rows[before][1] - rows[before][0] > 60 * 1_000_000
    sender.stop()


async def test_the_pacer_stops_when_the_socket_closes():
    sender, socket, rows = pacer()
    sender.start()
    await asyncio.sleep(0.05)
    closed_at = time.monotonic_ns()
    socket.closed = True
    sent = len(rows)
    await asyncio.wait_for(sender.done, 1)
    # It stopped at the first chunk the closed socket refused (soon after the close),
    # recorded nothing more, and ended without an error of its own.
    assert sent >= 2 and len(rows) == sent
    assert closed_at <= sender.stopped_ns <= closed_at + 100 * 1_000_000
    assert sender.error is None


# -- the pacer's record at the end of a real call --------------------------------------------------


async def test_hanging_up_records_drift_on_the_chunk_grid():
    """Drift is read against the chunks due when the stream ended: 0, or one chunk short when
    the chunk due just before the hang-up was still on its way; never the closing handshake."""
    from uvbench.runner.run import Endpoint, run_call_of
    from uvbench.scenario import parse_scenarios
    from uvbench.server import LocalServer, ServerConfig
    from uvbench.server.config import AgentBehaviour, Latency

    text = textwrap.dedent(
        """
        name: grid
        call: {medium: {serverWebSocket: {inputSampleRate: 16000, clientBufferSizeMs: 60}}}
        script:
          - say: yes_16k.wav
          - hang_up
        """
    )
    (one,) = parse_scenarios(text, source="t.yaml", base_dir=".")
    config = ServerConfig(agent=AgentBehaviour(latency=Latency(kind="fixed", ms=100)))
    async with LocalServer(config) as server:
        endpoint = Endpoint(server.api_url, server.api_key, "local", True)
        for _ in range(3):
            result, metrics, _, _ = await run_call_of(one, endpoint)
            stopped = result.timeline.first("pacer.stopped")
            assert stopped.data["samples_due"] % 320 == 0
            assert stopped.data["drift_ms"] in (0.0, -20.0)
            assert stopped.t_ns <= result.timeline.first("ws.closed").t_ns
            # (On a busy machine a call may be set apart as overloaded; it must not fail.)
            assert not metrics.outcome.startswith("failed"), metrics.outcome_detail
