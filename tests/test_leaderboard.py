"""The leaderboard: gathering runs, the wide table, means and intervals, and the three output files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from evalsuite.errors import EvalsuiteError, MetricError
from evalsuite.leaderboard import build_leaderboard, gather, leaderboard_table
from evalsuite.leaderboard.ranking import RANK_COLUMNS

CATEGORY = {"copa": "commonsense", "piqa": "commonsense", "folio": "logical", "rte": "semantic_matching"}
DEFINITION = {"accuracy": "Fraction of documents whose highest-scoring answer is the gold one.",
              "mcc": "Matthews correlation coefficient | between -1 and 1."}
# task: (value, low, high, n)
SCORES = {"copa": (0.6, 0.5, 0.7, 100), "piqa": (0.8, 0.74, 0.86, 200),
          "folio": (0.4, 0.3, 0.5, 50), "rte": (0.7, 0.62, 0.78, 80)}


def evaluation(task: str, value: float, low: float, high: float, n: int, variant: str = "plain") -> dict:
    metric = "mcc" if task == "rte" else "accuracy"
    return {
        "task": task, "category": CATEGORY[task], "variant": variant, "method": "loglikelihood",
        "split": "validation", "n": n, "main_metric": metric,
        "metrics": {metric: {"name": metric, "value": value, "low": low, "high": high, "definition": DEFINITION[metric]},
                    "other": {"name": "other", "value": 0.0, "low": 0.0, "high": 0.0, "definition": "unused"}},
        "confusion": {}, "hashes": {"task": "t", "prompt": "p", "data": f"data-{task}", "fewshot_data": None},
        "origin": "local:test", "license": "test", "timing_s": 1.0, "docs_per_s": 10.0,
    }


def write_run(root: Path, model: str, mode: str = "zero-shot", shots: int = 0, *, evaluations: list[dict],
              created: str = "2026-11-22T18:00:00+00:00", adapter: str | None = None, run_id: str | None = None,
              partial: bool = False) -> Path:
    """A results.json record under ``root/<run_id>[.partial]/``."""
    run_id = run_id or f"{created[:19].replace(':', '')}-{model}-{mode}-{shots}-{adapter}"
    folder = root / (run_id + (".partial" if partial else ""))
    folder.mkdir(parents=True)
    record = {
        "schema_version": 1, "run_id": run_id, "created": created,
        "config": {"model": model, "engine": "hf", "adapter": adapter, "mode": mode, "shots": shots, "seed": 0,
                   "limit": 100},
        "model": {"engine": "hf", "model_path": f"/models/{model}", "model_sha256": "0" * 64, "dtype": "float32"},
        "versions": {}, "timings": {"engine_load_s": 1.0, "total_s": 2.0}, "evaluations": evaluations,
    }
    (folder / "results.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def shifted(delta: float, variant: str = "plain", skip: tuple[str, ...] = ()) -> list[dict]:
    """All four tasks, every value (and interval) moved by ``delta``."""
    return [evaluation(t, v + delta, lo + delta, hi + delta, n, variant)
            for t, (v, lo, hi, n) in SCORES.items() if t not in skip]


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """2 models × 2 settings × 2 prompt variants, each model+setting one run holding both variants."""
    for i, model in enumerate(["alpha", "beta"]):
        for j, (mode, shots) in enumerate([("zero-shot", 0), ("few-shot", 5)]):
            delta = 0.01 * i + 0.02 * j
            write_run(tmp_path / "runs", model, mode, shots,
                      evaluations=shifted(delta, "plain") + shifted(delta - 0.05, "terse"))
    return tmp_path / "runs"


def test_wide_table_shape_and_values(grid: Path) -> None:
    long = gather([grid])
    assert len(long) == 2 * 2 * 2 * 4 and long.attrs["superseded"] == 0
    wide = leaderboard_table(long)
    assert len(wide) == 8
    assert [t["task"] for t in wide.attrs["tasks"]] == ["folio", "copa", "piqa", "rte"]  # category order
    assert wide.columns[:5].tolist() == ["model", "adapter", "setting", "prompt", "label"]
    assert len(wide.columns) == 5 + 4 + 3 * 4 + 4 * 4
    assert set(wide["setting"]) == {"zero-shot", "5-shot"} and set(wide["prompt"]) == {"plain", "terse"}
    top = wide.iloc[0]
    assert (top["model"], top["setting"], top["prompt"]) == ("beta", "5-shot", "plain")
    assert top["copa__value"] == pytest.approx(0.63) and top["copa__low"] == pytest.approx(0.53)
    assert top["piqa__n"] == 200
    assert wide["overall"].is_monotonic_decreasing
    last = wide.iloc[-1]
    assert (last["model"], last["setting"], last["prompt"]) == ("alpha", "zero-shot", "terse")


def test_means_and_intervals_hand_computed(tmp_path: Path) -> None:
    write_run(tmp_path, "alpha", evaluations=shifted(0.0))
    row = leaderboard_table(gather([tmp_path])).iloc[0]
    # commonsense: copa 0.6 ±0.1, piqa 0.8 ±0.06 -> 0.7 ± sqrt(0.1² + 0.06²)/2
    assert row["commonsense__mean"] == pytest.approx(0.7)
    assert row["commonsense__high"] - 0.7 == pytest.approx(0.0583095189, abs=1e-9)
    assert row["commonsense__low"] == pytest.approx(0.7 - 0.0583095189, abs=1e-9)
    assert row["logical__mean"] == pytest.approx(0.4) and row["logical__high"] == pytest.approx(0.5)
    # overall: (0.6 + 0.8 + 0.4 + 0.7)/4 ± sqrt(0.1² + 0.06² + 0.1² + 0.08²)/4
    assert row["overall"] == pytest.approx(0.625)
    assert row["overall__high"] == pytest.approx(0.625 + 0.0433012702, abs=1e-9)
    assert row["overall__low"] == pytest.approx(0.625 - 0.0433012702, abs=1e-9)
    assert row["overall__k"] == 4 and row["commonsense__k"] == 2


def test_missing_task_is_shown_and_flagged(tmp_path: Path) -> None:
    write_run(tmp_path, "alpha", evaluations=shifted(0.0))
    write_run(tmp_path, "beta", evaluations=shifted(0.0, skip=("piqa",)))
    wide = leaderboard_table(gather([tmp_path]))
    beta = wide[wide["model"] == "beta"].iloc[0]
    assert math.isnan(beta["piqa__value"]) and pd.isna(beta["piqa__n"])
    assert beta["commonsense__mean"] == pytest.approx(0.6) and beta["commonsense__k"] == 1
    assert beta["overall"] == pytest.approx((0.6 + 0.4 + 0.7) / 3) and beta["overall__k"] == 3
    md = build_leaderboard([tmp_path], tmp_path / "board")["md"].read_text(encoding="utf-8")
    line = next(x for x in md.splitlines() if x.startswith("| beta |"))
    assert "| 0.567 [0.513, 0.621]\\* |" in line and "| 0.600 [0.500, 0.700]\\* |" in line and "| — |" in line
    assert "beta, zero-shot, plain: overall over 3 of 4 tasks; commonsense over 1 of 2 tasks" in md
    alpha = next(x for x in md.splitlines() if x.startswith("| alpha |"))
    assert "\\*" not in alpha
    rows = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["rows"]
    assert rows[1]["tasks"]["piqa"] == {"metric": "accuracy", "value": None, "low": None, "high": None, "n": None}
    assert rows[1]["categories"]["commonsense"]["k"] == 1 and rows[1]["categories"]["commonsense"]["K"] == 2


def test_newest_run_wins(tmp_path: Path) -> None:
    # the older run has the later-sorting id, so only 'created' can pick the winner
    write_run(tmp_path, "alpha", evaluations=shifted(0.0), created="2026-11-22T18:00:00+00:00", run_id="z-old")
    write_run(tmp_path, "alpha", evaluations=[evaluation("copa", 0.9, 0.85, 0.95, 100)],
              created="2026-11-23T09:00:00+00:00", run_id="a-new")
    long = gather([tmp_path])
    assert long.attrs["superseded"] == 1 and "z-old" in long.attrs["notes"][0]
    assert len(long) == 4
    copa = long[long["task"] == "copa"].iloc[0]
    assert copa["run_id"] == "a-new" and copa["value"] == 0.9
    assert set(long["run_id"]) == {"a-new", "z-old"}  # the old run still supplies the other tasks
    md = build_leaderboard([tmp_path], tmp_path / "board")["md"].read_text(encoding="utf-8")
    assert "superseded" in md and "| 0.900 [0.850, 0.950] |" in md


def test_partial_folders_ignored(tmp_path: Path) -> None:
    write_run(tmp_path, "alpha", evaluations=shifted(0.0))
    write_run(tmp_path, "ghost", evaluations=shifted(0.1), partial=True)
    long = gather([tmp_path])
    assert set(long["model"]) == {"alpha"}
    with pytest.raises(EvalsuiteError):
        build_leaderboard([next(tmp_path.glob("*.partial"))], tmp_path / "board")


def test_empty_folder_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalsuiteError) as err:
        build_leaderboard([tmp_path / "empty"], tmp_path / "board")
    message = str(err.value)
    assert str(tmp_path / "empty") in message and "evalsuite run" in message
    assert not (tmp_path / "board").exists()


def test_markdown_rows_escaping_and_definitions(tmp_path: Path) -> None:
    write_run(tmp_path, "alpha", evaluations=shifted(0.0, variant="a|b"))
    write_run(tmp_path, "beta", "fine-tuned", evaluations=shifted(-0.1), adapter="lora-x")
    md = build_leaderboard([tmp_path], tmp_path / "board")["md"].read_text(encoding="utf-8")
    lines = md.splitlines()
    assert lines[0] == "# Leaderboard"
    header = next(x for x in lines if x.startswith("| model |"))
    assert header.startswith("| model | setting | prompt | overall | rank | group | logical | commonsense | "
                             "semantic_matching | folio (accuracy) | copa (accuracy) | piqa (accuracy) | rte (mcc) |")
    # no samples.jsonl: unranked
    assert ("| alpha | zero-shot | a\\|b | 0.625 [0.582, 0.668] | — | — | 0.400 [0.300, 0.500] | 0.700 [0.642, 0.758] | "
            "0.700 [0.620, 0.780] | 0.400 [0.300, 0.500] | 0.600 [0.500, 0.700] |") in md
    assert "| beta + lora-x | fine-tuned | plain |" in md
    assert "| alpha | zero-shot | a\\|b | 50 | 100 | 200 | 80 |" in md  # n per task
    assert md.count(DEFINITION["accuracy"]) == 1 and "Matthews correlation coefficient \\| between" in md
    assert "unused" not in md and "sqrt(Σ se_i²)/k" in md
    assert "| run_id | created | engine | dtype |" in md and "| hf | float32 |" in md


def test_csv_json_roundtrip_and_determinism(grid: Path, tmp_path: Path) -> None:
    paths = build_leaderboard([grid], tmp_path / "board")
    assert set(paths) == {"md", "csv", "json", "variants"} and all(p.is_file() for p in paths.values())
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in paths.values())  # readable by others, e.g. a web server
    wide = leaderboard_table(gather([grid]))
    back = pd.read_csv(paths["csv"], keep_default_na=False, na_values=[""])
    assert back.columns.tolist() == wide.columns.tolist() + RANK_COLUMNS
    numeric = [c for c in wide.columns if c not in ("model", "adapter", "setting", "prompt")]
    pd.testing.assert_frame_equal(back[numeric], wide[numeric], check_dtype=False)
    assert back["prompt"].tolist() == wide["prompt"].tolist()
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert set(data) >= {"definitions", "rows", "runs"} and len(data["rows"]) == 8 and len(data["runs"]) == 4
    assert {"cell", "category_mean", "overall", "missing", "metrics"} <= set(data["definitions"])
    first = data["rows"][0]
    assert type(first["overall"]["value"]) is float and first["tasks"]["copa"]["n"] == 100
    assert first["overall"]["value"] == pytest.approx(wide.loc[0, "overall"])
    before = {k: p.read_bytes() for k, p in paths.items()}
    again = build_leaderboard([grid], tmp_path / "board")
    assert {k: p.read_bytes() for k, p in again.items()} == before


def test_variants_side_by_side(tmp_path: Path) -> None:
    cot = [dict(evaluation(t, v - 0.1, lo - 0.1, hi - 0.1, n, "cot"), method="generation") for t, (v, lo, hi, n)
           in SCORES.items() if t != "piqa"]
    for ev in cot:
        ev["metrics"]["unparseable_rate"] = {"name": "unparseable_rate", "value": 0.25, "low": 0.1, "high": 0.4,
                                             "definition": "unparseable_rate: ..."}
    write_run(tmp_path / "runs", "alpha", evaluations=shifted(0.0, "plain") + shifted(0.05, "lettered") + cot)
    md = build_leaderboard([tmp_path / "runs"], tmp_path / "board")["variants"].read_text(encoding="utf-8")
    assert "## alpha, zero-shot" in md
    assert "| task | category | metric | n | plain | lettered | cot | cot unparseable |" in md
    # rows in category order; piqa has no cot result
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| task")]
    assert [r.split(" | ")[0][2:] for r in rows] == ["folio", "copa", "piqa", "rte"]
    assert ("| copa | commonsense | accuracy | 100 | 0.600 [0.500, 0.700] | 0.650 [0.550, 0.750] | "
            "0.500 [0.400, 0.600] | 0.250 |") in md
    assert "| piqa | commonsense | accuracy | 200 | 0.800 [0.740, 0.860] | 0.850 [0.790, 0.910] | — | — |" in md


def test_fine_tuned_rows_name_their_base_and_task(tmp_path: Path) -> None:
    def tuned(model: str, adapter: str | None, base: str, method: str) -> None:
        folder = write_run(tmp_path, model, "fine-tuned", adapter=adapter, evaluations=shifted(0.1),
                           run_id=f"{model}-{adapter}".replace("/", "_"))
        record = json.loads((folder / "results.json").read_text())
        record["model"]["finetuned"] = {"base": base, "task": "rte", "method": method}
        (folder / "results.json").write_text(json.dumps(record))

    write_run(tmp_path, "smollm2", evaluations=shifted(0.0))
    write_run(tmp_path, "smollm2", "few-shot", 5, evaluations=shifted(0.02))
    tuned("smollm2", "ck/smollm2-rte-lora", "SmolLM2-135M-Instruct", "lora")
    tuned("ck/minilm-rte", None, "all-MiniLM-L6-v2", "classifier")
    tuned("ck/minilm-rte-long", None, "all-MiniLM-L6-v2", "classifier")
    wide = leaderboard_table(gather([tmp_path]))
    labels = dict(zip(zip(wide["model"], wide["adapter"], wide["setting"]), wide["label"]))
    assert labels == {
        ("smollm2", "", "zero-shot"): "smollm2",
        ("smollm2", "", "5-shot"): "smollm2",
        ("smollm2", "ck/smollm2-rte-lora", "fine-tuned"): "smollm2 + LoRA (fine-tuned on rte)",
        # Two checkpoints of the same base and task are told apart by their folder names.
        ("ck/minilm-rte", "", "fine-tuned"): "all-MiniLM-L6-v2 (fine-tuned on rte) [minilm-rte]",
        ("ck/minilm-rte-long", "", "fine-tuned"): "all-MiniLM-L6-v2 (fine-tuned on rte) [minilm-rte-long]",
    }
    markdown = (build_leaderboard([tmp_path], tmp_path / "board")["md"]).read_text()
    assert "| smollm2 + LoRA (fine-tuned on rte) | fine-tuned | plain |" in markdown


def test_another_metric_where_tasks_have_it(grid: Path, tmp_path: Path) -> None:
    long = gather([grid], metric="other")
    assert set(long["metric"]) == {"other"} and set(long["value"]) == {0.0}
    with pytest.raises(MetricError, match="unknown metric 'no_such_metric'; known metrics: accuracy"):
        gather([grid], metric="no_such_metric")  # a typo is an error, not a silent fall back to main metrics
    with pytest.raises(MetricError, match=r"--metric pass@k: no evaluation in .* reports it"):
        gather([grid], metric="pass@k")  # a metric these runs never report
    board = build_leaderboard([grid], tmp_path / "board", metric="other")
    assert "| copa (other) |" in board["md"].read_text(encoding="utf-8")
