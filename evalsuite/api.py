"""The Python face: ``evalsuite.evaluate(...)`` does what ``evalsuite run`` does."""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from evalsuite.data import Split, default_data_dir, load_split
from evalsuite.engines import Classifier, Engine, GenerationRequest, encode_choices, encode_context, load_engine
from evalsuite.engines.base import InvalidAnswer
from evalsuite.engines.cache import CachedEngine, RequestCache
from evalsuite.errors import DataError, EvalsuiteError, MetricError, SpecError
from evalsuite.prompting import FewshotSampler, Instance, PromptRenderer
from evalsuite.results import RunWriter
from evalsuite.results.provenance import library_versions as _versions
from evalsuite.results.provenance import sha256_hex as _sha256
from evalsuite.scoring import (
    VOTE_RULE,
    Predictions,
    accuracy_by_group,
    agreement_interval,
    answer_index,
    compute_metrics,
    confusion_counts,
    expected_score,
    extract_answer,
    majority_vote,
    normalise,
    resolve_metric,
)
from evalsuite.spec import PromptSpec, TaskSpec, load_tasks, mode_and_shots

# The variant name of evaluations answered by a classification head (no prompt is involved).
CLASSIFIER_VARIANT = "head"
# Evaluated documents are rendered, answered, written to samples.jsonl and dropped this many at a time, so a
# run's memory does not grow with the split; a usual test set still goes to the engine in one call, which
# lets it batch by length and share prompt prefixes across all of it.
CHUNK_DOCS = 2048
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


def select_tasks(catalog: dict[str, TaskSpec], selection: str | Sequence[str]) -> list[TaskSpec]:
    """Names, tags (``starter``), categories, or ``all``; comma-separated or a list; order kept."""
    items = selection.split(",") if isinstance(selection, str) else list(selection)
    chosen: dict[str, TaskSpec] = {}
    for item in (i.strip() for i in items if i.strip()):
        if item == "all":
            matches = list(catalog.values())
        elif item in catalog:
            matches = [catalog[item]]
        else:
            matches = [t for t in catalog.values() if item == t.category or item in t.tags]
        if not matches:
            raise SpecError(
                f"unknown task, tag or category {item!r}; run 'evalsuite tasks' to list them"
            )
        chosen.update((t.name, t) for t in matches)
    if not chosen:
        raise SpecError("no tasks selected")
    return list(chosen.values())


def _variants(task: TaskSpec, prompts: str | Sequence[str] | None) -> list[PromptSpec]:
    if prompts is None or prompts == "default":
        return [task.prompts[0]]
    if prompts == "all":
        return list(task.prompts)
    names = prompts.split(",") if isinstance(prompts, str) else list(prompts)
    present = [task.prompt(n) for n in names if n in {p.name for p in task.prompts}]
    if not present:
        raise SpecError(f"task '{task.name}' has none of the prompt variants {names}")
    return present


def _check_metrics(task: TaskSpec) -> None:
    for name in task.metrics:
        try:
            resolve_metric(name)
        except MetricError as exc:
            raise SpecError(f"{task.path}: field 'metrics': {exc}") from None


def evaluate(
    model: str,
    tasks: str | Sequence[str] = "starter",
    *,
    engine: str | Engine = "hf",
    mode: str = "zero-shot",
    shots: int | None = None,
    prompts: str | Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    dtype: str = "float32",
    adapter: str | None = None,
    data_dir: str | Path | None = None,
    output: str | Path = "results",
    task_dirs: Sequence[Path] = (),
    prompt_dirs: Sequence[Path] = (),
    fewshot_sampler: str | None = None,
    chat_template: bool = False,
    n_boot: int = 1000,
    progress: bool = True,
    data_seed: int | None = None,
    samples: int = 1,
    temperature: float = 0.0,
    skip_unavailable: bool = False,
    cache: bool | str | Path = True,
    engine_args: dict[str, Any] | None = None,
) -> RunResult:
    """Evaluate ``model`` on ``tasks`` and write a run folder under ``output``.

    ``mode``: ``zero-shot`` (0 examples), ``few-shot`` (``shots`` examples, default 5) or ``fine-tuned``
    (a fine-tuned checkpoint or ``adapter``, zero-shot prompts). ``prompts``: ``None`` for each task's
    default variant, ``"all"``, or names. ``engine`` is an engine name or an already built engine;
    ``engine_args`` are passed to its constructor (e.g. ``{"max_model_len": 2048}`` for ``vllm``,
    ``{"tokenizer": "smollm2"}`` for ``server``, whose ``model`` is a comma-separated list of endpoint URLs).
    ``data_seed`` replaces the seeds of generated tasks (a fresh test set). For generation prompts,
    ``temperature`` > 0 samples, and ``samples`` > 1 draws that many answers per document (seeds
    ``seed * 1000 + k``) and takes their majority vote (self-consistency); log-likelihood prompts ignore both.
    Every task's data is loaded before the model: with ``skip_unavailable`` a task whose data cannot be
    loaded (e.g. a hub-only task offline) is left out and listed under ``skipped`` in the record, else the
    run stops with that error.
    ``cache``: the request cache (:mod:`evalsuite.engines.cache`) in its default folder (``True``), in a
    given folder, or off (``False``); with it, a killed run resumes where it stopped when rerun.
    """
    started = time.perf_counter()
    mode, shots = mode_and_shots(mode, shots)
    if limit is not None and limit < 1:
        raise SpecError(f"--limit must be at least 1, got {limit}")
    if samples < 1 or temperature < 0 or (samples > 1 and temperature == 0):
        raise SpecError(f"--samples {samples} --temperature {temperature}: samples must be at least 1, the "
                        "temperature at least 0, and several samples need a temperature above 0 to differ")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    selected = select_tasks(load_tasks(task_dirs, prompt_dirs), tasks)
    for task in selected:
        _check_metrics(task)
        _variants(task, prompts)
    splits: dict[tuple[str, str], Split] = {}

    def split_of(task: TaskSpec, name: str) -> Split:
        if (task.name, name) not in splits:
            splits[task.name, name] = load_split(task, name, data_dir, data_seed)
        return splits[task.name, name]

    skipped = []
    for task in list(selected):
        try:
            split_of(task, task.eval_split)
            if shots and task.fewshot_split:
                split_of(task, task.fewshot_split)
        except DataError as exc:
            if not skip_unavailable:
                raise
            skipped.append({"task": task.name, "reason": str(exc)})
            selected.remove(task)
    if not selected:
        raise DataError("no selected task has its data available: " + "; ".join(s["reason"] for s in skipped))
    plan = [(task, prompt) for task in selected for prompt in _variants(task, prompts)]

    load_started = time.perf_counter()
    if isinstance(engine, str):
        options = {"adapter": adapter, "dtype": dtype, "batch_size": batch_size, **(engine_args or {})}
        runner = load_engine(engine, model, **options)
    else:
        runner = engine
    engine_load_s = time.perf_counter() - load_started
    cached = None
    if isinstance(runner, Classifier):  # a classification checkpoint: its head answers, prompts play no part
        _check_classifier(runner, selected, mode)
        plan = [(task, None) for task in selected]
    else:
        cached = _with_cache(runner, cache)
        runner = cached or runner
    described = runner.describe()

    config = {
        "model": model,
        "engine": described.get("engine", str(engine)),
        "adapter": adapter,
        "mode": mode,
        "shots": shots,
        "seed": seed,
        "tasks": [t.name for t in selected],
        "prompts": prompts if isinstance(prompts, (str, type(None))) else list(prompts),
        "limit": limit,
        "batch_size": batch_size,
        "dtype": dtype,
        "data_dir": str(data_dir) if data_dir else None,
        "fewshot_sampler": fewshot_sampler,
        "chat_template": chat_template,
        "n_boot": n_boot,
        "data_seed": data_seed,
        "samples": samples,
        "temperature": temperature,
        "engine_args": dict(engine_args or {}),
    }
    stamp = datetime.now(timezone.utc)
    digest = _sha256(json.dumps([config, described.get("model_sha256")], sort_keys=True, default=str))[:8]
    model_name = re.sub(r"[^\w.-]+", "_", Path(model.split(",")[0].rstrip("/")).name) or "model"
    run_id = f"{stamp:%Y%m%d-%H%M%S}-{model_name}-{mode}{'-' + str(shots) if shots else ''}-{digest}"
    writer = RunWriter(Path(output), run_id)
    evaluations = []
    try:
        for task, prompt in plan:
            if prompt is None:
                evaluations.append(_classify_one(runner, task, split_of, writer, seed=seed, limit=limit,
                                                 n_boot=n_boot, progress=progress))
                continue
            evaluations.append(
                _evaluate_one(
                    runner, task, prompt, split_of, writer,
                    shots=shots, seed=seed, limit=limit, sampler=fewshot_sampler,
                    chat_template=chat_template, n_boot=n_boot, progress=progress,
                    n_samples=samples, temperature=temperature,
                )
            )
    except BaseException:
        writer.abandon()
        raise
    finally:
        if cached:
            cached.cache.close()
    record = {
        "schema_version": 1,
        "run_id": writer.run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "model": described,
        "versions": _versions(),
        "timings": {"engine_load_s": round(engine_load_s, 3), "total_s": round(time.perf_counter() - started, 3)},
        "cache": cached.summary() if cached else None,
        "evaluations": evaluations,
        "skipped": skipped,
    }
    return RunResult(writer.finish(record), record)


def _with_cache(runner: Engine, cache: bool | str | Path) -> CachedEngine | None:
    if cache is False or cache is None:
        return None
    if not runner.describe().get("model_sha256"):
        log.warning("the engine reports no weights fingerprint (model_sha256): its answers are not cached")
        return None
    return CachedEngine(runner, RequestCache(None if cache is True else cache))


def _fewshot_renderer(
    task: TaskSpec, renderer: PromptRenderer, split_of, *, shots: int, seed: int, sampler: str | None
) -> tuple[Callable[[dict, int], Instance], Split | None]:
    """A function rendering a document (given its index) with its few-shot examples, and their pool."""
    if shots == 0:
        return renderer.render, None
    if task.fewshot_split is None:
        raise SpecError(f"{task.path}: field 'splits.fewshot' is needed for few-shot runs of task '{task.name}'")
    pool = split_of(task, task.fewshot_split)
    examples = list(pool.docs)  # read by index; a few-shot split is small
    method = sampler or task.fewshot_sampler
    labels = None
    if method == "balanced":
        labels = [renderer.gold_of(d, i, renderer.choices_of(d, i))[0] for i, d in enumerate(examples)]
    try:
        chooser = FewshotSampler(
            range(len(examples)), k=shots, method=method, seed=seed, salt=task.name, labels=labels,
            same_split=task.fewshot_split == task.eval_split,
        )
    except ValueError as exc:
        raise SpecError(f"task '{task.name}': few-shot selection failed: {exc}") from None

    def render(doc: dict, doc_id: int) -> Instance:
        try:
            pick = chooser.select(doc_id)
        except ValueError as exc:
            raise SpecError(f"task '{task.name}': few-shot selection failed: {exc}") from None
        return renderer.render(doc, doc_id, [(j, examples[j]) for j in pick])

    return render, pool


def _instances(
    task: TaskSpec, renderer: PromptRenderer, split_of, *, shots: int, seed: int, limit: int | None, sampler: str | None
) -> tuple[list[Instance], Split, Split | None]:
    """Every evaluated document (the first ``limit``) rendered, the evaluated split and the few-shot pool."""
    evaluated = split_of(task, task.eval_split)
    render, pool = _fewshot_renderer(task, renderer, split_of, shots=shots, seed=seed, sampler=sampler)
    return [render(doc, i) for i, doc in enumerate(itertools.islice(evaluated.docs, limit))], evaluated, pool


def _chunks(docs: Iterable[dict], limit: int | None) -> Iterator[list[tuple[int, dict]]]:
    """The first ``limit`` documents (all when None) with their indices, ``CHUNK_DOCS`` at a time."""
    numbered = enumerate(itertools.islice(docs, limit))
    while chunk := list(itertools.islice(numbered, CHUNK_DOCS)):
        yield chunk


def _apply_chat(tokenizer: Any, context: str) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        raise SpecError("--chat-template was asked for, but the model's tokenizer has no chat template")
    return tokenizer.apply_chat_template([{"role": "user", "content": context}], tokenize=False, add_generation_prompt=True)


def _evaluate_one(runner: Engine, task: TaskSpec, prompt: PromptSpec, split_of, writer: RunWriter, *,
                  shots: int, seed: int, limit: int | None, sampler: str | None, chat_template: bool,
                  n_boot: int, progress: bool, n_samples: int = 1, temperature: float = 0.0) -> dict[str, Any]:
    started = time.perf_counter()
    renderer = PromptRenderer(task, prompt)
    evaluated = split_of(task, task.eval_split)
    render, pool = _fewshot_renderer(task, renderer, split_of, shots=shots, seed=seed, sampler=sampler)
    n_samples = n_samples if prompt.method == "generation" else 1
    n_docs = min(len(evaluated.docs), limit or len(evaluated.docs))
    bar = _progress_bar(n_docs * n_samples, f"{task.name}/{prompt.name}", progress)
    outcomes = _Outcomes()
    try:
        for chunk in _chunks(evaluated.docs, limit):
            instances = [render(doc, i) for i, doc in chunk]
            samples = _answer(runner, task, prompt, instances, chat_template=chat_template, seed=seed,
                              n_samples=n_samples, temperature=temperature, bar=bar)
            for (_, doc), sample in zip(chunk, samples):
                # A content key: runs pair per document even when their split order or limit differ.
                sample["doc_hash"] = _sha256(json.dumps(doc, sort_keys=True, default=str))[:16]
                if type(doc.get("difficulty")) is int:  # the report plots accuracy per level from samples
                    sample["difficulty"] = doc["difficulty"]
            if task.graded:
                _add_scores(instances, samples)
            writer.write_samples(samples)
            outcomes.add(instances, samples, [doc.get("difficulty") for _, doc in chunk])
    finally:
        if bar:
            bar.close()
    elapsed = time.perf_counter() - started

    preds = outcomes.predictions(task)
    metrics = compute_metrics(_metric_names(task, prompt), preds, n_boot=n_boot, seed=seed)
    extra: dict[str, Any] = {}
    if all(type(level) is int for level in outcomes.levels):
        extra["by_difficulty"] = accuracy_by_group(preds, outcomes.levels, n_boot=n_boot, seed=seed)
    if n_samples > 1:
        extra["self_consistency"] = {
            "samples": n_samples, "temperature": temperature, "vote": VOTE_RULE,
            "agreement": agreement_interval(outcomes.agreements, n_boot=n_boot, seed=seed),
        }
    hashes = {"prompt": _sha256(prompt.source), "fewshot_data": pool.sha256 if pool else None}
    return {**_evaluation(task, prompt.name, prompt.method, preds, metrics, evaluated, hashes, elapsed), **extra}


def _answer(runner: Engine, task: TaskSpec, prompt: PromptSpec, instances: list[Instance], *, chat_template: bool,
            seed: int, n_samples: int, temperature: float, bar: Any) -> list[dict]:
    """The engine's answers to rendered documents, as their samples (one engine call)."""
    tokenizer = runner.tokenizer
    contexts = [_apply_chat(tokenizer, i.context) if chat_template else i.context for i in instances]
    on_answer = (lambda i, answer: bar.update(1)) if bar else None
    samples = []
    if prompt.method == "loglikelihood":
        if any(not inst.continuations for inst in instances):
            raise SpecError(f"{task.path}: task '{task.name}' has no 'choices' for log-likelihood prompt {prompt.path}")
        requests = [encode_choices(tokenizer, c, inst.continuations) for c, inst in zip(contexts, instances)]
        try:
            answers = runner.loglikelihood(requests, progress=on_answer)
        except InvalidAnswer as exc:
            raise exc.named(f"task '{task.name}', prompt variant '{prompt.name}', document "
                            f"{instances[exc.index].doc_id}") from None
        for inst, context, scores in zip(instances, contexts, answers):
            logprobs = [s.logprob for s in scores]
            byte_lengths = [max(len(c.encode("utf-8")), 1) for c in inst.continuations]
            pred = int(np.argmax(logprobs))
            pred_norm = int(np.argmax(np.asarray(logprobs) / np.asarray(byte_lengths)))
            samples.append(_sample(task, prompt, inst, context, pred, pred_norm=pred_norm,
                                   logprobs=logprobs, tokens=[s.tokens for s in scores],
                                   greedy=[s.greedy for s in scores]))
    else:
        # Sample k of every document has seed seed * 1000 + k: samples differ, and each is reproducible.
        requests = [
            GenerationRequest(encode_context(tokenizer, c), prompt.max_tokens, prompt.stop, temperature, seed * 1000 + k)
            for c in contexts for k in range(n_samples)
        ]
        texts = runner.generate(requests, progress=on_answer)
        for d, (inst, context) in enumerate(zip(instances, contexts)):
            generations = texts[d * n_samples : (d + 1) * n_samples]
            samples.append(_generated_sample(task, prompt, inst, context, generations))
    return samples


def _evaluation(task: TaskSpec, variant: str, method: str, preds: Predictions, metrics: dict, evaluated: Split,
                hashes: dict[str, str | None], elapsed: float) -> dict[str, Any]:
    """One entry of ``evaluations`` in results.json."""
    return {
        "task": task.name,
        "category": task.category,
        "variant": variant,
        "method": method,
        "split": task.eval_split,
        "n": preds.n,
        "main_metric": task.metrics[0],
        "metrics": {name: result.to_dict() for name, result in metrics.items()},
        "confusion": confusion_counts(preds),
        "hashes": {"task": _sha256(task.path.read_bytes()), "data": evaluated.sha256, **hashes},
        "origin": evaluated.origin,
        "license": task.license,
        "timing_s": round(elapsed, 3),
        "docs_per_s": round(preds.n / elapsed, 3) if elapsed > 0 else None,
    }


def _metric_names(task: TaskSpec, prompt: PromptSpec) -> list[str]:
    """The task's metrics; a generation prompt always reports ``unparseable_rate`` and skips
    ``accuracy_norm`` (which needs log-likelihoods)."""
    if prompt.method != "generation":
        return list(task.metrics)
    names = [name for name in task.metrics if name != "accuracy_norm"]
    return names + ["unparseable_rate"] * ("unparseable_rate" not in names)


def _read_answer(inst: Instance, extracted: str | None) -> int:
    """The choice an extracted answer names (-1: unparseable); free-form targets: 0 if it is the gold text."""
    if inst.answer_values:
        return answer_index(extracted, inst.answer_values)
    return 0 if extracted is not None and extracted.strip() == inst.gold_text.strip() else -1


def _generated_sample(task: TaskSpec, prompt: PromptSpec, inst: Instance, context: str, generations: list[str]) -> dict:
    """One document's record from its generation, or from the majority vote of several."""
    extracted = [extract_answer(text, prompt.answer.pattern) for text in generations]
    preds = [_read_answer(inst, answer) for answer in extracted]
    if len(generations) == 1:
        return _sample(task, prompt, inst, context, preds[0], generation=generations[0], extracted=extracted[0])
    # A vote is the answer's index (a free-form answer: its normalised text); unparseable answers do not vote.
    keys = [(p if p >= 0 else None) if inst.answer_values else (normalise(a) if a else None)
            for p, a in zip(preds, extracted)]
    vote = majority_vote(keys)
    chosen = vote.sample
    return _sample(task, prompt, inst, context, -1 if chosen is None else preds[chosen],
                   generations=list(generations), votes=extracted,
                   extracted=None if chosen is None else extracted[chosen], agreement=vote.agreement)


def _check_classifier(runner: Any, tasks: list[TaskSpec], mode: str) -> None:
    """A classification checkpoint answers a task only in fine-tuned mode, with the task's own label set."""
    if mode != "fine-tuned":
        raise SpecError(f"{runner.model_path} is a classification checkpoint: evaluate it with --mode fine-tuned")
    for task in tasks:
        if task.inputs is None or task.labels is None:
            raise SpecError(f"{task.path}: field 'inputs': a classification checkpoint needs the task's inputs and "
                            f"labels, and task '{task.name}' lacks them")
        if sorted(runner.labels) != sorted(task.labels):
            raise SpecError(f"{runner.model_path}: the checkpoint's head predicts {list(runner.labels)}, but task "
                            f"'{task.name}' has labels {list(task.labels)}: was it fine-tuned on another task?")


def _classify_one(runner: Any, task: TaskSpec, split_of, writer: RunWriter, *, seed: int, limit: int | None,
                  n_boot: int, progress: bool) -> dict[str, Any]:
    """A classification checkpoint on one task: the prediction is the head's most probable label."""
    from evalsuite.engines.classifier import encode_texts

    started = time.perf_counter()
    renderer = PromptRenderer(task, task.prompts[0])
    evaluated = split_of(task, task.eval_split)
    to_head = [runner.labels.index(label) for label in task.labels]  # task label k is head output to_head[k]
    n_docs = min(len(evaluated.docs), limit or len(evaluated.docs))
    bar = _progress_bar(n_docs, f"{task.name}/{CLASSIFIER_VARIANT}", progress)
    predicted, golds = [], []
    try:
        for chunk in _chunks(evaluated.docs, limit):
            texts = [renderer.inputs_of(doc, i) for i, doc in chunk]
            chunk_golds = [renderer.gold_of(doc, i, renderer.choices_of(doc, i))[0] for i, doc in chunk]
            requests = [encode_texts(runner.tokenizer, t, runner.max_length) for t in texts]
            try:
                answers = runner.classify(requests, progress=(lambda i, answer: bar.update(1)) if bar else None)
            except InvalidAnswer as exc:
                raise exc.named(f"task '{task.name}', variant '{CLASSIFIER_VARIANT}' (the classification head), "
                                f"document {chunk[exc.index][0]}") from None
            samples = []
            for (doc_id, _), inputs, gold, answer in zip(chunk, texts, chunk_golds, answers):
                logprobs = [answer[k] for k in to_head]
                pred = int(np.argmax(logprobs))
                samples.append({"task": task.name, "variant": CLASSIFIER_VARIANT, "doc_id": doc_id, "fewshot_ids": [],
                                "inputs": list(inputs), "choices": list(task.labels), "label_logprobs": logprobs,
                                "pred": pred, "gold": gold, "gold_text": task.labels[gold], "correct": pred == gold})
                predicted.append(pred)
            golds += chunk_golds
            writer.write_samples(samples)
    finally:
        if bar:
            bar.close()
    labels = tuple(task.labels)
    preds = Predictions(
        pred=np.array(predicted), gold=np.array(golds), n_classes=len(labels), labels=labels,
        positive=labels.index(task.positive) if task.positive else None,
        pred_text=tuple(labels[p] for p in predicted), gold_text=tuple(labels[g] for g in golds),
    )
    # Length normalisation has no meaning for a head's labels.
    metrics = compute_metrics([m for m in task.metrics if m != "accuracy_norm"], preds, n_boot=n_boot, seed=seed)
    elapsed = time.perf_counter() - started
    return _evaluation(task, CLASSIFIER_VARIANT, "classifier", preds, metrics, evaluated,
                       {"prompt": None, "fewshot_data": None}, elapsed)


def _sample(task: TaskSpec, prompt: PromptSpec, inst: Instance, context: str, pred: int, **fields: Any) -> dict:
    return {
        "task": task.name,
        "variant": prompt.name,
        "doc_id": inst.doc_id,
        "fewshot_ids": list(inst.fewshot_ids),
        "prompt": context,
        "choices": list(inst.continuations),
        **fields,
        "pred": pred,
        "gold": inst.gold,
        "gold_text": inst.gold_text,
        "correct": pred == inst.gold and pred >= 0,
    }


def _add_scores(instances: list[Instance], samples: list[dict]) -> None:
    """A graded task's predicted score per document (see :func:`evalsuite.scoring.expected_score`)."""
    for inst, sample in zip(instances, samples):
        values = inst.choice_scores
        if "logprobs" in sample:
            sample["score"] = expected_score(sample["logprobs"], values)
        else:  # a generated answer: the extracted choice's value, or the mean value when unparseable
            sample["score"] = values[sample["pred"]] if sample["pred"] >= 0 else float(np.mean(values))
        sample["gold_score"] = inst.gold_score


@dataclass
class _Outcomes:
    """What the metrics need of each evaluated document, gathered chunk by chunk: a few numbers and short
    answer strings per document, never its prompt or generations."""

    pred: list[int] = field(default_factory=list)
    gold: list[int] = field(default_factory=list)
    pred_norm: list[int | None] = field(default_factory=list)
    pred_text: list[str] = field(default_factory=list)
    gold_text: list[str] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    gold_score: list[float] = field(default_factory=list)
    levels: list[Any] = field(default_factory=list)  # each document's difficulty, None when it has none
    agreements: list[float] = field(default_factory=list)  # with several samples per document
    width: int = 1  # the most choices (or answer values) of any document

    def add(self, instances: list[Instance], samples: list[dict], levels: list[Any]) -> None:
        for inst, s, level in zip(instances, samples, levels):
            pred = s["pred"]
            self.pred.append(pred)
            self.gold.append(inst.gold)
            self.pred_norm.append(s.get("pred_norm"))
            # Interned: documents share the few distinct answer strings instead of holding a copy each.
            self.pred_text.append(sys.intern(str(s.get("extracted") or (inst.continuations[pred].strip()
                                                                        if pred >= 0 and inst.continuations else ""))))
            self.gold_text.append(sys.intern(inst.gold_text))
            if "score" in s:
                self.score.append(s["score"])
                self.gold_score.append(inst.gold_score)
            if "agreement" in s:
                self.agreements.append(s["agreement"])
            self.levels.append(level)
            self.width = max(self.width, len(inst.continuations), len(inst.answer_values))

    def predictions(self, task: TaskSpec) -> Predictions:
        width = max(len(task.labels or ()), self.width)
        labels = task.labels or tuple(chr(ord("A") + k) if width <= 26 else str(k) for k in range(width))
        gold = np.maximum(self.gold, 0)
        if min(self.gold) < 0:
            # Free-form targets: correctness is exact match of the answer, so code it as class 0 vs unparseable.
            gold = np.zeros(len(self.gold), dtype=int)
        return Predictions(
            pred=np.array(self.pred),
            gold=gold,
            n_classes=len(labels),
            labels=labels,
            positive=labels.index(task.positive) if task.positive else None,
            pred_norm=np.array(self.pred_norm) if None not in self.pred_norm else None,
            pred_text=tuple(self.pred_text),
            gold_text=tuple(self.gold_text),
            score=np.array(self.score) if task.graded else None,
            gold_score=np.array(self.gold_score) if task.graded else None,
        )


def _progress_bar(total: int, name: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="doc", dynamic_ncols=True)


def show_prompts(
    catalog: dict[str, TaskSpec], name: str, prompt: str = "all", shots: int = 0, doc: int = 0,
    seed: int = 0, data_dir: str | Path | None = None, data_seed: int | None = None,
) -> list[tuple[str, str]]:
    """The rendered prompt of each variant for one document: context, then the scored answers
    (``data_seed``: as in :func:`evaluate`, a generated task's fresh test set)."""
    task = select_tasks(catalog, name)[0]
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    cache: dict[tuple[str, str], Split] = {}

    def split_of(t: TaskSpec, split: str) -> Split:
        if (t.name, split) not in cache:
            cache[t.name, split] = load_split(t, split, data_dir, data_seed)
        return cache[t.name, split]

    shown = []
    for variant in _variants(task, None if prompt == "default" else prompt):
        instances, _, _ = _instances(task, PromptRenderer(task, variant), split_of, shots=shots, seed=seed,
                                     limit=doc + 1, sampler=None)
        if not 0 <= doc < len(instances):
            raise SpecError(f"task '{task.name}' has {len(instances)} documents in split '{task.eval_split}'; --doc {doc} is out of range")
        inst = instances[doc]
        if variant.method == "loglikelihood":
            answers = "\n".join(f"  [{'x' if k == inst.gold else ' '}] {c!r}" for k, c in enumerate(inst.continuations))
            tail = f"\n--- scored continuations ([x] = gold) ---\n{answers}"
        else:
            gold = inst.answer_values[inst.gold] if 0 <= inst.gold < len(inst.answer_values) else inst.gold_text
            tail = f"\n--- generated, answer read by /{variant.answer.pattern}/; gold: {gold!r} ---"
        shown.append((variant.name, inst.context + tail))
    return shown
