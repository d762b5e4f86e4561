"""The transformers engine: the reference implementation and the embedded CPU default.

Multiple choice is scored with the context computed once per document: the context and all its
continuations are packed into one row, and a block attention mask lets each continuation see the context
and itself only, with position ids restarting after the context for every continuation. The output head
is applied only at positions that predict a continuation token. Rows are sorted by length and cut into
batches under a token budget where padding costs least; right padding never changes a score because padded
keys are masked out. A batch that runs out of memory is split in halves and retried, down to single rows.

Generation runs greedy and sampled requests in one decoding loop (:meth:`HFEngine._decode`): the shared prefix
and each distinct prompt are computed once, finished rows leave the batch and waiting requests take their
place, and every sampled request draws from its own seeded generator, so its text does not depend on the
batch size or its batch-mates.

On CPU, attention with fewer key/value heads than query heads (grouped-query attention, as in SmolLM2 and
Llama) hands the keys and values to the kernel as they are (:func:`_grouped_sdpa`) instead of copying them
once per query head: the same kernel and bit-identical results, without copies that take up to a third of a
decoding step over a long cache.
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
        if self.device == "cpu" and self.model.config._attn_implementation == "sdpa":
            _use_grouped_sdpa(self.model)
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
        # A context truncated to fit the window shares nothing.
        fits = all(len(r.context) + sum(map(len, r.continuations)) <= self.max_length for r in requests)
        prefix = self._shared_prefix([r.context for r in requests]) if fits else ()
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
        """Greedy and sampled generations, batched together; see :meth:`_decode` for how they run.

        A sampled request draws every token from its own generator seeded with its ``seed``, from its own
        row's logits, so its text depends on that seed alone: the same at any batch size or company. The
        prompt's shared prefix (few-shot examples) is computed once, and identical requests run once.
        """
        outputs: list[str | None] = [None] * len(requests)
        copies: dict[GenerationRequest, list[int]] = {}  # identical requests get one answer
        for i in sorted(range(len(requests)), key=lambda i: (-len(requests[i].context), i)):
            copies.setdefault(requests[i], []).append(i)

        def finish(request: GenerationRequest, text: str) -> None:
            for i in copies[request]:
                outputs[i] = text
                if progress:
                    progress(i, text)

        pending = []
        for request in copies:  # longest context first, the samples of one prompt side by side
            if request.max_tokens > 0:
                pending.append(request)
            else:
                finish(request, "")
        prefix = self._shared_prefix(list(dict.fromkeys(r.context for r in pending)))
        prefix_kv = self._prefix_kv(prefix) if prefix else None
        self.stats["tokens_computed"] += len(prefix)
        while pending:
            rows = min(self.batch_size, self._rows_that_fit or self.batch_size)
            try:
                self._decode(pending, rows, prefix_kv, finish)
                break
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, others re-raised
                if not _out_of_memory(exc):
                    raise
                message = _first_line(exc)
            # Rows in flight start again at the smaller size; their answers do not depend on batch-mates.
            self._fit_after_out_of_memory(rows, message)
            pending = [r for r in pending if outputs[copies[r][0]] is None]
        return outputs  # type: ignore[return-value]

    def _decode(self, requests: list[GenerationRequest], rows: int, prefix_kv: list | None,
                finish: Callable[[GenerationRequest, str], None]) -> None:
        """Generate ``requests`` in order, at most ``rows`` at a time, calling ``finish`` with each text.

        One forward pass either starts waiting requests in free rows (their prompts after the shared prefix,
        each distinct prompt once; its samples copy its keys and values) or advances every running row by one
        token. A row that ends (end-of-text token, its ``max_tokens``, a stop string) leaves the batch at once
        and its place goes to the next waiting request. Rows are left-padded in one key/value cache; positions
        are explicit, so padding never moves a token.
        """
        import torch

        waiting = list(reversed(requests))  # popped from the end: in order
        running: list[_Generating] = []
        cache = _KVBatch.empty()
        started: dict[tuple[int, ...], tuple[_KVBatch, Any]] = {}  # prompts with samples still waiting
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        while waiting or running:
            if waiting and len(running) < rows:
                new = [waiting.pop() for _ in range(min(rows - len(running), len(waiting)))]
                kv, logits = self._start(new, started, {r.context for r in waiting}, prefix_kv)
                cache = cache.joined(kv)
                running += [_Generating(r, self.device) for r in new]
                stepped = running[-len(new):]
            else:
                logits, cache = self._step(running, cache)
                stepped = running
            for row, token in zip(stepped, _pick(logits, stepped)):
                row.add(token, eos, self.tokenizer)
            keep = [j for j, row in enumerate(running) if not row.done]
            for row in running:
                if row.done:
                    finish(row.request, truncate_stop(self.tokenizer.decode(row.tokens, skip_special_tokens=True),
                                                      row.request.stop))
            if len(keep) < len(running):
                running = [running[j] for j in keep]
                cache = cache.selected(torch.tensor(keep, device=self.device))

    def _start(self, new: list[GenerationRequest], started: dict, later: set, prefix_kv: list | None) -> tuple:
        """Keys and values (a :class:`_KVBatch`) and next-token logits of ``new`` requests' prompts.

        Each distinct prompt is computed once after the shared prefix; one whose samples are still waiting
        (in ``later``) is kept in ``started`` for them.
        """
        import torch
        from transformers import DynamicCache

        prompts = list(dict.fromkeys(r.context for r in new if r.context not in started))
        if prompts:
            offset = prefix_kv[0][0].shape[2] if prefix_kv is not None else 0
            width = max(len(p) for p in prompts) - offset
            ids = torch.tensor([[0] * (width - len(p) + offset) + list(p[offset:]) for p in prompts])
            mask = torch.tensor([[1] * offset + [0] * (width - len(p) + offset) + [1] * (len(p) - offset)
                                 for p in prompts])
            positions = (mask.cumsum(1) - 1).clamp(min=0)[:, offset:]
            # A plain cache of full layers, whatever the model's own would be, so every layer's keys line up.
            cache = DynamicCache([(k.expand(len(prompts), -1, -1, -1), v.expand(len(prompts), -1, -1, -1))
                                  for k, v in prefix_kv or ()])
            self.stats["tokens_computed"] += sum(len(p) - offset for p in prompts)
            with torch.inference_mode():
                out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                 position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                                 logits_to_keep=1)
            kv = _KVBatch([(layer.keys, layer.values) for layer in out.past_key_values.layers], mask.to(self.device))
            logits = out.logits[:, -1].float()
            for j, prompt in enumerate(prompts):
                started[prompt] = (kv.selected(torch.tensor([j], device=self.device)), logits[j : j + 1])
        parts = [started[r.context] for r in new]
        for prompt in {r.context for r in new} - later:
            del started[prompt]
        kv = _KVBatch.empty()
        for part, _ in parts:
            kv = kv.joined(part)
        return kv, torch.cat([logits for _, logits in parts])

    def _step(self, running: list[_Generating], cache: _KVBatch) -> tuple[Any, _KVBatch]:
        """Next-token logits of every running row after feeding each its latest token, and the grown cache."""
        import torch
        from transformers import DynamicCache

        ids = torch.tensor([[row.tokens[-1]] for row in running], device=self.device)
        positions = torch.tensor([[row.position - 1] for row in running], device=self.device)
        mask = torch.cat([cache.mask, cache.mask.new_ones(len(running), 1)], dim=1)
        self.stats["tokens_computed"] += len(running)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                             past_key_values=DynamicCache(cache.kv), use_cache=True, logits_to_keep=1)
        grown = _KVBatch([(layer.keys, layer.values) for layer in out.past_key_values.layers], mask)
        return out.logits[:, -1].float(), grown

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
            message = _first_line(exc)
        # Outside the except block, so the failed attempt's tensors are freed before the retry.
        self._fit_after_out_of_memory(len(batch), message)
        return self._within_memory(run, batch)

    def _fit_after_out_of_memory(self, rows: int, message: str) -> None:
        """After ``rows`` rows ran out of memory: free it, and let later batches hold half as many rows."""
        _release_memory(self.device)
        if rows == 1:
            raise EngineError(
                f"out of memory on a single request on {self.device} ({message}): use a smaller dtype "
                "(--dtype bfloat16), a device with more memory, or shorter prompts (fewer --shots)"
            )
        self._rows_that_fit = (rows + 1) // 2
        log.warning("out of memory on a batch of %d on %s; retrying in batches of %d", rows, self.device,
                    self._rows_that_fit)

    # -- packing and batching -----------------------------------------------------------------------
    def _shared_prefix(self, contexts: Sequence[Sequence[int]]) -> tuple[int, ...]:
        """The prefix every context shares (few-shot preamble and examples), computed once. Off when short.

        Each context keeps at least one token of its own (it predicts the first answer token).
        """
        if not self.share_prefix or len(contexts) < 2:
            return ()
        arrays = [np.asarray(c) for c in contexts]
        first = arrays[0]
        length = min(len(c) for c in arrays) - 1
        for context in arrays[1:]:
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


class _Generating:
    """One request being generated: its tokens so far, and its own random generator when it is sampled."""

    def __init__(self, request: GenerationRequest, device: str):
        import torch

        self.request, self.tokens, self.done = request, [], False
        self.generator = torch.Generator(device=device).manual_seed(request.seed) if request.temperature > 0 else None
        # The last tokens that can hold a stop string (every token is at least one byte), with some context.
        self.window = max((len(s.encode()) for s in request.stop), default=0) + 8

    @property
    def position(self) -> int:
        """The position of the next token."""
        return len(self.request.context) + len(self.tokens)

    def add(self, token: int, eos: set[int], tokenizer: Any) -> None:
        """Take the next token; the row is done at an end-of-text token, its budget or a stop string."""
        if token in eos:
            self.done = True
            return
        self.tokens.append(token)
        stop = self.request.stop
        if len(self.tokens) >= self.request.max_tokens:
            self.done = True
        elif stop and any(s and s in tokenizer.decode(self.tokens[-self.window :], skip_special_tokens=True) for s in stop):
            text = tokenizer.decode(self.tokens, skip_special_tokens=True)  # the whole text decides
            self.done = truncate_stop(text, stop) != text


def _pick(logits: Any, rows: list[_Generating]) -> list[int]:
    """Each row's next token: the argmax, or a draw from the row's own generator, as transformers samples."""
    import torch

    tokens = logits.argmax(dim=-1).tolist()
    for j, row in enumerate(rows):
        if row.generator is not None:
            probs = torch.softmax(logits[j : j + 1] / row.request.temperature, dim=-1)
            tokens[j] = int(torch.multinomial(probs, 1, generator=row.generator))
    return tokens


@dataclass
class _KVBatch:
    """Keys and values of rows left-padded to one length, per layer ``(keys, values)`` of shape
    (rows, heads, length, head dim), and ``mask`` (rows, length): 1 where a token is, 0 for padding."""

    kv: list[tuple[Any, Any]]
    mask: Any

    @classmethod
    def empty(cls) -> _KVBatch:
        return cls([], None)

    def joined(self, other: _KVBatch) -> _KVBatch:
        """These rows, then ``other``'s, padded on the left to the longer length."""
        import torch
        from torch.nn.functional import pad

        if self.mask is None:
            return other
        length = max(self.mask.shape[1], other.mask.shape[1])
        a, b = length - self.mask.shape[1], length - other.mask.shape[1]
        kv = [(torch.cat([pad(k, (0, 0, a, 0)), pad(ok, (0, 0, b, 0))]), torch.cat([pad(v, (0, 0, a, 0)), pad(ov, (0, 0, b, 0))]))
              for (k, v), (ok, ov) in zip(self.kv, other.kv)]
        return _KVBatch(kv, torch.cat([pad(self.mask, (a, 0)), pad(other.mask, (b, 0))]))

    def selected(self, rows: Any) -> _KVBatch:
        """Only ``rows`` (a tensor of indices), without the padding columns none of them needs."""
        if len(rows) == 0:
            return _KVBatch.empty()
        mask = self.mask[rows]
        start = int(mask.any(dim=0).nonzero()[0])
        return _KVBatch([(k[rows][:, :, start:], v[rows][:, :, start:]) for k, v in self.kv], mask[:, start:])


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


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


def _grouped_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                  scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers' SDPA attention, with grouped key/value heads passed to the kernel as they are.

    transformers copies grouped keys and values once per query head whenever there is an attention mask
    (which left padding always brings), because CUDA's fused kernels take no mask with grouped heads. The CPU
    kernel does, with the same arithmetic. Anything else than plain grouped attention goes to the original.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_length, kv_length = query.shape[2], key.shape[2]
    if (getattr(module, "num_key_value_groups", 1) == 1 or kwargs.get("position_bias") is not None
            or kwargs.get("cache") is not None or kwargs.get("output_attentions")
            or (attention_mask is None and 1 < q_length != kv_length)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        is_causal=is_causal and q_length > 1 and attention_mask is None, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def _use_grouped_sdpa(model: Any) -> None:
    """Run ``model``'s attention through :func:`_grouped_sdpa`, with the masks SDPA gets."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("grouped_sdpa", _grouped_sdpa)
    AttentionMaskInterface.register("grouped_sdpa", sdpa_mask)
    model.set_attn_implementation("grouped_sdpa")


def _with_adapter(model: Any, adapter: str) -> Any:
    try:
        from peft import PeftModel
    except ImportError:
        raise EngineError("evaluating an adapter needs the package peft: pip install peft") from None
    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"cannot load adapter {adapter}: {exc}") from None
