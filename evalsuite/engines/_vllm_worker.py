"""The vLLM engine's worker process: one ``vllm.LLM``, driven over a socket by :mod:`evalsuite.engines.vllm`.

Run as ``python -m evalsuite.engines._vllm_worker FD``. Messages are pickled tuples:

- parent → worker: ``("start", config)``, then ``("loglikelihood", items)`` / ``("generate", items)`` any
  number of times, then ``("close",)``;
- worker → parent: ``("ready", info)`` after start; one ``("answer", index, payload)`` per request as soon as
  it is answered, then ``("done", stats)``; or ``("error", message)`` instead of ``ready`` / ``done``.

Living in its own process keeps vLLM's start-up (it spawns processes of its own), its thread binding and its
shutdown (which often aborts after all results are in) away from the evaluating process, and gives data
parallelism for free: one worker per GPU, each with its own ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable

# The oldest vLLM release this module is tested with (it uses SamplingParams.logprob_token_ids and
# skip_reading_prefix_cache, and LLMEngine.add_request/step).
MIN_VLLM = "0.32"


def main(fd: int) -> None:
    conn = Connection(fd)
    try:
        _, config = conn.recv()
    except EOFError:
        return
    try:
        llm = _start(config)
    except Exception as exc:  # noqa: BLE001 - everything goes back to the parent as one message
        traceback.print_exc()
        conn.send(("error", _describe_error(exc)))
        _exit(None)
    runner = _Runner(llm, config.get("adapter"))
    conn.send(("ready", runner.info()))
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            break
        if message[0] == "close":
            break
        try:
            handle = runner.loglikelihood if message[0] == "loglikelihood" else runner.generate
            stats = handle(message[1], lambda index, payload: conn.send(("answer", index, payload)))
            conn.send(("done", stats))
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            conn.send(("error", _describe_error(exc)))
    _exit(llm)


def _start(config: dict[str, Any]) -> Any:
    import vllm
    from packaging.version import Version
    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    if Version(vllm.__version__).release < Version(MIN_VLLM).release:
        raise RuntimeError(f"evalsuite's vllm engine needs vLLM >= {MIN_VLLM}; this is vLLM {vllm.__version__}")
    args = dict(config["llm_args"])
    accepted = {name for name in inspect.signature(LLM.__init__).parameters if name not in ("self", "kwargs")}
    accepted |= {f.name for f in dataclasses.fields(EngineArgs)}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ValueError(
            f"vLLM {vllm.__version__} does not accept the argument(s) {', '.join(unknown)} "
            "(see the arguments of vllm.LLM and vllm.engine.arg_utils.EngineArgs)"
        )
    return LLM(**args)


class _Runner:
    """Turns the engine protocol's requests into vLLM requests; all of a call's requests run together."""

    def __init__(self, llm: Any, adapter: str | None):
        from vllm.lora.request import LoRARequest

        self.engine = llm.llm_engine
        self.max_len = int(self.engine.model_config.max_model_len)
        cache = self.engine.vllm_config.cache_config
        self.prefix_caching, self.block_size = bool(cache.enable_prefix_caching), int(cache.block_size)
        self.lora = LoRARequest("adapter", 1, adapter) if adapter else None
        self._ids = 0

    def info(self) -> dict[str, Any]:
        import vllm

        return {
            "vllm_version": vllm.__version__,
            "max_model_len": self.max_len,
            "prefix_caching": self.prefix_caching,
            "block_size": self.block_size,
        }

    def loglikelihood(self, items: list, answer: Callable[[int, Any], None]) -> dict[str, int]:
        """``items``: ``(index, context, continuations)``; the answer is one ``(logprob, greedy, tokens)`` per
        continuation. Returns counts: vLLM requests, prompt tokens served from the prefix cache, tokens run
        through the model, requests recomputed.

        Two ways to read log-probabilities, both on the given token ids:

        - next-token requests: one request per distinct prefix (context plus the first tokens of a
          continuation) reads the log-probabilities of the tokens that follow it (``logprob_token_ids``). All
          one-token continuations of an item are read this way, by a single request on the context. With a
          LoRA adapter every continuation is, because vLLM applies adapters to prompt log-probabilities
          wrongly (vllm-project/vllm issues 16668, 51594).
        - prompt log-probabilities: one request per longer continuation (``prompt_logprobs``). These may take
          the shared context from the prefix cache too, since only positions after it are needed: when the
          context and the continuations' common first tokens fill a cache block, the first continuation goes
          first and the others follow once it is done. vLLM reports how many prompt tokens came from the
          cache; the log-probabilities of those positions are taken from an earlier continuation of the same
          item with the same tokens up to them, and a request whose cache hit covers a position no such
          continuation has is recomputed without the cache. Each call starts with an empty prefix cache: blocks
          left by earlier calls could cover a continuation that no request of this call computes.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if self.prefix_caching:
            self.engine.reset_prefix_cache()
        final = RequestOutputKind.FINAL_ONLY
        stats = {"requests": 0, "cached_tokens": 0, "tokens_computed": 0, "recomputed": 0}
        conts = {index: continuations for index, _, continuations in items}
        contexts = {index: context for index, context, _ in items}
        scores = {index: [None] * len(continuations) for index, _, continuations in items}
        next_tokens: dict[int, tuple] = {}  # item -> (continuations read so, {prefix: (logprobs, chosen)})
        # item -> (context length, continuation tokens up to a position) -> (logprob, is top token). A context
        # length names the context exactly: every context of an item is a suffix of the same tokens.
        known: dict[int, dict[tuple, tuple]] = {}
        followers: dict[int, list[int]] = {}  # item -> continuations waiting for its first prompt request
        jobs: dict[str, tuple] = {}  # request id -> (item, prefix) or (item, continuation, context length, read cache)

        def submit(prompt: list[int], params: Any, job: tuple) -> None:
            stats["requests"] += 1
            jobs[self._add(TokensPrompt(prompt_token_ids=prompt), params)] = job

        def prompt_of(index: int, k: int) -> list[int]:
            cont = conts[index][k]
            return [*contexts[index][-(self.max_len - 1 - len(cont)) :], *cont]

        def read_next_tokens(index: int, ks: list[int]) -> None:
            wanted: dict[tuple, set[int]] = {}
            for k in ks:
                prompt, n = prompt_of(index, k), len(conts[index][k])
                for i in range(len(prompt) - n, len(prompt)):
                    wanted.setdefault(tuple(prompt[:i]), set()).add(prompt[i])
            next_tokens[index] = (ks, dict.fromkeys(wanted))
            for prefix, tokens in wanted.items():
                params = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False, output_kind=final,
                                        logprob_token_ids=sorted(tokens))
                submit(list(prefix), params, (index, prefix))

        def read_prompt(index: int, k: int, read_cache: bool = True) -> None:
            params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                                    output_kind=final, skip_reading_prefix_cache=not read_cache)
            prompt = prompt_of(index, k)
            submit(prompt, params, (index, k, len(prompt) - len(conts[index][k]), read_cache))

        for index, context, continuations in items:
            ks = range(len(continuations))
            by_prompt = [] if self.lora is not None else [k for k in ks if len(continuations[k]) > 1]
            by_next_token = [k for k in ks if k not in by_prompt]
            if by_next_token:
                read_next_tokens(index, by_next_token)
            if not by_prompt:
                continue
            known[index] = {}
            first, *others = by_prompt
            shared = min((len(os.path.commonprefix([prompt_of(index, first), prompt_of(index, k)])) for k in others),
                         default=0)
            if self.prefix_caching and shared >= self.block_size:
                followers[index] = others  # sent once the first is done, to find its blocks in the cache
                read_prompt(index, first)
            else:
                for k in by_prompt:
                    read_prompt(index, k)

        def finished(output: Any) -> None:
            job = jobs.pop(output.request_id)
            index, cached = job[0], output.num_cached_tokens or 0
            stats["cached_tokens"] += cached
            stats["tokens_computed"] += len(output.prompt_token_ids) - cached
            if len(job) == 2:  # next-token request
                sample = output.outputs[0]
                ks, answered = next_tokens[index]
                answered[job[1]] = (sample.logprobs[0], sample.token_ids[0])
                if any(v is None for v in answered.values()):
                    return
                del next_tokens[index]
                for k in ks:
                    prompt, n = prompt_of(index, k), len(conts[index][k])
                    steps = [(answered[tuple(prompt[:i])], prompt[i]) for i in range(len(prompt) - n, len(prompt))]
                    scores[index][k] = (
                        sum(logprobs[token].logprob for (logprobs, _), token in steps),
                        all(chosen == token for (_, chosen), token in steps),
                        n,
                    )
            else:
                _, k, n_ctx, read_cache = job
                ids, rows = output.prompt_token_ids, output.prompt_logprobs
                # Position i's log-probability is computed at position i - 1: this request computed those
                # after the cached ones.
                for i in range(max(n_ctx, cached + 1), len(ids)):
                    entry = rows[i][ids[i]]
                    known[index][(n_ctx, tuple(ids[n_ctx : i + 1]))] = (entry.logprob, entry.rank == 1)
                entries = [known[index].get((n_ctx, tuple(ids[n_ctx : i + 1]))) for i in range(n_ctx, len(ids))]
                if None in entries:
                    if not read_cache:
                        raise RuntimeError(f"vLLM served request {index} from its prefix cache against our wish")
                    stats["recomputed"] += 1
                    read_prompt(index, k, read_cache=False)
                    return
                scores[index][k] = (sum(e[0] for e in entries), all(e[1] for e in entries), len(entries))
                for other in followers.pop(index, ()):
                    read_prompt(index, other)
            if all(s is not None for s in scores[index]):
                known.pop(index, None)
                answer(index, tuple(scores.pop(index)))

        self._drain(finished)
        return stats

    def generate(self, items: list, answer: Callable[[int, Any], None]) -> dict[str, int]:
        """``items``: ``(index, context, max_tokens, stop, temperature, seed, n)``; the answer is the ``n``
        sampled texts in order (sample k has seed ``seed + k`` in vLLM)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        jobs = {}
        for index, context, max_tokens, stop, temperature, seed, n in items:
            params = SamplingParams(
                n=n, max_tokens=max_tokens, temperature=temperature, seed=seed if temperature > 0 else None,
                stop=list(stop) or None, skip_special_tokens=True, output_kind=RequestOutputKind.FINAL_ONLY,
            )
            context = list(context[-max(self.max_len - max_tokens, 1) :])
            jobs[self._add(TokensPrompt(prompt_token_ids=context), params)] = index

        stats = {"requests": len(jobs), "cached_tokens": 0, "tokens_computed": 0, "recomputed": 0}

        def finished(output: Any) -> None:
            samples = sorted(output.outputs, key=lambda sample: sample.index)
            cached, generated = output.num_cached_tokens or 0, sum(len(s.token_ids) for s in samples)
            stats["cached_tokens"] += cached
            stats["tokens_computed"] += len(output.prompt_token_ids) - cached + max(generated - len(samples), 0)
            answer(jobs.pop(output.request_id), [s.text for s in samples])

        self._drain(finished)
        return stats

    def _add(self, prompt: Any, params: Any) -> str:
        self._ids += 1
        request_id = f"r{self._ids}"
        self.engine.add_request(request_id, prompt, params, lora_request=self.lora)
        return request_id

    def _drain(self, finished: Callable[[Any], None]) -> None:
        """Step the engine until every request (including ones added while draining) has finished."""
        while self.engine.has_unfinished_requests():
            for output in self.engine.step():
                if output.finished:
                    finished(output)


def _describe_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def _exit(llm: Any) -> None:
    """Shut the engine down deliberately, then leave without running vLLM's exit hooks (they may abort)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        try:
            core.shutdown()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]))
