"""Faults: running out of memory halves the batch; a flaky server is retried with backoff, then reported."""

from __future__ import annotations

import http.server
import random
import threading
import time

import httpx
import pytest
import torch

from evalsuite.engines import GenerationRequest, load_engine
from evalsuite.engines.retry import is_transient, retry_with_backoff
from evalsuite.errors import EngineError
from test_engine_hf import logprobs, random_requests
from tiny_models import tiny_llama

# --- out of memory -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return load_engine("hf", str(tiny_llama(tmp_path_factory.mktemp("tiny") / "model")), batch_size=8)


class MemoryLimit:
    """Makes the model raise torch.OutOfMemoryError for any forward pass over more than ``rows`` rows."""

    def __init__(self, engine, rows: int, error: type[Exception] = torch.OutOfMemoryError):
        self.rows, self.error, self.raised, self.sizes = rows, error, 0, []
        self.handle = engine.model.get_input_embeddings().register_forward_pre_hook(self.check)
        engine._rows_that_fit = None

    def check(self, module, args):
        size = args[0].shape[0]
        self.sizes.append(size)
        if size > self.rows:
            self.raised += 1
            raise self.error(f"CUDA out of memory. Tried to allocate 2.00 GiB for {size} rows")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_out_of_memory_halves_the_batch_and_keeps_the_scores(engine):
    requests = random_requests(4, 30)
    engine.batch_size = 1
    alone = logprobs(engine, requests)
    engine.batch_size = 8
    with MemoryLimit(engine, rows=2) as limit:
        split = logprobs(engine, requests)
    assert limit.raised == 2  # 8 -> 4 fail once each, then every later batch starts at the size that fitted
    assert max(s for s in limit.sizes if s <= 2) == 2
    for a, b in zip(alone, split):
        assert a == pytest.approx(b, abs=1e-5)


def test_out_of_memory_in_generation_is_retried_in_halves(engine):
    requests = [GenerationRequest(tuple(random.Random(i).randrange(256) for _ in range(5 + i)), 4, ()) for i in range(6)]
    engine.batch_size = 1
    alone = engine.generate(requests)
    engine.batch_size = 6
    with MemoryLimit(engine, rows=1) as limit:
        assert engine.generate(requests) == alone
    assert limit.raised >= 1


def test_out_of_memory_on_a_single_row_is_a_clear_error(engine):
    with MemoryLimit(engine, rows=0), pytest.raises(EngineError, match="out of memory on a single request.*--dtype"):
        engine.loglikelihood(random_requests(5, 3))


def test_other_errors_are_not_mistaken_for_out_of_memory(engine):
    with MemoryLimit(engine, rows=0, error=ValueError), pytest.raises(ValueError, match="CUDA out of memory"):
        engine.loglikelihood(random_requests(5, 3))


# --- retries against a real HTTP server ------------------------------------------------------------------


class FlakyServer:
    """A local HTTP server answering each request with the next scripted behaviour: a status or 'hang'."""

    def __init__(self, script: list):
        self.script, self.hits = list(script), 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.hits += 1
                action = owner.script.pop(0) if owner.script else 200
                if action == "hang":
                    time.sleep(0.5)
                    action = 200
                body = b'{"ok": true}' if action == 200 else b"overloaded"
                self.send_response(action)
                if action == 429:
                    self.send_header("Retry-After", "3")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/models"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def get(url: str) -> dict:
    response = httpx.get(url, timeout=0.2)
    response.raise_for_status()
    return response.json()


def test_timeouts_and_server_errors_are_retried_with_growing_delays():
    waits: list[float] = []
    with FlakyServer([503, "hang", 500, 502]) as server:
        answer = retry_with_backoff(lambda: get(server.url), what="GET /v1/models", sleep=waits.append,
                                    rng=random.Random(0))
    assert answer == {"ok": True} and server.hits == 5
    assert len(waits) == 4
    for attempt, wait in enumerate(waits):
        assert 0.5 * 0.5 * 2 ** attempt <= wait <= 0.5 * 2 ** attempt


def test_a_server_asking_to_wait_is_obeyed():
    waits: list[float] = []
    with FlakyServer([429]) as server:
        retry_with_backoff(lambda: get(server.url), what="GET", sleep=waits.append)
    assert waits == [3.0]


def test_a_server_that_keeps_failing_is_reported_after_the_last_attempt():
    waits: list[float] = []
    with FlakyServer([503] * 10) as server, pytest.raises(EngineError) as info:
        retry_with_backoff(lambda: get(server.url), what=f"GET {server.url}", attempts=3, sleep=waits.append)
    assert server.hits == 3 and len(waits) == 2
    message = str(info.value)
    assert f"GET {server.url} failed 3 times in a row" in message and "HTTP 503" in message


def test_client_errors_are_not_retried():
    with FlakyServer([404]) as server, pytest.raises(httpx.HTTPStatusError):
        retry_with_backoff(lambda: get(server.url), what="GET", sleep=lambda s: None)
    assert server.hits == 1


def test_a_refused_connection_is_transient():
    with FlakyServer([]) as server:
        url = server.url
    with pytest.raises(httpx.ConnectError) as info:
        get(url)
    assert is_transient(info.value)
    assert is_transient(TimeoutError()) and not is_transient(ValueError("bad request body"))
