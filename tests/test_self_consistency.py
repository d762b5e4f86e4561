"""Self-consistency: sampled chain-of-thought answers, majority vote, agreement; sampling reproducibility."""

from __future__ import annotations

import pytest

from evalsuite.api import evaluate, load_tasks
from evalsuite.data import load_split
from evalsuite.engines import GenerationRequest, encode_context, load_engine
from evalsuite.errors import SpecError
from evalsuite.results import read_samples
from evalsuite.scoring import majority_vote


@pytest.mark.parametrize("answers, winner, sample, agreement", [
    (["A", "B", "B"], "B", 1, 2 / 3),
    (["A", "B"], "A", 0, 1 / 2),  # tie: the answer that appears first
    (["B", "A", "A", "B"], "B", 0, 1 / 2),
    ([None, "B", None], "B", 1, 1 / 3),  # unparseable answers do not vote
    ([None, "A", "B", None], "A", 1, 1 / 4),
    ([None, None], None, None, 0.0),  # all unparseable
    ([2, 2, 0], 2, 0, 2 / 3),
])
def test_majority_vote(answers, winner, sample, agreement):
    vote = majority_vote(answers)
    assert (vote.winner, vote.sample) == (winner, sample)
    assert vote.agreement == pytest.approx(agreement)


class ScriptedSampler:
    """Answers generation requests from a script: one list of texts per document, one text per sample."""

    def __init__(self, tokenizer, script: list[list[str]]):
        self.tokenizer, self.script, self.requests = tokenizer, script, []

    def describe(self):
        return {"engine": "scripted", "model_sha256": "0" * 64, "dtype": "none"}

    def loglikelihood(self, requests, progress=None):
        raise AssertionError("not used")

    def generate(self, requests, progress=None):
        self.requests += requests
        contexts = list(dict.fromkeys(r.context for r in requests))
        texts = []
        for index, request in enumerate(requests):
            doc = contexts.index(request.context)
            texts.append(self.script[doc][index - doc * len(self.script[doc])])
            if progress:
                progress(index, texts[-1])
        return texts


SCRIPT = [
    ["Answer: True", "so... Answer: True", "Answer: False"],  # True wins 2/3
    ["no idea", "Answer: maybe", "Answer: False"],  # unparseable votes ignored: False, 1/3
    ["hmm", "...", ""],  # all unparseable
    ["Answer: False", "Answer: True", "rambling"],  # tie: the first answer, False
    ["answer: true", "ＡＮＳＷＥＲ：ＴＲＵＥ", "**Answer:** Unknown"],  # votes compare normalised answers
]
EXPECTED = [0, 1, -1, 1, 0]  # index into True/False/Unknown


@pytest.fixture(scope="module")
def byte_tok():
    from tiny_models import byte_tokenizer

    return byte_tokenizer()


def test_self_consistency_run(tmp_path, byte_tok):
    engine = ScriptedSampler(byte_tok, SCRIPT)
    run = evaluate("scripted", "gen_deduction", engine=engine, prompts="cot", limit=5, seed=3, samples=3,
                   temperature=0.7, output=tmp_path, progress=False)
    assert [r.seed for r in engine.requests] == [3000, 3001, 3002] * 5
    assert {r.temperature for r in engine.requests} == {0.7}

    task = load_tasks()["gen_deduction"]
    gold = [["True", "False", "Unknown"].index(d["label"]) for d in load_split(task, "test").docs[:5]]
    samples = read_samples(run.path)
    assert [s["pred"] for s in samples] == EXPECTED
    assert [s["correct"] for s in samples] == [p == g for p, g in zip(EXPECTED, gold)]
    assert samples[0]["votes"] == ["True", "True", "False"] and samples[0]["generations"] == SCRIPT[0]
    assert samples[2]["votes"] == [None, None, None] and samples[2]["extracted"] is None
    assert samples[4]["extracted"] == "true"

    record = run.record
    assert (record["config"]["samples"], record["config"]["temperature"]) == (3, 0.7)
    [ev] = record["evaluations"]
    assert ev["metrics"]["unparseable_rate"]["value"] == pytest.approx(1 / 5)  # not in the task's metric list
    assert ev["metrics"]["accuracy"]["value"] == pytest.approx(sum(p == g for p, g in zip(EXPECTED, gold)) / 5)
    consistency = ev["self_consistency"]
    assert consistency["samples"] == 3 and "ties go to" in consistency["vote"]
    assert consistency["agreement"]["value"] == pytest.approx((2 / 3 + 1 / 3 + 0 + 1 / 3 + 2 / 3) / 5)
    assert consistency["agreement"]["low"] <= consistency["agreement"]["value"] <= consistency["agreement"]["high"]
    assert sum(level["n"] for level in ev["by_difficulty"].values()) == 5

    again = evaluate("scripted", "gen_deduction", engine=ScriptedSampler(byte_tok, SCRIPT), prompts="cot", limit=5,
                     seed=3, samples=3, temperature=0.7, output=tmp_path, progress=False)
    assert read_samples(again.path) == samples


def test_single_greedy_generation_reports_unparseable_rate(tmp_path, byte_tok):
    engine = ScriptedSampler(byte_tok, [[s[0]] for s in SCRIPT])
    run = evaluate("scripted", "gen_deduction", engine=engine, prompts="cot", limit=5, output=tmp_path, progress=False)
    [ev] = run.record["evaluations"]
    assert {r.temperature for r in engine.requests} == {0.0}
    assert ev["metrics"]["unparseable_rate"]["value"] == pytest.approx(2 / 5)
    assert "self_consistency" not in ev
    assert [s["generation"] for s in read_samples(run.path)] == [s[0] for s in SCRIPT]


def test_each_extraction_rule_takes_its_own_vote(tmp_path, byte_tok):
    script = [
        ["Answer: True", "it is false", "false, surely"],  # strict: True (1 vote); flexible: False (2 of 3)
        ["Answer: Unknown", "Answer: Unknown", "true"],  # both Unknown; the flexible reading of sample 3 is True
        ["no idea", "hmm", "..."],  # neither rule reads anything
    ]
    run = evaluate("scripted", "gen_deduction", engine=ScriptedSampler(byte_tok, script), prompts="cot", limit=3,
                   samples=3, temperature=0.7, output=tmp_path, progress=False, n_boot=50)
    samples = read_samples(run.path)
    assert [s["votes"] for s in samples] == [["True", None, None], ["Unknown", "Unknown", None], [None] * 3]
    assert [s["votes_flexible"] for s in samples] == [["True", "false", "false"], ["Unknown", "Unknown", "true"],
                                                      [None] * 3]
    assert [(s["pred"], s["extracted"]) for s in samples] == [(0, "True"), (2, "Unknown"), (-1, None)]
    assert [(s["pred_flexible"], s["extracted_flexible"]) for s in samples] == [(1, "false"), (2, "Unknown"),
                                                                                 (-1, None)]
    [ev] = run.record["evaluations"]
    assert ev["metrics"]["unparseable_rate"]["value"] == pytest.approx(1 / 3)
    assert ev["metrics"]["unparseable_rate_flexible"]["value"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("samples, temperature", [(2, 0.0), (0, 1.0), (1, -0.5)])
def test_bad_sampling_options(tmp_path, byte_tok, samples, temperature):
    with pytest.raises(SpecError, match="--samples"):
        evaluate("scripted", "gen_deduction", engine=ScriptedSampler(byte_tok, []), prompts="cot", limit=1,
                 samples=samples, temperature=temperature, output=tmp_path, progress=False)


def test_sampled_generations_are_reproducible_per_seed(tiny_model):
    """The transformers engine: a sampled generation depends on its seed alone, not on batch-mates."""
    engine = load_engine("hf", str(tiny_model))
    context = encode_context(engine.tokenizer, "Knights and knaves: ")
    other = encode_context(engine.tokenizer, "A different prompt")

    def sample(seeds, extra=()):
        requests = [GenerationRequest(context, 12, (), 1.0, s) for s in seeds] + list(extra)
        return engine.generate(requests)[: len(seeds)]

    first = sample([5, 6, 7, 8])
    assert sample([8, 7]) == [first[3], first[2]]  # the same seeds again, in another order and company
    assert sample([5], extra=[GenerationRequest(other, 12, (), 1.0, 5), GenerationRequest(other, 12, ())]) == first[:1]
    assert len(set(first)) > 1  # different seeds give different samples
    greedy = engine.generate([GenerationRequest(context, 12, ())] * 2)
    assert greedy[0] == greedy[1]
