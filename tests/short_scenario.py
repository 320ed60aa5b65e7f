"""The shortest real call the runner tests use: the greeting, one spoken turn answered, hang up."""

from __future__ import annotations

from pathlib import Path


def short_scenario(name: str, *, target: str | None = None, record: str = "none") -> str:
    lines = [f"name: {name}"]
    if target:
        lines.append(f"target: {target}")
    lines += [
        "call:",
        '  experimentalSettings: {uvbench: {agent: {greeting: "Hi.", replies: ["Okay."]}}}',
        f"client: {{record: {record}, ping_interval: 0}}",
        "script:",
        "  - wait_for: agent_done",
        "  - say: hello_16k.wav",
        "  - wait_for: agent_done",
        "  - hang_up",
    ]
    return "\n".join(lines) + "\n"


def write_short_scenario(folder: Path, name: str, *, target: str | None = None, record: str = "none") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(short_scenario(name, target=target, record=record))
    return path
