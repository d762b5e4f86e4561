"""Where the variance comes from: the leaderboard JSON's ``variance`` section and the report's section, from
hand-written runs with prompt variants, few-shot draws and sampled generations of known structure."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import evaluation, pattern, samples, write_run

from evalsuite.cli import main
from evalsuite.leaderboard import build_leaderboard
from evalsuite.scoring.variance import variance_decomposition

N = 42
VARIANTS = ("bad", "lettered", "plain")
DRAWS = 3
MISSING = {("lettered", 1): [40, 41]}  # documents one cell lacks: left out of the whole decomposition
KEPT = list(range(40))
SEEDS = 3


def right() -> dict[tuple[str, int], np.ndarray]:
    """Correctness per (variant, draw) over N documents: a document is right when its ease beats the cell's
    threshold, with a few flips; the 'bad' variant's threshold is far higher (accuracy ~0.1 against ~0.6)."""
    rng = np.random.default_rng(7)
    ease = rng.random(N)
    out = {}
    for variant in VARIANTS:
        for d in range(DRAWS):
            threshold = 0.9 if variant == "bad" else 0.3 + 0.05 * d + (0.05 if variant == "plain" else 0.0)
            out[variant, d] = (ease > threshold) ^ (rng.random(N) < 0.05)
    return out


def generations() -> np.ndarray:
    """(documents, seeds) correctness of 3 sampled generations of a generated task."""
    return np.random.default_rng(11).random((30, SEEDS)) < np.linspace(0.2, 0.9, 30)[:, None]


def draw_docs(task: str, variant: str, truth: dict[tuple[str, int], np.ndarray]) -> list[dict]:
    docs = []
    for d in range(DRAWS):
        ids = [i for i in range(N) if i not in MISSING.get((variant, d), [])]
        docs += samples(task, variant, truth[variant, d][ids].tolist(), doc_ids=ids, draw=d,
                        fewshot_ids=[100 + d, 200 + d])
    return docs


def generated_docs() -> list[dict]:
    docs = []
    for i, row in enumerate(generations()):
        vote = int(row.sum()) >= 2
        (s,) = samples("t_gen", "cot", [vote], doc_ids=[i], fewshot_ids=[7, 8])
        s.pop("logprobs")
        s.update(generations=[f"answer {'yes' if ok else 'no'}" for ok in row], correct_samples=[bool(x) for x in row],
                 seeds=[1000 + j for j in range(SEEDS)], votes=["x"] * SEEDS)
        docs.append(s)
    return docs


def make_runs(root: Path) -> Path:
    """m1 3-shot: t_logic under 3 variants × 3 draws (the 'bad' variant from a second, later run) and t_gen with
    3 generations per document; m2 zero-shot: t_logic and t_f1 (main metric F1) under 2 variants, no draws or
    seeds; m3 zero-shot: one variant only."""
    truth = right()
    parts = []
    for variant in ("lettered", "plain"):
        docs = draw_docs("t_logic", variant, truth)
        parts.append((evaluation("t_logic", variant, docs), docs))
    gen = generated_docs()
    parts.append((evaluation("t_gen", "cot", gen, metrics=("accuracy",)), gen))
    write_run(root, "m1", parts, mode="few-shot", shots=3)
    bad = draw_docs("t_logic", "bad", truth)
    write_run(root, "m1", [(evaluation("t_logic", "bad", bad), bad)], mode="few-shot", shots=3,
              created="2026-11-23T18:00:00+00:00")
    parts = []
    for variant, offset in (("plain", 0), ("lettered", 5)):
        for task, metrics in (("t_logic", ("accuracy",)), ("t_f1", ("f1", "accuracy"))):
            docs = samples(task, variant, pattern(N, 25, offset))
            parts.append((evaluation(task, variant, docs, metrics=metrics), docs))
    write_run(root, "m2", parts)
    docs = samples("t_logic", "plain", pattern(N, 30))
    write_run(root, "m3", [(evaluation("t_logic", "plain", docs), docs)])
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def board(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("board")
    build_leaderboard([runs], out)
    return json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))["variance"]


def system(board: dict, model: str) -> dict:
    (found,) = [s for s in board["systems"] if s["model"] == model]
    return found


def same(entry: dict, direct) -> None:
    """A JSON entry holds exactly what variance_decomposition returned."""
    assert entry["mean"] == pytest.approx(direct.mean) and entry["se"] == pytest.approx(direct.se)
    assert (entry["low"], entry["high"]) == pytest.approx((direct.low, direct.high))
    assert entry["df"] == pytest.approx(direct.df) and entry["document_se"] == pytest.approx(direct.document_se)
    assert entry["factors"] == list(direct.factors) and entry["definition"] == direct.definition
    assert [(t["name"], t["df"]) for t in entry["terms"]] == [(t.name, t.df) for t in direct.terms]
    for mine, theirs in zip(entry["terms"], direct.terms):
        assert (mine["component"], mine["contribution"], mine["share"]) == pytest.approx(
            (theirs.component, theirs.contribution, theirs.share), abs=1e-15)


def test_variants_and_draws_decompose_as_called_directly(board: dict) -> None:
    """Documents matched by hash over 3 variants (two runs) × 3 draws; the two documents one cell lacks are
    left out and counted; the bad variant's share dominates."""
    entry = system(board, "m1")["tasks"]["t_logic"]
    truth = right()
    y = np.array([[[truth[v, d][i] for d in range(DRAWS)] for v in VARIANTS] for i in KEPT], dtype=float)
    same(entry, variance_decomposition(y, ("variant", "draw")))
    assert entry["variants"] == list(VARIANTS) and entry["levels"] == {"document": 40, "variant": 3, "draw": 3, "seed": 1}
    assert (entry["documents"], entry["documents_left_out"], entry["matched_by"]) == (40, 2, "doc_hash")
    assert any("2 of 42 documents" in note for note in entry["notes"])
    shares = entry["shares"]
    assert shares["variant"] > 0.5 and shares["variant"] > shares["document"] and shares["seed"] is None
    assert sum(t["share"] for t in entry["terms"]) == pytest.approx(1)
    assert entry["high"] - entry["low"] > 3 * (entry["document_high"] - entry["document_low"])
    assert entry["score"] == "accuracy per document"


def test_sampled_generations_decompose_over_seeds(board: dict) -> None:
    entry = system(board, "m1")["tasks"]["t_gen"]
    direct = variance_decomposition(generations().astype(float).reshape(30, 1, 1, SEEDS), ("variant", "draw", "seed"))
    same(entry, direct)
    assert entry["levels"] == {"document": 30, "variant": 1, "draw": 1, "seed": 3}
    assert entry["factors"] == ["document", "seed"] and "Only one prompt variant" in entry["definition"]
    assert entry["score"] == "correctness of each generation (strict rule)"
    assert entry["mean"] == pytest.approx(generations().mean())  # avg@k, not the vote's accuracy


def test_overall_sums_the_task_variances(board: dict) -> None:
    found = system(board, "m1")
    tasks, overall = list(found["tasks"].values()), found["overall"]
    assert overall["tasks"] == 2 and overall["mean"] == pytest.approx(np.mean([t["mean"] for t in tasks]))
    assert overall["se"] ** 2 == pytest.approx(sum(t["se"] ** 2 for t in tasks) / 4)
    assert sum(t["share"] for t in overall["terms"]) == pytest.approx(1)
    assert overall["shares"]["variant"] == pytest.approx(
        found["tasks"]["t_logic"]["terms"][1]["contribution"] / 4 / overall["se"] ** 2)
    assert overall["low"] < overall["document_low"] < overall["mean"] < overall["document_high"] < overall["high"]
    assert "sum of the task variances / T²" in board["overall_definition"]


def test_a_run_without_draws_or_seeds_gives_documents_by_variants(board: dict) -> None:
    found = system(board, "m2")
    entry = found["tasks"]["t_logic"]
    y = np.array([pattern(N, 25, offset) for offset in (5, 0)], dtype=float).T  # lettered, plain
    same(entry, variance_decomposition(y, ("variant",)))
    assert entry["levels"] == {"document": N, "variant": 2, "draw": 1, "seed": 1}
    assert entry["documents_left_out"] == 0 and entry["notes"] == []
    f1 = found["tasks"]["t_f1"]
    same(f1, variance_decomposition(y, ("variant",)))  # the same correctness, decomposed in place of F1
    assert f1["score"] == "correctness per document" and "f1 is not a mean over documents" in f1["notes"][0]


def test_one_level_of_every_source_says_documents_only(board: dict) -> None:
    found = system(board, "m3")
    assert found["documents_only"] and "only documents vary" in found["note"] and "tasks" not in found
    assert "Random-effects ANOVA" in board["definition"] and board["method"].startswith("random-effects ANOVA")


class Tables(HTMLParser):
    """The cell texts of every table, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def variance_section(page: str) -> str:
    return re.search(r'<section id="variance">(.*?)</section>', page, re.S).group(1)


def test_report_section_shows_shares_and_both_intervals(runs: Path, board: dict, tmp_path: Path) -> None:
    assert main(["report", str(runs), "--output", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert '<a href="#variance">Where the variance comes from</a>' in page
    html = variance_section(page)
    parser = Tables()
    parser.feed(html)
    header, *rows = parser.tables[0]  # m1 · 3-shot
    assert header[4:9] == ["% documents", "% prompt variants", "% few-shot draws", "% seeds", "% interactions"]
    by_task = {row[0]: row for row in rows}
    assert list(by_task) == ["t_gen", "t_logic", "overall (mean of 2 tasks)"]  # the leaderboard's task order
    entry = system(board, "m1")["tasks"]["t_logic"]
    logic = by_task["t_logic"]
    assert logic[2:4] == ["40", "3 · 3 · 1"] and logic[5] == f"{entry['shares']['variant']:.0%}" and logic[7] == "—"
    assert logic[10] == f"[{entry['low']:.3f}, {entry['high']:.3f}]"
    assert logic[11] == f"[{entry['document_low']:.3f}, {entry['document_high']:.3f}]"
    assert "t_logic: 2 of 42 documents" in html and "f1 is not a mean over documents" in html
    assert "Documents only" in html and "m3 · zero-shot" in html
    assert "2–3 levels" in html and "Satterthwaite" in html


def test_report_with_nothing_to_decompose_says_so_in_a_sentence(tmp_path: Path) -> None:
    docs = samples("t_logic", "plain", pattern(20, 12))
    write_run(tmp_path / "runs", "m1", [(evaluation("t_logic", "plain", docs), docs)])
    assert main(["report", str(tmp_path / "runs"), "--output", str(tmp_path / "out")]) == 0
    html = variance_section((tmp_path / "out" / "index.html").read_text(encoding="utf-8"))
    assert "<table" not in html and "Nothing to decompose" in html


@pytest.mark.parametrize("field, value", [("draw", "first"), ("correct_samples", [True, "no"])])
def test_a_damaged_draw_or_generation_field_is_one_clear_error(tmp_path: Path, capsys, field, value) -> None:
    docs = samples("t_logic", "plain", pattern(20, 12))
    docs[3][field] = value
    folder = write_run(tmp_path / "runs", "m1", [(evaluation("t_logic", "plain", docs), docs)])
    assert main(["leaderboard", str(tmp_path / "runs"), "--output", str(tmp_path / "board")]) == 2
    line = capsys.readouterr().err.strip()
    # The file, the place (its line, or the task, prompt and document) and the field are named.
    assert line.startswith(f"evalsuite: error: {folder / 'samples.jsonl'}: ") and "run that evaluation again" in line
    assert ("line 4: " in line or "document 3: " in line) and f"field '{field}' is" in line
    assert not (tmp_path / "board").exists()  # nothing written


def test_a_leaderboard_without_samples_still_builds(runs: Path, tmp_path: Path) -> None:
    folder = next(p for p in runs.iterdir() if "m3" in p.name)
    copy = tmp_path / "runs" / folder.name
    copy.mkdir(parents=True)
    (copy / "results.json").write_text((folder / "results.json").read_text())
    build_leaderboard([tmp_path / "runs"], tmp_path / "board")
    (found,) = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["variance"]["systems"]
    assert "no samples recorded" in found["tasks"]["t_logic"]["note"] and found["overall"] is None
