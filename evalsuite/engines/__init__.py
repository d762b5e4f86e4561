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
    """Build the named engine for ``model``; options are passed to the engine's constructor.

    An adapter is checked against the base model's weights first. With ``hf``, a sequence-classification
    checkpoint gets the classification engine (:class:`~evalsuite.engines.classifier.ClassifierEngine`).
    """
    from evalsuite.engines.models import check_adapter, resolve_model

    if options.get("adapter"):
        check_adapter(options["adapter"], resolve_model(model))
    if name == "hf":
        from evalsuite.engines.classifier import ClassifierEngine, is_classifier
        from evalsuite.engines.hf import HFEngine

        if is_classifier(resolve_model(model)):
            return ClassifierEngine(model, **options)
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
