"""`evalsuite compare`: pairing documents across runs, the per-task tests, Holm, unpaired documents, selectors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from synthetic_runs import evaluation, samples, write_run

from evalsuite.cli import main
from evalsuite.errors import EvalsuiteError
from evalsuite.leaderboard.compare import compare, load_run, parse_side

T, F = True, False
# rte: 20 both right, 9 only A, 1 only B, 10 neither -> exact McNemar p = 2 * 11/1024 (binomtest(1, 10))
RTE_A = [T] * 20 + [T] * 9 + [F] * 1 + [F] * 10
RTE_B = [T] * 20 + [F] * 9 + [T] * 1 + [F] * 10
# copa: 25 both, 0 only A, 5 only B, 10 neither -> p = 2 / 2^5 = 0.0625
COPA_A = [T] * 25 + [F] * 5 + [F] * 10
COPA_B = [T] * 25 + [T] * 5 + [F] * 10


def run(root: Path, model: str, rte: list[bool], copa: list[bool], *, mode: str = "zero-shot", shots: int = 0,
        variant: str = "plain", extra_rte: int = 0, extra_copa: int = 0, shuffle: bool = False,
        hashes: bool = True, data: str = "") -> Path:
    """A run of rte and copa; ``extra_*`` documents beyond the shared 40 only this run scored."""
    rte_docs = samples("rte", variant, rte + [T] * extra_rte, hashes=hashes)
    copa_docs = samples("copa", variant, copa + [F] * extra_copa, hashes=hashes,
                        doc_ids=list(range(40)) + list(range(100, 100 + extra_copa)))
    if shuffle:
        random.Random(0).shuffle(rte_docs)
        random.Random(1).shuffle(copa_docs)
    return write_run(root, model, [(evaluation("rte", variant, rte_docs, data_hash=f"rte{data}"), rte_docs),
                                   (evaluation("copa", variant, copa_docs, category="commonsense",
                                               data_hash=f"copa{data}"), copa_docs)],
                     mode=mode, shots=shots)


def test_mcnemar_per_task_with_holm_and_unpaired_documents(tmp_path: Path) -> None:
    a = run(tmp_path, "m", RTE_A, COPA_A, extra_rte=2)
    b = run(tmp_path, "m", RTE_B, COPA_B, mode="few-shot", shots=5, extra_copa=1)
    result = compare(parse_side(str(a)), parse_side(str(b)), "accuracy", n_boot=2000)
    rows = {r.task: r for r in result.rows}
    assert set(rows) == {"rte", "copa"} and not result.notes
    rte, copa = rows["rte"], rows["copa"]
    assert rte.paired_by == "doc_hash" and rte.test.n == 40 and copa.test.n == 40
    assert (rte.test.only_a, rte.test.only_b, rte.test.test) == (9, 1, "exact McNemar")
    assert rte.test.p_value == pytest.approx(22 / 1024) and copa.test.p_value == pytest.approx(0.0625)
    assert rte.test.diff == pytest.approx(8 / 40) and copa.test.diff == pytest.approx(-5 / 40)
    # Holm over the two: 2 * 0.0215 = 0.043; then max(0.043, 0.0625) = 0.0625
    assert rte.p_holm == pytest.approx(2 * 22 / 1024) and copa.p_holm == pytest.approx(0.0625)
    # documents in one run only are reported, by their key
    from synthetic_runs import doc_hash

    assert rte.only_in_a == [doc_hash("rte", 40), doc_hash("rte", 41)] and rte.only_in_b == []
    assert copa.only_in_a == [] and copa.only_in_b == [doc_hash("copa", 100)]


def test_pairing_by_content_survives_reordering(tmp_path: Path) -> None:
    a = run(tmp_path / "a", "m", RTE_A, COPA_A)
    b = run(tmp_path / "b", "m", RTE_B, COPA_B, shuffle=True, data="-reordered")
    result = compare(parse_side(str(a)), parse_side(str(b)), n_boot=500)
    assert [(r.task, r.test.only_a, r.test.only_b) for r in result.rows] == [("rte", 9, 1), ("copa", 0, 5)]


def test_pairing_by_doc_id_needs_the_same_data(tmp_path: Path) -> None:
    a = run(tmp_path / "a", "m", RTE_A, COPA_A, hashes=False)
    same = run(tmp_path / "b", "m", RTE_B, COPA_B, hashes=False)
    result = compare(parse_side(str(a)), parse_side(str(same)), n_boot=500)
    assert [(r.paired_by, r.test.only_a, r.test.only_b) for r in result.rows] == [("doc_id", 9, 1), ("doc_id", 0, 5)]
    other = run(tmp_path / "c", "m", RTE_B, COPA_B, hashes=False, data="-changed")
    result = compare(parse_side(str(a)), parse_side(str(other)), n_boot=500)
    assert all(r.test is None and "different data" in r.note for r in result.rows)


def test_f1_uses_paired_bootstrap_and_matches_stored_values(tmp_path: Path) -> None:
    a = run(tmp_path, "m", RTE_A, COPA_A)
    b = run(tmp_path, "m", RTE_B, COPA_B, mode="few-shot", shots=5)
    result = compare(parse_side(str(a)), parse_side(str(b)), "f1", n_boot=2000)
    stored = {ev.task: ev.metrics["f1"]["value"] for ev in load_run(a)}
    for row in result.rows:
        assert row.test.test == "paired bootstrap" and row.test.only_a is None
        assert row.test.value_a == pytest.approx(stored[row.task])  # recomputed from samples = results.json
        assert row.test.low <= row.test.diff <= row.test.high and 0 < row.test.p_value <= 1


def test_leaderboard_row_selectors(tmp_path: Path) -> None:
    run(tmp_path, "m", RTE_A, COPA_A, variant="plain")
    run(tmp_path / "more", "m", RTE_B, COPA_B, variant="lettered")
    run(tmp_path, "m", RTE_B, COPA_B, mode="few-shot", shots=5, variant="plain")
    plain = parse_side("model=m,setting=zero-shot,prompt=plain", [tmp_path])
    lettered = parse_side("setting=zero-shot,prompt=lettered", [tmp_path])
    result = compare(plain, lettered, n_boot=500)
    assert [(r.task, r.variant_a, r.variant_b, r.test.only_a) for r in result.rows] == [
        ("copa", "plain", "lettered", 0), ("rte", "plain", "lettered", 9)]
    with pytest.raises(EvalsuiteError, match="matches several leaderboard rows"):
        parse_side("prompt=plain", [tmp_path])
    with pytest.raises(EvalsuiteError, match="no results match"):
        parse_side("model=nobody", [tmp_path])
    with pytest.raises(EvalsuiteError, match="unknown key"):
        parse_side("modle=m", [tmp_path])
    with pytest.raises(EvalsuiteError, match="neither a run folder"):
        parse_side(str(tmp_path / "missing"), [tmp_path])


def test_cli_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = run(tmp_path, "m", RTE_A, COPA_A, extra_rte=2)
    b = run(tmp_path, "m", RTE_B, COPA_B, mode="few-shot", shots=5)
    assert main(["compare", str(a), str(b), "--bootstrap", "500"]) == 0
    text = capsys.readouterr().out
    assert "A: m · zero-shot" in text and "B: m · 5-shot" in text
    assert "exact McNemar (9 vs 1 discordant)" in text and "0.0215" in text and "Holm" in text
    assert "Documents not in both runs" in text and "2 only in A" in text
    assert main(["compare", str(a), str(b), "--json", "--metric", "main", "--bootstrap", "500"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in data["rows"]] == ["rte", "copa"]
    assert data["rows"][0]["p_value"] == pytest.approx(22 / 1024) and len(data["rows"][0]["only_in_a"]) == 2
    assert main(["compare", str(a), str(b), "--metric", "nonsense"]) == 2
    assert "unknown metric" in capsys.readouterr().err


class ChoiceEngine:
    """Scores choice ``pick(i)`` of the i-th request best."""

    def __init__(self, tokenizer, pick):
        self.tokenizer, self.pick = tokenizer, pick

    def describe(self):
        return {"engine": "scripted", "model_sha256": "0" * 64, "dtype": "none"}

    def loglikelihood(self, requests, progress=None):
        from evalsuite.engines import ContinuationScore

        return [tuple(ContinuationScore(-1.0 if k == self.pick(i) else -5.0, False, len(c))
                      for k, c in enumerate(r.continuations)) for i, r in enumerate(requests)]


def test_real_pipeline_runs_pair_by_content(tmp_path: Path, data_dir: Path) -> None:
    """Zero-shot on 20 rte documents vs 2-shot on 24: the 20 shared documents pair by their content hash, the 4
    extra are reported, and the McNemar counts are those of the known predictions."""
    from tiny_models import byte_tokenizer

    from evalsuite.api import evaluate, load_tasks
    from evalsuite.data import load_split

    task = load_tasks()["rte"]
    gold = [d["label"] for d in load_split(task, task.eval_split, data_dir).docs[:24]]
    tok = byte_tokenizer()
    first = evaluate("scripted", "rte", engine=ChoiceEngine(tok, lambda i: 0), limit=20, data_dir=data_dir,
                     output=tmp_path, progress=False)
    right = lambda i: gold[i] if i % 3 == 0 else 1 - gold[i]  # noqa: E731
    second = evaluate("scripted", "rte", engine=ChoiceEngine(tok, right), mode="few-shot", shots=2, limit=24,
                      data_dir=data_dir, output=tmp_path, progress=False)
    [row] = compare(parse_side(str(first.path)), parse_side(str(second.path)), n_boot=500).rows
    assert row.paired_by == "doc_hash" and row.test.n == 20 and len(row.only_in_b) == 4 and not row.only_in_a
    a_right = [g == 0 for g in gold[:20]]
    b_right = [i % 3 == 0 for i in range(20)]
    assert row.test.only_a == sum(a and not b for a, b in zip(a_right, b_right))
    assert row.test.only_b == sum(b and not a for a, b in zip(a_right, b_right))
