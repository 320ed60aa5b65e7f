"""The local server in a child process: the embedded default target of `uvbench run`.

A separate process, not a thread: the client's timestamps must not wait on the server's work
(one interpreter lock, one event loop), or every latency it measures would include the server's
own scheduling. On Linux both processes stamp events on the same CLOCK_MONOTONIC.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from uvbench import lifeline
from uvbench.server.config import generate_api_key

_URL = re.compile(r"listening on (http://\S+)")


class ServerProcessError(RuntimeError):
    pass


class ServerProcess:
    """`uvbench serve` on a free loopback port, stopped on exit.

    with ServerProcess({"agent": {"latency": {"kind": "fixed", "ms": 300}}}) as server:
        server.base_url, server.api_key
    """

    def __init__(self, config: dict[str, Any] | None = None, *, startup_timeout_s: float = 30.0) -> None:
        self.config = dict(config or {})
        self.api_key = self.config.pop("api_key", None) or generate_api_key()
        self.startup_timeout_s = startup_timeout_s
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._config_file: Path | None = None
        self._log: Any = None

    @property
    def api_url(self) -> str:
        return self.base_url + "/api"

    def start(self) -> ServerProcess:
        args = [sys.executable, "-m", "uvbench", "serve", "--port", "0"]
        if self.config:
            handle, name = tempfile.mkstemp(prefix="uvbench-server-", suffix=".yaml")
            with os.fdopen(handle, "w") as f:
                yaml.safe_dump(self.config, f)
            self._config_file = Path(name)
            args += ["--config", name]
        env = dict(os.environ, UVBENCH_SERVER_API_KEY=self.api_key, **lifeline.parent_env())
        # The server's log goes to a file: a pipe nobody reads would fill and stall the server.
        self._log = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        match = _URL.search(line)
        if not match:
            self.stop()
            self._log.seek(0)
            err = self._log.read().strip().splitlines()
            reason = err[-1] if err else line.strip() or "no output"
            raise ServerProcessError(f"the local server did not start: {reason}")
        self.base_url = match.group(1)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._config_file is not None:
            self._config_file.unlink(missing_ok=True)
            self._config_file = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
