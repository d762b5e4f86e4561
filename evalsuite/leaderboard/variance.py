"""Where each score's uncertainty comes from: the variance decomposition of a leaderboard's runs.

Per system (model, adapter, setting) and task, the evaluations of that task under its prompt variants (the
newest run of each, as in the leaderboard) give a balanced array of per-document scores over documents ×
prompt variants × few-shot draws × sampling seeds, which :func:`evalsuite.scoring.variance.variance_decomposition`
decomposes (a random-effects ANOVA, not a bootstrap). Documents match across variants by their content hash
(``doc_hash``; by ``doc_id`` when a run did not record it and every evaluation read the same data); only
documents scored in every cell are kept, and the others are counted.

The score is the task's metric per document where the metric is a mean over documents (accuracy,
exact_match, accuracy_norm, ...); for one that is not (F1, MCC, a correlation) it is the document's
correctness, and the entry says so. Few-shot draws come from the samples' ``draw`` field (one draw when
absent); seeds from ``correct_samples``, the strict-rule correctness of each generation (one generation when
absent) -- with several generations the score is then each generation's correctness, whose mean is the mean
accuracy of one generation (avg@k), not the vote's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalsuite.errors import EvalsuiteError, MetricError
from evalsuite.leaderboard.compare import Evaluation, predictions, system_label
from evalsuite.leaderboard.ranking import recorded_evaluations
from evalsuite.scoring.metrics import document_mean, resolve_metric
from evalsuite.scoring.variance import DEFINITION, SOURCES, VarianceDecomposition, variance_decomposition

__all__ = ["CONFIDENCE", "METHOD", "OVERALL", "SHARES", "decompose_task", "variance_section"]

CONFIDENCE = 0.95
METHOD = "random-effects ANOVA (method of moments on the balanced mean squares), Satterthwaite t interval"
SHARES = ("document", "variant", "draw", "seed", "interactions")  # how the report groups the terms
OVERALL = ("Overall: the unweighted mean of the system's decomposed tasks (each task's score averaged over its "
           "prompt variants, few-shot draws and seeds). Its variance is the sum of the task variances / T² for "
           "T tasks, the tasks taken as independent; a term's share is its contribution summed over the tasks / "
           "that sum. {confidence:g}% interval: mean ± t(ν) · √Var, ν by Satterthwaite from the tasks' ν. The "
           "documents-only interval treats the variants, draws and seeds as fixed: mean ± t(ν) · se, se² the "
           "variance of the per-document means (over every other source) / n, ν = n − 1 "
           "(over tasks: Σ se² / T², ν by Satterthwaite).").format(confidence=CONFIDENCE * 100)
DOCUMENTS_ONLY = ("one prompt variant, one few-shot draw and one generation per document in every task: only "
                  "documents vary, and the documents-only interval is the whole story")


def _definition() -> str:
    """The method's definition for any factors (each decomposition's own names its levels)."""
    return DEFINITION.format(factors="documents and the prompt variants, few-shot draws and sampling seeds that "
                                     "have at least two levels", population="documents, prompt variants, few-shot "
                                     "draws and sampling seeds", confidence=CONFIDENCE * 100, dropped="")


def _bounds(mean: float, se: float, df: float | None) -> tuple[float | None, float | None]:
    """mean ± t(ν) · se; None for both when ν is so small that the quantile overflows."""
    from scipy.stats import t as student_t

    half = float(student_t.ppf(0.5 + CONFIDENCE / 2, df)) * se if df and se > 0 else 0.0
    return (mean - half, mean + half) if math.isfinite(half) else (None, None)


def _satterthwaite(variances: Sequence[float], dfs: Sequence[float | None]) -> float | None:
    """ν of a sum of independent variance estimates, each with its own ν."""
    total = math.fsum(variances)
    denominator = math.fsum(v * v / d for v, d in zip(variances, dfs) if v > 0 and d)
    return total * total / denominator if total > 0 and denominator > 0 else None


def _group(name: str) -> str:
    return "interactions" if " × " in name else name


def _shares(terms: Sequence[dict[str, Any]], factors: Sequence[str]) -> dict[str, float | None]:
    """Each source's share and the interactions' together; None for a source that was not estimated."""
    out: dict[str, float | None] = {g: (0.0 if g in factors or g == "interactions" else None) for g in SHARES}
    for term in terms:
        out[_group(term["name"])] += term["share"]
    if len(factors) == 1:
        out["interactions"] = None
    return out


# ------------------------------------------------------------------------------------------ one task
def _checked(ev: Evaluation, s: dict[str, Any], file: str) -> tuple[Any, list[bool] | None]:
    """A sample's draw index and its generations' correctness, with their types checked."""
    draw, each = s.get("draw", 0), s.get("correct_samples")
    problem = ("field 'draw' is not a whole number" if not isinstance(draw, int) or isinstance(draw, bool) else
               "field 'correct_samples' is not a list of true/false" if each is not None and (
                   not isinstance(each, list) or not all(isinstance(x, bool) for x in each)) else None)
    if problem:
        raise EvalsuiteError(f"{file}: task {ev.task}, prompt {ev.variant}, document {s.get('doc_id')}: {problem}; the "
                             "file was damaged or not written by this version of evalsuite: run that evaluation again")
    return draw, each


def _scores(ev: Evaluation, metric: str | None) -> list[float]:
    """One number per sample: the metric's per-document value (a mean metric), else the correctness."""
    if metric is None:
        return [float(bool(s["correct"])) for s in ev.samples]
    return [float(x) for x in resolve_metric(metric).per_doc(predictions(ev, ev.samples))]


def _is_mean(metric: str) -> bool:
    try:
        return resolve_metric(metric).stat is document_mean
    except MetricError:  # a metric no installed package registers: its values cannot be recomputed
        return False


def _document_key(evs: Sequence[Evaluation]) -> str:
    samples = [s for ev in evs for s in ev.samples]
    if all(isinstance(s.get("doc_hash"), str) for s in samples):
        return "doc_hash"
    if len({ev.data_hash for ev in evs}) > 1:
        raise MetricError("its prompt variants read different data (data hashes differ) and not every run records "
                          "document hashes, so their documents cannot be matched; rerun with this version")
    return "doc_id"


def decompose_task(evs: Sequence[Evaluation], metric: str, files: dict[str, Path] | None = None) -> dict[str, Any]:
    """The decomposition of one system's task over its evaluations ``evs`` (one per prompt variant) as a JSON
    object: levels, documents kept and left out, mean and intervals, terms, shares, definition and notes.
    ``files``: each run's samples file by run id, for messages."""
    out: dict[str, Any] = {"metric": metric, "variants": sorted(ev.variant for ev in evs)}
    notes = [f"prompt variant {ev.variant} has no samples recorded and is left out" for ev in evs if not ev.samples]
    evs = sorted((ev for ev in evs if ev.samples), key=lambda ev: ev.variant)
    if not evs:
        return {**out, "note": "no samples recorded (samples.jsonl): nothing to decompose"}
    mean_metric = _is_mean(metric)
    out["score"] = f"{metric} per document" if mean_metric else "correctness per document"
    if not mean_metric:
        why = "the prompt variants use different metrics" if "/" in metric else f"{metric} is not a mean over documents"
        notes.append(f"{why}: the decomposition is of each document's correctness (its mean is the accuracy)")
    key = _document_key(evs)
    files = files or {}
    checked = [[_checked(ev, s, str(files.get(ev.run_id, f"samples.jsonl of run {ev.run_id}"))) for s in ev.samples]
               for ev in evs]
    generations = [len(each) for rows in checked for _, each in rows if each is not None]
    n_samples = sum(len(rows) for rows in checked)
    seeds = min(generations) if len(generations) == n_samples and min(generations, default=0) >= 2 else 1
    if seeds > 1:
        out["score"] = "correctness of each generation (strict rule)"
        counts = f"{min(generations)}–{max(generations)}" if min(generations) < max(generations) else str(seeds)
        notes.append(f"{counts} generations per document: each generation's correctness "
                     f"by the strict rule (correct_samples) is decomposed; its mean is the accuracy of one generation "
                     f"(avg@k), not the vote's {metric}")
        if min(generations) != max(generations):
            notes.append(f"the first {seeds} generations of every document are used (the fewest any document has)")
        seed_lists = {str(s.get("seeds")) for ev in evs for s in ev.samples}
        if len(seed_lists) > 1:
            notes.append("sampling seeds differ between documents: a seed has no shared effect, and its variation "
                         "shows as an interaction with documents")
    elif generations:
        notes.append("some documents have one generation only: seeds are not decomposed")
    cells: dict[tuple[Any, int, int], list[float]] = {}  # (document, variant, draw) -> score per seed
    twice: set[Any] = set()
    draws_of = []
    for v, (ev, rows) in enumerate(zip(evs, checked)):
        values = None if seeds > 1 else _scores(ev, metric if mean_metric else None)
        for i, (s, (draw, each)) in enumerate(zip(ev.samples, rows)):
            cell = (s[key], v, draw)
            if cell in cells:
                twice.add(s[key])  # the same document twice in one cell: which is which is unknown
            cells[cell] = [float(x) for x in each[:seeds]] if seeds > 1 else [values[i]]
        draws_of.append({draw for draw, _ in rows})
    draws = sorted(set.intersection(*draws_of))
    if any(d != set(draws) for d in draws_of):
        notes.append(f"few-shot draws {sorted(set.union(*draws_of) - set(draws))} are not in every prompt variant "
                     "and are left out")
    documents = list(dict.fromkeys(doc for doc, _, _ in cells))
    kept = [doc for doc in documents if doc not in twice
            and all((doc, v, d) in cells for v in range(len(evs)) for d in draws)]
    left_out = len(documents) - len(kept)
    if left_out:
        notes.append(f"{left_out} of {len(documents)} documents are not scored under every prompt variant and draw "
                     f"(or appear twice in one) and are left out")
    if any(ev.cluster for ev in evs):
        notes.append("its documents share clusters (the task's cluster field), which the decomposition does not "
                     "use: documents are taken as independent, so the document share and the interval are too small")
    out.update(documents=len(kept), documents_left_out=left_out, matched_by=key)
    if len(kept) < 2:
        return {**out, "note": f"{len(kept)} document(s) scored under every prompt variant and draw: the "
                               "decomposition needs at least 2", "notes": notes}
    # The sources that apply: few-shot draws to few-shot prompts, seeds to generated answers (a source that
    # applies with one level is named in the definition as not estimated).
    few_shot = len(draws) > 1 or any(s.get("fewshot_ids") for ev in evs for s in ev.samples)
    generated = seeds > 1 or any("generation" in s or "generations" in s for ev in evs for s in ev.samples)
    levels = {"variant": len(evs), "draw": len(draws), "seed": seeds}
    sources = [name for name, used in (("variant", True), ("draw", few_shot), ("seed", generated)) if used]
    y = np.array([[[cells[doc, v, d] for d in draws] for v in range(len(evs))] for doc in kept], dtype=np.float64)
    d = variance_decomposition(y.reshape(len(kept), *(levels[name] for name in sources)), sources,
                               confidence=CONFIDENCE)
    return {**out, **_task_numbers(d), "notes": notes}


def _task_numbers(d: VarianceDecomposition) -> dict[str, Any]:
    terms = [{"name": t.name, "component": t.component, "contribution": t.contribution, "share": t.share, "df": t.df}
             for t in d.terms]
    document_low, document_high = _bounds(d.mean, d.document_se, d.levels["document"] - 1)
    finite = math.isfinite(d.low) and math.isfinite(d.high)
    levels = {name: d.levels.get(name, 1) for name in ("document", *SOURCES)}
    return {"levels": levels, "factors": list(d.factors), "documents_only": len(d.factors) == 1,
            "mean": d.mean, "low": d.low if finite else None, "high": d.high if finite else None, "se": d.se,
            "df": d.df, "document_se": d.document_se, "document_low": document_low, "document_high": document_high,
            "terms": terms, "shares": _shares(terms, d.factors), "definition": d.definition}


# ------------------------------------------------------------------------------------------ overall
def _overall(tasks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    k = len(tasks)
    mean = math.fsum(t["mean"] for t in tasks) / k
    parts = [t["se"] ** 2 / k**2 for t in tasks]
    var, df = math.fsum(parts), _satterthwaite(parts, [t["df"] for t in tasks])
    document_parts = [t["document_se"] ** 2 / k**2 for t in tasks]
    document_se = math.sqrt(math.fsum(document_parts))
    document_low, document_high = _bounds(
        mean, document_se, _satterthwaite(document_parts, [t["levels"]["document"] - 1 for t in tasks]))
    contribution: dict[str, float] = {}
    for t in tasks:
        for term in t["terms"]:
            contribution[term["name"]] = contribution.get(term["name"], 0.0) + term["contribution"] / k**2
    terms = [{"name": name, "contribution": c, "share": c / var if var > 0 else 0.0} for name, c in contribution.items()]
    factors = list(dict.fromkeys(f for t in tasks for f in t["factors"]))
    se = math.sqrt(var)
    low, high = _bounds(mean, se, df)
    return {"tasks": k, "mean": mean, "low": low, "high": high, "se": se, "df": df,
            "document_se": document_se, "document_low": document_low, "document_high": document_high,
            "terms": terms, "shares": _shares(terms, factors), "definition": OVERALL}


# ------------------------------------------------------------------------------------------ the section
def variance_section(long: pd.DataFrame, tasks: Sequence[dict[str, Any]],
                     evaluations: dict[tuple, Evaluation] | None = None) -> dict[str, Any]:
    """The ``variance`` section of ``leaderboard.json`` from a gathered table (``long``, see
    :func:`evalsuite.leaderboard.gather`), its tasks in column order, and the evaluations behind its rows (read
    from the runs' samples when not given): per system every task's decomposition and an overall one."""
    if evaluations is None:
        evaluations = recorded_evaluations(long)
    metric_of = {(r.model, r.adapter, r.setting, r.variant, r.task): r.metric for r in long.itertuples(index=False)}
    files = {r.run_id: Path(r.folder) / "samples.jsonl" for r in long.itertuples(index=False)}
    systems = []
    for (model, adapter, setting), group in long.groupby(["model", "adapter", "setting"], sort=True):
        entry: dict[str, Any] = {"model": model, "adapter": adapter or None, "setting": setting,
                                 "label": str(group["label"].iloc[-1]), "system": system_label(model, adapter, setting)}
        per_task = {}
        for t in tasks:
            keys = [k for k in metric_of if k[:3] == (model, adapter, setting) and k[4] == t["task"]]
            if not keys:
                continue
            names = sorted({metric_of[k] for k in keys})
            evs = [evaluations[k] for k in keys if k in evaluations]
            if not evs:
                per_task[t["task"]] = {"metric": "/".join(names), "variants": sorted(k[3] for k in keys),
                                       "note": "no samples recorded (samples.jsonl): nothing to decompose"}
                continue
            try:
                per_task[t["task"]] = decompose_task(evs, "/".join(names), files)
            except MetricError as exc:
                per_task[t["task"]] = {"metric": "/".join(names), "variants": sorted(ev.variant for ev in evs),
                                       "note": f"cannot be decomposed: {exc}"}
        done = [x for x in per_task.values() if "mean" in x]
        entry["documents_only"] = bool(done) and all(x["documents_only"] for x in done)
        if entry["documents_only"]:
            entry["note"] = DOCUMENTS_ONLY
        else:
            entry["tasks"] = per_task
            entry["overall"] = _overall(done) if done else None
        systems.append(entry)
    return {"method": METHOD, "confidence": CONFIDENCE, "definition": _definition(), "overall_definition": OVERALL,
            "systems": systems}

