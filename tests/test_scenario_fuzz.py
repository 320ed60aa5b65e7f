"""Hostile and broken scenario and suite files: each is refused with one `file:line:col` line
through ScenarioError (and `uvbench run` exits 2 with it, leaving nothing behind), within the
loader's explicit limits, never a traceback. The property tests at the end keep it that way for
any bytes and for YAML built from the real scenario and suite keys."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uvbench.cli import main
from uvbench.scenario import (
    EXECUTORS,
    MEDIUM_SHORTHANDS,
    METRIC_NAMES,
    ClientSettings,
    Scenario,
    ScenarioError,
    load_scenarios,
    load_suite,
    parse_scenarios,
)
from uvbench.scenario.load_config import LOAD_KEYS
from uvbench.scenario.loader import (
    MAX_ALIAS_VALUES,
    MAX_EXPANDED_VALUES,
    MAX_FILE_BYTES,
    MAX_NESTING,
    MAX_SCENARIOS,
    is_suite_text,
)
from uvbench.scenario.model import CONDITION_KINDS, EXPECT_KINDS, STEP_KINDS
from uvbench.scenario.suite import Suite, SuiteEntry

BASE = "name: x\nscript: [hang_up]\n"


def refusal(tmp_path: Path, text: str | bytes, name: str = "x.yaml") -> str:
    """The one problem load_scenarios reports for a file, without the folder."""
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ScenarioError) as info:
        load_scenarios(path)
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0].removeprefix(f"{tmp_path}/")


# ------------------------------------------------------------------------------------------------
# Characters YAML refuses, and bytes that are not UTF-8


@pytest.mark.parametrize(
    ("char", "what"),
    [
        ("\x00", r"a NUL byte \(U\+0000\)"),
        ("\x07", r"a control character \(U\+0007\)"),
        ("\x1b", r"a control character \(U\+001B\)"),
        ("\x7f", r"a control character \(U\+007F\)"),
        ("\x9b", r"a control character \(U\+009B\)"),
        ("\ufffe", r"a noncharacter \(U\+FFFE\)"),
    ],
)
def test_a_control_character_is_refused_at_its_line_and_column(tmp_path, char, what):
    problem = refusal(tmp_path, BASE + f"description: ab{char}c\n")
    assert re.fullmatch(rf"x\.yaml:3:16: {what} is not allowed in a YAML file \(expected text: .*\)", problem)


def test_lines_are_counted_as_yaml_counts_them_and_tabs_and_crlf_are_fine(tmp_path):
    problem = refusal(tmp_path, "name: x\r\nscript: [hang_up]\r\n\tdescription: a\x00\n")
    assert problem.startswith("x.yaml:3:16: a NUL byte")  # CRLF is one line break, a tab one column
    (scenario,) = parse_scenarios("name: x\r\nscript: [hang_up]\r\ndescription: 'a\tb'\r\n")
    assert scenario.description == "a\tb"


def test_bytes_that_are_not_utf8_are_refused_at_their_place(tmp_path):
    problem = refusal(tmp_path, BASE.encode() + b"description: caf\xe9\n")
    assert (
        problem == "x.yaml:3:17: byte 0xe9 is not UTF-8 text (expected a UTF-8 YAML file: save it as UTF-8)"
    )


def test_a_file_over_the_size_limit_is_refused_naming_the_limit(tmp_path):
    text = BASE + "description: " + "a" * MAX_FILE_BYTES + "\n"
    problem = refusal(tmp_path, text)
    assert problem.startswith(
        f"x.yaml:1:1: the file is {len(text):,} bytes (expected at most {MAX_FILE_BYTES:,},"
    )
    with pytest.raises(ScenarioError, match="uvbench's limit for a scenario or suite file"):
        parse_scenarios(text)


# ------------------------------------------------------------------------------------------------
# Nesting and aliases


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_nesting_500_levels_deep_is_refused_at_the_first_level_past_the_limit(tmp_path, opener):
    closer = "]" if opener == "[" else "}"
    text = BASE + "variables:\n  v: " + opener * 500 + "1" + closer * 500 + "\n"
    problem = refusal(tmp_path, text)
    # the document's mapping and variables are two levels: the 63rd opener is the 65th
    column = 6 + 62 * len(opener)
    assert problem == (
        f"x.yaml:4:{column}: mappings and lists nested more than {MAX_NESTING} levels deep"
        f" (expected at most {MAX_NESTING}, uvbench's limit on nesting)"
    )


def test_nesting_up_to_the_limit_loads():
    (scenario,) = parse_scenarios(BASE + "variables: {v: " + "[" * 62 + "1" + "]" * 62 + "}\n")
    value = scenario.variables["v"]
    for _ in range(61):
        (value,) = value
    assert value == [1]


def billion_laughs(levels: int = 9) -> str:
    lines = [BASE + "variables:", '  l0: &l0 "lol"']
    for level in range(1, levels + 1):
        lines.append(f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(60)
def test_an_alias_bomb_is_refused_at_the_alias_that_passes_the_limit(tmp_path):
    text = billion_laughs()
    assert len(text) < 1024
    problem = refusal(tmp_path, text)
    # l1..l4 copy 9 + 90 + 819 + 7,380 values; l5's first *l4 (7,381 more) passes 10,000
    assert problem == (
        f"x.yaml:9:12: the alias *l4 brings the values aliases copy in this file past {MAX_ALIAS_VALUES:,}"
        f" (expected at most {MAX_ALIAS_VALUES:,}, uvbench's limit: reuse an anchor a few times, not"
        " aliases of aliases)"
    )


def test_aliases_copy_exactly_up_to_the_limit():
    block = "  a: &a [" + ", ".join(["1"] * 99) + "]\n"  # the list and its 99 items: 100 values
    uses = MAX_ALIAS_VALUES // 100
    (scenario,) = parse_scenarios(BASE + "variables:\n" + block + "  b: [" + ", ".join(["*a"] * uses) + "]\n")
    assert len(scenario.variables["b"]) == uses and scenario.variables["b"][0] == [1] * 99
    with pytest.raises(ScenarioError, match=r"the alias \*a brings the values aliases copy"):
        parse_scenarios(BASE + "variables:\n" + block + "  b: [" + ", ".join(["*a"] * (uses + 1)) + "]\n")


def test_ordinary_anchors_aliases_and_merge_keys_still_work():
    (scenario,) = parse_scenarios(
        BASE + "variables:\n"
        "  base: &base {lang: en, voices: [a, b]}\n"
        "  same: *base\n"
        "  more: {<<: *base, lang: fr}\n"
        "---\n"  # anchors are per document
        "name: y\nscript: [hang_up]\nvariables: {base: &base 1, again: *base}\n"
    )[:1]
    assert scenario.variables == {
        "base": {"lang": "en", "voices": ["a", "b"]},
        "same": {"lang": "en", "voices": ["a", "b"]},
        "more": {"lang": "fr", "voices": ["a", "b"]},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE + "variables: {v: &v [1, *v]}\n",
            "x.yaml:3:23: the alias *v is inside the value &v names (expected no recursive aliases)",
        ),
        (
            BASE + "variables:\n  deep: &d " + "[" * 60 + "]" * 60 + "\n  v: [[[[*d]]]]\n",
            f"x.yaml:5:10: the alias *d nests mappings and lists more than {MAX_NESTING} levels deep"
            f" (expected at most {MAX_NESTING}, uvbench's limit on nesting)",
        ),
    ],
)
def test_recursive_or_too_deep_aliases_are_refused_at_the_alias(tmp_path, text, expected):
    assert refusal(tmp_path, text) == expected


# ------------------------------------------------------------------------------------------------
# Matrix size


@pytest.mark.timeout(60)
def test_a_matrix_of_a_million_variants_is_refused_before_it_is_expanded(tmp_path):
    axis = "[" + ", ".join(str(60 + i) for i in range(100)) + "]"
    text = (
        BASE + f"matrix: {{clientBufferSizeMs: {axis}, inputSampleRate: {axis}, outputSampleRate: {axis}}}\n"
    )
    assert refusal(tmp_path, text) == (
        f"x.yaml:3:1: matrix: 100 x 100 x 100 = 1,000,000 variants, more than uvbench loads from one file"
        f" (expected at most {MAX_SCENARIOS:,}, uvbench's limit: fewer values per setting, or the scenarios"
        " split across files)"
    )


def test_the_scenario_limit_counts_every_document_of_the_file_before_validating_any(tmp_path):
    def matrix(*sizes: int) -> str:
        axes = ("clientBufferSizeMs", "description")[: len(sizes)]
        swept = [
            f"{axis}: [{', '.join(str(60 + v) for v in range(n))}]"
            for axis, n in zip(axes, sizes, strict=True)
        ]
        return f"matrix: {{{', '.join(swept)}}}\n"

    first = BASE + matrix(7, 11)
    second = "name: y\nscript: [hang_up]\n" + matrix(13)
    assert len(load_scenarios(_write(tmp_path, "ok.yaml", first + "---\n" + second))) == 77 + 13
    documents = "---\n".join([first] * 12 + [second] * 6)  # the sixth y: 12 * 77 + 6 * 13 = 1,002
    assert refusal(tmp_path, documents) == (
        "x.yaml:71:1: matrix: 13 variants, 1,002 scenarios with the file's earlier documents, more than"
        f" uvbench loads from one file (expected at most {MAX_SCENARIOS:,}, uvbench's limit: fewer values"
        " per setting, or the scenarios split across files)"
    )
    many = "".join(f"---\nname: s{i}\nscript: [hang_up]\n" for i in range(MAX_SCENARIOS + 1))
    assert refusal(tmp_path, many).startswith(
        f"x.yaml:{3 * MAX_SCENARIOS + 2}:1: this document is scenario 1,001 of the file, more than uvbench"
    )


def test_a_large_document_allows_fewer_variants(tmp_path):
    big = BASE + "variables: {v: [" + ", ".join(["1"] * 4999) + "]}\n"  # 5,000 values and a few more
    axis = "[" + ", ".join(str(60 + i) for i in range(400)) + "]"
    problem = refusal(tmp_path, big + f"matrix: {{clientBufferSizeMs: {axis}}}\n")
    assert re.fullmatch(
        r"x\.yaml:4:1: matrix: 400 variants of this 5,\d{3}-value document are 2,\d{3},\d{3} values to copy"
        rf" and validate \(expected at most {MAX_EXPANDED_VALUES:,}, uvbench's limit: .*\)",
        problem,
    )


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------
# Where an unclosed quote or bracket is reported, and scalars YAML cannot build


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE + 'description: "abc\nvariables: {a: 1}\n\n\n',
            "x.yaml:3:14: invalid YAML: the quoted value that opens here is never closed (the end of the file"
            ' on line 7 comes first; expected a closing ")',
        ),
        (
            BASE + "description: 'abc\n---\nname: y\n",
            "x.yaml:3:14: invalid YAML: the quoted value that opens here is never closed (the document"
            ' separator "---" on line 4 comes first; expected a closing \')',
        ),
        (
            BASE + "variables: {a: 1\n\n\nclient: {}\n",
            "x.yaml:3:12: invalid YAML: in the {...} that opens here, expected ',' or '}', but got ':' at"
            " line 6, column 7 (expected items separated by , and a closing })",
        ),
        (
            "name: x\nscript: [\n",
            "x.yaml:2:9: invalid YAML: in the [...] that opens here, expected the node content, but found"
            " '<stream end>' at line 3, column 1 (expected items separated by , and a closing ])",
        ),
        (
            "name: x\nscript\nclient: {}\n",
            "x.yaml:2:1: invalid YAML: could not find expected ':' after the key that starts here"
            " (expected key: value)",
        ),
    ],
)
def test_an_unclosed_quote_or_bracket_is_reported_where_it_opens(tmp_path, text, expected):
    assert refusal(tmp_path, text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-13-45", '"2024-13-45" reads as a date but is not a valid one: month must be in 1..12'),
        (
            "1" * 5000,
            '"1111111111111111111111111111111111111111..." reads as a whole number but is not a valid one:'
            " more than 4300 digits",
        ),
        ("!!int nine", '"nine" reads as a whole number but is not a valid one'),
        ("!!float ''", '"" reads as a number but is not a valid one'),
        ("!!bool maybe", '"maybe" reads as a boolean but is not a valid one'),
        ("!!timestamp soon", '"soon" reads as a date but is not a valid one'),
    ],
)
def test_a_scalar_yaml_cannot_build_is_one_line(tmp_path, value, expected):
    problem = refusal(tmp_path, BASE + f"variables: {{v: {value}}}\n")
    assert problem == (
        f"x.yaml:3:16: variables.v: {expected} (expected a valid one, or quotes around it to keep it as text)"
    )


def test_dates_and_binary_values_substitute_into_text():
    (scenario,) = parse_scenarios(
        BASE + "variables: {day: 2024-01-02, days: [2024-01-03], raw: !!binary aGk=}\n"
        'description: "${day} ${days} ${raw}"\n'
    )
    assert scenario.description == "2024-01-02 [\"2024-01-03\"] b'hi'"


# ------------------------------------------------------------------------------------------------
# Through the command line: exit 2, one line per problem, no run folder


@pytest.mark.parametrize(
    ("text", "start"),
    [
        (BASE + "description: a\x00b\n", "x.yaml:3:15: a NUL byte (U+0000)"),
        (BASE + "variables: {v: " + "[" * 500 + "]" * 500 + "}\n", "x.yaml:3:78: mappings and lists nested"),
        (billion_laughs(), "x.yaml:9:12: the alias *l4 brings"),
        (
            BASE + "matrix: {clientBufferSizeMs: [" + ",".join(map(str, range(60, 1061))) + "]}\n",
            "x.yaml:3:1: matrix: 1,001 variants, more than uvbench loads",
        ),
        (BASE + 'description: "abc\n\n', "x.yaml:3:14: invalid YAML: the quoted value that opens here"),
    ],
)
def test_uvbench_run_refuses_each_with_one_line_and_leaves_no_run_folder(tmp_path, capsys, text, start):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].removeprefix(f"{tmp_path}/").startswith(start), err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# Properties: any input loads or is refused with located one-line problems, nothing else

_YAML_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
_LOCATION = re.compile(r"([0-9]+):([0-9]+): \S")


def assert_located(problems: list[str], files: dict[str, str]) -> None:
    """Every problem is one line, `file:line:col: text`, for a known file and a line inside it."""
    assert problems
    for problem in problems:
        assert "\n" not in problem and "\r" not in problem, problem
        source = next((name for name in files if problem.startswith(name + ":")), None)
        assert source is not None, problem
        where = _LOCATION.match(problem, len(source) + 1)
        assert where is not None, problem
        line, column = int(where[1]), int(where[2])
        assert 1 <= line <= len(_YAML_LINE_BREAK.findall(files[source])) + 1 and column >= 1, problem


def load_file_or_refuse(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        scenarios = load_scenarios(path)
    except ScenarioError as exc:
        assert_located(exc.problems, {str(path): data.decode("utf-8", "replace")})
    else:
        assert scenarios and all(isinstance(s, Scenario) for s in scenarios)


def parse_text_or_refuse(text: str) -> None:
    assert is_suite_text(text) in (True, False)
    try:
        scenarios = parse_scenarios(text, source="fuzz.yaml")
    except ScenarioError as exc:
        assert_located(exc.problems, {"fuzz.yaml": text})
    else:
        assert scenarios and all(isinstance(s, Scenario) for s in scenarios)


# Derandomized: the same examples every run, so CI cannot turn red by luck. 150 examples each, 80
# where most examples validate whole scenarios, keep the file near 20 s on a busy two-core machine.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FUZZ_VALIDATING = settings(FUZZ, max_examples=80)

WORDS = [
    *STEP_KINDS,
    *CONDITION_KINDS,
    *EXPECT_KINDS,
    *EXECUTORS,
    *MEDIUM_SHORTHANDS,
    *list(METRIC_NAMES)[:6],
    *("hello_16k.wav", "missing.wav", "1s", "200ms", "2m", "-1s", "${v}", "$${v}", "${nope}", "local"),
    *("ultravox", "listening", "p(95) < 1200", "rate < 0.01", "all", "none", "agent", "serverWebSocket"),
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(),
    st.sampled_from(WORDS),
    st.text(max_size=12),
)
SCENARIO_KEYS = [info.alias or name for name, info in Scenario.model_fields.items()]
NESTED_KEYS = [
    *SCENARIO_KEYS,
    *ClientSettings.model_fields,
    *LOAD_KEYS,
    *STEP_KINDS,
    *CONDITION_KINDS,
    *EXPECT_KINDS,
    *("executor", "rate", "timeUnit", "target", "startVUs", "maxVUs", "medium", "serverWebSocket"),
    *("systemPrompt", "selectedTools", "experimentalSettings", "speech", "start", "end", "after"),
    *("timeout", "role", "with", "result", "error", "delay", "<", "<=", "turn", "base_url", "api_key_env"),
]
KEYS = st.one_of(st.sampled_from(NESTED_KEYS), st.text(max_size=8))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=16,
)
STEPS = st.one_of(
    st.sampled_from([*STEP_KINDS, *CONDITION_KINDS]),
    st.dictionaries(st.sampled_from([*STEP_KINDS, *NESTED_KEYS]), VALUES, min_size=1, max_size=3),
)
MATRIX = st.dictionaries(
    st.one_of(st.sampled_from([*MEDIUM_SHORTHANDS, "client.chunk_ms", "script.0", "call.x", "name"]), KEYS),
    st.lists(SCALARS, max_size=3) | SCALARS,
    max_size=3,
)
SCENARIO_DOCUMENTS = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["a", "b-1", "x_y"]), SCALARS), "script": st.lists(STEPS, max_size=4)},
    optional={
        **{key: VALUES for key in SCENARIO_KEYS if key not in ("name", "script", "matrix")},
        "matrix": MATRIX,
        "client": st.dictionaries(st.sampled_from(list(ClientSettings.model_fields)), SCALARS, max_size=3),
        "load": st.dictionaries(st.sampled_from(NESTED_KEYS), VALUES, max_size=4)
        | st.builds(dict, executor=st.sampled_from(EXECUTORS), vus=SCALARS, duration=SCALARS),
    },
)
# Edits that break YAML in the ways people and tools do: unclosed brackets and quotes, stray
# anchors, aliases and tags, tabs, control characters, cut-off text.
BREAKS = [
    *("{", "[", "}", "]", '"', "'", ":", ": ", "- ", "\n  ", "\t", "&a ", "*a", "<<: *a", "!!int "),
    *("!!str ", "? ", "|", ">", "%", "@", "`", "---\n", "\x00", "\x85", "\u2028", "#", ",", "${", "\\"),
]


@st.composite
def broken(draw: st.DrawFn, text: str) -> str:
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "cut"]))
        if edit == "insert":
            text = text[:at] + draw(st.sampled_from(BREAKS)) + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at]
    return text


def dumped(document: dict, flow: bool) -> str:
    return yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True, sort_keys=False)


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_load_or_are_refused_with_located_lines(tmp_path, data):
    load_file_or_refuse(tmp_path / "fuzz.yaml", data)


@FUZZ_VALIDATING
@given(st.lists(SCENARIO_DOCUMENTS, min_size=1, max_size=2), st.booleans(), st.data())
def test_yaml_of_scenario_keys_loads_or_is_refused_with_located_lines(documents, flow, data):
    text = "---\n".join(dumped(document, flow) for document in documents)
    parse_text_or_refuse(data.draw(broken(text)))


@FUZZ
@given(st.lists(st.sampled_from([*BREAKS, "a", "b", "1", " ", "\n"]), max_size=30).map("".join))
def test_yaml_punctuation_soup_loads_or_is_refused_with_located_lines(text):
    parse_text_or_refuse(BASE + text)


EXAMPLES = Path(__file__).resolve().parent.parent / "scenarios"


@FUZZ
@given(st.sampled_from(["quickstart.yaml", "buffer_matrix.yaml"]), st.data())
def test_the_example_scenarios_with_random_edits_load_or_are_refused_with_located_lines(name, data):
    text = data.draw(broken((EXAMPLES / name).read_text()))
    try:
        scenarios = parse_scenarios(text, source="fuzz.yaml", base_dir=EXAMPLES)
    except ScenarioError as exc:
        assert_located(exc.problems, {"fuzz.yaml": text})
    else:
        assert scenarios and all(isinstance(s, Scenario) for s in scenarios)


SUITE_FILES = {
    "good.yaml": BASE,
    "sweep.yaml": "name: s\nscript: [hang_up]\nmatrix: {clientBufferSizeMs: [60, 500]}\nvus: 2\n",
    "broken.yaml": "name: b\nscript: [{wiat_for: agent_done}]\n",
    "two.yaml": BASE + "---\nname: y\nscript: [hang_up]\n",
    "junk.yaml": "name: j\x00\n",
    "deep.yaml": BASE + "variables: {v: " + "[" * 80 + "]" * 80 + "}\n",
    "inner_suite.yaml": "scenarios: {a: {file: good.yaml}}\n",
}
ENTRY_FILES = st.one_of(
    st.sampled_from([*SUITE_FILES, "suite.yaml", "missing.yaml", ".", ".."]),
    st.text(alphabet=string.ascii_lowercase + "._-", max_size=10),
    SCALARS,
)
ENTRIES = st.fixed_dictionaries(
    {"file": ENTRY_FILES},
    optional={
        "weight": SCALARS,
        "load": VALUES | st.builds(dict, executor=st.sampled_from(EXECUTORS), vus=SCALARS, duration=SCALARS),
        "startTime": SCALARS,
        "tags": st.dictionaries(KEYS, SCALARS, max_size=3),
        **{key: VALUES for key in ("fiel", "script", "vus")},
    },
)
SUITE_DOCUMENTS = st.fixed_dictionaries(
    {
        "scenarios": st.dictionaries(
            st.sampled_from(["a", "b", "c-1", "Bad Name"]) | KEYS, ENTRIES, max_size=4
        )
    },
    optional={
        **{
            key: VALUES
            for key in (info.alias or name for name, info in Suite.model_fields.items())
            if key != "scenarios"
        },
        **{key: VALUES for key in SuiteEntry.model_fields},
    },
)


@pytest.fixture(scope="module")
def suite_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("suite")
    for name, text in SUITE_FILES.items():
        (folder / name).write_text(text)
    return folder


@FUZZ_VALIDATING
@given(SUITE_DOCUMENTS, st.booleans(), st.data())
def test_suites_of_suite_keys_load_or_are_refused_with_located_lines(suite_folder, document, flow, data):
    path = suite_folder / "suite.yaml"
    text = data.draw(broken(dumped(document, flow)))
    path.write_text(text)
    files = {str(path): text} | {str(suite_folder / name): body for name, body in SUITE_FILES.items()}
    try:
        loaded = load_suite(path)
    except ScenarioError as exc:
        assert_located(exc.problems, files)
    else:
        assert loaded.entries and all(entry.scenarios for entry in loaded.entries)


# ------------------------------------------------------------------------------------------------
# A folder as a whole, thousands of problems, and paths that are not files


def test_a_folder_is_bounded_as_a_suite_is(tmp_path):
    axis = "[" + ", ".join(str(60 + i) for i in range(400)) + "]"
    for name in ("a", "b", "c"):  # 400 variants each: within a file's limit, not together
        _write(
            tmp_path,
            f"{name}.yaml",
            f"name: {name}\nscript: [hang_up]\nmatrix: {{clientBufferSizeMs: {axis}}}\n",
        )
    with pytest.raises(ScenarioError) as info:
        load_scenarios(tmp_path)
    assert info.value.problems == [
        f"{tmp_path}/c.yaml:1:1: the files of {tmp_path} up to this one make 1,200 scenarios (expected at"
        f" most {MAX_SCENARIOS:,}, uvbench's limit for one run: split the folder)"
    ]


def test_thousands_of_problems_are_listed_as_the_first_fifty_and_a_count(tmp_path):
    from uvbench.scenario.loader import MAX_PROBLEMS_SHOWN

    text = BASE + "".join(f"unknown_{i}: 1\n" for i in range(3_000))
    path = _write(tmp_path, "x.yaml", text)
    with pytest.raises(ScenarioError) as info:
        load_scenarios(path)
    problems = info.value.problems
    assert len(problems) == MAX_PROBLEMS_SHOWN + 1
    assert problems[0].startswith(f"{path}:3:1: unknown_0")
    assert problems[-1] == (
        f"{path}:{3 + MAX_PROBLEMS_SHOWN}:1: and {3_000 - MAX_PROBLEMS_SHOWN:,} more problems from here on,"
        f" not shown (uvbench lists the first {MAX_PROBLEMS_SHOWN}: fix those first)"
    )


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    import os

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ScenarioError) as info:  # would block forever on open before
        load_scenarios(fifo)
    assert info.value.problems == [f"{fifo}:1:1: not a regular file (expected a YAML file)"]
