"""A LoRA adapter from ``evalsuite finetune`` scores the same under the transformers and vLLM engines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evalsuite.api import evaluate
from evalsuite.finetune import TrainConfig, finetune
from evalsuite.results import read_samples

pytest.importorskip("evalsuite.engines.vllm", reason="the vllm engine lives in evalsuite/engines/vllm.py")


def test_adapter_scores_match_between_hf_and_vllm(tiny_model, tmp_path, data_dir):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        adapter = finetune("rte", str(tiny_model), output=tmp_path / "adapter", data_dir=data_dir, progress=False,
                           config=TrainConfig(epochs=1, learning_rate=1e-2, limit=64, validation_limit=16))
    finally:
        torch.set_num_threads(before)
    runs = {engine: evaluate(str(tiny_model), "rte", engine=engine, mode="fine-tuned", adapter=str(adapter),
                             limit=20, data_dir=data_dir, output=tmp_path / "runs", progress=False, cache=False)
            for engine in ("hf", "vllm")}  # no cache: it would hand vllm the hf run's answers
    hf, vllm = (read_samples(runs[e].path) for e in ("hf", "vllm"))
    assert [s["prompt"] for s in hf] == [s["prompt"] for s in vllm]
    np.testing.assert_allclose([s["logprobs"] for s in hf], [s["logprobs"] for s in vllm], atol=2e-3)
    assert [s["pred"] for s in hf] == [s["pred"] for s in vllm]
    # The adapter is applied under vLLM too: its scores are not the base model's.
    base = evaluate(str(tiny_model), "rte", engine="hf", limit=20, data_dir=data_dir,
                    output=tmp_path / "runs", progress=False)
    assert not np.allclose([s["logprobs"] for s in vllm], [s["logprobs"] for s in read_samples(base.path)])
