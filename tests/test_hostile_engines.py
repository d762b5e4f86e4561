"""Hostile and broken engines: no silent wrong score, no poisoned cache, no endless request, strict JSON out.

A model with NaN weights, or a real HTTP server on 127.0.0.1 (scripted_server.py) that answers NaN,
infinite, positive or non-numeric log-probabilities, must stop the run with one error naming the model or
endpoint, the task and the document; nothing of such an answer is cached or written. A server that trickles
its answer a byte at a time must meet the engine's per-request deadline. Run records are strict JSON.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalsuite.api import evaluate
from evalsuite.cli import main
from evalsuite.engines.base import LOGPROB_TOLERANCE, InvalidAnswer, logprob_problem
from evalsuite.engines.cache import DB_NAME
from evalsuite.errors import EngineError, EvalsuiteError
from evalsuite.results import RunWriter
from scripted_server import completion, engine, request, server, tokenizer_dir  # noqa: F401 - fixtures

NOT_NUMBERS = st.one_of(st.text(max_size=8), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
# Everything a broken model or server may give in place of a log-probability.
BAD_LOGPROBS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.floats(min_value=LOGPROB_TOLERANCE, max_value=1e300, exclude_min=True),
    NOT_NUMBERS,
)


def strict_loads(text: str):
    """json.loads that refuses NaN and Infinity, as every JSON reader but Python's does."""
    def refuse(word: str):
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def stored_answers(cache_dir: Path) -> list[str]:
    with sqlite3.connect(cache_dir / DB_NAME) as db:
        return [row[0] for row in db.execute("SELECT answer FROM answers")]


def every_answer(bad) -> Callable[[dict], dict]:
    """A server answer function putting ``bad`` in place of each prompt's last continuation log-probability."""
    def answer(body: dict) -> dict:
        out = completion(body)
        for choice in out["choices"]:
            choice["logprobs"]["token_logprobs"][-2] = bad
        return out

    return answer


# -- the one shared check ---------------------------------------------------------------------------


@given(st.floats())
def test_a_number_is_a_log_probability_exactly_when_finite_and_not_above_zero(value):
    assert (logprob_problem(value) is None) == (math.isfinite(value) and value <= LOGPROB_TOLERANCE)


@given(NOT_NUMBERS)
def test_a_non_number_is_never_a_log_probability(value):
    assert "not a number" in logprob_problem(value)


# -- a server answering what is not a log-probability -------------------------------------------------


def test_each_bad_log_probability_from_a_server_names_the_endpoint_and_request(server, tokenizer_dir):
    url, script = server
    eng = engine(url, tokenizer_dir, concurrency=2)
    requests = [request(3), request(4), request(5)]
    assert eng.loglikelihood(requests)  # healthy first: the check rejects nothing a sane server says

    @settings(max_examples=30, deadline=None)
    @given(bad=BAD_LOGPROBS, target=st.integers(0, 2), choice=st.integers(0, 1), in_top=st.booleans())
    def check(bad, target, choice, in_top):
        def answer(body: dict) -> dict:
            out = completion(body)
            if len(body["prompt"][0]) == 3 + target + 2:  # the targeted request (its choice 0 has 2 tokens)
                logprobs = out["choices"][choice]["logprobs"]
                last = len(body["prompt"][choice]) - 1  # the continuation's last token
                if in_top:
                    logprobs["top_logprobs"][last] = {"t": bad}
                else:
                    logprobs["token_logprobs"][last] = bad
            return out

        script.answer = answer
        with pytest.raises(InvalidAnswer) as caught:
            eng.loglikelihood(requests)
        assert caught.value.index == target and caught.value.source == f"endpoint {url}/v1"
        assert caught.value.problem == logprob_problem(bad)

    check()


def test_an_unreadable_answer_names_the_endpoint(server, tokenizer_dir):
    url, script = server
    eng = engine(url, tokenizer_dir)

    def no_top_mapping(body: dict) -> dict:
        out = completion(body)
        out["choices"][0]["logprobs"]["top_logprobs"] = ["t"] * len(body["prompt"][0])
        return out

    def logprobs_a_string(body: dict) -> dict:
        out = completion(body)
        out["choices"][1]["logprobs"] = "oops"
        return out

    for answer, problem in ((no_top_mapping, "missing top log-probabilities"),
                            (logprobs_a_string, "an answer it cannot read (AttributeError")):
        script.answer = answer
        with pytest.raises(InvalidAnswer, match=rf"^endpoint {url}/v1 answered request 0 with {re.escape(problem)}"):
            eng.loglikelihood([request()])


def test_a_nan_server_stops_the_run_caches_nothing_and_a_healthy_rerun_scores(server, tokenizer_dir, data_dir,
                                                                              tmp_path, capsys):
    url, script = server
    cache = tmp_path / "cache"
    run = ["run", "--engine", "server", "--model", url, "--tokenizer", tokenizer_dir, "--tasks", "copa",
           "--limit", "4", "--data-dir", str(data_dir), "--cache-dir", str(cache), "--no-progress"]
    script.answer = every_answer(math.nan)
    assert main([*run, "--output", str(tmp_path / "broken")]) == 2
    [message] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert message.startswith(f"evalsuite: error: endpoint {url}/v1 answered task 'copa', prompt variant 'plain', "
                              "document ") and "non-finite log-probability (nan)" in message
    assert not list((tmp_path / "broken").rglob("results.json")) and stored_answers(cache) == []

    script.answer = completion
    assert main([*run, "--output", str(tmp_path / "healthy")]) == 0
    [results] = (tmp_path / "healthy").rglob("results.json")
    record = strict_loads(results.read_text())
    assert record["cache"]["computed"] == 4 and record["cache"]["hits"] == 0
    samples = [strict_loads(line) for line in (results.parent / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(lp < 0 for s in samples for lp in s["logprobs"])
    assert len(stored_answers(cache)) == 4


def test_a_cache_poisoned_before_the_check_heals(server, tokenizer_dir, data_dir, tmp_path):
    url, _ = server
    options = dict(engine="server", engine_args={"tokenizer": tokenizer_dir}, limit=3, data_dir=data_dir,
                   progress=False, cache=tmp_path / "cache")
    first = evaluate(url, "copa", output=tmp_path / "first", **options)
    # What the request cache held after a NaN server before answers were checked.
    with sqlite3.connect(tmp_path / "cache" / DB_NAME) as db:
        db.execute("UPDATE answers SET answer = '[[NaN, false, 2], [NaN, false, 1]]'")
    healed = evaluate(url, "copa", output=tmp_path / "healed", **options)
    assert healed.record["cache"]["hits"] == 0 and healed.record["cache"]["computed"] == 3
    samples = [strict_loads(line) for line in (healed.path / "samples.jsonl").read_text().splitlines()]
    expected = [strict_loads(line) for line in (first.path / "samples.jsonl").read_text().splitlines()]
    assert [s["logprobs"] for s in samples] == [s["logprobs"] for s in expected]
    assert all(math.isfinite(lp) for text in stored_answers(tmp_path / "cache") for lp, _, _ in strict_loads(text))
    again = evaluate(url, "copa", output=tmp_path / "again", **options)
    assert again.record["cache"]["hits"] == 3


# -- models with NaN weights ------------------------------------------------------------------------


def with_nan(folder: Path, out: Path, tensor: str) -> Path:
    """A copy of a model folder with one weight tensor set to NaN."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, out)
    weights = load_file(out / "model.safetensors")
    weights[tensor].fill_(math.nan)
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_hf_engine_with_nan_weights_names_model_task_and_document(tiny_model, data_dir, tmp_path):
    broken = with_nan(tiny_model, tmp_path / "nan-llama", "model.norm.weight")
    with pytest.raises(EngineError) as caught:
        evaluate(str(broken), "copa", limit=3, data_dir=data_dir, output=tmp_path / "out", progress=False,
                 cache=tmp_path / "cache")
    assert type(caught.value) is EngineError  # named by the pipeline, no longer a bare request number
    assert str(caught.value).startswith(f"model {broken.resolve()} answered task 'copa', prompt variant 'plain', document ")
    assert "non-finite log-probability (nan)" in str(caught.value)
    assert stored_answers(tmp_path / "cache") == [] and not list((tmp_path / "out").rglob("results.json"))


def test_classifier_head_with_nan_weights_names_model_task_and_document(data_dir, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tiny_models import tiny_bert

    base = tiny_bert(tmp_path / "bert")
    labels = {0: "entailment", 1: "not_entailment"}
    config = BertConfig.from_pretrained(base, id2label=labels, label2id={v: k for k, v in labels.items()})
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.fill_(math.nan)
    model.save_pretrained(tmp_path / "head")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "head")
    with pytest.raises(EngineError, match=rf"^model {re.escape(str((tmp_path / 'head').resolve()))} answered task 'rte', variant 'head' "
                                          r"\(the classification head\), document \d+ with a non-finite"):
        evaluate(str(tmp_path / "head"), "rte", mode="fine-tuned", limit=3, data_dir=data_dir,
                 output=tmp_path / "out", progress=False)


# -- a server that trickles -------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_trickling_server_meets_the_deadline_then_the_retries(server, tokenizer_dir, part):
    url, script = server
    eng = engine(url, tokenizer_dir, timeout=1, max_retries=1, backoff=0.01)
    script.trickle, script.trickle_delay = part, 0.2  # a byte every 0.2 s: no single read ever waits 1 s
    started = time.monotonic()
    with pytest.raises(EngineError, match=rf"endpoint {url}/v1 failed 2 times \(last: no complete answer within "
                                          r"the 1 s deadline \(engine option timeout\)\)"):
        eng.loglikelihood([request()])
    assert time.monotonic() - started < 4 and script.posts == 2


def test_a_slow_answer_within_the_deadline_is_taken(server, tokenizer_dir):
    url, script = server
    eng = engine(url, tokenizer_dir, timeout=30, max_retries=0)
    script.trickle, script.trickle_delay = "body", 0.001
    [scores] = eng.loglikelihood([request()])
    assert [s.logprob for s in scores] == pytest.approx([-0.7, -0.3]) and script.posts == 1


# -- strict JSON out --------------------------------------------------------------------------------

JSON_TREES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)


def inject(data, tree, bad: float, path: str):
    """``tree`` with ``bad`` put somewhere (drawn), and that place's path as the writer names it."""
    if isinstance(tree, dict) and tree and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(tree)))
        tree[key], where = inject(data, tree[key], bad, f"{path}.{key}")
        return tree, where
    if isinstance(tree, list) and tree and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(tree) - 1))
        tree[i], where = inject(data, tree[i], bad, f"{path}[{i}]")
        return tree, where
    if isinstance(tree, list):
        return [*tree, bad], f"{path}[{len(tree)}]"
    return bad, path


def test_samples_are_strict_json_and_a_non_finite_value_is_a_clear_error(tmp_path):
    writer = RunWriter(tmp_path, "20260101-000000-model-zero-shot-0123abcd")
    written = []

    @settings(max_examples=60, deadline=None)
    @given(tree=JSON_TREES, data=st.data(), bad=st.sampled_from([math.nan, math.inf, -math.inf]), poison=st.booleans())
    def check(tree, data, bad, poison):
        sample = {"task": "copa", "variant": "plain", "doc_id": len(written), "extra": tree}
        if not poison:
            writer.write_samples([sample])
            written.append(sample)
            return
        sample["extra"], where = inject(data, sample["extra"], bad, "extra")
        with pytest.raises(EvalsuiteError) as caught:
            writer.write_samples([{"task": "copa", "variant": "plain", "doc_id": -1}, sample])
        assert f"the sample of task 'copa', variant 'plain', document {len(written)}: field '{where}' is {bad}" in str(caught.value)

    check()
    writer._samples.flush()
    lines = (writer.partial / "samples.jsonl").read_text(encoding="utf-8").split("\n")[:-1]  # not splitlines: U+2028 is text
    assert [strict_loads(line) for line in lines] == written  # nothing of a refused batch was written


def test_a_non_finite_value_in_the_record_writes_no_results_file(tmp_path):
    writer = RunWriter(tmp_path, "20260101-000000-model-zero-shot-0123abcd")
    record = {"evaluations": [{"task": "copa", "metrics": {"accuracy": {"value": math.nan}}}]}
    with pytest.raises(EvalsuiteError, match=r"results\.json: field 'evaluations\[0\]\.metrics\.accuracy\.value' "
                                             r"is nan, which strict JSON cannot hold"):
        writer.finish(record)
    assert not (writer.partial / "results.json").exists() and not writer.final.exists()
    writer.abandon()
