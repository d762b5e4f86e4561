"""The transformers engine: the reference implementation and the embedded CPU default.

Multiple choice is scored with the context computed once per document: the context and all its
continuations are packed into one row, and a block attention mask lets each continuation see the context
and itself only, with position ids restarting after the context for every continuation. The output head
is applied only at positions that predict a continuation token. Rows are sorted by length and batched
under a token budget; right padding never changes a score because padded keys are masked out.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from evalsuite.engines.base import (
    ContinuationScore,
    GenerationRequest,
    LoglikelihoodRequest,
    Progress,
    truncate_stop,
)
from evalsuite.engines.models import describe_model, finetuned_from, fingerprint, resolve_model
from evalsuite.errors import EngineError

DTYPES = ("float32", "bfloat16", "float16")


class HFEngine:
    """Causal LM from ``transformers`` (``AutoModelForCausalLM``), optionally with a PEFT adapter."""

    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        dtype: str = "float32",
        device: str | None = None,
        batch_size: int = 8,
        token_budget: int = 8192,
        max_length: int | None = None,
        pack_choices: bool = True,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES:
            raise EngineError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        self.model_path = resolve_model(model)
        self.adapter, self.dtype = adapter, dtype
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size, self.token_budget, self.pack_choices = batch_size, token_budget, pack_choices
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            net = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=getattr(torch, dtype))
        except Exception as exc:  # noqa: BLE001
            raise EngineError(f"cannot load model {model!r} ({self.model_path}): {exc}") from None
        if adapter:
            net = _with_adapter(net, adapter)
        self.model = net.to(self.device).eval()
        limit = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_length = min(max_length or limit, limit)
        self._fingerprint: str | None = None

    # -- protocol -----------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.model_path)
        return {
            "engine": self.name,
            "model_path": self.model_path,
            "model_sha256": self._fingerprint,
            "adapter": self.adapter,
            "adapter_sha256": fingerprint(self.adapter) if self.adapter else None,
            "finetuned": finetuned_from(self.adapter),
            "dtype": self.dtype,
            "device": self.device,
            "max_length": self.max_length,
            **describe_model(self.model_path),
        }

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: Progress | None = None
    ) -> list[tuple[ContinuationScore, ...]]:
        rows = self._rows(requests)
        scores: list[list[ContinuationScore | None]] = [[None] * len(r.continuations) for r in requests]
        missing = [len(r.continuations) for r in requests]
        for batch in self._batches(rows):
            keys = [key for row in batch for key in row[2]]
            for (req_index, cont_index), score in zip(keys, self._score_batch(batch)):
                scores[req_index][cont_index] = score
                missing[req_index] -= 1
                if missing[req_index] == 0 and progress:
                    progress(req_index, tuple(scores[req_index]))
        return [tuple(s) for s in scores]  # type: ignore[misc]

    def generate(self, requests: Sequence[GenerationRequest], progress: Progress | None = None) -> list[str]:
        import torch

        outputs: list[str] = [""] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].context), i))
        greedy = [i for i in order if requests[i].temperature == 0]
        batches = [greedy[i : i + self.batch_size] for i in range(0, len(greedy), self.batch_size)]
        # Sampled requests run one at a time so each one's seed alone decides its sample.
        batches += [[i] for i in order if requests[i].temperature > 0]
        for batch in batches:
            reqs = [requests[i] for i in batch]
            width = max(len(r.context) for r in reqs)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            ids = torch.tensor([[pad] * (width - len(r.context)) + list(r.context) for r in reqs])
            mask = torch.tensor([[0] * (width - len(r.context)) + [1] * len(r.context) for r in reqs])
            first = reqs[0]
            kwargs: dict[str, Any] = {"do_sample": False}
            if first.temperature > 0:
                torch.manual_seed(first.seed)
                kwargs = {"do_sample": True, "temperature": first.temperature, "top_k": 0, "top_p": 1.0}
            stops = sorted({s for r in reqs for s in r.stop})
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=max(r.max_tokens for r in reqs),
                    pad_token_id=pad,
                    stop_strings=stops or None,
                    tokenizer=self.tokenizer if stops else None,
                    **kwargs,
                )
            for row, (i, r) in enumerate(zip(batch, reqs)):
                new = out[row, width : width + r.max_tokens].tolist()
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                outputs[i] = truncate_stop(text, r.stop)
                if progress:
                    progress(i, outputs[i])
        return outputs

    # -- packing and batching -----------------------------------------------------------------------
    def _rows(self, requests: Sequence[LoglikelihoodRequest]) -> list[tuple[list[int], list[int], list[tuple[int, int]]]]:
        """Rows of (token ids, segment ids, [(request, continuation)]) — segment 0 is the context.

        With packing, one row per request holds the context and all continuations (unless they do not
        fit the window together); without, one row per continuation. The context is truncated on the left when a row would exceed the model's length.
        """
        rows = []
        for r_index, request in enumerate(requests):
            if not request.continuations or any(len(c) == 0 for c in request.continuations):
                raise EngineError(f"request {r_index} has an empty continuation: nothing to score")
            packed_length = sum(len(c) for c in request.continuations)
            if self.pack_choices and packed_length < self.max_length:
                groups = [list(range(len(request.continuations)))]
            else:  # one row per continuation: packing is off, or the choices together do not fit
                groups = [[c] for c in range(len(request.continuations))]
            for group in groups:
                conts = [request.continuations[c] for c in group]
                room = self.max_length - sum(len(c) for c in conts)
                if room < 1:
                    raise EngineError(
                        f"request {r_index}: continuations of {sum(len(c) for c in conts)} tokens do not fit "
                        f"the model's {self.max_length}-token window"
                    )
                context = list(request.context[-room:])
                ids = context + [t for c in conts for t in c]
                segments = [0] * len(context) + [k + 1 for k, c in enumerate(conts) for _ in c]
                rows.append((ids, segments, [(r_index, c) for c in group]))
        return rows

    def _batches(self, rows: list) -> list[list]:
        """Longest first; a batch holds at most ``batch_size`` rows and ``token_budget`` padded tokens."""
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[i][0]), i))
        batches, current = [], []
        for i in order:
            width = len(rows[current[0]][0]) if current else len(rows[i][0])
            if current and (len(current) >= self.batch_size or width * (len(current) + 1) > self.token_budget):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return [[rows[i] for i in batch] for batch in batches]

    def _score_batch(self, batch: list) -> list[ContinuationScore]:
        import torch

        width = len(batch[0][0])
        ids = np.zeros((len(batch), width), dtype=np.int64)
        seg = np.full((len(batch), width), -1, dtype=np.int64)
        pos = np.zeros((len(batch), width), dtype=np.int64)
        targets: list[tuple[int, int, int, int]] = []  # (row, predicting position, token, score slot)
        slot = 0
        for b, (row_ids, row_seg, keys) in enumerate(batch):
            n, seg_arr = len(row_ids), np.asarray(row_seg)
            ids[b, :n], seg[b, :n] = row_ids, seg_arr
            n_ctx = int((seg_arr == 0).sum())
            pos[b, :n_ctx] = np.arange(n_ctx)
            start = n_ctx
            for k in range(len(keys)):
                length = int((seg_arr == k + 1).sum())
                pos[b, start : start + length] = np.arange(n_ctx, n_ctx + length)
                # Token j of this continuation is predicted at the previous position of its own branch.
                prev = [n_ctx - 1] + list(range(start, start + length - 1))
                targets += [(b, p, row_ids[start + j], slot) for j, p in enumerate(prev)]
                start += length
                slot += 1
        ids_t, seg_t, pos_t = (torch.from_numpy(a).to(self.device) for a in (ids, seg, pos))
        q_seg, k_seg = seg_t[:, :, None], seg_t[:, None, :]
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        mask = causal & (k_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
        mask |= torch.eye(width, dtype=torch.bool, device=self.device)  # padded rows attend to themselves
        t = torch.tensor(targets, device=self.device)
        with torch.inference_mode():
            hidden = self.model.base_model(input_ids=ids_t, attention_mask=mask[:, None], position_ids=pos_t)[0]
            logits = self.model.get_output_embeddings()(hidden[t[:, 0], t[:, 1]]).float()
            logprobs = torch.log_softmax(logits, dim=-1)
            token_lp = logprobs.gather(1, t[:, 2:3]).squeeze(1).double()
            is_greedy = (logits.argmax(dim=-1) == t[:, 2]).long()
            total = torch.zeros(slot, dtype=torch.float64, device=self.device).index_add_(0, t[:, 3], token_lp)
            greedy = torch.zeros(slot, dtype=torch.int64, device=self.device).index_add_(0, t[:, 3], 1 - is_greedy)
            count = torch.zeros(slot, dtype=torch.int64, device=self.device).index_add_(0, t[:, 3], torch.ones_like(is_greedy))
        return [
            ContinuationScore(float(lp), bool(g == 0), int(c))
            for lp, g, c in zip(total.tolist(), greedy.tolist(), count.tolist())
        ]


def _with_adapter(model: Any, adapter: str) -> Any:
    try:
        from peft import PeftModel
    except ImportError:
        raise EngineError("evaluating an adapter needs the package peft: pip install peft") from None
    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"cannot load adapter {adapter}: {exc}") from None
