"""Propositional logic: given premises, is a conclusion True (entailed), False (its negation is
entailed) or Unknown (neither)?

Level ``L`` uses ``L + 1`` variables (letters drawn from p to z) and ``L + 1`` premises built from "not", "and", "or",
"if ... then ..." and "if and only if", written in words with parentheses for nesting. Labels come from
the full truth table (at most 64 rows): the premises must be satisfiable; the conclusion is True when it
holds in every row satisfying them, False when in none, Unknown otherwise.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Union

NAME = "propositional"
LEVELS = (1, 2, 3, 4, 5)
LABELS = ("True", "False", "Unknown")
DESCRIPTION = "L + 1 premises over L + 1 variables; is the conclusion True, False or Unknown?"
VARIABLES = tuple("pqrstuvwxyz")

Formula = Union[str, tuple]  # a variable name, ("not", f), or (op, f, g) with op in and/or/if/iff


def render(formula: Formula, nested: bool = False) -> str:
    if isinstance(formula, str):
        return formula
    if formula[0] == "not":
        return f"not {render(formula[1], True)}"
    op, left, right = formula
    a, b = render(left, True), render(right, True)
    text = {"and": f"{a} and {b}", "or": f"{a} or {b}", "if": f"if {a} then {b}", "iff": f"{a} if and only if {b}"}[op]
    return f"({text})" if nested else text


def value(formula: Formula, row: dict[str, bool]) -> bool:
    if isinstance(formula, str):
        return row[formula]
    if formula[0] == "not":
        return not value(formula[1], row)
    op, left, right = formula
    a, b = value(left, row), value(right, row)
    return {"and": a and b, "or": a or b, "if": (not a) or b, "iff": a == b}[op]


def label_of(premises: list[Formula], conclusion: Formula, variables: tuple[str, ...]) -> str | None:
    """True/False/Unknown by truth table; None when the premises are unsatisfiable."""
    rows = [dict(zip(variables, bits)) for bits in itertools.product((True, False), repeat=len(variables))]
    models = [row for row in rows if all(value(p, row) for p in premises)]
    if not models:
        return None
    holds = [value(conclusion, row) for row in models]
    return "True" if all(holds) else "False" if not any(holds) else "Unknown"


def _literal(rng: random.Random, variables: tuple[str, ...]) -> Formula:
    v = rng.choice(variables)
    return ("not", v) if rng.random() < 0.3 else v


def _premise(rng: random.Random, variables: tuple[str, ...]) -> Formula:
    roll = rng.random()
    if roll < 0.2:
        return _literal(rng, variables)
    a, b = rng.sample(variables, 2)
    left = ("not", a) if rng.random() < 0.25 else a
    right = ("not", b) if rng.random() < 0.25 else b
    if roll < 0.55:
        return ("if", left, right)
    if roll < 0.75:
        return ("or", left, right)
    if roll < 0.85:
        return ("iff", left, right)
    c = rng.choice([v for v in variables if v not in (a, b)] or [a])  # nested: if (x and y) then z, ...
    inner = (rng.choice(("and", "or")), left, right)
    return ("if", inner, c) if rng.random() < 0.5 else ("if", c, inner)


def make(rng: random.Random, level: int, slot: int) -> dict[str, Any]:
    label = LABELS[slot % 3]
    while True:
        variables = tuple(sorted(rng.sample(VARIABLES, level + 1)))
        premises = [_premise(rng, variables) for _ in range(level + 1)]
        mentioned = set(" ".join(render(p) for p in premises).replace("(", " ").replace(")", " ").split())
        if not set(variables) <= mentioned:
            continue  # every variable takes part
        conclusion = _literal(rng, variables) if rng.random() < 0.7 else (
            rng.choice(("and", "or", "if")), *rng.sample(variables, 2))
        texts = [render(p) for p in premises]
        negated = conclusion[1] if conclusion[0] == "not" else ("not", conclusion)
        if render(conclusion) in texts or render(negated) in texts:
            continue  # answered by reading a premise: no reasoning needed
        if label_of(premises, conclusion, variables) == label:
            return {
                "premises": texts,
                "conclusion": render(conclusion),
                "label": label,
            }


def key(doc: dict[str, Any]) -> str:
    return "; ".join(doc["premises"]) + " => " + doc["conclusion"]
