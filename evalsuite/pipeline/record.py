"""Record: an evaluation's scores and provenance as an ``EvaluationRecord``, and the run's identity."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from evalsuite.data import Split
from evalsuite.pipeline.score import Scores
from evalsuite.results.provenance import sha256_hex
from evalsuite.results.records import EvaluationRecord
from evalsuite.scoring import confusion_counts
from evalsuite.spec import TaskSpec

def doc_hash(doc: dict) -> str:
    """A document's content key: runs pair per document even when their split order or limit differ."""
    return sha256_hex(json.dumps(doc, sort_keys=True, default=str))[:16]


def run_id(stamp: datetime, model: str, mode: str, shots: int, config: dict[str, Any], model_sha256: Any,
           shard: tuple[int, int] | None = None) -> str:
    """``<UTC stamp>-<model>-<mode>[-<shots>][-shard<i>of<N>]-<8 hex digits of the configuration and weights>``
    (the shards of a run and their merge share the digest)."""
    digest = sha256_hex(json.dumps([config, model_sha256], sort_keys=True, default=str))[:8]
    name = re.sub(r"[^\w.-]+", "_", Path(model.split(",")[0].rstrip("/")).name) or "model"
    part = f"-shard{shard[0]}of{shard[1]}" if shard else ""
    return f"{stamp:%Y%m%d-%H%M%S}-{name}-{mode}{'-' + str(shots) if shots else ''}{part}-{digest}"


def record(task: TaskSpec, variant: str, method: str, scores: Scores, evaluated: Split,
           hashes: dict[str, str | None], elapsed: float) -> EvaluationRecord:
    return EvaluationRecord(
        task=task.name,
        category=task.category,
        variant=variant,
        method=method,
        split=task.eval_split,
        main_metric=task.metrics[0],
        hashes={"task": sha256_hex(task.path.read_bytes()), "data": evaluated.sha256, **hashes},
        origin=evaluated.origin,
        license=task.license,
        **scored(scores, elapsed),
    )


def scored(scores: Scores, elapsed: float) -> dict[str, Any]:
    """The fields of an ``EvaluationRecord`` that come from its scores (and its time); ``n`` counts documents,
    each once whatever its few-shot draws."""
    preds = scores.predictions
    return {
        "n": preds.documents,
        "metrics": {name: result.to_dict() for name, result in scores.metrics.items()},
        "confusion": confusion_counts(preds),
        "timing_s": round(elapsed, 3),
        "docs_per_s": round(preds.documents / elapsed, 3) if elapsed > 0 else None,
        "labels": preds.labels,
        "positive": preds.positive,
        "by_difficulty": scores.extra.get("by_difficulty"),
        "self_consistency": scores.extra.get("self_consistency"),
        "thinking": scores.extra.get("thinking"),
        "cluster": preds.cluster_by,
        "fewshot_draws": scores.extra.get("fewshot_draws"),
        "by_draw": scores.extra.get("by_draw"),
    }
