"""The real packaged SmolLM2-135M-Instruct through the transformers engine."""

from __future__ import annotations

import pytest

from evalsuite.api import load_tasks
from evalsuite.pipeline.render import render_instances
from evalsuite.data import load_split
from evalsuite.engines import encode_choices, load_engine
from evalsuite.prompting import PromptRenderer


@pytest.fixture(scope="module")
def smollm2():
    return load_engine("hf", "smollm2")


def test_known_continuation_logprobs(smollm2):
    # Reference values computed independently with transformers and with vLLM's CPU build.
    request = encode_choices(smollm2.tokenizer, "The capital of France is", [" Paris", " London", " Berlin"])
    scores = [s.logprob for s in smollm2.loglikelihood([request])[0]]
    assert scores == pytest.approx([-0.2581, -4.3844, -6.9207], abs=1e-3)


def test_copa_loglikelihoods_do_not_depend_on_batch_size(smollm2, data_dir):
    task = load_tasks()["copa"]
    renderer = PromptRenderer(task, task.prompts[0])
    instances, _, _ = render_instances(
        task, renderer, lambda t, s: load_split(t, s, data_dir), shots=0, seed=0, limit=24, sampler=None
    )
    requests = [encode_choices(smollm2.tokenizer, i.context, i.continuations) for i in instances]
    by_size = {}
    for batch_size in (1, 8):
        smollm2.batch_size = batch_size
        by_size[batch_size] = [[s.logprob for s in doc] for doc in smollm2.loglikelihood(requests)]
    assert len(by_size[1]) == 24
    for one, eight in zip(by_size[1], by_size[8]):
        assert one == pytest.approx(eight, abs=1e-4)
