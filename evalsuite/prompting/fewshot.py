"""Seeded few-shot example selection, reproducible on every run and machine.

Randomness comes from ``random.Random`` seeded with a string (hashed with SHA-512 by Python, so it does not
depend on ``PYTHONHASHSEED``, the platform or the order documents are processed in).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence

from evalsuite.spec import SAMPLERS


class FewshotSampler:
    """Chooses ``k`` examples from a pool for each evaluated document.

    ``random``: a seeded sample per document; ``first``: the first k of the pool; ``fixed``: one seeded
    sample shared by every document (so the few-shot prefix is computed once); ``balanced``: round-robin
    over gold labels (label order shuffled per document), so each label appears ⌊k/L⌋ or ⌈k/L⌉ times.
    When the pool is the evaluated split itself, the evaluated document is never its own example.
    """

    def __init__(
        self,
        pool_ids: Sequence[int],
        *,
        k: int,
        method: str = "random",
        seed: int = 0,
        salt: str = "",
        labels: Sequence[int] | None = None,
        same_split: bool = False,
    ):
        if method not in SAMPLERS:
            raise ValueError(f"unknown few-shot sampler {method!r}; use one of {', '.join(SAMPLERS)}")
        if method == "balanced" and labels is None:
            raise ValueError("the balanced sampler needs the pool's labels")
        self.pool_ids, self.k, self.method = list(pool_ids), k, method
        self.seed, self.salt, self.same_split = seed, salt, same_split
        self.labels = list(labels) if labels is not None else None

    def select(self, doc_id: int) -> list[int]:
        """Indices into the pool for the document ``doc_id``."""
        if self.k <= 0:
            return []
        candidates = [i for i, pid in enumerate(self.pool_ids) if not (self.same_split and pid == doc_id)]
        if len(candidates) < self.k:
            raise ValueError(f"the few-shot pool has {len(candidates)} usable examples, fewer than k={self.k}")
        rng = random.Random(f"{self.seed}:{self.salt}:{doc_id}")
        if self.method == "first":
            return candidates[: self.k]
        if self.method == "fixed":
            order = random.Random(f"{self.seed}:{self.salt}").sample(range(len(self.pool_ids)), len(self.pool_ids))
            return [i for i in order if not (self.same_split and self.pool_ids[i] == doc_id)][: self.k]
        if self.method == "random":
            return rng.sample(candidates, self.k)
        by_label: dict[int, list[int]] = defaultdict(list)
        for i in candidates:
            by_label[self.labels[i]].append(i)
        queues = [rng.sample(by_label[label], len(by_label[label])) for label in sorted(by_label)]
        rng.shuffle(queues)
        chosen: list[int] = []
        while len(chosen) < self.k:
            for queue in queues:
                if queue and len(chosen) < self.k:
                    chosen.append(queue.pop())
        return chosen
