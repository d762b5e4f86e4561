"""Conversations: a rendered document as chat messages, and a model's chat template turning them into text.

Prompting renders every document both as plain text (``Instance.context``) and as a conversation
(``Instance.messages``): an optional system message, then either one user turn holding the plain text, or,
with few-shot examples as turns, each example as a user/assistant pair before the question's user turn. A
local engine's chat template (:func:`chat_text`) or a chat API turns the conversation into tokens or requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from evalsuite.errors import SpecError

# The options that make a run format its prompts as conversations (named in messages).
CHAT_OPTIONS = "--chat-template, --system-prompt or --fewshot-as-multiturn"


class Message(NamedTuple):
    """One chat turn: ``role`` is ``system``, ``user`` or ``assistant``."""

    role: str
    content: str


@dataclass(frozen=True)
class ChatFormat:
    """How documents become conversations: an optional system message, and whether few-shot examples are
    separate user/assistant turns (else the whole plain-text prompt is one user turn)."""

    system: str | None = None
    multiturn: bool = False


def conversation(chat: ChatFormat, context: str, question: str, shots: Sequence[tuple[str, str]], *,
                 preamble: str, separator: str) -> tuple[Message, ...]:
    """The messages of one document: ``context`` is its plain-text prompt, ``question`` the document alone,
    ``shots`` its few-shot examples as (prompt, answer). As turns, the preamble opens the first user turn."""
    system = (Message("system", chat.system),) if chat.system is not None else ()
    if not chat.multiturn:
        return (*system, Message("user", context))
    turns, lead = [], preamble + separator if preamble else ""
    for prompt, answer in shots:
        turns += [Message("user", lead + prompt), Message("assistant", answer)]
        lead = ""
    return (*system, *turns, Message("user", lead + question))


def as_dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Messages as chat APIs and chat templates take them: ``[{"role": ..., "content": ...}, ...]``."""
    return [{"role": role, "content": content} for role, content in messages]


def chat_text(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The conversation through the tokenizer's chat template, ready for the assistant's answer."""
    require_chat_template(tokenizer)
    try:
        return _apply(tokenizer, messages)
    except Exception as exc:  # noqa: BLE001 - a template may refuse a conversation (roles, their order)
        raise SpecError(f"the chat template of {_name(tokenizer)} refused the conversation ({type(exc).__name__}: "
                        f"{exc}); try without --fewshot-as-multiturn or --system-prompt") from None


def check_system_role(tokenizer: Any) -> None:
    """Refuse a system prompt that the chat template would drop or reject: a system message holding a marker
    is rendered, and the marker must appear in the text."""
    require_chat_template(tokenizer)
    marker = "evalsuite-system-role-check"
    try:
        if marker in _apply(tokenizer, [Message("system", marker), Message("user", "?")]):
            return
        problem = "has no system role (it leaves the system message out)"
    except Exception as exc:  # noqa: BLE001 - e.g. raise_exception('System role not supported')
        problem = f"rejects a system message ({type(exc).__name__}: {exc})"
    raise SpecError(f"--system-prompt: the chat template of {_name(tokenizer)} {problem}: put the instruction "
                    "into the prompt instead (a prompt variant's preamble), or evaluate a model whose template "
                    "has a system role")


def require_chat_template(tokenizer: Any) -> None:
    """Refuse chat formatting with a tokenizer that has no chat template."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise SpecError(f"{CHAT_OPTIONS} format prompts with the model's chat template, but the tokenizer of "
                        f"{_name(tokenizer)} has none: leave those options out, or evaluate a chat model")


def _apply(tokenizer: Any, messages: Sequence[Message]) -> str:
    return tokenizer.apply_chat_template(as_dicts(messages), tokenize=False, add_generation_prompt=True)


def _name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or "the model")
