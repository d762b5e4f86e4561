"""Leaderboard: gather complete runs into a long table, pivot it to a wide one, write Markdown, CSV and JSON.

Only complete run folders are read (``find_runs`` skips ``*.partial``), and whole runs only: a shard's folder
(``run --shard``) is refused until ``evalsuite merge`` combines its set. When several runs hold the same
(model, adapter, setting, prompt variant, task), the newest by ``created`` wins. Means over tasks are
unweighted; their 95% intervals combine the per-task intervals as if the tasks were independent. Each row's
rank, with its interval over resampled documents, and its group of rows not significantly different come from
the runs' samples (:mod:`evalsuite.leaderboard.ranking`).

Published files (the leaderboards and the HTML report) are made to be shared: a model or adapter given as an
absolute path shows relative to the folder the command runs in (unless absolute paths are asked for), and
Markdown escapes whatever text it shows (results.json, the private record, keeps the paths as given).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from evalsuite.errors import EvalsuiteError, MetricError
from evalsuite.leaderboard import ranking
from evalsuite.results import atomic_write_text, find_runs, make_folder, read_whole_run
from evalsuite.scoring import resolve_metric
from evalsuite.spec import CATEGORIES, setting_label

__all__ = ["CATEGORIES", "DEFINITIONS", "gather", "gather_published", "leaderboard_table", "build_leaderboard",
           "markdown_escape", "metric_definitions", "render_markdown", "runs_of"]

Z = 1.96
ROW_KEY = ["model", "adapter", "setting", "variant"]
KEY = ROW_KEY + ["task"]
LONG_COLUMNS = [
    "model", "label", "engine", "adapter", "mode", "shots", "setting", "variant", "task", "category", "metric",
    "value", "low", "high", "n", "unparseable", "run_id", "created", "data_hash", "dtype", "definition", "folder",
    "probe",
]
DEFINITIONS = {
    "cell": "A task cell shows the task's main metric as value [low, high]: the point estimate and its 95% "
    "interval as stored in results.json; n is the number of documents scored.",
    "category_mean": "Unweighted mean of the row's task main-metric values in that category. 95% interval: "
    "mean ± 1.96·sqrt(Σ se_i²)/k with se_i = (high_i − low_i)/(2·1.96), the k tasks treated as independent.",
    "overall": "Unweighted mean of all tasks the row has, with its 95% interval computed the same way.",
    "missing": "A task the row has no result for is shown as —; the row's means are then over the k tasks it "
    "has, out of the K tasks in the table, and flagged with * (mean over k of K tasks).",
    "duplicates": "When several runs hold the same model, adapter, setting, prompt and task, only the newest "
    "(by created) is kept.",
    **ranking.DEFINITIONS,
}


def _display(model: str, adapter: str, described: dict[str, Any]) -> str:
    """How a row's model reads: fine-tuned checkpoints and adapters say what base and task they came from."""
    tuned = described.get("finetuned")
    if not tuned:
        return model + (f" + {adapter}" if adapter else "")
    if adapter:
        return f"{model} + {tuned['method'].replace('lora', 'LoRA')} (fine-tuned on {tuned['task']})"
    return f"{tuned['base']} (fine-tuned on {tuned['task']})"


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _relative(path: str) -> str:
    """An absolute path as seen from the current folder; a name, hub id or URL as it is."""
    return os.path.relpath(path) if os.path.isabs(path) else path


def _rows(folder: Path, metric: str | None = None, absolute_paths: bool = True) -> list[dict[str, Any]]:
    """Long-table rows of one run folder: ``metric`` where an evaluation has it, else its main metric."""
    record = read_whole_run(folder)  # checked: every field used below is there, with its type; no shard
    cfg, described = record["config"], record.get("model") or {}
    shown = str if absolute_paths else _relative
    model, adapter = shown(cfg["model"]), shown(cfg.get("adapter") or "")
    common = {
        "model": model, "label": _display(model, adapter, described),
        "engine": cfg.get("engine") or described.get("engine"),
        "adapter": adapter, "mode": cfg.get("mode"), "shots": int(cfg.get("shots") or 0),
        "setting": setting_label(cfg.get("mode"), cfg.get("shots")), "run_id": record["run_id"],
        "created": record["created"], "dtype": described.get("dtype") or cfg.get("dtype"), "folder": str(folder),
        "probe": probe_of(cfg),
    }
    rows = []
    for ev in record["evaluations"]:
        name = metric if metric in ev["metrics"] else ev["main_metric"]
        m = ev["metrics"][name]
        rows.append({
            **common, "variant": ev["variant"], "task": ev["task"], "category": ev.get("category") or "",
            "metric": name, "value": _float(m.get("value")), "low": _float(m.get("low")),
            "high": _float(m.get("high")), "n": int(ev.get("n") or 0),
            "unparseable": _float((ev["metrics"].get("unparseable_rate") or {}).get("value")),
            "data_hash": (ev.get("hashes") or {}).get("data"), "definition": m.get("definition") or "",
        })
    return rows


def probe_of(config: dict[str, Any]) -> str:
    """What makes a run a contamination probe ("data seed 7", "options permuted"), or "" for a run on the data as
    published with its options in their original order."""
    parts = [f"data seed {config['data_seed']}"] if config.get("data_seed") is not None else []
    return ", ".join(parts + (["options permuted"] if config.get("permute_choices") else []))


def gather(run_dirs: Sequence[Path], metric: str | None = None, *, absolute_paths: bool = True) -> pd.DataFrame:
    """Long table, one row per run × evaluation, newest run winning per (model, adapter, setting, variant, task).

    ``run_dirs`` may be run folders or folders holding them. Each row holds the evaluation's ``metric`` (e.g.
    ``f1``) where it has one, else its main metric. ``attrs['superseded']`` counts the rows dropped
    as older duplicates; ``attrs['notes']`` says which runs they came from. A contamination probe (``probe``: a
    run with ``--data-seed`` or ``--permute-choices``) never supersedes a run on the published data; the
    folders of every run read, probes included, are in ``attrs['folders']``. Without ``absolute_paths``, a
    model or adapter recorded as an absolute path reads relative to the current folder (as published files
    show it).
    """
    rows = [row for folder in find_runs(run_dirs) for row in _rows(folder, metric, absolute_paths)]
    long = pd.DataFrame(rows, columns=LONG_COLUMNS)
    folders = list(dict.fromkeys(long["folder"]))  # every run read, probes too (the contamination signal)
    if long.empty:
        long.attrs.update(superseded=0, notes=[], folders=folders)
        return long
    if metric is not None and not (long["metric"] == metric).any():  # a typo must not fall back silently
        resolve_metric(metric)  # an unknown name: the error lists the known ones
        raise MetricError(f"--metric {metric}: no evaluation in {', '.join(map(str, run_dirs))} reports it; leave "
                          "out --metric for each task's main metric, or name one these runs report")
    when = pd.to_datetime(long["created"], utc=True, errors="coerce", format="ISO8601")
    # A contamination probe (a fresh data seed, permuted options) never stands in for the run on the data as
    # published: that one keeps the row whatever their order, and the report compares the two.
    long = long.assign(_when=when, _reference=long["probe"] == "").sort_values(
        ["_reference", "_when", "run_id"], kind="mergesort", na_position="first")
    older = long.duplicated(KEY, keep="last")
    notes = [
        f"run {run_id}: {count} result(s) superseded by a newer run of the same model, setting, prompt and task"
        if probe == "" else f"run {run_id}: {count} result(s) of a contamination probe ({probe}) left out: the row "
        "shows the run on the published data (or a newer probe); the report's Contamination signal section pairs them"
        for (run_id, probe), count in long[older].groupby(["run_id", "probe"]).size().items()
    ]
    long = long[~older].drop(columns=["_when", "_reference"]).sort_values(KEY + ["run_id"], kind="mergesort")
    long = long.reset_index(drop=True)
    long.attrs.update(superseded=int(older.sum()), notes=notes, folders=folders)
    return long


def _combine(values: list[float], lows: list[float], highs: list[float]) -> tuple[float, float, float]:
    """Unweighted mean and its 95% interval: mean ± 1.96·sqrt(Σ se_i²)/k, se_i = (high_i − low_i)/(2·1.96)."""
    k = len(values)
    if k == 0:
        return (math.nan,) * 3
    mean = math.fsum(values) / k
    half = Z * math.sqrt(math.fsum(((h - lo) / (2 * Z)) ** 2 for lo, h in zip(lows, highs))) / k
    return mean, mean - half, mean + half


def _tasks(long: pd.DataFrame) -> list[dict[str, str]]:
    """Tasks in column order (category order, then name), each with its category and main metric(s)."""
    info = []
    for task, group in long.groupby("task", sort=True):
        info.append({"task": str(task), "category": str(group["category"].mode().sort_values().iloc[0]),
                     "metric": "/".join(sorted(set(group["metric"])))})
    rank = {c: i for i, c in enumerate(CATEGORIES)}
    return sorted(info, key=lambda t: (rank.get(t["category"], len(rank)), t["category"], t["task"]))


def leaderboard_table(long: pd.DataFrame) -> pd.DataFrame:
    """Wide table: a row per model × adapter × setting × prompt; overall, category means, task value/low/high/n.

    Columns: ``model``, ``adapter``, ``setting``, ``prompt``, ``label`` (how the model reads: a fine-tuned
    checkpoint or adapter names its base and task), ``overall``/``__low``/``__high``/``__k``, ``<category>__mean``/``__low``/``__high``/``__k``,
    ``<task>__value``/``__low``/``__high``/``__n``. Sorted by overall descending, then model, setting, prompt.
    ``attrs``: ``tasks`` (task, category, metric in column order), ``categories`` ({category: [tasks]}),
    ``superseded`` and ``notes``.
    """
    tasks = _tasks(long)
    cats = {c: [t["task"] for t in tasks if t["category"] == c] for c in dict.fromkeys(t["category"] for t in tasks)}
    clash = {t["task"] for t in tasks} & (set(cats) | {"overall"})
    if clash:
        raise EvalsuiteError(f"task name(s) {sorted(clash)} clash with a category name or 'overall'")
    records = []
    for key, group in long.groupby(ROW_KEY, sort=True):
        row: dict[str, Any] = dict(zip(["model", "adapter", "setting", "prompt"], key))
        row["label"] = str(group["label"].iloc[-1])
        have = group.set_index("task")
        have = have[have["value"].notna()]
        scopes = {"overall": [t["task"] for t in tasks], **{f"{c}__mean": ts for c, ts in cats.items()}}
        for name, scope in scopes.items():
            part = have.loc[[t for t in scope if t in have.index]]
            base = name.removesuffix("__mean")
            row[name], row[f"{base}__low"], row[f"{base}__high"] = _combine(
                list(part["value"]), list(part["low"]), list(part["high"]))
            row[f"{base}__k"] = len(part)
        by_task = group.set_index("task")
        for t in tasks:
            name = t["task"]
            hit = by_task.loc[name] if name in by_task.index else None
            for col in ("value", "low", "high"):
                row[f"{name}__{col}"] = math.nan if hit is None else float(hit[col])
            row[f"{name}__n"] = pd.NA if hit is None else int(hit["n"])
        records.append(row)
    wide = pd.DataFrame(records)
    if not wide.empty:
        # Two checkpoints that read alike (same base and task) are told apart by their folder names.
        owners: dict[str, set] = {}
        for label, model, adapter in zip(wide["label"], wide["model"], wide["adapter"]):
            owners.setdefault(label, set()).add((model, adapter))
        wide["label"] = [label + (f" [{Path(str(adapter or model).rstrip('/')).name}]" if len(owners[label]) > 1 else "")
                         for label, model, adapter in zip(wide["label"], wide["model"], wide["adapter"])]
        n_cols = [f"{t['task']}__n" for t in tasks]
        wide[n_cols] = wide[n_cols].astype("Int64")
        wide = wide.sort_values(["overall", "model", "adapter", "setting", "prompt"], kind="mergesort",
                                ascending=[False, True, True, True, True], na_position="last").reset_index(drop=True)
    notes = list(long.attrs.get("notes", []))
    for task, group in long.groupby("task", sort=True):
        if group["data_hash"].nunique(dropna=True) > 1:
            notes.append(f"task {task}: rows were scored on different data (data hashes differ, e.g. another "
                         "--limit or split); compare them with care")
        if group["metric"].nunique() > 1:
            notes.append(f"task {task}: rows use different main metrics ({', '.join(sorted(set(group['metric'])))})")
    wide.attrs.update(tasks=tasks, categories=cats, superseded=int(long.attrs.get("superseded", 0)), notes=notes)
    return wide


_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\|*`<>"})


def markdown_escape(text: Any) -> str:
    """Text that Markdown shows as it is, also in a table cell: the characters that would end a cell, emphasise,
    quote code or open an HTML tag are backslash-escaped, a link's ``](`` is broken, newlines are flattened.
    (Brackets alone stay: an interval's ``[low, high]`` is no link.)"""
    text = str(text).translate(_MARKDOWN_SPECIAL).replace("](", "\\](")
    return text.replace("\r", " ").replace("\n", " ")


def _cell(value: float, low: float, high: float) -> str:
    if pd.isna(value):
        return "—"
    if pd.isna(low) or pd.isna(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _label(row: pd.Series) -> str:
    return row["label"]


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(markdown_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(markdown_escape(c) for c in cells) + " |" for cells in body]


def metric_definitions(long: pd.DataFrame) -> list[dict[str, Any]]:
    """Unique (metric, definition) pairs of a long table (:func:`gather`) with the tasks using them."""
    groups = long.groupby(["metric", "definition"], sort=True)["task"]
    return [{"metric": m, "definition": d, "tasks": sorted(set(ts))} for (m, d), ts in groups]


def runs_of(long: pd.DataFrame) -> list[dict[str, Any]]:
    """The runs a long table (:func:`gather`) holds, oldest first: run id, created, engine, dtype, model, setting."""
    runs = long.drop_duplicates("run_id")[["run_id", "created", "engine", "dtype", "model", "setting"]]
    return [{k: (None if pd.isna(v) else str(v)) for k, v in r.items()}
            for r in runs.sort_values(["created", "run_id"], kind="mergesort").to_dict("records")]


def render_markdown(long: pd.DataFrame, wide: pd.DataFrame) -> str:
    """The leaderboard as Markdown: table, n per task, definitions, notes and the runs included."""
    tasks, cats = wide.attrs["tasks"], wide.attrs["categories"]
    total = len(tasks)
    ranked = "rank" in wide  # the rank columns (evalsuite.leaderboard.ranking) follow overall
    header = ["model", "setting", "prompt", "overall", *(["rank", "group"] if ranked else []), *cats,
              *(f"{t['task']} ({t['metric']})" for t in tasks)]
    body, flagged = [], []
    for _, row in wide.iterrows():
        cells, short = [_label(row), row["setting"], row["prompt"]], []
        for base, size in [("overall", total), *((c, len(ts)) for c, ts in cats.items())]:
            k = int(row[f"{base}__k"])
            text = _cell(row["overall" if base == "overall" else f"{base}__mean"], row[f"{base}__low"], row[f"{base}__high"])
            if 0 < k < size:
                text += "*"
                short.append(f"{base} over {k} of {size} tasks")
            cells.append(text)
        if ranked:
            cells[4:4] = [ranking.rank_text(row), row["group"] if isinstance(row["group"], str) else "—"]
        cells += [_cell(row[f"{t['task']}__value"], row[f"{t['task']}__low"], row[f"{t['task']}__high"]) for t in tasks]
        body.append(cells)
        if short:
            flagged.append(f"{_label(row)}, {row['setting']}, {row['prompt']}: " + "; ".join(short))
    n_body = [[_label(r), r["setting"], r["prompt"], *("—" if pd.isna(r[f"{t['task']}__n"]) else str(r[f"{t['task']}__n"])
                                                      for t in tasks)] for _, r in wide.iterrows()]
    lines = ["# Leaderboard", "",
             f"{len(wide)} row(s) (model × setting × prompt variant), {total} task(s). Each task cell is the task's "
             "main metric with its 95% interval; means are unweighted over tasks. Sorted by overall, best first.", ""]
    lines += _table(header, body)
    lines += ["", "## n per task", ""] + _table(["model", "setting", "prompt", *(t["task"] for t in tasks)], n_body)
    lines += ["", "## Definitions", ""]
    lines += [f"- **{name.replace('_', ' ').capitalize()}**: {markdown_escape(text)}" for name, text in DEFINITIONS.items()]
    if flagged:
        lines += ["- \\* Mean over k of K tasks (the row lacks results for some tasks):"]
        lines += [f"  - {markdown_escape(text)}" for text in flagged]
    lines += ["", "### Metrics", ""]
    lines += [f"- **{markdown_escape(d['metric'])}** ({markdown_escape(', '.join(d['tasks']))}): "
              f"{markdown_escape(d['definition']) or '(no definition given)'}"
              for d in metric_definitions(long)]
    if wide.attrs.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {markdown_escape(note)}" for note in wide.attrs["notes"]]
    runs = runs_of(long)
    lines += ["", "## Runs included", ""]
    lines += _table(["run_id", "created", "engine", "dtype"],
                    [[r["run_id"], r["created"], r["engine"] or "—", r["dtype"] or "—"] for r in runs])
    return "\n".join(lines) + "\n"


def _num(x: Any) -> float | None:
    """A plain JSON float (None for missing)."""
    return None if x is None or pd.isna(x) else float(x)


def _json(long: pd.DataFrame, wide: pd.DataFrame) -> dict[str, Any]:
    tasks, cats = wide.attrs["tasks"], wide.attrs["categories"]
    rows = []
    for _, r in wide.iterrows():
        def mean(base: str, name: str, size: int) -> dict[str, Any]:
            return {"value": _num(r[name]), "low": _num(r[f"{base}__low"]), "high": _num(r[f"{base}__high"]),
                    "k": int(r[f"{base}__k"]), "K": size}
        rows.append({
            "model": r["model"], "label": r["label"], "adapter": r["adapter"] or None, "setting": r["setting"],
            "prompt": r["prompt"],
            "overall": mean("overall", "overall", len(tasks)),
            "categories": {c: mean(c, f"{c}__mean", len(ts)) for c, ts in cats.items()},
            "tasks": {t["task"]: {"metric": t["metric"], **{col: _num(r[f"{t['task']}__{col}"])
                                                            for col in ("value", "low", "high")},
                                  "n": None if pd.isna(r[f"{t['task']}__n"]) else int(r[f"{t['task']}__n"])}
                      for t in tasks},
            **({"rank": ranking.rank_record(r, wide.attrs.get("ranking"))} if "rank" in wide else {}),
        })
    ranks = wide.attrs.get("ranking")
    return {"definitions": {**DEFINITIONS, "metrics": metric_definitions(long)}, "tasks": tasks, "rows": rows,
            **({"ranking": {"tasks": ranks.tasks, "resamples": ranks.n_boot, "seed": ranks.seed,
                            "alpha": ranking.ALPHA}} if ranks else {}),
            "runs": runs_of(long), "superseded": wide.attrs.get("superseded", 0), "notes": wide.attrs.get("notes", [])}


def _spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each text cell that a spreadsheet would run as a formula (=, +, -, @ first) quoted by a
    leading apostrophe, as spreadsheets themselves do."""
    table = table.copy()
    for column in [c for c in table.columns if pd.api.types.is_string_dtype(table[c].dtype)]:
        table[column] = table[column].map(lambda v: "'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v)
    return table


def gather_published(run_dirs: Sequence[Path], metric: str | None = None, *,
                     absolute_paths: bool = False) -> pd.DataFrame:
    """The long table that published files are made from (see :func:`gather`); no complete run is an error."""
    long = gather(run_dirs, metric, absolute_paths=absolute_paths) if run_dirs else pd.DataFrame(columns=LONG_COLUMNS)
    if long.empty:
        searched = ", ".join(str(p) for p in run_dirs) or "(no folders given)"
        raise EvalsuiteError(f"no complete runs found in {searched} (a run folder holds results.json; unfinished "
                             "*.partial folders are skipped): run `evalsuite run` first, or point at its --output folder")
    return long


def build_leaderboard(run_dirs: Sequence[Path], output: Path, metric: str | None = None, *,
                      absolute_paths: bool = False) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``.csv``, ``.json`` and ``variants.md`` (prompt variants side by side, see
    :mod:`evalsuite.leaderboard.variants`) under ``output``, each atomically; return their paths. Rows carry their
    rank and group (:mod:`evalsuite.leaderboard.ranking`, from the runs' samples). Cells show
    each task's main metric, or ``metric`` where a task has it. Models and adapters given as absolute paths
    are shown relative to the current folder, unless ``absolute_paths``. The JSON also holds, under
    ``variance``, where each score's variance comes from (:mod:`evalsuite.leaderboard.variance`)."""
    from evalsuite.leaderboard.variance import variance_section
    from evalsuite.leaderboard.variants import render_variants

    long = gather_published(run_dirs, metric, absolute_paths=absolute_paths)
    wide = leaderboard_table(long)
    evaluations = ranking.recorded_evaluations(long)  # the runs' samples, read once
    wide = ranking.with_ranking(wide, ranking.rank_rows(long, wide, evaluations))
    board = {**_json(long, wide), "variance": variance_section(long, wide.attrs["tasks"], evaluations)}
    output = make_folder(output)
    paths = {"md": output / "leaderboard.md", "csv": output / "leaderboard.csv", "json": output / "leaderboard.json",
             "variants": output / "variants.md"}
    atomic_write_text(paths["md"], render_markdown(long, wide))
    atomic_write_text(paths["csv"], _spreadsheet_safe(wide).to_csv(index=False, lineterminator="\n"))
    atomic_write_text(paths["json"], json.dumps(board, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write_text(paths["variants"], render_variants(long))
    return paths
