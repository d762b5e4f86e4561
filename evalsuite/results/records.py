"""Typed records of a run: what the pipeline writes and what the leaderboard, report and compare read.

``Sample`` is one line of ``samples.jsonl``; ``EvaluationRecord`` one task × prompt variant of
``results.json``. An evaluation carries its labels and positive class, so that a later stage never recovers
them from prose or dict order, and :func:`predictions` (of each sample's :class:`Outcome`) is the one way to
turn samples back into the scoring input: the pipeline scores through it, and a paired comparison rescored
from the same samples gives the same numbers.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from evalsuite.data import BESIDE_TASK_FILE
from evalsuite.scoring import Predictions, choice_probabilities

# Fields of a sample in the order they are written; optional ones are left out when they do not apply.
_REQUIRED = ("task", "variant", "doc_id", "fewshot_ids", "choices", "pred", "gold", "gold_text", "correct")


@dataclass(frozen=True)
class Sample:
    """One answered document: the prompt (or a classifier's inputs), the scored choices and the engine's answer.

    Log-likelihood prompts fill ``logprobs`` (summed per choice), ``tokens``, ``greedy`` and ``pred_norm``;
    generation prompts ``generation`` (or ``generations`` and ``votes`` with several samples per document)
    and ``extracted`` (None when no answer could be read); a classification head ``inputs`` and
    ``label_logprobs``. ``pred`` is -1 for an unparseable answer. Generated answers are read by two rules
    (:mod:`evalsuite.scoring.extract`): ``extracted`` and ``pred`` by the prompt's strict rule,
    ``extracted_flexible`` and ``pred_flexible`` by its flexible one (with several samples ``votes_flexible``,
    and each rule's own vote); files written before the flexible rule existed have neither, and still load.

    Chat-formatted prompts also keep their conversation, ``messages`` (``[{role, content}, ...]``: what the
    chat template or the chat API received). ``reasoning`` (``reasonings`` with several samples) is the
    reasoning a server returned apart from the answer. With ``--think``, ``thinking`` holds the lengths of the
    thinking removed before extraction and of the answer left (``thinking``, ``answer``: per document, the
    mean over its samples), their ``unit`` (``tokens`` of the model's tokenizer, or ``characters`` when the
    engine has none) and how many generations never closed their thinking (``unclosed``). ``cluster`` is the
    document's cluster key when the task names a cluster field (documents sharing a story or a passage).

    A run with several few-shot draws (``--fewshot-draws K``) writes K samples per document, ``draw`` 0 to K-1,
    each answered with its own few-shot examples; a run with one draw writes no ``draw``. Sampled generation
    (temperature above 0) records each generation's sampling seed (``seeds``) and whether its answer, read by
    the strict rule, is correct (``correct_samples``), one entry per generation in the order of
    ``generations``.
    """

    task: str
    variant: str
    doc_id: int
    fewshot_ids: tuple[int, ...]
    choices: tuple[str, ...]
    pred: int
    gold: int
    gold_text: str
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    inputs: tuple[str, ...] | None = None
    pred_norm: int | None = None
    logprobs: tuple[float, ...] | None = None
    tokens: tuple[int, ...] | None = None
    greedy: tuple[bool, ...] | None = None
    label_logprobs: tuple[float, ...] | None = None
    generation: str | None = None
    generations: tuple[str, ...] | None = None
    reasoning: str | None = None
    reasonings: tuple[str | None, ...] | None = None
    votes: tuple[str | None, ...] | None = None
    extracted: str | None = None
    votes_flexible: tuple[str | None, ...] | None = None
    extracted_flexible: str | None = None
    pred_flexible: int | None = None
    thinking: dict[str, Any] | None = None
    agreement: float | None = None
    doc_hash: str | None = None
    difficulty: int | None = None
    score: float | None = None
    gold_score: float | None = None
    cluster: str | None = None
    draw: int | None = None
    seeds: tuple[int, ...] | None = None
    correct_samples: tuple[bool, ...] | None = None
    permutation: tuple[int, ...] | None = None  # with --permute-choices: entry j is the original position of option j

    @property
    def generated(self) -> bool:
        return self.generation is not None or self.generations is not None

    @property
    def correct(self) -> bool:
        return self.pred == self.gold and self.pred >= 0

    @property
    def pred_text(self) -> str:
        """The predicted answer as text: the extracted answer, else the chosen choice without its delimiter."""
        if self.extracted:
            return self.extracted
        return self.choices[self.pred].strip() if self.pred >= 0 and self.choices else ""

    def to_dict(self) -> dict[str, Any]:
        """The ``samples.jsonl`` line; ``extracted`` is written for every generated answer, null when unparseable,
        and so is ``extracted_flexible`` wherever the flexible rule was applied."""
        out: dict[str, Any] = {}
        for key in _ORDER:
            value = self.correct if key == "correct" else getattr(self, key)
            if value is not None or key in _REQUIRED or (key == "extracted" and self.generated) or (
                    key == "extracted_flexible" and self.pred_flexible is not None):
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        values = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


# The order of samples.jsonl's keys: written before this module existed, kept so that files stay comparable.
_ORDER = ("task", "variant", "doc_id", "draw", "fewshot_ids", "prompt", "messages", "inputs", "choices", "pred_norm",
          "logprobs", "tokens", "greedy", "label_logprobs", "generation", "generations", "seeds", "reasoning",
          "reasonings", "votes", "extracted", "votes_flexible", "extracted_flexible", "thinking", "agreement", "pred",
          "pred_flexible", "gold", "gold_text", "correct", "correct_samples", "doc_hash", "difficulty", "score",
          "gold_score", "cluster", "permutation")


@dataclass(frozen=True)
class Outcome:
    """What scoring needs of one sample: a few numbers and short strings, never the prompt or generations.

    ``probs`` are the choice probabilities of a log-likelihood prompt (the softmax of its summed choice
    log-likelihoods, :func:`~evalsuite.scoring.choice_probabilities`) or of a classification head (of its label
    log-probabilities); None for a generated answer.
    """

    pred: int
    gold: int
    pred_norm: int | None
    pred_text: str
    gold_text: str
    score: float | None
    gold_score: float | None
    cluster: str | None = None
    pred_flexible: int | None = None
    document: str | None = None  # the document's key (its content hash, else its number), in runs with draws
    draw: int | None = None
    n_correct: int | None = None  # how many of the sampled answers are correct (sampled generation)
    n_samples: int | None = None
    probs: tuple[float, ...] | None = None

    @classmethod
    def of(cls, sample: Sample) -> Outcome:
        # Interned: documents share the few distinct answer strings instead of holding a copy each.
        scored = sample.logprobs or sample.label_logprobs
        document = None if sample.draw is None else sample.doc_hash or str(sample.doc_id)
        correct = sample.correct_samples
        return cls(sample.pred, sample.gold, sample.pred_norm, sys.intern(str(sample.pred_text)),
                   sys.intern(sample.gold_text), sample.score, sample.gold_score,
                   None if sample.cluster is None else sys.intern(sample.cluster), sample.pred_flexible,
                   document, sample.draw, None if correct is None else sum(map(bool, correct)),
                   None if correct is None else len(correct),
                   tuple(choice_probabilities(scored).tolist()) if scored else None)


def predictions(outcomes: Sequence[Outcome], labels: Sequence[str], positive: int | None,
                generated: bool = False, cluster_by: str | None = None) -> Predictions:
    """The scoring input of an evaluation's outcomes, in document order; with cluster keys when every outcome
    has one (``cluster_by``: the task's cluster field they come from).

    Outcomes of several few-shot draws (one per document and draw) are scored as rows, and their intervals
    resample documents with all their draws: the task's clusters when it has them, else each document is a
    cluster of its draws. The correct counts of sampled answers come along when every outcome has them."""
    gold = np.array([o.gold for o in outcomes], dtype=np.int64)
    free_form = bool((gold < 0).any())
    if free_form:
        # Free-form targets: correctness is exact match of the answer, so code it as class 0 vs unparseable.
        gold = np.zeros(len(outcomes), dtype=np.int64)
    norm = [o.pred_norm for o in outcomes]
    flexible = [o.pred_flexible for o in outcomes]
    scores = [o.score for o in outcomes]
    graded = bool(outcomes) and None not in scores
    task_clusters = [o.cluster for o in outcomes]
    clustered = bool(outcomes) and None not in task_clusters
    clusters = task_clusters if clustered else None
    draws = max(1, len({o.draw for o in outcomes}))
    if draws > 1 and clusters is None:
        clusters = [o.document for o in outcomes]  # each document a cluster of its draws
    counts = [o.n_correct for o in outcomes]
    sizes = {o.n_samples for o in outcomes}
    counted = bool(outcomes) and None not in counts and len(sizes) == 1
    probs = [o.probs for o in outcomes]
    return Predictions(
        pred=np.array([o.pred for o in outcomes], dtype=np.int64),
        gold=gold,
        n_classes=len(labels),
        labels=tuple(labels),
        positive=positive,
        pred_norm=np.array(norm, dtype=np.int64) if outcomes and None not in norm else None,
        pred_flexible=np.array(flexible, dtype=np.int64) if outcomes and None not in flexible else None,
        pred_text=tuple(o.pred_text for o in outcomes),
        gold_text=tuple(o.gold_text for o in outcomes),
        score=np.array(scores, dtype=np.float64) if graded else None,
        gold_score=np.array([o.gold_score for o in outcomes], dtype=np.float64) if graded else None,
        clusters=None if clusters is None else tuple(clusters),
        cluster_by=cluster_by if clustered else None,
        probs=_padded(probs, len(labels)) if outcomes and None not in probs and not free_form else None,
        draws=draws,
        n_correct=np.array(counts, dtype=np.int64) if counted else None,
        n_samples=sizes.pop() if counted else 1,
    )


def _padded(rows: Sequence[Sequence[float]], width: int) -> np.ndarray:
    """Each document's choice probabilities as a row of a (documents, width) array; a document with fewer
    choices than the widest has probability 0 for the choices it lacks."""
    table = np.zeros((len(rows), max(width, *map(len, rows))))
    for i, row in enumerate(rows):
        table[i, : len(row)] = row
    return table


@dataclass(frozen=True)
class EvaluationRecord:
    """One task × prompt variant of a run (an entry of ``evaluations`` in ``results.json``)."""

    task: str
    category: str
    variant: str
    method: str  # loglikelihood | generation | classifier
    split: str
    n: int
    main_metric: str
    metrics: dict[str, dict[str, Any]]  # name: {value, low, high, definition}
    confusion: dict[str, dict[str, int]]
    hashes: dict[str, str | None]
    origin: str
    license: str | None
    timing_s: float
    docs_per_s: float | None
    labels: tuple[str, ...]  # class names in class-index order (gold and pred index them)
    positive: int | None  # index of the positive class for binary F1; None: class 1
    by_difficulty: dict[str, Any] | None = None
    self_consistency: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None  # unit, mean_thinking, mean_answer, unclosed_rate (runs with --think)
    cluster: str | None = None  # the task's cluster field, when its intervals resample clusters
    fewshot_draws: int | None = None  # few-shot draws per document, in runs with several (n counts documents)
    by_draw: dict[str, Any] | None = None  # the main metric of each draw alone: metric, values, range, sd

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["labels"] = list(self.labels)
        for key in ("by_difficulty", "self_consistency", "thinking", "cluster", "fewshot_draws", "by_draw"):
            if out[key] is None:
                del out[key]
        return out


def data_sources(record: dict[str, Any]) -> dict[str, str]:
    """Where each task's evaluated documents came from, as a run record says: the ``origin`` of its evaluations
    (a hub repository@revision, a generator with its seed, or local files), with the run's data directory for
    local files named relative to it (an origin read from a task file's own folder says so itself)."""
    data_dir = (record.get("config") or {}).get("data_dir")
    sources: dict[str, str] = {}
    for ev in record.get("evaluations") or []:
        origin = ev["origin"]
        if origin.startswith("local:") and not origin.endswith(BESIDE_TASK_FILE):
            origin += f" (data directory {data_dir})"
        sources.setdefault(ev["task"], origin)
    return sources


# --- reading older files -----------------------------------------------------------------------------------

_POSITIVE = re.compile(r"positive class '.*?' \(index (\d+)\)")


def upgrade_v1(record: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 record in schema 2: each evaluation gains ``labels`` and ``positive`` as schema 1's readers
    found them -- labels from the confusion matrix's gold rows (class-index order, always written by schema 1),
    the positive class from a binary F1 definition, the only place schema 1 recorded it."""
    evaluations = []
    for ev in record.get("evaluations") or []:
        positive = None
        for metric in (ev.get("metrics") or {}).values():
            found = _POSITIVE.search((metric or {}).get("definition") or "")
            if found:
                positive = int(found.group(1))
                break
        evaluations.append({**ev, "labels": list(ev.get("confusion") or ()), "positive": positive})
    return {**record, "schema_version": 2, "evaluations": evaluations}
