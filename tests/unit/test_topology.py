"""`WRITES_TO` against the stages' code: every write goes along an edge, and every edge is used.

A stage names an outbox in two ways. Directly, `ctx.outboxes["sender"]` (or ingest's
`ask(request, "sender", ...)`). Or as an answer: a request carries `reply_to`, the
asker's own name, and the stage that takes it writes back there. The code is read with
`ast`, so a new write shows up here without anyone updating a list.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TypeGuard

import pytest

from pipeline import messages
from pipeline.channels import STAGES, WRITES_TO, outboxes_of
from tests.helpers import ROOT

Edge = tuple[str, str]

# Each request type (a message with `reply_to`), and where `reply_to` sits among its fields.
REPLY_TO_AT = {
    cls.__name__: [f.name for f in dataclasses.fields(cls)].index("reply_to")
    for cls in vars(messages).values()
    if isinstance(cls, type) and issubclass(cls, messages.Message) and "reply_to" in cls.__dataclass_fields__
}


def stage_code(stage: str) -> list[ast.Module]:
    module = ROOT / "stages" / f"{stage}.py"
    files = [module] if module.exists() else sorted((ROOT / "stages" / stage).rglob("*.py"))
    return [ast.parse(Path(file).read_text(), str(file)) for file in files]


def text(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def is_call_of(node: ast.AST, function: str) -> TypeGuard[ast.Call]:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function


def named_outboxes(tree: ast.Module) -> Iterator[str]:
    """`<anything>.outboxes["name"]`, and ingest's `ask(request, "name", ...)`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute | ast.Name):
            owner = node.value.attr if isinstance(node.value, ast.Attribute) else node.value.id
            if owner == "outboxes" and (name := text(node.slice)) is not None:
                yield name
        elif is_call_of(node, "ask") and len(node.args) > 1 and (name := text(node.args[1])) is not None:
            yield name


def reply_to_argument(call: ast.Call) -> ast.expr | None:
    assert isinstance(call.func, ast.Name)
    for keyword in call.keywords:
        if keyword.arg == "reply_to":
            return keyword.value
    at = REPLY_TO_AT[call.func.id]
    return call.args[at] if len(call.args) > at else None


def defaults_of(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> dict[str, ast.expr]:
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args]
    with_default = positional[len(positional) - len(arguments.defaults) :]
    found = {a.arg: d for a, d in zip(with_default, arguments.defaults, strict=True)}
    found |= {a.arg: d for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if d is not None}
    return found


def requests_built(tree: ast.Module) -> Iterator[tuple[str, str]]:
    """(request type, the reply_to it is built with) wherever that name is a literal, or the
    literal default of the enclosing function's parameter (`reply_to: str = "sender"`).
    A forwarded `request.reply_to` names someone else's inbox and is not counted."""
    for scope in ast.walk(tree):
        if not isinstance(scope, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        defaults = {} if isinstance(scope, ast.Module) else defaults_of(scope)
        for node in ast.walk(scope):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in REPLY_TO_AT:
                argument = reply_to_argument(node)
                if isinstance(argument, ast.Name):
                    argument = defaults.get(argument.id)
                if (asker := text(argument)) is not None:
                    yield node.func.id, asker


def requests_taken(tree: ast.Module) -> Iterator[str]:
    """The request types a stage dispatches on (`case StoreMessages():`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.MatchClass) and isinstance(node.cls, ast.Name) and node.cls.id in REPLY_TO_AT:
            yield node.cls.id


CODE = {stage: stage_code(stage) for stage in STAGES}
NAMED = {stage: {name for tree in CODE[stage] for name in named_outboxes(tree)} for stage in STAGES}
BUILT = {stage: {pair for tree in CODE[stage] for pair in requests_built(tree)} for stage in STAGES}
TAKEN = {stage: {name for tree in CODE[stage] for name in requests_taken(tree)} for stage in STAGES}


def takers(request: str) -> list[str]:
    return [stage for stage in STAGES if request in TAKEN[stage]]


def test_the_table_joins_stages_and_no_stage_writes_to_itself() -> None:
    assert set(WRITES_TO) == set(STAGES)
    for stage, targets in WRITES_TO.items():
        assert set(targets) <= set(STAGES) and stage not in targets
        assert len(set(targets)) == len(targets)


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_names_only_outboxes_the_table_gives_it(stage: str) -> None:
    given = set(outboxes_of(stage, {name: name for name in STAGES}))
    assert NAMED[stage] <= given, f"{stage} writes to {sorted(NAMED[stage] - given)}, which WRITES_TO does not allow"


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_asks_for_answers_on_its_own_inbox(stage: str) -> None:
    assert {asker for _, asker in BUILT[stage]} <= {stage}


@pytest.mark.parametrize("stage", STAGES)
def test_every_request_a_stage_asks_has_a_taker_it_can_reach_and_that_can_answer(stage: str) -> None:
    for request, asker in BUILT[stage]:
        assert takers(request), f"{stage} asks {request}, which no stage takes"
        for taker in takers(request):
            assert taker in WRITES_TO[stage], f"{stage} cannot send {request} to {taker}"
            assert asker in WRITES_TO[taker], f"{taker} cannot answer {request} to {asker}"


def test_every_edge_of_the_table_is_used() -> None:
    direct = {(stage, target) for stage in STAGES for target in NAMED[stage]}
    asked = {(stage, taker) for stage in STAGES for request, _ in BUILT[stage] for taker in takers(request)}
    answered = {(taker, asker) for stage in STAGES for request, asker in BUILT[stage] for taker in takers(request)}
    allowed = {(stage, target) for stage, targets in WRITES_TO.items() for target in targets}
    assert allowed - (direct | asked | answered) == set(), "edges no code uses: drop them from WRITES_TO"


def test_the_code_reader_sees_what_it_is_meant_to() -> None:
    # If a refactor hides the writes from the reader above, the tests before prove nothing.
    assert {"recorder", "sender"} <= NAMED["scheduler"]
    assert ("ClaimDue", "scheduler") in BUILT["scheduler"]
    assert ("RecordOutcomes", "sender") in BUILT["sender"]
    assert {"StoreMessages", "ClaimDue", "RecordOutcomes"} <= TAKEN["recorder"]
    assert {"HoldTopic", "GetQuota"} <= TAKEN["sender"]
