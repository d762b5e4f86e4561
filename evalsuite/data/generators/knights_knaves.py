"""Knights and knaves: knights always tell the truth, knaves always lie; who is which?

Level ``n`` has ``n`` islanders (2 to 4), each making one statement about the others (or about
themselves together with another). The puzzle is solved by brute force over all ``2**n`` assignments: a
person's statement must be true exactly when that person is a knight. Only puzzles with exactly one
solution are kept. The question is multiple choice: the solution and three other assignments (for three
or four people, the nearest ones first: they differ from the solution in one person).
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Callable

NAME = "knights_knaves"
LEVELS = (2, 3, 4)
N_OPTIONS = 4
DESCRIPTION = "n islanders (2 to 4) make statements; which assignment of knights and knaves is the solution?"
NAMES = (
    "Alice", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack", "Kira", "Leo",
    "Mona", "Nick", "Olga", "Paul", "Quinn", "Rosa", "Sam", "Tina", "Uma", "Victor", "Wendy", "Zoe",
)

Assignment = tuple[bool, ...]  # True = knight
Claim = Callable[[Assignment], bool]


def _statement(rng: random.Random, speaker: int, n: int, names: list[str]) -> tuple[str, Claim]:
    others = [i for i in range(n) if i != speaker]
    x = rng.choice(others)
    y = rng.choice([i for i in range(n) if i != x])  # may be the speaker
    kind = rng.randrange(8)
    name_x = names[x]
    name_y = "I" if y == speaker else names[y]
    pair = f"{name_x} and {name_y}" if y != speaker else f"{name_x} and I"
    if kind == 0:
        return f"{name_x} is a knight.", lambda a: a[x]
    if kind == 1:
        return f"{name_x} is a knave.", lambda a: not a[x]
    if kind == 2:
        return f"{pair} are both knights.", lambda a: a[x] and a[y]
    if kind == 3:
        return f"{pair} are both knaves.", lambda a: not a[x] and not a[y]
    if kind == 4:
        return f"At least one of {pair.replace(' and ', ' or ')} is a knight.", lambda a: a[x] or a[y]
    if kind == 5:
        return f"{pair} are the same kind.", lambda a: a[x] == a[y]
    if kind == 6:
        return f"{pair} are different kinds.", lambda a: a[x] != a[y]
    conditional = "I am" if y == speaker else f"{names[y]} is"
    return f"If {name_x} is a knight, then {conditional} a knave.", lambda a: (not a[x]) or (not a[y])


def solutions(claims: list[Claim], n: int) -> list[Assignment]:
    return [a for a in itertools.product((True, False), repeat=n) if all(claim(a) == a[i] for i, claim in enumerate(claims))]


def describe(assignment: Assignment, names: list[str]) -> str:
    return ", ".join(f"{name} is a {'knight' if knight else 'knave'}" for name, knight in zip(names, assignment)) + "."


def make(rng: random.Random, level: int, slot: int) -> dict[str, Any]:
    n = level
    while True:
        names = rng.sample(NAMES, n)
        said = [_statement(rng, i, n, names) for i in range(n)]
        found = solutions([claim for _, claim in said], n)
        if len(found) != 1:
            continue
        solution = found[0]
        others = [a for a in itertools.product((True, False), repeat=n) if a != solution]
        rng.shuffle(others)
        others.sort(key=lambda a: sum(u != v for u, v in zip(a, solution)))  # nearest first, ties shuffled
        options = others[: N_OPTIONS - 1]
        rng.shuffle(options)
        options.insert(slot % N_OPTIONS, solution)  # the gold position goes round-robin
        return {
            "statements": [f"{names[i]} says: \"{text}\"" for i, (text, _) in enumerate(said)],
            "names": names,
            "options": [describe(o, names) for o in options],
            "label": options.index(solution),
        }


def key(doc: dict[str, Any]) -> str:
    return " ".join(doc["statements"])
