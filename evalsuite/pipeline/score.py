"""Score: samples to metrics with intervals, through the one record-to-predictions path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalsuite.prompting import Instance
from evalsuite.results.records import Outcome, Sample, predictions
from evalsuite.scoring import (
    VOTE_RULE,
    MetricResult,
    Predictions,
    accuracy_by_group,
    agreement_interval,
    compute_metrics,
    metrics_for,
    resolve_metric,
)
from evalsuite.spec import TaskSpec


@dataclass
class Tally:
    """What the metrics need of each evaluated document, gathered chunk by chunk (never its prompt)."""

    outcomes: list[Outcome] = field(default_factory=list)
    levels: list[Any] = field(default_factory=list)  # each document's difficulty, None when it has none
    agreements: list[float] = field(default_factory=list)  # with several samples per document
    thinking: list[dict[str, Any]] = field(default_factory=list)  # per document, in runs with --think
    width: int = 1  # the most choices (or answer values) of any document

    def add(self, samples: Sequence[Sample], instances: Sequence[Instance] = ()) -> None:
        for sample in samples:
            self.outcomes.append(Outcome.of(sample))
            self.levels.append(sample.difficulty)
            if sample.agreement is not None:
                self.agreements.append(sample.agreement)
            if sample.thinking is not None:
                self.thinking.append(sample.thinking)
        for inst in instances:
            self.width = max(self.width, len(inst.continuations), len(inst.answer_values))

    def labels(self, task: TaskSpec) -> tuple[str, ...]:
        """The task's labels, else a letter per choice (a number past 26 choices)."""
        width = max(len(task.labels or ()), self.width)
        return task.labels or tuple(chr(ord("A") + k) if width <= 26 else str(k) for k in range(width))


@dataclass(frozen=True)
class Scores:
    """An evaluation's scoring: its predictions, metrics and optional breakdowns."""

    predictions: Predictions
    metrics: dict[str, MetricResult]
    extra: dict[str, Any]  # by_difficulty, self_consistency, thinking, fewshot_draws and by_draw


def score(task: TaskSpec, method: str, tally: Tally, labels: Sequence[str], *, n_boot: int, seed: int,
          n_samples: int = 1, temperature: float = 0.0) -> Scores:
    positive = list(labels).index(task.positive) if task.positive else None
    return score_tally(metrics_for(task.metrics, method, n_samples), positive, tally, labels, n_boot=n_boot,
                       seed=seed, n_samples=n_samples, temperature=temperature, cluster_by=task.cluster)


def score_tally(metric_names: Sequence[str], positive: int | None, tally: Tally, labels: Sequence[str], *,
                n_boot: int, seed: int, n_samples: int = 1, temperature: float = 0.0,
                cluster_by: str | None = None) -> Scores:
    """The metrics (with intervals) and breakdowns of a tally: how a run scores an evaluation, and how
    ``evalsuite merge`` scores the samples of its shards again. With several few-shot draws, every document ×
    draw is a row of the metrics (the intervals resample documents with their draws), and ``by_draw`` holds
    the first metric (the task's main one) of each draw alone."""
    preds = predictions(tally.outcomes, labels, positive, cluster_by=cluster_by)
    metrics = compute_metrics(metric_names, preds, n_boot=n_boot, seed=seed)
    extra: dict[str, Any] = {}
    if all(type(level) is int for level in tally.levels):
        extra["by_difficulty"] = accuracy_by_group(preds, tally.levels, n_boot=n_boot, seed=seed)
    if n_samples > 1:
        # A document's agreement is the mean over its draws: the bootstrap then resamples documents.
        agreements = np.asarray(tally.agreements).reshape(-1, preds.draws).mean(axis=1)
        extra["self_consistency"] = {
            "samples": n_samples, "temperature": temperature, "vote": VOTE_RULE,
            "agreement": agreement_interval(agreements, n_boot=n_boot, seed=seed),
        }
    if preds.draws > 1:
        extra["fewshot_draws"] = preds.draws
        extra["by_draw"] = by_draw(metric_names[0], tally.outcomes, labels, positive)
    if tally.thinking:
        extra["thinking"] = thinking_summary(tally.thinking, n_samples)
    return Scores(preds, metrics, extra)


def by_draw(metric_name: str, outcomes: Sequence[Outcome], labels: Sequence[str], positive: int | None
            ) -> dict[str, Any]:
    """``metric_name`` of each few-shot draw on its own (its value over the documents' draw k), and their spread:
    how much the choice of examples moves the score."""
    metric = resolve_metric(metric_name)
    values = []
    for draw in sorted({o.draw for o in outcomes}):
        preds = predictions([o for o in outcomes if o.draw == draw], labels, positive)
        values.append(float(metric.stat(metric.per_doc(preds)[None, :], preds)[0]))
    return {"metric": metric_name, "values": values, "range": max(values) - min(values),
            "sd": float(np.std(values, ddof=1)),
            "definition": f"{metric_name} of each few-shot draw alone (draw 0, 1, ...); range: largest minus "
                          "smallest; sd: their sample standard deviation"}


def thinking_summary(per_document: Sequence[dict[str, Any]], n_samples: int = 1) -> dict[str, Any]:
    """An evaluation's mean thinking and answer lengths over documents, their unit, and the share of
    generations whose thinking never closed."""
    return {
        "unit": per_document[0]["unit"],
        "mean_thinking": round(float(np.mean([d["thinking"] for d in per_document])), 3),
        "mean_answer": round(float(np.mean([d["answer"] for d in per_document])), 3),
        "unclosed_rate": round(sum(d["unclosed"] for d in per_document) / (len(per_document) * n_samples), 6),
    }
