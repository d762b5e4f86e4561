"""The classification engine: a fine-tuned encoder's own head (``AutoModelForSequenceClassification``).

A checkpoint written by ``evalsuite finetune`` for an encoder is a normal transformers folder whose
``config.id2label`` names the classes. The engine answers :class:`ClassificationRequest` s (token ids of a
text or text pair, encoded once by :func:`encode_texts`, as in training) with per-label log-probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from evalsuite.engines.base import ClassificationRequest, Progress, check_logprobs
from evalsuite.engines.models import describe_model, finetuned_from, fingerprint, resolve_model, training_card
from evalsuite.errors import EngineError
from evalsuite.spec.run import DTYPES


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> ClassificationRequest:
    """Token ids of one text or a text pair; a pair too long is cut from its longer side first."""
    if len(texts) not in (1, 2):
        raise ValueError(f"an encoder classifies one text or a text pair, got {len(texts)} texts")
    encoded = tokenizer(*texts, truncation=True, max_length=max_length)
    segments = encoded.get("token_type_ids")
    return ClassificationRequest(tuple(encoded["input_ids"]), tuple(segments) if segments is not None else None)


def batch_inputs(requests: Sequence[ClassificationRequest], pad_token_id: int) -> dict[str, Any]:
    """Right-padded tensors (input_ids, attention_mask, token_type_ids when the encoder uses segments)."""
    import torch

    width = max(len(r.input_ids) for r in requests)
    ids = torch.full((len(requests), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(requests), width), dtype=torch.long)
    segments = torch.zeros((len(requests), width), dtype=torch.long)
    for row, request in enumerate(requests):
        n = len(request.input_ids)
        ids[row, :n], mask[row, :n] = torch.tensor(request.input_ids), 1
        if request.token_type_ids is not None:
            segments[row, :n] = torch.tensor(request.token_type_ids)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if requests[0].token_type_ids is not None:
        inputs["token_type_ids"] = segments
    return inputs


def is_classifier(model: str) -> bool:
    """Whether ``model`` (a folder or hub id) is a sequence-classification checkpoint."""
    path = Path(model) / "config.json"
    try:
        if path.is_file():
            architectures = json.loads(path.read_text()).get("architectures") or []
        else:
            from transformers import AutoConfig

            architectures = AutoConfig.from_pretrained(model).architectures or []
    except Exception:  # noqa: BLE001 - not readable as a config: not ours to judge; the engine's load will say
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


class ClassifierEngine:
    """Per-label log-probabilities from a sequence-classification head; batches sorted by length
    (a :class:`~evalsuite.engines.base.Classifier`)."""

    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        dtype: str = "float32",
        device: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if adapter:
            raise EngineError(f"{model} is a classification checkpoint: it takes no adapter (--adapter {adapter})")
        if dtype not in DTYPES:
            raise EngineError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        self.model_path = resolve_model(model)
        self.dtype, self.batch_size = dtype, batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            net = AutoModelForSequenceClassification.from_pretrained(self.model_path, dtype=getattr(torch, dtype))
        except Exception as exc:  # noqa: BLE001
            raise EngineError(f"cannot load classification checkpoint {model!r} ({self.model_path}): {exc}") from None
        self.model = net.to(self.device).eval()
        config = self.model.config
        self.labels: tuple[str, ...] = tuple(str(config.id2label[i]) for i in range(config.num_labels))
        self.card = training_card(self.model_path) if Path(self.model_path).is_dir() else None
        trained = ((self.card or {}).get("hyperparameters") or {}).get("max_length")
        limit = getattr(config, "max_position_embeddings", None) or 512
        self.max_length = min(max_length or trained or limit, limit)
        self._fingerprint: str | None = None

    def describe(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.model_path)
        return {
            "engine": self.name,
            "model_class": "AutoModelForSequenceClassification",
            "model_path": self.model_path,
            "model_sha256": self._fingerprint,
            "labels": list(self.labels),
            "dtype": self.dtype,
            "device": self.device,
            "max_length": self.max_length,
            "finetuned": finetuned_from(self.model_path),
            **describe_model(self.model_path),
        }

    def classify(
        self, requests: Sequence[ClassificationRequest], progress: Progress | None = None
    ) -> list[tuple[float, ...]]:
        """Natural-log probabilities of each label (in ``self.labels`` order) for each request.

        A score that is not a log-probability (NaN weights) raises :class:`~evalsuite.engines.base.InvalidAnswer`.
        """
        import torch

        pad = self.tokenizer.pad_token_id or 0
        answers: list[tuple[float, ...]] = [()] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].input_ids), i))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            inputs = batch_inputs([requests[i] for i in batch], pad)
            with torch.inference_mode():
                logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits
                logprobs = torch.log_softmax(logits.double(), dim=-1).tolist()
            for i, row in zip(batch, logprobs):
                check_logprobs(row, f"model {self.model_path}", i)
                answers[i] = tuple(row)
                if progress:
                    progress(i, answers[i])
        return answers
