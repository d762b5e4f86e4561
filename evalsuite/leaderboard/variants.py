"""Prompt variants side by side: a table per model × setting, one row per task, one column per prompt variant.

Each cell is the task's main metric with its 95% interval as stored in results.json; generated-answer
variants add a column with their unparseable rate (unparseable answers already count as wrong in the metric).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from evalsuite.spec import CATEGORIES
from evalsuite.leaderboard import markdown_escape

PREFERRED = ("plain", "lettered", "cot")


def _variants(long: pd.DataFrame) -> list[str]:
    found = set(long["variant"])
    return [v for v in PREFERRED if v in found] + sorted(found - set(PREFERRED))


def variant_table(long: pd.DataFrame) -> pd.DataFrame:
    """One row per model × adapter × setting × task: category, metric, n and, per variant, value/low/high
    and (for generated answers) the unparseable rate. ``attrs['variants']`` lists the variants in column order."""
    variants = _variants(long)
    rank = {c: i for i, c in enumerate(CATEGORIES)}
    records = []
    for (model, adapter, setting, task), group in long.groupby(["model", "adapter", "setting", "task"], sort=True):
        row: dict[str, Any] = {
            "model": model, "adapter": adapter, "setting": setting, "task": task,
            "category": group["category"].iloc[0], "metric": "/".join(sorted(set(group["metric"]))),
            "n": "/".join(str(n) for n in sorted(set(group["n"]))),
        }
        by_variant = group.set_index("variant")
        for variant in variants:
            hit = by_variant.loc[variant] if variant in by_variant.index else None
            for col in ("value", "low", "high", "unparseable"):
                row[f"{variant}__{col}"] = float("nan") if hit is None else hit[col]
        records.append(row)
    table = pd.DataFrame(records)
    if not table.empty:
        table = table.assign(_rank=table["category"].map(lambda c: rank.get(c, len(rank))))
        table = table.sort_values(["model", "adapter", "setting", "_rank", "category", "task"], kind="mergesort")
        table = table.drop(columns="_rank").reset_index(drop=True)
    table.attrs["variants"] = variants
    return table


def _cell(value: float, low: float, high: float) -> str:
    if pd.isna(value):
        return "—"
    return f"{value:.3f}" if pd.isna(low) or pd.isna(high) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def render_variants(long: pd.DataFrame) -> str:
    """Markdown: for each model and setting, tasks × prompt variants."""
    table = variant_table(long)
    variants = table.attrs["variants"]
    lines = ["# Prompt variants side by side", "",
             "Each cell is the task's main metric (column *metric*) with its 95% interval; *n* is the number of "
             "documents scored. *unparseable* is the fraction of generated answers the variant's answer rule "
             "could not read (they count as wrong in the metric).", ""]
    for (model, adapter, setting), group in table.groupby(["model", "adapter", "setting"], sort=False):
        generated = [v for v in variants if group[f"{v}__unparseable"].notna().any()]
        header = ["task", "category", "metric", "n", *variants, *(f"{v} unparseable" for v in generated)]
        lines += [f"## {markdown_escape(model)}{' + ' + markdown_escape(adapter) if adapter else ''}, {setting}", "",
                  "| " + " | ".join(map(markdown_escape, header)) + " |", "|" + "---|" * len(header)]
        for _, row in group.iterrows():
            cells = [row["task"], row["category"], row["metric"], row["n"]]
            cells += [_cell(row[f"{v}__value"], row[f"{v}__low"], row[f"{v}__high"]) for v in variants]
            cells += ["—" if pd.isna(row[f"{v}__unparseable"]) else f"{row[f'{v}__unparseable']:.3f}" for v in generated]
            lines.append("| " + " | ".join(map(markdown_escape, cells)) + " |")
        lines.append("")
    return "\n".join(lines)
