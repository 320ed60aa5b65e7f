"""uvbench in locust: `from uvbench.locust import UltravoxUser` (and `ScenarioShape`).

Importing those imports locust, which patches the process with gevent; the rest of this package
(the call engine, the request mapping, the stage conversion) must not, so they are loaded only
when asked for by name.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ScenarioShape", "UltravoxUser", "locustfile_path"]


def locustfile_path() -> str:
    """The ready locustfile: `locust -f <this> --uvbench-scenario scenarios/x.yaml`."""
    from pathlib import Path

    return str(Path(__file__).with_name("locustfile.py"))


def __getattr__(name: str) -> Any:
    if name in ("UltravoxUser", "ScenarioShape"):
        from uvbench.locust import user

        return getattr(user, name)
    raise AttributeError(f"module 'uvbench.locust' has no attribute {name!r}")
