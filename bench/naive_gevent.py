"""What a naive locust user would do: real-time audio calls paced by gevent greenlets.

The baseline for uvbench's asyncio pacer. Each of N greenlets creates a call over REST
(`POST {api_url}/calls`), joins its `joinUrl` with `websockets.sync` (greenlet-based once gevent
has patched the standard library), waits until every call is connected, then streams quiet s16le
noise in `chunk_ms` frames the obvious way: send, then `gevent.sleep(chunk)`, for `seconds`. A
second greenlet per call reads and discards what the server sends. Every chunk's send time is
compared with its due time `t0 + i * chunk` (lateness), and each call's audio sent is compared
with the wall time elapsed when it stops (drift): sleep-per-chunk never catches up, so every
overshoot of a sleep adds to the drift.

gevent's monkey patching rewrites the standard library of the whole process, so the measurement
always runs in a fresh interpreter: `run_naive_gevent()` starts this file as a script and reads
its one JSON line. By hand, against a running server (`uvbench serve` prints its URL and key):

    .venv/bin/python bench/naive_gevent.py --api-url http://127.0.0.1:PORT/api --api-key KEY \\
        --calls 50 --seconds 20
"""

if __name__ == "__main__":
    # Before anything else is imported: sockets, locks and sleeps must all be gevent's.
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

API_KEY_ENV = "NAIVE_GEVENT_API_KEY"
"""How run_naive_gevent hands the key to its child: the environment, not the process list."""
ERRORS_KEPT = 5
NOISE_AMPLITUDE = 8
"""Far below the server's speech threshold: the agent keeps quiet, only the pacing is measured."""


def run_naive_gevent(
    api_url: str,
    api_key: str,
    calls: int,
    seconds: float,
    *,
    chunk_ms: int = 20,
    rate: int = 16000,
    pacing: str = "sleep",
    timeout_s: float | None = None,
) -> dict:
    """Run `calls` naive gevent calls for `seconds` in a fresh interpreter; the result dict.

    `pacing`: "sleep" (send, then sleep one chunk: the naive way) or "deadline" (sleep until each
    chunk's due time, as uvbench's pacer does): the second isolates what gevent's scheduling itself
    costs from the drift sleep-per-chunk accumulates.

    `timeout_s` bounds the child (default: `seconds` + 120 s for setup and teardown); a child
    that fails or times out raises RuntimeError with the end of its stderr.
    """
    args = [sys.executable, str(Path(__file__).resolve()), "--api-url", api_url]
    args += ["--calls", str(calls), "--seconds", str(seconds), "--chunk-ms", str(chunk_ms)]
    args += ["--rate", str(rate), "--pacing", pacing]
    env = dict(os.environ, **{API_KEY_ENV: api_key})
    timeout = timeout_s if timeout_s is not None else seconds + 120.0
    try:
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the naive gevent run did not finish within {timeout:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-10:])
        raise RuntimeError(f"the naive gevent run failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1])


def _create_call(api_url: str, api_key: str, rate: int) -> str:
    import urllib.request

    body = {
        "systemPrompt": "You are a test agent.",
        "medium": {
            "serverWebSocket": {
                "inputSampleRate": rate,
                "outputSampleRate": rate,
                "clientBufferSizeMs": 60000,
            }
        },
    }
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/calls",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": api_key, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status != 201:
            raise RuntimeError(f"POST /calls answered {response.status}")
        return json.load(response)["joinUrl"]


def _measure(
    api_url: str, api_key: str, calls: int, seconds: float, chunk_ms: int, rate: int, pacing: str
) -> dict:
    """The measurement itself; only meaningful in a process gevent has patched."""
    import gevent
    import numpy as np
    from gevent.event import Event
    from websockets.sync.client import connect

    chunk_s = chunk_ms / 1000
    samples = rate * chunk_ms // 1000
    noise = np.random.default_rng(0).integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, 50 * samples)
    frames = [noise[i : i + samples].astype("<i2").tobytes() for i in range(0, len(noise), samples)]

    go = Event()
    settled = [0]
    errors: list[str] = []
    lateness: list[float] = []
    drifts: list[float] = []

    def settle() -> None:
        # Failed calls count too, or one refused create would hold every stream back forever.
        settled[0] += 1
        if settled[0] == calls:
            go.set()

    def drain(ws) -> None:
        try:
            for _ in ws:
                pass
        except Exception:
            pass  # a broken socket shows up in the sender, which records it

    def one_call(k: int) -> bool:
        try:
            ws = connect(
                _create_call(api_url, api_key, rate), compression=None, max_size=None, open_timeout=30
            )
        except Exception as exc:
            errors.append(f"call {k} setup: {type(exc).__name__}: {exc}")
            settle()
            return False
        reader = gevent.spawn(drain, ws)
        settle()
        go.wait()
        t0 = time.monotonic()
        sent = 0
        try:
            while time.monotonic() - t0 < seconds:
                at = time.monotonic()
                ws.send(frames[sent % len(frames)])
                lateness.append(at - (t0 + sent * chunk_s))
                sent += 1
                if pacing == "deadline":
                    gevent.sleep(max(0.0, t0 + sent * chunk_s - time.monotonic()))
                else:
                    gevent.sleep(chunk_s)
            drifts.append(sent * chunk_ms - (time.monotonic() - t0) * 1000)
            return True
        except Exception as exc:
            errors.append(f"call {k} stream: {type(exc).__name__}: {exc}")
            return False
        finally:
            ws.close()
            reader.join(timeout=10)

    cpu = time.process_time()
    greenlets = [gevent.spawn(one_call, k) for k in range(calls)]
    gevent.joinall(greenlets)
    cpu = time.process_time() - cpu
    ok = sum(1 for g in greenlets if g.value)

    late_ms = np.array(lateness) * 1000
    drift_ms = np.array(drifts)

    def stat(values, fn):
        return round(float(fn(values)), 2) if len(values) else None

    return {
        "calls": ok,
        "failed": calls - ok,
        "errors": errors[:ERRORS_KEPT],
        "chunks": len(lateness),
        "lateness_p50_ms": stat(late_ms, lambda v: np.percentile(v, 50)),
        "lateness_p99_ms": stat(late_ms, lambda v: np.percentile(v, 99)),
        "lateness_max_ms": stat(late_ms, np.max),
        "drift_ms_p50": stat(drift_ms, np.median),
        "drift_ms_max": stat(drift_ms, lambda v: np.max(np.abs(v))),
        "client_cpu_s": round(cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--api-url", required=True, help="the API base, e.g. http://127.0.0.1:8000/api")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV), help=f"default ${API_KEY_ENV}")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--chunk-ms", type=int, default=20)
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--pacing", choices=("sleep", "deadline"), default="sleep")
    args = parser.parse_args()
    if not args.api_key:
        parser.error(f"no API key: pass --api-key or set {API_KEY_ENV}")
    result = _measure(
        args.api_url, args.api_key, args.calls, args.seconds, args.chunk_ms, args.rate, args.pacing
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
