"""Engines: one protocol on token ids (:class:`Engine`), implemented by ``hf`` (transformers), ``vllm``
(in-process vLLM), ``server`` (OpenAI-compatible endpoints) and ``chat`` (chat-completions endpoints, which
take conversations instead of token ids), and one for classification heads
(:class:`Classifier`). Engines are chosen by name from :data:`ENGINES` (:func:`register_engine`)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from evalsuite.engines.base import (
    ClassificationRequest,
    Classifier,
    ContinuationScore,
    Engine,
    Generation,
    GenerationRequest,
    LoglikelihoodRequest,
    encode_choices,
    encode_context,
)
from evalsuite.errors import EngineError
from evalsuite.registry import Registry

T = TypeVar("T")

# An engine class, or a function returning the engine class for a model: built-ins are such functions, so that
# torch, vLLM or httpx are imported only for the engine a run chooses (listing tasks imports none of them).
ENGINES: Registry[Callable[..., Any]] = Registry("engine", "evalsuite.engines", EngineError)


def register_engine(name: str) -> Callable[[T], T]:
    """Register an engine class as ``name`` (``--engine NAME``); it is built as ``cls(model, **options)``.

    It may also decorate a function ``(model) -> engine class`` that imports the class only when chosen.
    Another package registers its engines through the ``evalsuite.engines`` entry-point group
    (see :mod:`evalsuite.registry`).
    """
    return ENGINES.register(name)


@register_engine("hf")
def _hf(model: str) -> type:
    """transformers; a sequence-classification checkpoint gets the classification engine."""
    from evalsuite.engines.classifier import ClassifierEngine, is_classifier
    from evalsuite.engines.hf import HFEngine
    from evalsuite.engines.models import resolve_model

    return ClassifierEngine if is_classifier(resolve_model(model)) else HFEngine


@register_engine("vllm")
def _vllm(model: str) -> type:
    from evalsuite.engines.vllm import VLLMEngine

    return VLLMEngine


@register_engine("server")
def _server(model: str) -> type:
    from evalsuite.engines.server import ServerEngine

    return ServerEngine


@register_engine("chat")
def _chat(model: str) -> type:
    from evalsuite.engines.chat import ChatEngine

    return ChatEngine


# What an engine can do is known before it is built: a class says it, and so does a built-in's factory.
_chat.conversational = True  # type: ignore[attr-defined]


def engine_class(name: str, model: str) -> type:
    """The class of the engine registered as ``name`` for ``model``, not built yet (its class attributes, such as
    ``conversational``, say what it can do before it starts)."""
    registered = ENGINES.resolve(name)
    return registered if inspect.isclass(registered) else registered(model)


def load_engine(name: str, model: str, **options: Any) -> Engine | Classifier:
    """Build the engine registered as ``name`` for ``model``; options are passed to the engine's constructor.

    For ``server`` and ``chat``, ``model`` is a comma-separated list of endpoint URLs. An adapter is checked against the
    base model's weights first. With ``hf``, a sequence-classification checkpoint gets the classification
    engine (:class:`~evalsuite.engines.classifier.ClassifierEngine`).
    """
    ENGINES.resolve(name)  # an unknown name is refused before the adapter is looked at
    if options.get("adapter"):
        from evalsuite.engines.models import check_adapter, resolve_model

        check_adapter(options["adapter"], resolve_model(model))
    chosen = engine_class(name, model)
    _check_options(name, chosen, options)
    return chosen(model, **options)


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
    "Generation",
    "GenerationRequest",
    "LoglikelihoodRequest",
    "encode_choices",
    "encode_context",
    "engine_class",
    "load_engine",
    "register_engine",
]
