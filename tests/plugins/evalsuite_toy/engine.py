"""A scripted engine: it prefers choice ``len(context) % len(choices)`` (context length in tokens, here bytes)."""

from __future__ import annotations

from typing import Any, Sequence

from evalsuite.engines import ContinuationScore, LoglikelihoodRequest, register_engine


class ByteTokenizer:
    """Each UTF-8 byte is one token; 256 starts an empty context."""

    bos_token_id = eos_token_id = 256

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": list(text.encode("utf-8"))}


@register_engine("toy")
class ToyEngine:
    def __init__(self, model: str, *, adapter: str | None = None, dtype: str = "float32", batch_size: int = 8):
        self.model, self.dtype, self.tokenizer = model, dtype, ByteTokenizer()

    def describe(self) -> dict[str, Any]:
        return {"engine": "toy", "model_path": self.model, "model_sha256": "0" * 64, "dtype": self.dtype}

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], progress=None):
        answers = []
        for index, request in enumerate(requests):
            preferred = len(request.context) % len(request.continuations)
            answers.append(tuple(ContinuationScore(0.0 if k == preferred else -1.0, k == preferred, len(c))
                                 for k, c in enumerate(request.continuations)))
            if progress:
                progress(index, answers[-1])
        return answers

    def generate(self, requests, progress=None):
        answers = ["" for _ in requests]
        for index, answer in enumerate(answers):
            if progress:
                progress(index, answer)
        return answers
