"""The transformers engine against a naive reference, across batch sizes, packing and truncation."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evalsuite.engines import GenerationRequest, LoglikelihoodRequest, encode_choices, encode_context, load_engine
from evalsuite.engines.hf import length_sorted_batches
from evalsuite.errors import EngineError
from tiny_models import tiny_llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_llama(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def engine(tiny):
    return load_engine("hf", tiny)


def reference(model, request: LoglikelihoodRequest) -> list[float]:
    """One full forward per continuation, logits over the whole sequence: the naive way."""
    scores = []
    for cont in request.continuations:
        ids = torch.tensor([list(request.context) + list(cont)])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].double(), -1)
        n = len(request.context)
        scores.append(sum(logprobs[n - 1 + j, t].item() for j, t in enumerate(cont)))
    return scores


def random_requests(seed: int, n: int) -> list[LoglikelihoodRequest]:
    rng = random.Random(seed)
    requests = []
    for _ in range(n):
        context = tuple(rng.randrange(256) for _ in range(rng.randint(1, 120)))
        conts = tuple(tuple(rng.randrange(256) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(1, 5)))
        requests.append(LoglikelihoodRequest(context, conts))
    return requests


def logprobs(engine, requests):
    return [[s.logprob for s in doc] for doc in engine.loglikelihood(requests)]


def test_packed_scores_equal_one_forward_per_choice(engine):
    requests = random_requests(0, 12)
    got = logprobs(engine, requests)
    for request, scores in zip(requests, got):
        assert scores == pytest.approx(reference(engine.model, request), abs=1e-5)


def test_scores_do_not_depend_on_batch_size_or_batch_mates(engine):
    requests = random_requests(1, 24)  # mixed lengths: padding differs with every batch size
    results = {}
    for batch_size in (1, 3, 8):
        engine.batch_size = batch_size
        results[batch_size] = logprobs(engine, requests)
    engine.batch_size = 8
    alone = logprobs(engine, [requests[5]])[0]
    with_others = logprobs(engine, [requests[5]] + random_requests(2, 7))[0]
    for batch_size in (3, 8):
        for a, b in zip(results[1], results[batch_size]):
            assert a == pytest.approx(b, abs=1e-5)
    assert alone == pytest.approx(with_others, abs=1e-5)
    assert alone == pytest.approx(results[1][5], abs=1e-5)


def test_one_long_row_is_batched_alone_instead_of_padding_short_ones():
    assert length_sorted_batches([20, 20, 200, 20, 20, 20, 20, 20], 8, 8192, 16) == [[2], [0, 1, 3, 4, 5, 6, 7]]
    equal = length_sorted_batches([50] * 10, 4, 8192, 16)  # no padding to save: as few passes as possible
    assert len(equal) == 3 and sorted(sum(equal, [])) == list(range(10))
    assert length_sorted_batches([300, 300, 300], 8, 700, 16) == [[0, 1], [2]]  # the token budget holds


def padded_cost(lengths, batches, pass_cost):
    return sum(max(lengths[i] for i in batch) * len(batch) + pass_cost for batch in batches)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=9), st.integers(1, 5), st.integers(1, 1200),
       st.integers(0, 64))
def test_batches_are_the_cheapest_valid_cut_of_the_sorted_rows(lengths, max_rows, budget, pass_cost):
    batches = length_sorted_batches(lengths, max_rows, budget, pass_cost)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= max_rows
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= budget
    # Brute force over every cut of the longest-first order.
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    cheapest = float("inf")
    for mask in range(1 << (len(order) - 1)):
        cuts = [0] + [k + 1 for k in range(len(order) - 1) if mask >> k & 1] + [len(order)]
        parts = [order[a:b] for a, b in zip(cuts, cuts[1:])]
        if all(len(p) <= max_rows and (len(p) == 1 or lengths[p[0]] * len(p) <= budget) for p in parts):
            cheapest = min(cheapest, padded_cost(lengths, parts, pass_cost))
    assert padded_cost(lengths, batches, pass_cost) == cheapest


def test_packing_on_and_off_agree(engine):
    requests = random_requests(3, 10)
    packed = logprobs(engine, requests)
    engine.pack_choices = False
    try:
        unpacked = logprobs(engine, requests)
    finally:
        engine.pack_choices = True
    for a, b in zip(packed, unpacked):
        assert a == pytest.approx(b, abs=1e-5)


def test_greedy_flag_and_token_counts(engine):
    request = random_requests(4, 1)[0]
    with torch.no_grad():
        logits = engine.model(torch.tensor([list(request.context)])).logits[0, -1]
    best = int(logits.argmax())
    scores = engine.loglikelihood([LoglikelihoodRequest(request.context, ((best,), ((best + 1) % 256,)))])[0]
    assert [s.greedy for s in scores] == [True, False]
    assert [s.tokens for s in scores] == [1, 1]


def test_context_is_truncated_on_the_left(tiny):
    engine = load_engine("hf", tiny, max_length=64)
    long_context = tuple(range(100))
    cut = LoglikelihoodRequest(long_context[-61:], ((7, 8, 9),))
    [truncated] = logprobs(engine, [LoglikelihoodRequest(long_context, ((7, 8, 9),))])
    assert truncated == pytest.approx(logprobs(engine, [cut])[0], abs=1e-6)
    with pytest.raises(EngineError, match="do not fit"):
        engine.loglikelihood([LoglikelihoodRequest((1,), (tuple(range(70)),))])


def test_empty_continuation_is_an_error(engine):
    with pytest.raises(EngineError, match="empty continuation"):
        engine.loglikelihood([LoglikelihoodRequest((1, 2), ((),))])


def test_boundary_whitespace_moves_to_the_continuation(engine):
    tok = engine.tokenizer
    request = encode_choices(tok, "Answer: ", ["B", "CD"])
    assert list(request.context) == tok("Answer:", add_special_tokens=False).input_ids
    assert [tok.decode(c) for c in request.continuations] == [" B", " CD"]
    assert encode_choices(tok, "", [" x"]).context == (tok.bos_token_id,)


def test_greedy_generation_matches_a_manual_loop_and_stops(engine):
    context = encode_context(engine.tokenizer, "The answer is")
    ids = list(context)
    with torch.no_grad():
        for _ in range(12):
            ids.append(int(engine.model(torch.tensor([ids])).logits[0, -1].argmax()))
    expected = engine.tokenizer.decode(ids[len(context):])
    [text] = engine.generate([GenerationRequest(context, 12)])
    assert text == expected
    stop = expected[3:5]
    [cut] = engine.generate([GenerationRequest(context, 12, stop=(stop,))])
    assert cut == expected[: expected.find(stop)]
    [short] = engine.generate([GenerationRequest(context, 3)])
    assert short == engine.tokenizer.decode(ids[len(context): len(context) + 3])


def test_batched_generation_equals_one_at_a_time(engine):
    contexts = [encode_context(engine.tokenizer, text) for text in ("a", "hello there", "x" * 40)]
    engine.batch_size = 1
    single = engine.generate([GenerationRequest(c, 8) for c in contexts])
    engine.batch_size = 8
    assert engine.generate([GenerationRequest(c, 8) for c in contexts]) == single


def test_unknown_engine_and_missing_model_are_clear(tmp_path):
    with pytest.raises(EngineError, match="unknown engine"):
        load_engine("nope", "x")
    with pytest.raises(EngineError, match="does not exist"):
        load_engine("hf", str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="config.json"):
        load_engine("hf", str(tmp_path / "empty"))


def test_shared_prefix_is_computed_once_and_changes_no_score(engine):
    rng = random.Random(5)
    prefix = tuple(rng.randrange(256) for _ in range(150))  # e.g. fixed few-shot examples
    requests = [LoglikelihoodRequest(prefix + r.context, r.continuations) for r in random_requests(6, 10)]
    assert len(engine._shared_prefix([r.context for r in requests])) >= 150
    shared = logprobs(engine, requests)
    engine.share_prefix = False
    try:
        separate = logprobs(engine, requests)
    finally:
        engine.share_prefix = True
    for request, a, b in zip(requests, shared, separate):
        assert a == pytest.approx(b, abs=1e-5)
        assert a == pytest.approx(reference(engine.model, request), abs=1e-5)
    engine.batch_size = 3
    try:
        for a, b in zip(logprobs(engine, requests), shared):
            assert a == pytest.approx(b, abs=1e-5)
    finally:
        engine.batch_size = 8


@pytest.fixture(scope="module")
def endless(tmp_path_factory):
    """A tiny model that never stops on its own: every generation runs to its budget or a stop string."""
    return load_engine("hf", str(tiny_llama(tmp_path_factory.mktemp("endless") / "model", stops=False)))


def rows_per_forward(engine):
    sizes = []
    handle = engine.model.get_input_embeddings().register_forward_hook(lambda m, a, out: sizes.append(out.shape[:2]))
    return sizes, handle


def generate_at(engine, requests, batch_size):
    engine.batch_size = batch_size
    try:
        return engine.generate(requests)
    finally:
        engine.batch_size = 8


def test_samples_depend_on_their_seed_alone_at_any_batch_size(endless):
    tok = endless.tokenizer
    contexts = [encode_context(tok, text) for text in ("Is every cat an animal?", "2 + 2 =", "x" * 30)]
    samples = [GenerationRequest(c, 10, (), 0.9, 1000 + k) for c in contexts for k in range(4)]
    texts = {size: generate_at(endless, samples, size) for size in (1, 2, 8)}
    assert texts[1] == texts[2] == texts[8]
    assert len(set(texts[8])) > 6
    # The samples transformers draws for each request alone, seeded globally (how they were drawn before).
    for request, text in zip(samples[:4], texts[8]):
        torch.manual_seed(request.seed)
        out = endless.model.generate(input_ids=torch.tensor([request.context]), max_new_tokens=10, do_sample=True,
                                     temperature=0.9, top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id)
        assert text == tok.decode(out[0, len(request.context):], skip_special_tokens=True)


def test_greedy_generation_equals_transformers_generate_at_any_batch_size(engine, endless):
    for model in (engine, endless):  # one stops at its end-of-text token, the other runs to the budget
        tok = model.tokenizer
        requests = [GenerationRequest(encode_context(tok, text), budget)
                    for text, budget in (("a", 20), ("hello there", 5), ("x" * 40, 20), ("The answer is", 12))]
        expected = []
        for r in requests:
            out = model.model.generate(input_ids=torch.tensor([r.context]), max_new_tokens=r.max_tokens,
                                       do_sample=False, pad_token_id=tok.pad_token_id)
            expected.append(tok.decode(out[0, len(r.context):], skip_special_tokens=True))
        for size in (1, 2, 8):
            assert generate_at(model, requests, size) == expected


def test_finished_rows_leave_the_batch_and_waiting_requests_take_their_place(endless):
    tok = endless.tokenizer
    longest, middle, short = (encode_context(tok, text) for text in ("the longest prompt", "a middle one", "short"))
    requests = [GenerationRequest(longest, 3), GenerationRequest(middle, 12), GenerationRequest(short, 12)]
    alone = [generate_at(endless, [r], 1)[0] for r in requests]
    sizes, handle = rows_per_forward(endless)
    try:
        assert generate_at(endless, requests, 2) == alone
    finally:
        handle.remove()
    # The two longest prompts start; once the 3-token one is done, the short prompt starts in its place, and
    # every later pass has the two running rows only: 1 + 2 + 1 + 11 passes.
    assert sizes[0] == (2, len(longest)) and sizes[3] == (1, len(short))
    assert all(rows == 2 and width == 1 for rows, width in sizes[4:13]) and len(sizes) == 15


def test_stop_strings_end_a_row_and_cut_its_text(endless):
    tok = endless.tokenizer
    context = encode_context(tok, "Question: what now?")
    [free] = endless.generate([GenerationRequest(context, 16)])
    stop = free[5:7]
    requests = [GenerationRequest(context, 16, (stop, "never")), GenerationRequest(context + context, 16, ("never",))]
    sizes, handle = rows_per_forward(endless)
    try:
        cut, other = endless.generate(requests)
    finally:
        handle.remove()
    assert cut == free[: free.find(stop)]
    assert other == endless.generate([requests[1]])[0]
    assert any(rows == 1 for rows, _ in sizes)  # the stopped row left the batch


def test_samples_of_a_prompt_and_the_shared_prefix_are_computed_once(endless):
    tok = endless.tokenizer
    prefix = tuple(random.Random(3).randrange(256) for _ in range(100))  # few-shot examples
    contexts = [prefix + encode_context(tok, q) for q in ("first?", "the second?")]
    samples = [GenerationRequest(c, 6, (), 1.0, k) for c in contexts for k in range(4)]
    before = endless.stats["tokens_computed"]
    shared = endless.generate(samples)
    computed = endless.stats["tokens_computed"] - before
    # The prefix once, each prompt's own tokens once, then one token per step of each of the 8 rows.
    assert computed == len(endless._shared_prefix(contexts)) + sum(len(c) - 100 for c in contexts) + 8 * 5
    endless.share_prefix = False
    try:
        assert endless.generate(samples) == shared
    finally:
        endless.share_prefix = True


def test_grouped_attention_gives_transformers_sdpa_results_bit_for_bit(hf_smollm2):
    """SmolLM2 has 9 query and 3 key/value heads: the engine's attention passes the 3 as they are, and every
    logit of a left-padded prompt batch and of the decoding step after it equals transformers' SDPA's."""
    model = hf_smollm2.model
    assert model.config._attn_implementation == "grouped_sdpa"
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (4, 96))
    mask = torch.ones(4, 96, dtype=torch.long)
    mask[1, :30], mask[2, :7] = 0, 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    step_mask = torch.cat([mask, torch.ones(4, 1, dtype=torch.long)], 1)
    logits = {}
    try:
        for name in ("sdpa", "grouped_sdpa"):
            model.set_attn_implementation(name)
            with torch.inference_mode():
                prompt = model(ids, attention_mask=mask, position_ids=positions, use_cache=True)
                step = model(torch.tensor([[5], [6], [7], [8]]), attention_mask=step_mask,
                             position_ids=positions[:, -1:] + 1, past_key_values=prompt.past_key_values)
                alone = model(ids[:1, :40])
            logits[name] = (prompt.logits, step.logits, alone.logits)
    finally:
        model.set_attn_implementation("grouped_sdpa")
    for ours, theirs in zip(logits["grouped_sdpa"], logits["sdpa"]):
        assert torch.equal(ours, theirs)
