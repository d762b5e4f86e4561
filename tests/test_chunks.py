"""Documents are evaluated a chunk at a time: any chunk size gives the same samples and the same metrics."""

from __future__ import annotations

import hashlib

import pytest

import evalsuite.pipeline.render as render
from evalsuite.api import evaluate
from evalsuite.engines import ContinuationScore
from evalsuite.results import read_samples

ANSWERS = ["Answer: True", "so the answer is False.", "Answer: Unknown", "no answer here", "Answer: Valid",
           "answer: Invalid", "Answer: (B)", "answer: 3"]


def _draw(*parts) -> int:
    """A number fixed by the request's content alone, whatever batch or chunk the request comes in."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


class ContentEngine:
    """Answers from a hash of each request: log-likelihoods, generations, or a classification head's."""

    labels = ("not_entailment", "entailment")
    max_length, model_path = 64, "scripted-head"

    def __init__(self, tokenizer, head: bool = False):
        self.tokenizer, self.calls = tokenizer, []
        if head:  # only a classification checkpoint has classify(); the pipeline looks for it
            self.classify = self._classify

    def describe(self):
        return {"engine": "scripted", "model_sha256": "0" * 64, "dtype": "none"}

    def _answer(self, requests, answer, progress):
        self.calls.append(len(requests))
        out = []
        for index, request in enumerate(requests):
            out.append(answer(request))
            if progress:
                progress(index, out[-1])
        return out

    def loglikelihood(self, requests, progress=None):
        return self._answer(requests, lambda r: tuple(
            ContinuationScore(-(_draw(r.context, c) % 997) / 100, _draw(r.context, c) % 2 == 0, len(c))
            for c in r.continuations), progress)

    def generate(self, requests, progress=None):
        return self._answer(requests, lambda r: ANSWERS[_draw(r.context, r.seed) % len(ANSWERS)], progress)

    def _classify(self, requests, progress=None):
        return self._answer(requests, lambda r: (-(_draw(r.input_ids) % 100) / 50, -1.0), progress)


CASES = {
    "generated task, few-shot, every variant": dict(tasks="gen_syllogisms", mode="few-shot", shots=2, limit=23,
                                                    prompts="all"),
    "self-consistency": dict(tasks="gen_deduction", prompts="cot", samples=3, temperature=0.7, limit=16),
    "graded task": dict(tasks="stsb", limit=19),
    "classification head": dict(tasks="rte", mode="fine-tuned", limit=17, head=True),
}


@pytest.mark.parametrize("case", CASES)
def test_chunked_evaluation_equals_one_chunk(case, tmp_path, data_dir, monkeypatch):
    from tiny_models import byte_tokenizer

    options = dict(CASES[case])
    head = options.pop("head", False)
    runs, calls = [], []
    for chunk_docs in (render.CHUNK_DOCS, 5):
        monkeypatch.setattr(render, "CHUNK_DOCS", chunk_docs)
        engine = ContentEngine(byte_tokenizer(), head)
        runs.append(evaluate("scripted", engine=engine, data_dir=data_dir, output=tmp_path / str(chunk_docs),
                             progress=False, n_boot=200, cache=False, seed=3, **options))
        calls.append(engine.calls)
    one, chunked = runs
    n = options["limit"] * options.get("samples", 1)
    variants = len(one.record["evaluations"])
    assert calls[0] == [n] * variants and len(calls[1]) == variants * -(-options["limit"] // 5)
    assert sum(calls[1]) == n * variants
    assert read_samples(chunked.path) == read_samples(one.path)
    timings = ("timing_s", "docs_per_s")
    for a, b in zip(one.record["evaluations"], chunked.record["evaluations"], strict=True):
        assert {k: v for k, v in a.items() if k not in timings} == {k: v for k, v in b.items() if k not in timings}
