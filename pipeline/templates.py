"""Personalised content: logic-less templates that callers write and recipients' data fills (issue #17).

The syntax is the part of Mustache that Handlebars, and so SES's own templates, also read:
`{{name}}` (HTML-escaped in HTML), `{{{name}}}` and `{{&name}}` (raw), sections
`{{#name}}...{{/name}}`, inverted sections `{{^name}}...{{/name}}`, dotted names
`{{user.first}}`, the current item `{{.}}`, and comments `{{! ... }}` (also Handlebars'
`{{!-- ... --}}`, which may hold `}}`). Partials, delimiter changes, inheritance, and
Handlebars' helpers and paths (`#if`, `#each`, `else`, `this`, `../`, `@index`) are refused
at parse with the position and the Mustache way to write them, so nothing surfaces only
after sending.

Ingest calls `check` (or `parse`), `data_size_problem` and, for `"strict": true`,
`Template.missing` at POST; the sender parses once per message and renders per recipient.
Templates come from API callers, so rendering is plain data in, text out:

- names are looked up as dict keys only, never as attributes, and nothing in the data is
  ever called; only str, int, float and bool print; there are no partials, so no files;
- rendering stops with `RenderError` past `max_chars` of output or `max_steps` of work (a
  step is a node rendered or a list item entered), so sections nested over long lists
  fail in milliseconds instead of running for hours; parsing is bounded by
  MAX_TEMPLATE_CHARS, MAX_TAGS and MAX_NESTING.

Built-in names (`email`, `unsubscribe_url`, `topic_id`) are ordinary names here: the caller
puts them in the data it renders with. Where the Mustache spec speaks we follow it (all its
interpolation, section, inverted and comment cases pass): a name is looked up from the
innermost section outwards, and only the first part of a dotted name is; false, null, 0,
"", [] and {} are false; a section over a list repeats per item. Booleans print as
`true`/`false` and whole floats without `.0`, as Handlebars prints them. Handlebars itself
(SES-side rendering) differs in corners we do not copy: it shows a section for 0, "" and {},
and does not look names up in outer sections.
"""

from __future__ import annotations

import html as html_module
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

MAX_RENDERED_CHARS: Final = 1_000_000  # per part (subject, HTML, text)
# About 40 ms of work at worst: a section over a thousand items of a dozen names each fits,
# sections nested over long lists do not.
MAX_RENDER_STEPS: Final = 50_000
MAX_NESTING: Final = 16
# Parsing runs in ingest's event loop: these keep the worst part to ~60 ms of parsing. SES's own
# inline templates stop at 1 MB, and a longer template could not render under MAX_RENDERED_CHARS.
MAX_TEMPLATE_CHARS: Final = MAX_RENDERED_CHARS
MAX_TAGS: Final = 20_000
# Per recipient. Stored with every recipient row, so small; far under SES's 262,144 characters of
# ReplacementTemplateData; and a single value can print at most 6 * 16 KB (escaped), so a template
# with a few names cannot reach MAX_RENDERED_CHARS whatever the data (see `Template.size_bound`).
MAX_DATA_BYTES: Final = 16 * 1024
# {"order": {"items": [{"name": ...}]}} is depth 4; deeper data makes unreadable templates.
MAX_DATA_DEPTH: Final = 5
BUILT_INS: Final = frozenset({"email", "unsubscribe_url", "topic_id"})

OPEN: Final = "{{"
CLOSE: Final = "}}"
NAME: Final = re.compile(r"[\w-]+(?:\.[\w-]+)*")
SIGILS: Final = frozenset("#^/!&>=<$")
STANDALONE: Final = frozenset("#^/!")  # the kinds whose line goes when they stand alone on it
_LINE_END: Final = re.compile(r"[ \t]*(?:\r?\n|\Z)")
# Handlebars' built-in helpers: SES would call them, so they are not names here either.
HELPERS: Final = frozenset({"if", "unless", "each", "with", "lookup", "log"})
# html.escape leaves nothing that could end an attribute or start a tag; it is also what
# pipeline/unsubscribe.py uses for the link, so `{{unsubscribe_url}}` renders the same bytes.
_ESCAPE: Final = html_module.escape
_LONGEST_NUMBER_CHARS: Final = 32  # repr of any float or a 64-bit int fits
_ESCAPE_GROWTH: Final = 6  # `'` -> `&#x27;`


class TemplateError(ValueError):
    """A template does not parse: `line` and `column` (1-based) say where, `problem` what."""

    def __init__(self, line: int, column: int, problem: str) -> None:
        super().__init__(f"line {line}, column {column}: {problem}")
        self.line = line
        self.column = column
        self.problem = problem


class RenderError(ValueError):
    """This recipient's data makes the output too large or too slow to render."""


@dataclass(frozen=True, slots=True)
class Variable:
    """`{{path}}`; `path` is () for `{{.}}`."""

    path: tuple[str, ...]
    escape: bool


@dataclass(frozen=True, slots=True)
class Section:
    """`{{#path}}body{{/path}}`, or `{{^path}}` when `inverted`."""

    path: tuple[str, ...]
    inverted: bool
    body: tuple[Node, ...]


Node = str | Variable | Section


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: parse once per message, render once per recipient."""

    nodes: tuple[Node, ...]
    html: bool
    required: tuple[str, ...]  # the names outside every section, which strict mode requires
    has_sections: bool

    def render(
        self, data: Mapping[str, object], *, max_chars: int = MAX_RENDERED_CHARS, max_steps: int = MAX_RENDER_STEPS
    ) -> str:
        """The text for this data; missing names render empty; RenderError past either limit."""
        root = data if isinstance(data, dict) else dict(data)
        if not self.has_sections:
            return _render_flat(self.nodes, root, max_chars)
        out: list[str] = []
        _render_nodes(self.nodes, [root], out, _Budget(max_chars, max_steps))
        return "".join(out)

    def missing(self, data: Mapping[str, object], supplied: Collection[str] = BUILT_INS) -> list[str]:
        """The required names this data lacks, in template order; names in `supplied` come at send time.

        Only names outside every section are required: inside a section a name may come
        from the section's item, and a section's own name is a condition (absent is false).
        A name present with the value null is not missing.
        """
        root = data if isinstance(data, dict) else dict(data)
        return [
            name
            for name in self.required
            if name.partition(".")[0] not in supplied and _resolve(root, name.split(".")) is _ABSENT
        ]

    def size_bound(self, data_bytes: int = MAX_DATA_BYTES) -> int | None:
        """The most characters this renders to when no value is longer than `data_bytes` of JSON; None
        with sections, whose output depends on the lists.

        Lets ingest skip rendering every recipient at POST when the bound is under the limit.
        """
        if self.has_sections:
            return None
        literal = sum(len(node) for node in self.nodes if isinstance(node, str))
        names = len(self.nodes) - sum(1 for node in self.nodes if isinstance(node, str))
        return literal + names * _ESCAPE_GROWTH * max(data_bytes, _LONGEST_NUMBER_CHARS)


def parse(source: str, *, html: bool) -> Template:
    """The template in `source`; TemplateError naming the position of the first problem.

    `html` decides whether `{{name}}` is escaped: true for the HTML part, false for the
    subject and the text part.
    """
    if len(source) > MAX_TEMPLATE_CHARS:
        raise _fail(source, MAX_TEMPLATE_CHARS, f"the template is over the limit of {MAX_TEMPLATE_CHARS:,} characters")
    tags = list(_scan(source))
    nodes = _build(source, tags, html)
    required = tuple(dict.fromkeys(".".join(node.path) for node in nodes if isinstance(node, Variable) and node.path))
    return Template(nodes, html, required, any(isinstance(node, Section) for node in nodes))


def check(source: str) -> None:
    """Raise TemplateError, with line, column and problem, unless `source` parses."""
    parse(source, html=True)


def data_size_problem(data: object, encoded: bytes | None = None) -> str | None:
    """Why this recipient's data is refused (not a JSON object, over 16 KB, deeper than 5), or None.

    `encoded`: the data's compact JSON when the caller has it already (ingest stores it).
    """
    if not isinstance(data, dict):
        return "data must be a JSON object"
    if encoded is None:
        try:
            encoded = msgspec.json.encode(data)
        except (TypeError, ValueError, OverflowError):
            return "data must hold only JSON values"
    if len(encoded) > MAX_DATA_BYTES:
        return f"data is {len(encoded):,} bytes of JSON, over the limit of {MAX_DATA_BYTES:,}"
    # One brace and no bracket in the JSON: a flat object, whatever its strings hold.
    flat = encoded.count(b"{") == 1 and b"[" not in encoded
    if not flat and _depth(data, MAX_DATA_DEPTH) > MAX_DATA_DEPTH:
        return f"data nests deeper than {MAX_DATA_DEPTH} levels"
    return None


def _depth(value: object, limit: int) -> int:
    """How deeply objects and arrays nest (a bare object is 1), counted no further than limit + 1."""
    level, deepest = [value], 0
    while level and deepest <= limit:
        deepest += 1
        level = [child for item in level for child in _children(item) if isinstance(child, dict | list)]
    return deepest


def _children(value: object) -> Iterable[object]:
    if isinstance(value, dict):
        return value.values()
    return value if isinstance(value, list) else ()


# --- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tag:
    """One `{{...}}` as written: `kind` is its sigil ("" for a variable), `start`/`end` its span."""

    kind: str
    name: str
    start: int
    end: int


def _position(source: str, offset: int) -> tuple[int, int]:
    line = source.count("\n", 0, offset) + 1
    return line, offset - (source.rfind("\n", 0, offset) + 1) + 1


def _fail(source: str, offset: int, problem: str) -> TemplateError:
    return TemplateError(*_position(source, offset), problem)


def _quoted(text: str) -> str:
    return f'"{text}"' if len(text) <= 40 else f'"{text[:37]}..."'


def _scan(source: str) -> Iterator[_Tag]:
    """Every tag in `source`, in order, each checked on its own."""
    start, count = source.find(OPEN), 0
    while start != -1:
        count += 1
        if count > MAX_TAGS:
            raise _fail(source, start, f"the template has over {MAX_TAGS:,} tags")
        tag = _read_tag(source, start)
        yield tag
        start = source.find(OPEN, tag.end)


def _read_tag(source: str, start: int) -> _Tag:
    if source.startswith("{{!--", start):
        # Handlebars' long comment, which may hold "}}"; Mustache would end it at the first "}}"
        # and print the rest, which nobody writing "{{!--" wants.
        close = source.find("--}}", start + 5)
        if close == -1:
            raise _fail(source, start, 'unclosed comment: this "{{!--" has no matching "--}}"')
        return _Tag("!", "", start, close + 4)
    close = source.find(CLOSE, start + 2)
    if close == -1 or (not source.startswith("{{!", start) and source.find(OPEN, start + 2, close) != -1):
        raise _fail(source, start, 'unclosed tag: this "{{" has no matching "}}"')
    if source.startswith("{{{", start):
        if not source.startswith("}}}", close):
            raise _fail(source, start, 'a tag opened with "{{{" must close with "}}}"')
        return _tag(source, "&", source[start + 3 : close], start, close + 3)
    inner = source[start + 2 : close]
    kind = inner[:1] if inner[:1] in SIGILS else ""
    return _tag(source, kind, inner[len(kind) :], start, close + 2)


def _tag(source: str, kind: str, name: str, start: int, end: int) -> _Tag:
    tag = _Tag(kind, name.strip(), start, end)
    problem = _tag_problem(tag, source[start:end])
    if problem:
        raise _fail(source, start, problem)
    return tag


def _tag_problem(tag: _Tag, written: str) -> str | None:
    if tag.kind == "!":
        return None
    if tag.kind == ">":
        return f"{_quoted(written)}: partials are not supported"
    if tag.kind == "=":
        return f"{_quoted(written)}: changing the delimiters is not supported"
    if tag.kind in ("<", "$"):
        return f"{_quoted(written)}: template inheritance is not supported"
    return _name_problem(tag.name, written)


def _name_problem(name: str, written: str) -> str | None:
    """Why `name` cannot be looked up, with the Mustache spelling of what a Handlebars user meant."""
    if not name:
        return f"{_quoted(written)}: the tag names nothing"
    first = name.split()[0]
    if first in HELPERS:
        return (
            f"{_quoted(written)}: helpers such as #if and #each are not supported; "
            "write {{#name}}...{{/name}} for if/each and {{^name}}...{{/name}} for unless/else"
        )
    if name == "else":
        return f"{_quoted(written)}: else is not supported; close the section and add {{{{^name}}}}...{{{{/name}}}}"
    if name == "this" or name.startswith(("this.", "this/", "../", "@")):
        return f"{_quoted(written)}: Handlebars paths are not supported; write {{{{.}}}} for the current item"
    if name != "." and not NAME.fullmatch(name):
        return (
            f"{_quoted(written)}: {_quoted(name)} is not a name; "
            "use letters, digits, _ and -, with dots between parts (user.first_name)"
        )
    return None


def _line_span(source: str, tag: _Tag) -> tuple[int, int] | None:
    """The whole line around a standalone tag, newline included; None when the tag shares its line.

    The spec (and Handlebars) drop a section, inverted, closing or comment tag's line when
    nothing but whitespace is on it, so block tags on lines of their own leave no blank lines.
    """
    # Walk the whitespace only, never the whole line: a long one-line template with many tags
    # would otherwise cost time quadratic in its length.
    line_start = tag.start
    while line_start > 0 and source[line_start - 1] in " \t":
        line_start -= 1
    if line_start > 0 and source[line_start - 1] != "\n":
        return None
    after = _LINE_END.match(source, tag.end)
    return None if after is None else (line_start, after.end())


@dataclass(slots=True)
class _Open:
    """A section being built: where it opened, and what it holds so far."""

    tag: _Tag
    body: list[Node]


def _build(source: str, tags: list[_Tag], html: bool) -> tuple[Node, ...]:
    """The node tree, with standalone lines dropped; TemplateError for unbalanced sections."""
    top: list[Node] = []
    opened: list[_Open] = []
    done = 0
    for tag in tags:
        span = _line_span(source, tag) if tag.kind in STANDALONE else None
        start, end = span or (tag.start, tag.end)
        body = opened[-1].body if opened else top
        if start > done:
            body.append(source[done:start])
        done = end
        if tag.kind in ("#", "^"):
            if len(opened) >= MAX_NESTING:
                raise _fail(source, tag.start, f"sections nest more than {MAX_NESTING} deep")
            opened.append(_Open(tag, []))
        elif tag.kind == "/":
            section = _close(source, tag, opened)
            (opened[-1].body if opened else top).append(section)
        elif tag.kind != "!":
            body.append(Variable(_path(tag.name), escape=html and tag.kind != "&"))
    if opened:
        first = opened[-1].tag
        raise _fail(source, first.start, f'section "{first.name}" is never closed (add {{{{/{first.name}}}}})')
    if done < len(source):
        top.append(source[done:])
    return tuple(top)


def _close(source: str, tag: _Tag, opened: list[_Open]) -> Section:
    if not opened:
        raise _fail(source, tag.start, f'"{{{{/{tag.name}}}}}" closes a section that is not open')
    current = opened[-1]
    if current.tag.name != tag.name:
        line, column = _position(source, current.tag.start)
        raise _fail(
            source,
            tag.start,
            f'"{{{{/{tag.name}}}}}" closes "{tag.name}", but the open section is "{current.tag.name}" '
            f"(line {line}, column {column})",
        )
    opened.pop()
    return Section(_path(current.tag.name), current.tag.kind == "^", tuple(current.body))


def _path(name: str) -> tuple[str, ...]:
    return () if name == "." else tuple(name.split("."))


# --- rendering -------------------------------------------------------------------------------


class _Absent:
    """What a lookup finds when no context has the name (None is a value: JSON null)."""


_ABSENT: Final = _Absent()


_TOO_LONG: Final = "the rendered text is over the limit of {:,} characters; shorten the template or the data"
_TOO_SLOW: Final = "rendering takes over {:,} steps; are sections nested over long lists?"


@dataclass(slots=True)
class _Budget:
    """What one recipient's render has spent so far, against its limits."""

    max_chars: int
    max_steps: int
    chars: int = 0
    steps: int = 0

    def spend(self, chars: int) -> None:
        self.chars += chars
        self.steps += 1
        if self.chars > self.max_chars:
            raise RenderError(_TOO_LONG.format(self.max_chars))
        if self.steps > self.max_steps:
            raise RenderError(_TOO_SLOW.format(self.max_steps))


def _resolve(context: object, path: list[str] | tuple[str, ...]) -> object:
    """Follow `path` through dict keys only: never an attribute, never a call."""
    value = context
    for part in path:
        if not isinstance(value, dict):
            return _ABSENT
        value = value.get(part, _ABSENT)
        if value is _ABSENT:
            return _ABSENT
    return value


def _lookup(stack: list[object], path: tuple[str, ...]) -> object:
    """The spec's rule: the first part from the innermost context that has it, the rest from there."""
    if not path:
        return stack[-1]
    first = path[0]
    for context in reversed(stack):
        if isinstance(context, dict) and first in context:
            return _resolve(context[first], path[1:])
    return _ABSENT


def _printed(value: object) -> str:
    """How a value prints: strings as they are, numbers and booleans as Handlebars prints them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return int.__repr__(value)
        except ValueError:  # over Python's 4,300-digit limit; JSON decoders refuse such numbers anyway
            return ""
    if isinstance(value, float):
        return int.__repr__(int(value)) if value.is_integer() and abs(value) < 1e16 else float.__repr__(value)
    return ""  # null, absent, objects and lists: a section shows what they hold


def _variable(node: Variable, stack: list[object]) -> str:
    piece = _printed(_lookup(stack, node.path))
    return _ESCAPE(piece) if node.escape else piece


def _truthy(value: object) -> bool:
    if isinstance(value, str | int | float | list | dict):
        return bool(value)
    return False


def _render_flat(nodes: tuple[Node, ...], root: dict[str, object], max_chars: int) -> str:
    """The sender's hot path, a template without sections: as many steps as nodes, so only size counts."""
    stack: list[object] = [root]
    out: list[str] = []
    size = 0
    # A name used many times (a first name in every paragraph) is looked up and escaped once.
    seen: dict[tuple[tuple[str, ...], bool], str] = {}
    for node in nodes:
        if isinstance(node, str):
            piece = node
        elif isinstance(node, Variable):
            key = (node.path, node.escape)
            piece = seen[key] if key in seen else seen.setdefault(key, _variable(node, stack))
        else:
            piece = ""
        size += len(piece)
        if size > max_chars:  # checked as it grows: 10,000 copies of a 16 KB value must not be built first
            raise RenderError(_TOO_LONG.format(max_chars))
        out.append(piece)
    return "".join(out)


def _render_nodes(nodes: tuple[Node, ...], stack: list[object], out: list[str], budget: _Budget) -> None:
    for node in nodes:
        if isinstance(node, str):
            piece = node
        elif isinstance(node, Variable):
            piece = _variable(node, stack)
        else:
            budget.spend(0)
            _render_section(node, stack, out, budget)
            continue
        budget.spend(len(piece))
        out.append(piece)


def _render_section(section: Section, stack: list[object], out: list[str], budget: _Budget) -> None:
    value = _lookup(stack, section.path)
    if section.inverted:
        if not _truthy(value):
            _render_nodes(section.body, stack, out, budget)
        return
    if not _truthy(value):
        return
    for item in value if isinstance(value, list) else (value,):
        budget.spend(0)
        stack.append(item)
        try:
            _render_nodes(section.body, stack, out, budget)
        finally:
            stack.pop()
