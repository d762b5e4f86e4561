"""The engine protocols: requests on token ids, answered by ``hf``, ``vllm`` or ``server`` alike
(:class:`Engine`), or by a fine-tuned classification head (:class:`Classifier`).

Tokenisation happens once, in the pipeline (:func:`encode_choices`), so every engine sees the same ids.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Sequence, runtime_checkable

from evalsuite.errors import EngineError

# Called by an engine with (request index, answer) as soon as each request is answered, in any order:
# callers store answers as they come (the request cache) and advance progress bars.
Progress = Callable[[int, Any], None]


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score each continuation after the shared context: sum of log P(token | preceding tokens)."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float  # sum over the continuation's tokens, natural log
    greedy: bool  # every continuation token was the argmax
    tokens: int  # number of continuation tokens scored


@dataclass(frozen=True)
class GenerationRequest:
    """Generate up to ``max_tokens`` after the context; cut at the first stop string (not included).

    ``messages`` is the conversation as (role, content) pairs, for an engine that sends conversations
    (``conversational``, such as ``chat``); the pipeline leaves ``context`` empty for it. Others get token ids.
    """

    context: tuple[int, ...]
    max_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    seed: int = 0
    messages: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class Generation:
    """A generated answer that came with a separate reasoning text (a chat API's ``reasoning_content``).

    Engines answer a generation request with a plain string, or with this when the model's reasoning came apart
    from its answer; ``text`` is None when the server returned reasoning but no answer (it never finished).
    """

    text: str | None
    reasoning: str | None = None


def answer_parts(answer: str | Generation) -> tuple[str | None, str | None]:
    """A generation answer's text and separate reasoning (None when there is none)."""
    return (answer, None) if isinstance(answer, str) else (answer.text, answer.reasoning)


@dataclass(frozen=True)
class ClassificationRequest:
    """One text or text pair as the encoder sees it: token ids and segment ids, special tokens included."""

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...] | None = None


class Engine(Protocol):
    """What the pipeline needs from an inference engine.

    An engine may also set the class attribute ``conversational = True``: it then receives generation requests
    as ``messages`` (no token ids), cannot score log-likelihoods, and its ``tokenizer`` may be None (lengths
    are then counted in characters). The pipeline refuses log-likelihood prompts for it before any request.
    """

    tokenizer: Any

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: Progress | None = None
    ) -> list[tuple[ContinuationScore, ...]]: ...

    def generate(
        self, requests: Sequence[GenerationRequest], progress: Progress | None = None
    ) -> list[str | Generation]: ...

    def describe(self) -> dict[str, Any]:
        """Engine name, model path, weights fingerprint, dtype: everything that can change an answer."""
        ...


@runtime_checkable
class Classifier(Protocol):
    """What the pipeline needs from a classification head (a fine-tuned encoder): it predicts the labels of a
    text or text pair itself, so no prompt is rendered and no continuation scored."""

    tokenizer: Any
    labels: tuple[str, ...]  # the head's outputs, in order
    max_length: int  # tokens per request, as in training
    model_path: str

    def classify(
        self, requests: Sequence[ClassificationRequest], progress: Progress | None = None
    ) -> list[tuple[float, ...]]:
        """Natural-log probabilities of each label (in ``labels`` order) for each request."""
        ...

    def describe(self) -> dict[str, Any]: ...


# How far above 0 a log-probability may lie and still be read as 0: float32 rounding of a log-softmax leaves
# about 1e-7 per token of probability ~1, so even a sum over thousands of such tokens stays far below this,
# while a real fault (a positive score, a probability above 1) lies far above it.
LOGPROB_TOLERANCE = 1e-3


class InvalidAnswer(EngineError):
    """An engine's answer to request ``index`` of a call holds something that is not a log-probability.

    Engines know requests, not documents: the pipeline catches this and names the task and document
    (:meth:`named`). ``source`` names the model or endpoint that answered.
    """

    def __init__(self, source: str, index: int, problem: str):
        super().__init__(f"{source} answered request {index} with {problem}")
        self.source, self.index, self.problem = source, index, problem

    def at(self, index: int) -> InvalidAnswer:
        """The same fault for request ``index`` of the caller's call (for a wrapper that renumbers requests)."""
        return InvalidAnswer(self.source, index, self.problem)

    def named(self, where: str) -> EngineError:
        """The error to show, naming where the answer was asked for (task, prompt variant, document)."""
        return EngineError(f"{self.source} answered {where} with {self.problem}: the model's weights or the "
                           "server are broken; such answers are never cached, so a rerun once fixed asks again")


def logprob_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a log-probability (not a real number, not finite, above 0), or None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"a log-probability that is not a number ({repr(value)[:40]})"
    if not math.isfinite(value):
        return f"a non-finite log-probability ({value})"
    if value > LOGPROB_TOLERANCE:
        return f"a positive log-probability ({value:.6g}), a probability above 1"
    return None


def check_logprobs(values: Iterable[Any], source: str, index: int) -> None:
    """Raise :class:`InvalidAnswer` for the first of ``values`` that is not a log-probability.

    The one check every engine applies to what it returns, and the request cache to what it stores and reads.
    """
    for value in values:
        problem = logprob_problem(value)
        if problem:
            raise InvalidAnswer(source, index, problem)


def check_scores(scores: Sequence[ContinuationScore], source: str, index: int) -> tuple[ContinuationScore, ...]:
    """``scores`` (one request's answer) as a tuple, once each log-probability passed :func:`check_logprobs`."""
    check_logprobs((s.logprob for s in scores), source, index)
    return tuple(scores)


def encode_choices(tokenizer: Any, context: str, continuations: Sequence[str]) -> LoglikelihoodRequest:
    """Token ids for one context and its continuations, boundary handled as lm-evaluation-harness does.

    Trailing whitespace of the context moves to the continuation; the continuation's ids are those of
    ``context + continuation`` after the context's own ids, so a token spanning the join is attributed to
    the continuation and the context ids are shared by all choices.
    """
    stripped = context.rstrip()
    moved = context[len(stripped) :]
    context_ids = _encode(tokenizer, stripped)
    conts = []
    for continuation in continuations:
        whole = _encode(tokenizer, stripped + moved + continuation)
        conts.append(tuple(whole[len(context_ids) :]))
    if not context_ids:
        context_ids = [prefix_token(tokenizer)]
    return LoglikelihoodRequest(tuple(context_ids), tuple(conts))


def encode_context(tokenizer: Any, context: str) -> tuple[int, ...]:
    ids = _encode(tokenizer, context)
    return tuple(ids) if ids else (prefix_token(tokenizer),)


def prefix_token(tokenizer: Any) -> int:
    """The token an empty context starts from (BOS, else EOS)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start an empty context")
    return token


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate_stop(text: str, stop: Sequence[str]) -> str:
    """Cut generated text at the earliest stop string."""
    cut = len(text)
    for s in stop:
        index = text.find(s)
        if s and 0 <= index < cut:
            cut = index
    return text[:cut]
