"""Engines: one protocol on token ids (:class:`Engine`), implemented by ``hf`` (transformers), ``vllm``
(in-process vLLM) and ``server`` (OpenAI-compatible endpoints)."""

from __future__ import annotations

import inspect
from typing import Any

from evalsuite.engines.base import (
    ClassificationRequest,
    Classifier,
    ContinuationScore,
    Engine,
    GenerationRequest,
    LoglikelihoodRequest,
    encode_choices,
    encode_context,
)
from evalsuite.errors import EngineError

ENGINES = ("hf", "vllm", "server")


def load_engine(name: str, model: str, **options: Any) -> Engine | Classifier:
    """Build the named engine for ``model``; options are passed to the engine's constructor.

    For ``server``, ``model`` is a comma-separated list of endpoint URLs. An adapter is checked against the
    base model's weights first. With ``hf``, a sequence-classification checkpoint gets the classification
    engine (:class:`~evalsuite.engines.classifier.ClassifierEngine`).
    """
    if options.get("adapter"):
        from evalsuite.engines.models import check_adapter, resolve_model

        check_adapter(options["adapter"], resolve_model(model))
    if name == "hf":
        from evalsuite.engines.classifier import ClassifierEngine, is_classifier
        from evalsuite.engines.hf import HFEngine as engine_class
        from evalsuite.engines.models import resolve_model

        if is_classifier(resolve_model(model)):
            engine_class = ClassifierEngine
    elif name == "vllm":
        from evalsuite.engines.vllm import VLLMEngine as engine_class
    elif name == "server":
        from evalsuite.engines.server import ServerEngine as engine_class
    else:
        raise EngineError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")
    _check_options(name, engine_class, options)
    return engine_class(model, **options)


def _check_options(name: str, engine_class: type, options: dict[str, Any]) -> None:
    parameters = inspect.signature(engine_class.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # the engine checks its pass-through options itself
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        accepted = sorted(p for p in parameters if p not in ("self", "model"))
        raise EngineError(f"engine {name!r} does not accept the option(s) {', '.join(unknown)}; "
                          f"it accepts: {', '.join(accepted)}")


__all__ = [
    "ENGINES",
    "ClassificationRequest",
    "Classifier",
    "ContinuationScore",
    "Engine",
    "GenerationRequest",
    "LoglikelihoodRequest",
    "encode_choices",
    "encode_context",
    "load_engine",
]
