"""How many concurrent 16 kHz calls one uvbench pacing process carries with its pacer on time.

A pacing process is what `uvbench run` (and each of its `--workers`, and locust's call engine)
runs the calls in: the calls on the wire only. Each level here is such a process, fresh (memory,
CPU counters): it starts its calls evenly over the ramp, holds them all for the hold, then hangs
them all up at once, and hands every finished call over as `uvbench run` does (the call's spool
file, analysis/spool.py). Its figures are measured over the hold: CPU (percent of its core, and
microseconds per call-second), RSS growth per call in flight, involuntary preemptions, and the
lateness of every chunk sent. `post` is the CPU one hand-over costs the pacing process (writing
the spool file; the milliseconds of a call's analysis run elsewhere). After the level the calls
are analysed here (outside the measured window) for the outcomes: invalid calls (the generator
itself fell behind) and figures set apart (docs/metrics.md).

Two targets, each `uvbench serve` in its own process pinned to CPU 0 (the client on CPU 1):
- `--agent simulated` (default): the simulated agent answers every spoken turn with real speech
  (300 ms latency, clientBufferSizeMs 60 so its audio streams in real time, 20 ms frames): the
  greeting, then spoken turns (`hello_16k.wav`) each answered, silence to the end of the hold.
  The simulated agent holds about 200 calls on its core.
- `--agent sink`: the server's sink agent, which costs almost nothing per frame, for levels the
  simulated agent cannot hold: the greeting, then `hello_16k.wav` and 1 s of silence in turn;
  the sink speaks a canned 1.2 s reply every `--reply-every` seconds (one burst each), on its own
  clock rather than in answer to a turn, so its calls' missed turns count as completed here.
  `--read-batch-ms 20` has the sink read each connection every 20 ms only, as a server on another
  machine would cost the client nothing to wake: on loopback each chunk sent to a sleeping reader
  also pays for waking it, on the client's CPU.

`--caller` and `--network` give the calls a caller (noise, telephone line, codec, reverb, gain)
and a network impairment, as inline YAML mappings of the scenario's `caller:` and `network:`. The
level warms the caller's audio before its load, as a run does; with an impairment a chunk's
lateness counts from its release (as `pacer.lateness_*` does) and the link's delay is printed apart.

The verdict is the largest level whose pacer p99 stays at or under the limit (default 5 ms) with
no invalid (and no failed) call. Figures and the machine they came from: docs/benchmarks.md.

    .venv/bin/python bench/capacity.py                          # 50,100,...,300, 30 s hold each
    .venv/bin/python bench/capacity.py --levels 200 --hold 30
    .venv/bin/python bench/capacity.py --agent sink --levels 500,1000 --read-batch-ms 20
    .venv/bin/python bench/capacity.py --agent sink --levels 300 --read-batch-ms 20 \
        --caller '{noise: {file: cafe.flac, snr_db: 20}, telephone: ulaw}' --network '{jitter: {mean_ms: 40}}'
    .venv/bin/python bench/capacity.py --no-pin                 # let the kernel place both processes
    .venv/bin/python bench/capacity.py --levels 200 --profile /tmp/cap   # cProfile: /tmp/cap.200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402

NS = 1_000_000_000
SERVER_CONFIG = {"agent": {"latency": {"kind": "fixed", "ms": 300}}}
TURN_S = 9.0
"""About how long a spoken turn and its reply take (3.4 s of audio, 0.3 s latency, the reply)."""
MEDIUM = "{inputSampleRate: 16000, outputSampleRate: 16000, clientBufferSizeMs: 60}"


def scenario_text(name: str, chunk_ms: int, steps: str, sound: str = "") -> str:
    """A capacity call: the greeting heard to its end, then `steps`; `sound` is its top-level
    `caller:` / `network:` lines (`sound_lines`), if any."""
    head = textwrap.dedent(
        f"""\
        name: {name}
        call:
          medium: {{serverWebSocket: {MEDIUM}}}
        client: {{chunk_ms: {chunk_ms}}}
        """
    )
    greeting = textwrap.dedent(
        """\
        script:
          - wait_for: agent_done
            timeout: 30s"""
    )
    return head + sound + greeting + steps


def turns_text(chunk_ms: int, turns: int, sound: str = "") -> str:
    """Spoken turns, each answered by the simulated agent."""
    steps = "".join(
        "\n  - say: hello_16k.wav\n  - wait_for: agent_done\n    timeout: 30s" for _ in range(turns)
    )
    return scenario_text("capacity", chunk_ms, steps, sound)


def sink_text(chunk_ms: int, hold_s: float, sound: str = "") -> str:
    """hello_16k.wav (3.4 s) and a second of silence in turn, the sink speaking on its own."""
    steps = "".join("\n  - say: hello_16k.wav\n  - silence: 1s" for _ in range(max(1, int(hold_s // 4.5))))
    return scenario_text("capacity-sink", chunk_ms, steps, sound)


def sound_lines(caller: str | None, network: str | None) -> str:
    """The scenario's `caller:` and `network:` lines from `--caller` / `--network` (inline YAML
    mappings), or a ValueError naming the option and how to write it. What the keys may be is
    the scenario loader's to check."""
    import yaml

    lines = ""
    for key, given in (("caller", caller), ("network", network)):
        if given is None:
            continue
        try:
            value = yaml.safe_load(given)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(
                f"--{key}: not valid YAML ({where}); expected an inline mapping such as "
                + (
                    "'{noise: {file: cafe.flac, snr_db: 20}}'"
                    if key == "caller"
                    else "'{jitter: {mean_ms: 40}}'"
                )
            ) from None
        if not isinstance(value, dict):
            raise ValueError(f"--{key}: expected an inline YAML mapping ({{...}}), got {given!r}")
        lines += f"{key}: {json.dumps(value, default=str)}\n"
    return lines


def level_text(args: argparse.Namespace) -> str:
    """The scenario every call of a level runs."""
    sound = sound_lines(args.caller, args.network)
    if args.agent == "sink":
        return sink_text(args.chunk_ms, args.hold, sound)
    return turns_text(args.chunk_ms, max(1, int(args.hold // TURN_S)), sound)


WARM_UP = f"""\
name: warm-up
call: {{medium: {{serverWebSocket: {MEDIUM}}}}}
{{sound}}script:
  - say: yes_16k.wav
  - hang_up
"""
"""One call before the level, with the level's caller and network (`{sound}`): the imports and
caches of a first call are not the level's cost."""


def cpu_pressure_us() -> int | None:
    """Time (us) some task on this machine waited for a CPU (Linux PSI), or None."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return int(line.rsplit("total=", 1)[1])


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chunk_lateness_ms(timeline) -> tuple[np.ndarray, np.ndarray | None]:
    """Each chunk's pacer lateness in ms, and the network impairment's delay of each (None without
    one). With an impairment a chunk is late from its release, as the call's metrics count it
    (pacer.lateness_*): the link's delay (release - due) is no fault of the pacer."""
    rows = np.frombuffer(timeline.audio_out, dtype=np.int64).reshape(-1, 4)
    release = np.frombuffer(timeline.audio_out_release, dtype=np.int64)
    if release.size and release.size == len(rows):
        return (rows[:, 1] - release) / 1e6, (release - rows[:, 0]) / 1e6
    return (rows[:, 1] - rows[:, 0]) / 1e6, None


# -- one level, in a client process of its own ---------------------------------------------------


async def client_level(args: argparse.Namespace) -> dict:
    from uvbench.analysis import spool
    from uvbench.call.engine import run_call, warm_up
    from uvbench.call.plan import Endpoint, plan_for
    from uvbench.call.rest import UltravoxApi
    from uvbench.call.script import ScriptRun, make_script
    from uvbench.eventloop import settle_for_pacing
    from uvbench.metrics import compute
    from uvbench.runner.run import warm_audio
    from uvbench.scenario import parse_scenarios

    level = args.level
    (scenario,) = parse_scenarios(level_text(args), source="capacity.yaml", base_dir=".")
    endpoint = Endpoint(args.api_url, args.api_key, "local", True)
    api = UltravoxApi(args.api_url, args.api_key)
    folder = Path(tempfile.mkdtemp(prefix="uvbench-capacity-"))
    # Warm what every call shares (the clips as the caller sends them and the noise bed, lazy
    # imports, the HTTP client's connection), as a pacing process does before the load.
    warm_up()
    warm_audio([scenario])
    warm_text = WARM_UP.replace("{sound}", sound_lines(args.caller, args.network))
    (warm,) = parse_scenarios(warm_text, source="warm-up.yaml", base_dir=".")
    spool.save(await run_call(plan_for(warm, endpoint), make_script(warm, ScriptRun()), api=api),
               folder / "warm.call")  # fmt: skip
    settle_for_pacing()  # as `uvbench run`'s pacing processes do

    t_start = time.monotonic_ns()
    hold_from = t_start + round(args.ramp * NS)
    end_ns = hold_from + round(args.hold * NS)
    rss0 = rss_bytes()
    window: dict[str, float] = {}
    post: list[float] = []

    async def sample() -> None:
        await asyncio.sleep((hold_from - time.monotonic_ns()) / NS)
        window["cpu0"], window["t0"] = time.process_time(), time.monotonic()
        window["sys0"] = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        window["psi0"] = cpu_pressure_us() or 0
        window["ivcsw0"] = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        await asyncio.sleep((end_ns - time.monotonic_ns()) / NS - 0.05)
        window["cpu1"], window["t1"] = time.process_time(), time.monotonic()
        window["sys1"] = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        window["psi1"] = cpu_pressure_us() or 0
        window["ivcsw1"] = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        window["rss"] = rss_bytes()

    async def one(i: int) -> Path:
        await asyncio.sleep(args.ramp * i / level)
        plan = plan_for(scenario, endpoint, agent_audio_path=folder / f"{i}.pcm")
        script = make_script(scenario, ScriptRun())

        async def scripted(ctx) -> None:
            await script(ctx)
            delay = (end_ns - time.monotonic_ns()) / NS
            if delay > 0:
                await asyncio.sleep(delay)
            await ctx.close()

        result = await run_call(plan, scripted, api=api)
        path = folder / f"{i}.call"
        started = time.thread_time()
        spool.save(result, path)  # the hand-over: all a pacing process does after a call
        post.append(time.thread_time() - started)
        return path

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    sampler = asyncio.create_task(sample())
    paths = await asyncio.gather(*(one(i) for i in range(level)))
    await sampler
    after_cpu = time.process_time() - window["cpu1"]
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    await api.close()

    # The analysis, after the measured window (in `uvbench run` it is another process's work).
    lateness, delay, outcomes, set_apart, details = [], [], [], 0, set()
    expected = "failed:missed_turn" if args.agent == "sink" else "completed"
    plan = plan_for(scenario, endpoint)
    for path in paths:
        result = spool.load(path, plan)
        late, held = chunk_lateness_ms(result.timeline)
        lateness.append(late)
        if held is not None:
            delay.append(held)
        metrics = compute(result.timeline)
        outcomes.append(metrics)
        set_apart += sum(len(t.get("set_apart") or {}) for t in metrics.turns) + len(metrics.set_apart)
        if metrics.outcome not in ("completed", expected):
            details.add(f"{metrics.outcome} ({metrics.outcome_detail})"[:160])
    shutil.rmtree(folder, ignore_errors=True)
    late = np.concatenate(lateness) if lateness else np.zeros(0)
    held = np.concatenate(delay) if delay else np.zeros(0)
    # The sink speaks on its own clock, not in answer to a turn: its calls miss turns by design.
    outcome = ["completed" if m.outcome == expected else m.outcome for m in outcomes]
    call_p99 = [m.metrics.get("pacer.lateness_p99_ms") for m in outcomes]
    call_p99 = [p for p in call_p99 if p is not None]
    loop_lag = [m.metrics.get("pacer.loop_lag_max_ms") or 0.0 for m in outcomes]
    wall = window["t1"] - window["t0"]
    cpu = window["cpu1"] - window["cpu0"]
    return {
        "calls": level,
        "completed": outcome.count("completed"),
        "invalid": sum(o.startswith("invalid:") for o in outcome),
        "failed": sum(o.startswith("failed:") for o in outcome),
        "set_apart": set_apart,
        "chunks": int(late.size),
        "p50_ms": round(float(np.percentile(late, 50)), 3) if late.size else None,
        "p99_ms": round(float(np.percentile(late, 99)), 3) if late.size else None,
        "max_ms": round(float(late.max()), 3) if late.size else None,
        "min_ms": round(float(late.min()), 3) if late.size else None,
        "worst_call_p99_ms": round(max(call_p99), 3) if call_p99 else None,
        "network_p50_ms": round(float(np.percentile(held, 50)), 1) if held.size else None,
        "network_p99_ms": round(float(np.percentile(held, 99)), 1) if held.size else None,
        "network_max_ms": round(float(held.max()), 1) if held.size else None,
        "loop_lag_max_ms": round(max(loop_lag), 2) if loop_lag else None,
        "client_cpu_pct": round(100 * cpu / wall, 1),
        "cpu_us_per_call_s": round(1e6 * cpu / (wall * level), 1),
        "sys_us_per_call_s": round(1e6 * (window["sys1"] - window["sys0"]) / (wall * level), 1),
        "rss_kib_per_call": round((window["rss"] - rss0) / 1024 / level, 1),
        "post_ms_per_call": round(1e3 * sum(post) / len(post), 3) if post else None,
        "after_ms_per_call": round(1e3 * after_cpu / level, 2),
        "preempted": int(window["ivcsw1"] - window["ivcsw0"]),
        "cpu_pressure_pct": round(100 * (window["psi1"] - window["psi0"]) / 1e6 / wall, 1),
        "details": sorted(details)[:5],
    }


def client_main(args: argparse.Namespace) -> None:
    from uvbench.eventloop import fast_event_loop_factory

    factory = fast_event_loop_factory() if args.event_loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        row = runner.run(client_level(args))
    print(json.dumps(row), flush=True)


# -- the ramp, from the parent ---------------------------------------------------------------------


def level_problem(args: argparse.Namespace) -> str | None:
    """Why the level's scenario (with `--caller` / `--network`) cannot run, in one line; None when
    it can. Checked before the server starts."""
    from uvbench.scenario import ScenarioError, parse_scenarios

    try:
        parse_scenarios(level_text(args), source="capacity.yaml", base_dir=".")
    except ValueError as exc:
        return str(exc)
    except ScenarioError as exc:
        return "; ".join(exc.problems)
    return None


def machine() -> str:
    model = cpu_model()
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, Linux {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="50,100,150,200,250,300", help="concurrent calls per step")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds all of a level's calls overlap")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which a level's calls start")
    parser.add_argument("--chunk-ms", type=int, default=20, help="client audio chunk size")
    parser.add_argument("--limit-ms", type=float, default=5.0, help="pacer lateness p99 limit")
    parser.add_argument("--event-loop", default="uvloop", choices=("uvloop", "asyncio"), help="client loop")
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin the server to CPU 0, client to CPU 1"
    )
    parser.add_argument("--profile", default=None, help="(client) write cProfile stats of each level here")
    parser.add_argument(
        "--agent", default="simulated", choices=("simulated", "sink"), help="the server's agent"
    )
    parser.add_argument("--reply-every", type=float, default=5.0, help="(sink) seconds between its replies")
    parser.add_argument(
        "--read-batch-ms",
        type=float,
        default=0.0,
        help="(sink) its agent.read_batch_ms: read each connection that often only (0 = as data comes)",
    )
    parser.add_argument(
        "--caller",
        default=None,
        metavar="YAML",
        help="the scenario's caller: as an inline YAML mapping, e.g. "
        "'{noise: {file: cafe.flac, snr_db: 20}, telephone: ulaw}'",
    )
    parser.add_argument(
        "--network",
        default=None,
        metavar="YAML",
        help="the scenario's network: as an inline YAML mapping, e.g. '{jitter: {mean_ms: 40}}'",
    )
    # Internal: one level in a child process.
    parser.add_argument("--level", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--api-url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--api-key", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.level is not None:
        client_main(args)
        return

    from uvbench.server.process import ServerProcess

    problem = level_problem(args)
    if problem is not None:
        raise SystemExit(f"capacity.py: {problem}")
    load = os.getloadavg()
    print(f"machine: {machine()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    pinning = "server on CPU 0, client on CPU 1" if args.pin else "not pinned"
    print(
        f"hold {args.hold:g} s after a {args.ramp:g} s ramp, {args.chunk_ms} ms chunks, "
        f"{args.event_loop} client loop, {args.agent} agent, {pinning}"
    )
    print(f"caller: {args.caller or 'clean'}; network: {args.network or 'none'}\n")
    header = (
        f"{'calls':>5} {'done':>5} {'inval':>5} {'fail':>4} {'chunks':>8} "
        f"{'min ms':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'worst':>7} "
        f"{'cli CPU':>7} {'us/call-s':>9} {'kernel':>6} {'KiB/call':>8} "
        f"{'post ms':>7} {'lag ms':>6} {'apart':>5} "
        f"{'srv CPU':>7} {'psi':>5} {'preempt':>7}"
    )
    print(header)
    rows = []
    config = SERVER_CONFIG
    if args.agent == "sink":
        config = {
            "agent": {"mode": "sink", "reply_every_s": args.reply_every, "read_batch_ms": args.read_batch_ms}
        }
    with ServerProcess(config) as server:
        server_pid = server._proc.pid  # noqa: SLF001 - the bench reads the server's CPU time
        if args.pin:
            os.sched_setaffinity(server_pid, {0})
        for level in [int(x) for x in args.levels.split(",")]:
            cmd = [
                sys.executable,
                __file__,
                "--level",
                str(level),
                "--api-url",
                server.api_url,
                "--api-key",
                server.api_key,
                "--hold",
                str(args.hold),
                "--ramp",
                str(args.ramp),
                "--chunk-ms",
                str(args.chunk_ms),
                "--event-loop",
                args.event_loop,
                "--agent",
                args.agent,
            ]
            if args.profile:
                cmd += ["--profile", f"{args.profile}.{level}"]
            for option, given in (("--caller", args.caller), ("--network", args.network)):
                if given is not None:
                    cmd += [option, given]
            pin = (lambda: os.sched_setaffinity(0, {1})) if args.pin else None
            server_cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
            done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pin, cwd=ROOT)
            server_cpu = (cpu_seconds(server_pid) - server_cpu0) / (time.monotonic() - t0)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"level {level}: the client process failed")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["server_cpu_pct"] = round(100 * server_cpu, 1)
            rows.append(row)
            print(
                f"{row['calls']:>5} {row['completed']:>5} {row['invalid']:>5} {row['failed']:>4} "
                f"{row['chunks']:>8} {row['min_ms']:>7.2f} {row['p50_ms']:>7.2f} "
                f"{row['p99_ms']:>7.2f} {row['max_ms']:>7.1f} "
                f"{row['worst_call_p99_ms']:>7.2f} {row['client_cpu_pct']:>6.1f}% "
                f"{row['cpu_us_per_call_s']:>9.0f} {row['sys_us_per_call_s']:>6.0f} "
                f"{row['rss_kib_per_call']:>8.0f} "
                f"{row['post_ms_per_call']:>7.3f} {row['loop_lag_max_ms']:>6.1f} {row['set_apart']:>5} "
                f"{row['server_cpu_pct']:>6.1f}% "
                f"{row['cpu_pressure_pct']:>4.0f}% {row['preempted']:>7}",
                flush=True,
            )
            if row["network_p50_ms"] is not None:
                print(
                    f"      network delay (release - due, not in the lateness): p50 "
                    f"{row['network_p50_ms']:.1f} ms, p99 {row['network_p99_ms']:.1f} ms, "
                    f"max {row['network_max_ms']:.1f} ms"
                )
            if row["details"]:
                print(f"      not completed: {', '.join(row['details'])}")
            time.sleep(2.0)  # let the server finish the last calls' teardown
    held = [
        r["calls"]
        for r in rows
        if r["p99_ms"] is not None and r["p99_ms"] <= args.limit_ms and r["invalid"] == 0 and r["failed"] == 0
    ]
    load = os.getloadavg()
    print(
        f"\nlargest concurrency with pacer p99 <= {args.limit_ms:g} ms and no invalid call: "
        f"{max(held) if held else 0}"
    )
    print(f"(load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")


if __name__ == "__main__":
    main()
