"""Faults: running out of memory halves the batch and retries (server retries: test_server_client.py)."""

from __future__ import annotations

import random

import pytest
import torch

from evalsuite.engines import GenerationRequest, LoglikelihoodRequest, load_engine
from evalsuite.errors import EngineError
from test_engine_hf import logprobs, random_requests
from tiny_models import tiny_llama

# --- out of memory -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return load_engine("hf", str(tiny_llama(tmp_path_factory.mktemp("tiny") / "model")), batch_size=8)


class MemoryLimit:
    """Makes the model raise torch.OutOfMemoryError for any forward pass over more than ``rows`` rows."""

    def __init__(self, engine, rows: int, error: type[Exception] = torch.OutOfMemoryError):
        self.rows, self.error, self.raised, self.sizes = rows, error, 0, []
        self.handle = engine.model.get_input_embeddings().register_forward_pre_hook(self.check)
        engine._rows_that_fit = None

    def check(self, module, args):
        size = args[0].shape[0]
        self.sizes.append(size)
        if size > self.rows:
            self.raised += 1
            raise self.error(f"CUDA out of memory. Tried to allocate 2.00 GiB for {size} rows")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_out_of_memory_halves_the_batch_and_keeps_the_scores(engine):
    rng = random.Random(4)  # rows of one length, so batches are full: 8, 8, 8, 6
    requests = [LoglikelihoodRequest(tuple(rng.randrange(256) for _ in range(30)),
                                     tuple(tuple(rng.randrange(256) for _ in range(4)) for _ in range(2)))
                for _ in range(30)]
    engine.batch_size = 1
    alone = logprobs(engine, requests)
    engine.batch_size = 8
    with MemoryLimit(engine, rows=2) as limit:
        split = logprobs(engine, requests)
    assert limit.raised == 2  # 8 -> 4 fail once each, then every later batch starts at the size that fitted
    assert max(s for s in limit.sizes if s <= 2) == 2
    for a, b in zip(alone, split):
        assert a == pytest.approx(b, abs=1e-5)


def test_out_of_memory_in_generation_is_retried_in_halves(engine):
    requests = [GenerationRequest(tuple(random.Random(i).randrange(256) for _ in range(5 + i)), 4, ()) for i in range(6)]
    engine.batch_size = 1
    alone = engine.generate(requests)
    engine.batch_size = 6
    with MemoryLimit(engine, rows=1) as limit:
        assert engine.generate(requests) == alone
    assert limit.raised >= 1


def test_out_of_memory_on_a_single_row_is_a_clear_error(engine):
    with MemoryLimit(engine, rows=0), pytest.raises(EngineError, match="out of memory on a single request.*--dtype"):
        engine.loglikelihood(random_requests(5, 3))


def test_other_errors_are_not_mistaken_for_out_of_memory(engine):
    with MemoryLimit(engine, rows=0, error=ValueError), pytest.raises(ValueError, match="CUDA out of memory"):
        engine.loglikelihood(random_requests(5, 3))
