"""Where the vLLM engine's workers run: GPUs per replica, CPU cores per replica (no vLLM needed)."""

from __future__ import annotations

import json

import pytest

from evalsuite.engines.vllm import _lora_rank, _placements
from evalsuite.errors import EngineError


def test_each_replica_gets_its_own_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert _placements(2, 2) == ("cuda", [{"CUDA_VISIBLE_DEVICES": "4,5"}, {"CUDA_VISIBLE_DEVICES": "6,7"}])
    assert _placements(4, 1)[1][3] == {"CUDA_VISIBLE_DEVICES": "7"}
    with pytest.raises(EngineError, match="needs 8 GPUs; 4 visible"):
        _placements(4, 2)


def test_cpu_cores_are_shared_out(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert _placements(1, 1) == ("cpu", [{"VLLM_CPU_OMP_THREADS_BIND": "0,1,2,3,4,5"}])
    assert _placements(2, 1)[1] == [{"VLLM_CPU_OMP_THREADS_BIND": "0,1,2"}, {"VLLM_CPU_OMP_THREADS_BIND": "3,4,5"}]
    assert _placements(1, 2)[1] == [{"VLLM_CPU_OMP_THREADS_BIND": "0,1,2|3,4,5"}]  # one list per TP rank
    with pytest.raises(EngineError, match="needs 8 CPU cores; 6 available"):
        _placements(4, 2)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "2-3")
    assert _placements(1, 1) == ("cpu", [{}])  # the user's own binding stands


def test_lora_rank_is_one_vllm_accepts(tmp_path):
    for rank, expected in ((4, 8), (8, 8), (12, 16), (64, 64)):
        (tmp_path / "adapter_config.json").write_text(json.dumps({"r": rank}))
        assert _lora_rank(str(tmp_path)) == expected
