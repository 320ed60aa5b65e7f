"""YAML scenario files -> validated `Scenario` objects, with every problem at its line and column.

The file is composed with PyYAML (the node tree keeps each key's and value's start mark), built
into plain data plus two indexes, location -> mark of the value and location -> mark of the key.
Then, in order:

1. reserved keys are rejected and `call.medium` defaults to a 16 kHz server websocket;
2. `matrix` is checked and expanded into its cartesian product (marks of a swept value point at
   the matrix entry that supplied it);
3. `${variables}` are substituted;
4. `call` is checked with `validate_start_call` (DRF error paths -> marks);
5. the pydantic models validate the rest (error locations -> marks), audio files are resolved,
   and cross-checks run (tool names, turn indexes).

Problems are collected across all steps, variants and files, and raised together as one
`ScenarioError`, each a single line `file:line:col: what is wrong (what is expected)`.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import re
import sys
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.error import Mark

from uvbench.protocol.schema import (
    MSG_REQUIRED,
    MSG_UNKNOWN,
    START_CALL_REQUEST,
    RequestValidationError,
    load_openapi,
    validate_start_call,
)
from uvbench.protocol.strict_json import MAX_DEPTH as MAX_JSON_DEPTH
from uvbench.scenario.load_config import (
    LOAD_KEYS,
    FileLoad,
    in_file_order,
    shortcut_problem_in,
    threshold_problems,
)
from uvbench.scenario.model import (
    CONDITION_KINDS,
    DEFAULT_MEDIUM,
    EXPECT_KINDS,
    MEDIUM_SHORTHANDS,
    STEP_KINDS,
    UNION_TAGS,
    Scenario,
    cross_problems,
    did_you_mean,
    show,
)

Loc = tuple[Any, ...]

# Scenario fields the loader sets; a file may not.
_RESERVED = ("variant", "source")
# Keys under `target` that can only mean a literal API key.
_LITERAL_KEY_NAMES = {"apikey", "key", "token", "apitoken", "xapikey", "secret", "authorization", "password"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIABLE = re.compile(r"\$(\$)?\{([^{}]*)\}")
_WHOLE_VARIABLE = re.compile(r"^\$\{([^{}]*)\}$")

# Limits on what a file may make the loader do. Each is far beyond a hand-written scenario (a few
# KB, a few levels deep, a 3 x 3 matrix) and keeps a hostile or mistaken file to a second or two
# of work and a one-line refusal that names the limit.
MAX_FILE_BYTES = 128 * 1024
"""A scenario or suite file's size: 32 times quickstart.yaml, and still about 3 s of PyYAML's
(pure Python) parsing at the densest, a flow list of 65,000 numbers."""
MAX_NESTING = MAX_JSON_DEPTH
"""Levels of mappings and lists (the document's own mapping is the first), aliases expanded: the
bound uvbench puts on JSON (64), which the call: block is sent as. The deepest scenario setting is
under ten levels (call.experimentalSettings.uvbench.agent.tool_calls[0].parameters.id); each level
costs several Python frames in PyYAML and in the loader, far inside the recursion limit."""
MAX_ALIAS_VALUES = 10_000
"""Values copied by aliases in one file. Reusing a block a few times copies hundreds; nested
aliases of aliases (a "billion laughs") would copy billions from a few lines."""
MAX_SCENARIOS = 1_000
"""Scenarios one file expands to (its documents, each matrix variant counted), and scenarios of a
suite's entries together: each is at least one call per run, and one costs a few ms to validate."""
MAX_EXPANDED_VALUES = 2_000_000
"""Values copied and validated for one file: each matrix variant is a copy of its whole document
(matrix included), about 0.7 s per million values, so a large document allows fewer variants.
1,000 variants of quickstart.yaml are 1.2 million."""


class ScenarioError(Exception):
    """Scenario files that cannot be used. `problems` holds one line per problem:
    `file:line:col: what is wrong (what is expected)`."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = _shown_problems(list(problems))
        super().__init__("\n".join(self.problems))


MAX_PROBLEMS_SHOWN = 50
"""Problems listed for one load; a file of thousands of bad keys gets the first ones and a count."""
_WHERE = re.compile(r"^(.*?:\d+:\d+): ")


def _shown_problems(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS_SHOWN:
        return problems
    rest = len(problems) - MAX_PROBLEMS_SHOWN
    first_hidden = problems[MAX_PROBLEMS_SHOWN]
    found = _WHERE.match(first_hidden)
    where = found.group(1) if found else first_hidden.split(": ", 1)[0]
    return [
        *problems[:MAX_PROBLEMS_SHOWN],
        f"{where}: and {rest:,} more problems from here on, not shown (uvbench lists the first"
        f" {MAX_PROBLEMS_SHOWN}: fix those first)",
    ]


# --------------------------------------------------------------------------------------------
# Located data: plain values + where each value and key starts in the file


@dataclass(order=True)
class _Problem:
    order: int
    line: int
    column: int
    text: str = field(compare=False)


@dataclass
class _Sink:
    problems: list[_Problem] = field(default_factory=list)

    def add(self, order: int, source: str, mark: Mark | None, text: str) -> None:
        line = mark.line + 1 if mark else 1
        column = mark.column + 1 if mark else 1
        self.problems.append(_Problem(order, line, column, f"{source}:{line}:{column}: {text}"))

    def lines(self) -> list[str]:
        seen: set[str] = set()
        out: list[str] = []
        for item in sorted(self.problems):
            if item.text not in seen:
                seen.add(item.text)
                out.append(item.text)
        return out


@dataclass
class _Doc:
    source: str
    order: int
    sink: _Sink
    data: Any = None
    values: dict[Loc, Mark] = field(default_factory=dict)
    keys: dict[Loc, Mark] = field(default_factory=dict)
    skip: set[Loc] = field(default_factory=set)

    def add(self, mark: Mark | None, text: str) -> None:
        self.sink.add(self.order, self.source, mark, text)

    def copy(self) -> _Doc:
        return _Doc(
            self.source,
            self.order,
            self.sink,
            copy.deepcopy(self.data),
            dict(self.values),
            dict(self.keys),
            set(self.skip),
        )

    # -- locating ---------------------------------------------------------------------------

    def walk(self, loc: Loc) -> tuple[Loc, Any, bool]:
        """The longest prefix of `loc` present in the data (with the keys as written), the value
        there, and whether all of `loc` was found. Matches camelCase names to snake_case keys
        and "0"-style list indexes to ints, as the create-call validator reports them."""
        node, actual = self.data, ()
        for seg in loc:
            if isinstance(node, dict):
                key = _find_key(node, seg)
                if key is _NOT_FOUND:
                    return actual, node, False
            elif isinstance(node, list):
                index = seg if isinstance(seg, int) else int(seg) if str(seg).isdigit() else -1
                if not 0 <= index < len(node):
                    return actual, node, False
                key = index
            else:
                return actual, node, False
            actual += (key,)
            node = node[key]
        return actual, node, True

    def mark(self, loc: Loc, *, key: bool = False) -> tuple[Mark | None, Loc]:
        """Where to point for a problem at `loc`: the key for key problems and for containers
        under a key, else the value; the nearest enclosing one when `loc` is not in the file.
        Returns the mark and the location as written in the file (plus any segments of `loc`
        that are not in it)."""
        actual, node, complete = self.walk(loc)
        written = actual + tuple(loc[len(actual) :])
        if complete:
            if (key or isinstance(node, dict | list)) and actual in self.keys:
                return self.keys[actual], written
            if actual in self.values:
                return self.values[actual], written
        while actual:
            if actual in self.keys:
                return self.keys[actual], written
            if actual in self.values:
                return self.values[actual], written
            actual = actual[:-1]
        return self.values.get(()), written

    def at(self, loc: Loc, *, key: bool = False) -> tuple[Mark | None, Loc] | None:
        """mark() unless the location holds an undefined ${variable} (already reported)."""
        mark, written = self.mark(loc, key=key)
        if any(written[: len(skip)] == skip for skip in self.skip):
            return None
        return mark, written


_NOT_FOUND = object()


def _snake_to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _find_key(node: dict, seg: Any) -> Any:
    if seg in node:
        return seg
    for key in node:
        if isinstance(key, str) and isinstance(seg, str) and _snake_to_camel(key) == seg:
            return key
        if str(key) == str(seg):
            return key
    return _NOT_FOUND


def render(loc: Iterable[Any]) -> str:
    """A location as text: script[3].speech.end, matrix["client.honor_clear"]."""
    out = ""
    for seg in loc:
        if isinstance(seg, int) and not isinstance(seg, bool):
            out += f"[{seg}]"
        elif isinstance(seg, str) and _IDENTIFIER.match(seg):
            out += ("." if out else "") + seg
        else:
            out += f"[{json.dumps(seg if isinstance(seg, str) else show(seg), ensure_ascii=False)}]"
    return out


def _at(loc: Loc) -> str:
    """ "path: " or "" at the root."""
    text = render(loc)
    return f"{text}: " if text else ""


# --------------------------------------------------------------------------------------------
# YAML -> located data


class _Refused(yaml.YAMLError):
    """Valid YAML that goes past one of the loader's limits, at the place it does."""

    def __init__(self, mark: Mark, text: str) -> None:
        super().__init__(text)
        self.mark = mark
        self.text = text


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing while it composes what would blow up later: nesting deeper
    than MAX_NESTING, and aliases copying more than MAX_ALIAS_VALUES values. The node graph keeps
    an alias as one shared node, so the cost only shows when plain data is built from it; here
    each anchored value's size and height are known when its alias is met."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._deepest = 0
        self._values = 0
        self._aliased = 0
        self._anchored: dict[str, tuple[int, int]] = {}  # anchor -> (values, height)
        self._open: set[str] = set()  # anchors whose value is still being composed

    def compose_document(self) -> yaml.Node | None:
        self._anchored.clear()  # anchors are per document; MAX_ALIAS_VALUES is per file
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._check_alias(event)
            return super().compose_node(parent, index)
        level = 0 if isinstance(event, yaml.ScalarEvent) else 1  # mappings and lists are levels
        self._depth += level
        if self._depth > MAX_NESTING:
            raise _Refused(event.start_mark, _too_deep("mappings and lists nested"))
        depth, values_before, deepest_outside = self._depth, self._values, self._deepest
        self._values += 1
        self._deepest = depth
        anchor = event.anchor
        if anchor is not None:
            self._open.add(anchor)
        node = super().compose_node(parent, index)
        self._depth -= level
        if anchor is not None:
            self._open.discard(anchor)
            self._anchored[anchor] = (self._values - values_before, self._deepest - depth + level)
        self._deepest = max(deepest_outside, self._deepest)
        return node

    def _check_alias(self, event: yaml.AliasEvent) -> None:
        anchor = event.anchor
        if anchor in self._open:
            raise _Refused(
                event.start_mark,
                f"the alias *{anchor} is inside the value &{anchor} names (expected no recursive aliases)",
            )
        if anchor not in self._anchored:
            return  # PyYAML reports the undefined alias
        values, height = self._anchored[anchor]
        if self._depth + height > MAX_NESTING:
            raise _Refused(event.start_mark, _too_deep(f"the alias *{anchor} nests mappings and lists"))
        self._values += values
        self._aliased += values
        self._deepest = max(self._deepest, self._depth + height)
        if self._aliased > MAX_ALIAS_VALUES:
            raise _Refused(
                event.start_mark,
                f"the alias *{anchor} brings the values aliases copy in this file past {MAX_ALIAS_VALUES:,}"
                f" (expected at most {MAX_ALIAS_VALUES:,}, uvbench's limit: reuse an anchor a few times,"
                " not aliases of aliases)",
            )


def _too_deep(what: str) -> str:
    return (
        f"{what} more than {MAX_NESTING} levels deep (expected at most {MAX_NESTING}, uvbench's limit"
        " on nesting)"
    )


def _compose_all(text: str) -> Iterator[yaml.Node | None]:
    """The documents' node graphs, as yaml.compose_all, within the loader's limits. Raises
    _Refused, or PyYAML's MarkedYAMLError with the loader as `exc.loader` (for its open
    collections)."""
    loader = _BoundedLoader(text)
    try:
        while loader.check_node():
            yield loader.get_node()
    except yaml.MarkedYAMLError as exc:
        exc.loader = loader  # type: ignore[attr-defined]
        raise
    finally:
        loader.dispose()


# PyYAML's own list of the characters a YAML stream may not hold (C0/C1 controls but tab, newline,
# CR and NEL; DEL; lone surrogates; U+FFFE, U+FFFF). It reports them with a position in the
# stream, not a line, and the loader's problems are file:line:col.
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
_YAML_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def _mark_at(text: str, index: int) -> Mark:
    """The mark of `text[index]`, with lines counted as PyYAML counts them."""
    breaks = list(_YAML_LINE_BREAK.finditer(text, 0, index))
    line_start = breaks[-1].end() if breaks else 0
    return Mark("", index, len(breaks), index - line_start, None, None)


def _text_problem(text: str) -> tuple[Mark | None, str] | None:
    """A problem of the text itself, found before YAML reads it: size, characters YAML refuses."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        return None, _too_big(size)
    found = _NON_PRINTABLE.search(text)
    if found is None:
        return None
    char = found.group()
    code = ord(char)
    if code == 0:
        what = "a NUL byte (U+0000)"
    elif 0xD800 <= code <= 0xDFFF:
        what = f"a lone surrogate (U+{code:04X})"
    elif code > 0xFFFD:
        what = f"a noncharacter (U+{code:04X})"
    else:
        what = f"a control character (U+{code:04X})"
    escape = f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
    return _mark_at(text, found.start()), (
        f"{what} is not allowed in a YAML file (expected text: remove it, or write it as {escape}"
        " inside double quotes)"
    )


def _too_big(size: int) -> str:
    return (
        f"the file is {size:,} bytes (expected at most {MAX_FILE_BYTES:,}, uvbench's limit for a scenario"
        " or suite file: split it, or sweep settings with matrix:)"
    )


def read_yaml_text(path: Path) -> tuple[str | None, tuple[Mark | None, str] | None]:
    """A scenario or suite file's text, or None and its problem: unreadable, too big (only the
    first MAX_FILE_BYTES + 1 bytes are read), or not UTF-8 (at the first byte that is not)."""
    if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
        return None, (None, "not a regular file (expected a YAML file)")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
            size = (
                len(data) if len(data) <= MAX_FILE_BYTES else max(os.fstat(file.fileno()).st_size, len(data))
            )
    except OSError as exc:
        return None, (None, f"cannot read the file: {exc.strerror or exc} (expected a readable YAML file)")
    if size > MAX_FILE_BYTES:
        return None, (None, _too_big(size))
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8")
        return None, (
            _mark_at(before, len(before)),
            f"byte 0x{data[exc.start]:02x} is not UTF-8 text (expected a UTF-8 YAML file: save it as UTF-8)",
        )


def _yaml_problem(exc: yaml.MarkedYAMLError, text: str) -> tuple[Mark | None, str]:
    """Where PyYAML's error is best shown, and its line. An unclosed quote or bracket is shown
    where it opens: PyYAML only notices it where the next token cannot follow (often the end of
    the file), and says where the quote started in `context_mark`, the open collections in the
    parser's `marks`."""
    problem, context = exc.problem or "", exc.context
    found = exc.problem_mark
    if context == "while scanning a quoted scalar" and exc.context_mark is not None and found is not None:
        if "end of stream" in problem or "document separator" in problem:
            quote = text[exc.context_mark.index]
            what = "the end of the file" if "end of stream" in problem else 'the document separator "---"'
            return exc.context_mark, (
                f"invalid YAML: the quoted value that opens here is never closed ({what} on line"
                f" {found.line + 1} comes first; expected a closing {quote})"
            )
    opened = getattr(getattr(exc, "loader", None), "marks", None) or []
    unclosed = context in ("while parsing a flow mapping", "while parsing a flow sequence") or (
        context == "while parsing a flow node" and problem.startswith("expected the node content")
    )
    if unclosed and opened and found is not None:
        opener = text[opened[-1].index : opened[-1].index + 1]
        if opener in ("[", "{"):
            closer = "]" if opener == "[" else "}"
            return opened[-1], (
                f"invalid YAML: in the {opener}...{closer} that opens here, {problem} at line"
                f" {found.line + 1}, column {found.column + 1} (expected items separated by , and a"
                f" closing {closer})"
            )
    if context == "while scanning a simple key" and exc.context_mark is not None:
        return (
            exc.context_mark,
            f"invalid YAML: {problem} after the key that starts here (expected key: value)",
        )
    detail = f" ({context})" if context else " (expected valid YAML)"
    if context == "while scanning a block scalar":
        detail = ' (a value starting with > or | is a block scalar: quote it, e.g. "p(95) > 99")'
    return found, f"invalid YAML: {problem}{detail}"


class _Constructor(yaml.SafeLoader):
    """PyYAML's safe constructor, remembering each mapping's own keys before `<<` merges are
    flattened into it (in place, and again for a merged mapping reached later by an alias)."""

    def __init__(self) -> None:
        super().__init__("")
        self.explicit_keys: dict[int, set[int]] = {}  # id(mapping node) -> ids of its own key nodes

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        self.explicit_keys.setdefault(id(node), {id(key) for key, _ in node.value if key.tag != _MERGE_TAG})
        super().flatten_mapping(node)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _build(doc: _Doc, loader: _Constructor, node: yaml.Node, loc: Loc) -> Any:
    doc.values[loc] = node.start_mark
    if isinstance(node, yaml.MappingNode):
        try:
            loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            doc.add(
                exc.problem_mark or node.start_mark, f"{_at(loc)}{exc.problem} (expected a mapping to merge)"
            )
        out: dict[Any, Any] = {}
        explicit = loader.explicit_keys.get(id(node), set())
        merged: set[Any] = set()  # keys from `<<: *anchor`: the mapping's own keys override them
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                doc.add(key_node.start_mark, f"{_at(loc)}a key must be a plain word (expected name: value)")
                continue
            key = _scalar(doc, loader, key_node, loc)
            sub = (*loc, key)
            if key in merged:  # this pair overrides one merged in before it (PyYAML's order)
                merged.discard(key)
                del out[key]
                for index in (doc.values, doc.keys):
                    for stale in [at for at in index if at[: len(sub)] == sub]:
                        del index[stale]
            if id(key_node) not in explicit:
                merged.add(key)
            if key in out:
                first = doc.keys[sub]
                doc.add(
                    key_node.start_mark,
                    f"{render(sub)}: duplicate key (expected each key once; it is first set on line"
                    f" {first.line + 1})",
                )
                continue
            doc.keys[sub] = key_node.start_mark
            out[key] = _build(doc, loader, value_node, sub)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(doc, loader, item, (*loc, i)) for i, item in enumerate(node.value)]
    return _scalar(doc, loader, node, loc)


_SCALAR_KINDS = {"int": "a whole number", "float": "a number", "bool": "a boolean", "timestamp": "a date"}
"""What a YAML scalar's tag means, in words (a plain 2024-13-45 is tagged a timestamp)."""


def _scalar(doc: _Doc, loader: _Constructor, node: yaml.Node, loc: Loc) -> Any:
    try:
        value = loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        doc.add(exc.problem_mark or node.start_mark, f"{_at(loc)}{exc.problem} (expected a plain YAML value)")
        doc.skip.add(loc)
        return None
    except Exception as exc:  # PyYAML's constructors raise whatever int() or datetime() raise
        kind = node.tag.rsplit(":", 1)[-1]
        reason = ""
        if isinstance(exc, ValueError) and kind == "timestamp":
            reason = f": {str(exc).split(';')[0]}"
        elif isinstance(exc, ValueError) and "digits" in str(exc):
            reason = f": more than {sys.get_int_max_str_digits()} digits"
        what = _SCALAR_KINDS.get(kind, f"a {kind}")
        text = node.value if len(node.value) <= 40 else node.value[:40] + "..."
        doc.add(
            node.start_mark,
            f"{_at(loc)}{show(text)} reads as {what} but is not a valid one{reason} (expected a valid"
            " one, or quotes around it to keep it as text)",
        )
        doc.skip.add(loc)
        return None
    try:
        hash(value)
    except TypeError:
        return str(value)
    return value


def _documents(text: str, source: str, order: int, sink: _Sink) -> list[_Doc]:
    loader = _Constructor()
    docs: list[_Doc] = []
    problem = _text_problem(text)
    if problem is not None:
        sink.add(order, source, *problem)
        return []
    try:
        nodes = list(_compose_all(text))
    except _Refused as exc:
        sink.add(order, source, exc.mark, exc.text)
        return []
    except yaml.MarkedYAMLError as exc:
        sink.add(order, source, *_yaml_problem(exc, text))
        return []
    for node in nodes:
        doc = _Doc(source, order, sink)
        if node is None:
            continue
        doc.data = _build(doc, loader, node, ())
        if not isinstance(doc.data, dict):
            doc.add(
                node.start_mark,
                f"{show(doc.data)} is not a scenario (expected a mapping with name and script)",
            )
            continue
        docs.append(doc)
    if not nodes or all(node is None for node in nodes):
        sink.add(order, source, None, "empty file (expected a scenario: a mapping with name and script)")
    return docs


# --------------------------------------------------------------------------------------------
# Model introspection (for unknown keys, missing keys and matrix paths)


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _user_fields(model: type[BaseModel]) -> dict[str, Any]:
    """The keys a file may write for `model` (aliases), to their field info, in declared order."""
    fields = model.model_fields
    if issubclass(model, FileLoad):
        fields = {name: fields[name] for name in in_file_order(fields)}
    elif model in STEP_KINDS.values() and "name" in fields:  # a step's own keys first, its name last
        fields = {**{k: v for k, v in fields.items() if k != "name"}, "name": fields["name"]}
    return {
        info.alias or name: info
        for name, info in fields.items()
        if not (model is Scenario and name in _RESERVED)
    }


def _model_at(loc: Loc, root: type[BaseModel] = Scenario) -> type[BaseModel] | None:
    """The model validating the value at a pydantic error location (tags included)."""
    tp: Any = root
    for seg in loc:
        if isinstance(seg, str) and seg in UNION_TAGS:
            tp = UNION_TAGS[seg]
            continue
        tp = _unwrap(tp)
        if _is_model(tp):
            info = _user_fields(tp).get(seg)
            if info is None:
                return None
            tp = info.annotation
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if _is_model(tp) else None


# --------------------------------------------------------------------------------------------
# The create-call schema (for did-you-mean on call keys and matrix paths into call)


def _oas_resolve(schema: dict) -> dict:
    components = load_openapi()["components"]["schemas"]
    while True:
        if "$ref" in schema:
            schema = components[schema["$ref"].rsplit("/", 1)[-1]]
        elif "allOf" in schema:
            merged: dict = {}
            for part in schema["allOf"]:
                merged.update(_oas_resolve(part))
            merged.update({k: v for k, v in schema.items() if k != "allOf"})
            schema = merged
        else:
            return schema


def _oas_walk(segs: Iterable[Any]) -> tuple[bool, list[str], int]:
    """Whether a path exists in the create-call body schema; if not, the field names where it
    failed and the index of the failing segment."""
    schema = {"$ref": "#/components/schemas/" + START_CALL_REQUEST}
    for i, seg in enumerate(segs):
        schema = _oas_resolve(schema)
        props = schema.get("properties")
        if props is not None:
            name = seg if seg in props else _snake_to_camel(str(seg))
            if name not in props:
                return False, list(props), i
            schema = props[name]
        elif schema.get("type") == "array":
            if not (isinstance(seg, int) or str(seg).isdigit()):
                return False, [], i
            schema = schema.get("items", {})
        elif schema.get("type") == "object" or not schema.get("type"):
            extra = schema.get("additionalProperties")
            if not isinstance(extra, dict) or not extra:
                return True, [], -1  # free-form (experimentalSettings, metadata, ...)
            schema = extra
        else:
            return False, [], i
    return True, [], -1


def _oas_fields(path: Iterable[Any]) -> list[str]:
    """The field names of the create-call body's object at `path` (empty if it has none)."""
    schema: dict = {"$ref": "#/components/schemas/" + START_CALL_REQUEST}
    for seg in path:
        schema = _oas_resolve(schema)
        props = schema.get("properties")
        if props is not None:
            name = seg if seg in props else _snake_to_camel(str(seg))
            if name not in props:
                return []
            schema = props[name]
        elif schema.get("type") == "array":
            schema = schema.get("items", {})
        elif isinstance(schema.get("additionalProperties"), dict):
            schema = schema["additionalProperties"]
        else:
            return []
    return list(_oas_resolve(schema).get("properties") or ())


# --------------------------------------------------------------------------------------------
# Matrix


def _matrix_path(key: str) -> tuple[Loc | None, str]:
    """The scenario location a matrix key sets, or None and the "(expected ...)" text."""
    if key in MEDIUM_SHORTHANDS:
        return ("call", "medium", "serverWebSocket", key), ""
    segs: list[Any] = [int(s) if s.isdigit() else s for s in key.split(".")]
    generic = (
        f"expected {', '.join(MEDIUM_SHORTHANDS)}"
        " or a dotted path into the scenario such as client.honor_clear"
    )
    tp: Any = Scenario
    for i, seg in enumerate(segs):
        tp = _unwrap(tp)
        prefix = ".".join(str(s) for s in segs[:i])
        if _is_model(tp):
            names = [
                n for n in _user_fields(tp) if not (tp is Scenario and n in ("name", "matrix", *LOAD_KEYS))
            ]
            if seg not in names:
                candidates = [f"{prefix}.{n}" if prefix else n for n in names]
                if tp is Scenario:
                    candidates += list(MEDIUM_SHORTHANDS)
                hint = did_you_mean(key, candidates)
                return None, hint or generic
            if tp is Scenario and seg == "call":
                ok, props, failed = _oas_walk(segs[i + 1 :])
                if ok:
                    return tuple(segs), ""
                stem = ".".join(str(s) for s in segs[: i + 1 + failed])
                hint = did_you_mean(key, [f"{stem}.{p}" for p in props])
                return None, hint or "expected a field of the create-call body (`uvbench schema` lists them)"
            tp = _user_fields(tp)[seg].annotation
        elif get_origin(tp) is list:
            if not isinstance(seg, int):
                return None, f"expected a step index after {prefix}, e.g. {prefix}.0"
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif tp is Any or get_origin(tp) is Annotated or get_origin(tp) in (Union, types.UnionType):
            return tuple(segs), ""  # a union (steps) or free-form value: the models check the rest
        else:
            return None, f"{prefix} is a single value (expected nothing after it)"
    return tuple(segs), ""


def _check_matrix(doc: _Doc) -> list[tuple[str, Loc, list[Any]]] | None:
    """The matrix as (key, location it sets, values); None if it has problems (reported)."""
    matrix = doc.data.get("matrix")
    if matrix is None:
        return []
    if not isinstance(matrix, dict):
        mark, _ = doc.mark(("matrix",))
        doc.add(
            mark, f"matrix: {show(matrix)} is not valid (expected a mapping of setting -> list of values)"
        )
        return None
    entries: list[tuple[str, Loc, list[Any]]] = []
    ok = True
    for key, values in matrix.items():
        loc = ("matrix", key)
        if not isinstance(key, str):
            doc.add(
                doc.keys.get(loc),
                f"{render(loc)}: not a setting (expected a name such as client.honor_clear)",
            )
            ok = False
            continue
        target, expected = _matrix_path(key)
        if target is None:
            doc.add(doc.keys.get(loc), f"{render(loc)}: no such setting ({expected})")
            ok = False
            continue
        problem = _settable(doc.data, target)
        if problem:
            doc.add(doc.keys.get(loc), f"{render(loc)}: {problem}")
            ok = False
            continue
        if not isinstance(values, list) or not values:
            mark, _ = doc.mark(loc)
            doc.add(mark, f"{render(loc)}: {show(values)} is not valid (expected a non-empty list of values)")
            ok = False
            continue
        entries.append((key, target, values))
    return entries if ok else None


def _settable(data: Any, target: Loc) -> str | None:
    node = data
    for i, seg in enumerate(target[:-1]):
        if isinstance(node, list):
            if not isinstance(seg, int) or seg >= len(node):
                return f"{render(target[:i])} has no item {seg} (expected an index below {len(node)})"
            node = node[seg]
        elif isinstance(node, dict):
            if seg not in node or node[seg] is None:
                return None  # created when the value is set
            node = node[seg]
        else:
            return f"{render(target[:i])} is not a mapping (expected {render(target[: i + 1])} to exist)"
    last = target[-1]
    if isinstance(node, list) and not (isinstance(last, int) and last < len(node)):
        return f"{render(target[:-1])} has no item {last} (expected an index below {len(node)})"
    return None


def _variant(doc: _Doc, assignments: list[tuple[str, Loc, int, Any]]) -> _Doc:
    out = doc.copy()
    for key, target, index, value in assignments:
        source = ("matrix", key, index)
        node = out.data
        for depth, seg in enumerate(target[:-1]):
            if isinstance(node, dict) and (seg not in node or node[seg] is None):
                node[seg] = {}
                here = target[: depth + 1]
                out.values[here] = doc.keys[("matrix", key)]
                out.keys.setdefault(here, doc.keys[("matrix", key)])
            node = node[seg]
        node[target[-1]] = copy.deepcopy(value)
        n = len(target)
        for index_ in (out.values, out.keys):
            for loc in [loc for loc in index_ if loc[:n] == target and len(loc) > n]:
                del index_[loc]
        for loc, mark in doc.values.items():
            if loc[:3] == source:
                out.values[target + loc[3:]] = mark
        for loc, mark in doc.keys.items():
            if loc[:3] == source and len(loc) > 3:
                out.keys[target + loc[3:]] = mark
        out.keys.setdefault(target, doc.keys[("matrix", key)])
    return out


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return show(value)
    # YAML also makes dates and bytes (!!binary), which JSON has no form for: their str()
    if not isinstance(value, dict | list):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


# --------------------------------------------------------------------------------------------
# Variables


def _substitute(doc: _Doc) -> None:
    variables = doc.data.get("variables")
    if not isinstance(variables, dict):
        variables = {}
    names = sorted(str(k) for k in variables)

    def undefined(loc: Loc, name: str) -> None:
        hint = did_you_mean(name, names)
        if hint is not None:
            hint = f"did you mean ${{{hint.split(chr(34))[1]}}}?"
        elif names:
            hint = "expected one of: " + ", ".join(names)
        else:
            hint = "no variables are defined; expected it under variables:"
        doc.add(doc.values.get(loc), f"{_at(loc)}undefined variable ${{{name}}} ({hint})")
        doc.skip.add(loc)

    def replace(value: Any, loc: Loc) -> Any:
        if isinstance(value, dict):
            return {k: replace(v, (*loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [replace(v, (*loc, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _WHOLE_VARIABLE.match(value)
        if whole:
            name = whole.group(1).strip()
            if name not in variables:
                undefined(loc, name)
                return value
            return copy.deepcopy(variables[name])

        def one(match: re.Match[str]) -> str:
            if match.group(1):  # $${name}: a literal ${name}
                return match.group(0)[1:]
            name = match.group(2).strip()
            if name not in variables:
                undefined(loc, name)
                return match.group(0)
            return _format_value(variables[name])

        return _VARIABLE.sub(one, value)

    doc.data = {
        key: value if key in ("variables", "matrix") else replace(value, (key,))
        for key, value in doc.data.items()
    }


# --------------------------------------------------------------------------------------------
# Error translation


def _drf_items(errors: dict, prefix: Loc = ()) -> Iterator[tuple[Loc, str]]:
    for key, value in errors.items():
        loc = prefix if key == "non_field_errors" else (*prefix, key)
        if isinstance(value, dict):
            yield from _drf_items(value, loc)
        else:
            for message in value:
                yield loc, message


def _report_call_errors(doc: _Doc, errors: dict) -> None:
    for path, message in _drf_items(errors):
        loc = ("call", *path)
        if message == MSG_UNKNOWN:
            found = doc.at(loc, key=True)
            if found is None:
                continue
            props = _oas_fields(path[:-1])
            hint = did_you_mean(str(path[-1]), props) if props else None
            if hint is None:
                hint = (
                    "expected one of: " + ", ".join(props)
                    if 0 < len(props) <= 12
                    else "expected a field of the create-call body (`uvbench schema` lists them)"
                )
            doc.add(found[0], f"{render(found[1])}: unknown key ({hint})")
        elif message == MSG_REQUIRED:
            found = doc.at(loc[:-1])
            if found is not None:
                doc.add(
                    found[0], f'{render(found[1])}: missing key "{path[-1]}" (required by POST /api/calls)'
                )
        else:
            found = doc.at(loc)
            if found is not None:
                doc.add(found[0], f"{render(found[1])}: {message}")


_EXPECTED_BY_TYPE = {
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}
_UNION_WORDS = {
    "_step_tag()": ("step", tuple(STEP_KINDS)),
    "_expect_tag()": ("expectation", EXPECT_KINDS),
    "_condition_tag()": ("wait_for condition", CONDITION_KINDS),
}


def _expected(err: dict) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _EXPECTED_BY_TYPE:
        return _EXPECTED_BY_TYPE[kind]
    if kind == "literal_error":
        return str(ctx.get("expected", "")).replace("'", '"')
    if kind == "string_pattern_mismatch":
        return "a name matching " + str(ctx.get("pattern", "")).strip("^$")
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"at least {n} item{'s' if n != 1 else ''}"
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        ops = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<", "less_than_equal": "<="}
        limit = next(iter(ctx.values()), "")
        return f"a value {ops[kind]} {limit}"
    message = err["msg"]
    message = message.removeprefix("Input should be ")
    return message[:1].lower() + message[1:]


_UNION_EXAMPLES = {
    "step": "a mapping such as say: file.wav, or the bare word hang_up",
    "expectation": "a mapping with one of " + ", ".join(EXPECT_KINDS),
    "wait_for condition": (
        "agent_audible, agent_done, or a mapping with state, transcript, tool_call or silence"
    ),
    "value": "a known kind",
}


def _report_union(doc: _Doc, loc: Loc, err: dict) -> None:
    word, kinds = _UNION_WORDS.get((err.get("ctx") or {}).get("discriminator", ""), ("value", ()))
    examples = _UNION_EXAMPLES[word]
    value = err.get("input")
    if isinstance(value, dict):
        present = [key for key in value if key in kinds]
        if len(present) > 1:
            found = doc.at((*loc, present[1]), key=True)
            if found is not None:
                doc.add(
                    found[0],
                    f"{render(found[1])}: a second {word} kind in one {word} (expected one per item;"
                    f' this one is already "{present[0]}")',
                )
            return
        options: set[str] = set()
        for tag, model in UNION_TAGS.items():
            if tag.split(":", 1)[1] in kinds:
                options.update(_user_fields(model))
        strangers = [key for key in value if key not in options]
        if strangers:
            found = doc.at((*loc, strangers[0]), key=True)
            words = [k for k in kinds if k not in ("agent_audible", "agent_done")]
            hint = did_you_mean(str(strangers[0]), words) or f"expected {examples}"
            if found is not None:
                doc.add(found[0], f"{render(found[1])}: unknown {word} kind ({hint})")
        else:
            found = doc.at(loc)
            if found is not None:
                doc.add(found[0], f"{_at(found[1])}no {word} kind (expected {examples})")
        return
    found = doc.at(loc)
    if found is None:
        return
    mark, written = found
    if isinstance(value, str):
        if word == "step" and value in CONDITION_KINDS:
            hint = f"expected wait_for: {value}"
        else:
            hint = did_you_mean(value, kinds) or f"expected {examples}"
        doc.add(mark, f"{_at(written)}unknown {word} {show(value)} ({hint})")
    else:
        doc.add(mark, f"{_at(written)}{show(value)} is not a {word} (expected {examples})")


def _report_pydantic(doc: _Doc, err: dict, call_reported: bool, root: type[BaseModel] = Scenario) -> None:
    raw: Loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    key_error = False
    if raw and raw[-1] == "[key]":
        raw, key_error = raw[:-1], True
    loc = tuple(seg for seg in raw if not (isinstance(seg, str) and seg in UNION_TAGS))
    if kind == "uvbench" and ctx.get("at"):
        loc = (*loc, *str(ctx["at"]).split("."))
    if call_reported and loc == ("call",):
        return  # validate_start_call's own problems were reported field by field
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        _report_union(doc, loc, err)
        return
    if kind == "missing":
        found = doc.at(loc[:-1])
        if found is not None:
            model = _model_at(raw[:-1], root)
            required = [n for n, info in _user_fields(model).items() if info.is_required()] if model else []
            expected = f"required: {', '.join(required)}" if len(required) > 1 else "required"
            doc.add(found[0], f'{_at(found[1])}missing key "{loc[-1]}" ({expected})')
        return
    if kind == "extra_forbidden":
        # An unknown key is wrong whatever its value holds: never skipped.
        mark, written = doc.mark(loc, key=True)
    else:
        found = doc.at(loc, key=key_error)
        if found is None:
            return
        mark, written = found
    if kind == "extra_forbidden":
        name = str(loc[-1])
        if loc[:-1] == ("target",) and re.sub(r"[-_]", "", name.lower()) in _LITERAL_KEY_NAMES:
            doc.add(
                mark,
                f"{render(written)}: a literal API key does not belong in a scenario file"
                " (expected api_key_env: the name of an environment variable holding the key)",
            )
            return
        model = _model_at(raw[:-1], root)
        special = getattr(model, "KEY_HINTS", {}).get(name)
        if special:
            doc.add(mark, f"{render(written)}: unknown key ({special})")
            return
        allowed = list(_user_fields(model)) if model else []
        hint = did_you_mean(name, allowed) or (
            "expected one of: " + ", ".join(allowed) if allowed else "expected no keys here"
        )
        doc.add(mark, f"{render(written)}: unknown key ({hint})")
    elif kind == "uvbench":
        doc.add(mark, f"{_at(written)}{err['msg']}")
    else:
        doc.add(mark, f"{_at(written)}{show(err.get('input'))} is not valid (expected {_expected(err)})")


# --------------------------------------------------------------------------------------------
# Loading


def _prepare(doc: _Doc) -> None:
    """Reserved keys out, default medium in (before the matrix, so its shorthands apply)."""
    for name in _RESERVED:
        if name in doc.data:
            hint = "expected one of: " + ", ".join(_user_fields(Scenario))
            doc.add(doc.keys.get((name,)), f"{name}: unknown key (set by the loader; {hint})")
            del doc.data[name]
    call = doc.data.get("call")
    if call is None:
        call = doc.data["call"] = {}
        doc.values[("call",)] = doc.values[()]
    if isinstance(call, dict) and call.get("medium") is None:
        call["medium"] = copy.deepcopy(DEFAULT_MEDIUM)
        mark = doc.keys.get(("call",), doc.values[()])
        for loc in (("call", "medium"), ("call", "medium", "serverWebSocket")):
            doc.values[loc] = doc.keys[loc] = mark


def _validate(doc: _Doc, base_dir: Path) -> Scenario | None:
    before = len(doc.sink.problems)
    _substitute(doc)
    data = dict(doc.data)  # doc.data stays as written, for locating problems
    call = data.get("call")
    call_reported = False
    if isinstance(call, dict):
        try:
            data["call"] = validate_start_call(call)
        except RequestValidationError as exc:
            _report_call_errors(doc, exc.errors)
            call_reported = True
    failed = False
    try:
        scenario = Scenario.model_validate(data, context={"base_dir": base_dir, "cross_check": False})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            _report_pydantic(doc, err, call_reported)
        failed = True
    # Cross-checks run on the data, so they are reported even when other problems are found.
    report_thresholds(doc, data.get("thresholds"))
    report_shortcuts(doc, data)
    for loc, message, at_key in cross_problems(data):
        found = doc.at(loc, key=at_key)
        if found is not None:
            doc.add(found[0], f"{_at(found[1])}{message}")
    if failed or call_reported or len(doc.sink.problems) > before:
        return None
    return scenario


def report_thresholds(doc: _Doc, thresholds: Any) -> None:
    """Each threshold problem at its key or expression (`metrics.thresholds` wording)."""
    for loc, message, at_key in threshold_problems(thresholds):
        found = doc.at(("thresholds", *loc), key=at_key)
        if found is not None:
            doc.add(found[0], f"{_at(found[1])}{message}")


def report_shortcuts(doc: _Doc, data: dict[str, Any]) -> None:
    """`load:` next to k6 shortcuts, or conflicting shortcuts, at the shortcut's value."""
    found = shortcut_problem_in(data)
    if found:
        where = doc.at((found[0],))
        if where is not None:
            doc.add(where[0], f"{_at(where[1])}{found[1]}")


@dataclass
class _Expansion:
    """What one file's documents expand to, counted before any is validated (MAX_SCENARIOS,
    MAX_EXPANDED_VALUES)."""

    scenarios: int = 0
    values: int = 0

    def admit(self, doc: _Doc, matrix: list[tuple[str, Loc, list[Any]]]) -> bool:
        """Whether the document's variants fit the file's limits, counted before any is built;
        if not, the refusal is reported at the matrix (or the document)."""
        variants = math.prod(len(values) for *_, values in matrix)
        size = len(doc.values)
        self.scenarios += variants
        self.values += variants * size
        limit = "uvbench's limit: fewer values per setting, or the scenarios split across files"
        earlier = self.scenarios > variants
        if matrix:
            mark = doc.keys.get(("matrix",))
            sizes = " x ".join(str(len(values)) for *_, values in matrix) + " = " if len(matrix) > 1 else ""
            what = f"matrix: {sizes}{variants:,} variants"
            too_many = what + (
                f", {self.scenarios:,} scenarios with the file's earlier documents" if earlier else ""
            )
            too_big = (
                f"{what} of this {size:,}-value document are {self.values:,} values to copy and validate"
            )
            too_big += " with the file's earlier documents" if earlier else ""
        else:
            mark = doc.values.get(())
            too_many = f"this document is scenario {self.scenarios:,} of the file"
            too_big = (
                f"this {size:,}-value document brings the file to {self.values:,} values to copy and"
                " validate, matrix variants counted"
            )
        too_many += ", more than uvbench loads from one file"
        if self.scenarios > MAX_SCENARIOS:
            doc.add(mark, f"{too_many} (expected at most {MAX_SCENARIOS:,}, {limit})")
            return False
        if self.values > MAX_EXPANDED_VALUES:
            doc.add(mark, f"{too_big} (expected at most {MAX_EXPANDED_VALUES:,}, {limit})")
            return False
        return True


def _load_document(
    doc: _Doc, matrix: list[tuple[str, Loc, list[Any]]] | None, base_dir: Path
) -> list[tuple[Scenario, Mark | None]]:
    """The document's scenarios (`matrix` as _check_matrix found it, None when it has problems)."""
    name_mark = doc.values.get(("name",))
    if matrix is None:
        rest = doc.copy()
        del rest.data["matrix"]
        _validate(rest, base_dir)  # report the file's other problems too
        return []
    if not matrix:
        scenario = _validate(doc, base_dir)
        if scenario is None:
            return []
        return [(scenario.model_copy(update={"source": doc.source}), name_mark)]
    out: list[tuple[Scenario, Mark | None]] = []
    choices = [list(enumerate(values)) for _, _, values in matrix]
    for combination in itertools.product(*choices):
        assignments = [
            (key, target, index, value)
            for (key, target, _), (index, value) in zip(matrix, combination, strict=True)
        ]
        variant = {key: value for key, _, _, value in assignments}
        scenario = _validate(_variant(doc, assignments), base_dir)
        if scenario is None:
            continue
        suffix = ",".join(f"{key}={_format_value(value)}" for key, value in variant.items())
        out.append(
            (
                scenario.model_copy(
                    update={"name": f"{scenario.name}[{suffix}]", "variant": variant, "source": doc.source}
                ),
                name_mark,
            )
        )
    return out


def _load_text(
    text: str, source: str, base_dir: Path, order: int, sink: _Sink
) -> list[tuple[Scenario, Mark | None, str, int]]:
    expansion = _Expansion()
    planned = []
    for doc in _documents(text, source, order, sink):
        _prepare(doc)
        matrix = _check_matrix(doc)
        if matrix is not None and not expansion.admit(doc, matrix):
            return []  # nothing of the file is validated: the refusal costs no time
        planned.append((doc, matrix))
    loaded = []
    for doc, matrix in planned:
        for scenario, mark in _load_document(doc, matrix, base_dir):
            loaded.append((scenario, mark, source, order))
    return loaded


def _finish(loaded: list[tuple[Scenario, Mark | None, str, int]], sink: _Sink) -> list[Scenario]:
    seen: dict[str, tuple[str, Mark | None]] = {}
    for scenario, mark, source, order in loaded:
        if scenario.name in seen:
            first_source, first_mark = seen[scenario.name]
            where = f"{first_source}:{first_mark.line + 1}" if first_mark else first_source
            sink.add(
                order,
                source,
                mark,
                f"name: {show(scenario.name)} is already used at {where} (expected unique scenario names)",
            )
        else:
            seen[scenario.name] = (source, mark)
    if sink.problems:
        raise ScenarioError(sink.lines())
    return [scenario for scenario, *_ in loaded]


def parse_scenarios(
    text: str, source: str = "<string>", base_dir: str | os.PathLike | None = None
) -> list[Scenario]:
    """Scenarios from YAML text (one per document, matrices expanded). `source` names the text
    in problems; audio files are looked up in `base_dir` (default: the working directory), then
    audio_corpus/. Raises ScenarioError with every problem found."""
    sink = _Sink()
    loaded = _load_text(text, source, Path(base_dir) if base_dir is not None else Path.cwd(), 0, sink)
    return _finish(loaded, sink)


def scenario_files(path: str | os.PathLike) -> list[Path]:
    """The scenario files at `path`: the file itself, or a folder's *.yaml / *.yml (sorted;
    suite files skipped: they name scenario files themselves)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        return [p for p in files if not is_suite_file(p)]
    return [path]


SUITE_KEY = "scenarios"
"""The top-level key that makes a YAML file a suite (k6's `scenarios:` map); a scenario file
never has it (an unknown key there)."""


def is_suite_text(text: str) -> bool:
    """Whether YAML text is a suite: its first document is a mapping with a `scenarios:` key.
    Text that is not valid YAML is not a suite (the scenario loader reports its problems)."""
    if _text_problem(text) is not None:
        return False
    try:
        node = next(_compose_all(text), None)  # the first document
    except yaml.YAMLError:
        return False
    return isinstance(node, yaml.MappingNode) and any(
        isinstance(key, yaml.ScalarNode) and key.value == SUITE_KEY for key, _ in node.value
    )


def is_suite_file(path: str | os.PathLike) -> bool:
    """Whether a file is a suite file (see `is_suite_text`); False for unreadable files."""
    text, _ = read_yaml_text(Path(path))
    return text is not None and is_suite_text(text)


def load_scenarios(path: str | os.PathLike) -> list[Scenario]:
    """Every scenario in a file or in a folder's *.yaml files, validated and matrix-expanded.

    Nothing is called: the result is ready to run. Raises ScenarioError listing every problem
    of every file (`file:line:col: what is wrong (what is expected)`).
    """
    path = Path(path)
    sink = _Sink()
    if not path.exists():
        raise ScenarioError(
            [f"{path}: no such file or folder (expected a scenario .yaml file or a folder of them)"]
        )
    if path.is_file() and is_suite_file(path):
        raise ScenarioError(
            [f"{path}: a suite file (it has {SUITE_KEY}:), not a scenario file"
             " (expected a scenario file here; load it with load_suite, or run it with uvbench run)"]
        )  # fmt: skip
    files = scenario_files(path)
    if not files:
        suites = [p.name for p in sorted(path.glob("*.y*ml")) if is_suite_file(p)] if path.is_dir() else []
        if suites:
            raise ScenarioError(
                [f"{path}: only suite files in this folder ({', '.join(suites)}; expected scenario files,"
                 " or run a suite file itself)"]
            )  # fmt: skip
        raise ScenarioError([f"{path}: no *.yaml files in this folder (expected scenario files)"])
    loaded = []
    for order, file in enumerate(files):
        text, problem = read_yaml_text(file)
        if text is None:
            sink.add(order, str(file), *problem)
            continue
        loaded += _load_text(text, str(file), file.parent, order, sink)
        if len(loaded) > MAX_SCENARIOS:  # as a suite's entries together: each is a call per run
            sink.add(
                order,
                str(file),
                None,
                f"the files of {path} up to this one make {len(loaded):,} scenarios (expected at most"
                f" {MAX_SCENARIOS:,}, uvbench's limit for one run: split the folder)",
            )
            break
    return _finish(loaded, sink)
