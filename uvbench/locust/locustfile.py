"""The ready locustfile: a scenario file's calls as locust users.

    locust -f $(python -c "import uvbench.locust as l; print(l.locustfile_path())") \
        --uvbench-scenario scenarios/quickstart.yaml --headless -u 10 -r 2 -t 1m
    uvbench locust scenarios/quickstart.yaml --headless -u 10 -r 2 -t 1m     # the same

Without -u, the scenario file's `load:` (constant or ramping VUs) shapes the test.
"""

# ScenarioShape: the scenario's `load:` as locust's shape, or locust's -u/-r/-t when given.
from uvbench.locust import ScenarioShape, UltravoxUser  # noqa: F401


class ScenarioUser(UltravoxUser):
    """Runs --uvbench-scenario's calls back to back."""
