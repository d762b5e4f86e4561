"""The evaluation pipeline: load → render → answer → score → record, one named stage per module.

:func:`run` takes a :class:`~evalsuite.spec.RunSpec` and writes a run folder. Everything that needs no model
(task selection, metrics, prompt variants, data, every document rendered, the output folder, the cache) is
loaded and checked before the engine is (:mod:`evalsuite.pipeline.check`); a run that fails later leaves no
run folder behind.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from evalsuite.data import default_data_dir
from evalsuite.engines import ENGINES, Classifier, Engine, load_engine
from evalsuite.engines.base import InvalidAnswer
from evalsuite.engines.cache import CachedEngine, RequestCache
from evalsuite.errors import DataError, OutputError, SpecError
from evalsuite.pipeline.answer import answer, with_scores
from evalsuite.pipeline.chat import check_engine, check_prompts
from evalsuite.pipeline.load import Splits, check_metrics, select_tasks, variants
from evalsuite.pipeline.record import doc_hash, record, run_id
from evalsuite.pipeline.check import answered_by_head, preflight
from evalsuite.pipeline.render import Picks, chunks, evaluated_range, fewshot_renderer
from evalsuite.pipeline.score import Tally, score
from evalsuite.prompting import ChatFormat, PromptRenderer
from evalsuite.results import SCHEMA_VERSION, RunWriter
from evalsuite.results.records import EvaluationRecord, Sample
from evalsuite.results.provenance import library_versions, sha256_hex
from evalsuite.spec import PromptSpec, RunSpec, TaskSpec, load_tasks

# The variant name of evaluations answered by a classification head (no prompt is involved).
CLASSIFIER_VARIANT = "head"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """A finished run: its folder and its ``results.json`` record."""

    path: Path
    record: dict[str, Any]

    def metric(self, task: str, name: str, variant: str | None = None) -> float:
        for ev in self.record["evaluations"]:
            if ev["task"] == task and (variant is None or ev["variant"] == variant):
                return ev["metrics"][name]["value"]
        raise KeyError(f"no evaluation of task {task!r} (variant {variant!r}) in this run")


def run(spec: RunSpec, engine: Engine | Classifier | None = None) -> RunResult:
    """Evaluate ``spec`` (with ``engine`` when given, else the engine the spec names) and write its run folder."""
    started = time.perf_counter()
    data_dir = spec.data_dir or default_data_dir()
    splits = Splits(data_dir, spec.data_seed)
    selected, skipped = _load(spec, splits)
    prompted = [(task, prompt) for task in selected for prompt in variants(task, spec.prompts)]
    picks = preflight(prompted, splits, spec, by_head=answered_by_head(engine or spec.engine, spec.model))
    check_prompts(spec, prompted, engine if engine is not None else ENGINES.resolve(spec.engine))

    load_started = time.perf_counter()
    if engine is None:
        options = {"adapter": spec.adapter, "dtype": spec.dtype, "batch_size": spec.batch_size, **spec.engine_args}
        engine = load_engine(spec.engine, spec.model, **options)
    engine_load_s = time.perf_counter() - load_started
    cached = None
    if isinstance(engine, Classifier):  # a classification checkpoint: its head answers, prompts play no part
        _check_classifier(engine, selected, spec.mode, spec.permute_choices)
        plan: list[tuple[TaskSpec, PromptSpec | None]] = [(task, None) for task in selected]
    else:
        plan = list(prompted)
        check_engine(spec, engine)
        cached = _with_cache(engine, spec.cache)
        engine = cached or engine
    described = engine.describe()

    config = spec.config(described.get("engine", spec.engine), data_dir, [t.name for t in selected])
    writer = RunWriter(spec.output, run_id(datetime.now(timezone.utc), spec.model, spec.mode, spec.shots, config,
                                           described.get("model_sha256"), spec.shard))
    evaluations = []
    try:
        for task, prompt in plan:
            if prompt is None:
                evaluations.append(_classify_task(engine, task, splits, writer, spec))
            else:
                evaluations.append(_evaluate_task(engine, task, prompt, splits, writer, spec, picks))
        run_record = {
            "schema_version": SCHEMA_VERSION,
            "run_id": writer.run_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": config,
            **({"shard": _shard_record(spec, selected, splits)} if spec.shard else {}),
            "model": described,
            "versions": library_versions(),
            "timings": {"engine_load_s": round(engine_load_s, 3), "total_s": round(time.perf_counter() - started, 3)},
            "cache": cached.summary() if cached else None,
            "endpoints": _endpoint_stats(engine),
            "evaluations": [ev.to_dict() for ev in evaluations],
            "skipped": skipped,
        }
        return RunResult(writer.finish(run_record), run_record)
    except OutputError as exc:  # a write failed (a full disk, say): nothing half-written stays, the answers do
        writer.abandon()
        kept = (f"the answers computed so far are kept in the request cache {cached.cache.path}: rerun the same "
                "command to resume" if cached else "this run used no request cache: a rerun starts over")
        raise OutputError(f"{exc}. The unfinished run folder was removed; {kept}") from None
    except BaseException:
        writer.abandon()
        raise
    finally:
        if cached:
            cached.cache.close()


def _load(spec: RunSpec, splits: Splits) -> tuple[list[TaskSpec], list[dict[str, str]]]:
    """The load stage: the selected tasks, checked, with their data read (or skipped when unavailable)."""
    selected = select_tasks(load_tasks(spec.task_dirs, spec.prompt_dirs), spec.tasks)
    for task in selected:
        check_metrics(task)
        variants(task, spec.prompts)
    skipped = []
    for task in list(selected):
        try:
            splits(task, task.eval_split)
            if spec.shots and task.fewshot_split:
                splits(task, task.fewshot_split)
        except DataError as exc:
            if not spec.skip_unavailable:
                raise
            skipped.append({"task": task.name, "reason": str(exc)})
            selected.remove(task)
    if not selected:
        raise DataError("no selected task has its data available: " + "; ".join(s["reason"] for s in skipped))
    return selected, skipped


def _shard_record(spec: RunSpec, tasks: list[TaskSpec], splits: Splits) -> dict[str, Any]:
    """The ``shard`` entry of a shard's results.json: which shard, and which documents of each task it holds
    out of how many (what ``evalsuite merge`` checks a set against)."""
    index, count = spec.shard
    documents = {}
    for task in tasks:
        docs = splits(task, task.eval_split).docs
        mine = evaluated_range(docs, spec.limit, spec.shard)
        documents[task.name] = {"total": len(evaluated_range(docs, spec.limit)), "start": mine.start, "stop": mine.stop}
    return {"index": index, "count": count, "documents": documents}


def _endpoint_stats(engine: Any) -> dict[str, Any] | None:
    """Per endpoint, what it answered and how it fared (engines with several endpoints); None otherwise."""
    stats = getattr(engine, "endpoint_stats", None)
    return stats() if stats else None


def _with_cache(engine: Engine, cache: bool | Path) -> CachedEngine | None:
    if cache is False:
        return None
    if not engine.describe().get("model_sha256"):
        log.warning("the engine reports no weights fingerprint (model_sha256): its answers are not cached")
        return None
    return CachedEngine(engine, RequestCache(None if cache is True else cache))


def _evaluate_task(engine: Engine, task: TaskSpec, prompt: PromptSpec, splits: Splits, writer: RunWriter,
                   spec: RunSpec, picks: Picks) -> EvaluationRecord:
    """One task × prompt variant, chunk by chunk: render → answer → (write) → score → record. With several
    few-shot draws each document is rendered and answered once per draw (its samples one after the other)."""
    started = time.perf_counter()
    evaluated = splits(task, task.eval_split)
    renderer = PromptRenderer(task, prompt, ChatFormat(spec.system_prompt, spec.fewshot_as_multiturn),
                              permute=spec.permute_choices)
    rendered = [fewshot_renderer(task, renderer, splits, shots=spec.shots, seed=spec.seed,
                                 sampler=spec.fewshot_sampler, picks=picks, draw=draw)
                for draw in range(spec.fewshot_draws)]
    renders, pool = [render for render, _ in rendered], rendered[0][1]
    n_samples = spec.samples if prompt.method == "generation" else 1
    n_docs = len(evaluated_range(evaluated.docs, spec.limit, spec.shard))
    bar = _progress_bar(n_docs * len(renders) * n_samples, f"{task.name}/{prompt.name}", spec.progress)
    tally = Tally()
    try:
        for chunk in chunks(evaluated.docs, spec.limit, spec.shard):
            rows = [(i, doc, draw) for i, doc in chunk for draw in range(len(renders))]
            instances = [renders[draw](doc, i) for i, doc, draw in rows]
            samples = answer(engine, task, prompt, instances, spec, n_samples=n_samples,
                             progress=(lambda i, answer: bar.update(1)) if bar else None)
            samples = [_keyed(sample, doc, draw if len(renders) > 1 else None)
                       for (_, doc, draw), sample in zip(rows, samples)]
            if task.graded:
                samples = with_scores(instances, samples)
            writer.write_samples(s.to_dict() for s in samples)
            tally.add(samples, instances)
    finally:
        if bar:
            bar.close()
    elapsed = time.perf_counter() - started
    scores = score(task, prompt.method, tally, tally.labels(task), n_boot=spec.n_boot, seed=spec.seed,
                   n_samples=n_samples, temperature=spec.temperature)
    hashes = {"prompt": sha256_hex(prompt.source), "fewshot_data": pool.sha256 if pool else None}
    return record(task, prompt.name, prompt.method, scores, evaluated, hashes, elapsed)


def _keyed(sample: Sample, doc: dict, draw: int | None = None) -> Sample:
    """A sample with its document's content hash, its few-shot draw in a run with several, and its difficulty
    when it has one (the report plots accuracy per level from samples)."""
    difficulty = doc.get("difficulty")
    return replace(sample, doc_hash=doc_hash(doc), difficulty=difficulty if type(difficulty) is int else None,
                   draw=draw)


def _check_classifier(engine: Classifier, tasks: list[TaskSpec], mode: str, permuted: bool = False) -> None:
    """A classification checkpoint answers a task only in fine-tuned mode, with the task's own label set (and
    never with permuted options: its head reads no options)."""
    if mode != "fine-tuned":
        raise SpecError(f"{engine.model_path} is a classification checkpoint: evaluate it with --mode fine-tuned")
    if permuted:
        raise SpecError(f"{engine.model_path} is a classification checkpoint: its head reads the task's inputs, not "
                        "its options, so --permute-choices has nothing to rotate")
    for task in tasks:
        if task.inputs is None or task.labels is None:
            raise SpecError(f"{task.path}: field 'inputs': a classification checkpoint needs the task's inputs and "
                            f"labels, and task '{task.name}' lacks them")
        if sorted(engine.labels) != sorted(task.labels):
            raise SpecError(f"{engine.model_path}: the checkpoint's head predicts {list(engine.labels)}, but task "
                            f"'{task.name}' has labels {list(task.labels)}: was it fine-tuned on another task?")


def _classify_task(engine: Classifier, task: TaskSpec, splits: Splits, writer: RunWriter,
                   spec: RunSpec) -> EvaluationRecord:
    """A classification checkpoint on one task: the prediction is the head's most probable label."""
    from evalsuite.engines.classifier import encode_texts

    started = time.perf_counter()
    renderer = PromptRenderer(task, task.prompts[0])
    evaluated = splits(task, task.eval_split)
    to_head = [engine.labels.index(label) for label in task.labels]  # task label k is head output to_head[k]
    n_docs = len(evaluated_range(evaluated.docs, spec.limit, spec.shard))
    bar = _progress_bar(n_docs, f"{task.name}/{CLASSIFIER_VARIANT}", spec.progress)
    tally = Tally()
    try:
        for chunk in chunks(evaluated.docs, spec.limit, spec.shard):
            texts = [renderer.inputs_of(doc, i) for i, doc in chunk]
            golds = [renderer.gold_of(doc, i, renderer.choices_of(doc, i))[0] for i, doc in chunk]
            requests = [encode_texts(engine.tokenizer, t, engine.max_length) for t in texts]
            try:
                answers = engine.classify(requests, progress=(lambda i, answer: bar.update(1)) if bar else None)
            except InvalidAnswer as exc:
                raise exc.named(f"task '{task.name}', variant '{CLASSIFIER_VARIANT}' (the classification head), "
                                f"document {chunk[exc.index][0]}") from None
            samples = []
            for (doc_id, doc), inputs, gold, scores in zip(chunk, texts, golds, answers):
                logprobs = tuple(scores[k] for k in to_head)
                samples.append(Sample(task=task.name, variant=CLASSIFIER_VARIANT, doc_id=doc_id, fewshot_ids=(),
                                      inputs=tuple(inputs), choices=tuple(task.labels), label_logprobs=logprobs,
                                      pred=int(np.argmax(logprobs)), gold=gold,
                                      gold_text=task.labels[gold], cluster=renderer.cluster_of(doc, doc_id)))
            writer.write_samples(s.to_dict() for s in samples)
            tally.add(samples)
    finally:
        if bar:
            bar.close()
    elapsed = time.perf_counter() - started
    scores = score(task, "classifier", tally, tuple(task.labels), n_boot=spec.n_boot, seed=spec.seed)
    return record(task, CLASSIFIER_VARIANT, "classifier", scores, evaluated, {"prompt": None, "fewshot_data": None},
                  elapsed)


def _progress_bar(total: int, name: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="doc", dynamic_ncols=True)
