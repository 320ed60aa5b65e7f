"""uvbench inside locust: `UltravoxUser`, `ScenarioShape`, and the event listeners that wire them.

    from uvbench.locust import UltravoxUser

    class Booking(UltravoxUser):
        scenario = "scenarios/booking.yaml"     # or --uvbench-scenario on locust's command line

Each user is a k6 VU: it runs the scenario's calls back to back (matrix variants in turn). The calls
themselves run in the process's call engine (`uvbench.locust.engine`, asyncio in a child process);
the user's greenlet asks for a call, waits for its record, and fires the record's request events
(`uvbench.locust.requests`) into locust's stats.

Roles, as locust has them:
- locust alone (a LocalRunner) does everything below in one process;
- the master loads the scenarios, starts the local server when a scenario needs it, creates the
  run folder at each test start and tells the workers where (custom options travel with locust's
  spawn message), receives every record, and writes the report and the verdict at the end;
- each worker starts its engine when locust starts, hands it the scenarios at test start, and
  sends each record to the master with the call's files (timeline, recordings) as the call is
  measured; the master writes them into its run folder, so the folder is whole wherever the
  workers run.

Thresholds (the files' and --uvbench-threshold) are judged at the end on uvbench's records and set
locust's exit code (1 when one fails, 0 when all pass); a run that measured nothing exits 3.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from locust import User, constant, events, task
from locust.runners import MasterRunner, WorkerRunner
from locust.shape import LoadTestShape

from uvbench.locust.bridge import CallLost, EngineProcess
from uvbench.locust.collect import RunCollector
from uvbench.locust.requests import UvbenchFailure, requests_of, stats_tables_lines
from uvbench.locust.stages import NotAShape, ShapePlan

STARTED, RECORD, LOST = "uvbench:started", "uvbench:record", "uvbench:lost"
STOPPED, DRAIN = "uvbench:stopped", "uvbench:drain"
MASTER_FINISH_GRACE_S = 10.0
"""After a stop, how long the master waits for every worker's last records before writing the
report without them (a worker that died never sends them)."""


class ConfigProblem(Exception):
    """Bad input found at startup: printed as lines, locust exits 2."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0] if lines else "")
        self.lines = lines


# ------------------------------------------------------------------------------------------------
# Command line


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    # On the parser itself, not a group: only its add_argument knows include_in_web_ui.
    parser.add_argument(
        "--uvbench-scenario",
        "--scenario",
        dest="uvbench_scenario",
        default="",
        env_var="LOCUST_UVBENCH_SCENARIO",
        # Loaded once at startup (its local server started, its thresholds read): not a web form field.
        include_in_web_ui=False,
        help="the scenario or suite file the UltravoxUser runs (a class's `scenario` overrides it)",
    )
    parser.add_argument(
        "--uvbench-out",
        default="reports",
        env_var="LOCUST_UVBENCH_OUT",
        include_in_web_ui=False,
        help="folder for uvbench's run folder and report.html (default reports/)",
    )
    parser.add_argument(
        "--uvbench-record",
        default="",
        choices=("", "all", "failed", "none"),
        include_in_web_ui=False,
        help="which calls keep their recordings (all, failed, none): overrides the scenarios' client.record",
    )
    parser.add_argument(
        "--uvbench-threshold",
        action="append",
        default=[],
        include_in_web_ui=False,
        help="a k6-style gate on uvbench's figures, e.g. 'turn.ttfa_ms: p(95) < 1200'; repeatable",
    )
    # Set by the master and carried to the workers by locust's spawn message (not for users).
    parser.add_argument("--uvbench-local-server", default="", include_in_web_ui=False, help=argparse.SUPPRESS)


# ------------------------------------------------------------------------------------------------
# The user and the shape


class UltravoxUser(User):
    """A VU that runs uvbench scenario calls, one after another, in the process's call engine."""

    abstract = True
    wait_time = constant(0)
    scenario: str | None = None
    """A scenario or suite file (relative to the working directory); default --uvbench-scenario."""

    def on_start(self) -> None:
        self.uvbench = _session(self.environment)
        self.vu = next(self.uvbench.vus)

    @task
    def call(self) -> None:
        session = self.uvbench
        started = time.time()
        name, key = "uvbench", None
        try:
            index, attempt = session.next_call(type(self))
            name = session.scenarios[index].name
            engine = session.engine_for_calls()
            key = session.announce_start(self.vu)
            tags = {
                "attempt": attempt,
                "vu": self.vu,
                "iteration": next(session.iterations),
                "worker": session.worker_index,
                "started_at": started,
                "call_key": key,
            }
            record, files = engine.call(index, tags)
        except CallLost as exc:
            self.environment.events.request.fire(
                request_type="call",
                name=f"{name}:call",
                response_time=(time.time() - started) * 1000,
                response_length=0,
                response=None,
                context={"scenario": name, "vu": self.vu, "worker": session.worker_index},
                exception=UvbenchFailure("failed:lost", str(exc)),
                start_time=started,
            )
            session.deliver_lost(str(exc), key)
            if session.engine is None or session.engine.fatal or not session.plans:
                gevent.sleep(1.0)  # no engine to run calls: fail once a second, not in a busy loop
            return
        except gevent.GreenletExit:
            session.interrupted += 1
            session.deliver_lost("cancelled: locust stopped the user while its call ran", key, counted=True)
            raise
        for request in requests_of(record):
            self.environment.events.request.fire(
                request_type=request.request_type,
                name=request.name,
                response_time=request.response_time,
                response_length=0,
                response=None,
                context=request.context,
                exception=request.exception,
                start_time=started,
            )
        session.deliver(record, files)


class ScenarioShape(LoadTestShape):
    """The scenario file's `load:` (constant or ramping VUs) as locust users, k6's linear ramps
    kept (`uvbench.locust.stages`). With -u given, or no `load:` in the file, locust's own -u/-r
    (and -t) drive the test, as they would without a shape."""

    use_common_options = True
    plan: ShapePlan | None = None

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        run_time = getattr(options, "run_time", None)
        if run_time and self.get_run_time() >= run_time:  # with a shape, locust leaves -t to it
            return None
        if self.plan is None:
            return (getattr(options, "num_users", None) or 1, getattr(options, "spawn_rate", None) or 1.0)
        return self.plan.tick(self.get_run_time())


# ------------------------------------------------------------------------------------------------
# One session per locust process


class _Session:
    def __init__(self, environment: Any) -> None:
        self.environment = environment
        runner = environment.runner
        self.is_master = isinstance(runner, MasterRunner)
        self.is_worker = isinstance(runner, WorkerRunner)
        self.plans: dict[str, Any] = {}
        self.scenarios: list[Any] = []
        self._orders: dict[str, Any] = {}
        self._index_of: dict[int, int] = {}
        self.vus = itertools.count()
        self.iterations = itertools.count()
        self._call_numbers = itertools.count()
        self.interrupted = 0
        self.engine: EngineProcess | None = None
        self.collector: RunCollector | None = None
        self.targets: Any = None
        self.shape_plan: ShapePlan | None = None
        self.thresholds: list[Any] = []
        self.stopped_workers = 0
        self.workers_at_start = 0

    @property
    def options(self) -> Any:
        return self.environment.parsed_options

    @property
    def worker_index(self) -> int | None:
        return self.environment.runner.worker_index if self.is_worker else None

    # -- scenarios -------------------------------------------------------------------------------

    def scenario_paths(self) -> list[str]:
        """The option's file first, then each UltravoxUser class's own, without repeats."""
        paths = []
        default = getattr(self.options, "uvbench_scenario", "") or ""
        for user_class in self.environment.user_classes:
            if issubclass(user_class, UltravoxUser):
                path = user_class.scenario or default
                if not path:
                    raise ConfigProblem(
                        [
                            f"uvbench: {user_class.__name__} has no scenario: give --uvbench-scenario "
                            "scenarios/x.yaml, or set `scenario = ...` on the class"
                        ]
                    )
                paths.append(path)
        return list(dict.fromkeys(paths))

    def load_plans(self) -> None:
        from uvbench.scenario import ScenarioError
        from uvbench.scenario.plan import LoadConfigError, plan_run

        if self.plans:
            return
        for path in self.scenario_paths():
            try:
                plan = plan_run(path)
            except ScenarioError as exc:
                raise ConfigProblem(list(exc.problems)) from None
            except LoadConfigError as exc:
                raise ConfigProblem([f"uvbench: {path}: {exc}"]) from None
            if not plan.scenarios:
                raise ConfigProblem([f"uvbench: {path}: no scenario files (*.yaml) found there"])
            if len(plan.loads) > 1:
                raise ConfigProblem(
                    [
                        f"uvbench: {path}: a suite whose entries run in parallel, each with its own load, "
                        "is several loads; locust drives one: run it with `uvbench run`"
                    ]
                )
            self.plans[path] = plan
            first = len(self.scenarios)
            self.scenarios.extend(plan.scenarios)
            self._index_of.update((id(s), first + i) for i, s in enumerate(plan.scenarios))

    def path_of(self, user_class: type) -> str:
        return user_class.scenario or self.options.uvbench_scenario

    def next_call(self, user_class: type) -> tuple[int, int]:
        """The next (scenario index, attempt) for a user of this class: a plan's scenarios in turn,
        a suite's entries by weight, as `uvbench run` orders them."""
        from uvbench.runner.fanout import weighted_order, work_order

        path = self.path_of(user_class)
        order = self._orders.get(path)
        if order is None:
            plan = self.plans.get(path)
            if plan is None:  # its loading failed at test start, and said why then
                raise CallLost(f"scenario {path} is not loaded in this process")
            pools = plan.loads[0].pools
            if len(pools) > 1:
                order = weighted_order(pools, seed=None)
            else:
                order = work_order(plan.scenarios, 1, cycle=True, seed=None)
            self._orders[path] = order
        scenario, attempt = next(order)
        return self._index_of[id(scenario)], attempt

    def thresholds_of(self) -> list[Any]:
        from uvbench.metrics.thresholds import ThresholdError, parse_threshold_flags

        found: dict[tuple[str, str], Any] = {}
        for plan in self.plans.values():
            for threshold in plan.thresholds:
                found.setdefault((threshold.key, threshold.expression), threshold)
        flags = getattr(self.options, "uvbench_threshold", None) or []
        try:
            for threshold in parse_threshold_flags(flags, "--uvbench-threshold"):
                found.setdefault((threshold.key, threshold.expression), threshold)
        except ThresholdError as exc:
            raise ConfigProblem([f"uvbench: {problem}" for problem in exc.problems]) from None
        return list(found.values())

    def choose_shape(self) -> None:
        """Follow the option's file's `load:` unless -u was given (k6's tiers: the command line wins)."""
        shape = self.environment.shape_class
        if not isinstance(shape, ScenarioShape):
            return
        path = self.options.uvbench_scenario or next(iter(self.plans), "")
        plan = self.plans.get(path)
        if plan is None or getattr(self.options, "num_users", None):
            return
        has_load = plan.suite or any(s.load_spec is not None for s in plan.scenarios)
        if not has_load:
            return
        try:
            self.shape_plan = ShapePlan.of(plan.profile)
        except NotAShape as exc:
            raise ConfigProblem([f"uvbench: {path}: {exc}"]) from None
        shape.plan = self.shape_plan
        print(f"uvbench: locust follows the load of {path}: {plan.header()[0]}")

    # -- targets (master, or locust alone) -------------------------------------------------------

    def resolve_targets(self) -> None:
        from uvbench.runner.run import TargetError, Targets

        self.targets = Targets()
        try:
            for scenario in self.scenarios:
                endpoint = self.targets.endpoint(scenario)
                if endpoint.local:
                    self.options.uvbench_local_server = f"{endpoint.api_url} {endpoint.api_key}"
        except TargetError as exc:
            raise ConfigProblem([f"uvbench: {exc}"]) from None

    def endpoints(self) -> dict[str, Any]:
        """Each scenario's endpoint: the master's local server, or the target with this process's key."""
        from uvbench.runner.run import Endpoint, Targets

        local = (getattr(self.options, "uvbench_local_server", "") or "").split()
        remote = self.targets or Targets()
        out = {}
        for scenario in self.scenarios:
            if scenario.target.is_local:
                if len(local) != 2:
                    raise CallLost("no local server address from the master (is uvbench on the master?)")
                out[scenario.name] = Endpoint(local[0], local[1], "local", True)
            else:
                out[scenario.name] = remote.endpoint(scenario)
        return out

    # -- the run folder (master, or locust alone) ------------------------------------------------

    def open_run(self) -> None:
        if self.collector is not None and not self.collector.finished:
            self.finish()  # a new test in the web UI before the last one was written
        first = next(iter(self.plans.values()))
        load = first.load_json if self.shape_plan is not None else self._locust_load()
        self.collector = RunCollector.create(
            Path(self.options.uvbench_out),
            first.name if len(self.plans) == 1 else "locust",
            thresholds=self.thresholds,
            load=load,
            profile=self.shape_plan.profile if self.shape_plan else None,
        )
        self.stopped_workers = 0
        if self.is_master:
            self.workers_at_start = self.environment.runner.worker_count

    def _locust_load(self) -> dict[str, Any]:
        options = self.options
        return {
            "executor": "locust",
            "users": getattr(options, "num_users", None),
            "spawnRate": getattr(options, "spawn_rate", None),
            "runTime": getattr(options, "run_time", None),
        }

    def deliver(self, record: dict[str, Any], files: dict[str, bytes]) -> None:
        """A measured call to the run folder's owner: its record and its files (the timeline,
        recordings), which the owner writes into its run folder, wherever this process runs."""
        if self.is_worker:
            self.environment.runner.send_message(RECORD, {"record": record, "files": files})
        elif self.collector is not None:
            self.collector.add(record, files)

    def announce_start(self, vu: int) -> str:
        """Tell the run's owner a call starts (before it does), for its run-wide tags; its key."""
        key = f"{self.worker_index}:{next(self._call_numbers)}"
        if self.is_worker:
            self.environment.runner.send_message(STARTED, {"key": key, "worker": self.worker_index, "vu": vu})
        elif self.collector is not None:
            self.collector.call_started(key, None, vu)
        return key

    def deliver_lost(self, reason: str, key: str | None, *, counted: bool = False) -> None:
        """A call that gives no record. `counted`: an interrupted call, which the worker counts
        itself and reports with "stopped" (so only its end is told here)."""
        if self.is_worker:
            self.environment.runner.send_message(LOST, {"reason": reason, "key": key, "counted": counted})
        elif self.collector is not None:
            if counted:
                self.collector.call_ended(key)
            else:
                self.collector.lost(reason, key)

    def finish(self, collector: RunCollector | None = None) -> None:
        """Write the run's report once (only `collector`'s, when given: a timer set at one test's
        stop must not end the next test the web UI started meanwhile)."""
        if collector is not None and collector is not self.collector:
            return
        collector = self.collector
        if collector is None or collector.finished:
            return
        collector.interrupted_calls += self.interrupted
        self.interrupted = 0
        verdict = collector.finish()
        tables = stats_tables_lines(collector.path, getattr(self.options, "csv_prefix", None))
        for line in verdict.lines + tables:
            print(line)
        sys.stdout.flush()
        if verdict.exit_code is not None:
            self.environment.process_exit_code = verdict.exit_code

    # -- the engine (worker, or locust alone) ----------------------------------------------------

    def engine_for_calls(self) -> EngineProcess:
        if self.engine is None:
            raise CallLost("this locust process has no call engine")
        return self.engine

    def configure_engine(self) -> None:
        from uvbench.locust.engine import EngineSpec

        if self.engine is None:
            self.engine = EngineProcess()
        scenario_tags: dict[str, dict[str, Any]] = {}
        for plan in self.plans.values():
            scenario_tags.update(plan.scenario_tags)
        record = getattr(self.options, "uvbench_record", "") or None
        self.engine.configure(EngineSpec(self.scenarios, self.endpoints(), scenario_tags, record))


_SESSIONS: dict[int, _Session] = {}


def _session(environment: Any) -> _Session:
    session = _SESSIONS.get(id(environment))
    if session is None:
        session = _SESSIONS[id(environment)] = _Session(environment)
    return session


def _uses_uvbench(environment: Any) -> bool:
    return any(issubclass(c, UltravoxUser) for c in environment.user_classes or [])


def _fail_startup(problem: ConfigProblem) -> None:
    for line in problem.lines:
        print(line, file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(2)


# ------------------------------------------------------------------------------------------------
# Listeners


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    if not _uses_uvbench(environment):
        return
    session = _session(environment)
    if session.is_worker:
        session.engine = EngineProcess()  # start it now: its imports take a second or two
        environment.runner.register_message(DRAIN, lambda **kw: gevent.spawn(environment.runner.stop))
        return
    try:
        session.load_plans()
        session.thresholds = session.thresholds_of()
        session.choose_shape()
        session.resolve_targets()
    except ConfigProblem as problem:
        _fail_startup(problem)
    for plan in session.plans.values():
        for note in plan.notes:
            print(f"uvbench: note: {note}", file=sys.stderr)
    if session.is_master:
        runner = environment.runner
        for kind in (STARTED, RECORD, LOST):
            runner.register_message(kind, lambda msg, kind=kind, **kw: _from_worker(session, kind, msg.data))
        runner.register_message(STOPPED, lambda msg, **kw: _worker_stopped(session, msg.data))
    else:
        session.engine = EngineProcess()


def _from_worker(session: _Session, kind: str, data: Any) -> None:
    collector = session.collector
    if collector is None or collector.finished:
        return
    if kind == STARTED:
        collector.call_started(data["key"], data["worker"], data["vu"])
    elif kind == RECORD:
        collector.add(data["record"], data["files"])
    elif data.get("counted"):  # interrupted: the worker's "stopped" message counts it
        collector.call_ended(data.get("key"))
    else:
        collector.lost(data["reason"], data.get("key"))


def _worker_stopped(session: _Session, data: dict[str, Any]) -> None:
    if session.collector is None or session.collector.finished:
        return
    session.collector.interrupted_calls += int(data.get("interrupted", 0))
    session.stopped_workers += 1
    if session.stopped_workers >= session.workers_at_start:
        session.finish()


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    if id(environment) not in _SESSIONS:
        return
    session = _SESSIONS[id(environment)]
    if not session.is_worker:
        session.open_run()
    if not session.is_master:
        try:
            session.load_plans()
            session.configure_engine()
        except (ConfigProblem, CallLost) as exc:
            lines = exc.lines if isinstance(exc, ConfigProblem) else [f"uvbench: {exc}"]
            for line in lines:
                print(line, file=sys.stderr)


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_: Any) -> None:
    session = _SESSIONS.get(id(environment))
    if session is None:
        return
    if session.is_worker:
        environment.runner.send_message(STOPPED, {"interrupted": session.interrupted})
        session.interrupted = 0
    elif session.is_master:
        if environment.runner.user_count > 0:
            # Headless, locust stops the master, tells the workers to quit and waits only half a
            # second: calls still running (for --stop-timeout) would miss the report. So the
            # workers are stopped first, and their last records waited for here.
            environment.runner.send_message(DRAIN)
            deadline = time.monotonic() + MASTER_FINISH_GRACE_S + (environment.stop_timeout or 0)
            while session.collector and not session.collector.finished and time.monotonic() < deadline:
                gevent.sleep(0.1)
        grace = MASTER_FINISH_GRACE_S + (environment.stop_timeout or 0)
        gevent.spawn_later(grace, session.finish, session.collector)
    else:
        session.finish()


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    session = _SESSIONS.get(id(environment))
    if session is None:
        return
    session.finish()
    if session.engine is not None:
        session.engine.close()
    if session.targets is not None:
        session.targets.close()
