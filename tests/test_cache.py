"""The request cache: keys, the cached engine, a changed model, the cache command, and resuming killed runs."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from evalsuite import cli
from evalsuite.api import evaluate, load_tasks
from evalsuite.pipeline.render import render_instances
from evalsuite.data import load_split
from evalsuite.engines import ContinuationScore, GenerationRequest, LoglikelihoodRequest, encode_choices, load_engine
from evalsuite.engines.cache import CachedEngine, RequestCache, request_key
from evalsuite.errors import EngineError
from evalsuite.prompting import PromptRenderer
from evalsuite.results import RunWriter, find_runs, read_run, read_samples
from tiny_models import tiny_llama

ROOT = Path(__file__).resolve().parents[1]
DESCRIBED = {"engine": "hf", "model_path": "/models/m", "model_sha256": "a" * 64, "adapter_sha256": None,
             "dtype": "float32", "device": "cpu", "max_length": 512}


# --- keys ------------------------------------------------------------------------------------------------


def test_greedy_answers_are_shared_by_engines_and_keyed_by_weights_adapter_and_dtype():
    scored = LoglikelihoodRequest((1, 2, 3), ((4,), (5, 6)))
    greedy = GenerationRequest((1, 2, 3), 16, ("\n",), 0.0, seed=1)
    for request in (scored, greedy):
        key = request_key(request, DESCRIBED)
        other_engine = {**DESCRIBED, "engine": "vllm", "device": "cuda", "model_path": "/elsewhere/m"}
        assert request_key(request, other_engine) == key
        for change in ({"model_sha256": "b" * 64}, {"adapter_sha256": "c" * 64}, {"dtype": "bfloat16"}):
            assert request_key(request, {**DESCRIBED, **change}) != key, change
    assert request_key(replace(greedy, seed=2), DESCRIBED) == request_key(greedy, DESCRIBED)
    for changed in (replace(greedy, max_tokens=17), replace(greedy, stop=()), replace(greedy, context=(1, 2)),
                    replace(greedy, temperature=0.5)):
        assert request_key(changed, DESCRIBED) != request_key(greedy, DESCRIBED)
    assert request_key(LoglikelihoodRequest((1, 2, 3), ((4,), (5, 7))), DESCRIBED) != request_key(scored, DESCRIBED)
    assert request_key(LoglikelihoodRequest((1, 2), ((3, 4), (5, 6))), DESCRIBED) != request_key(scored, DESCRIBED)
    assert request_key(greedy, DESCRIBED) != request_key(LoglikelihoodRequest((1, 2, 3), ()), DESCRIBED)


def test_sampled_generations_are_cached_per_seed_and_engine():
    sampled = GenerationRequest((1, 2), 8, (), 0.7, seed=1)
    key = request_key(sampled, DESCRIBED)
    assert request_key(replace(sampled, seed=2), DESCRIBED) != key
    assert request_key(sampled, {**DESCRIBED, "engine": "vllm"}) != key
    assert request_key(sampled, {**DESCRIBED, "device": "cuda"}) == key


def test_the_window_matters_only_to_requests_longer_than_it():
    short = LoglikelihoodRequest(tuple(range(100)), ((1,),))
    long = LoglikelihoodRequest(tuple(range(600)), ((1,),))
    wider = {**DESCRIBED, "max_length": 2048}
    assert request_key(short, wider) == request_key(short, DESCRIBED)
    assert request_key(long, wider) != request_key(long, DESCRIBED)


# --- the cached engine -----------------------------------------------------------------------------------


class CountingEngine:
    """Answers that depend on the request alone; records what it computes; can be interrupted mid-call."""

    tokenizer = None

    def __init__(self, interrupt_after: int | None = None):
        self.computed: list = []
        self.interrupt_after = interrupt_after

    def describe(self):
        return dict(DESCRIBED)

    def _compute(self, requests, progress, answer_of):
        answers = []
        for index, request in enumerate(requests):
            if len(self.computed) == self.interrupt_after:
                raise KeyboardInterrupt
            self.computed.append(request)
            answers.append(answer_of(request))
            if progress:
                progress(index, answers[-1])
        return answers

    def loglikelihood(self, requests, progress=None):
        return self._compute(requests, progress, lambda r: tuple(
            ContinuationScore(-sum(c) / 7, sum(c) % 2 == 0, len(c)) for c in r.continuations))

    def generate(self, requests, progress=None):
        return self._compute(requests, progress, lambda r: "" if r.context[0] == 0 else f"out {r.context}")


def requests(n: int, offset: int = 0) -> list[LoglikelihoodRequest]:
    return [LoglikelihoodRequest((offset + i, 7), ((i % 5 + 1,), (2, i + 3))) for i in range(n)]


def test_answers_come_back_from_the_cache_unchanged(tmp_path):
    asked = requests(20)
    first, seen = CountingEngine(), {}
    with RequestCache(tmp_path) as cache:
        answers = CachedEngine(first, cache).loglikelihood(asked, progress=lambda i, a: seen.setdefault(i, a))
    assert len(first.computed) == 20 and seen == dict(enumerate(answers))

    again, seen_again = CountingEngine(), {}
    with RequestCache(tmp_path) as cache:
        cached = CachedEngine(again, cache)
        assert cached.loglikelihood(asked, progress=lambda i, a: seen_again.setdefault(i, a)) == answers
        assert cached.loglikelihood(asked[:5] + requests(3, offset=100)) == answers[:5] + first.loglikelihood(requests(3, 100))
        assert cached.summary() == {"path": str(tmp_path / "requests.sqlite"), "requests": 28, "hits": 25, "computed": 3}
    assert again.computed == requests(3, offset=100) and seen_again == seen


def test_generations_round_trip_and_duplicates_are_computed_once(tmp_path):
    asked = [GenerationRequest((i % 3, 1), 4) for i in range(9)]  # three distinct requests, one answering ""
    engine = CountingEngine()
    with RequestCache(tmp_path) as cache:
        answers = CachedEngine(engine, cache).generate(asked)
        assert answers == ["" if i % 3 == 0 else f"out {(i % 3, 1)}" for i in range(9)]
        assert len(engine.computed) == 3 and len(cache) == 3
        assert CachedEngine(CountingEngine(interrupt_after=0), cache).generate(asked) == answers


def test_every_answer_is_stored_as_soon_as_it_is_computed(tmp_path):
    asked = requests(12)
    with RequestCache(tmp_path) as cache, pytest.raises(KeyboardInterrupt):
        CachedEngine(CountingEngine(interrupt_after=5), cache).loglikelihood(asked)
    resumed = CountingEngine()
    with RequestCache(tmp_path) as cache:
        CachedEngine(resumed, cache).loglikelihood(asked)
    assert resumed.computed == asked[5:]


def test_an_engine_without_a_weights_fingerprint_is_not_cached(tmp_path):
    class Anonymous(CountingEngine):
        def describe(self):
            return {"engine": "anonymous"}

    with RequestCache(tmp_path) as cache, pytest.raises(EngineError, match="no weights fingerprint"):
        CachedEngine(Anonymous(), cache)


# --- real models -----------------------------------------------------------------------------------------


def test_a_changed_model_file_misses_the_cache(tmp_path, data_dir, request_cache_dir):
    folder = tiny_llama(tmp_path / "model", seed=0)
    options = dict(tasks="copa", limit=8, batch_size=4, data_dir=data_dir, output=tmp_path / "out", progress=False)

    first = evaluate(str(folder), **options)
    again = evaluate(str(folder), **options)
    assert first.record["cache"]["computed"] == 8 and again.record["cache"] == {**first.record["cache"], "hits": 8, "computed": 0}
    assert read_samples(again.path) == read_samples(first.path)

    tiny_llama(folder, seed=1)  # new weights under the same path
    changed = evaluate(str(folder), **options)
    assert changed.record["model"]["model_sha256"] != first.record["model"]["model_sha256"]
    assert changed.record["cache"]["hits"] == 0 and changed.record["cache"]["computed"] == 8
    old, new = read_samples(first.path), read_samples(changed.path)
    assert all(a["logprobs"] != b["logprobs"] for a, b in zip(old, new))

    with RequestCache(request_cache_dir) as cache:
        assert sorted(m.entries for m in cache.models()) == [8, 8]


def test_no_cache_means_no_database(tmp_path, data_dir, tiny_model, request_cache_dir):
    run = evaluate(str(tiny_model), "copa", limit=3, data_dir=data_dir, output=tmp_path, progress=False, cache=False)
    assert run.record["cache"] is None
    assert not (request_cache_dir / "requests.sqlite").exists()


def test_cache_command_reports_and_clears_entries(tmp_path, capsys):
    with RequestCache(tmp_path) as cache:
        for i in range(5):
            cache.put(f"k{i}", "generation", "1" * 64, "/models/one", f"answer {i}")
        for i in range(3):
            cache.put(f"j{i}", "generation", "2" * 64, "/models/two", f"answer {i}")

    def run(*args: str) -> str:
        assert cli.main(["cache", *args, "--cache-dir", str(tmp_path)]) == 0
        return capsys.readouterr().out

    info = json.loads(run("info", "--json"))
    assert info["entries"] == 8 and info["size_bytes"] > 0
    assert [(m["model"], m["entries"]) for m in info["models"]] == [("/models/one", 5), ("/models/two", 3)]
    assert "/models/one" in run("info") and "8 entries" in run("info")
    assert "deleted 0 entries" in run("clear", "--older-than", "1")
    assert "deleted 3 entries" in run("clear", "--model", "22222222")
    assert "deleted 5 entries" in run("clear", "--model", "/models/one")
    assert json.loads(run("info", "--json"))["entries"] == 0


# --- killed and resumed runs -----------------------------------------------------------------------------

def test_a_finished_run_removes_only_abandoned_partial_folders_of_its_configuration(tmp_path):
    config = "tiny-zero-shot-43c5b979"
    dead = tmp_path / f"20261122-170000-{config}.partial"
    dead.mkdir()
    (dead / "samples.jsonl").write_text('{"doc_id": 0}\n')
    empty = tmp_path / f"20261122-170001-{config}-2.partial"  # killed before it wrote a file
    empty.mkdir()
    other = tmp_path / "20261122-170002-tiny-zero-shot-0badc0de.partial"
    other.mkdir()
    (other / "samples.jsonl").write_text("")
    alive = RunWriter(tmp_path, f"20261122-180000-{config}")  # same configuration, still running

    finished = RunWriter(tmp_path, f"20261122-180000-{config}").finish({"run_id": "x"})
    assert finished.name == f"20261122-180000-{config}-2"
    assert not dead.exists() and not empty.exists()
    assert other.exists() and alive.partial.exists()
    assert alive.finish({"run_id": "y"}).name == f"20261122-180000-{config}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"20261122-180000-{config}", finished.name, other.name])


TASKS, LIMIT = ("copa", "piqa"), 60
MARGIN = 40  # answers still missing when a signal is sent: a fast model cannot finish before it lands
COUNTS = re.compile(r"(\d+) loglikelihood requests: (\d+) from the cache, (\d+) to compute")


def stored_keys(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with sqlite3.connect(db, timeout=60) as connection:
        if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'answers'").fetchone():
            return set()  # the run is creating the database
        return {key for (key,) in connection.execute("SELECT key FROM answers")}


def keys_by_task(model: Path, data_dir: Path) -> dict[str, list[str]]:
    """The cache key of every request the run makes, per task, built the way the pipeline builds them."""
    engine = load_engine("hf", str(model))
    described, catalog = engine.describe(), load_tasks()
    keys = {}
    for name in TASKS:
        task = catalog[name]
        instances, _, _ = render_instances(task, PromptRenderer(task, task.prompts[0]), lambda t, s: load_split(t, s, data_dir),
                                     shots=0, seed=0, limit=LIMIT, sampler=None)
        keys[name] = [request_key(encode_choices(engine.tokenizer, i.context, i.continuations), described)
                      for i in instances]
    return keys


def without_timings(record: dict) -> list[dict]:
    return [{k: v for k, v in ev.items() if k not in ("timing_s", "docs_per_s")} for ev in record["evaluations"]]


def test_a_run_killed_again_and_again_resumes_to_the_same_results(tmp_path, data_dir, tiny_model):
    """SIGKILL (and once Ctrl-C) a real run at random points, rerun it until it finishes.

    Every restart sends to the model exactly the requests not yet in the cache, and the finished run
    equals an uninterrupted one, sample for sample (batch size 1, so batch-mates cannot move a score).
    """
    keys = keys_by_task(tiny_model, data_dir)
    everything = {k for task_keys in keys.values() for k in task_keys}
    cache, output, db = tmp_path / "cache", tmp_path / "results", tmp_path / "cache" / "requests.sqlite"
    command = [sys.executable, "-m", "evalsuite", "run", "--model", str(tiny_model), "--tasks", ",".join(TASKS),
               "--limit", str(LIMIT), "--batch-size", "1", "--no-progress", "--data-dir", str(data_dir),
               "--output", str(output), "--cache-dir", str(cache)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EVALSUITE_CACHE_DIR": str(tmp_path / "unused")}
    rng = random.Random(8)
    interruptions = [signal.SIGKILL, signal.SIGKILL, signal.SIGINT, signal.SIGKILL]
    for round_ in range(len(interruptions) + 1):
        before = stored_keys(db)
        with open(tmp_path / "stderr.txt", "w") as stderr:
            # As a terminal's foreground job: a suite started in the background (`&`) passes SIGINT on ignored.
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            if round_ < len(interruptions):
                # A random point in the first half of the rest of the run, at least MARGIN answers before its end.
                target = len(before) + rng.randint(1, max(1, (len(everything) - len(before) - MARGIN) // 2))
                deadline = time.monotonic() + 300
                while len(stored_keys(db)) < target and process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.005)
                process.send_signal(interruptions[round_])
            code = process.wait(timeout=600)
        log = (tmp_path / "stderr.txt").read_text()
        after = stored_keys(db)
        # Each task this restart reached was sent exactly the requests the cache lacked.
        for (asked, hits, to_compute), name in zip(COUNTS.findall(log), TASKS):
            missing = [k for k in keys[name] if k not in before]
            assert (int(asked), int(hits), int(to_compute)) == (LIMIT, LIMIT - len(missing), len(set(missing))), log
        if round_ < len(interruptions):
            assert len(before) < len(after) < len(everything), f"round {round_} was not stopped mid-run (exit {code}):\n{log}"
            if interruptions[round_] == signal.SIGINT:
                assert code == 130 and "rerun the same command to resume" in log and str(db) in log, log
            else:
                assert code == -signal.SIGKILL
            assert not output.exists() or not find_runs([output])
    assert code == 0, log
    assert after == everything

    [run] = find_runs([output])
    assert sorted(p.name for p in output.iterdir()) == [run.name]  # killed runs' .partial folders are gone
    record = read_run(run)
    assert record["cache"]["computed"] == len(everything - before)
    assert record["cache"]["hits"] == sum(1 for name in TASKS for k in keys[name] if k in before)

    reference = evaluate(str(tiny_model), ",".join(TASKS), limit=LIMIT, batch_size=1, data_dir=data_dir,
                         output=tmp_path / "reference", progress=False, cache=False)
    assert read_samples(run) == read_samples(reference.path)
    assert without_timings(record) == without_timings(reference.record)
