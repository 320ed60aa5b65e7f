"""A scripted client that exercises a server end to end: greeting, a spoken turn, a barge-in.

It is deliberately small: it streams real speech from the corpus in real time on absolute
deadlines, records what arrives with monotonic timestamps, and fetches the server's ground truth.
`uvbench selfcheck` runs it against the embedded server; the wire tests use it too. The full call
engine with scenarios and metrics lives in `uvbench.call`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import websockets

from uvbench.audio.corpus import load_clip_pcm, load_manifest

NS = 1_000_000_000


@dataclass
class Received:
    at_ns: int
    kind: str
    """"audio" (payload: byte count), "json" (payload: the message) or "text" (unparsed)."""
    payload: Any


@dataclass
class ProbeResult:
    call_id: str
    create_ms: float
    received: list[Received] = field(default_factory=list)
    speech_end_ns: int | None = None
    """Stream time of the last speech sample of the spoken turn."""
    barge_in_start_ns: int | None = None
    """Stream time of the first speech sample of the barge-in."""
    close_code: int | None = None
    call: dict[str, Any] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)
    recording: bytes | None = None

    def messages(self, type_: str) -> list[Received]:
        return [r for r in self.received if r.kind == "json" and r.payload.get("type") == type_]

    def first_audio_after(self, ns: int) -> int | None:
        return next((r.at_ns for r in self.received if r.kind == "audio" and r.at_ns >= ns), None)

    def summary(self) -> dict[str, Any]:
        greeting_audio = self.first_audio_after(0)
        clears = self.messages("playback_clear_buffer")
        turn_audio = self.first_audio_after(self.speech_end_ns) if self.speech_end_ns else None
        return {
            "callId": self.call_id,
            "createMs": round(self.create_ms, 1),
            "endReason": self.call.get("endReason"),
            "closeCode": self.close_code,
            "audioFramesReceived": sum(1 for r in self.received if r.kind == "audio"),
            "greetingFirstAudioMs": None
            if greeting_audio is None
            else round((greeting_audio - self.received[0].at_ns) / 1e6, 1),
            "turnFirstAudioMs": None
            if turn_audio is None
            else round((turn_audio - self.speech_end_ns) / 1e6, 1),
            "clearAfterBargeInMs": None
            if not clears or not self.barge_in_start_ns
            else round((clears[0].at_ns - self.barge_in_start_ns) / 1e6, 1),
            "transcripts": [r.payload for r in self.messages("transcript") if r.payload.get("final")],
        }


class _Stream:
    """The outgoing audio: continuous, paced on absolute deadlines, silence unless speech is queued."""

    def __init__(self, rate: int, chunk_ms: int = 20) -> None:
        self.rate = rate
        self.chunk = rate * chunk_ms // 1000
        self.queue = np.zeros(0, dtype=np.int16)
        self.samples_sent = 0
        self.t0_ns = 0

    def enqueue(self, pcm: np.ndarray) -> tuple[int, int]:
        """Queue speech; returns the stream sample range it will occupy."""
        start = self.samples_sent + self.queue.size
        self.queue = np.concatenate((self.queue, pcm.astype(np.int16)))
        return start, start + pcm.size

    def stream_ns(self, sample: int) -> int:
        return self.t0_ns + sample * NS // self.rate

    async def run(self, ws: Any, stop: asyncio.Event) -> None:
        self.t0_ns = time.monotonic_ns()
        while not stop.is_set():
            due = self.stream_ns(self.samples_sent + self.chunk)
            delay = (due - time.monotonic_ns()) / NS
            if delay > 0:
                await asyncio.sleep(delay)
            piece = self.queue[: self.chunk]
            self.queue = self.queue[self.chunk :]
            if piece.size < self.chunk:
                piece = np.concatenate((piece, np.zeros(self.chunk - piece.size, dtype=np.int16)))
            try:
                await ws.send(piece.tobytes())
            except websockets.ConnectionClosed:
                return
            self.samples_sent += self.chunk


async def run_probe(
    base_url: str,
    api_key: str,
    *,
    input_rate: int = 16000,
    output_rate: int = 16000,
    buffer_ms: int = 30000,
    turn_clip: str = "hello_16k.wav",
    barge_in_clip: str = "interrupt_48k.flac",
    barge_in_after_ms: float = 600.0,
    extra_body: dict[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> ProbeResult:
    """One call: wait for the greeting, speak a turn, barge in on the reply, hang up."""
    manifest = load_manifest()
    turn = manifest[turn_clip]
    barge = manifest[barge_in_clip]
    turn_pcm = load_clip_pcm(turn, input_rate)
    barge_pcm = load_clip_pcm(barge, input_rate)
    body: dict[str, Any] = {
        "systemPrompt": "You are the uvbench probe's agent.",
        "medium": {
            "serverWebSocket": {
                "inputSampleRate": input_rate,
                "outputSampleRate": output_rate,
                "clientBufferSizeMs": buffer_ms,
            }
        },
        "recordingEnabled": True,
        **(extra_body or {}),
    }
    headers = {"X-API-Key": api_key}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10.0) as http:
        started = time.monotonic_ns()
        response = await http.post("/api/calls", json=body)
        create_ms = (time.monotonic_ns() - started) / 1e6
        if response.status_code != 201:
            raise RuntimeError(f"create call failed: HTTP {response.status_code}: {response.text}")
        call = response.json()
        result = ProbeResult(call_id=call["callId"], create_ms=create_ms)
        stream = _Stream(input_rate)
        stop = asyncio.Event()
        agent_finals = asyncio.Event()
        reply_audio = asyncio.Event()
        cleared = asyncio.Event()

        async def receive(ws: Any) -> None:
            async for frame in ws:
                now = time.monotonic_ns()
                if isinstance(frame, bytes):
                    result.received.append(Received(now, "audio", len(frame)))
                    if result.speech_end_ns and now > result.speech_end_ns:
                        reply_audio.set()
                    continue
                try:
                    message = json.loads(frame)
                except ValueError:
                    result.received.append(Received(now, "text", frame))
                    continue
                result.received.append(Received(now, "json", message))
                kind = message.get("type")
                if kind == "transcript" and message.get("role") == "agent" and message.get("final"):
                    agent_finals.set()
                elif kind == "playback_clear_buffer":
                    cleared.set()

        async with websockets.connect(call["joinUrl"] + "?apiVersion=1", max_size=None) as ws:
            sender = asyncio.create_task(stream.run(ws, stop))
            receiver = asyncio.create_task(receive(ws))
            try:
                await asyncio.wait_for(agent_finals.wait(), timeout_s)  # the greeting, heard out
                start, end = stream.enqueue(turn_pcm)
                result.speech_end_ns = stream.stream_ns(
                    start + turn.speech_end_sample * input_rate // turn.sample_rate
                )
                await asyncio.wait_for(reply_audio.wait(), timeout_s)
                await asyncio.sleep(barge_in_after_ms / 1000)
                start, _ = stream.enqueue(barge_pcm)
                result.barge_in_start_ns = stream.stream_ns(
                    start + barge.speech_start_sample * input_rate // barge.sample_rate
                )
                await asyncio.wait_for(cleared.wait(), timeout_s)
                await asyncio.sleep(1.5)
            finally:
                stop.set()
                await sender
                await ws.close()
                await receiver
                result.close_code = ws.close_code
        for _ in range(50):
            result.call = (await http.get(f"/api/calls/{result.call_id}")).json()
            if result.call.get("ended"):
                break
            await asyncio.sleep(0.05)
        truth = await http.get(f"/_uvbench/calls/{result.call_id}/ground_truth")
        if truth.status_code == 200:
            result.truth = truth.json()
        for _ in range(50):
            recording = await http.get(f"/api/calls/{result.call_id}/recording")
            if recording.status_code == 200:
                result.recording = recording.content
                break
            await asyncio.sleep(0.05)
    return result
