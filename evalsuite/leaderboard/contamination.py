"""Contamination signal: one system's accuracy on the data as published against a probe of the same size.

Two probes, each paired with the same system (model, adapter, setting), task and prompt variant run without it:

- **Fresh draw** (``run --data-seed S``, generated tasks): the generators make any seed's test set with the same
  size and difficulty mix (levels go round-robin), so the k-th document of a level in the published draw pairs
  with the k-th document of that level in the fresh one. Gap = accuracy(published) − accuracy(fresh), with a
  stratified paired bootstrap: each resample draws, within every level, as many pairs as the level has, with
  replacement. p: (1 + #{|δ* − δ| ≥ |δ|}) / (B + 1) over the resampled gaps δ*, as in
  :func:`evalsuite.scoring.stats.paired_bootstrap`. Draws whose mixes differ (another ``--limit``) are refused.
- **Permuted options** (``run --permute-choices``, multiple-choice tasks whose documents hold their options):
  documents pair by content hash; the permuted run's answers are mapped back to the original positions through
  each sample's recorded permutation, and :func:`evalsuite.scoring.stats.paired_test` gives the gap
  accuracy(original) − accuracy(permuted), its paired bootstrap interval and the exact McNemar p.

When a system has several runs of the same kind (the same seed, or permuted), the newest (by ``created``) is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evalsuite.errors import EvalsuiteError
from evalsuite.leaderboard.compare import Evaluation, load_run, predictions
from evalsuite.results import read_whole_run
from evalsuite.scoring.stats import paired_test
from evalsuite.spec import setting_label

__all__ = ["FRESH", "PERMUTED", "Gap", "contamination_gaps", "describe", "fresh_draw_gap", "permuted_gap"]

FRESH, PERMUTED = "fresh draw", "permuted options"
METRIC = "accuracy"


@dataclass(frozen=True)
class Gap:
    """One probe against its reference: ``gap`` = ``reference`` − ``probed`` (accuracy) on ``n`` pairs, with its
    95% interval and p; ``note`` says why there is no gap when the runs could not be paired."""

    kind: str  # FRESH or PERMUTED
    system: str
    task: str
    variant: str
    probe: str  # e.g. "data seed 7", "options rotated"
    reference_run: str
    probe_run: str
    n: int = 0
    reference: float | None = None
    probed: float | None = None
    gap: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    test: str = ""
    note: str = ""


def _accuracy_gap_bootstrap(reference: dict[Any, np.ndarray], probed: dict[Any, np.ndarray], *, n_boot: int,
                            seed: int) -> tuple[float, float, float, float]:
    """(gap, low, high, p) of the per-level paired 0/1 outcomes by the stratified paired percentile bootstrap."""
    diffs = {level: reference[level].astype(float) - probed[level].astype(float) for level in reference}
    total = sum(len(d) for d in diffs.values())
    gap = sum(float(d.sum()) for d in diffs.values()) / total
    rng = np.random.Generator(np.random.PCG64(seed))
    sums = np.zeros(n_boot)
    for level in sorted(diffs, key=str):
        d = diffs[level]
        rows = max(1, (1 << 20) // len(d))  # bounded memory, whatever the level's size
        for start in range(0, n_boot, rows):
            stop = min(n_boot, start + rows)
            sums[start:stop] += d[rng.integers(0, len(d), size=(stop - start, len(d)))].sum(axis=1)
    gaps = sums / total
    low, high = np.quantile(gaps, [0.025, 0.975])
    extreme = int(np.count_nonzero(np.abs(gaps - gap) >= abs(gap) - 1e-12))
    return gap, float(low), float(high), (1 + extreme) / (n_boot + 1)


def _by_level(ev: Evaluation) -> dict[Any, np.ndarray] | None:
    """An evaluation's 0/1 outcomes per difficulty level, in document order; None when a sample has no level."""
    levels: dict[Any, list[bool]] = {}
    for s in sorted(ev.samples, key=lambda s: s["doc_id"]):
        if s.get("difficulty") is None:
            return None
        levels.setdefault(s["difficulty"], []).append(bool(s["correct"]))
    return {level: np.array(hits) for level, hits in levels.items()}


def fresh_draw_gap(reference: Evaluation, fresh: Evaluation, probe: str, *, n_boot: int = 10000,
                   seed: int = 0) -> Gap:
    """Published draw against a fresh one of a generated task, paired by position within difficulty level."""
    gap = Gap(FRESH, reference.system, reference.task, reference.variant, probe, reference.run_id, fresh.run_id)
    levels = [_by_level(reference), _by_level(fresh)]
    if None in levels or not levels[0]:
        return _noted(gap, "a sample records no difficulty level, so the draws cannot be paired by level")
    mixes = [{level: len(hits) for level, hits in sorted(side.items(), key=lambda x: str(x[0]))} for side in levels]
    if mixes[0] != mixes[1]:
        return _noted(gap, f"the difficulty mixes differ (published {_mix(mixes[0])}; fresh {_mix(mixes[1])}): run "
                           "both draws with the same --limit so that every level has as many documents")
    value, low, high, p = _accuracy_gap_bootstrap(*levels, n_boot=n_boot, seed=seed)
    n = sum(mixes[0].values())
    return Gap(**{**gap.__dict__, "n": n,
                  "reference": float(np.mean(np.concatenate(list(levels[0].values())))),
                  "probed": float(np.mean(np.concatenate(list(levels[1].values())))),
                  "gap": value, "low": low, "high": high, "p_value": p,
                  "test": f"stratified paired bootstrap over {len(mixes[0])} difficulty level(s)"})


def _mix(mix: dict[Any, int]) -> str:
    return ", ".join(f"level {level}: {count}" for level, count in mix.items())


def _noted(gap: Gap, note: str) -> Gap:
    return Gap(**{**gap.__dict__, "note": note})


def _unpermuted(sample: dict[str, Any]) -> dict[str, Any]:
    """A permuted run's sample with its answer and gold read at the options' original positions."""
    order = sample["permutation"]
    back = {key: order[sample[key]] for key in ("pred", "gold", "pred_norm", "pred_flexible")
            if isinstance(sample.get(key), int) and 0 <= sample[key] < len(order)}
    return {**sample, **back}


def permuted_gap(original: Evaluation, permuted: Evaluation, *, n_boot: int = 10000, seed: int = 0) -> Gap:
    """Original options against rotated ones, documents paired by content hash (else by number)."""
    gap = Gap(PERMUTED, original.system, original.task, original.variant, "options rotated", original.run_id,
              permuted.run_id)
    if any(s.get("permutation") is None for s in permuted.samples):
        return _noted(gap, "the permuted run's samples record no permutation")
    hashes = [[s.get("doc_hash") for s in ev.samples] for ev in (original, permuted)]
    key = "doc_hash" if all(None not in h and len(set(h)) == len(h) for h in hashes) else "doc_id"
    index = {s[key]: s for s in permuted.samples}
    pairs = [(s, _unpermuted(index[s[key]])) for s in original.samples if s[key] in index]
    if not pairs:
        return _noted(gap, "no document was scored by both runs")
    try:
        test = paired_test(METRIC, predictions(original, [a for a, _ in pairs]),
                           predictions(permuted, [b for _, b in pairs]), n_boot=n_boot, seed=seed)
    except EvalsuiteError as exc:  # e.g. the answers mapped back disagree on gold: not the same documents
        return _noted(gap, str(exc))
    unpaired = len(original.samples) + len(permuted.samples) - 2 * len(pairs)
    note = f"{unpaired} document(s) scored by one run only, left out" if unpaired else ""
    counts = f" ({test.only_a} vs {test.only_b} discordant)" if test.only_a is not None else ""
    return Gap(**{**gap.__dict__, "n": test.n, "reference": test.value_a, "probed": test.value_b, "gap": test.diff,
                  "low": test.low, "high": test.high, "p_value": test.p_value, "test": test.test + counts,
                  "note": note})


def _runs(folders: Sequence[Path]) -> list[tuple[dict[str, Any], Path]]:
    """The records of the given run folders, newest last."""
    runs = [(read_whole_run(folder), Path(folder)) for folder in folders]
    return sorted(runs, key=lambda run: (run[0]["created"], run[0]["run_id"]))


def contamination_gaps(folders: Sequence[Path], *, n_boot: int = 10000, seed: int = 0) -> list[Gap]:
    """Every probe found among the run folders, against its reference run (see the module)."""
    newest: dict[tuple, tuple[Path, str]] = {}  # (system, variant, task, data seed, permuted) -> folder, origin
    for record, folder in _runs(folders):
        cfg = record["config"]
        system = (str(cfg["model"]), cfg.get("adapter") or "", setting_label(cfg.get("mode"), cfg.get("shots")))
        for ev in record["evaluations"]:
            key = (system, ev["variant"], ev["task"], cfg.get("data_seed"), bool(cfg.get("permute_choices")))
            newest[key] = (folder, str(ev.get("origin") or ""))
    loaded: dict[Path, dict[tuple[str, str], Evaluation]] = {}

    def evaluation(key: tuple) -> Evaluation:
        folder = newest[key][0]
        if folder not in loaded:
            loaded[folder] = {(ev.task, ev.variant): ev for ev in load_run(folder)}
        return loaded[folder][key[2], key[1]]

    gaps = []
    for key, (_, origin) in sorted(newest.items(), key=lambda item: str(item[0])):
        system, variant, task, data_seed, permuted = key
        if permuted and (reference := (system, variant, task, data_seed, False)) in newest:
            gaps.append(permuted_gap(evaluation(reference), evaluation(key), n_boot=n_boot, seed=seed))
        elif data_seed is not None and not permuted and origin.startswith("generated:") and (
                reference := (system, variant, task, None, False)) in newest:
            gaps.append(fresh_draw_gap(evaluation(reference), evaluation(key), f"data seed {data_seed}",
                                       n_boot=n_boot, seed=seed))
    return gaps


def describe(gap: Gap) -> str:
    """One line: the probe, its system and task, and the gap with its interval and p (or why there is none)."""
    where = f"{gap.task}/{gap.variant}, {gap.system}, {gap.kind} ({gap.probe})"
    if gap.gap is None:
        return f"{where}: {gap.note}"
    return (f"{where}: {gap.reference:.3f} vs {gap.probed:.3f}, gap {gap.gap:+.3f} [{gap.low:+.3f}, {gap.high:+.3f}], "
            f"p {gap.p_value:.4f} (n = {gap.n}, {gap.test})")

