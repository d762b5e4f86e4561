"""Run folders made by hand (results.json + samples.jsonl) for tests of compare and the report.

Metrics and confusion counts are computed from the samples with the real scoring code, so a folder reads
exactly like one written by ``evalsuite run``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from evalsuite.scoring import Predictions, compute_metrics, confusion_counts

LABELS = ("no", "yes")


def doc_hash(task: str, doc_id: int) -> str:
    return hashlib.sha256(f"{task}:{doc_id}".encode()).hexdigest()[:16]


def samples(task: str, variant: str, correct: Sequence[bool], *, doc_ids: Sequence[int] | None = None,
            prompt: str = "Is it so? {i}", hashes: bool = True, **extra: Any) -> list[dict[str, Any]]:
    """Two-choice log-likelihood samples: gold alternates yes/no; a wrong answer's margin grows with doc_id."""
    out = []
    for i, ok in zip(doc_ids if doc_ids is not None else range(len(correct)), correct):
        gold = i % 2
        pred = gold if ok else 1 - gold
        logprobs = [-3.0, -3.0]
        logprobs[pred] = -3.0 + 0.5 + 0.01 * i  # the chosen choice is ahead by 0.5 + 0.01·doc_id nats
        sample = {"task": task, "variant": variant, "doc_id": i, "fewshot_ids": [], "prompt": prompt.format(i=i),
                  "choices": [" no", " yes"], "pred_norm": pred, "logprobs": logprobs, "tokens": [1, 1],
                  "greedy": [pred == 0, pred == 1], "pred": pred, "gold": gold, "gold_text": LABELS[gold],
                  "correct": bool(ok)}
        if hashes:
            sample["doc_hash"] = doc_hash(task, i)
        sample.update(extra)
        out.append(sample)
    return out


def evaluation(task: str, variant: str, docs: list[dict[str, Any]], *, category: str = "logical",
               metrics: Sequence[str] = ("accuracy", "f1", "mcc"), data_hash: str | None = None) -> dict[str, Any]:
    flexible = [s.get("pred_flexible") for s in docs]  # generated answers read by the flexible rule too
    preds = Predictions(pred=np.array([s["pred"] for s in docs]), gold=np.array([s["gold"] for s in docs]),
                        n_classes=2, labels=LABELS, pred_flexible=None if None in flexible else np.array(flexible))
    computed = compute_metrics(list(metrics), preds, n_boot=200, seed=0)
    return {"task": task, "category": category, "variant": variant, "method": "loglikelihood", "split": "validation",
            "n": len(docs), "main_metric": metrics[0], "metrics": {k: v.to_dict() for k, v in computed.items()},
            "confusion": confusion_counts(preds),
            "hashes": {"task": "t", "prompt": "p", "data": data_hash or f"data-{task}", "fewshot_data": None},
            "origin": "test", "license": "test", "timing_s": 1.0, "docs_per_s": 10.0}


def write_run(root: Path, model: str, parts: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]], *,
              mode: str = "zero-shot", shots: int = 0, created: str = "2026-11-22T18:00:00+00:00",
              run_id: str | None = None, adapter: str | None = None) -> Path:
    """A complete run folder under ``root`` holding (evaluation, samples) pairs."""
    run_id = run_id or f"{created[:19].replace(':', '')}-{model}-{mode}-{shots}{'-' + adapter if adapter else ''}"
    folder = Path(root) / run_id
    folder.mkdir(parents=True)
    record = {
        "schema_version": 1, "run_id": run_id, "created": created,
        "config": {"model": model, "engine": "hf", "adapter": adapter, "mode": mode, "shots": shots, "seed": 0},
        "model": {"engine": "hf", "model_path": f"/models/{model}", "dtype": "float32"},
        "versions": {}, "timings": {}, "evaluations": [ev for ev, _ in parts],
    }
    (folder / "results.json").write_text(json.dumps(record), encoding="utf-8")
    with open(folder / "samples.jsonl", "w", encoding="utf-8") as handle:
        for _, docs in parts:
            for sample in docs:
                handle.write(json.dumps(sample) + "\n")
    return folder


def pattern(n: int, right: int, offset: int = 0) -> list[bool]:
    """``right`` of ``n`` documents correct, starting at ``offset`` (wrapping around)."""
    return [((i - offset) % n) < right for i in range(n)]
