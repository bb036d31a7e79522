"""The generated predicate function decides exactly what the tree of closures
decides, on every program's predicates and on hand-made edge cases."""

from __future__ import annotations

import ast
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.expressions import compile_expression
from services.offers.domain.program import FEATURE_KINDS as OFFER_KINDS
from services.runtime.program_file import read_program
from services.segmenter.domain.program import FEATURE_KINDS

RAW = read_program(None)
SOURCES = [spec["when"] for spec in RAW["segments"].values()] + [
    "1 <= days_to_renewal <= 60",
    "days_to_renewal > tenure_days",
    "not (plan == 'pro' or plan is None)",
    "tenure_days // 7 == 5 and mrr / seats_purchased >= 100",
    "-days_to_renewal < 3",
    "abs(days_to_renewal) <= max(tenure_days, 30)",
    "min(mrr, arr) > 0 or coalesce(last_nps, 0) >= 9",
    "'sso' in adopted and 'api' not in adopted",
    "seat_utilization >= 0.9 and seats_purchased > 0",
    "membership not in ('new', 'active')",
    "last_nps is None or last_nps is not None and last_nps < 7",
    "mrr % 2 == 0 and mrr - arr != mrr + 1",
    "rfm_cell in ('champions', 'loyal') and r_score * 2 >= f_score + 1",
    "onboarding_completed",
    "days_since_last_login",
]
OFFER_SOURCES = [
    r["when"] for r in RAW["offers"]["rules"].values() if isinstance(r, dict) and "when" in r
]

_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "number": st.one_of(
        st.none(),
        st.sampled_from([-3, 0, 1, 2, 3, 4, 5, 7, 9, 12, 14, 20, 26, 30, 60, 61, 100, 365]),
        st.integers(-5, 400),
        st.floats(-2, 2, allow_nan=False),
        st.booleans(),
    ),
    "text": st.one_of(st.none(), st.sampled_from(["new", "active", "pro", "month", "year", ""])),
    "flag": st.one_of(st.none(), st.booleans()),
    "set": st.one_of(st.none(), st.frozensets(st.sampled_from(["sso", "api", "reports"]))),
    "date": st.none(),
}


def envs(kinds: dict[str, str], source: str = "") -> st.SearchStrategy[dict[str, Any]]:
    """Values of every kind, numbers mostly next to the source's own constants
    (where ``<`` and ``<=`` part ways)."""
    near: set[Any] = {0}
    for node in ast.walk(ast.parse(source or "0", mode="eval")):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            near.update(node.value + d for d in (-1, 0, 1))
            near.update(-node.value + d for d in (-1, 0, 1))
    numbers = st.one_of(st.sampled_from(sorted(near)), _VALUES["number"])
    return st.fixed_dictionaries(
        {name: numbers if kind == "number" else _VALUES[kind] for name, kind in kinds.items()}
    )


@st.composite
def cases(draw: st.DrawFn, sources: list[str], kinds: dict[str, str]) -> tuple[str, Any]:
    source = draw(st.sampled_from(sources))
    return source, draw(envs(kinds, source))


@settings(max_examples=2000, deadline=None)
@given(cases(SOURCES, FEATURE_KINDS))
def test_generated_predicates_decide_what_the_closures_decide(case: tuple[str, Any]) -> None:
    source, env = case
    compiled = compile_expression(source, FEATURE_KINDS)
    slow = compiled.slow  # type: ignore[attr-defined]
    try:
        expected: Any = slow(env)
    except TypeError as exc:  # e.g. arithmetic on a text: both must raise
        expected = type(exc)
    try:
        got: Any = compiled(env)
    except TypeError as exc:
        got = type(exc)
    assert got == expected and type(got) is type(expected)


@settings(max_examples=300, deadline=None)
@given(cases(OFFER_SOURCES, OFFER_KINDS))
def test_offer_rule_conditions_too(case: tuple[str, Any]) -> None:
    source, env = case
    compiled = compile_expression(source, OFFER_KINDS)
    assert compiled(env) == compiled.slow(env)  # type: ignore[attr-defined]


def test_mixed_types_fall_back_to_the_closures_answer() -> None:
    compiled = compile_expression("plan < 3", {"plan": "number"})
    assert compiled({"plan": "pro"}) is False  # a str and an int: not less, not an error


def test_every_operator_at_its_boundary() -> None:
    kinds = {"x": "number", "y": "number", "s": "set", "t": "text"}
    sources = [f"x {op} 3" for op in ("<", "<=", ">", ">=", "==", "!=")]
    sources += [f"3 {op} x" for op in ("<", "<=", ">", ">=")]
    sources += ["x in (2, 3)", "x not in (2, 3)", "x is None", "x is not None", "2 < x <= y"]
    sources += ["'a' in s", "'a' not in s", "t == 'a'", "t != 'a'", "not x", "x and y or not y"]
    for source in sources:
        compiled = compile_expression(source, kinds)
        for x in (None, 2, 3, 4, 2.5, True, False, 0):
            for y in (None, 3, 4):
                for sv in (None, frozenset(), frozenset({"a"})):
                    env = {"x": x, "y": y, "s": sv, "t": "a" if y == 3 else None}
                    assert compiled(env) == compiled.slow(env), (source, env)  # type: ignore[attr-defined]
