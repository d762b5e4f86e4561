"""The server engine's HTTP client against a scripted local HTTP server: retries, backoff, clear errors.

The engine against real vLLM servers is tested in test_engine_server.py; here the server's answers are
scripted (scripted_server.py) so that each failure mode (429, 5xx, timeouts, refused connections, 4xx)
happens on cue.
"""

from __future__ import annotations

import socket

import pytest

from evalsuite.engines import LoglikelihoodRequest, load_engine
from evalsuite.engines.server import Endpoint, RetryPolicy, ServerEngine
from evalsuite.errors import EngineError
from scripted_server import engine, request, server, tokenizer_dir  # noqa: F401 - fixtures


def test_scores_are_the_echoed_continuation_logprobs(server, tokenizer_dir):
    url, script = server
    eng = engine(url, tokenizer_dir)
    [scores] = eng.loglikelihood([request()])
    # prompt (1,2,3,50,51): positions 3 and 4 are the continuation
    assert [s.logprob for s in scores] == pytest.approx([-0.7, -0.3])
    assert [s.tokens for s in scores] == [2, 1]
    assert all(s.greedy for s in scores)
    assert eng.model_name == "tiny" and eng.max_model_len == 64
    assert eng.describe()["endpoints"] == [url + "/v1"]


def test_429_and_5xx_are_retried_then_answered(server, tokenizer_dir):
    url, script = server
    script.failures = [(429, 0), (503, 0), (500, 0)]
    eng = engine(url, tokenizer_dir, concurrency=1)
    seen = []
    answers = eng.loglikelihood([request(), request(4)], progress=lambda i, a: seen.append(i))
    assert script.posts == 5 and sorted(seen) == [0, 1] and len(answers) == 2


def test_timeouts_are_retried(server, tokenizer_dir):
    url, script = server
    script.failures = [(200, 1.0)]
    eng = engine(url, tokenizer_dir, timeout=0.3, concurrency=1)
    assert eng.loglikelihood([request()])[0][1].logprob == pytest.approx(-0.3)
    assert script.posts == 2


def test_persistent_failure_names_the_endpoint(server, tokenizer_dir):
    url, script = server
    script.failures = [(502, 0)] * 10
    eng = engine(url, tokenizer_dir, max_retries=2)
    with pytest.raises(EngineError, match=rf"endpoint {url}/v1 failed 3 times \(last: HTTP 502: scripted 502\)"):
        eng.loglikelihood([request()])


def test_client_errors_are_not_retried(server, tokenizer_dir):
    url, script = server
    script.failures = [(400, 0)]
    eng = engine(url, tokenizer_dir)
    with pytest.raises(EngineError, match="rejected the request.*HTTP 400: scripted 400"):
        eng.loglikelihood([request()])
    assert script.posts == 1


def test_unreachable_endpoint_is_named(tokenizer_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(EngineError, match=rf"endpoint http://127.0.0.1:{port}/v1 failed 2 times"):
        engine(f"http://127.0.0.1:{port}", tokenizer_dir, max_retries=1)


def test_api_key_model_name_and_truncation(server, tokenizer_dir, monkeypatch):
    url, script = server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    eng = engine(url, tokenizer_dir)
    long = LoglikelihoodRequest(tuple(range(100)), ((7, 8),))
    [[score]] = eng.loglikelihood([long])
    assert score.tokens == 2  # the context was cut to fit the served 64-token window
    assert script.auth == ["Bearer sk-test"]
    with pytest.raises(EngineError, match="does not serve model 'other'.*serves: tiny"):
        engine(url, tokenizer_dir, model_name="other")


def test_generation_cuts_at_stop_strings(server, tokenizer_dir):
    from evalsuite.engines import GenerationRequest

    url, _ = server
    eng = engine(url, tokenizer_dir)
    assert eng.generate([GenerationRequest((1, 2), 8, stop=(".",))]) == ["generated text"]


def test_misconfiguration_is_clear(tokenizer_dir):
    with pytest.raises(EngineError, match="not an http"):
        ServerEngine("localhost:8000", tokenizer=tokenizer_dir)
    with pytest.raises(EngineError, match="lora-modules"):
        ServerEngine("http://127.0.0.1:1", adapter="x")
    with pytest.raises(EngineError, match="does not accept the option.*max_model_len"):
        load_engine("server", "http://127.0.0.1:1", max_model_len=5)


def test_retry_delays_grow_and_respect_retry_after():
    policy = RetryPolicy(backoff=1.0, max_backoff=5.0)
    assert [policy.delay(a) <= 2**a for a in range(3)] == [True] * 3
    assert policy.delay(10) <= 5.0 and policy.delay(10) >= 2.5
    assert policy.delay(0, retry_after="3") == 3.0


def test_endpoint_url_forms():
    assert Endpoint("http://h:1/", api_key=None, timeout=1, concurrency=1, retry=RetryPolicy()).url == "http://h:1/v1"
    assert Endpoint("http://h:1/v1", api_key=None, timeout=1, concurrency=1, retry=RetryPolicy()).url == "http://h:1/v1"


def test_engine_args_from_the_command_line():
    from evalsuite.cli import _engine_args
    from evalsuite.errors import SpecError

    assert _engine_args(["concurrency=4", "model_name=my/model", "enable_prefix_caching=false", "x=1.5"]) == {
        "concurrency": 4, "model_name": "my/model", "enable_prefix_caching": False, "x": 1.5}
    with pytest.raises(SpecError, match="KEY=VALUE"):
        _engine_args(["novalue"])
    with pytest.raises(EngineError, match="engine 'hf' does not accept the option.*concurrency"):
        load_engine("hf", "smollm2", concurrency=4)
