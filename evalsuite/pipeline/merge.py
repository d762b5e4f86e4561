"""Merge: the shards of a run (``evalsuite run --shard i/N``) put back together into the run itself.

A set is merged only when it is complete (shards 0 to N-1 of one count, each once) and its shards match: the
same configuration apart from the shard and the data folder (whose content the data hashes compare), the same
model weights, engine, dtype and library versions, the same tasks, prompt variants, hashes and document totals,
and each shard holding exactly its part of the documents. Shard i holds a contiguous part of each task's
documents (:func:`~evalsuite.pipeline.render.shard_range`), so the samples, taken shard after shard, are in the
unsharded order; the run's own scoring code scores them again with the run's seed, so metrics and bootstrap
intervals are those of the unsharded run given the same answers. What differs from it: the run id, ``created``,
the timings, the cache counts and ``merged_from`` (see :data:`evalsuite.results.SCHEMA`); and, with an engine
whose float arithmetic depends on which documents share a batch, log-likelihoods in their last digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from evalsuite.errors import SpecError
from evalsuite.pipeline import RunResult
from evalsuite.pipeline.record import run_id, scored
from evalsuite.pipeline.render import shard_range
from evalsuite.pipeline.score import Tally, score_tally
from evalsuite.results import SCHEMA_VERSION, RunWriter, read_run, read_samples
from evalsuite.results.records import EvaluationRecord, Sample

# What may differ between the shards of one run: the shard itself, and where each machine keeps the data.
_FREE_CONFIG = ("data_dir",)
# What names the model that answered: the weights, adapter, engine and number format (not where they lay).
_MODEL_IDENTITY = ("engine", "model_sha256", "adapter_sha256", "dtype", "finetuned")
# An evaluation's fields fixed by the task, variant and data, equal in every shard.
_EVALUATION_IDENTITY = ("task", "category", "variant", "method", "split", "main_metric", "hashes", "origin",
                        "license", "positive")
_SCORING_CONFIG = ("n_boot", "seed", "samples", "temperature")


@dataclass(frozen=True)
class _Shard:
    folder: Path
    record: dict[str, Any]

    @property
    def index(self) -> int:
        return self.record["shard"]["index"]

    @property
    def count(self) -> int:
        return self.record["shard"]["count"]

    @property
    def name(self) -> str:
        return f"{self.folder} (shard {self.index}/{self.count})"


def merge(folders: Sequence[Path], output: Path) -> RunResult:
    """Merge the shard folders of one run into a run folder under ``output``; :class:`SpecError` naming the
    folder and what differs for an incomplete or mismatched set."""
    shards = complete_set([_read_shard(Path(folder)) for folder in folders])
    first = shards[0]
    for shard in shards[1:]:
        _check_match(shard, first)
    groups = [_samples_by_evaluation(shard) for shard in shards]
    config = first.record["config"]
    evaluations, samples = [], []
    for i, ev in enumerate(first.record["evaluations"]):
        key = (ev["task"], ev["variant"])
        merged = [sample for group in groups for sample in group[key]]
        evaluations.append(_rescore(ev, [shard.record["evaluations"][i] for shard in shards], merged, config))
        samples += merged

    cached = [shard.record["cache"] for shard in shards if shard.record.get("cache")]
    paths = {c.get("path") for c in cached}
    timings = [shard.record.get("timings") or {} for shard in shards]
    model = first.record.get("model") or {}
    writer = RunWriter(output, run_id(datetime.now(timezone.utc), config["model"], config["mode"], config["shots"],
                                      config, model.get("model_sha256")))
    try:
        writer.write_samples(samples)
        record = {
            "schema_version": SCHEMA_VERSION,
            "run_id": writer.run_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": config,
            "model": model,
            "versions": first.record.get("versions"),
            "timings": {key: round(sum(t.get(key) or 0 for t in timings), 3) for key in ("engine_load_s", "total_s")},
            "cache": {"path": paths.pop() if len(paths) == 1 else None,
                      **{key: sum(c.get(key) or 0 for c in cached) for key in ("requests", "hits", "computed")}}
            if cached else None,
            "endpoints": _endpoints([shard.record.get("endpoints") for shard in shards]),
            "evaluations": evaluations,
            "skipped": first.record.get("skipped", []),
            "merged_from": [shard.record["run_id"] for shard in shards],
        }
        return RunResult(writer.finish(record), record)
    except BaseException:
        writer.abandon()
        raise


def complete_set(shards: Sequence[_Shard]) -> list[_Shard]:
    """The shards in index order, when they are shards 0 to N-1 of one count, each once."""
    if not shards:
        raise SpecError("evalsuite merge: give the folders of every shard of the run")
    first = shards[0]
    by_index: dict[int, _Shard] = {}
    for shard in shards:
        if shard.count != first.count:
            raise SpecError(f"{shard.name} and {first.name} are not of one set: the shards of a run share their "
                            "count")
        if shard.index in by_index:
            raise SpecError(f"{shard.name} is given twice (also as {by_index[shard.index].folder}): give each shard "
                            "once")
        by_index[shard.index] = shard
    missing = [i for i in range(first.count) if i not in by_index]
    if missing:
        names = ", ".join(f"{i}/{first.count}" for i in missing)
        given = ", ".join(f"{i}/{first.count}" for i in sorted(by_index))
        runs = ", ".join(f"--shard {i}/{first.count}" for i in missing)
        raise SpecError(f"the shard set is incomplete: {'shard' if len(missing) == 1 else 'shards'} {names} "
                        f"{'is' if len(missing) == 1 else 'are'} missing (given: {given}): run the same command with "
                        f"{runs}, then merge all {first.count} folders")
    return [by_index[i] for i in range(first.count)]


def _read_shard(folder: Path) -> _Shard:
    record = read_run(folder)
    if record.get("shard") is None:
        raise SpecError(f"{folder} is a whole run, not a shard (its results.json has no 'shard'): merge only the "
                        "folders of runs made with --shard")
    missing = [key for key in _SCORING_CONFIG if key not in record["config"]]
    if missing:
        raise SpecError(f"{folder / 'results.json'}: field 'config.{missing[0]}' is missing, which merging needs: "
                        "run that shard again")
    return _Shard(folder, record)


def _check_match(shard: _Shard, first: _Shard) -> None:
    """:class:`SpecError` naming both folders and the first field where ``shard`` is not of ``first``'s run."""
    def identity(s: _Shard) -> dict[str, Any]:
        record = s.record
        model = record.get("model") or {}
        return {
            "config": {k: v for k, v in record["config"].items() if k not in _FREE_CONFIG},
            "model": {k: model.get(k) for k in _MODEL_IDENTITY},
            "versions": record.get("versions"),
            "skipped": record.get("skipped", []),
            "evaluations": [{k: ev.get(k) for k in _EVALUATION_IDENTITY} | {"metrics": list(ev["metrics"])}
                            for ev in record["evaluations"]],
            "shard.documents": {task: part.get("total") for task, part in record["shard"]["documents"].items()},
        }

    found = _difference(identity(shard), identity(first))
    if found:
        where, mine, theirs = found
        raise SpecError(f"{shard.name} and {first.name} are not shards of one run: {where} is {mine!r} in the first "
                        f"and {theirs!r} in the second. Merge only shards run with the same command apart from --shard")


def _difference(a: Any, b: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first place (``config.limit``, ``evaluations[1].hashes.data``) where ``a`` and ``b`` differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = _difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((found for i, (x, y) in enumerate(zip(a, b)) if (found := _difference(x, y, f"{where}[{i}]"))),
                    None)
    return None if a == b else (where, a, b)


def _samples_by_evaluation(shard: _Shard) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """A shard's samples per (task, variant), checked to be exactly its part of each task's documents."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {
        (ev["task"], ev["variant"]): [] for ev in shard.record["evaluations"]}
    for sample in read_samples(shard.folder):
        key = (sample["task"], sample["variant"])
        if key not in groups:
            raise SpecError(f"{shard.folder / 'samples.jsonl'}: a sample of task {key[0]!r}, variant {key[1]!r}, "
                            "which its results.json does not evaluate: the shard folder was altered; run it again")
        groups[key].append(sample)
    draws = shard.record["config"].get("fewshot_draws", 1)
    for (task, variant), samples in groups.items():
        part = shard.record["shard"]["documents"].get(task) or {}
        expected = shard_range(part.get("total") or 0, (shard.index, shard.count))
        # Each document once, or once per few-shot draw (draw 0, 1, ... one after the other).
        rows = [(i, draw) for i in expected for draw in range(draws)] if draws > 1 else [(i, None) for i in expected]
        if [(s["doc_id"], s.get("draw")) for s in samples] != rows:
            raise SpecError(f"{shard.folder / 'samples.jsonl'}: task '{task}', variant '{variant}' should hold "
                            f"documents {expected.start} to {expected.stop - 1} of {part.get('total')} (shard "
                            f"{shard.index}/{shard.count}) in order, but its {len(samples)} samples are not those: the "
                            "shard folder was altered; run that shard again")
    return groups


def _endpoints(parts: list[dict[str, dict[str, Any]] | None]) -> dict[str, dict[str, Any]] | None:
    """The shards' endpoint counts summed per URL; the state (rotation, concurrency, last error) of the last
    shard that used the endpoint."""
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        for url, stats in (part or {}).items():
            before = merged.get(url, {})
            merged[url] = {**stats, **{key: (before.get(key) or 0) + (stats.get(key) or 0)
                                       for key in ("answered", "failed", "taken_out")}}
    return merged or None


def _rescore(first: dict[str, Any], parts: list[dict[str, Any]], samples: list[dict[str, Any]],
             config: dict[str, Any]) -> dict[str, Any]:
    """One evaluation of the merged run, scored from all its samples as the run scores it."""
    tally = Tally()
    tally.add([Sample.from_dict(s) for s in samples])
    # A task without labels names its classes by the widest document's choices: the widest shard's labels.
    labels = max((part["labels"] for part in parts), key=len)
    n_samples = config["samples"] if first["method"] == "generation" else 1
    scores = score_tally(list(first["metrics"]), first["positive"], tally, labels, n_boot=config["n_boot"],
                         seed=config["seed"], n_samples=n_samples, temperature=config["temperature"],
                         cluster_by=first.get("cluster"))
    elapsed = sum(part.get("timing_s") or 0 for part in parts)
    identity = {key: first.get(key) for key in _EVALUATION_IDENTITY if key != "positive"}
    return EvaluationRecord(**identity, **scored(scores, elapsed)).to_dict()
