"""Paired comparison of two systems on the same documents: per task a paired test, Holm across tasks.

A *side* is either one run folder (all its tasks and prompt variants) or a leaderboard row picked from a set
of run folders by ``model=…,setting=…,prompt=…,adapter=…`` (newest run per task, as in the leaderboard).

Documents are paired by their content hash (``doc_hash`` in ``samples.jsonl``) when both runs recorded it,
else by ``doc_id`` -- only when both runs read the same data (same data hash). Documents present in one run
only are counted and listed, never silently dropped. Runs with several few-shot draws (``--fewshot-draws``) pair
on (document, draw), a run without draws counting as draw 0: two runs with the same draws pair every draw
(intervals and p then resample documents with their draws), and a run of one draw pairs with draw 0 of the
other, whose further draws are listed as unpaired. Prompt variants pair by name; when a task has exactly
one variant on each side, those two pair whatever their names (comparing prompting strategies).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalsuite.errors import EvalsuiteError, MetricError
from evalsuite.leaderboard import gather
from evalsuite.results import read_samples, read_whole_run, records
from evalsuite.results.records import Outcome, Sample
from evalsuite.scoring import Predictions
from evalsuite.scoring.stats import PairedTest, holm, paired_test
from evalsuite.spec import setting_label

__all__ = ["Comparison", "Evaluation", "Side", "TaskComparison", "compare", "evaluations_of", "format_p", "load_run",
           "parse_side", "predictions", "render_text", "system_label"]

SELECTOR_KEYS = ("model", "adapter", "setting", "prompt")


@dataclass(frozen=True, eq=False)
class Evaluation:
    """One task × prompt variant of one run, with its per-document samples."""

    run_id: str
    model: str
    adapter: str
    setting: str
    task: str
    category: str
    variant: str
    main_metric: str
    labels: tuple[str, ...]
    positive: int | None
    data_hash: str | None
    cluster: str | None  # the task's cluster field, when the run recorded each document's cluster
    metrics: dict[str, Any]  # as stored in results.json
    confusion: dict[str, dict[str, int]]
    samples: tuple[dict[str, Any], ...]

    @property
    def system(self) -> str:
        return system_label(self.model, self.adapter, self.setting)


def system_label(model: str, adapter: str, setting: str) -> str:
    """Model (+ adapter) and setting, e.g. 'smollm2 · 5-shot'."""
    return f"{model}{' + ' + adapter if adapter else ''} · {setting}"


@dataclass(frozen=True)
class Side:
    """What one side of a comparison holds: evaluations keyed by (task, variant)."""

    label: str
    evaluations: dict[tuple[str, str], Evaluation]


def load_run(folder: Path) -> list[Evaluation]:
    """Every evaluation of a run folder, with its samples."""
    folder = Path(folder)
    record = read_whole_run(folder)
    samples = read_samples(folder)
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for sample in samples:
        grouped.setdefault((sample["task"], sample["variant"]), []).append(sample)
    cfg = record.get("config") or {}
    out = []
    for ev in record.get("evaluations") or []:
        docs = grouped.get((ev["task"], ev["variant"]), [])
        out.append(Evaluation(
            run_id=record["run_id"], model=str(cfg.get("model")), adapter=cfg.get("adapter") or "",
            setting=setting_label(cfg.get("mode"), cfg.get("shots")), task=ev["task"], category=ev.get("category") or "",
            variant=ev["variant"], main_metric=ev["main_metric"], labels=tuple(ev["labels"]), positive=ev["positive"],
            data_hash=(ev.get("hashes") or {}).get("data"), cluster=ev.get("cluster"),
            metrics=ev.get("metrics") or {},
            confusion=ev.get("confusion") or {}, samples=tuple(docs)))
    return out


Key = tuple[str, str, str, str, str]  # model, adapter, setting, variant, task: a row of the gather table


def evaluations_of(long: pd.DataFrame, cache: dict[str, dict[tuple[str, str], Evaluation]] | None = None
                   ) -> dict[Key, Evaluation]:
    """The evaluation (with samples) behind each row of a ``gather`` table; each run folder is read once."""
    cache = {} if cache is None else cache
    out = {}
    for row in long.itertuples(index=False):
        if row.folder not in cache:
            cache[row.folder] = {(ev.task, ev.variant): ev for ev in load_run(Path(row.folder))}
        out[row.model, row.adapter, row.setting, row.variant, row.task] = cache[row.folder][row.task, row.variant]
    return out


def _select(long: pd.DataFrame, selector: dict[str, str]) -> pd.DataFrame:
    column = {"prompt": "variant"}
    mask = np.ones(len(long), dtype=bool)
    for key, value in selector.items():
        mask &= long[column.get(key, key)].fillna("").astype(str).to_numpy() == value
    rows = long[mask]
    systems = rows[["model", "adapter", "setting"]].drop_duplicates()
    if len(systems) > 1:
        found = "; ".join(f"model={m},setting={s}" + (f",adapter={a}" if a else "")
                          for m, a, s in systems.itertuples(index=False))
        raise EvalsuiteError(f"{_describe(selector)} matches several leaderboard rows ({found}); add model=, "
                             "setting= or adapter= to pick one")
    return rows


def _describe(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())


def parse_side(spec: str, run_dirs: Sequence[Path] = (Path("results"),),
               cache: dict[str, dict[tuple[str, str], Evaluation]] | None = None) -> Side:
    """A run folder, or ``key=value,…`` (keys: model, adapter, setting, prompt) selecting a leaderboard row."""
    path = Path(spec)
    if (path / "results.json").is_file():
        evaluations = load_run(path)
        if not evaluations:
            raise EvalsuiteError(f"{path}: the run holds no evaluations")
        first = evaluations[0]
        return Side(f"{first.system} (run {first.run_id})", {(e.task, e.variant): e for e in evaluations})
    if "=" not in spec:
        raise EvalsuiteError(f"{spec!r} is neither a run folder (one holding results.json) nor a selector like "
                             "model=smollm2,setting=5-shot,prompt=plain")
    selector = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = part.partition("=")
        if key.strip() not in SELECTOR_KEYS:
            raise EvalsuiteError(f"selector {spec!r}: unknown key {key.strip()!r}; use {', '.join(SELECTOR_KEYS)}")
        selector[key.strip()] = value.strip()
    long = gather(run_dirs)
    rows = _select(long, selector)
    if rows.empty:
        searched = ", ".join(map(str, run_dirs))
        raise EvalsuiteError(f"no results match {_describe(selector)} in {searched}; `evalsuite leaderboard` lists "
                             "the rows (model, setting, prompt)")
    first = rows.iloc[0]
    label = system_label(first["model"], first["adapter"], first["setting"])
    label += f" · prompt {selector['prompt']}" if "prompt" in selector else ""
    return Side(label, {(key[4], key[3]): ev for key, ev in evaluations_of(rows, cache).items()})


def predictions(ev: Evaluation, samples: Sequence[dict[str, Any]]) -> Predictions:
    """The scoring input of some of an evaluation's samples, coded as the run coded it."""
    return records.predictions([Outcome.of(Sample.from_dict(s)) for s in samples], ev.labels, ev.positive,
                               cluster_by=ev.cluster)


@dataclass(frozen=True)
class TaskComparison:
    """One task (and prompt variant pair) compared on the documents both sides scored."""

    task: str
    variant_a: str
    variant_b: str
    paired_by: str  # "doc_hash" or "doc_id", with " and draw" for runs with few-shot draws
    only_in_a: list[Any]  # keys of documents scored only by A
    only_in_b: list[Any]
    gold_differs: list[Any]  # paired keys whose gold answers disagree (left out of the test)
    test: PairedTest | None
    p_holm: float = float("nan")
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "test"}
        out.update(self.test.to_dict() if self.test else {})
        out["p_holm"] = None if np.isnan(self.p_holm) else self.p_holm
        return out


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    metric: str
    rows: list[TaskComparison]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "metric": self.metric, "rows": [r.to_dict() for r in self.rows],
                "notes": self.notes}


def _key(name: str, drawn: bool) -> Callable[[dict[str, Any]], Any]:
    """A sample's pairing key: its ``name`` field, with its few-shot draw (0 when it has none) when ``drawn``."""
    return (lambda s: (s.get(name), s.get("draw", 0))) if drawn else (lambda s: s.get(name))


def _pairs(a: Evaluation, b: Evaluation) -> tuple[str, list[tuple[dict, dict]], list, list, list]:
    """(paired_by, pairs, only-in-A keys, only-in-B keys, keys whose gold differs)."""
    drawn = any("draw" in s for e in (a, b) for s in e.samples)
    hashes = [[_key("doc_hash", drawn)(s) for s in e.samples] for e in (a, b)]
    if all(s.get("doc_hash") is not None for e in (a, b) for s in e.samples) and all(
            len(set(h)) == len(h) for h in hashes):  # duplicate documents pair by position
        name = "doc_hash"
    elif a.data_hash and b.data_hash and a.data_hash != b.data_hash:
        raise MetricError(f"task {a.task}: the runs read different data (data hashes differ) and do not record "
                          "document hashes, so their documents cannot be paired; rerun with this version")
    else:
        name = "doc_id"
    key = _key(name, drawn)
    index_b = {key(s): s for s in b.samples}
    index_a = {key(s): s for s in a.samples}
    pairs, differs = [], []
    for s in a.samples:
        other = index_b.get(key(s))
        if other is None:
            continue
        if other["gold"] != s["gold"]:
            differs.append(key(s))
        else:
            pairs.append((s, other))
    only_a = [key(s) for s in a.samples if key(s) not in index_b]
    only_b = [key(s) for s in b.samples if key(s) not in index_a]
    return name + (" and draw" if drawn else ""), pairs, only_a, only_b, differs


def _matches(a: Side, b: Side) -> tuple[list[tuple[Evaluation, Evaluation]], list[str]]:
    """Evaluations to compare: same task and variant name, or the task's only variant on each side."""
    matched, notes = [], []
    tasks_a = dict.fromkeys(t for t, _ in a.evaluations)
    tasks_b = dict.fromkeys(t for t, _ in b.evaluations)
    for task in tasks_a:
        if task not in tasks_b:
            notes.append(f"task {task}: only in A ({a.label})")
            continue
        va = [v for t, v in a.evaluations if t == task]
        vb = [v for t, v in b.evaluations if t == task]
        common = [v for v in va if v in vb]
        if common:
            matched += [(a.evaluations[task, v], b.evaluations[task, v]) for v in common]
        elif len(va) == len(vb) == 1:
            matched.append((a.evaluations[task, va[0]], b.evaluations[task, vb[0]]))
        else:
            notes.append(f"task {task}: no prompt variant in common (A: {', '.join(va)}; B: {', '.join(vb)}); "
                         "pick one per side with prompt=")
    notes += [f"task {t}: only in B ({b.label})" for t in tasks_b if t not in tasks_a]
    return matched, notes


def compare(a: Side, b: Side, metric: str = "accuracy", *, n_boot: int = 10000, seed: int = 0) -> Comparison:
    """Per matched task × variant a paired test of ``metric`` (``main``: each task's main metric) on the
    documents both sides scored; p-values Holm-adjusted over all the comparisons made."""
    if n_boot < 1 or seed < 0:
        raise MetricError(f"--bootstrap must be at least 1 and --seed 0 or more, got {n_boot} and {seed}")
    matched, notes = _matches(a, b)
    rows = []
    for ea, eb in matched:
        name = ea.main_metric if metric == "main" else metric
        try:
            paired_by, pairs, only_a, only_b, differs = _pairs(ea, eb)
        except MetricError as exc:
            rows.append(TaskComparison(ea.task, ea.variant, eb.variant, "", [], [], [], None, note=str(exc)))
            continue
        test, note = None, ""
        if pairs:
            try:
                test = paired_test(name, predictions(ea, [p for p, _ in pairs]), predictions(eb, [q for _, q in pairs]),
                                   n_boot=n_boot, seed=seed)
            except MetricError as exc:
                note = f"{name}: {exc}"
        else:
            note = "no document was scored by both"
        rows.append(TaskComparison(ea.task, ea.variant, eb.variant, paired_by, only_a, only_b, differs, test, note=note))
    adjusted = holm([r.test.p_value if r.test else float("nan") for r in rows])
    rows = [TaskComparison(**{**r.__dict__, "p_holm": p}) for r, p in zip(rows, adjusted)]
    return Comparison(a.label, b.label, metric, rows, notes)


def format_p(p: float) -> str:
    """Four decimals, or two significant digits below 0.0001 (an exact test can give 1e-12)."""
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _ids(keys: list[Any], limit: int = 8) -> str:
    shown = ", ".join(map(str, keys[:limit]))
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def render_text(result: Comparison) -> str:
    """A fixed-width table with the test, interval and Holm definitions, then unpaired documents and notes."""
    tested = [r for r in result.rows if r.test]
    lines = [f"A: {result.a}", f"B: {result.b}", ""]
    header = ["task", "prompt", "metric", "n", "A", "B", "A − B", "95% interval", "p", "p (Holm)", "test"]
    body = []
    for r in result.rows:
        prompt = r.variant_a if r.variant_a == r.variant_b else f"{r.variant_a} vs {r.variant_b}"
        if r.test is None:
            body.append([r.task, prompt, "", "", "", "", "", "", "", "", r.note])
            continue
        t = r.test
        test = t.test + (f" ({t.only_a} vs {t.only_b} discordant)" if t.only_a is not None else "")
        body.append([r.task, prompt, t.metric, str(t.n), f"{t.value_a:.3f}", f"{t.value_b:.3f}", f"{t.diff:+.3f}",
                     f"[{t.low:+.3f}, {t.high:+.3f}]", format_p(t.p_value), format_p(r.p_holm), test])
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
    lines.append("")
    if tested:
        lines.append(f"A − B is A's value minus B's on the documents both scored (n). p: exact two-sided McNemar for "
                     f"0/1 per-document metrics (accuracy), two-sided paired bootstrap otherwise (F1, MCC); 95% "
                     f"interval: paired percentile bootstrap. p (Holm): Holm step-down over the {len(tested)} "
                     "comparisons above (family-wise error rate).")
        clustered = sorted({r.task for r in tested if r.test.test == "paired cluster bootstrap"})
        if clustered:
            lines.append(f"Clustered tasks ({', '.join(clustered)}): documents sharing a cluster (the task's cluster "
                         "field) are resampled together, and p is the paired cluster bootstrap test's.")
    keys = sorted({r.paired_by for r in tested})
    if keys:
        lines.append("Documents paired by " + " and ".join(
            ("content hash (doc_hash)" if k.startswith("doc_hash") else "position in the same data (doc_id)")
            + (" and few-shot draw" if k.endswith(" and draw") else "") for k in keys) + ".")
    unpaired = [r for r in result.rows if r.only_in_a or r.only_in_b or r.gold_differs]
    if unpaired:
        lines.append("Documents not in both runs (left out of the tests):")
        for r in unpaired:
            parts = [f"{len(r.only_in_a)} only in A ({_ids(r.only_in_a)})" if r.only_in_a else "",
                     f"{len(r.only_in_b)} only in B ({_ids(r.only_in_b)})" if r.only_in_b else "",
                     f"{len(r.gold_differs)} with different gold answers ({_ids(r.gold_differs)})" if r.gold_differs else ""]
            lines.append(f"  {r.task}/{r.variant_a}: " + "; ".join(p for p in parts if p) + f" [by {r.paired_by}]")
    else:
        lines.append("Every document was scored by both sides.")
    lines += [f"Note: {n}" for n in result.notes]
    return "\n".join(lines) + "\n"
