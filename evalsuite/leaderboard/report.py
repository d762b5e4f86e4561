"""The HTML report: one self-contained ``index.html`` (inline CSS, inline PNG plots, one small inline script).

Sections: ranking (overall and per category, 95% intervals, rank intervals and groups of rows not
significantly different, plots), per-task table, settings side by side
(zero-shot / few-shot / fine-tuned) with paired tests, prompt variants side by side with robustness and
ranking stability, where the variance comes from (documents, prompt variants, few-shot draws, seeds),
verification (agreement between prompt variants and among self-consistency samples, accuracy by difficulty
and by thinking length), answer extraction (strict and flexible rules, examples where they disagree),
contamination signal (fresh draws and permuted options against the published data), error analysis (confusion
matrices, most confident wrong answers), calibration (ECE and Brier score, reliability diagrams), definitions.

Every piece of text from runs (model names, prompts, model outputs, labels) goes through ``html.escape``; a
Content-Security-Policy allows only this file's own script (by hash), inline styles and ``data:`` images.
Models and adapters given as absolute paths read relative to the current folder (see :mod:`evalsuite.leaderboard`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalsuite.leaderboard import (
    DEFINITIONS,
    LONG_COLUMNS,
    gather_published,
    leaderboard_table,
    metric_definitions,
    runs_of,
)
from evalsuite.leaderboard.compare import (
    Comparison,
    Evaluation,
    Side,
    TaskComparison,
    compare,
    evaluations_of,
    format_p,
    system_label,
)
from evalsuite.leaderboard.ranking import ALPHA as RANK_ALPHA
from evalsuite.leaderboard.ranking import SOURCES, rank_rows, with_ranking
from evalsuite.leaderboard.variance import SHARES, variance_section
from evalsuite.leaderboard.contamination import contamination_gaps
from evalsuite.results import atomic_write_text, make_folder
from evalsuite.scoring.extract import FLEXIBLE_RULE, STRICT_RULE
from evalsuite.scoring.metrics import (
    CALIBRATION_BINS,
    PROBABILITY_METRICS,
    choice_probabilities,
    expected_calibration_error,
    reliability,
)
from evalsuite.scoring.stats import fleiss_kappa, kendall_tau_b

__all__ = ["build_report", "render_report"]

MAX_PLOT_ROWS = 10  # plots show at most this many leaderboard rows (the best by overall)
N_BOOT = 10000
WRONG_SHOWN = 5
ALPHA = 0.05
THINKING_BUCKETS = (0, 64, 256, 1024, 4096)  # upper ends of the thinking-length buckets; a last one is open
DISAGREEMENTS_SHOWN = 3  # per task, examples where the strict and the flexible rule read different answers
EXCERPT = 400  # characters shown of a generation's end, where its answer is

SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-v');
    if (v === null) return cell.textContent.trim().toLowerCase();
    return v === '' ? null : parseFloat(v);
  }
  function sortBy(table, col, th) {
    var numeric = th.getAttribute('data-type') === 'num';
    var current = th.getAttribute('aria-sort');
    var dir = current ? (current === 'ascending' ? 'descending' : 'ascending') : (numeric ? 'descending' : 'ascending');
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var sign = dir === 'ascending' ? 1 : -1;
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null || (typeof x === 'number' && isNaN(x))) return 1;
      if (y === null || (typeof y === 'number' && isNaN(y))) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * sign;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener('click', function () { sortBy(table, col, th); });
      th.addEventListener('keydown', function (ev) {
        if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); sortBy(table, col, th); }
      });
    });
  });
})();
"""

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d8dee4; --head: #f6f8fa; --accent: #0969da; --good: #1a7f37;
        --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #0d1117; color: #f0f6fc; padding: 28px 40px 18px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; }
header p { margin: 0; color: #9198a1; }
nav { margin-top: 14px; }
nav a { color: #c9d1d9; margin-right: 18px; text-decoration: none; font-size: 13px; }
nav a:hover { color: #fff; text-decoration: underline; }
main { max-width: 1280px; margin: 0 auto; padding: 8px 40px 64px; }
h2 { font-size: 21px; margin: 44px 0 6px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 26px 0 4px; }
p.lead, p.note { color: var(--muted); margin: 4px 0 10px; max-width: 980px; }
p.note { font-size: 12.5px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 20px 0 4px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; min-width: 200px; flex: 1 1 200px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 20px; font-weight: 650; }
.card .s { color: var(--muted); font-size: 12.5px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 10px 0 6px; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { background: var(--head); font-weight: 600; font-size: 13px; white-space: nowrap; border-bottom: 2px solid var(--line); }
tbody tr:hover { background: #f6f8fa; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.num .ci { display: block; color: var(--muted); font-size: 11.5px; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th::after { content: " \\2195"; color: #afb8c1; font-weight: 400; }
table.sortable thead th[aria-sort=ascending]::after { content: " \\25B2"; color: var(--accent); }
table.sortable thead th[aria-sort=descending]::after { content: " \\25BC"; color: var(--accent); }
.meter { display: block; height: 3px; margin-top: 3px; background: #eaeef2; border-radius: 2px; }
.meter i { display: block; height: 3px; background: var(--accent); border-radius: 2px; }
.sig { color: var(--good); font-weight: 650; }
.neg.sig { color: var(--bad); }
.muted { color: var(--muted); }
.tag { display: inline-block; padding: 0 7px; border-radius: 10px; background: #ddf4ff; color: #0550ae; font-size: 12px; }
figure { margin: 14px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 12.5px; }
details { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; margin: 10px 0; }
details[open] { padding-bottom: 14px; }
summary { cursor: pointer; font-weight: 600; }
.grid { display: flex; flex-wrap: wrap; gap: 18px; }
table.cm td, table.cm th { padding: 3px 8px; font-size: 12.5px; }
table.cm td.hit { background: #dafbe1; }
.prompt { display: flex; flex-direction: column-reverse; max-height: 220px; overflow: auto; margin: 4px 0;
          background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; }
.prompt pre { white-space: pre-wrap; word-break: break-word; margin: 0; padding: 8px 10px; font-size: 12px; }
td.wide { min-width: 420px; max-width: 640px; }
ul.defs { padding-left: 18px; } ul.defs li { margin: 4px 0; max-width: 1000px; }
code { font-size: 12.5px; background: #f6f8fa; padding: 1px 4px; border-radius: 4px; }
"""


def e(text: Any) -> str:
    """HTML-escaped text (quotes too): the only way run text enters the page."""
    return html.escape("" if text is None else str(text), quote=True)


def _f(x: Any, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _v(x: Any) -> str:
    """A data-v sort key ('' for missing)."""
    return "" if x is None or pd.isna(x) else repr(float(x))


def _value_cell(value: Any, low: Any = None, high: Any = None, *, meter: bool = True, title: str = "") -> str:
    """A numeric cell: value, its 95% interval below, a thin bar for values in [0, 1]."""
    if value is None or pd.isna(value):
        return '<td class="num" data-v="">—</td>'
    ci = "" if low is None or pd.isna(low) else f'<span class="ci">[{_f(low)}, {_f(high)}]</span>'
    bar = f'<span class="meter"><i style="width:{max(0.0, min(1.0, float(value))) * 100:.1f}%"></i></span>' if meter else ""
    tip = f' title="{e(title)}"' if title else ""
    return f'<td class="num" data-v="{_v(value)}"{tip}>{_f(value)}{ci}{bar}</td>'


def _table(header: Sequence[tuple[str, str]], rows: Iterable[str], *, sortable: bool = True, cls: str = "") -> str:
    """``header``: (label, 'num' | 'text'); ``rows``: already rendered ``<tr>`` strings."""
    ths = "".join(f'<th data-type="{kind}"{" class=num" if kind == "num" else ""}>{e(label)}</th>'
                  for label, kind in header)
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    return (f'<div class="scroll"><table class="{classes}"><thead><tr>{ths}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _tr(cells: Iterable[str]) -> str:
    return "<tr>" + "".join(cells) + "</tr>"


def _td(text: Any, cls: str = "") -> str:
    return f'<td{f" class={cls!r}" if cls else ""}>{e(text)}</td>'


def _num(x: Any, digits: int = 3, signed: bool = False) -> str:
    return f'<td class="num" data-v="{_v(x)}">{_f(x, digits, signed)}</td>'


def _p(p: float | None, how: str = "") -> str:
    """A p-value cell; ``how`` (the test and its counts) shows on hover."""
    if p is None:
        return '<td class="num" data-v="">—</td>'
    return f'<td class="num" data-v="{_v(p)}" title="{e(how)}">{format_p(p)}</td>'


def _row_label(row: pd.Series) -> str:
    """A leaderboard row: 'model · setting · prompt'."""
    return f"{system_label(row['model'], row['adapter'], row['setting'])} · {row['prompt']}"


def _png(fig: Any, alt: str, caption: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    width = fig.get_figwidth()
    fig.savefig(buffer, format="png", dpi=160, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<figure><img alt="{e(alt)}" style="width:{width * 96:.0f}px" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(caption)}</figcaption></figure>")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9.5, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.color": "#e5e8eb", "axes.axisbelow": True,
                         "text.parse_math": False})  # a '$' in a model or task name is just a character
    return plt


# --------------------------------------------------------------------------------------------- the report
class _Report:
    """The data the sections share: the tables, every evaluation with its samples, systems."""

    def __init__(self, long: pd.DataFrame, wide: pd.DataFrame, evaluations: dict[tuple, Evaluation]):
        self.long, self.wide, self.ev = long, wide, evaluations
        self.tasks = wide.attrs["tasks"]
        self.categories = wide.attrs["categories"]
        self.metric_of = {t["task"]: t["metric"] for t in self.tasks}
        self.systems = list(dict.fromkeys(
            (m, a, s) for m, a, s in wide[["model", "adapter", "setting"]].itertuples(index=False)))

    def of(self, model: str, adapter: str, setting: str, variant: str, task: str) -> Evaluation | None:
        return self.ev.get((model, adapter, setting, variant, task))

    def variants(self, system: tuple[str, str, str], task: str) -> list[str]:
        return [k[3] for k in self.ev if k[:3] == system and k[4] == task]

    def side(self, system: tuple[str, str, str], label: str, pick: dict[str, list[str]] | None = None) -> Side:
        """The system's evaluations (all variants, or per task the variants in ``pick``)."""
        chosen = {(k[4], k[3]): ev for k, ev in self.ev.items() if k[:3] == system
                  and (pick is None or k[3] in pick.get(k[4], ()))}
        return Side(label, chosen)

    def stored(self, ev: Evaluation) -> tuple[float, float, float]:
        m = ev.metrics.get(ev.main_metric) or {}
        return tuple(float("nan") if m.get(k) is None else float(m[k]) for k in ("value", "low", "high"))


def _ranking(r: _Report) -> str:
    header = [("#", "num"), ("model", "text"), ("setting", "text"), ("prompt", "text"), ("overall", "num"),
              ("rank", "num"), ("group", "text"), ("first", "num")]
    header += [(c.replace("_", " "), "num") for c in r.categories] + [("tasks", "num")]
    rows = []
    for i, (_, d) in enumerate(r.wide.iterrows(), start=1):
        cells = [_num(i, 0), _td(d["label"]), _td(d["setting"]),
                 _td(d["prompt"]), _value_cell(d["overall"], d["overall__low"], d["overall__high"]), _rank_cell(d),
                 _td(d["group"] if isinstance(d["group"], str) else "—"), _num(d["rank__first"], 2)]
        cells += [_value_cell(d[f"{c}__mean"], d[f"{c}__low"], d[f"{c}__high"]) for c in r.categories]
        cells.append(f'<td class="num" data-v="{d["overall__k"]}">{d["overall__k"]}/{len(r.tasks)}</td>')
        rows.append(_tr(cells))
    return (_table(header, rows) + '<p class="note">Each cell: the unweighted mean of the tasks\' main metric, its '
            "95% interval below (see Definitions). Rank: 1 = best, its 95% interval below, over resamples of "
            f"{e(SOURCES)}; first: the share of resamples in which the row ranks first; rows sharing a group letter "
            f"are not significantly different (paired bootstrap, Holm over all pairs, α = {RANK_ALPHA}). Click a column "
            "header to sort.</p>" + _category_plot(r) + _rank_plot(r))


def _rank_cell(d: pd.Series) -> str:
    """A row's rank with its 95% interval below (a dash for an unranked row)."""
    if pd.isna(d["rank"]):
        return '<td class="num" data-v="">—</td>'
    return (f'<td class="num" data-v="{_v(d["rank"])}">{d["rank"]:g}'
            f'<span class="ci">[{d["rank__low"]:g}–{d["rank__high"]:g}]</span></td>')


def _rank_plot(r: _Report) -> str:
    """Each ranked row's rank interval as a bar with its point rank, best first, group letters on the right."""
    ranked = r.wide[r.wide["rank"].notna()]
    if ranked.empty:
        return ""
    ranked = ranked.sort_values("rank", kind="mergesort")
    plt = _pyplot()
    n = len(ranked)
    fig, ax = plt.subplots(figsize=(8.5, 0.9 + 0.32 * n))
    y = np.arange(n)
    low, high = ranked["rank__low"].to_numpy(float), ranked["rank__high"].to_numpy(float)
    ax.barh(y, high - low + 0.5, left=low - 0.25, height=0.5, color="#9ecae1")  # a bar spans its ranks' slots
    ax.plot(ranked["rank"].to_numpy(float), y, "o", color="#08519c", ms=5)
    for yi, group in zip(y, ranked["group"]):
        ax.text(1.01, yi, group, transform=ax.get_yaxis_transform(), va="center", fontsize=9)
    ax.set_yticks(y, [_row_label(row) for _, row in ranked.iterrows()])
    ax.invert_yaxis()
    ax.set_xlim(0.5, n + 0.5)
    ax.set_xticks(np.arange(1, n + 1) if n <= 20 else np.linspace(1, n, 6).round())
    ax.set_xlabel("rank (1 = best) with its 95% interval")
    ranking = r.wide.attrs["ranking"]
    return _png(fig, "Rank intervals with significance groups",
                f"Each row's rank (dot) with its 95% interval (bar) over {ranking.n_boot} resamples of {SOURCES}; "
                f"on the right its group letters: rows sharing a letter are not significantly different (paired "
                f"bootstrap of the overall difference, Holm over all pairs, α = {RANK_ALPHA}). Ranked over "
                f"{', '.join(ranking.tasks)}.")


def _category_plot(r: _Report) -> str:
    plt = _pyplot()
    wide = r.wide.head(MAX_PLOT_ROWS)
    groups = ["overall", *r.categories]
    names = ["overall", *(c.replace("_", " ") for c in r.categories)]
    k = len(wide)
    fig, ax = plt.subplots(figsize=(min(11.5, 2.2 + 1.35 * len(groups) * max(1, k) ** 0.5), 3.6))
    width = 0.8 / max(k, 1)
    colors = plt.get_cmap("tab10").colors
    for j, (_, row) in enumerate(wide.iterrows()):
        values = np.array([row["overall" if g == "overall" else f"{g}__mean"] for g in groups], dtype=float)
        low = np.array([row[f"{g}__low"] for g in groups], dtype=float)
        high = np.array([row[f"{g}__high"] for g in groups], dtype=float)
        x = np.arange(len(groups)) - 0.4 + width * (j + 0.5)
        label = _row_label(row)
        ax.bar(x, values, width * 0.92, color=colors[j % 10], label=label,
               yerr=np.vstack([values - low, high - values]), capsize=3, error_kw={"elinewidth": 1, "ecolor": "#333"})
    ax.set_xticks(np.arange(len(groups)), names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean of main metric")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8.5)
    shown = f" (the {k} best rows by overall)" if len(r.wide) > k else ""
    return _png(fig, "Per-category score with 95% intervals",
                f"Mean main metric per category with 95% interval bars{shown}.")


def _per_task(r: _Report) -> str:
    header = [("model", "text"), ("setting", "text"), ("prompt", "text")]
    header += [(f"{t['task']} · {t['metric']}", "num") for t in r.tasks]
    rows = []
    for _, row in r.wide.iterrows():
        cells = [_td(row["label"]), _td(row["setting"]),
                 _td(row["prompt"])]
        for t in r.tasks:
            n = row[f"{t['task']}__n"]
            cells.append(_value_cell(row[f"{t['task']}__value"], row[f"{t['task']}__low"], row[f"{t['task']}__high"],
                                     title=f"{t['task']} ({t['category']}), n = {n}"))
        rows.append(_tr(cells))
    cats = " · ".join(f"{c.replace('_', ' ')}: {', '.join(ts)}" for c, ts in r.categories.items())
    return (_table(header, rows) + f'<p class="note">Each cell: the task\'s main metric and its 95% interval '
            f"(hover for n). Categories — {e(cats)}.</p>" + _task_plot(r))


def _task_plot(r: _Report) -> str:
    plt = _pyplot()
    wide = r.wide.head(MAX_PLOT_ROWS)
    tasks = [t["task"] for t in r.tasks]
    k = len(wide)
    fig, ax = plt.subplots(figsize=(8.5, 0.9 + len(tasks) * (0.28 + 0.12 * k)))
    colors = plt.get_cmap("tab10").colors
    step = 0.7 / max(k, 1)
    for j, (_, row) in enumerate(wide.iterrows()):
        y = np.arange(len(tasks)) - 0.35 + step * (j + 0.5)
        v = np.array([row[f"{t}__value"] for t in tasks], dtype=float)
        lo = np.array([row[f"{t}__low"] for t in tasks], dtype=float)
        hi = np.array([row[f"{t}__high"] for t in tasks], dtype=float)
        ax.errorbar(v, y, xerr=np.vstack([v - lo, hi - v]), fmt="o", ms=4.5, capsize=2.5, lw=1.2,
                    color=colors[j % 10], label=_row_label(row))
    ax.set_yticks(np.arange(len(tasks)), [f"{t} ({r.metric_of[t]})" for t in tasks])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("main metric (95% interval)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8.5)
    return _png(fig, "Per-task score with 95% intervals", "Each task's main metric with its 95% interval, per row.")


def _test_cells(row: TaskComparison | None) -> list[str]:
    """A paired comparison's difference with its interval, p and Holm-adjusted p (dashes when untested)."""
    if row is None or row.test is None:
        return ['<td class="num" data-v="">—</td>'] * 3
    t = row.test
    cls = " ".join(c for c in ("sig" if row.p_holm <= ALPHA else "", "neg" if t.diff < 0 else "") if c)
    delta = (f'<td class="num {cls}" data-v="{_v(t.diff)}">{_f(t.diff, signed=True)}'
             f'<span class="ci">[{_f(t.low, signed=True)}, {_f(t.high, signed=True)}]</span></td>')
    how = f"{t.test} on n = {t.n} paired documents" + (
        f" ({t.only_a} right only in the first, {t.only_b} only in the second)" if t.only_a is not None else "")
    return [delta, _p(t.p_value, how), _p(row.p_holm, how)]


def _settings(r: _Report) -> str:
    """Per model: each task × prompt variant under every setting (an adapter is a setting of its base model),
    and each setting against the baseline (zero-shot without adapter when there is one)."""
    parts = []
    for model in dict.fromkeys(m for m, _, _ in r.systems):
        systems = sorted([x for x in r.systems if x[0] == model], key=lambda x: (x[1] != "", _setting_order(x[2]), x))
        if len(systems) < 2:
            continue
        name = {x: x[2] + (f" + {x[1]}" if x[1] else "") for x in systems}
        base, others = systems[0], systems[1:]
        results = {x: compare(r.side(x, name[x]), r.side(base, name[base]), "main", n_boot=N_BOOT) for x in others}
        header = [("task", "text"), ("prompt", "text"), ("metric", "text"), *((name[x], "num") for x in systems)]
        for x in others:
            header += [(f"{name[x]} − {name[base]}", "num"), ("p", "num"), ("p (Holm)", "num")]
        rows = []
        for t in r.tasks:
            for variant in sorted({v for x in systems for v in r.variants(x, t["task"])}):
                cells = [_td(t["task"]), _td(variant), _td(r.metric_of[t["task"]])]
                for x in systems:
                    ev = r.of(*x, variant, t["task"])
                    cells.append(_value_cell(*r.stored(ev)) if ev else _value_cell(None))
                for x in others:
                    cells += _test_cells(next((row for row in results[x].rows
                                               if (row.task, row.variant_a) == (t["task"], variant)), None))
                rows.append(_tr(cells))
        tested = [row for result in results.values() for row in result.rows if row.test]
        significant = sum(row.p_holm <= ALPHA for row in tested)
        parts.append(f"<h3>{e(model)}</h3><p class=\"lead\">{significant} of {len(tested)} paired differences against "
                     f"{e(name[base])} are significant after Holm correction (α = {ALPHA}).</p>"
                     + _table(header, rows) + _unpaired_note(results.values()))
    if not parts:
        return ('<p class="lead">No model was run in more than one setting. Run it zero-shot and with '
                "<code>--shots K</code> (or with a fine-tuned adapter) to see the settings side by side.</p>")
    return ('<p class="lead">Each setting\'s score per task and prompt variant; the difference to the baseline setting '
            "on the same documents, with its 95% paired-bootstrap interval and a paired test (exact McNemar for "
            "accuracy, paired bootstrap for F1 and MCC and for tasks with clusters), Holm-corrected across the "
            "tasks and variants of each "
            'comparison. <span class="sig">Green</span>/<span class="sig neg">red</span>: significant after Holm.</p>'
            + "".join(parts))


def _unpaired_note(results: Iterable[Comparison]) -> str:
    notes = []
    for result in results:
        for row in result.rows:
            if row.only_in_a or row.only_in_b or row.gold_differs:
                notes.append(f"{row.task}/{row.variant_a} ({result.a} vs {result.b}): {len(row.only_in_a)} document(s) "
                             f"only in the first, {len(row.only_in_b)} only in the second, {len(row.gold_differs)} with "
                             "different gold answers — left out of the test")
            if row.note:
                notes.append(f"{row.task}/{row.variant_a} ({result.a} vs {result.b}): {row.note}")
        notes += [f"{result.a} vs {result.b}: {n}" for n in result.notes]
    return "".join(f'<p class="note">{e(n)}</p>' for n in notes)


def _setting_order(setting: str) -> tuple[int, int, str]:
    if setting == "zero-shot":
        return (0, 0, setting)
    if setting.endswith("-shot") and setting[:-5].isdigit():
        return (1, int(setting[:-5]), setting)
    return (2, 0, setting)


def _prompts(r: _Report) -> str:
    """Variants side by side per system, robustness summary, ranking stability (Kendall's tau-b)."""
    parts, summary = [], []
    for system in r.systems:
        tasks = [t["task"] for t in r.tasks if len(r.variants(system, t["task"])) >= 2]
        if not tasks:
            continue
        names = list(dict.fromkeys(v for t in tasks for v in r.variants(system, t)))
        spread = []
        for task in tasks:
            scores = {v: r.stored(r.of(*system, v, task))[0] for v in r.variants(system, task)}
            values = np.array(list(scores.values()))
            spread.append({"task": task, "mean": values.mean(), "sd": values.std(ddof=1), "range": np.ptp(values),
                           "lowest": values.min(), "best": max(scores, key=scores.get),
                           "worst": min(scores, key=scores.get)})
        result = compare(r.side(system, "best", {x["task"]: [x["best"]] for x in spread}),
                         r.side(system, "worst", {x["task"]: [x["worst"]] for x in spread}), "main", n_boot=N_BOOT)
        by_task = {row.task: row for row in result.rows}
        body = []
        for x in spread:
            cells = [_td(x["task"])]
            for v in names:
                ev = r.of(*system, v, x["task"])
                cells.append(_value_cell(*r.stored(ev)) if ev else _value_cell(None))
            cells += [_num(x["mean"]), _num(x["sd"]), _num(x["range"]), _td(x["worst"]), *_test_cells(by_task.get(x["task"]))]
            body.append(_tr(cells))
        label = system_label(*system)
        header = [("task", "text"), *((v, "num") for v in names), ("mean", "num"), ("sd", "num"), ("range", "num"),
                  ("worst", "text"), ("best − worst", "num"), ("p", "num"), ("p (Holm)", "num")]
        parts.append(f"<h3>{e(label)}</h3>" + _table(header, body) + _unpaired_note([result]))
        worst, count = Counter(x["worst"] for x in spread).most_common(1)[0]
        summary.append(_tr([_td(label), _num(len(tasks), 0),
                            *(_num(float(np.mean([x[k] for x in spread]))) for k in ("mean", "sd", "range", "lowest")),
                            _td(f"{worst} ({count} of {len(tasks)} tasks)")]))
    if not parts:
        return ('<p class="lead">No system was run with more than one prompt variant of a task. Run with '
                "<code>--prompts all</code> to compare prompting strategies.</p>")
    robust = _table([("system", "text"), ("tasks", "num"), ("mean over variants", "num"), ("mean sd", "num"),
                     ("mean range", "num"), ("mean worst-variant score", "num"), ("most often worst", "text")], summary)
    return ('<p class="lead">Per system, each task\'s score under every prompt variant; the spread across variants; '
            "and whether the best variant beats the worst on the same documents (paired test, Holm across tasks)."
            "</p><h3>Prompt robustness per system</h3>" + robust +
            '<p class="note">Mean over variants: per task the mean of the variants\' main metric, averaged over tasks; '
            "sd: the standard deviation across variants (n − 1); range: best minus worst variant; worst-variant score: "
            "per task the lowest variant's score, averaged over tasks.</p>" + _stability(r) + "".join(parts))


def _stability(r: _Report) -> str:
    """Kendall's tau-b between the rankings of systems under two prompt variants, per task and overall."""
    wide = r.wide
    variants = sorted(set(wide["prompt"]))
    rows = []
    for v1, v2 in combinations(variants, 2):
        a = wide[wide["prompt"] == v1].set_index(["model", "adapter", "setting"])
        b = wide[wide["prompt"] == v2].set_index(["model", "adapter", "setting"])
        common = [s for s in a.index if s in b.index]
        if len(common) < 2:
            continue
        overall = kendall_tau_b(list(a.loc[common, "overall"]), list(b.loc[common, "overall"]))
        per_task = []
        for t in r.tasks:
            x, y = a.loc[common, f"{t['task']}__value"], b.loc[common, f"{t['task']}__value"]
            keep = x.notna().to_numpy() & y.notna().to_numpy()
            if keep.sum() >= 2:
                per_task.append(kendall_tau_b(list(x[keep]), list(y[keep])))
        per_task = [t for t in per_task if not math.isnan(t)]
        rows.append(_tr([_td(f"{v1} vs {v2}"), _num(len(common), 0), _num(overall),
                         _num(float(np.mean(per_task)) if per_task else None), _num(min(per_task) if per_task else None)]))
    if not rows:
        return ('<h3>Ranking stability</h3><p class="note">Needs at least two systems (model × setting) run with the '
                "same two prompt variants.</p>")
    return ("<h3>Ranking stability across prompt variants</h3>" +
            _table([("variants", "text"), ("systems", "num"), ("tau-b, overall", "num"), ("mean tau-b over tasks", "num"),
                    ("lowest tau-b of a task", "num")], rows) +
            '<p class="note">Kendall\'s tau-b between the rankings of the systems (model × setting) under the two '
            "variants: 1 = the same order, 0 = unrelated, −1 = reversed. With two systems it can only be ±1.</p>")


def _share(x: float | None) -> str:
    return '<td class="num" data-v="">—</td>' if x is None else f'<td class="num" data-v="{_v(x)}">{x:.0%}</td>'


def _interval(low: float, high: float) -> str:
    return f'<td class="num">[{_f(low)}, {_f(high)}]</td>'


def _variance(r: _Report) -> str:
    """Per system, each task's variance shared out among documents, prompt variants, few-shot draws and seeds."""
    section = variance_section(r.long, r.tasks, r.ev)
    parts, alone = [], []
    for system in section["systems"]:
        if system["documents_only"]:
            alone.append(system["system"])
            continue
        rows, notes = [], []
        for task, x in system["tasks"].items():
            notes += [f"{task}: {note}" for note in ([x["note"]] if "note" in x else []) + x.get("notes", [])]
            if "mean" not in x:
                continue
            levels = " · ".join(str(x["levels"][name]) for name in ("variant", "draw", "seed"))
            rows.append(_tr([_td(task), _td(x["score"]), _num(x["documents"], 0), _td(levels),
                             *(_share(x["shares"][g]) for g in SHARES), _num(x["mean"]),
                             _interval(x["low"], x["high"]), _interval(x["document_low"], x["document_high"])]))
        overall = system["overall"]
        if overall:
            rows.append(_tr([_td(f"overall (mean of {overall['tasks']} tasks)"), _td(""), _td(""), _td(""),
                             *(_share(overall["shares"][g]) for g in SHARES), _num(overall["mean"]),
                             _interval(overall["low"], overall["high"]),
                             _interval(overall["document_low"], overall["document_high"])]))
        header = [("task", "text"), ("score", "text"), ("n", "num"), ("variants · draws · seeds", "text"),
                  ("% documents", "num"), ("% prompt variants", "num"), ("% few-shot draws", "num"), ("% seeds", "num"),
                  ("% interactions", "num"), ("mean", "num"), ("95% interval, all sources", "num"),
                  ("95% interval, documents only", "num")]
        parts.append(f"<h3>{e(system['system'])}</h3>" + (_table(header, rows, sortable=False) if rows else "")
                     + "".join(f'<p class="note">{e(n)}</p>' for n in notes))
    if not parts:
        return ('<p class="lead">Nothing to decompose: every system ran each task with one prompt variant, one '
                "few-shot draw and one generation per document, so only documents vary (the intervals elsewhere "
                "say all there is).</p>")
    if alone:
        parts.append(f'<p class="note">Documents only (one prompt variant, few-shot draw and generation per document '
                     f"in every task): {e('; '.join(alone))}.</p>")
    return ('<p class="lead">How much of each task score\'s variance comes from the documents, the prompt variant, '
            "the few-shot draw and the sampling seed. A share (%) is that source's part of the variance of the task "
            "score (the mean over documents, variants, draws and seeds): a large variant share means the score "
            "would move more with another prompt than with other documents. The all-sources interval is for the "
            "score expected over prompt variants, few-shot draws and seeds like these, not for these particular "
            "ones; the documents-only interval treats them as fixed, as the intervals elsewhere do. A source with "
            "only 2–3 levels (three variants, say) is estimated from few values: its interval is wide, as it "
            "should be, and narrows with more variants or draws, not with more documents. Interactions: how much "
            "a document's score depends on the variant, draw or seed beyond their average effects (the highest "
            "interaction includes the residual noise). Mean: the score averaged over documents, variants, draws "
            "and seeds, unlike the per-prompt tables above. n: the documents scored under every variant and draw; a "
            "share shows — where its source has a single level (nothing to estimate).</p>"
            + "".join(parts) + f'<p class="note">Method: {e(section["method"])}. {e(section["definition"])} '
            f'{e(section["overall_definition"])}</p>')


def _doc_key(samples: Sequence[dict[str, Any]]) -> str:
    return "doc_hash" if all("doc_hash" in s for s in samples) else "doc_id"


def _by_document(samples: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
    """Each sample with its correctness (0 or 1); in a run with several few-shot draws, each document once
    (its first sample) with the share of its draws answered correctly, so that draws do not count as documents."""
    if not any("draw" in s for s in samples):
        return [(s, float(bool(s["correct"]))) for s in samples]
    key = _doc_key(samples)
    grouped: dict[Any, list[dict[str, Any]]] = {}
    for s in samples:
        grouped.setdefault(s[key], []).append(s)
    return [(group[0], float(np.mean([bool(s["correct"]) for s in group]))) for group in grouped.values()]


def _agreement(r: _Report) -> str:
    rows = []
    for system in r.systems:
        for t in r.tasks:
            variants = r.variants(system, t["task"])
            if len(variants) < 2:
                continue
            evs = [r.of(*system, v, t["task"]) for v in variants]
            key = _doc_key([s for ev in evs for s in ev.samples])
            by_doc = [{(s[key], s.get("draw")): s for s in ev.samples} for ev in evs]  # draw k pairs with draw k
            docs = [d for d in by_doc[0] if all(d in other for other in by_doc[1:])]
            if not docs:
                continue
            preds = np.array([[m[d]["pred"] for m in by_doc] for d in docs])
            right = np.array([[bool(m[d]["correct"]) for m in by_doc] for d in docs])
            pairs = list(combinations(range(len(variants)), 2))
            pairwise = float(np.mean([np.mean(preds[:, i] == preds[:, j]) for i, j in pairs]))
            rows.append(_tr([_td(system_label(*system)), _td(t["task"]), _num(len(variants), 0), _num(len(docs), 0),
                             _num(float(np.mean((preds == preds[:, :1]).all(axis=1)))), _num(pairwise),
                             _num(fleiss_kappa(preds)), _num(float(right.all(axis=1).mean())),
                             _num(float(right.any(axis=1).mean()))]))
    if not rows:
        return '<p class="note">No task was run with several prompt variants by the same system.</p>'
    return (_table([("system", "text"), ("task", "text"), ("variants", "num"), ("documents", "num"),
                    ("all agree", "num"), ("pairwise agreement", "num"), ("Fleiss κ", "num"),
                    ("right in all", "num"), ("right in any", "num")], rows) +
            '<p class="note">On the documents every variant scored: the share where all variants predict the same '
            "answer, the mean share of agreeing variant pairs, Fleiss' kappa (agreement beyond chance), and the share "
            "answered correctly under every variant / under at least one (the best-of-prompts ceiling).</p>")


def _votes_share(votes: Sequence[Any]) -> tuple[float, Any]:
    """Share of the samples agreeing with the most common answer (unparseable answers count as disagreeing)."""
    answers = [v for v in votes if v is not None]
    if not votes:
        return math.nan, None
    if not answers:
        return 0.0, None
    answer, count = Counter(map(str, answers)).most_common(1)[0]
    return count / len(votes), answer


def _self_consistency(r: _Report) -> str:
    rows = []
    for key, ev in r.ev.items():
        voted = [s for s in ev.samples if s.get("votes")]
        if not voted:
            continue
        shares = np.array([_votes_share(s["votes"])[0] for s in voted])
        correct = np.array([bool(s["correct"]) for s in voted])
        unanimous = np.isclose(shares, 1.0)
        rows.append(_tr([_td(system_label(*key[:3])), _td(key[4]), _td(key[3]), _num(len(voted), 0),
                         _num(float(np.mean([len(s["votes"]) for s in voted])), 1), _num(float(shares.mean())),
                         _num(float(unanimous.mean())), _num(float(correct[unanimous].mean()) if unanimous.any() else None),
                         _num(float(correct[~unanimous].mean()) if (~unanimous).any() else None)]))
    if not rows:
        return '<p class="note">No run recorded self-consistency samples (<code>votes</code>).</p>'
    return (_table([("system", "text"), ("task", "text"), ("prompt", "text"), ("documents", "num"), ("samples", "num"),
                    ("mean agreement", "num"), ("unanimous", "num"), ("accuracy if unanimous", "num"),
                    ("accuracy if split", "num")], rows) +
            '<p class="note">Agreement: the share of a document\'s sampled answers equal to its most common answer '
            "(unparseable answers never agree), averaged over documents. Unanimous: every sample gave the same "
            "answer. A well-calibrated model is more often right when its samples agree.</p>")


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _difficulty(r: _Report) -> str:
    table: dict[str, dict[str, dict[Any, list[float]]]] = {}
    for key, ev in r.ev.items():
        for s, correct in _by_document(ev.samples):
            if s.get("difficulty") is not None:
                label = f"{system_label(*key[:3])} · {key[3]}"
                table.setdefault(key[4], {}).setdefault(label, {}).setdefault(s["difficulty"], []).append(correct)
    if not table:
        return '<p class="note">No run recorded document difficulty (generated tasks record it).</p>'
    plt = _pyplot()
    tasks = sorted(table)
    cols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols + 2.6, 2.8 * nrows), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10").colors
    rows, handles = [], {}
    labels = sorted({label for lines in table.values() for label in lines})
    for i, task in enumerate(tasks):
        ax = axes[i // cols][i % cols]
        for label, levels in sorted(table[task].items())[:MAX_PLOT_ROWS]:
            order = sorted(levels, key=lambda x: (not isinstance(x, (int, float)), x if isinstance(x, (int, float)) else str(x)))
            acc = np.array([np.mean(levels[x]) for x in order])
            bounds = np.array([_wilson(sum(levels[x]), len(levels[x])) for x in order])
            handles[label] = ax.errorbar(range(len(order)), acc, yerr=np.vstack([acc - bounds[:, 0], bounds[:, 1] - acc]),
                                         fmt="o-", ms=4, capsize=2.5, lw=1.2, color=colors[labels.index(label) % 10])
            ax.set_xticks(range(len(order)), [str(x) for x in order])
            rows += [_tr([_td(task), _td(label), _td(x), _num(len(levels[x]), 0), _num(float(np.mean(levels[x]))),
                          _num(lo), _num(hi)]) for x, (lo, hi) in zip(order, bounds)]
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("difficulty")
        ax.set_ylim(0, 1)
    for k in range(len(tasks), nrows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].set_ylabel("accuracy")
    fig.legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False, fontsize=8.5)
    fig.tight_layout()
    plot = _png(fig, "Accuracy by difficulty", "Accuracy (share of correct documents) per difficulty level, with "
                "95% Wilson score intervals.")
    return plot + _table([("task", "text"), ("system · prompt", "text"), ("difficulty", "text"), ("documents", "num"),
                          ("accuracy", "num"), ("low", "num"), ("high", "num")], rows)


def _thinking_bucket(length: float) -> tuple[int, str]:
    """The bucket of a thinking length: its order and its label ('0', '1–64', ..., '> 4096')."""
    lower = 0
    for order, upper in enumerate(THINKING_BUCKETS):
        if length <= upper:
            return order, "0" if upper == 0 else f"{lower + 1}–{upper}"
        lower = upper
    return len(THINKING_BUCKETS), f"> {THINKING_BUCKETS[-1]}"


def _thinking(r: _Report) -> str:
    summary, buckets = [], []
    for key, ev in r.ev.items():
        measured = [s for s in ev.samples if s.get("thinking")]
        if not measured:
            continue
        cells = [_td(system_label(*key[:3])), _td(key[4]), _td(key[3]), _td(measured[0]["thinking"]["unit"])]
        correct = np.array([bool(s["correct"]) for s in measured])
        generations = sum(len(s.get("generations") or ()) or 1 for s in measured)
        unclosed = sum(s["thinking"]["unclosed"] for s in measured) / generations
        summary.append(_tr(cells + [_num(len(measured), 0),
                                    _num(float(np.mean([s["thinking"]["thinking"] for s in measured])), 1),
                                    _num(float(np.mean([s["thinking"]["answer"] for s in measured])), 1),
                                    _num(unclosed), _num(float(correct.mean()))]))
        groups: dict[tuple[int, str], list[bool]] = {}
        for s, hit in zip(measured, correct):
            groups.setdefault(_thinking_bucket(s["thinking"]["thinking"]), []).append(bool(hit))
        for (_, label), hits in sorted(groups.items()):
            low, high = _wilson(sum(hits), len(hits))
            buckets.append(_tr(cells + [_td(label), _num(len(hits), 0), _num(float(np.mean(hits))), _num(low),
                                        _num(high)]))
    if not summary:
        return '<p class="note">No run measured thinking (runs with <code>--think</code> do).</p>'
    head = [("system", "text"), ("task", "text"), ("prompt", "text"), ("unit", "text")]
    return (_table(head + [("documents", "num"), ("mean thinking", "num"), ("mean answer", "num"),
                           ("unclosed", "num"), ("accuracy", "num")], summary) +
            _table(head + [("thinking length", "text"), ("documents", "num"), ("accuracy", "num"), ("low", "num"),
                           ("high", "num")], buckets) +
            '<p class="note">Thinking is what a thinking model wrote between its thinking tags (or returned apart, '
            "as <code>reasoning_content</code>), removed before its answer was read; lengths are per document (the "
            "mean over its samples), in the model's tokens, or in characters where the engine had no tokenizer. "
            "Unclosed: the share of generations whose thinking never closed, so that no answer could be read "
            "(they count as wrong). Accuracy per bucket of thinking length, with 95% Wilson score intervals.</p>")


def _read(s: dict[str, Any], rule: str) -> str:
    """One rule's reading of a sample: the answer it extracted and whether that is right, wrong or unparseable."""
    answer, pred, gold = s.get("extracted" + rule), s.get("pred" + rule, -1), s.get("gold", -1)
    if pred >= 0:
        verdict = "right" if pred == gold or gold < 0 else "wrong"  # gold -1: a free-form target, pred 0 matches it
    else:
        verdict = "wrong" if gold < 0 and answer is not None else "unparseable"
    return ("—" if answer is None else answer) + f" ({verdict})"


def _excerpt(s: dict[str, Any]) -> str:
    """The end of a sample's generation (its first sample's, with several)."""
    text = s.get("generation") if s.get("generation") is not None else (s.get("generations") or [""])[0]
    return text if len(text) <= EXCERPT else "…" + text[-EXCERPT:]


def _extraction(r: _Report) -> str:
    rows, examples = [], {}
    for key, ev in r.ev.items():
        read = [s for s in ev.samples if s.get("pred_flexible") is not None]
        if not read or "accuracy_flexible" not in ev.metrics:
            continue
        differ = [s for s in read
                  if (s.get("pred"), s.get("extracted")) != (s["pred_flexible"], s.get("extracted_flexible"))]
        cells = [_value_cell(m.get("value"), m.get("low"), m.get("high"), title=m.get("definition") or "")
                 for name in ("accuracy", "accuracy_flexible", "unparseable_rate", "unparseable_rate_flexible")
                 for m in [ev.metrics.get(name) or {}]]
        rows.append(_tr([_td(system_label(*key[:3])), _td(key[4]), _td(key[3]), _num(len(read), 0), *cells,
                         _num(len(differ), 0)]))
        examples.setdefault(key[4], []).extend((key, s) for s in differ)
    if not rows:
        return '<p class="note">No run recorded answers read by both rules (generation prompts do).</p>'
    shown = []
    for task, found in examples.items():
        for key, s in found[:DISAGREEMENTS_SHOWN]:
            shown.append(f"<tr><td>{e(task)}<div class='muted'>{e(system_label(*key[:3]))} · {e(key[3])} · doc "
                         f"{e(s.get('doc_id'))}</div></td><td class=\"wide\"><div class=\"prompt\"><pre>{e(_excerpt(s))}"
                         f"</pre></div></td><td>{e(_read(s, ''))}</td><td>{e(_read(s, '_flexible'))}</td>"
                         f"<td>{e(s.get('gold_text'))}</td></tr>")
    table = (_table([("task", "text"), ("generation (its end)", "text"), ("strict", "text"), ("flexible", "text"),
                     ("gold", "text")], shown) if shown else '<p class="note">The two rules read every answer alike.</p>')
    return (_table([("system", "text"), ("task", "text"), ("prompt", "text"), ("documents", "num"),
                    ("accuracy (strict)", "num"), ("accuracy (flexible)", "num"), ("unparseable (strict)", "num"),
                    ("unparseable (flexible)", "num"), ("disagree", "num")], rows) +
            f"<h3>Where the rules disagree</h3>{table}"
            f'<p class="note">Every generated answer is read twice. The {e(STRICT_RULE)}. The {e(FLEXIBLE_RULE)}. '
            "Accuracy counts unparseable answers as wrong; intervals are the runs' 95% bootstrap intervals. Disagree: "
            f"documents whose two readings differ; up to {DISAGREEMENTS_SHOWN} per task are shown.</p>")


CONTAMINATION_HOWTO = (
    "For a generated task, run it again on a fresh draw beside the run on the published one: "
    "<code>evalsuite run --model M --tasks gen_syllogisms --data-seed 7</code>; for a multiple-choice task, "
    "run it again with its options rotated, with a prompt that shows them: <code>evalsuite run --model M --tasks "
    "commonsenseqa --prompts lettered --permute-choices</code>.")


def _contamination(r: _Report) -> str:
    """Each probe (a fresh draw, permuted options) against the same system's run without it."""
    folders = r.long.attrs.get("folders") or list(dict.fromkeys(r.long["folder"]))
    gaps = contamination_gaps([Path(f) for f in folders], n_boot=N_BOOT)
    if not gaps:
        return f'<p class="lead">No run here has a contamination probe beside it. {CONTAMINATION_HOWTO}</p>'
    rows = []
    for g in gaps:
        cells = [_td(g.system), _td(g.task), _td(g.variant), _td(f"{g.kind} ({g.probe})"), _num(g.n, 0),
                 _value_cell(g.reference), _value_cell(g.probed)]
        if g.gap is None:
            rows.append(_tr(cells + ['<td class="num" data-v="">—</td>'] * 2 + [_td(g.note)]))
            continue
        cls = " ".join(c for c in ("sig" if g.p_value <= ALPHA else "", "neg" if g.gap < 0 else "") if c)
        gap = (f'<td class="num {cls}" data-v="{_v(g.gap)}">{_f(g.gap, signed=True)}'
               f'<span class="ci">[{_f(g.low, signed=True)}, {_f(g.high, signed=True)}]</span></td>')
        rows.append(_tr(cells + [gap, _p(g.p_value, g.test), _td("; ".join(x for x in (g.test, g.note) if x))]))
    header = [("system", "text"), ("task", "text"), ("prompt", "text"), ("probe", "text"), ("n", "num"),
              ("published / original", "num"), ("fresh / permuted", "num"), ("gap", "num"), ("p", "num"),
              ("test", "text")]
    return (
        '<p class="lead">Per task, the same system\'s accuracy on the data as published and on a probe: a fresh draw '
        "of a generated task (<code>--data-seed</code>: same size and difficulty mix, documents paired by position "
        "within their difficulty level) or the same multiple-choice documents with their options rotated by one "
        "position (<code>--permute-choices</code>, paired by document). Gap: published (or original) minus probe, "
        "with its 95% paired bootstrap interval (stratified by difficulty for fresh draws); p: the stratified paired "
        "bootstrap test for fresh draws, exact McNemar for permuted options (the paired cluster bootstrap's for "
        'tasks with clusters). <span class="sig">Green</span>/<span class="sig neg">red</span>: p ≤ 0.05, the '
        "published data scoring higher / lower.</p>" + _table(header, rows) +
        '<p class="note">What a gap can and cannot mean. A positive gap on a fresh draw suggests that the published '
        "items, or their generator's seed, were seen in training. A gap under permutation suggests memorised answer "
        "positions or option order — or a positional bias of the model (preferring a letter or the first option), "
        "which a gap cannot tell apart from contamination. A prompt that scores the option texts without showing "
        "them (such as plain) sees the same question either way, so its gap is zero but for exact ties. No gap "
        "does not prove the absence of contamination: a model can have seen the items and not gain from it, and a "
        "small test set only detects large gaps. The gap on a fresh draw also holds the sampling difference between "
        "two draws of the same generator; the interval covers that, so only a gap whose interval excludes 0 is a "
        "signal at all.</p>")


def _confidence(s: dict[str, Any]) -> tuple[float, str] | None:
    """How sure a wrong answer was: the log-prob margin of the chosen over the gold choice, or the vote share."""
    lp, pred, gold = s.get("logprobs"), s.get("pred", -1), s.get("gold", -1)
    if lp and 0 <= pred < len(lp) and 0 <= gold < len(lp):
        margin = float(lp[pred]) - float(lp[gold])
        return margin, f"{margin:.2f} nats"
    if s.get("votes"):
        share, _ = _votes_share(s["votes"])
        return share, f"{share:.0%} of {len(s['votes'])} samples"
    return None


def _answer(s: dict[str, Any], index: int) -> str:
    choices = s.get("choices") or []
    return choices[index].strip() if 0 <= index < len(choices) else ("(unparseable)" if index < 0 else str(index))


def _choices(s: dict[str, Any]) -> str:
    """The choices with their log-likelihoods, the chosen and the gold one marked."""
    logprobs = list(s.get("logprobs") or [])
    items = []
    for i, choice in enumerate(s.get("choices") or []):
        lp = f" ({float(logprobs[i]):.2f})" if i < len(logprobs) else ""
        mark = " ← chosen" if i == s.get("pred") else ""
        mark += " ✓ gold" if i == s.get("gold") else ""
        items.append(f"<li>{e(choice.strip())}<span class='muted'>{e(lp + mark)}</span></li>")
    return "".join(items)


def _draw(s: dict[str, Any]) -> str:
    return f" · few-shot draw {e(s['draw'])}" if "draw" in s else ""


def _shots_note(s: dict[str, Any]) -> str:
    k = len(s.get("fewshot_ids") or ())
    return f'<div class="muted">{k} solved example(s) precede the question: scroll up</div>' if k else ""


def _errors(r: _Report) -> str:
    parts = []
    for t in r.tasks:
        task = t["task"]
        evs = [(k, ev) for k, ev in r.ev.items() if k[4] == task]
        matrices = "".join(_confusion(f"{system_label(*k[:3])} · {k[3]}", ev) for k, ev in evs)
        wrong = [(c, k, s) for k, ev in evs for s in ev.samples if not s.get("correct") for c in [_confidence(s)]]
        ranked = sorted(wrong, key=lambda w: (w[0] is None, -(w[0][0] if w[0] else 0)))[:WRONG_SHOWN]
        rows = []
        for conf, k, s in ranked:
            shown = e(s.get("generation")) if s.get("generation") is not None else e(_answer(s, s.get("pred", -1)))
            extracted = f'<div class="muted">extracted: {e(s.get("extracted"))}</div>' if "extracted" in s else ""
            choices = _choices(s)
            rows.append(
                f"<tr><td>{e(system_label(*k[:3]))}<div class='muted'>{e(k[3])} · doc {e(s.get('doc_id'))}{_draw(s)}</div></td>"
                f'<td class="num" data-v="{_v(conf[0] if conf else None)}">{e(conf[1]) if conf else "—"}</td>'
                f"<td>{shown}{extracted}</td><td>{e(s.get('gold_text'))}</td>"
                f'<td class="wide">{_shots_note(s)}<div class="prompt"><pre>{e(s.get("prompt"))}</pre></div>'
                + (f'<ul class="muted">{choices}</ul>' if choices else "") + "</td></tr>")
        n_wrong = len(wrong)
        wrong_table = (_table([("system · prompt", "text"), ("confidence", "num"), ("answer", "text"), ("gold", "text"),
                               ("prompt and choices (log-likelihood)", "text")], rows) if rows
                       else '<p class="note">No wrong answers.</p>')
        parts.append(f"<details><summary>{e(task)} <span class='muted'>({e(t['category'].replace('_', ' '))}, "
                     f"{n_wrong} wrong answers across {len(evs)} evaluations)</span></summary>"
                     f'<h3>Confusion matrices</h3><div class="grid">{matrices}</div>'
                     f"<h3>Most confident wrong answers</h3>{wrong_table}</details>")
    return ('<p class="lead">Per task: the confusion matrix of every evaluation (rows gold, columns predicted) and the '
            f"{WRONG_SHOWN} wrong answers the model was most sure of — for log-likelihood scoring, the margin between "
            "the chosen choice's log-likelihood and the gold choice's; for sampled answers, the share of samples that "
            "agreed — with the prompt that produced them.</p>" + "".join(parts))


def _confusion(title: str, ev: Evaluation) -> str:
    if not ev.confusion:
        return ""
    columns = list(dict.fromkeys(c for row in ev.confusion.values() for c in row))
    head = "".join(f"<th class='num'>{e(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><th>{e(g)}</th>" + "".join(f"<td class='num{' hit' if c == g else ''}'>{row.get(c, 0)}</td>" for c in columns)
        + "</tr>" for g, row in ev.confusion.items())
    return (f'<div><div class="muted">{e(title)}</div><table class="cm"><thead><tr><th>gold \\ pred</th>{head}</tr>'
            f"</thead><tbody>{body}</tbody></table></div>")


def _top_choices(ev: Evaluation) -> tuple[np.ndarray, np.ndarray]:
    """Per document of an evaluation with choice probabilities: its top choice's probability and whether the
    prediction is right."""
    scored = [(s.get("logprobs") or s.get("label_logprobs"), s) for s in ev.samples]
    confidence = [float(choice_probabilities(lp).max()) for lp, _ in scored if lp]
    return np.array(confidence), np.array([s.get("pred") == s.get("gold") for lp, s in scored if lp])


def _reliability_plot(title: str, confidence: np.ndarray, correct: np.ndarray) -> str:
    """A reliability diagram: accuracy per confidence bin (its document count above the bar), the diagonal."""
    plt = _pyplot()
    counts, _, accuracy = reliability(confidence, correct)
    centres = (np.arange(CALIBRATION_BINS) + 0.5) / CALIBRATION_BINS
    filled = counts > 0
    fig, ax = plt.subplots(figsize=(3.9, 3.6))
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="#59636e", label="perfect calibration")
    ax.bar(centres[filled], accuracy[filled], width=0.92 / CALIBRATION_BINS, color="#0969da", alpha=0.75,
           label="accuracy in bin")
    for x, y, n in zip(centres[filled], accuracy[filled], counts[filled]):
        ax.annotate(str(n), (x, y), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("confidence (top choice's probability)")
    ax.set_ylabel("accuracy")
    ece = expected_calibration_error(confidence, correct)
    ax.set_title(f"{title}\nECE {ece:.3f} over {len(confidence)} answers", fontsize=9)
    ax.legend(loc="upper left", frameon=False, fontsize=7.5)
    return _png(fig, f"Reliability diagram of {title}",
                f"{title}: the answers of its tasks with choice probabilities pooled, in {CALIBRATION_BINS} "
                "equal-width confidence bins; the number above a bar counts its answers.")


def _calibration(r: _Report) -> str:
    """Per leaderboard row: ECE and Brier score of each evaluation with choice probabilities (log-likelihood
    prompts, classification heads), and a reliability diagram of its documents pooled over those tasks."""
    parts = []
    for i, (_, row) in enumerate(r.wide.iterrows()):
        evs = [(t["task"], ev) for t in r.tasks for ev in [r.of(row["model"], row["adapter"], row["setting"],
                                                              row["prompt"], t["task"])]
               if ev is not None and all(name in ev.metrics for name in PROBABILITY_METRICS)]
        if not evs:
            continue
        body, pooled = [], []
        for task, ev in evs:
            confidence, correct = _top_choices(ev)
            if not len(confidence):
                continue
            pooled.append((confidence, correct))
            stored = [ev.metrics[name] for name in PROBABILITY_METRICS]
            cells = [_value_cell(m.get("value"), m.get("low"), m.get("high"), meter=False,
                                 title=m.get("definition") or "") for m in stored]
            body.append(_tr([_td(task), _num(len(confidence), 0), _num(float(correct.mean())),
                             _num(float(confidence.mean())), *cells]))
        if not body:
            continue
        table = _table([("task", "text"), ("answers", "num"), ("accuracy", "num"), ("mean confidence", "num"),
                        ("ECE", "num"), ("Brier", "num")], body)
        plot = (_reliability_plot(_row_label(row), *map(np.concatenate, zip(*pooled))) if i < MAX_PLOT_ROWS
                else "")
        parts.append(f"<h3>{e(_row_label(row))}</h3><div class=\"grid\"><div>{table}</div>{plot}</div>")
    if not parts:
        return ('<p class="note">No log-likelihood evaluation in these runs records its calibration (ece and brier: '
                "generated answers have no choice probabilities, and runs scored before these metrics lack them).</p>")
    shown = f" Diagrams for the {MAX_PLOT_ROWS} best rows by overall." if len(r.wide) > MAX_PLOT_ROWS else ""
    return ('<p class="lead">How far the model\'s probabilities can be trusted. A choice\'s probability is the '
            "softmax of the document's choice log-likelihoods, each summed over the choice's tokens (not "
            "length-normalised: the ones the prediction is the argmax of), or of a classification head's label "
            "log-probabilities; confidence is the top choice's probability.</p>" + "".join(parts) +
            f'<p class="note">ECE: expected calibration error, Σ_b (n_b / n)·|accuracy_b − confidence_b| over '
            f"{CALIBRATION_BINS} equal-width confidence bins (b/{CALIBRATION_BINS}, (b+1)/{CALIBRATION_BINS}] (the "
            "first bin also 0), 0 = calibrated. Brier: mean over answers of Σ_k (p_k − 1[k = gold])², in [0, 2], "
            "lower is better. Intervals: the runs' 95% bootstrap intervals (over clusters where a task has a cluster "
            "field); hover a cell for the exact definition. A diagram pools the answers of the row's tasks (one per "
            "document and few-shot draw), so a task with more answers weighs more; bars below the diagonal mean "
            "over-confidence, above it "
            f"under-confidence.{shown}</p>")


def _definitions(r: _Report) -> str:
    items = [f"<li><b>{e(name.replace('_', ' ').capitalize())}</b>: {e(text)}</li>" for name, text in DEFINITIONS.items()]
    items += [f"<li><b>{e(d['metric'])}</b> ({e(', '.join(d['tasks']))}): {e(d['definition'] or '(no definition given)')}</li>"
              for d in metric_definitions(r.long)]
    items += [
        "<li><b>Paired test</b>: for accuracy (any per-document 0/1 metric) the exact two-sided McNemar test, a binomial "
        "test on the documents only one side gets right; for F1 and MCC a two-sided paired bootstrap test "
        f"({N_BOOT} resamples of documents, the same draw for both sides, p = (1 + #{{|δ* − δ| ≥ |δ|}}) / (B + 1)). "
        "The interval of a difference is the 95% paired percentile bootstrap interval. For a task with a cluster "
        "field (documents sharing a story or a passage) both resample whole clusters, and p is the paired cluster "
        "bootstrap test's whatever the metric.</li>",
        "<li><b>Holm</b>: step-down adjustment over the tests of one comparison (all tasks and variants): sorted p-values "
        "times m, m − 1, …, made monotone; controls the family-wise error rate.</li>",
        "<li><b>Pairing</b>: documents pair by a hash of their content when runs record it, else by position in the "
        "same data (equal data hashes). Documents scored by one side only are listed under the table, never "
        "silently dropped.</li>",
    ]
    notes = "".join(f"<li>{e(n)}</li>" for n in r.wide.attrs.get("notes", []))
    runs = [_tr([_td(x["run_id"]), _td(x["created"]), _td(x["model"]), _td(x["setting"]), _td(x["engine"] or "—"),
                 _td(x["dtype"] or "—")]) for x in runs_of(r.long)]
    return (f'<ul class="defs">{"".join(items)}</ul>' + (f"<h3>Notes</h3><ul class='defs'>{notes}</ul>" if notes else "")
            + "<h3>Runs included</h3>" + _table([("run", "text"), ("created", "text"), ("model", "text"),
                                                  ("setting", "text"), ("engine", "text"), ("dtype", "text")], runs))


def _cards(r: _Report) -> str:
    top = r.wide.iloc[0]
    documents = sum(len({s.get("doc_id") for s in ev.samples}) for ev in r.ev.values())  # once, whatever its draws
    cards = [("Best overall", _f(top["overall"]), _row_label(top)),
             ("Rows", str(len(r.wide)), f"{len(r.systems)} model × setting, {r.wide['prompt'].nunique()} prompt variant(s)"),
             ("Tasks", str(len(r.tasks)), ", ".join(c.replace("_", " ") for c in r.categories)),
             ("Documents scored", f"{documents:,}", f"{r.long['run_id'].nunique()} run(s)")]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{e(k)}</div><div class="v">{e(v)}</div><div class="s">{e(s)}</div></div>'
        for k, v, s in cards) + "</div>"


SECTIONS = [
    ("ranking", "Ranking", _ranking),
    ("tasks", "Per task", _per_task),
    ("settings", "Zero-shot, few-shot, fine-tuned", _settings),
    ("prompts", "Prompt variants", _prompts),
    ("agreement", "Agreement between prompt variants", _agreement),
    ("variance", "Where the variance comes from", _variance),
    ("consistency", "Self-consistency", _self_consistency),
    ("difficulty", "Accuracy by difficulty", _difficulty),
    ("thinking", "Thinking length", _thinking),
    ("extraction", "Answer extraction", _extraction),
    ("contamination", "Contamination signal", _contamination),
    ("errors", "Error analysis", _errors),
    ("calibration", "Calibration", _calibration),
    ("definitions", "Definitions and runs", _definitions),
]


def render_report(long: pd.DataFrame, wide: pd.DataFrame, evaluations: dict[tuple, Evaluation]) -> str:
    """The whole page. ``evaluations``: (model, adapter, setting, variant, task) → evaluation with samples; a
    table without rank columns gets them (:mod:`evalsuite.leaderboard.ranking`)."""
    if "rank" not in wide:
        wide = with_ranking(wide, rank_rows(long, wide, evaluations))
    r = _Report(long, wide, evaluations)
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    nav = "".join(f'<a href="#{anchor}">{e(title)}</a>' for anchor, title, _ in SECTIONS)
    body = "".join(f'<section id="{anchor}"><h2>{e(title)}</h2>{render(r)}</section>' for anchor, title, render in SECTIONS)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>evalsuite report</title><style>{CSS}</style></head><body>"
        f"<header><h1>evalsuite report</h1><p>{len(wide)} leaderboard row(s) · {len(r.tasks)} task(s) · generated {e(when)}"
        f"</p><nav>{nav}</nav></header><main>{_cards(r)}{body}</main>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def build_report(run_dirs: Sequence[Path], output: Path, *, absolute_paths: bool = False) -> Path:
    """Write ``index.html`` under ``output`` (atomically) from the complete runs in ``run_dirs``; models and
    adapters given as absolute paths are shown relative to the current folder, unless ``absolute_paths``."""
    long = gather_published(run_dirs, absolute_paths=absolute_paths)
    wide = leaderboard_table(long)
    evaluations = evaluations_of(long)
    path = make_folder(output) / "index.html"
    atomic_write_text(path, render_report(long, wide, evaluations))
    return path
