"""Categorical syllogisms and chains of them (sorites): is the conclusion valid?

Level ``L`` has ``L + 1`` premises over ``L + 2`` made-up plural terms ("wumpuses"), so that what the
words mean in the world cannot help (no belief bias). Level 1 is the classic two-premise syllogism; its
labels agree with the textbook mood-figure table (the 15 unconditionally valid forms). Premises link
consecutive terms of a hidden chain and are shown shuffled; the conclusion relates the chain's ends.

Solver: a statement constrains the regions of the terms' Venn diagram (``All X are Y``: no member of X
outside Y; ``Some X are Y``: some member in X and Y; ``No``, ``Some ... not`` likewise). Universal
statements empty regions, particular ones need a non-empty region; a set of them is satisfiable exactly
when every particular statement keeps a region that no universal one empties. The conclusion is valid when
the premises plus its negation are unsatisfiable. Items are kept only when the answer is the same with and
without existential import (every term non-empty), so the 9 forms valid only under existential import
(Barbari, Darapti, ...) never appear and nobody's reading of "All" changes the label.
"""

from __future__ import annotations

import functools
import random
from typing import Any

NAME = "syllogisms"
LEVELS = (1, 2, 3, 4, 5)
LABELS = ("Valid", "Invalid")
DESCRIPTION = "Chains of L + 1 categorical premises over made-up terms; is the conclusion valid?"
TERMS = (
    "wumpuses", "yumpuses", "zumpuses", "dumpuses", "rompuses", "numpuses", "tumpuses", "vumpuses",
    "impuses", "jompuses", "gorpuses", "shumpuses", "lempuses", "sterpuses", "grimpuses", "lorpuses",
    "brimpuses", "fimpuses", "welpuses", "borpuses",
)
FORMS = ("A", "E", "I", "O")  # All, No, Some, Some ... not
# How a link of the hidden chain is drawn: mostly chainable "All X are Y", but every form in both directions.
_LINKS = (("A", False, 45), ("A", True, 15), ("E", False, 15), ("I", False, 15), ("O", False, 5), ("O", True, 5))

Statement = tuple[str, int, int]  # (form, subject term index, predicate term index)


def sentence(statement: Statement, terms: list[str]) -> str:
    form, s, p = statement
    subject, predicate = terms[s], terms[p]
    return {
        "A": f"All {subject} are {predicate}.",
        "E": f"No {subject} are {predicate}.",
        "I": f"Some {subject} are {predicate}.",
        "O": f"Some {subject} are not {predicate}.",
    }[form]


def _area(statement: Statement, n_terms: int) -> tuple[bool, int]:
    """(is universal, the statement's area as a bitmask over Venn regions). A region is a bitmask over the
    terms (region 0, outside every term, never matters); ``All S are P`` empties the area "in S, not in P",
    ``Some S are P`` needs the area "in S and P" non-empty, and so on."""
    form, s, p = statement
    required = (1 << s) | ((1 << p) if form in ("E", "I") else 0)
    forbidden = (1 << p) if form in ("A", "O") else 0
    return form in ("A", "E"), _regions(required, forbidden, n_terms)


@functools.lru_cache(maxsize=None)
def _regions(required: int, forbidden: int, n_terms: int) -> int:
    return sum(1 << r for r in range(1, 1 << n_terms) if r & required == required and not r & forbidden)


_NEGATION = {"A": "O", "O": "A", "E": "I", "I": "E"}


def satisfiable(statements: list[Statement], n_terms: int, existential_import: bool) -> bool:
    """Satisfiable exactly when every particular statement keeps a region no universal one empties."""
    emptied, needs = 0, []
    for statement in statements:
        universal, area = _area(statement, n_terms)
        if universal:
            emptied |= area
        else:
            needs.append(area)
    if existential_import:
        needs += [_regions(1 << t, 0, n_terms) for t in range(n_terms)]
    return all(area & ~emptied for area in needs)


def valid(premises: list[Statement], conclusion: Statement, n_terms: int, existential_import: bool) -> bool | None:
    """True/False, or None when the premises themselves are unsatisfiable."""
    if not satisfiable(premises, n_terms, existential_import):
        return None
    form, s, p = conclusion
    return not satisfiable([*premises, (_NEGATION[form], s, p)], n_terms, existential_import)


def make(rng: random.Random, level: int, slot: int) -> dict[str, Any]:
    want_valid = LABELS[slot % 2] == "Valid"
    n_terms = level + 2
    weights = [w for *_, w in _LINKS]
    while True:
        terms = rng.sample(TERMS, n_terms)
        premises: list[Statement] = []
        for i in range(n_terms - 1):
            form, backwards, _ = rng.choices(_LINKS, weights)[0]
            if form in ("E", "I"):  # symmetric: word order is free
                backwards = rng.random() < 0.5
            premises.append((form, i + 1, i) if backwards else (form, i, i + 1))
        ends = (0, n_terms - 1)
        candidates = [(f, *ends) for f in FORMS] + [(f, *reversed(ends)) for f in FORMS]
        verdicts = [(c, valid(premises, c, n_terms, False), valid(premises, c, n_terms, True)) for c in candidates]
        # Both readings of "All" must agree; the premises must be consistent under both.
        agreed = [c for c, modern, classic in verdicts if modern is not None and modern == classic and modern == want_valid]
        chainable = any(modern and classic for _, modern, classic in verdicts)
        if not agreed or (not want_valid and not chainable and rng.random() < 0.5):
            continue  # half of the invalid items come from chains that do support some conclusion
        conclusion = rng.choice(agreed)
        rng.shuffle(premises)
        return {
            "premises": [sentence(p, terms) for p in premises],
            "conclusion": sentence(conclusion, terms),
            "label": "Valid" if want_valid else "Invalid",
        }


def key(doc: dict[str, Any]) -> str:
    return " ".join(doc["premises"]) + " => " + doc["conclusion"]
