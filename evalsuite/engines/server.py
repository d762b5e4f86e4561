"""The server engine: OpenAI-compatible endpoints, such as vLLM's own server, several at once.

This is how an evaluation scales past one machine: start the model behind vLLM's OpenAI-compatible server
on as many machines as needed and list their URLs; requests are shared among them.

- Log-likelihoods: ``/v1/completions`` with the pipeline's token ids as the prompt (context + continuation),
  ``echo`` and ``logprobs``; the continuation's echoed log-probabilities are summed. One HTTP request per
  document carries all its choices.
- Generation: ``/v1/completions`` with the token ids of the (already chat-formatted, if asked) prompt.
- Each endpoint has at most ``concurrency`` requests in flight; a request that meets HTTP 429, a 5xx, its
  deadline (the ``timeout`` option: seconds for the whole request, from connecting to the answer's last byte)
  or a connection error is retried with exponential backoff, after which the run stops with an error naming
  the endpoint. Every answer is reported through ``progress`` as it arrives, so a request cache keeps what
  was answered and a rerun resumes.
- Every log-probability an endpoint answers is checked (:func:`~evalsuite.engines.base.check_logprobs`): a
  NaN, an infinity, a positive value or a non-number stops the run with an error naming the endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import random
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from evalsuite.engines.base import (
    ContinuationScore,
    GenerationRequest,
    InvalidAnswer,
    LoglikelihoodRequest,
    Progress,
    check_logprobs,
    check_scores,
    truncate_stop,
)
from evalsuite.engines.models import ALIASES, fingerprint, resolve_model
from evalsuite.errors import EngineError

MODEL_ENV = "EVALSUITE_SERVER_MODEL"
API_KEY_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries after HTTP 429, 5xx, timeouts and connection errors: waits of ``backoff * 2**attempt``
    seconds (capped at ``max_backoff``, with jitter, or the server's ``Retry-After``)."""

    max_retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        return min(self.backoff * 2**attempt, self.max_backoff) * random.uniform(0.5, 1.0)


class _Stopped(Exception):
    """Another endpoint failed: give up quietly."""


class Endpoint:
    """One server: a connection pool of ``concurrency`` connections, the request deadline and the retry policy.

    ``timeout`` is a deadline for each whole request. httpx's own timeouts bound each socket read, so a server
    that trickles a byte now and then (in its headers or its body) would never time out; instead every
    request runs on an event loop of the endpoint's own (one thread) under ``asyncio.wait_for``, which
    cancels it at the deadline wherever it is (connecting, sending, reading headers or body) and drops its
    connection. The callers stay plain threads: each waits for its own request's result.
    """

    def __init__(self, url: str, *, api_key: str | None, timeout: float, concurrency: int, retry: RetryPolicy):
        import httpx

        self.url = _base_url(url)
        self.retry, self.timeout = retry, timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(headers=headers, timeout=None, limits=httpx.Limits(max_connections=concurrency))
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=_serve, args=(self._loop,), daemon=True, name=f"evalsuite-http-{self.url}").start()
        self._closer = weakref.finalize(self, _close_client, self.client, self._loop)

    def _send(self, method: str, path: str, payload: dict | None) -> Any:
        """One HTTP request with its whole answer, or TimeoutError at the deadline."""
        sending = asyncio.wait_for(self.client.request(method, self.url + path, json=payload), self.timeout)
        return asyncio.run_coroutine_threadsafe(sending, self._loop).result()

    def request(self, method: str, path: str, payload: dict | None = None, stop: threading.Event | None = None) -> Any:
        import httpx

        for attempt in range(self.retry.max_retries + 1):
            retry_after = None
            try:
                response = self._send(method, path, payload)
            except TimeoutError:
                problem = f"no complete answer within the {self.timeout:g} s deadline (engine option timeout)"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise EngineError(f"endpoint {self.url}{path} answered with something other than JSON: "
                                          f"{response.text[:200]!r}") from None
                problem = f"HTTP {response.status_code}: {_error_text(response)}"
                if response.status_code != 429 and response.status_code < 500:
                    raise EngineError(f"endpoint {self.url}{path} rejected the request ({problem})")
                retry_after = response.headers.get("retry-after")
            if attempt == self.retry.max_retries:
                break
            delay = self.retry.delay(attempt, retry_after)
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                raise _Stopped
        raise EngineError(
            f"endpoint {self.url} failed {self.retry.max_retries + 1} times (last: {problem}); check that the "
            "server is up (a slow one needs a larger --engine-arg timeout=SECONDS), or leave it out of the list; "
            "a rerun resumes from the request cache"
        )

    def close(self) -> None:
        self._closer()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """An endpoint's event loop thread: runs until :func:`_close_client` stops it."""
    try:
        loop.run_forever()
    finally:
        loop.close()


def _close_client(client: Any, loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_running():
        asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)


class ServerEngine:
    """Causal LM behind one or more OpenAI-compatible servers.

    ``endpoints``: URLs, a list or comma-separated (``http://host:8000`` or ``http://host:8000/v1``).
    ``model_name``: the served model's name (default: ``$EVALSUITE_SERVER_MODEL``, else the one model the
    first endpoint lists). ``api_key`` (default ``$OPENAI_API_KEY``). ``tokenizer``: a model folder, alias or
    hub id whose tokenizer the server's model uses (default: the served model's name or root when that is
    a local folder or alias). ``concurrency``: requests in flight per endpoint. ``timeout``: the deadline in
    seconds for each whole request (connecting, sending, and reading the entire answer), after which it is
    retried ``max_retries`` times with waits from ``backoff`` seconds up. ``adapter``, ``dtype`` and
    ``batch_size`` belong to the server: serve an adapter with vLLM's ``--lora-modules NAME=DIR`` and pass
    ``model_name=NAME``.
    """

    name = "server"

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        model_name: str | None = None,
        api_key: str | None = None,
        tokenizer: str | None = None,
        concurrency: int = 8,
        timeout: float = 300.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        adapter: str | None = None,
        dtype: str | None = None,
        batch_size: int | None = None,
    ):
        del dtype, batch_size  # decided by the server
        if adapter:
            raise EngineError("the server engine evaluates what the server serves: serve the adapter with vLLM's "
                              "--lora-modules NAME=DIR and pass the engine option model_name=NAME")
        urls = [u.strip() for u in (endpoints.split(",") if isinstance(endpoints, str) else endpoints) if u.strip()]
        if not urls:
            raise EngineError("the server engine needs at least one endpoint URL (--model http://host:port)")
        if concurrency < 1 or max_retries < 0 or not timeout > 0:
            raise EngineError(f"concurrency must be at least 1, max_retries at least 0 and timeout above 0 seconds, "
                              f"got {concurrency}, {max_retries} and {timeout}")
        self.concurrency = int(concurrency)
        retry = RetryPolicy(max_retries=int(max_retries), backoff=float(backoff))
        api_key = api_key or os.environ.get(API_KEY_ENV)
        self.endpoints = [Endpoint(u, api_key=api_key, timeout=float(timeout), concurrency=self.concurrency,
                                   retry=retry) for u in urls]
        served = {e.url: _models(e) for e in self.endpoints}
        first = self.endpoints[0].url
        self.model_name = model_name or os.environ.get(MODEL_ENV) or _only_model(first, served[first])
        cards = []
        for url, models in served.items():
            if self.model_name not in models:
                raise EngineError(f"endpoint {url} does not serve model {self.model_name!r}; it serves: "
                                  f"{', '.join(models) or 'nothing'}")
            cards.append(models[self.model_name])
        self.root = cards[0].get("root")
        lengths = [int(c["max_model_len"]) for c in cards if c.get("max_model_len")]
        self.max_model_len = min(lengths) if lengths else None
        self.tokenizer, self.tokenizer_path = self._load_tokenizer(tokenizer)
        self.answered: Counter[str] = Counter()  # requests answered per endpoint URL, over all calls
        self._fingerprint: str | None = None

    def _load_tokenizer(self, explicit: str | None) -> tuple[Any, str | None]:
        """The tokenizer the pipeline encodes with: ``explicit``, else the served model's own."""
        return _tokenizer(explicit, [self.model_name, self.root])

    # -- protocol -----------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        if self._fingerprint is None:
            local = next((p for p in (_local_model(self.model_name), _local_model(self.root)) if p), None)
            # Weights are fingerprinted when the served model is a folder here; otherwise its name stands in.
            self._fingerprint = fingerprint(local) if local else hashlib.sha256(
                f"{self.model_name}\0{self.root}".encode()).hexdigest()
        return {
            "engine": self.name,
            "model_path": self.model_name,
            "served_root": self.root,
            "model_sha256": self._fingerprint,
            "tokenizer": self.tokenizer_path,
            "endpoints": [e.url for e in self.endpoints],
            "dtype": None,  # the server's choice
            "device": "server",
            "max_length": self.max_model_len,
        }

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: Progress | None = None
    ) -> list[tuple[ContinuationScore, ...]]:
        payloads, context_lengths = [], []
        for index, request in enumerate(requests):
            if not request.continuations or any(len(c) == 0 for c in request.continuations):
                raise EngineError(f"request {index} has an empty continuation: nothing to score")
            prompts, lengths = [], []
            for cont in request.continuations:
                context = request.context
                if self.max_model_len is not None:
                    room = self.max_model_len - 1 - len(cont)  # the server also samples one token
                    if room < 1:
                        raise EngineError(f"request {index}: a continuation of {len(cont)} tokens does not fit "
                                          f"the served model's {self.max_model_len}-token window")
                    context = context[-room:]
                prompts.append([*context, *cont])
                lengths.append(len(context))
            payloads.append({"model": self.model_name, "prompt": prompts, "max_tokens": 1, "temperature": 0,
                             "echo": True, "logprobs": 1})
            context_lengths.append(lengths)

        def parse(url: str, body: dict, index: int) -> tuple[ContinuationScore, ...]:
            choices = _choices(url, body, len(payloads[index]["prompt"]))
            source = f"endpoint {url}"
            scores = []
            for choice, prompt, n_ctx in zip(choices, payloads[index]["prompt"], context_lengths[index]):
                logprobs = choice.get("logprobs") or {}
                values, tops = logprobs.get("token_logprobs") or [], logprobs.get("top_logprobs") or []
                if len(values) < len(prompt) or len(tops) < len(prompt):
                    raise EngineError(f"endpoint {url} did not echo the prompt's log-probabilities "
                                      "(it needs 'echo' with 'logprobs' on /v1/completions, as vLLM's server has)")
                positions = range(n_ctx, len(prompt))
                if not all(isinstance(tops[i], dict) and tops[i] for i in positions):
                    raise InvalidAnswer(source, index, "missing top log-probabilities (each needs a token-to-number "
                                        "mapping)")
                # Each token's value is checked, not only their sum, which a positive one could hide in.
                check_logprobs((values[i] for i in positions), source, index)
                check_logprobs((v for i in positions for v in tops[i].values()), source, index)
                total = sum(values[i] for i in positions)
                # The continuation token is the argmax when no top token beats it.
                greedy = all(values[i] >= max(tops[i].values()) for i in positions)
                scores.append(ContinuationScore(float(total), greedy, len(positions)))
            return check_scores(scores, source, index)

        return self._run(payloads, parse, progress)

    def generate(self, requests: Sequence[GenerationRequest], progress: Progress | None = None) -> list[str]:
        payloads = []
        for index, r in enumerate(requests):
            context = r.context
            if self.max_model_len is not None:
                self._check_room(index, r.max_tokens)
                context = context[-(self.max_model_len - r.max_tokens) :]
            payload = {"model": self.model_name, "prompt": list(context), "max_tokens": r.max_tokens,
                       "temperature": r.temperature}
            if r.stop:
                payload["stop"] = list(r.stop)
            if r.temperature > 0:
                payload["seed"] = r.seed
            payloads.append(payload)

        def parse(url: str, body: dict, index: int) -> str:
            return truncate_stop(str(_choices(url, body, 1)[0].get("text", "")), requests[index].stop)

        return self._run(payloads, parse, progress)

    def _check_room(self, index: int, max_tokens: int) -> None:
        if self.max_model_len is not None and max_tokens >= self.max_model_len:
            raise EngineError(f"request {index}: max_tokens {max_tokens} leaves no room for the prompt in the served "
                              f"model's {self.max_model_len}-token window")

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()

    def __enter__(self) -> "ServerEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- spreading requests over endpoints -----------------------------------------------------------
    def _run(self, payloads: list[dict], parse: Callable[[str, dict, int], Any], progress: Progress | None,
             path: str = "/completions") -> list:
        """POST every payload to ``path`` on whichever endpoint is free; answers in request order.

        ``concurrency`` threads per endpoint take requests from one queue, so a faster server takes more.
        Answers are reported from the calling thread (a request cache may write them to a database). When an
        endpoint fails for good, no new request is started; answers already in flight are still reported,
        then the endpoint's error is raised.
        """
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(payloads)):
            todo.put(index)
        results: queue.SimpleQueue[tuple[int, str, Any, BaseException | None]] = queue.SimpleQueue()
        stop = threading.Event()

        def work(endpoint: Endpoint) -> None:
            while not stop.is_set():
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    body = endpoint.request("POST", path, payloads[index], stop)
                    try:
                        answer = parse(endpoint.url, body, index)
                    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
                        raise InvalidAnswer(f"endpoint {endpoint.url}", index,
                                            f"an answer it cannot read ({type(exc).__name__}: {exc})") from None
                    results.put((index, endpoint.url, answer, None))
                except _Stopped:
                    return
                except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                    stop.set()
                    results.put((index, endpoint.url, None, exc))
                    return

        threads = [threading.Thread(target=work, args=(e,), daemon=True, name=f"evalsuite-server-{e.url}")
                   for e in self.endpoints for _ in range(min(self.concurrency, len(payloads)))]
        for thread in threads:
            thread.start()
        answers: list[Any] = [None] * len(payloads)
        error: BaseException | None = None
        try:
            while any(t.is_alive() for t in threads) or not results.empty():
                try:
                    index, url, answer, exc = results.get(timeout=0.2)
                except queue.Empty:
                    continue
                if exc is not None:
                    error = error or exc
                    continue
                answers[index] = answer
                self.answered[url] += 1
                if progress:
                    progress(index, answer)
        finally:
            stop.set()
        if error is not None:
            if isinstance(error, EngineError):
                raise error
            raise EngineError(f"the server engine failed: {type(error).__name__}: {error}") from error
        return answers


def _base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise EngineError(f"endpoint {url!r} is not an http:// or https:// URL")
    return url if url.endswith("/v1") else url + "/v1"


def _error_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:300]


def _models(endpoint: Endpoint) -> dict[str, dict]:
    body = endpoint.request("GET", "/models")
    try:
        return {card["id"]: card for card in body["data"]}
    except (KeyError, TypeError):
        raise EngineError(f"endpoint {endpoint.url}/models answered without a model list: {str(body)[:200]}") from None


def _only_model(url: str, models: dict[str, dict]) -> str:
    if len(models) == 1:
        return next(iter(models))
    raise EngineError(f"endpoint {url} serves {len(models)} models ({', '.join(models) or 'none'}): name one "
                      f"with the engine option model_name=NAME or ${MODEL_ENV}")


def _choices(url: str, body: Any, expected: int) -> list[dict]:
    try:
        choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
    except (KeyError, TypeError, AttributeError):
        raise EngineError(f"endpoint {url} answered without choices: {str(body)[:200]}") from None
    if len(choices) != expected:
        raise EngineError(f"endpoint {url} answered {len(choices)} choices for {expected} prompts")
    return choices


def _local_model(name: str | None) -> str | None:
    """The local folder of a packaged alias or an existing model folder; None for anything else."""
    if not name:
        return None
    if name.lower() in ALIASES or Path(name).expanduser().is_dir():
        try:
            return resolve_model(name)
        except EngineError:
            return None
    return None


def _tokenizer(explicit: str | None, served: list[str | None]) -> tuple[Any, str]:
    """The tokenizer the pipeline encodes with: ``explicit``, else the served model's own when it is local."""
    from transformers import AutoTokenizer

    if explicit:
        candidates = [_local_model(explicit) or explicit]
    else:
        candidates = [p for p in map(_local_model, served) if p] or [s for s in served[:1] if s]
    for candidate in candidates:
        try:
            return AutoTokenizer.from_pretrained(candidate), candidate
        except Exception as exc:  # noqa: BLE001
            problem = f"{type(exc).__name__}: {exc}"
    raise EngineError(
        f"cannot load a tokenizer for the served model {served[0]!r} ({problem if candidates else 'no candidate'}); "
        "pass --tokenizer with a model folder, alias or hub id that has the served model's tokenizer"
    )
