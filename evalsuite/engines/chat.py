"""The chat engine: generation through any OpenAI-compatible ``/v1/chat/completions`` endpoint.

For models served only behind a chat API (vLLM's server, hosted APIs): each generation request goes out as
its conversation (``messages``: system prompt, few-shot turns, question), and the server applies the model's
chat template. Everything else is the server engine's (:mod:`evalsuite.engines.server`): endpoints listed in
``--model``, the served model's name, the API key, per-request deadline, retries with backoff, failover
between endpoints, prefix affinity, adaptive concurrency per endpoint, answers reported as they arrive (so the
request cache resumes a killed run).

A chat API returns no log-probabilities of a prompt, so log-likelihood prompts cannot be scored: the pipeline
refuses them before any request (``conversational``). A server that returns the model's reasoning apart from
its answer (``reasoning_content``, or ``reasoning``) gives a :class:`~evalsuite.engines.base.Generation`.
"""

from __future__ import annotations

from typing import Any, Sequence

from evalsuite.engines.base import (
    ContinuationScore,
    Generation,
    GenerationRequest,
    LoglikelihoodRequest,
    Progress,
    truncate_stop,
)
from evalsuite.engines.server import ServerEngine, _choices, _local_model, _tokenizer
from evalsuite.errors import EngineError


class ChatEngine(ServerEngine):
    """A chat model behind one or more OpenAI-compatible ``/v1/chat/completions`` endpoints.

    Options as for :class:`~evalsuite.engines.server.ServerEngine`. ``tokenizer`` is optional here: it only
    measures thinking and answer lengths in tokens (without one, and when the served model is not a local
    folder, they are counted in characters).
    """

    name = "chat"
    conversational = True

    def _load_tokenizer(self, explicit: str | None) -> tuple[Any, str | None]:
        if explicit or any(map(_local_model, (self.model_name, self.root))):
            return _tokenizer(explicit, [self.model_name, self.root])
        return None, None

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: Progress | None = None
    ) -> list[tuple[ContinuationScore, ...]]:
        raise EngineError("the chat engine cannot score log-likelihoods (a chat API returns no log-probabilities "
                          "of the prompt): evaluate a generation prompt variant (e.g. --prompts cot), or use "
                          "--engine server on a /v1/completions endpoint")

    def generate(
        self, requests: Sequence[GenerationRequest], progress: Progress | None = None
    ) -> list[str | Generation]:
        payloads = []
        for index, r in enumerate(requests):
            if r.messages is None:
                raise EngineError(f"request {index} has no messages: the chat engine sends conversations, not "
                                  "token ids")
            self._check_room(index, r.max_tokens)
            payload = {"model": self.model_name, "messages": [{"role": role, "content": content}
                                                               for role, content in r.messages],
                       "max_tokens": r.max_tokens, "temperature": r.temperature}
            if r.stop:
                payload["stop"] = list(r.stop)
            if r.temperature > 0:
                payload["seed"] = r.seed
            payloads.append(payload)

        def parse(url: str, body: dict, index: int) -> str | Generation:
            message = _choices(url, body, 1)[0]["message"]
            content = message.get("content")
            text = None if content is None else truncate_stop(str(content), requests[index].stop)
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            return Generation(text, str(reasoning)) if reasoning else (text or "")

        return self._run(payloads, parse, progress, "/chat/completions")
