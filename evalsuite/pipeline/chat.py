"""The checks a chat or long-generation run needs, made before the engine answers any request.

Each refuses with one message: a log-likelihood prompt for an engine that only takes conversations (checked
before the engine starts), a model without a chat template for chat formatting, a system prompt that the chat
template would drop or reject, and ``--max-new-tokens`` beyond the model's context window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalsuite.errors import SpecError
from evalsuite.prompting.chat import check_system_role, require_chat_template
from evalsuite.spec import PromptSpec, RunSpec, TaskSpec


def check_prompts(spec: RunSpec, plan: Sequence[tuple[TaskSpec, PromptSpec]], engine: Any) -> None:
    """A conversational engine (or engine class) cannot score log-likelihoods: refuse such prompt variants."""
    if not getattr(engine, "conversational", False):
        return
    for task, prompt in plan:
        if prompt.method != "loglikelihood":
            continue
        generation = [p.name for p in task.prompts if p.method == "generation"]
        way_out = (f"choose a generation variant instead (--prompts {','.join(generation)})" if generation else
                   f"task '{task.name}' has no generation variant: evaluate it with --engine server (a "
                   "/v1/completions endpoint) or a local engine")
        raise SpecError(f"{prompt.path}: prompt variant '{prompt.name}' of task '{task.name}' scores "
                        f"log-likelihoods, which the {getattr(engine, 'name', spec.engine)} engine cannot (a chat "
                        f"API returns no log-probabilities of the prompt): {way_out}")


def check_engine(spec: RunSpec, engine: Any) -> None:
    """The loaded engine can run what ``spec`` asks: its chat template (for chat formatting, and with a system
    role for a system prompt) and a context window with room for ``max_new_tokens``."""
    conversational = getattr(engine, "conversational", False)
    tokenizer = engine.tokenizer
    # A chat API applies the template on the server; its tokenizer, when given, is the served model's.
    if spec.chat_template and not conversational:
        require_chat_template(tokenizer)
    if spec.system_prompt is not None and getattr(tokenizer, "chat_template", None) is not None:
        check_system_role(tokenizer)
    described = engine.describe()
    window = described.get("max_length")
    if spec.max_new_tokens and window and spec.max_new_tokens >= window:
        raise SpecError(f"--max-new-tokens {spec.max_new_tokens} does not fit the {window}-token context window of "
                        f"{described.get('model_path')} ({described.get('engine')} engine), which must also hold the "
                        f"prompt: ask for fewer than {window} new tokens")
