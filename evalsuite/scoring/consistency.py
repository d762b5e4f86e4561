"""Self-consistency: several sampled chain-of-thought answers per document, decided by majority vote.

Rule: each sample's answer is extracted as usual; unparseable answers do not vote; the answer with the
most votes wins, a tie going to the tied answer that appears first among the samples (sample 0, 1, ...);
when every sample is unparseable, so is the document. ``agreement`` is the fraction of a document's
samples that gave the winning answer (unparseable samples never agree; 0 when all are unparseable).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import numpy as np

from evalsuite.scoring.metrics import bootstrap_chunks

VOTE_RULE = (
    "majority vote over the samples' extracted answers; unparseable answers do not vote; ties go to the "
    "answer that appears first among the samples; all unparseable -> unparseable"
)
AGREEMENT = (
    "agreement: mean over documents of (samples whose answer is the majority answer) / (samples per "
    "document); unparseable samples never agree"
)


@dataclass(frozen=True)
class Vote:
    """The winning answer (``None``: all unparseable), the first sample that gave it, and the agreement."""

    winner: Hashable | None
    sample: int | None
    agreement: float


def majority_vote(answers: Sequence[Hashable | None]) -> Vote:
    """Majority vote over ``answers`` (``None`` = unparseable); see the module docstring for the rule."""
    if not answers:
        raise ValueError("majority_vote needs at least one answer")
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return Vote(None, None, 0.0)
    top = max(counts.values())
    first = next(k for k, a in enumerate(answers) if a is not None and counts[a] == top)
    return Vote(answers[first], first, top / len(answers))


def agreement_interval(agreements: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean agreement over documents with the metrics' seeded 95% percentile-bootstrap interval."""
    x = np.asarray(agreements, dtype=np.float64)
    boot = np.concatenate([x[idx].mean(axis=1) for idx in bootstrap_chunks(len(x), n_boot, seed)])
    low, high = np.quantile(boot, [0.025, 0.975])
    interval = f"95% percentile bootstrap over documents, {n_boot} resamples, seed {seed}"
    return {"value": float(x.mean()), "low": float(low), "high": float(high),
            "definition": f"{AGREEMENT}. Interval: {interval}."}
