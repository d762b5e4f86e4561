"""The whole pipeline with a scripted engine, the run folder's contents, and killed runs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalsuite.api import evaluate
from evalsuite.engines import ContinuationScore
from evalsuite.results import find_runs, read_run, read_samples

ROOT = Path(__file__).resolve().parents[1]


class ScriptedEngine:
    """Prefers the gold continuation for even documents and the first one otherwise."""

    def __init__(self, tokenizer, gold_of):
        self.tokenizer, self.gold_of, self.calls = tokenizer, gold_of, 0

    def describe(self):
        return {"engine": "scripted", "model_sha256": "0" * 64, "dtype": "none"}

    def loglikelihood(self, requests, progress=None):
        self.calls += 1
        out = []
        for index, request in enumerate(requests):
            best = self.gold_of[index] if index % 2 == 0 else 0
            out.append(tuple(ContinuationScore(-1.0 if k == best else -5.0, k == best, len(c))
                             for k, c in enumerate(request.continuations)))
            if progress:
                progress(index, out[-1])
        return out

    def generate(self, requests, progress=None):
        raise AssertionError("not used")


@pytest.fixture(scope="module")
def byte_tok():
    from tiny_models import byte_tokenizer

    return byte_tokenizer()


def test_run_folder_holds_a_complete_record(tmp_path, data_dir, byte_tok):
    from evalsuite.data import load_split
    from evalsuite.api import load_tasks

    task = load_tasks()["rte"]
    docs = load_split(task, task.eval_split, data_dir).docs[:30]
    engine = ScriptedEngine(byte_tok, [d["label"] for d in docs])
    run = evaluate("scripted", "rte", engine=engine, limit=30, data_dir=data_dir, output=tmp_path, progress=False)

    assert find_runs([tmp_path]) == [run.path]
    record = read_run(run.path)
    [ev] = record["evaluations"]
    expected = sum(1 for i, d in enumerate(docs) if i % 2 == 0 or d["label"] == 0) / 30
    assert ev["metrics"]["accuracy"]["value"] == pytest.approx(expected)
    assert ev["metrics"]["accuracy"]["low"] <= expected <= ev["metrics"]["accuracy"]["high"]
    assert "binary" in ev["metrics"]["f1"]["definition"] and "entailment" in ev["metrics"]["f1"]["definition"]
    assert ev["n"] == 30 and ev["split"] == "validation" and ev["variant"] == "plain"
    assert set(ev["hashes"]) == {"task", "prompt", "data", "fewshot_data"} and len(ev["hashes"]["data"]) == 64
    assert sum(sum(row.values()) for row in ev["confusion"].values()) == 30
    assert {"python", "torch", "transformers", "evalsuite"} <= set(record["versions"])
    assert record["config"]["mode"] == "zero-shot" and record["config"]["shots"] == 0

    samples = read_samples(run.path)
    assert [s["doc_id"] for s in samples] == list(range(30))
    first = samples[0]
    assert first["prompt"].startswith(docs[0]["sentence1"]) and first["choices"] == [" True", " False"]
    assert len(first["logprobs"]) == 2 and first["correct"] == (first["pred"] == first["gold"])


def test_few_shot_run_records_examples_and_is_reproducible(tmp_path, data_dir, byte_tok):
    runs = []
    for _ in range(2):
        engine = ScriptedEngine(byte_tok, [0] * 10)
        runs.append(evaluate("scripted", "copa", engine=engine, shots=3, mode="few-shot", limit=10,
                             data_dir=data_dir, output=tmp_path, seed=7, progress=False))
    a, b = (read_samples(r.path) for r in runs)
    assert [s["prompt"] for s in a] == [s["prompt"] for s in b]
    assert all(len(s["fewshot_ids"]) == 3 for s in a)
    assert a[0]["prompt"].count("\n\n") == 3


def test_killed_runs_never_leave_a_results_file(tmp_path, data_dir, tiny_model, request_cache_dir):
    """SIGKILL a real run at random moments: only complete run folders ever hold results.json."""
    rng = random.Random(0)
    command = [sys.executable, "-m", "evalsuite", "run", "--model", str(tiny_model), "--tasks", "copa,piqa",
               "--limit", "60", "--no-progress", "--data-dir", str(data_dir), "--output", str(tmp_path),
               "--cache-dir", str(request_cache_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(3):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    for folder in tmp_path.iterdir():
        results = folder / "results.json"
        if folder.name.endswith(".partial"):
            assert not results.exists()
        else:
            record = json.loads(results.read_text())
            assert sum(ev["n"] for ev in record["evaluations"]) == len(read_samples(folder)) == 120
    assert len(find_runs([tmp_path])) == 1
