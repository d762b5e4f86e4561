"""Leaderboard ranks with their uncertainty: each row's rank with a 95% interval, and groups of rows that are not
significantly different.

Rows (model × adapter × setting × prompt variant) rank by their overall score, the unweighted mean over tasks of
each task's main metric (1 = best; ties share their average rank). A bootstrap redraws every task's documents
with replacement -- the same draw for every row, so that rows stay paired; whole clusters for a task with a
cluster field; all of a document's samples (its few-shot draws) together -- recomputes each task's metric with
its registered function and each row's mean, and ranks the rows again. A row's rank interval is the 2.5th to
97.5th percentile of its ranks; ``first`` is the share of resamples in which it is the best (shared when tied).
Each pair of rows is tested on the same resamples (two-sided paired bootstrap test of the difference of their
overall scores), Holm-adjusted over all pairs, and shown as letters: each letter is a maximal set of rows no two
of which differ significantly, so two rows share a letter exactly when they do not differ.

The interval covers the documents (and few-shot draws) only: prompt variants are rows here, not a resampled
source, and the models' sampling seeds are not redrawn.

Rows are ranked jointly over one set of tasks they all hold, on the documents they all scored (paired by
``doc_hash``): the set of tasks that uses the most results (rows × tasks; ties: more tasks), which is every
task when every row holds every task. A row that lacks one of them, or whose run kept no samples, is left
unranked, and a note says why.
"""

from __future__ import annotations

import string
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from evalsuite.errors import EvalsuiteError, MetricError
from evalsuite.scoring.metrics import _CHUNK, Predictions, average_ranks, resolve_metric
from evalsuite.scoring.stats import holm

if TYPE_CHECKING:  # compare imports the leaderboard package, which imports this module's definitions
    from evalsuite.leaderboard.compare import Evaluation

__all__ = ["ALPHA", "DEFINITIONS", "N_BOOT", "RANK_COLUMNS", "SEED", "Ranking", "rank_record", "rank_rows",
           "rank_text", "recorded_evaluations", "with_ranking"]

N_BOOT = 1000
SEED = 0
ALPHA = 0.05
RANK_COLUMNS = ["rank", "rank__low", "rank__high", "rank__first", "group"]
SOURCES = ("the documents (whole clusters for a task with a cluster field, a document's few-shot draws together); "
           "prompt variants are rows here, not a resampled source")
DEFINITIONS = {
    "rank": f"Rank of the row's overall score among the rows ranked (1 = best; ties share their average rank), "
    f"with its 95% interval [2.5th, 97.5th percentile] over {N_BOOT} bootstrap resamples (seed {SEED}) of "
    f"{SOURCES}. Each resample draws every task's documents with replacement, the same draw for every row, "
    "recomputes each task's main metric and the row's unweighted mean over the tasks ranked, and ranks the rows. "
    "Rows are ranked jointly over one set of tasks they all hold, on the documents they all scored (paired by "
    "doc_hash): the set that uses the most results (rows × tasks), every task when every row has every task; a "
    "row lacking one of them, or whose run kept no samples.jsonl, is unranked (—) and Notes say why. first: the "
    "share of resamples in which the row ranks first (shared when tied).",
    "group": "Rows sharing a letter are not significantly different. Every pair of ranked rows is tested by a "
    "two-sided paired bootstrap test of the difference δ of their overall scores on the same resamples, "
    "p = (1 + #{|δ* − δ| ≥ |δ|}) / (B + 1), Holm-adjusted over all pairs; each letter is a maximal set of rows "
    f"no two of which differ at α = {ALPHA} after Holm, so two rows share a letter exactly when they do not differ "
    "significantly. Letters follow the score order (a: the group of the best row).",
}


@dataclass(frozen=True)
class Ranking:
    """The ranks of a wide table's rows and what they were computed over."""

    table: pd.DataFrame  # RANK_COLUMNS and ``unranked`` (why a row has no rank, else None), indexed like the table
    tasks: list[str]  # the tasks ranked over
    ranked: list[int]  # positions (in the wide table) of the rows ranked, best first
    scores: np.ndarray  # the ranked rows' overall scores over ``tasks``, recomputed from the samples, best first
    p_holm: np.ndarray  # (ranked, ranked) Holm-adjusted p-values of the pairwise tests, in ``ranked`` order
    notes: list[str]
    n_boot: int = N_BOOT
    seed: int = SEED


@dataclass(frozen=True)
class _Scored:
    """One row's samples of one task, in doc_hash order, with the metric's per-sample values."""

    keys: np.ndarray  # each sample's doc_hash
    clusters: list[str | None]  # each sample's cluster key (None where it has none)
    values: np.ndarray  # metric.per_doc of the samples
    preds: Predictions
    stat: Any  # the metric's (B, n) -> (B,) reduction


def recorded_evaluations(long: pd.DataFrame) -> dict[tuple, Evaluation]:
    """The evaluations (with samples) behind a gather table's rows whose run folder kept ``samples.jsonl``."""
    from evalsuite.leaderboard.compare import evaluations_of

    kept = long["folder"].map(lambda folder: (Path(folder) / "samples.jsonl").is_file()).astype(bool)
    return evaluations_of(long[kept])


def _scored(ev: Evaluation | None, metric: str) -> _Scored:
    from evalsuite.leaderboard.compare import predictions

    if ev is None:
        raise EvalsuiteError("no samples.jsonl in its run folder")
    if not ev.samples:
        raise EvalsuiteError("no samples recorded")
    if not all(isinstance(s.get("doc_hash"), str) for s in ev.samples):
        raise EvalsuiteError("samples without doc_hash (a run older than document hashes): rerun it")
    samples = sorted(ev.samples, key=lambda s: s["doc_hash"])
    preds = predictions(ev, samples)
    found = resolve_metric(metric)
    return _Scored(np.array([s["doc_hash"] for s in samples]), [s.get("cluster") for s in samples],
                   found.per_doc(preds), preds, found.stat)


def _best_tasks(held: Mapping[int, frozenset[str]], order: list[str]) -> list[str]:
    """The set of tasks, held in full by the rows ranked, that uses the most results (rows × tasks; ties: more
    tasks, then the first in table order). An optimal set is the intersection of the task sets of the rows it
    ranks, so the candidates are the rows' sets closed under intersection."""
    candidates = {s for s in held.values() if s}
    grown = True
    while grown:
        more = {a & b for a in candidates for b in candidates} - candidates - {frozenset()}
        candidates |= more
        grown = bool(more)
    if not candidates:
        return []
    position = {t: i for i, t in enumerate(order)}

    def merit(s: frozenset[str]) -> tuple:
        rows = sum(s <= h for h in held.values())
        return rows * len(s), len(s), [-position[t] for t in sorted(s, key=position.get)]

    best = max(candidates, key=merit)
    return [t for t in order if t in best]


def _units(task: str, docs: list[str], parts: list[_Scored], notes: list[str]) -> np.ndarray:
    """The resampled unit of each document: its cluster where the rows record one, else the document itself."""
    cluster_of: dict[str, str] = {}
    for part in parts:
        for key, cluster in zip(part.keys, part.clusters):
            if cluster is not None and cluster_of.setdefault(key, cluster) != cluster:
                notes.append(f"task {task}: the rows put some documents in different clusters (the task's cluster "
                             "field changed between runs), so its documents are resampled one by one for the ranks")
                return np.arange(len(docs))
    codes: dict[tuple[str, str], int] = {}
    return np.array([codes.setdefault(("cluster", cluster_of[d]) if d in cluster_of else ("doc", d), len(codes))
                     for d in docs], dtype=np.int64)


def _resampled(x: np.ndarray, sizes: np.ndarray, draws: np.ndarray, stat: Any, preds: Predictions) -> np.ndarray:
    """The metric on each resample: ``draws`` (R, units) are drawn units; ``x`` holds the per-sample values
    grouped by unit (``sizes`` samples each). Resamples of equal length are reduced together, as
    :func:`~evalsuite.scoring.metrics.cluster_bootstrap_chunks` does."""
    if (sizes == 1).all():
        return stat(x[draws], preds)
    starts = np.cumsum(sizes) - sizes
    lengths = sizes[draws].sum(axis=1)
    out = np.empty(len(draws))
    for length in np.unique(lengths):
        rows = lengths == length
        picked = draws[rows].ravel()
        counts = sizes[picked]
        # position p of the flat block lies in drawn unit j: starts[j] + p - (samples drawn before j)
        shift = np.repeat(starts[picked] - (np.cumsum(counts) - counts), counts)
        out[rows] = stat(x[(np.arange(counts.sum()) + shift).reshape(-1, length)], preds)
    return out


def _task_scores(task: str, parts: list[_Scored], n_boot: int, seed: int, notes: list[str]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(point (rows,), resampled (rows, n_boot)) of one task's metric, every row on the same resampled documents."""
    docs = sorted(set.intersection(*(set(p.keys) for p in parts)))
    left_out = len(set().union(*(set(p.keys) for p in parts))) - len(docs)
    if left_out:
        notes.append(f"task {task}: {left_out} document(s) not scored by every ranked row are left out of the ranks")
    units = _units(task, docs, parts, notes)
    n_units = int(units.max()) + 1
    unit_of = dict(zip(docs, units))
    ordered = []
    for part in parts:
        kept = np.flatnonzero(np.isin(part.keys, docs))
        sample_units = np.array([unit_of[k] for k in part.keys[kept]], dtype=np.int64)
        order = kept[np.argsort(sample_units, kind="stable")]
        ordered.append((part.values[order], np.bincount(sample_units, minlength=n_units)))
    point = np.array([p.stat(x[None, :], p.preds)[0] for p, (x, _) in zip(parts, ordered)])
    boot = np.empty((len(parts), n_boot))
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(task.encode("utf-8"))]))  # per task, by name
    step = max(1, _CHUNK // max(len(x) for x, _ in ordered))
    for start in range(0, n_boot, step):
        draws = rng.integers(0, n_units, size=(min(step, n_boot - start), n_units))
        for r, (part, (x, sizes)) in enumerate(zip(parts, ordered)):
            boot[r, start:start + len(draws)] = _resampled(x, sizes, draws, part.stat, part.preds)
    return point, boot


def _letters(same: np.ndarray) -> list[str]:
    """Compact letter display: one letter per maximal clique of the 'not significantly different' graph
    (``same``, rows in score order), cliques ordered by their best row; a row's letters in that order."""
    n = len(same)
    neighbours = [{u for u in range(n) if u != v and same[v, u]} for v in range(n)]
    cliques: list[list[int]] = []

    def grow(clique: set[int], candidates: set[int], excluded: set[int]) -> None:  # Bron–Kerbosch with a pivot
        if not candidates and not excluded:
            cliques.append(sorted(clique))
            return
        pivot = max(candidates | excluded, key=lambda v: len(candidates & neighbours[v]))
        for v in sorted(candidates - neighbours[pivot]):
            grow(clique | {v}, candidates & neighbours[v], excluded & neighbours[v])
            candidates = candidates - {v}
            excluded = excluded | {v}

    grow(set(), set(range(n)), set())
    alphabet = string.ascii_lowercase + string.ascii_uppercase
    groups = [""] * n
    for k, clique in enumerate(sorted(cliques)):
        for v in clique:
            groups[v] += alphabet[k % len(alphabet)] + (str(k // len(alphabet)) if k >= len(alphabet) else "")
    return groups


def _pairwise_p(overall: np.ndarray, point: np.ndarray) -> np.ndarray:
    """(rows, rows) Holm-adjusted two-sided paired bootstrap p-values of the differences of overall scores."""
    n, n_boot = overall.shape
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    raw = []
    for i, j in pairs:
        delta = point[i] - point[j]
        extreme = np.count_nonzero(np.abs(overall[i] - overall[j] - delta) >= abs(delta) - 1e-12)
        raw.append((1 + extreme) / (n_boot + 1))
    adjusted = np.ones((n, n))
    for (i, j), p in zip(pairs, holm(raw)):
        adjusted[i, j] = adjusted[j, i] = p
    return adjusted


def _why(reasons: Mapping[str, str], lacking: list[str]) -> str:
    """Why a row is unranked: the tasks it lacks, grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for task in lacking:
        by_reason.setdefault(reasons.get(task, "no result"), []).append(task)
    return "; ".join(f"{reason} ({', '.join(tasks)})" for reason, tasks in by_reason.items())


def rank_rows(long: pd.DataFrame, wide: pd.DataFrame, evaluations: Mapping[tuple, Evaluation], *,
              n_boot: int = N_BOOT, seed: int = SEED) -> Ranking:
    """The ranks of ``wide``'s rows (:func:`~evalsuite.leaderboard.leaderboard_table` of ``long``) from the samples
    in ``evaluations`` ((model, adapter, setting, variant, task) → evaluation); see the module's definitions."""
    if n_boot < 1 or seed < 0:
        raise MetricError(f"ranks need at least 1 resample and a seed of 0 or more, got {n_boot} and {seed}")
    metric_of = {(r.model, r.adapter, r.setting, r.variant, r.task): r.metric
                 for r in long.itertuples(index=False) if pd.notna(r.value)}
    order = [t["task"] for t in wide.attrs["tasks"]]
    keys = list(wide[["model", "adapter", "setting", "prompt"]].itertuples(index=False, name=None))
    scored: list[dict[str, _Scored]] = [{} for _ in keys]
    reasons: list[dict[str, str]] = [{} for _ in keys]
    for i, key in enumerate(keys):
        for task in order:
            if (*key, task) not in metric_of:
                continue
            try:
                scored[i][task] = _scored(evaluations.get((*key, task)), metric_of[(*key, task)])
            except EvalsuiteError as exc:
                reasons[i][task] = str(exc)
    tasks = _best_tasks({i: frozenset(s) for i, s in enumerate(scored)}, order)
    ranked = [i for i, s in enumerate(scored) if tasks and set(tasks) <= set(s)]
    notes: list[str] = []
    table = pd.DataFrame({"rank": np.nan, "rank__low": np.nan, "rank__high": np.nan, "rank__first": np.nan,
                          "group": None, "unranked": None}, index=wide.index)
    for i in sorted(set(range(len(keys))) - set(ranked)):
        table.loc[table.index[i], "unranked"] = _why(reasons[i], [t for t in tasks or order if t not in scored[i]])
    if not ranked:
        return Ranking(table, tasks, [], np.zeros(0), np.ones((0, 0)), notes, n_boot, seed)
    if len(tasks) < len(order):
        notes.append(f"ranks are over the {len(tasks)} of {len(order)} tasks that every ranked row holds "
                     f"({', '.join(tasks)})")
    points, boots = zip(*(_task_scores(t, [scored[i][t] for i in ranked], n_boot, seed, notes) for t in tasks))
    # Rounded: means that differ only by the order of a floating-point sum tie.
    point = np.round(np.mean(points, axis=0), 12)
    overall = np.round(np.mean(boots, axis=0), 12)  # (rows, n_boot)
    best_first = np.lexsort((np.arange(len(ranked)), -point))
    ranked = [ranked[k] for k in best_first]
    point, overall = point[best_first], overall[best_first]
    ranks = average_ranks(-overall.T)  # (n_boot, rows)
    low, high = np.quantile(ranks, [0.025, 0.975], axis=0, method="inverted_cdf")
    top = overall == overall.max(axis=0)
    p_holm = _pairwise_p(overall, point)
    positions = table.index[ranked]
    table.loc[positions, "rank"] = average_ranks(-point[None, :])[0]
    table.loc[positions, "rank__low"], table.loc[positions, "rank__high"] = low, high
    table.loc[positions, "rank__first"] = (top / top.sum(axis=0)).mean(axis=1)
    table.loc[positions, "group"] = _letters(p_holm > ALPHA)
    return Ranking(table, tasks, ranked, point, p_holm, notes, n_boot, seed)


def with_ranking(wide: pd.DataFrame, ranking: Ranking) -> pd.DataFrame:
    """The wide table with the rank columns (:data:`RANK_COLUMNS`); ``attrs['ranking']`` holds ``ranking``, and
    its notes and why each unranked row has no rank join ``attrs['notes']``."""
    out = wide.copy()
    for column in RANK_COLUMNS:
        out[column] = ranking.table[column]
    unranked = [f"{row['label']}, {row['setting']}, {row['prompt']}: unranked: {why}"
                for (_, row), why in zip(wide.iterrows(), ranking.table["unranked"]) if isinstance(why, str)]
    out.attrs = {**wide.attrs, "ranking": ranking, "notes": [*wide.attrs.get("notes", []), *ranking.notes, *unranked]}
    return out


def _number(x: float) -> str:
    return f"{x:g}"


def rank_text(row: pd.Series) -> str:
    """'2 [1–4]', or '—' for an unranked row."""
    if pd.isna(row["rank"]):
        return "—"
    return f"{_number(row['rank'])} [{_number(row['rank__low'])}–{_number(row['rank__high'])}]"


def rank_record(row: pd.Series, ranking: Ranking | None) -> dict[str, Any]:
    """A row's rank for the JSON leaderboard."""
    number = {k: None if pd.isna(row[c]) else float(row[c]) for k, c in
              (("value", "rank"), ("low", "rank__low"), ("high", "rank__high"), ("first", "rank__first"))}
    why = None if ranking is None else ranking.table.loc[row.name, "unranked"]
    return {**number, "group": row["group"] if isinstance(row["group"], str) else None,
            "unranked": why if isinstance(why, str) else None}
