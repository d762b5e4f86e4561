"""The transformers engine: the reference implementation and the embedded CPU default.

Multiple choice is scored with the context computed once per document: the context and all its
continuations are packed into one row, and a block attention mask lets each continuation see the context
and itself only, with position ids restarting after the context for every continuation. The output head
is applied only at positions that predict a continuation token. Rows are sorted by length and cut into
batches under a token budget where padding costs least; right padding never changes a score because padded
keys are masked out. A batch that runs out of memory is split in halves and retried, down to single rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from evalsuite.engines.base import (
    ContinuationScore,
    GenerationRequest,
    LoglikelihoodRequest,
    Progress,
    check_scores,
    truncate_stop,
)
from evalsuite.engines.models import describe_model, finetuned_from, fingerprint, resolve_model
from evalsuite.errors import EngineError
from evalsuite.spec.run import DTYPES

log = logging.getLogger(__name__)


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
        share_prefix: bool = True,
        min_shared_prefix: int = 16,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES:
            raise EngineError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        self.model_path = resolve_model(model)
        self.adapter, self.dtype = adapter, dtype
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size, self.token_budget, self.pack_choices = batch_size, token_budget, pack_choices
        self.share_prefix, self.min_shared_prefix = share_prefix, min_shared_prefix
        self.stats = {"tokens_computed": 0}  # tokens run through the model, padding excluded
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            net = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=getattr(torch, dtype))
        except Exception as exc:  # noqa: BLE001
            raise EngineError(f"cannot load model {model!r} ({self.model_path}): {exc}") from None
        if adapter:
            net = _with_adapter(net, adapter)
        self.model = net.to(self.device).eval()
        self.source = f"model {self.model_path}" + (f" with adapter {adapter}" if adapter else "")  # in errors
        limit = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_length = min(max_length or limit, limit)
        self._fingerprint: str | None = None
        self._rows_that_fit: int | None = None  # set after running out of memory: later batches stay this small

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
        prefix = self._shared_prefix(requests)
        rows = self._rows(requests, len(prefix))
        scores: list[list[ContinuationScore | None]] = [[None] * len(r.continuations) for r in requests]
        missing = [len(r.continuations) for r in requests]
        prefix_kv = self._prefix_kv(prefix) if prefix else None
        self.stats["tokens_computed"] += len(prefix) + sum(len(row.ids) for row in rows)
        for batch in self._batches(rows):
            keys = [key for row in batch for key in row.keys]
            score_rows = lambda rows: self._score_batch(rows, len(prefix), prefix_kv)  # noqa: E731
            for (req_index, cont_index), score in zip(keys, self._within_memory(score_rows, batch)):
                scores[req_index][cont_index] = score
                missing[req_index] -= 1
                if missing[req_index] == 0:
                    answer = check_scores(scores[req_index], self.source, req_index)  # type: ignore[arg-type]
                    if progress:
                        progress(req_index, answer)
        return [tuple(s) for s in scores]  # type: ignore[misc]

    def generate(self, requests: Sequence[GenerationRequest], progress: Progress | None = None) -> list[str]:
        outputs: list[str] = [""] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].context), i))
        greedy = [i for i in order if requests[i].temperature == 0]
        batches = [greedy[i : i + self.batch_size] for i in range(0, len(greedy), self.batch_size)]
        # Sampled requests run one at a time so each one's seed alone decides its sample.
        batches += [[i] for i in order if requests[i].temperature > 0]
        for batch in batches:
            texts = self._within_memory(self._generate_batch, [requests[i] for i in batch])
            for i, text in zip(batch, texts):
                outputs[i] = text
                if progress:
                    progress(i, text)
        return outputs

    def _generate_batch(self, reqs: list[GenerationRequest]) -> list[str]:
        import torch

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
        texts = []
        for row, r in enumerate(reqs):
            new = out[row, width : width + r.max_tokens].tolist()
            texts.append(truncate_stop(self.tokenizer.decode(new, skip_special_tokens=True), r.stop))
        return texts

    # -- running out of memory ----------------------------------------------------------------------
    def _within_memory(self, run: Callable[[list], list], batch: list) -> list:
        """``run`` over ``batch`` in pieces no larger than what last fitted in memory.

        A piece that runs out of memory is halved and retried, down to single rows; later pieces and batches
        start at the size that fitted. Scores do not depend on batch-mates, so the answers equal an unsplit run's.
        """
        out: list = []
        start = 0
        while start < len(batch):
            size = min(len(batch) - start, self._rows_that_fit or len(batch))
            out += self._attempt(run, batch[start : start + size])
            start += size
        return out

    def _attempt(self, run: Callable[[list], list], batch: list) -> list:
        try:
            return run(batch)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, others re-raised
            if not _out_of_memory(exc):
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # Outside the except block, so the failed attempt's tensors are freed before the retry.
        _release_memory(self.device)
        if len(batch) == 1:
            raise EngineError(
                f"out of memory on a single request on {self.device} ({message}): use a smaller dtype "
                "(--dtype bfloat16), a device with more memory, or shorter prompts (fewer --shots)"
            )
        self._rows_that_fit = (len(batch) + 1) // 2
        log.warning("out of memory on a batch of %d on %s; retrying in batches of %d", len(batch), self.device,
                    self._rows_that_fit)
        return self._within_memory(run, batch)

    # -- packing and batching -----------------------------------------------------------------------
    def _shared_prefix(self, requests: Sequence[LoglikelihoodRequest]) -> tuple[int, ...]:
        """The context prefix every request shares (few-shot preamble and examples), computed once.

        Each request keeps at least one context token of its own (it predicts the first answer token).
        Off when it is short, or when some request must be truncated to fit the window.
        """
        if not self.share_prefix or len(requests) < 2:
            return ()
        contexts = [np.asarray(r.context) for r in requests]
        if any(len(c) + sum(map(len, r.continuations)) > self.max_length for c, r in zip(contexts, requests)):
            return ()
        first = contexts[0]
        length = min(len(c) for c in contexts) - 1
        for context in contexts[1:]:
            differs = np.flatnonzero(context[:length] != first[:length])
            length = int(differs[0]) if len(differs) else length
        return tuple(first[:length].tolist()) if length >= self.min_shared_prefix else ()

    def _prefix_kv(self, prefix: tuple[int, ...]) -> list[tuple[Any, Any]]:
        import torch

        with torch.inference_mode():
            out = self.model.base_model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
        cache = out.past_key_values
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _rows(self, requests: Sequence[LoglikelihoodRequest], skip: int = 0) -> list[_Row]:
        """Rows of token ids and segment ids (0 = context, k = continuation k) for the requests.

        With packing, one row per request holds the context (minus the shared prefix of ``skip``
        tokens) and all continuations, unless they do not fit the window together; otherwise one row per
        continuation. The context is truncated on the left when a row would exceed the window.
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
                context = request.context[skip:][-room:]
                ids = np.fromiter((t for part in (context, *conts) for t in part), dtype=np.int64)
                segments = np.repeat(np.arange(len(conts) + 1), [len(context), *map(len, conts)])
                rows.append(_Row(ids, segments, [(r_index, c) for c in group]))
        return rows

    def _batches(self, rows: list[_Row]) -> list[list[_Row]]:
        """Longest first, cut where padding costs least (see :func:`length_sorted_batches`)."""
        pass_cost = PASS_COST_TOKENS["cuda" if str(self.device).startswith("cuda") else "cpu"]
        batches = length_sorted_batches([len(row.ids) for row in rows], self.batch_size, self.token_budget, pass_cost)
        return [[rows[i] for i in batch] for batch in batches]

    def _score_batch(self, batch: list[_Row], offset: int = 0, prefix_kv: list | None = None) -> list[ContinuationScore]:
        """Continuation scores of a batch of rows, in row order then continuation order.

        ``offset`` tokens of shared prefix precede every row; their keys and values are ``prefix_kv``.
        """
        import torch

        width = len(batch[0].ids)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        seg = np.full((len(batch), width), -1, dtype=np.int64)
        pos = np.zeros((len(batch), width), dtype=np.int64)
        targets = []  # per row: (row, predicting position, token, score slot) columns
        slot = 0
        for b, row in enumerate(batch):
            n = len(row.ids)
            ids[b, :n], seg[b, :n] = row.ids, row.segments
            index = np.arange(n)
            n_ctx = int((row.segments == 0).sum())
            starts = np.maximum.accumulate(np.where(np.r_[True, row.segments[1:] != row.segments[:-1]], index, 0))
            within = index - starts
            # Every continuation restarts right after the context, as if it were alone.
            pos[b, :n] = offset + np.where(row.segments == 0, index, n_ctx + within)
            answer = row.segments > 0
            predicted_at = np.where(within == 0, n_ctx - 1, index - 1)[answer]
            targets.append(np.stack([np.full(len(predicted_at), b), predicted_at, row.ids[answer],
                                     slot + row.segments[answer] - 1], axis=1))
            slot += len(row.keys)
        t = torch.from_numpy(np.concatenate(targets)).to(self.device)
        ids_t, seg_t, pos_t = (torch.from_numpy(a).to(self.device) for a in (ids, seg, pos))
        q_seg, k_seg = seg_t[:, :, None], seg_t[:, None, :]
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        mask = causal & (k_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
        mask |= torch.eye(width, dtype=torch.bool, device=self.device)  # padded rows attend to themselves
        cache = None
        if prefix_kv is not None:
            from transformers import DynamicCache

            seen = torch.ones(len(batch), width, offset, dtype=torch.bool, device=self.device)
            mask = torch.cat([seen, mask], dim=2)
            rows = len(batch)
            cache = DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix_kv])
        with torch.inference_mode():
            hidden = self.model.base_model(
                input_ids=ids_t, attention_mask=mask[:, None], position_ids=pos_t, past_key_values=cache,
                use_cache=cache is not None,
            )[0]
            # The output head only where an answer token is predicted: most positions need no logits.
            logits = self.model.get_output_embeddings()(hidden[t[:, 0], t[:, 1]]).float()
            logprobs = torch.log_softmax(logits, dim=-1)
            token_lp = logprobs.gather(1, t[:, 2:3]).squeeze(1).double()
            missed = (logits.argmax(dim=-1) != t[:, 2]).long()
            total = torch.zeros(slot, dtype=torch.float64, device=self.device).index_add_(0, t[:, 3], token_lp)
            misses = torch.zeros(slot, dtype=torch.int64, device=self.device).index_add_(0, t[:, 3], missed)
            count = torch.bincount(t[:, 3], minlength=slot)
        return [
            ContinuationScore(float(lp), m == 0, int(c))
            for lp, m, c in zip(total.tolist(), misses.tolist(), count.tolist())
        ]


# What one forward pass costs beyond its tokens, in tokens. On a CPU (measured with SmolLM2) another pass
# pays off once it saves about 16 padded tokens; a GPU computes thousands of tokens in about the time of one,
# so there only a large saving of padding justifies another pass.
PASS_COST_TOKENS = {"cpu": 16, "cuda": 1024}


def length_sorted_batches(lengths: Sequence[int], max_rows: int, token_budget: int, pass_cost: int) -> list[list[int]]:
    """Indices of rows in batches: longest first, each batch padded to its first row's length.

    A batch holds at most ``max_rows`` rows and ``token_budget`` padded tokens (a longer row goes alone).
    Among the ways to cut the sorted rows into such batches, the one with the fewest padded tokens plus
    ``pass_cost`` per batch is chosen (dynamic programming over cut points): a long-tailed set of lengths
    no longer pads a whole batch of short rows to one long row's length.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    width = [lengths[i] for i in order]
    best = [0.0] + [float("inf")] * len(order)  # best[j]: cost of batching the first j sorted rows
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for rows in range(1, min(max_rows, j) + 1):
            padded = width[j - rows] * rows
            if rows > 1 and padded > token_budget:
                break
            cost = best[j - rows] + padded + pass_cost
            if cost < best[j]:
                best[j], cut[j] = cost, j - rows
    batches, end = [], len(order)
    while end > 0:
        batches.append(order[cut[end] : end])
        end = cut[end]
    return batches[::-1]


@dataclass(frozen=True)
class _Row:
    """One packed row: token ids, segment ids (0 = context), and the (request, continuation) it scores."""

    ids: np.ndarray
    segments: np.ndarray
    keys: list[tuple[int, int]]


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    text = str(exc)
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def _release_memory(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def _with_adapter(model: Any, adapter: str) -> Any:
    try:
        from peft import PeftModel
    except ImportError:
        raise EngineError("evaluating an adapter needs the package peft: pip install peft") from None
    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"cannot load adapter {adapter}: {exc}") from None
