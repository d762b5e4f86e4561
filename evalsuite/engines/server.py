"""The server engine: OpenAI-compatible endpoints, such as vLLM's own server, several at once.

This is how an evaluation scales past one machine: start the model behind vLLM's OpenAI-compatible server
on as many machines as needed and list their URLs; requests are shared among them.

- Log-likelihoods: ``/v1/completions`` with the pipeline's token ids as the prompt (context + continuation),
  ``echo`` and ``logprobs``; the continuation's echoed log-probabilities are summed. One HTTP request per
  document carries all its choices.
- Generation: ``/v1/completions`` with the token ids of the (already chat-formatted, if asked) prompt.
- Failover: a request that meets HTTP 429, a 5xx, its deadline (the ``timeout`` option: seconds for the whole
  request, from connecting to the answer's last byte) or a lost connection is tried again, on its endpoint
  after a growing pause or on another one. An endpoint that keeps failing (a refused connection, or three
  rounds of failures in a row) is taken out of rotation: its queued and in-flight requests go to the
  others, and it is probed (its model list) after a growing cool-down until it comes back. The run stops
  only when no endpoint is left (one message naming each endpoint and its last error), or when one request
  failed ``max_retries + 1`` times. Every answer is reported through ``progress`` as it arrives, so a
  request cache keeps what was answered and a rerun resumes. Per-endpoint counts go to the run record.
- Prefix affinity: requests whose first ``affinity_tokens`` tokens agree go to the same endpoint (rendezvous
  hashing), so a few-shot prefix is computed by one server's prefix cache, not by every server's; an idle
  endpoint still takes work from a busy one. Scores do not depend on which endpoint answers.
- Adaptive concurrency per endpoint (AIMD): it grows while the latency per request token holds, and backs
  off on 429/503 (pausing for ``Retry-After``) and on rising latency, between ``min_concurrency`` and
  ``max_concurrency``.
- Every log-probability an endpoint answers is checked (:func:`~evalsuite.engines.base.check_logprobs`): a
  NaN, an infinity, a positive value or a non-number stops the run with an error naming the endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import random
import threading
import weakref
from collections import Counter, deque
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


# An endpoint is taken out of rotation after this many failures in a row (a refused connection: at once).
EJECT_AFTER = 3
DEFAULT_CONCURRENCY, DEFAULT_MAX_CONCURRENCY = 8, 64
# Requests whose prompts begin with the same this many tokens share a home endpoint (prefix affinity).
AFFINITY_TOKENS = 64


class _Failure(Exception):
    """A request that may succeed when tried again: a timeout, a lost connection, HTTP 429 or a 5xx."""

    def __init__(self, problem: str, *, unreachable: bool = False, status: int | None = None,
                 retry_after: str | None = None):
        super().__init__(problem)
        self.problem, self.unreachable, self.retry_after = problem, unreachable, retry_after
        self.overload = status in (429, 503)  # the server asks for less: back off
        self.counts = status != 429  # a 429 says the server is alive: it never takes an endpoint out


class Endpoint:
    """One server and what the engine knows of it: its health, its concurrency limit and its counts.

    ``timeout`` is a deadline for each whole request. httpx's own timeouts bound each socket read, so a server
    that trickles a byte now and then (in its headers or its body) would never time out; instead every
    request runs under ``asyncio.wait_for`` on the engine's event loop, which cancels it at the deadline
    wherever it is (connecting, sending, reading headers or body) and drops its connection.

    Health: failures in a row are counted by rounds (requests sent before the last counted failure fail with
    it, not after it), each followed by a pause of ``retry.delay(strikes)`` (or the server's
    ``Retry-After``). After :data:`EJECT_AFTER` of them, or one refused connection, the endpoint is out of
    rotation until a probe of its model list succeeds; probes follow the same growing pauses. A 429 pauses the
    endpoint but never takes it out.

    Concurrency (AIMD): ``limit`` requests at most in flight, between ``min_limit`` and ``max_limit``. Each
    answer that came while the limit was in use raises it by ``1/limit`` (one per round); it is halved on a
    429 or 503, and cut by a fifth when the smoothed latency per request token exceeds ``tolerance`` times its
    baseline (the lowest seen, drifting slowly up), at most once per round.
    """

    def __init__(self, url: str, *, api_key: str | None, timeout: float, concurrency: int, retry: RetryPolicy,
                 min_concurrency: int | None = None, max_concurrency: int | None = None,
                 latency_tolerance: float = 2.0):
        import httpx

        self.url = _base_url(url)
        self.retry, self.timeout, self.tolerance = retry, timeout, latency_tolerance
        self.min_limit, self.max_limit = min_concurrency or concurrency, max_concurrency or concurrency
        self.limit = float(concurrency)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One connection more than the limit: a probe never waits behind a request.
        self.client = httpx.AsyncClient(headers=headers, timeout=None,
                                        limits=httpx.Limits(max_connections=self.max_limit + 1))
        self.in_flight = 0
        self.out = False  # out of rotation: only a probe of its model list brings it back
        self.paused_until = 0.0  # event-loop time before which nothing is sent (a probe included)
        self.strikes = 0  # rounds of failures in a row (failed probes included)
        self.last_strike = self.last_decrease = float("-inf")
        self.last_error: str | None = None
        self.latency: float | None = None  # seconds per request token, smoothed
        self.baseline: float | None = None
        self.answered = self.failed = self.taken_out = 0

    async def send(self, method: str, path: str, payload: dict | None = None) -> Any:
        """One HTTP request's JSON answer; :class:`_Failure` for what may succeed later, EngineError otherwise."""
        import httpx

        try:
            response = await asyncio.wait_for(self.client.request(method, self.url + path, json=payload), self.timeout)
        except TimeoutError:
            raise _Failure(f"no complete answer within the {self.timeout:g} s deadline (engine option timeout)")
        except httpx.TransportError as exc:
            raise _Failure(f"{type(exc).__name__}: {exc}",
                           unreachable=isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))) from None
        if response.status_code < 400:
            try:
                return response.json()
            except ValueError:
                raise EngineError(f"endpoint {self.url}{path} answered with something other than JSON: "
                                  f"{response.text[:200]!r}") from None
        problem = f"HTTP {response.status_code}: {_error_text(response)}"
        if response.status_code != 429 and response.status_code < 500:
            raise EngineError(f"endpoint {self.url}{path} rejected the request ({problem})")
        raise _Failure(problem, status=response.status_code, retry_after=response.headers.get("retry-after"))

    def ready(self, now: float) -> bool:
        return not self.out and now >= self.paused_until and self.in_flight < int(self.limit)

    def succeeded(self, seconds: float, size: int, sent: float, now: float, filled: bool) -> None:
        """An answer that took ``seconds`` for a request of ``size`` tokens; ``filled``: it used the limit."""
        self.answered += 1
        self.strikes = 0
        latency = seconds / max(size, 1)
        self.latency = latency if self.latency is None else 0.8 * self.latency + 0.2 * latency
        self.baseline = self.latency if self.baseline is None else min(
            self.latency, self.baseline + 0.002 * (self.latency - self.baseline))
        if self.latency > self.tolerance * self.baseline:
            self._decrease(0.8, sent, now)
        elif filled:
            self.limit = min(self.max_limit, self.limit + 1 / self.limit)

    def struck(self, failure: _Failure, sent: float, now: float) -> None:
        """A request sent at ``sent`` failed (or a probe did): count it, pause, take the endpoint out if due."""
        self.failed += 1
        self.last_error = failure.problem
        if failure.overload:
            self._decrease(0.5, sent, now)
        if failure.unreachable:
            self.take_out()
        if sent <= self.last_strike:  # failed with the round already counted
            return
        self.last_strike = now
        self.strikes += 1
        self.paused_until = max(self.paused_until, now + self.retry.delay(self.strikes - 1, failure.retry_after))
        if failure.counts and self.strikes >= EJECT_AFTER:
            self.take_out()

    def take_out(self) -> None:
        if not self.out:
            self.out, self.taken_out = True, self.taken_out + 1

    def _decrease(self, factor: float, sent: float, now: float) -> None:
        if sent > self.last_decrease:  # once per round: the requests sent before it saw the old limit
            self.limit = max(self.min_limit, self.limit * factor)
            self.last_decrease = now

    def given_up(self, max_retries: int) -> bool:
        """Out of rotation, and failed more than ``max_retries`` times in a row since its last answer."""
        return self.out and self.strikes > max_retries

    def stats(self) -> dict[str, Any]:
        return {"answered": self.answered, "failed": self.failed, "taken_out": self.taken_out,
                "in_rotation": not self.out, "concurrency": int(self.limit), "last_error": self.last_error}


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The engine's event loop thread: runs until :func:`_close` stops it."""
    try:
        loop.run_forever()
    finally:
        loop.close()


def _close(clients: list[Any], loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_running():
        for client in clients:
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)


class ServerEngine:
    """Causal LM behind one or more OpenAI-compatible servers.

    ``endpoints``: URLs, a list or comma-separated (``http://host:8000`` or ``http://host:8000/v1``).
    ``model_name``: the served model's name (default: ``$EVALSUITE_SERVER_MODEL``, else the one model the
    first endpoint that answers lists). ``api_key`` (default ``$OPENAI_API_KEY``). ``tokenizer``: a model
    folder, alias or hub id whose tokenizer the server's model uses (default: the served model's name or root
    when that is a local folder or alias). ``timeout``: the deadline in seconds for each whole request
    (connecting, sending, and reading the entire answer). ``max_retries``: how often one request may fail
    before the run stops (a refused connection is not counted against it), and how many failures in a row
    make an endpoint that is out of rotation count as lost; waits grow from ``backoff`` seconds.

    Concurrency per endpoint adapts (see :class:`Endpoint`) from ``concurrency`` (default 8) between
    ``min_concurrency`` (default 1) and ``max_concurrency`` (default 64, or ``concurrency`` when larger);
    a ``concurrency`` given without either bound is fixed. ``latency_tolerance`` (default 2): how far the
    latency per request token may rise over its baseline before concurrency is cut. ``affinity`` (default
    on): requests whose first ``affinity_tokens`` tokens (default 64) agree go to the same endpoint while it
    is in rotation and has room, so they meet its prefix cache; off, requests go out in order to whichever
    endpoint has room. ``adapter``, ``dtype`` and ``batch_size`` belong to the server: serve an adapter with
    vLLM's ``--lora-modules NAME=DIR`` and pass ``model_name=NAME``.
    """

    name = "server"

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        model_name: str | None = None,
        api_key: str | None = None,
        tokenizer: str | None = None,
        concurrency: int | None = None,
        min_concurrency: int | None = None,
        max_concurrency: int | None = None,
        latency_tolerance: float = 2.0,
        affinity: bool = True,
        affinity_tokens: int = AFFINITY_TOKENS,
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
        start, low, high = _concurrency_bounds(concurrency, min_concurrency, max_concurrency)
        if max_retries < 0 or not timeout > 0:
            raise EngineError(f"max_retries must be at least 0 and timeout above 0 seconds, got {max_retries} and "
                              f"{timeout}")
        if not latency_tolerance > 1:
            raise EngineError(f"latency_tolerance must be above 1 (a factor over the baseline latency), got "
                              f"{latency_tolerance}")
        if affinity_tokens < 1:
            raise EngineError(f"affinity_tokens must be at least 1, got {affinity_tokens}")
        self.max_retries, self.affinity, self.affinity_tokens = int(max_retries), bool(affinity), int(affinity_tokens)
        retry = RetryPolicy(max_retries=self.max_retries, backoff=float(backoff))
        api_key = api_key or os.environ.get(API_KEY_ENV)
        self.endpoints = [Endpoint(u, api_key=api_key, timeout=float(timeout), concurrency=start, retry=retry,
                                   min_concurrency=low, max_concurrency=high,
                                   latency_tolerance=float(latency_tolerance)) for u in urls]
        # One event loop (its own thread) carries every endpoint's requests; callers wait on it.
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=_serve, args=(self._loop,), daemon=True, name="evalsuite-server-http").start()
        self._closer = weakref.finalize(self, _close, [e.client for e in self.endpoints], self._loop)

        self.model_name = model_name or os.environ.get(MODEL_ENV)
        self.max_model_len: int | None = None
        served = asyncio.run_coroutine_threadsafe(self._first_contact(), self._loop).result()
        first_url, first_models = served[0]
        self.model_name = self.model_name or _only_model(first_url, first_models)
        cards = []
        for url, models in served:
            if self.model_name not in models:
                raise EngineError(f"endpoint {url} does not serve model {self.model_name!r}; it serves: "
                                  f"{', '.join(models) or 'nothing'}")
            cards.append(models[self.model_name])
        self.root = cards[0].get("root")
        lengths = [int(c["max_model_len"]) for c in cards if c.get("max_model_len")]
        self.max_model_len = min(lengths) if lengths else None
        self.tokenizer, self.tokenizer_path = self._load_tokenizer(tokenizer)
        self._fingerprint: str | None = None

    async def _first_contact(self) -> list[tuple[str, dict[str, dict]]]:
        """(URL, model list) of the endpoints that answered: all are asked at once, and those that do not answer
        stay out of rotation (to be probed during the run). Only while none answers are they asked again."""
        while True:
            lists = await asyncio.gather(*(self._models(e) for e in self.endpoints))
            for endpoint, models in zip(self.endpoints, lists):
                if models is None:
                    endpoint.take_out()
                else:
                    endpoint.out = False
            if any(models is not None for models in lists):
                return [(e.url, models) for e, models in zip(self.endpoints, lists) if models is not None]
            if all(e.given_up(self.max_retries) for e in self.endpoints):
                raise self.none_left()

    async def _models(self, endpoint: Endpoint) -> dict[str, dict] | None:
        """The endpoint's model list (after its pause, if any), or None after counting its failure."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, endpoint.paused_until - loop.time()))
        sent = loop.time()
        try:
            body = await endpoint.send("GET", "/models")
        except _Failure as failure:
            endpoint.struck(failure, sent, loop.time())
            return None
        try:
            return {card["id"]: card for card in body["data"]}
        except (KeyError, TypeError):
            raise EngineError(f"endpoint {endpoint.url}/models answered without a model list: "
                              f"{str(body)[:200]}") from None

    async def probe(self, endpoint: Endpoint) -> None:
        """Back into rotation when the endpoint lists the model with a window as large as the run's."""
        loop = asyncio.get_running_loop()
        models = await self._models(endpoint)
        if models is None:
            return
        card = models.get(str(self.model_name))
        window = card.get("max_model_len") if card else None
        if card is None:
            problem = f"it no longer serves model {self.model_name!r}"
        elif self.max_model_len and window and int(window) < self.max_model_len:
            problem = f"it serves a {window}-token window, less than the run's {self.max_model_len}"
        else:
            endpoint.last_error, endpoint.out = None, False
            return
        endpoint.struck(_Failure(problem), loop.time(), loop.time())

    def none_left(self) -> EngineError:
        """The run's end when no endpoint is left: each one with its last error."""
        each = "; ".join(f"endpoint {e.url} failed {e.strikes} times (last: {e.last_error})" for e in self.endpoints)
        return EngineError(f"no endpoint is left: {each}; check that the servers are up (a slow one needs a larger "
                           "--engine-arg timeout=SECONDS), or leave the dead ones out of the list; a rerun resumes "
                           "from the request cache")

    @property
    def answered(self) -> Counter[str]:
        """Requests answered per endpoint URL, over all calls."""
        return Counter({e.url: e.answered for e in self.endpoints})

    def endpoint_stats(self) -> dict[str, dict[str, Any]]:
        """Per endpoint URL: requests answered, failed tries, times taken out of rotation, whether it is in
        rotation now, its concurrency limit now and its last error (the run record's ``endpoints``)."""
        return {e.url: e.stats() for e in self.endpoints}

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
        """POST every payload to ``path`` (where each goes: :class:`_Dispatch`); answers in request order.

        Answers are reported from the calling thread as they arrive (a request cache may write them to a
        database). When the run stops on an error, answers already in flight are still reported first.
        """
        if not payloads:
            return []
        arrived: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        dispatch = _Dispatch(self, payloads, path, parse, arrived)
        future = asyncio.run_coroutine_threadsafe(dispatch.run(), self._loop)
        answers: list[Any] = [None] * len(payloads)
        try:
            while not (future.done() and arrived.empty()):
                try:
                    index, answer = arrived.get(timeout=0.1)
                except queue.Empty:
                    continue
                answers[index] = answer
                if progress:
                    progress(index, answer)
            error = future.exception()
        finally:
            future.cancel()
        if error is not None:
            if isinstance(error, EngineError):
                raise error
            raise EngineError(f"the server engine failed: {type(error).__name__}: {error}") from error
        return answers


class _Dispatch:
    """One call's requests over the engine's endpoints, run on the engine's event loop.

    Each request has a home. With prefix affinity it is the first endpoint in rotation in the request's
    rendezvous order (endpoints ranked by a hash of the request's first ``affinity_tokens`` tokens with their
    URL), so requests sharing a prefix meet one server's prefix cache, and losing an endpoint moves only its
    own requests; a home's queue keeps requests of one prefix together. Without affinity all requests wait in
    one queue in request order. An endpoint with room takes from its own queue, then from the shared one, and
    only when both are empty takes the last request of the longest other queue (the far end from where that
    endpoint works). A failed request goes back to the front of its home's queue; one that failed
    ``max_retries + 1`` times stops the run. An endpoint taken out of rotation hands its queue to each
    request's next endpoint, and its requests in flight are recalled and queued again.
    """

    def __init__(self, engine: ServerEngine, payloads: list[dict], path: str,
                 parse: Callable[[str, dict, int], Any], arrived: queue.SimpleQueue):
        self.engine, self.endpoints = engine, engine.endpoints
        self.payloads, self.path, self.parse, self.arrived = payloads, path, parse, arrived
        self.left = len(payloads)
        self.error: BaseException | None = None
        self.tries: dict[int, list[tuple[str, str]]] = {}  # request -> (endpoint, problem) of each failed try
        self.flying: dict[asyncio.Task, tuple[Endpoint, int]] = {}
        self.recalled: set[asyncio.Task] = set()
        self.probing: dict[Endpoint, asyncio.Task] = {}
        self.queues: dict[Endpoint, deque[int]] = {e: deque() for e in self.endpoints}
        self.shared: deque[int] = deque()
        self.ranks: list[list[Endpoint]] | None = None
        self.wake = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        order: Sequence[int] = range(len(self.payloads))
        if self.engine.affinity and len(self.endpoints) > 1:
            prefixes = [_prefix(p, self.engine.affinity_tokens) for p in self.payloads]
            ranked = {key: _rendezvous(key, self.endpoints) for key in set(prefixes)}
            self.ranks = [ranked[key] for key in prefixes]
            order = sorted(order, key=lambda i: (prefixes[i], i))
        for index in order:
            self._enqueue(index)
        try:
            while self.left and self.error is None:
                for endpoint in self.endpoints:
                    if endpoint.out and endpoint not in self.probing:
                        self.probing[endpoint] = loop.create_task(self._probe(endpoint))
                if all(e.given_up(self.engine.max_retries) for e in self.endpoints):
                    self.error = self.engine.none_left()
                    break
                now = loop.time()
                for steal in (False, True):  # every endpoint's own work first
                    for endpoint in self.endpoints:
                        while endpoint.ready(now) and (index := self._take(endpoint, steal)) is not None:
                            self._launch(endpoint, index)
                self.wake.clear()
                pauses = [e.paused_until - now for e in self.endpoints if not e.out and e.paused_until > now]
                try:
                    await asyncio.wait_for(self.wake.wait(), min(pauses) if pauses else None)
                except TimeoutError:
                    pass
            if self.flying:  # answers on their way are still reported: a request cache keeps them
                await asyncio.wait(list(self.flying))
        finally:
            tasks = [*self.flying, *self.probing.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.error is not None:
            raise self.error

    def _enqueue(self, index: int, front: bool = False) -> None:
        home = next((e for e in self.ranks[index] if not e.out), None) if self.ranks else None
        waiting = self.queues[home] if home else self.shared
        if front:
            waiting.appendleft(index)
        else:
            waiting.append(index)

    def _take(self, endpoint: Endpoint, steal: bool) -> int | None:
        for waiting in (self.queues[endpoint], self.shared):
            if waiting:
                return waiting.popleft()
        if steal:
            longest = max(self.queues.values(), key=len)
            if longest:
                return longest.pop()
        return None

    def _launch(self, endpoint: Endpoint, index: int) -> None:
        filled = endpoint.in_flight + 1 >= int(endpoint.limit)
        endpoint.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._attempt(endpoint, index, filled))
        self.flying[task] = (endpoint, index)

    async def _attempt(self, endpoint: Endpoint, index: int, filled: bool) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        sent = loop.time()
        try:
            body = await endpoint.send("POST", self.path, self.payloads[index])
        except _Failure as failure:
            endpoint.struck(failure, sent, loop.time())
            if endpoint.out:
                self._hand_over(endpoint)
            if not failure.unreachable:  # a refused connection says nothing of the request
                self._charge(index, endpoint, failure.problem)
            if self.error is None:
                self._enqueue(index, front=True)
            return
        except asyncio.CancelledError:
            if task in self.recalled:  # its endpoint was taken out: another one answers it
                self._enqueue(index, front=True)
                return
            raise
        except EngineError as exc:
            self.error = self.error or exc
            return
        finally:
            endpoint.in_flight -= 1
            self.flying.pop(task, None)
            self.wake.set()
        endpoint.succeeded(loop.time() - sent, _size(self.payloads[index]), sent, loop.time(), filled)
        try:
            answer = self.parse(endpoint.url, body, index)
        except EngineError as exc:
            self.error = self.error or exc
            return
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            self.error = self.error or InvalidAnswer(f"endpoint {endpoint.url}", index, "an answer it cannot read "
                                                     f"({type(exc).__name__}: {exc})")
            return
        self.left -= 1
        self.arrived.put((index, answer))

    async def _probe(self, endpoint: Endpoint) -> None:
        try:
            await self.engine.probe(endpoint)
        except EngineError as exc:
            self.error = self.error or exc
        finally:
            del self.probing[endpoint]
            self.wake.set()

    def _hand_over(self, endpoint: Endpoint) -> None:
        """An endpoint just taken out: its queue goes to the requests' next endpoints, its requests in flight
        are recalled."""
        waiting = list(self.queues[endpoint])
        self.queues[endpoint].clear()
        for index in waiting:
            self._enqueue(index)
        for task, (owner, _) in self.flying.items():
            if owner is endpoint and task is not asyncio.current_task() and task not in self.recalled:
                self.recalled.add(task)
                task.cancel()

    def _charge(self, index: int, endpoint: Endpoint, problem: str) -> None:
        tries = self.tries.setdefault(index, [])
        tries.append((endpoint.url, problem))
        if len(tries) > self.engine.max_retries and self.error is None:
            count = Counter(url for url, _ in tries)
            last = dict(tries)
            each = "; ".join(f"endpoint {url} failed {n} times (last: {last[url]})" for url, n in count.items())
            self.error = EngineError(
                f"request {index} failed {len(tries)} times: {each}; check that the server is up (a slow one needs "
                "a larger --engine-arg timeout=SECONDS), or leave it out of the list; a rerun resumes from the "
                "request cache")


def _concurrency_bounds(concurrency: int | None, low: int | None, high: int | None) -> tuple[int, int, int]:
    """(start, min, max) concurrency per endpoint; a ``concurrency`` given without bounds is fixed."""
    if concurrency is not None and low is None and high is None:
        low = high = concurrency
    start = DEFAULT_CONCURRENCY if concurrency is None else concurrency
    low = 1 if low is None else low
    high = max(DEFAULT_MAX_CONCURRENCY, start) if high is None else high
    if min(start, low, high) < 1:
        raise EngineError(f"concurrency, min_concurrency and max_concurrency must be at least 1, got {concurrency}, "
                          f"{low} and {high}")
    if low > high:
        raise EngineError(f"min_concurrency {low} must not exceed max_concurrency {high}")
    if concurrency is None:
        start = min(max(start, low), high)
    elif not low <= start <= high:
        raise EngineError(f"concurrency {start} must lie between min_concurrency {low} and max_concurrency {high}")
    return start, low, high


def _prefix(payload: dict, tokens: int) -> bytes:
    """What requests must share to share a home: their first ``tokens`` prompt tokens (the first prompt's, for
    a request carrying several), or about as many characters' worth of a conversation."""
    prompt = payload.get("prompt")
    if prompt is None:
        return json.dumps(payload.get("messages"))[: 4 * tokens].encode()
    first = prompt[0] if prompt and isinstance(prompt[0], list) else prompt
    return repr(first[:tokens]).encode()


def _rendezvous(prefix: bytes, endpoints: list[Endpoint]) -> list[Endpoint]:
    """Endpoints in the order a prefix prefers them (rendezvous hashing): removing one moves only its share."""
    return sorted(endpoints, key=lambda e: hashlib.blake2b(prefix + e.url.encode(), digest_size=8).digest(),
                  reverse=True)


def _size(payload: dict) -> int:
    """A request's work in tokens, roughly: its prompts and what it may generate (latency is judged per token)."""
    prompt = payload.get("prompt")
    if prompt is None:
        return len(json.dumps(payload.get("messages"))) // 4 + int(payload.get("max_tokens", 0))
    prompts = prompt if prompt and isinstance(prompt[0], list) else [prompt]
    return sum(map(len, prompts)) + len(prompts) * int(payload.get("max_tokens", 0))


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
