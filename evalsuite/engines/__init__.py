"""Engines: one protocol on token ids (:class:`Engine`), implemented by ``hf`` (transformers)."""

from __future__ import annotations

from typing import Any

from evalsuite.engines.base import (
    ContinuationScore,
    Engine,
    GenerationRequest,
    LoglikelihoodRequest,
    encode_choices,
    encode_context,
)
from evalsuite.errors import EngineError

ENGINES = ("hf",)


def load_engine(name: str, model: str, **options: Any) -> Engine:
    """Build the named engine for ``model``; options are passed to the engine's constructor."""
    if name == "hf":
        from evalsuite.engines.hf import HFEngine

        return HFEngine(model, **options)
    raise EngineError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")


__all__ = [
    "ENGINES",
    "ContinuationScore",
    "Engine",
    "GenerationRequest",
    "LoglikelihoodRequest",
    "encode_choices",
    "encode_context",
    "load_engine",
]
