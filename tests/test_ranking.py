"""Leaderboard ranks with uncertainty: rank intervals over resampled documents, groups of rows not significantly
different (paired bootstrap, Holm), rows lacking tasks, and the leaderboard and report showing them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import evaluation, pattern, samples, write_run

from evalsuite.cli import main
from evalsuite.leaderboard import build_leaderboard, gather, leaderboard_table
from evalsuite.leaderboard.ranking import RANK_COLUMNS, Ranking, rank_rows, recorded_evaluations

N = 100


def run(root: Path, model: str, right: dict[str, list[bool]], *, metrics: tuple[str, ...] = ("accuracy", "f1", "mcc"),
        reverse: bool = False) -> Path:
    """A run of ``model`` holding each task in ``right`` (per-document correctness), prompt 'plain'."""
    parts = []
    for task, correct in right.items():
        docs = samples(task, "plain", correct)
        parts.append((evaluation(task, "plain", docs, metrics=metrics), docs[::-1] if reverse else docs))
    return write_run(root, model, parts)


def ranks(root: Path, **options) -> tuple[pd.DataFrame, Ranking]:
    long = gather([root])
    wide = leaderboard_table(long)
    ranking = rank_rows(long, wide, recorded_evaluations(long), **options)
    return pd.concat([wide[["model"]], ranking.table], axis=1).set_index("model"), ranking


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A strong, a weak and two identical middle rows, on two tasks of 100 documents."""
    root = tmp_path_factory.mktemp("four")
    for model, (a, b) in {"strong": (90, 88), "twin1": (60, 62), "twin2": (60, 62), "weak": (30, 32)}.items():
        run(root, model, {"t_one": pattern(N, a, 3), "t_two": pattern(N, b, 11)})
    return root


def test_clear_differences_and_identical_rows(four: Path) -> None:
    table, ranking = ranks(four)
    assert ranking.tasks == ["t_one", "t_two"] and not ranking.notes
    assert table.loc["strong", ["rank", "rank__low", "rank__high", "rank__first"]].tolist() == [1, 1, 1, 1]
    assert table.loc["weak", ["rank", "rank__low", "rank__high", "rank__first"]].tolist() == [4, 4, 4, 0]
    # the twins score alike on every resample: they always share ranks 2 and 3
    for twin in ("twin1", "twin2"):
        assert table.loc[twin, ["rank", "rank__low", "rank__high", "rank__first"]].tolist() == [2.5, 2.5, 2.5, 0]
    assert table["group"].tolist() == ["a", "b", "b", "c"]
    assert ranking.scores == pytest.approx([0.89, 0.61, 0.61, 0.31])
    assert ranking.p_holm[1, 2] == 1.0 and (ranking.p_holm[0, 1:] < 0.05).all()


def test_pairing_detects_a_difference_that_separate_intervals_miss(tmp_path: Path) -> None:
    """A is right on documents 0-59, B on 0-49: they differ on 10 documents only. Their own 95% intervals overlap,
    but on the same resampled documents A is never behind B, and the paired test finds the difference. B's
    samples are written in reverse order: documents pair by content hash, not by position."""
    run(tmp_path, "A", {"t": pattern(N, 60)})
    run(tmp_path, "B", {"t": pattern(N, 50)}, reverse=True)
    wide = leaderboard_table(gather([tmp_path]))
    a, b = wide.iloc[0], wide.iloc[1]
    assert (a["model"], b["model"]) == ("A", "B") and a["t__low"] < b["t__high"]  # separate intervals overlap
    table, ranking = ranks(tmp_path)
    assert table.loc["A", ["rank", "rank__low", "rank__high", "rank__first"]].tolist() == [1, 1, 1, 1]
    assert 0 < ranking.p_holm[0, 1] < 0.05
    assert table["group"].tolist() == ["a", "b"]


def test_close_rows_overlap_and_the_seed_decides_the_draws(tmp_path: Path) -> None:
    run(tmp_path, "A", {"t": pattern(N, 52, 0)})
    run(tmp_path, "B", {"t": pattern(N, 50, 30)})  # right on other documents
    first, ranking = ranks(tmp_path, seed=3)
    again, repeated = ranks(tmp_path, seed=3)
    pd.testing.assert_frame_equal(first, again)
    assert np.array_equal(ranking.p_holm, repeated.p_holm)
    assert first.loc["A", ["rank", "rank__low", "rank__high"]].tolist() == [1, 1, 2]
    assert first.loc["B", ["rank", "rank__low", "rank__high"]].tolist() == [2, 1, 2]
    assert first["group"].tolist() == ["a", "a"]
    assert 0.5 < first.loc["A", "rank__first"] < 1 and first["rank__first"].sum() == pytest.approx(1)
    other, _ = ranks(tmp_path, seed=4)
    assert other.loc["A", "rank__first"] != first.loc["A", "rank__first"]


def test_rows_lacking_tasks_or_samples_are_unranked_with_a_reason(tmp_path: Path) -> None:
    for model, right in {"a": 80, "b": 60, "c": 40}.items():
        run(tmp_path, model, {"t_one": pattern(N, right), "t_two": pattern(N, right)})
    run(tmp_path, "d", {"t_one": pattern(N, 90)})
    (run(tmp_path, "e", {"t_one": pattern(N, 95), "t_two": pattern(N, 95)}) / "samples.jsonl").unlink()
    table, ranking = ranks(tmp_path)
    assert ranking.tasks == ["t_one", "t_two"]  # 3 rows × 2 tasks beat 4 rows × 1 task
    assert table["rank"].dropna().to_dict() == {"a": 1, "b": 2, "c": 3}
    assert table.loc["d", "unranked"] == "no result (t_two)"
    assert table.loc["e", "unranked"] == "no samples.jsonl in its run folder (t_one, t_two)"
    assert pd.isna(table.loc["d", "rank"]) and pd.isna(table.loc["d", "group"])

    for model in ("b", "c"):
        (next(p for p in tmp_path.iterdir() if f"-{model}-" in p.name) / "samples.jsonl").unlink()
    run(tmp_path, "f", {"t_one": pattern(N, 50)})
    table, ranking = ranks(tmp_path)  # now 3 rows × 1 task beat 1 row × 2 tasks
    assert ranking.tasks == ["t_one"] and ranking.notes == ["ranks are over the 1 of 2 tasks that every ranked row "
                                                            "holds (t_one)"]
    assert table["rank"].dropna().to_dict() == {"d": 1, "a": 2, "f": 3}
    assert table.loc["b", "unranked"] == "no samples.jsonl in its run folder (t_one)"


def test_clusters_are_resampled_whole(tmp_path: Path) -> None:
    """A and B differ on 10 documents that share one cluster: one unit, not ten, so the difference is no longer
    significant -- while with every document its own unit it is."""
    p_holm = {}
    for clustered in (False, True):
        root = tmp_path / str(clustered)
        for model, right in {"A": 60, "B": 50}.items():
            folder = run(root, model, {"t": pattern(N, right)})
            if clustered:  # documents 50-59 form one cluster, every other document its own
                lines = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
                for s in lines:
                    s["cluster"] = "k" if 50 <= s["doc_id"] < 60 else f"d{s['doc_id']}"
                (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in lines))
        p_holm[clustered] = ranks(root)[1].p_holm[0, 1]
    assert p_holm[False] < 0.05 < p_holm[True]


def test_a_documents_draws_stay_together(tmp_path: Path) -> None:
    """Three few-shot draws of each document, all scored alike, score as the one-draw row on every resample."""
    correct = pattern(N, 70, 5)
    run(tmp_path, "once", {"t": correct})
    docs = [dict(s, draw=d) for s in samples("t", "plain", correct) for d in range(3)]
    write_run(tmp_path, "thrice", [(evaluation("t", "plain", docs), docs)])
    table, ranking = ranks(tmp_path)
    assert table["rank__low"].tolist() == table["rank__high"].tolist() == [1.5, 1.5]
    assert ranking.p_holm[0, 1] == 1.0 and table["group"].tolist() == ["a", "a"]


def test_other_metrics_are_recomputed_with_their_functions(tmp_path: Path) -> None:
    """F1 and MCC rows rank on the value the registered functions give, which is the value stored by the run.
    Every wrong answer is a 'no' for a 'yes' (odd documents), so neither equals the accuracy."""
    for model, wrong in {"A": 30, "B": 40}.items():
        correct = [not (i % 2 == 1 and i < 2 * wrong) for i in range(N)]
        run(tmp_path / "f1", model, {"t_f1": correct}, metrics=("f1", "accuracy"))
        run(tmp_path / "mcc", model, {"t_mcc": correct}, metrics=("mcc", "accuracy"))
    for root in (tmp_path / "f1", tmp_path / "mcc"):
        wide = leaderboard_table(gather([root]))
        _, ranking = ranks(root)
        assert ranking.scores == pytest.approx(wide["overall"].tolist())
        assert ranking.scores[0] != pytest.approx(0.70)  # not the accuracy


def test_leaderboard_files_show_rank_and_group(four: Path, tmp_path: Path) -> None:
    paths = build_leaderboard([four], tmp_path / "board")
    md = paths["md"].read_text(encoding="utf-8")
    assert "| model | setting | prompt | overall | rank | group | logical |" in md
    assert re.search(r"\| strong \| zero-shot \| plain \| 0\.890 \[[\d., ]+\] \| 1 \[1–1\] \| a \|", md)
    assert re.search(r"\| twin1 \| zero-shot \| plain \| 0\.610 \[[\d., ]+\] \| 2\.5 \[2\.5–2\.5\] \| b \|", md)
    assert "- **Rank**: Rank of the row's overall score" in md and "- **Group**: Rows sharing a letter" in md
    csv = pd.read_csv(paths["csv"])
    assert csv[RANK_COLUMNS].iloc[0].tolist() == [1, 1, 1, 1, "a"] and csv["group"].tolist() == ["a", "b", "b", "c"]
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["rows"][3]["rank"] == {"value": 4.0, "low": 4.0, "high": 4.0, "first": 0.0, "group": "c",
                                       "unranked": None}
    assert data["ranking"] == {"tasks": ["t_one", "t_two"], "resamples": 1000, "seed": 0, "alpha": 0.05}


def test_report_ranking_table_and_plot(four: Path, tmp_path: Path) -> None:
    assert main(["report", str(four), "--output", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    ranking = re.search(r'<section id="ranking">(.*?)</section>', page, re.S).group(1)
    assert 'alt="Rank intervals with significance groups"' in ranking
    assert ranking.count('src="data:image/png;base64,') == 2  # categories and ranks
    assert re.search(r"<td>strong</td>.*?data-v=\"1.0\">1<span class=\"ci\">\[1–1\]</span></td><td>a</td>", ranking)
    assert re.search(r"<td>twin2</td>.*?>2.5<span class=\"ci\">\[2.5–2.5\]</span></td><td>b</td>", ranking)
    assert "prompt variants are rows here, not a resampled source" in ranking
