"""The project's docs: docs/metrics.md names every figure, rate and outcome the code has, and no doc
points outside the repository (a user who clones it has nothing beside it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from uvbench.metrics import call as call_metrics
from uvbench.metrics.aggregate import RATES
from uvbench.metrics.call import GLOSSARY

ROOT = Path(__file__).resolve().parents[1]
METRICS_MD = ROOT / "docs" / "metrics.md"
OUTSIDE = ("../shared", "METRICS.md", "DESIGN.md", "CONVENTIONS.md")
"""What only the team's own notes beside the repository are called (case-sensitive: the project's
docs/metrics.md is fine)."""
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _metrics_md() -> str:
    return METRICS_MD.read_text(encoding="utf-8")


def _docs() -> list[Path]:
    """README.md and every text file under docs/ (the examples included)."""
    files = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").rglob("*") if p.is_file())
    return [p for p in files if b"\0" not in p.read_bytes()[:4096]]


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_every_glossary_figure_is_documented() -> None:
    text = _metrics_md()
    missing = [name for name in GLOSSARY if f"`{name}`" not in text]
    assert not missing, f"docs/metrics.md does not describe {missing}: add them to its figure tables"


def test_the_figures_of_this_issue_are_in_the_glossary_and_documented() -> None:
    # The whole-call audio heard is the denominator of the underflow headline: it must be defined.
    text = _metrics_md()
    for name in ("call.agent_audio_ms", "call.underflow_count", "turn.ttfa_ms", "interrupt.silence_ms"):
        assert name in GLOSSARY, name
        assert f"`{name}`" in text, name


def test_every_rate_is_documented_with_its_parts() -> None:
    text = _metrics_md()
    rows = {
        m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_.]+)` \|[^\n]*\|$", text, flags=re.MULTILINE)
    }
    for name in RATES:
        assert name in rows, f"docs/metrics.md has no row for the rate {name}"
        assert rows[name].count("|") >= 4, f"the row of {name} lacks a numerator or a denominator"


def test_every_outcome_is_documented() -> None:
    # The outcomes are the literals `compute` returns: a new failure reason must come with its words.
    source = Path(call_metrics.__file__).read_text(encoding="utf-8")
    outcomes = set(re.findall(r'"((?:failed|invalid):[a-z_]+)"', source)) | {"completed", "interrupted"}
    assert {"failed:missed_turn", "invalid:generator_overloaded"} <= outcomes
    text = _metrics_md()
    table = text[text.index("### Outcomes") :]
    missing = sorted(o for o in outcomes if f"`{o}`" not in table)
    assert not missing, f"docs/metrics.md's outcomes table does not describe {missing}"


def test_metrics_md_has_a_timeline_picture_of_a_turn_and_a_barge_in() -> None:
    text = _metrics_md()
    picture = text[text.index("## A turn and a barge-in on one timeline") :]
    picture = picture[picture.index("```text") : picture.index("```\n", picture.index("```text") + 7)]
    for marker in ("t_ss", "t_se", "t_bi", "t_be", "ttfa_ms", "ttfb_ms", "clear_ms", "silence_ms"):
        assert marker in picture, marker


def test_metrics_md_links_to_its_own_sections() -> None:
    text = _metrics_md()
    anchors = {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.MULTILINE)}
    targets = [t[1:] for t in _LINK.findall(text) if t.startswith("#")]
    assert targets, "docs/metrics.md links to none of its sections"
    broken = sorted({t for t in targets if t not in anchors})
    assert not broken, f"docs/metrics.md links to sections it does not have: {broken}"


def test_metrics_md_tables_have_as_many_cells_in_each_row_as_in_their_header() -> None:
    # A `|` inside a cell (even in a code span) splits it, and the row no longer lines up.
    table: list[str] = []
    for line in [*_metrics_md().splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            width = table[0].count("|")
            wrong = [row for row in table if row.count("|") != width]
            assert not wrong, f"rows of a table under {table[0]!r} have other widths: {wrong}"
        table = []


def _sources() -> list[Path]:
    """The package's and the benchmarks' code, the scenarios and the CI script: their docstrings,
    comments and messages are docs too, for contributors and users."""
    found = [*sorted((ROOT / "uvbench").rglob("*.py")), *sorted((ROOT / "bench").rglob("*.py"))]
    found += sorted((ROOT / "scenarios").glob("*.yaml"))
    return [*found, ROOT / ".ci" / "run", ROOT / "pyproject.toml"]


@pytest.mark.parametrize("path", _docs() + _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_doc_points_outside_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for name in OUTSIDE:
        for number, line in enumerate(text.splitlines(), 1):
            assert name not in line, (
                f"{path.relative_to(ROOT)}:{number} refers to {name}, which is not shipped"
            )


@pytest.mark.parametrize("path", [p for p in _docs() if p.suffix == ".md"], ids=lambda p: p.name)
def test_relative_links_of_docs_stay_inside_the_repository_and_exist(path: Path) -> None:
    for target in _LINK.findall(path.read_text(encoding="utf-8")):
        if target.startswith(("#", "http://", "https://", "mailto:")):
            continue
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{path.name} links outside the repository: {target}"
        assert resolved.exists(), f"{path.name} links to a missing file: {target}"


def test_readme_links_to_the_metrics_reference() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/metrics.md)" in readme
