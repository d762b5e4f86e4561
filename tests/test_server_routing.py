"""Several endpoints behind the server engine, on scripted HTTP servers on 127.0.0.1 (scripted_server.py):
failover (an endpoint dead from the start, one dying mid-run, none left), an endpoint rejoining after its
cool-down, per-endpoint counts in the run record, 429 with Retry-After, concurrency adapting to latency, and
requests that share a prefix going to one endpoint.
"""

from __future__ import annotations

import json
import time
import re
import socket

import pytest

from evalsuite import evaluate
from evalsuite.engines import LoglikelihoodRequest
from evalsuite.errors import EngineError
from scripted_server import engine, servers, tokenizer_dir  # noqa: F401 - fixtures


def documents(n: int) -> list[LoglikelihoodRequest]:
    """Requests of several lengths: the scripted answer depends on the prompt's length, so a request that
    went astray would show."""
    return [LoglikelihoodRequest(tuple(range(1, 3 + i % 7)) + (100 + i,), ((50, 51), (60,))) for i in range(n)]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there


def stats(eng, url: str) -> dict:
    return eng.endpoint_stats()[url + "/v1"]


def test_an_endpoint_dead_from_the_start_is_left_out(servers, tokenizer_dir):
    (a, _), (c, _) = servers(2)
    dead = closed_port_url()
    requests = documents(24)
    reference = engine(a, tokenizer_dir).loglikelihood(requests)
    eng = engine(f"{a},{dead},{c}", tokenizer_dir, concurrency=2)
    assert eng.loglikelihood(requests) == reference
    assert stats(eng, dead)["answered"] == 0 and not stats(eng, dead)["in_rotation"]
    assert "ConnectError" in stats(eng, dead)["last_error"]
    assert stats(eng, a)["answered"] + stats(eng, c)["answered"] == len(requests)
    assert stats(eng, a)["answered"] > 0 and stats(eng, c)["answered"] > 0


def test_an_endpoint_dying_mid_run_hands_its_requests_to_the_others(servers, tokenizer_dir):
    trio = servers(3)
    for _, script in trio:
        script.delay = 0.02
    doomed_url, doomed = trio[1]
    requests = documents(30)
    reference = engine(trio[0][0], tokenizer_dir).loglikelihood(requests)
    eng = engine(",".join(url for url, _ in trio), tokenizer_dir, concurrency=2)
    reported = []

    def kill_after_its_first_answers(index, answer):
        reported.append(index)
        if doomed.posts >= 2 and not doomed.down:
            doomed.kill()

    assert eng.loglikelihood(requests, progress=kill_after_its_first_answers) == reference
    assert sorted(reported) == list(range(len(requests)))
    counts = {url: stats(eng, url) for url, _ in trio}
    assert sum(c["answered"] for c in counts.values()) == len(requests)
    assert counts[doomed_url]["taken_out"] == 1 and counts[doomed_url]["failed"] >= 1
    assert not counts[doomed_url]["in_rotation"]
    assert all(counts[url]["in_rotation"] and counts[url]["answered"] > 0 for url, _ in (trio[0], trio[2]))


def test_when_no_endpoint_is_left_the_error_names_each(servers, tokenizer_dir):
    pair = servers(2)
    for _, script in pair:
        script.delay = 0.02
    (a, a_script), (b, b_script) = pair
    eng = engine(f"{a},{b}", tokenizer_dir, concurrency=2, max_retries=2)
    reported = []

    def kill_both_after_three(index, answer):
        reported.append(index)
        if len(reported) == 3:
            a_script.kill()
            b_script.kill()

    names_both = (rf"no endpoint is left: endpoint {a}/v1 failed \d+ times \(last: [^)]+\); "
                  rf"endpoint {b}/v1 failed \d+ times \(last: [^)]+\)")
    with pytest.raises(EngineError, match=names_both):
        eng.loglikelihood(documents(40), progress=kill_both_after_three)
    assert 3 <= len(reported) < 40  # what was answered was reported, so a request cache keeps it
    with pytest.raises(EngineError, match=names_both):
        engine(f"{a},{b}", tokenizer_dir, max_retries=1)  # dead from the start


def test_an_endpoint_out_of_rotation_is_tried_again_and_rejoins(servers, tokenizer_dir):
    (a, _), (b, b_script) = servers(2)
    b_script.down = True
    eng = engine(f"{a},{b}", tokenizer_dir, concurrency=1)
    eng.loglikelihood(documents(6))
    assert stats(eng, b)["answered"] == 0 and not stats(eng, b)["in_rotation"]
    b_script.down = False  # back up: its next probe finds it
    eng.loglikelihood(documents(20))
    assert stats(eng, b)["answered"] > 0 and stats(eng, b)["in_rotation"]


def test_the_run_record_counts_each_endpoint(servers, tokenizer_dir, data_dir, tmp_path):
    [(a, _)] = servers(1)
    dead = closed_port_url()
    result = evaluate(f"{a},{dead}", "copa", engine="server", engine_args={"tokenizer": tokenizer_dir}, limit=6,
                      data_dir=data_dir, output=tmp_path, progress=False, cache=False, n_boot=20)
    counts = result.record["endpoints"]
    assert counts[a + "/v1"]["answered"] == 6 and counts[dead + "/v1"]["answered"] == 0
    assert counts[dead + "/v1"]["taken_out"] >= 1 and "ConnectError" in counts[dead + "/v1"]["last_error"]
    assert json.loads((result.path / "results.json").read_text())["endpoints"] == counts


def test_429_waits_for_retry_after_and_lowers_concurrency(servers, tokenizer_dir):
    [(url, script)] = servers(1)
    requests = documents(24)
    reference = engine(url, tokenizer_dir, concurrency=1).loglikelihood(requests)
    script.capacity, script.retry_after, script.delay = 2, "0.4", 0.05
    eng = engine(url, tokenizer_dir, concurrency=8, min_concurrency=1, max_concurrency=16, max_retries=20)
    start = time.monotonic()
    assert eng.loglikelihood(requests) == reference
    first = script.rejected[0]
    # Beyond the first burst of 8 (some of it sent late on a busy machine), nothing is sent until Retry-After
    # has passed.
    assert sum(start <= t < first + 0.35 for t in script.times) <= 8
    assert stats(eng, url)["concurrency"] <= 4 and stats(eng, url)["failed"] == len(script.rejected)


def test_concurrency_rises_while_latency_holds_and_falls_when_it_climbs(servers, tokenizer_dir):
    (steady_url, steady), (loaded_url, loaded) = servers(2)
    steady.delay = 0.05  # long beside a busy machine's scheduling jitter
    loaded.delay = lambda in_flight: 0.004 * in_flight**2  # a server that slows down with load
    options = dict(concurrency=2, min_concurrency=1, max_concurrency=12)
    requests = [LoglikelihoodRequest((1, 2, 3, 100 + i), ((50, 51),)) for i in range(120)]
    engine(steady_url, tokenizer_dir, **options).loglikelihood(requests)
    assert steady.peak > 4
    eng = engine(loaded_url, tokenizer_dir, **options)
    eng.loglikelihood(requests)
    assert loaded.peak <= 5 and stats(eng, loaded_url)["concurrency"] <= 4


def test_requests_sharing_a_prefix_go_to_one_endpoint(servers, tokenizer_dir):
    pair = servers(2)
    for _, script in pair:
        script.delay = 0.01
    # 8 few-shot prefixes of 16 tokens, 4 documents each, in interleaved order.
    requests = [LoglikelihoodRequest(tuple(range(g * 20, g * 20 + 16)) + (200 + d,), ((50,), (60,)))
                for d in range(4) for g in range(8)]
    urls = ",".join(url for url, _ in pair)
    reference = engine(pair[0][0], tokenizer_dir).loglikelihood(requests)
    pair[0][1].requests.clear()
    assert engine(urls, tokenizer_dir, concurrency=1, affinity_tokens=16).loglikelihood(requests) == reference
    served = {}  # prefix -> the endpoints that answered it
    for k, (_, script) in enumerate(pair):
        for _, body in script.requests:
            served.setdefault(tuple(body["prompt"][0][:16]), set()).add(k)
    assert len(served) == 8 and set().union(*served.values()) == {0, 1}
    # Only where one endpoint ran out of its own work and took the other's last requests is a prefix split.
    assert sum(len(where) > 1 for where in served.values()) <= 2
    assert engine(urls, tokenizer_dir, concurrency=1, affinity=False).loglikelihood(requests) == reference


def test_routing_options_are_checked(tokenizer_dir):
    for options, problem in (({"min_concurrency": 4, "max_concurrency": 2}, "min_concurrency 4"),
                             ({"concurrency": 20, "max_concurrency": 8}, "concurrency 20"),
                             ({"affinity_tokens": 0}, "affinity_tokens"),
                             ({"latency_tolerance": 1.0}, "latency_tolerance")):
        with pytest.raises(EngineError, match=re.escape(problem)):
            engine(closed_port_url(), tokenizer_dir, **options)
