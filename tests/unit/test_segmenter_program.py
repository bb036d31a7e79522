"""Programs: expressions, and refusals that name the segment, field and problem."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.expressions import ExpressionError, compile_expression
from services.common.program import ProgramError
from services.runtime.program_file import read_program
from services.segmenter.domain.program import FEATURE_KINDS, load_program

KINDS = {"a": "number", "b": "number", "plan": "text", "adopted": "set", "flag": "flag"}


@pytest.mark.parametrize(
    ("source", "env", "expected"),
    [
        ("a >= 3 and b < 2", {"a": 3, "b": 1}, True),
        ("a >= 3", {"a": None}, False),  # unknown is not >= anything
        ("a is None", {"a": None}, True),
        ("coalesce(a, b) >= 30", {"a": None, "b": 31}, True),
        ("plan in ('pro', 'team')", {"plan": "team"}, True),
        ("'sso' in adopted", {"adopted": frozenset({"sso"})}, True),
        ("not flag or a / b > 1", {"flag": True, "a": 1, "b": 0}, False),  # x/0 is unknown
        ("1 < a <= 5", {"a": 5}, True),
        ("max(a, b) - min(a, b) == 2", {"a": 7, "b": 5}, True),
    ],
)
def test_expressions(source: str, env: dict[str, Any], expected: bool) -> None:
    assert bool(compile_expression(source, KINDS)(env)) is expected


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("a >= ", "syntax error"),
        ("nope > 1", "unknown feature 'nope'"),
        ("plan > 3", "plan is a text but is compared with the number 3"),
        ("a == 'x'", "a is a number but is compared with the text 'x'"),
        ("__import__('os')", "unknown function"),
        ("a.real > 1", "unsupported syntax: Attribute"),
        ("'x' in plan", "plan is a text, not a set"),
    ],
)
def test_bad_expressions_say_why(source: str, problem: str) -> None:
    with pytest.raises(ExpressionError, match=problem):
        compile_expression(source, KINDS)


def test_the_default_program_is_valid_and_has_the_issue_segments() -> None:
    program = load_program(read_program(None))
    names = {s.name for s in program.segments}
    assert {
        "newly_activated",
        "power_users",
        "at_risk",
        "expansion_ready",
        "value_high",
        "value_mid",
        "value_low",
        "member_new",
        "member_active",
        "member_expired",
        "non_member",
        "tier_silver",
        "tier_gold",
        "tier_platinum",
    } <= names


@pytest.mark.parametrize(
    ("program", "message"),
    [
        (
            {"segments": {"x": {"when": "key_actions_31d > 1"}}},
            "segment 'x', field 'when': unknown feature 'key_actions_31d'",
        ),
        ({"segments": {"x": {"when": "plan >= 2"}}}, "segment 'x', field 'when': plan is a text"),
        ({"segments": {"x": {}}}, "segment 'x', field 'when': Field required"),
        (
            {"segments": {"x": {"when": "mrr > 0", "colour": "red"}}},
            "segment 'x', field 'colour': Extra inputs are not permitted",
        ),
        ({"segments": {"Bad Name": {"when": "mrr > 0"}}}, "segment 'Bad Name', field 'name'"),
        ({"segments": {}}, "defines no segment"),
        (
            {"stream": {"allowed_lateness": "soon"}, "segments": {"x": {"when": "mrr > 0"}}},
            "stream, field 'allowed_lateness'",
        ),
        (
            {"rfm": {"recency_events": ["product.teleport"]}, "segments": {"x": {"when": "mrr>0"}}},
            "rfm, field 'recency_events': unknown event type 'product.teleport'",
        ),
        (
            {"rfm": {"monetary": "vibes"}, "segments": {"x": {"when": "mrr > 0"}}},
            "rfm, field 'monetary'",
        ),
    ],
)
def test_bad_programs_name_segment_field_and_problem(program: dict[str, Any], message: str) -> None:
    with pytest.raises(ProgramError) as caught:
        load_program(program)
    assert any(message in p for p in caught.value.problems), caught.value.problems


def test_several_problems_are_reported_at_once() -> None:
    with pytest.raises(ProgramError) as caught:
        load_program({"segments": {"a": {"when": "nope"}, "b": {"when": "mrr >"}}})
    assert len(caught.value.problems) == 2


def test_other_services_sections_are_left_to_them() -> None:
    load_program({"offers": {"anything": 1}, "segments": {"x": {"when": "mrr > 0"}}})


def test_every_feature_is_usable() -> None:
    for name, kind in FEATURE_KINDS.items():
        if kind == "number":
            compile_expression(f"{name} > 0", FEATURE_KINDS)
