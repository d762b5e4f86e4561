"""The contamination signal: permuted options (--permute-choices), fresh draws (--data-seed), their pairing
and gaps, and the report section that shows them."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest

from evalsuite.api import evaluate, load_tasks
from evalsuite.data import load_split
from evalsuite.engines import ContinuationScore
from evalsuite.errors import SpecError
from evalsuite.leaderboard import gather
from evalsuite.leaderboard.contamination import FRESH, PERMUTED, contamination_gaps
from evalsuite.leaderboard.report import build_report
from evalsuite.prompting import PromptRenderer
from evalsuite.results import read_run, read_samples

import synthetic_runs as synth


class FirstChoiceEngine:
    """Always prefers the first continuation: a model with a pure positional bias."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def describe(self):
        return {"engine": "scripted", "model_sha256": "1" * 64, "dtype": "none"}

    def loglikelihood(self, requests, progress=None):
        return [tuple(ContinuationScore(-1.0 if k == 0 else -5.0, k == 0, 1) for k in range(len(r.continuations)))
                for r in requests]

    def generate(self, requests, progress=None):
        raise AssertionError("not used")


@pytest.fixture(scope="module")
def byte_tok():
    from tiny_models import byte_tokenizer

    return byte_tokenizer()


@pytest.fixture(scope="module")
def tasks():
    return load_tasks()


def _docs(task, data_dir, n):
    return list(load_split(task, task.eval_split, data_dir).docs)[:n]


# --- the permutation rule on rendered prompts -------------------------------------------------------------------

def test_rotation_moves_options_under_fixed_letters_and_gold_follows(tasks, data_dir):
    task = tasks["commonsenseqa"]
    doc, = _docs(task, data_dir, 1)
    texts, gold = doc["choices"]["text"], doc["choices"]["label"].index(doc["answerKey"])
    lettered = task.prompt("lettered")
    original = PromptRenderer(task, lettered).render(doc, 0)
    rotated = PromptRenderer(task, lettered, permute=True).render(doc, 0)

    assert original.permutation is None and rotated.permutation == (1, 2, 3, 4, 0)
    # letters stay A..E, the option at position j + 1 moves to position j
    assert "\n".join(f"{x}. {t}" for x, t in zip("ABCDE", texts[1:] + texts[:1])) in rotated.context
    assert rotated.continuations == original.continuations == tuple(" " + x for x in "ABCDE")
    assert original.gold == gold and rotated.gold == (gold - 1) % 5
    assert rotated.gold_text == "ABCDE"[(gold - 1) % 5]
    # the plain prompt scores the option texts: they rotate, and the gold option's text is the same one
    plain = PromptRenderer(task, task.prompt("plain"), permute=True).render(doc, 0)
    assert plain.continuations == tuple(" " + t for t in texts[1:] + texts[:1])
    assert plain.continuations[plain.gold] == " " + texts[gold]


def test_few_shot_examples_rotate_and_their_answers_follow(tasks, data_dir):
    task = tasks["commonsenseqa"]
    doc, example = _docs(task, data_dir, 2)
    gold = example["choices"]["label"].index(example["answerKey"])
    cot = task.prompt("cot")  # fewshot_target: 'So the answer is (' ~ answerKey ~ ').'
    inst = PromptRenderer(task, cot, permute=True).render(doc, 0, [(1, example)])
    shot = inst.context.split(f"Question: {doc['question']}")[0]
    texts = example["choices"]["text"]
    assert f"A. {texts[1]}" in shot and f"E. {texts[0]}" in shot
    assert shot.rstrip().endswith(f"So the answer is ({'ABCDE'[(gold - 1) % 5]}).")


def test_options_in_fields_rotate_with_an_index_target(tasks, data_dir):
    task = tasks["piqa"]
    doc, = _docs(task, data_dir, 1)
    inst = PromptRenderer(task, task.prompt("lettered"), permute=True).render(doc, 0)
    assert f"A. {doc['sol2']}\nB. {doc['sol1']}" in inst.context
    assert inst.permutation == (1, 0) and inst.gold == 1 - doc["label"]


def test_refusals_name_the_task_and_the_reason(tasks, data_dir, tmp_path):
    refused = {"gen_syllogisms": "fixed labels", "stsb": "graded", "bbh_date_understanding": "neither a field"}
    for name, reason in refused.items():
        task = tasks[name]
        with pytest.raises(SpecError, match=reason) as caught:
            PromptRenderer(task, task.prompts[0], permute=True)
        assert f"task '{name}'" in str(caught.value) and "--permute-choices" in str(caught.value)
    # a run refuses before its model loads: the model named here does not exist
    with pytest.raises(SpecError, match="fixed labels"):
        evaluate(str(tmp_path / "no-such-model"), "gen_deduction", limit=2, permute_choices=True,
                 output=tmp_path, progress=False)
    task = tasks["commonsenseqa"]
    lonely = {"id": "x", "question": "q?", "question_concept": "c", "choices": {"label": ["A"], "text": ["one"]},
              "answerKey": "A"}
    with pytest.raises(SpecError, match="document 3 has 1 option"):
        PromptRenderer(task, task.prompt("plain"), permute=True).render(lonely, 3)


# --- a permuted run: its record, its samples, and its pairing with the original ------------------------------------

def _piqa_runs(byte_tok, data_dir, output, n=24):
    runs = [evaluate("scripted", "piqa", engine=FirstChoiceEngine(byte_tok), prompts="lettered", limit=n,
                     data_dir=data_dir, output=output, progress=False, n_boot=200, permute_choices=permute)
            for permute in (False, True)]
    return runs


def test_permuted_run_records_and_pairs_with_the_original(tasks, byte_tok, data_dir, tmp_path):
    original, permuted = _piqa_runs(byte_tok, data_dir, tmp_path)
    assert original.path != permuted.path
    assert read_run(permuted.path)["config"]["permute_choices"] is True
    assert "permute_choices" not in read_run(original.path)["config"]  # written only when set
    before, after = read_samples(original.path), read_samples(permuted.path)
    assert all(s["permutation"] == [1, 0] for s in after) and all("permutation" not in s for s in before)
    assert [s["doc_hash"] for s in before] == [s["doc_hash"] for s in after]
    labels = [d["label"] for d in _docs(tasks["piqa"], data_dir, 24)]
    # the first option is always chosen: right on the original where gold is 0, on the rotation where it was 1
    expected = (np.mean([g == 0 for g in labels]), np.mean([g == 1 for g in labels]))
    assert [s["correct"] for s in after] == [g == 1 for g in labels]

    gap, = contamination_gaps([original.path, permuted.path], n_boot=500)
    assert gap.kind == PERMUTED and gap.task == "piqa" and gap.variant == "lettered" and gap.n == 24
    assert (gap.reference, gap.probed) == pytest.approx(expected)
    assert gap.gap == pytest.approx(expected[0] - expected[1]) and gap.low <= gap.gap <= gap.high
    only_original, only_permuted = sum(g == 0 for g in labels), sum(g == 1 for g in labels)
    assert f"({only_original} vs {only_permuted} discordant)" in gap.test and "McNemar" in gap.test
    assert gap.p_value == pytest.approx(min(1.0, 2 * sum(math.comb(24, k) for k in range(
        min(only_original, only_permuted) + 1)) / 2**24))

    long = gather([tmp_path])  # the probe never takes the original's leaderboard row
    assert list(long["run_id"]) == [original.path.name]
    assert any("contamination probe (options permuted)" in note for note in long.attrs["notes"])


# --- fresh draws of generated tasks ---------------------------------------------------------------------------------

def _generated_run(root, correct_by_level, *, data_seed=None, created="2026-11-22T18:00:00+00:00"):
    """A run folder of a generated task whose samples have difficulty levels (document order round-robin)."""
    levels = sorted(correct_by_level)
    per_level = {level: list(hits) for level, hits in correct_by_level.items()}
    flat = []
    while any(per_level.values()):
        for level in levels:
            if per_level[level]:
                flat.append((level, per_level[level].pop(0)))
    docs = synth.samples("gen_syllogisms", "plain", [ok for _, ok in flat], prompt=f"seed {data_seed} {{i}}")
    for doc, (level, _) in zip(docs, flat):
        doc["difficulty"] = level
        doc["doc_hash"] = f"{data_seed}-{doc['doc_id']}"
    ev = synth.evaluation("gen_syllogisms", "plain", docs)
    ev["origin"] = f"generated:syllogisms:test:seed={data_seed or 1234}:n={len(docs)}"
    folder = synth.write_run(root, "m", [(ev, docs)], created=created,
                             run_id=f"2026-m-{data_seed or 'published'}")
    record = json.loads((folder / "results.json").read_text())
    record["config"]["data_seed"] = data_seed
    (folder / "results.json").write_text(json.dumps(record))
    return folder


def test_fresh_draw_gap_and_interval_match_a_direct_computation(tmp_path):
    rng = np.random.default_rng(3)
    published = {level: rng.random(60) < p for level, p in ((1, 0.9), (2, 0.7), (3, 0.5))}
    fresh = {level: rng.random(60) < p for level, p in ((1, 0.8), (2, 0.5), (3, 0.45))}
    runs = [_generated_run(tmp_path, published),
            _generated_run(tmp_path, fresh, data_seed=7, created="2026-11-23T18:00:00+00:00")]
    gap, = contamination_gaps(runs, n_boot=20000)

    diffs = {level: published[level].astype(float) - fresh[level].astype(float) for level in published}
    direct = np.mean(np.concatenate(list(diffs.values())))
    # the stratified bootstrap's spread: per level m·var(d) for a sum of m resampled pairs, over N²
    se = math.sqrt(sum(len(d) * d.var() for d in diffs.values())) / 180
    assert gap.kind == FRESH and gap.probe == "data seed 7" and gap.n == 180
    assert gap.reference == pytest.approx(np.mean(np.concatenate(list(published.values()))))
    assert gap.probed == pytest.approx(np.mean(np.concatenate(list(fresh.values()))))
    assert gap.gap == pytest.approx(direct)
    assert gap.low == pytest.approx(direct - 1.96 * se, abs=0.012)
    assert gap.high == pytest.approx(direct + 1.96 * se, abs=0.012)
    z = abs(direct) / se
    assert gap.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), abs=0.01)
    assert "stratified" in gap.test and "3 difficulty level" in gap.test


def test_fresh_draws_with_different_mixes_are_refused(tmp_path):
    runs = [_generated_run(tmp_path, {1: [True] * 4, 2: [True] * 4}),
            _generated_run(tmp_path, {1: [True] * 4, 2: [False] * 3}, data_seed=5,
                           created="2026-11-23T18:00:00+00:00")]
    gap, = contamination_gaps(runs, n_boot=100)
    assert gap.gap is None and "difficulty mixes differ" in gap.note and "level 2: 3" in gap.note


def test_real_generators_give_the_same_mix_for_a_fresh_seed(byte_tok, tmp_path):
    runs = [evaluate("scripted", "gen_knights_knaves", engine=FirstChoiceEngine(byte_tok), limit=15, output=tmp_path,
                     progress=False, n_boot=100, data_seed=seed).path for seed in (None, 11)]
    gap, = contamination_gaps(runs, n_boot=200)
    assert gap.kind == FRESH and gap.note == "" and gap.n == 15
    fresh = read_samples(runs[1])
    assert [s["difficulty"] for s in read_samples(runs[0])] == [s["difficulty"] for s in fresh]
    assert gap.probed == pytest.approx(np.mean([s["correct"] for s in fresh]))


# --- the report section ---------------------------------------------------------------------------------------------

class _Section(HTMLParser):
    """The rows of the table in the report's contamination section, as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.inside, self.rows, self.cell, self.text = False, [], None, []

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.inside = dict(attrs).get("id") == "contamination"
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.cell = []

    def handle_endtag(self, tag):
        if self.inside and tag == "td":
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "section" and self.inside:
            self.inside = False

    def handle_data(self, data):
        if self.inside:
            self.text.append(data)
            if self.cell is not None:
                self.cell.append(data)


def _section(html):
    parser = _Section()
    parser.feed(html)
    return [row for row in parser.rows if row], "".join(parser.text)


def test_report_section_shows_both_kinds(byte_tok, data_dir, tmp_path):
    _piqa_runs(byte_tok, data_dir, tmp_path / "runs", n=10)
    rng = np.random.default_rng(5)
    _generated_run(tmp_path / "runs", {level: rng.random(20) < 0.7 for level in (1, 2)})
    _generated_run(tmp_path / "runs", {level: rng.random(20) < 0.5 for level in (1, 2)}, data_seed=9,
                   created="2026-11-23T18:00:00+00:00")
    html = build_report([tmp_path / "runs"], tmp_path / "out").read_text(encoding="utf-8")
    assert '<a href="#contamination">Contamination signal</a>' in html
    rows, text = _section(html)
    by_probe = {row[3]: row for row in rows}
    assert set(by_probe) == {"fresh draw (data seed 9)", "permuted options (options rotated)"}
    gaps = {g.kind: g for g in contamination_gaps([p for p in (tmp_path / "runs").iterdir()], n_boot=10000)}
    for kind, row in ((FRESH, by_probe["fresh draw (data seed 9)"]),
                      (PERMUTED, by_probe["permuted options (options rotated)"])):
        g = gaps[kind]
        assert row[1] == g.task and row[4] == str(g.n)
        assert row[7].startswith(f"{g.gap:+.3f}") and f"[{g.low:+.3f}, {g.high:+.3f}]" in row[7]
    assert "cannot tell apart from contamination" in text and "does not prove the absence" in text


def test_report_without_probes_says_how_to_make_them(byte_tok, data_dir, tmp_path):
    evaluate("scripted", "piqa", engine=FirstChoiceEngine(byte_tok), prompts="lettered", limit=6,
             data_dir=data_dir, output=tmp_path / "runs", progress=False, n_boot=50)
    html = build_report([tmp_path / "runs"], tmp_path / "out").read_text(encoding="utf-8")
    rows, text = _section(html)
    assert rows == [] and "--data-seed 7" in text and "--permute-choices" in text
