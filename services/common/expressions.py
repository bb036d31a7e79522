"""A small, safe expression language for segment predicates.

Python expression syntax, restricted to: ``and``/``or``/``not``, comparisons
(``== != < <= > >= in not in is is not``), arithmetic (``+ - * / // %``),
numbers, strings, ``True``/``False``/``None``, tuples or lists of constants, the
feature names, and the functions ``coalesce``, ``min``, ``max``, ``abs``.

Unknown values (None) are SQL-like: arithmetic with None gives None and an
ordering comparison with None is False, so ``days_since_last_login >= 30`` is
False for an account that never logged in. Use ``coalesce(x, default)`` or
``x is None`` to say otherwise.
"""

from __future__ import annotations

import ast
import difflib
import operator
from collections.abc import Callable, Mapping
from typing import Any

Compiled = Callable[[Mapping[str, Any]], Any]


class ExpressionError(ValueError):
    """An invalid expression; the message says what and where."""


_CMP: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_NULL_SAFE = (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)
_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def _coalesce(*args: Any) -> Any:
    return next((a for a in args if a is not None), None)


def _null_min(*args: Any) -> Any:
    return None if any(a is None for a in args) else min(args)


def _null_max(*args: Any) -> Any:
    return None if any(a is None for a in args) else max(args)


def _null_abs(a: Any) -> Any:
    return None if a is None else abs(a)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "coalesce": _coalesce,
    "min": _null_min,
    "max": _null_max,
    "abs": _null_abs,
}


def compile_expression(source: str, names: Mapping[str, str]) -> Compiled:
    """Parses and checks ``source`` against the known feature ``names`` (name -> kind:
    ``number``, ``text``, ``flag`` or ``set``); returns an evaluator.

    The evaluator is the expression turned into one Python function (predicates run
    for every account an event or a day touches). Its semantics are those of the
    tree of closures :func:`_compile` builds, which it falls back to whenever the
    fast form meets a ``TypeError`` (a comparison of values of different types,
    which the closures treat as false); a test holds the two equal."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error at column {exc.offset}: {exc.msg}") from None
    slow = _compile(tree.body, names)  # also checks names, types and syntax
    fast = _generate(tree.body)

    def evaluate(env: Mapping[str, Any]) -> Any:
        try:
            return fast(env)
        except TypeError:
            return slow(env)

    evaluate.slow = slow  # type: ignore[attr-defined]
    return evaluate


def _arith_fn(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def arith(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        try:
            return op(a, b)
        except ZeroDivisionError:
            return None

    return arith


def _neg(v: Any) -> Any:
    return None if v is None else -v


_GENERATED_OPS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}


def _generate(node: ast.expr) -> Compiled:
    """The expression (already checked by :func:`_compile`) as one function."""
    namespace: dict[str, Any] = {f"_f_{k}": fn for k, fn in FUNCTIONS.items()}
    namespace["_neg"] = _neg
    for op, arith in _ARITH.items():
        namespace[f"_a_{op.__name__}"] = _arith_fn(arith)
    counter = iter(range(1_000_000))

    def temp() -> str:
        return f"_t{next(counter)}"

    def gen(n: ast.expr) -> str:
        if isinstance(n, ast.Constant):
            return repr(n.value)
        if isinstance(n, ast.Name):
            return f"env[{n.id!r}]"
        if isinstance(n, (ast.Tuple, ast.List)):
            return "(" + "".join(gen(e) + ", " for e in n.elts) + ")"
        if isinstance(n, ast.BoolOp):
            joiner = " and " if isinstance(n.op, ast.And) else " or "
            return "(" + joiner.join(f"bool({gen(v)})" for v in n.values) + ")"
        if isinstance(n, ast.UnaryOp):
            if isinstance(n.op, ast.Not):
                return f"(not {gen(n.operand)})"
            return f"_neg({gen(n.operand)})"
        if isinstance(n, ast.BinOp):
            return f"_a_{type(n.op).__name__}({gen(n.left)}, {gen(n.right)})"
        if isinstance(n, ast.Call):
            assert isinstance(n.func, ast.Name)
            return f"_f_{n.func.id}(" + ", ".join(gen(a) for a in n.args) + ")"
        if isinstance(n, ast.Compare):
            left = temp()
            parts = [f"(({left} := {gen(n.left)}) is not None or True)"]
            for op, right_node in zip(n.ops, n.comparators, strict=True):
                right = temp()
                parts.append(f"(({right} := {gen(right_node)}) is not None or True)")
                if not isinstance(op, _NULL_SAFE):  # unknown is never less, nor in
                    parts.append(f"{left} is not None and {right} is not None")
                parts.append(f"({left} {_GENERATED_OPS[type(op)]} {right})")
                left = right
            return "(" + " and ".join(parts) + ")"
        raise ExpressionError(f"unsupported syntax: {type(n).__name__}")

    source = f"def _predicate(env):\n    return {gen(node)}\n"
    # only checked nodes reach here: constants as repr(), names known features
    exec(compile(source, "<expression>", "exec"), namespace)
    predicate: Compiled = namespace["_predicate"]
    return predicate


def _compile(node: ast.expr, names: Mapping[str, str]) -> Compiled:
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float, str, bool, type(None))):
            raise ExpressionError(f"unsupported constant {node.value!r}")
        value = node.value
        return lambda env: value
    if isinstance(node, ast.Name):
        name = node.id
        if name not in names:
            near = difflib.get_close_matches(name, list(names), n=4, cutoff=0.6)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ExpressionError(f"unknown feature {name!r}{hint}")
        return lambda env: env[name]
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_compile(e, names) for e in node.elts]
        return lambda env: tuple(i(env) for i in items)
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, names) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda env: all(bool(p(env)) for p in parts)
        return lambda env: any(bool(p(env)) for p in parts)
    if isinstance(node, ast.UnaryOp):
        inner = _compile(node.operand, names)
        if isinstance(node.op, ast.Not):
            return lambda env: not inner(env)
        if isinstance(node.op, ast.USub):
            return lambda env: None if (v := inner(env)) is None else -v
        raise ExpressionError(f"unsupported operator {type(node.op).__name__}")
    if isinstance(node, ast.BinOp):
        found = _ARITH.get(type(node.op))
        if found is None:
            raise ExpressionError(f"unsupported operator {type(node.op).__name__}")
        op_fn: Callable[[Any, Any], Any] = found
        left, right = _compile(node.left, names), _compile(node.right, names)

        def arith(env: Mapping[str, Any]) -> Any:
            a, b = left(env), right(env)
            if a is None or b is None:
                return None
            try:
                return op_fn(a, b)
            except ZeroDivisionError:
                return None

        return arith
    if isinstance(node, ast.Compare):
        return _compare(node, names)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise ExpressionError(f"unknown function; use one of {', '.join(FUNCTIONS)}")
        if node.keywords or not node.args:
            raise ExpressionError(f"{node.func.id}() takes positional arguments")
        fn = FUNCTIONS[node.func.id]
        args = [_compile(a, names) for a in node.args]
        return lambda env: fn(*(a(env) for a in args))
    raise ExpressionError(f"unsupported syntax: {type(node).__name__}")


def _kind_of_constant(value: object) -> str:
    if isinstance(value, bool):
        return "flag"
    if isinstance(value, (int, float)):
        return "number"
    return "text" if isinstance(value, str) else "none"


def _check_types(left: ast.expr, op: ast.cmpop, right: ast.expr, names: Mapping[str, str]) -> None:
    if isinstance(op, (ast.In, ast.NotIn)):
        if isinstance(right, ast.Name) and names.get(right.id) != "set":
            raise ExpressionError(
                f"'in {right.id}': {right.id} is a {names.get(right.id)}, not a set"
            )
        return
    pairs = [(left, right), (right, left)]
    for a, b in pairs:
        if isinstance(a, ast.Name) and isinstance(b, ast.Constant) and b.value is not None:
            want, got = names.get(a.id), _kind_of_constant(b.value)
            if want != got and not (want == "number" and got == "flag"):
                raise ExpressionError(
                    f"{a.id} is a {want} but is compared with the {got} {b.value!r}"
                )


def _compare(node: ast.Compare, names: Mapping[str, str]) -> Compiled:
    first = _compile(node.left, names)
    steps = [
        (type(op), _CMP[type(op)], _compile(right, names))
        for op, right in zip(node.ops, node.comparators, strict=True)
    ]
    left_node = node.left
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        _check_types(left_node, op, right_node, names)
        left_node = right_node

    def compare(env: Mapping[str, Any]) -> bool:
        left = first(env)
        for kind, fn, right_c in steps:
            right = right_c(env)
            if (left is None or right is None) and kind not in _NULL_SAFE:
                return False
            try:
                if not fn(left, right):
                    return False
            except TypeError:
                return False
            left = right
        return True

    return compare


def referenced_names(source: str) -> frozenset[str]:
    """The feature names an expression reads (it must already compile)."""
    tree = ast.parse(source.strip(), mode="eval")
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in calls)


def constants_tested_in(source: str, set_name: str) -> frozenset[str]:
    """The string constants an expression tests for membership of ``set_name``
    (``'gold' in tiers`` -> {'gold'}), to check them against what can be there."""
    tree = ast.parse(source.strip(), mode="eval")
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for left, op, right in zip(operands, node.ops, operands[1:], strict=False):
            if (
                isinstance(op, (ast.In, ast.NotIn))
                and isinstance(right, ast.Name)
                and right.id == set_name
                and isinstance(left, ast.Constant)
                and isinstance(left.value, str)
            ):
                found.add(left.value)
    return frozenset(found)
