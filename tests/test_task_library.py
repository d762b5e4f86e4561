"""The task library: categories, prompt variants, field mappings on real documents (raw files in the data
folder) and on hub-schema documents (tests/hub_documents.yaml) for the tasks that only exist on the hub,
graded similarity tasks, document filters, `evalsuite tasks` and skipping unavailable tasks."""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import yaml

from evalsuite.api import evaluate, load_tasks
from evalsuite.cli import main
from evalsuite.data import Split, load_split
from evalsuite.engines import ContinuationScore
from evalsuite.errors import DataError, SpecError
from evalsuite.prompting import PromptRenderer
from evalsuite.results import read_run, read_samples
from evalsuite.scoring import answer_index, extract_answer, flexible_answer
from evalsuite.spec import CATEGORIES, load_task

CATALOG = load_tasks()
# Tasks read from a dataset (hub or raw files); generated tasks are tested with their generators.
LIBRARY = {name: task for name, task in sorted(CATALOG.items()) if task.hub or task.local}
LOCAL = [name for name, task in LIBRARY.items() if task.local]
HUB_ONLY = [name for name, task in LIBRARY.items() if not task.local]
HUB_DOCS = yaml.safe_load((Path(__file__).parent / "hub_documents.yaml").read_text())


@lru_cache(maxsize=None)
def _local_split(name: str, split: str, data_dir: Path) -> Split:
    return load_split(CATALOG[name], split, data_dir)


def _hub_request(path, name=None, split=None, revision=None, data_files=None) -> dict:
    return {"path": path, "name": name, "split": split, "revision": revision, "data_files": data_files}


@pytest.fixture
def hub(monkeypatch):
    """``datasets.load_dataset`` serving the rows of hub_documents.yaml; records what was asked for."""
    import datasets

    asked, read_files = [], datasets.load_dataset

    def load_dataset(path, name=None, split=None, revision=None, data_files=None, **options):
        if path in ("json", "csv", "parquet"):  # a local file read by the datasets library's builder
            return read_files(path, name, split=split, data_files=data_files, **options)
        asked.append(_hub_request(path=path, name=name, split=split, revision=revision, data_files=data_files))
        for entry in HUB_DOCS.values():
            if _hub_request(**entry["hub"]) == asked[-1]:
                return [doc["row"] for doc in entry["docs"]]
        raise ConnectionError(f"no stored documents for {asked[-1]}")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return asked


# --- the catalog -----------------------------------------------------------------------------------------


def test_every_category_has_at_least_eight_dataset_tasks():
    """At least 8 tasks per category counting only dataset tasks (generated logic tasks come on top)."""
    counts = Counter(task.category for task in LIBRARY.values())
    assert set(counts) == set(CATEGORIES)
    assert all(counts[c] >= 8 for c in CATEGORIES), counts
    expected = {
        "logical": {"folio", "logiqa", "logicnli", "rte", "bbh_logical_deduction_three_objects",
                    "bbh_logical_deduction_five_objects", "bbh_logical_deduction_seven_objects",
                    "bbh_formal_fallacies", "bbh_web_of_lies", "bbh_boolean_expressions",
                    "bbh_tracking_shuffled_objects_three_objects", "bbh_tracking_shuffled_objects_five_objects",
                    "bbh_tracking_shuffled_objects_seven_objects"},
        "commonsense": {"copa", "piqa", "commonsenseqa", "bbh_date_understanding", "bbh_causal_judgement",
                        "bbh_sports_understanding", "bbh_navigate", "hellaswag", "winogrande", "arc_easy",
                        "arc_challenge", "openbookqa", "social_iqa", "boolq", "strategyqa"},
        "semantic_matching": {"mrpc", "stsb", "sick_relatedness", "sick_entailment", "qqp", "paws", "mnli", "snli",
                              "anli_r1", "anli_r2", "anli_r3"},
    }
    for category, names in expected.items():
        assert names <= {n for n, t in LIBRARY.items() if t.category == category}, category


@pytest.mark.parametrize("name", list(LIBRARY))
def test_every_task_has_plain_lettered_and_cot_variants(name):
    task = LIBRARY[name]
    variants = {p.name: p for p in task.prompts}
    assert task.prompts[0].name == "plain", "plain completion is the default variant"
    assert {"plain", "lettered", "cot"} <= set(variants)
    assert variants["plain"].method == variants["lettered"].method == "loglikelihood"
    cot = variants["cot"]
    assert cot.method == "generation" and cot.answer is not None and cot.answer.values
    assert cot.fewshot_target and "step by step" in cot.source
    assert 64 <= cot.max_tokens <= 512 and cot.stop
    assert task.license and task.license != "unknown" and task.description


def test_hub_only_tasks_all_have_hub_schema_documents():
    assert set(HUB_ONLY) <= set(HUB_DOCS)
    assert set(HUB_DOCS) <= set(HUB_ONLY)


# --- rendering: invariants every variant must keep ------------------------------------------------------


def _check_document(task, doc, doc_id, pool):
    """Render ``doc`` through every variant: the same gold everywhere, lettered options, and a chain-of-thought
    few-shot answer that the variant's own answer rules (strict, and the flexible fallback) read back as the gold."""
    golds = {}
    for prompt in task.prompts:
        renderer = PromptRenderer(task, prompt)
        inst = renderer.render(doc, doc_id)
        assert inst.context.strip() and "{{" not in inst.context and "{%" not in inst.context
        assert 0 <= inst.gold < len(inst.answer_values), (prompt.name, inst.gold)
        golds[prompt.name] = inst.gold
        if prompt.method == "loglikelihood":
            assert len(inst.continuations) >= 2 and len(set(inst.continuations)) == len(inst.continuations)
            assert all(c.startswith(prompt.target_delimiter) and c.strip() for c in inst.continuations)
        if prompt.name == "lettered":
            letters = [c.strip() for c in inst.continuations]
            assert letters == [chr(ord("A") + i) for i in range(len(letters))]
            assert all(f"\n{letter}. " in "\n" + inst.context for letter in letters)
        if prompt.method == "generation":
            # a one-shot prompt: its example ends with the gold answer in the form the rule reads
            example_id = next(i for i in range(len(pool)) if pool[i] is not doc)
            example = renderer.example(pool[example_id], example_id)
            example_gold = renderer.render(pool[example_id], example_id).gold
            extracted = extract_answer(example, prompt.answer.pattern)
            example_values = renderer.render(pool[example_id], example_id).answer_values
            assert answer_index(extracted, example_values) == example_gold, (prompt.name, example[-200:])
            # the flexible rule's fallback alone reads it too (the strict rule's answer comes first in a run)
            fallback = flexible_answer(example, example_values, prompt.answer.flexible)
            assert answer_index(fallback, example_values) == example_gold, (prompt.name, example[-200:])
            # and the gold answer written the way the prompt asks is read back as the gold
            said = f"Some reasoning. So the answer is ({inst.answer_values[inst.gold]})."
            if "rating is" in prompt.answer.pattern:
                said = f"Some reasoning. So the rating is {inst.answer_values[inst.gold]}."
            assert answer_index(extract_answer(said, prompt.answer.pattern), inst.answer_values) == inst.gold
            one_shot = renderer.render(doc, doc_id, [(example_id, pool[example_id])])
            assert one_shot.context.startswith(example) and one_shot.gold == inst.gold
    assert len(set(golds.values())) == 1, f"variants disagree on the gold answer: {golds}"
    return golds["plain"]


@pytest.mark.parametrize("name", LOCAL)
def test_local_task_variants_on_real_documents(name, data_dir):
    task = CATALOG[name]
    docs = _local_split(name, task.eval_split, data_dir).docs
    pool = docs[:6] if task.fewshot_split == task.eval_split else \
        _local_split(name, task.fewshot_split, data_dir).docs[:6]
    golds = [_check_document(task, doc, i, pool) for i, doc in enumerate(docs[:6])]
    assert all(g >= 0 for g in golds)


@pytest.mark.parametrize("name", HUB_ONLY)
def test_hub_task_variants_on_hub_schema_documents(name, hub):
    task = CATALOG[name]
    entry = HUB_DOCS[name]
    split = load_split(task, task.eval_split)  # through the real hub path, served by the stub
    assert hub == [_hub_request(**entry["hub"])]
    kept = [d for d in entry["docs"] if not d.get("dropped")]
    assert split.docs == [d["row"] for d in kept]
    assert split.origin.startswith(f"hub:{entry['hub']['path']}")
    for doc_id, expected in enumerate(kept):
        gold = _check_document(task, split.docs[doc_id], doc_id, split.docs)
        assert gold == expected["gold"]
        if "plain" in expected:
            plain = PromptRenderer(task, task.prompt("plain")).render(split.docs[doc_id], doc_id)
            delimiter = task.prompt("plain").target_delimiter
            assert plain.context == expected["plain"]["context"]
            assert list(plain.continuations) == [delimiter + c for c in expected["plain"]["choices"]]


def _lm_eval_hellaswag(text: str) -> str:
    """lm-evaluation-harness's HellaSwag preprocessing, for comparison."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def test_hellaswag_preprocessing_matches_lm_evaluation_harness(hub):
    task = CATALOG["hellaswag"]
    for doc_id, doc in enumerate(load_split(task, "validation").docs):
        inst = PromptRenderer(task, task.prompt("plain")).render(doc, doc_id)
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        assert inst.context == _lm_eval_hellaswag(doc["activity_label"] + ": " + ctx)
        assert inst.continuations == tuple(" " + _lm_eval_hellaswag(e) for e in doc["endings"])
        lettered = PromptRenderer(task, task.prompt("lettered")).render(doc, doc_id).context
        assert "[" not in lettered and "]" not in lettered


def test_winogrande_choices_rank_the_filled_in_sentences(hub):
    task = CATALOG["winogrande"]
    for doc_id, doc in enumerate(load_split(task, "validation").docs):
        inst = PromptRenderer(task, task.prompt("plain")).render(doc, doc_id)
        filled = [doc["sentence"].replace("_", option) for option in (doc["option1"], doc["option2"])]
        assert [inst.context + c for c in inst.continuations] == filled


def test_snli_drops_documents_without_a_gold_label(hub):
    docs = load_split(CATALOG["snli"], "test").docs
    assert [d["label"] for d in docs] == [1, 0, 2]
    assert len(HUB_DOCS["snli"]["docs"]) == 4


@pytest.mark.parametrize("name", [n for n in LIBRARY if n.startswith("bbh_")])
def test_bbh_tasks_load_the_subtask_file_and_name_the_hub_files(name, data_dir, hub, monkeypatch):
    task = CATALOG[name]
    subtask = name.removeprefix("bbh_")
    # the parquet conversion of lukaemon/bbh (its main branch is a loading script), at a pinned commit
    request = {"path": "lukaemon/bbh", "split": "test", "revision": "7f6d1e32b1667e264ff58fee9e1b685bae899d62",
               "data_files": {"test": [f"{subtask}/test/*.parquet"]}}
    assert task.local.splits["test"].file == f"bbh/{subtask}.json"
    local = load_split(task, "test", data_dir)
    assert len(local.docs) == {"causal_judgement": 187}.get(subtask, 250)
    # the hub's rows (input, target) are the same documents: rendering does not depend on the source
    HUB_DOCS["_bbh"] = {"hub": request, "docs": [{"row": d} for d in local.docs[:3]]}
    try:
        from_hub = load_split(task, "test")
    finally:
        del HUB_DOCS["_bbh"]
    assert hub == [_hub_request(**request)]
    assert from_hub.docs == local.docs[:3] and from_hub.sha256 != local.sha256
    assert from_hub.origin == f"hub:lukaemon/bbh@{request['revision']} split test ({subtask}/test/*.parquet)"
    for prompt in task.prompts:
        renderer = PromptRenderer(task, prompt)
        assert [renderer.render(d, i) for i, d in enumerate(from_hub.docs)] == \
               [renderer.render(d, i) for i, d in enumerate(local.docs[:3])]


def test_bbh_multiple_choice_options_come_from_the_input(data_dir):
    task = CATALOG["bbh_date_understanding"]
    doc = _local_split(task.name, "test", data_dir).docs[0]
    plain = PromptRenderer(task, task.prompt("plain")).render(doc, 0)
    assert plain.continuations == (" 12/11/1937", " 12/25/1937", " 01/04/1938", " 12/04/1937", " 12/25/2006",
                                   " 07/25/1937")
    assert plain.gold == 1 and doc["target"] == "(B)"
    assert "Options" not in plain.context and plain.context.endswith("MM/DD/YYYY?\nAnswer:")
    cot = PromptRenderer(task, task.prompt("cot")).render(doc, 0)
    assert "(B) 12/25/1937" in cot.context and cot.answer_values == tuple("ABCDEF")


@pytest.mark.parametrize("name, doc_id, gold_text", [
    ("bbh_formal_fallacies", 0, "invalid"), ("bbh_web_of_lies", 0, "No"), ("bbh_boolean_expressions", 0, "False"),
    ("bbh_sports_understanding", 0, "no"), ("bbh_navigate", 0, "No"), ("bbh_causal_judgement", 0, "No"),
])
def test_bbh_binary_targets(name, doc_id, gold_text, data_dir):
    task = CATALOG[name]
    doc = _local_split(name, "test", data_dir).docs[doc_id]
    assert doc["target"] == gold_text
    for prompt in task.prompts:
        inst = PromptRenderer(task, prompt).render(doc, doc_id)
        assert inst.gold == task.labels.index(gold_text)
        assert "Options:" not in inst.context


def test_logicnli_labels_map_to_verdicts(data_dir):
    task = CATALOG["logicnli"]
    docs = _local_split("logicnli", "test", data_dir).docs
    renderer = PromptRenderer(task, task.prompt("plain"))
    words = {"entailment": " True", "neutral": " Uncertain", "contradiction": " False", "self_contradiction": " Paradox"}
    for i, doc in enumerate(docs[:40]):
        inst = renderer.render(doc, i)
        assert inst.continuations[inst.gold] == words[doc["label"]]
        assert doc["facts"][0] in inst.context and doc["rules"][-1] in inst.context
        assert inst.context.endswith(doc["statement"] + "\nAnswer:")
    assert {d["label"] for d in docs[:40]} == set(words)


# --- graded similarity tasks ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, low", [("stsb", 0), ("sick_relatedness", 1)])
def test_graded_tasks_carry_choice_values_and_gold_scores(name, low, data_dir):
    task = CATALOG[name]
    assert task.graded is not None and task.metrics[:2] == ("pearson", "spearman")
    docs = _local_split(name, task.eval_split, data_dir).docs
    gold_field = "label" if name == "stsb" else "relatedness_score"
    for prompt in task.prompts:
        renderer = PromptRenderer(task, prompt)
        for i, doc in enumerate(docs[:50]):
            inst = renderer.render(doc, i)
            assert inst.choice_scores == tuple(float(v) for v in range(low, 6))
            assert inst.gold_score == doc[gold_field]
            assert inst.gold == int(doc[gold_field] + 0.5) - low  # rounded half up
    half = {"stsb": {"label": 2.5, "sentence1": "a", "sentence2": "b"},
            "sick_relatedness": {"relatedness_score": 3.5, "sentence_A": "a", "sentence_B": "b"}}[name]
    assert PromptRenderer(task, task.prompt("plain")).render(half, 0).gold == int(half[gold_field] + 0.5) - low


class ScriptedEngine:
    """Log-likelihoods from a per-document table; generations from a per-document list of texts."""

    def __init__(self, tokenizer, logprobs=None, texts=None):
        self.tokenizer, self.logprobs, self.texts = tokenizer, logprobs, texts

    def describe(self):
        return {"engine": "scripted", "model_sha256": "0" * 64, "dtype": "none"}

    def loglikelihood(self, requests, progress=None):
        return [tuple(ContinuationScore(float(lp), False, 1) for lp in self.logprobs[i][: len(r.continuations)])
                for i, r in enumerate(requests)]

    def generate(self, requests, progress=None):
        return [self.texts[i] for i in range(len(requests))]


@pytest.fixture(scope="module")
def byte_tok():
    from tiny_models import byte_tokenizer

    return byte_tokenizer()


def test_graded_run_scores_expected_ratings(tmp_path, data_dir, byte_tok):
    docs = _local_split("stsb", "validation", data_dir).docs[:12]
    rng = np.random.default_rng(0)
    logprobs = np.log(rng.dirichlet(np.ones(6), size=12))
    run = evaluate("scripted", "stsb", engine=ScriptedEngine(byte_tok, logprobs), limit=12, data_dir=data_dir,
                   output=tmp_path, progress=False, n_boot=50)
    [ev] = read_run(run.path)["evaluations"]
    expected = [float(np.exp(lp) @ np.arange(6)) for lp in logprobs]  # rows sum to 1 already
    samples = read_samples(run.path)
    assert [s["score"] for s in samples] == pytest.approx(expected, abs=1e-9)
    assert [s["gold_score"] for s in samples] == [d["label"] for d in docs]
    gold = [d["label"] for d in docs]
    assert ev["metrics"]["pearson"]["value"] == pytest.approx(np.corrcoef(expected, gold)[0, 1], abs=1e-9)
    assert "expected rating" in ev["metrics"]["pearson"]["definition"]
    assert ev["main_metric"] == "pearson"
    assert ev["metrics"]["accuracy"]["value"] == pytest.approx(
        np.mean([int(np.argmax(lp)) == int(g + 0.5) for lp, g in zip(logprobs, gold)]))


def test_chain_of_thought_run_reads_answers_and_reports_unparseable(tmp_path, data_dir, byte_tok):
    docs = _local_split("copa", "validation", data_dir).docs[:6]
    letters = ["A", "B"]
    texts = [
        f"The premise says so. So the answer is ({letters[docs[0]['label']]}).",  # right
        f"So the answer is ({letters[1 - docs[1]['label']]}).",  # wrong
        "I cannot decide.",  # unparseable
        f"Maybe (A)... no: the answer is {letters[docs[3]['label']]}",  # right, the last mention wins
        f"The answer is: {letters[docs[4]['label']]}.",  # right
        "the answer is a guess; no, the answer is (C)",  # unparseable: 'a' is no option letter, (C) no option
    ]
    run = evaluate("scripted", "copa", prompts="cot", engine=ScriptedEngine(byte_tok, texts=texts), limit=6,
                   data_dir=data_dir, output=tmp_path, progress=False, n_boot=50)
    [ev] = read_run(run.path)["evaluations"]
    assert ev["variant"] == "cot" and ev["method"] == "generation"
    assert ev["metrics"]["accuracy"]["value"] == pytest.approx(3 / 6)
    assert ev["metrics"]["unparseable_rate"]["value"] == pytest.approx(2 / 6)
    assert "accuracy_norm" not in ev["metrics"]
    assert [s["pred"] for s in read_samples(run.path)][2::3] == [-1, -1]


# --- document filters -----------------------------------------------------------------------------------


def _copa_task(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "prompts" / "toy").mkdir(parents=True)
    (tmp_path / "prompts" / "toy" / "plain.jinja").write_text("{{ premise }}")
    path = tmp_path / "toy.yaml"
    path.write_text(
        "name: toy\ncategory: commonsense\nsource:\n  local:\n    format: copa_xml\n"
        "    splits: {validation: {file: copa/balacopa-dev-all.xml, ids: [401, 500]}}\n"
        "splits: {eval: validation}\nchoices: '[choice1, choice2]'\ntarget: label\nprompts: [plain]\n"
        f"metrics: [accuracy]\n{extra}"
    )
    return path


def test_filter_keeps_matching_documents(tmp_path, data_dir):
    task = load_task(_copa_task(tmp_path, 'filter: "label == 1 and question == \'cause\'"'), [tmp_path / "prompts"])
    everything = load_split(CATALOG["copa"], "validation", data_dir).docs
    kept = load_split(task, "validation", data_dir)
    assert kept.docs == [d for d in everything if d["label"] == 1 and d["question"] == "cause"]
    assert 0 < len(kept.docs) < len(everything) and "filtered by" in kept.origin


@pytest.mark.parametrize("expression, error, message", [
    ("label ==", SpecError, "field 'filter': invalid Jinja expression"),
    ("no_such_field > 1", DataError, "field 'filter' on document 0 of split 'validation'"),
    ("label > 5", DataError, "keeps no document"),
])
def test_filter_errors_name_the_task_file_and_field(tmp_path, data_dir, expression, error, message):
    with pytest.raises(error, match=re.escape(message)) as caught:
        task = load_task(_copa_task(tmp_path, f'filter: "{expression}"'), [tmp_path / "prompts"])
        load_split(task, "validation", data_dir)
    assert "toy.yaml" in str(caught.value)


def test_graded_section_is_validated(tmp_path):
    with pytest.raises(SpecError, match=r"field 'graded.gold': is required"):
        load_task(_copa_task(tmp_path, 'graded: {values: "[0, 1]"}'), [tmp_path / "prompts"])


# --- the command line -----------------------------------------------------------------------------------


def test_tasks_command_lists_sizes_and_marks_unloadable_data(capsys, data_dir):
    assert main(["tasks", "--sizes", "--json", "--data-dir", str(data_dir)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(LIBRARY) <= set(rows)
    assert rows["copa"]["size"] == 100 and rows["bbh_causal_judgement"]["size"] == 187
    assert rows["stsb"]["size"] == 1500 and rows["logicnli"]["size"] == 2000
    assert all(rows[name]["size"] is None for name in HUB_ONLY)  # the hub cannot be reached here
    assert all(rows[n]["license"] and rows[n]["source"] and rows[n]["category"] for n in rows)
    assert main(["tasks", "--sizes", "--category", "semantic_matching", "--data-dir", str(data_dir)]) == 0
    out, err = capsys.readouterr()
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {n for n, t in CATALOG.items() if t.category == "semantic_matching"}
    assert " 1725 " in lines["mrpc"] and " ? " in lines["snli"]
    assert "could not be loaded" in err and "anli_r1: cannot load hub dataset facebook/anli" in err
    assert "snli: not tried (the hub failed for anli_r1)" in err  # one failure is enough to stop asking


def test_run_skips_tasks_whose_data_is_unavailable(tmp_path, data_dir, byte_tok, capsys):
    engine = ScriptedEngine(byte_tok, logprobs=np.zeros((4, 2)))
    with pytest.raises(DataError, match="hellaswag"):
        evaluate("scripted", "copa,hellaswag", engine=engine, limit=4, data_dir=data_dir, output=tmp_path,
                 progress=False)
    assert not any(tmp_path.iterdir())  # stopped before anything was written
    run = evaluate("scripted", "copa,hellaswag", engine=engine, limit=4, data_dir=data_dir, output=tmp_path,
                   progress=False, skip_unavailable=True, n_boot=20)
    record = read_run(run.path)
    assert [ev["task"] for ev in record["evaluations"]] == ["copa"]
    assert [s["task"] for s in record["skipped"]] == ["hellaswag"]
    assert "Rowan/hellaswag" in record["skipped"][0]["reason"]
    with pytest.raises(DataError, match="no selected task has its data available"):
        evaluate("scripted", "hellaswag", engine=engine, limit=4, data_dir=data_dir, output=tmp_path,
                 progress=False, skip_unavailable=True)
