"""Answer: rendered instances to the engine, and its answers back as samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from evalsuite.engines import Engine, GenerationRequest, encode_choices, encode_context
from evalsuite.engines.base import InvalidAnswer
from evalsuite.errors import SpecError
from evalsuite.pipeline.render import apply_chat, no_choices
from evalsuite.prompting import Instance
from evalsuite.results.records import Sample
from evalsuite.sandbox import LimitError
from evalsuite.scoring import answer_index, choose, expected_score, extract_answer, majority_vote, normalise
from evalsuite.spec import PromptSpec, TaskSpec

Progress = Callable[[int, Any], None] | None


def answer(runner: Engine, task: TaskSpec, prompt: PromptSpec, instances: list[Instance], *, chat_template: bool,
           seed: int, n_samples: int, temperature: float, progress: Progress) -> list[Sample]:
    """The engine's answers to rendered documents, as their samples (one engine call)."""
    tokenizer = runner.tokenizer
    contexts = [apply_chat(tokenizer, i.context) if chat_template else i.context for i in instances]
    if prompt.method == "loglikelihood":
        if any(not inst.continuations for inst in instances):
            raise no_choices(task, prompt)
        requests = [encode_choices(tokenizer, c, inst.continuations) for c, inst in zip(contexts, instances)]
        try:
            answers = runner.loglikelihood(requests, progress=progress)
        except InvalidAnswer as exc:
            raise exc.named(f"task '{task.name}', prompt variant '{prompt.name}', document "
                            f"{instances[exc.index].doc_id}") from None
        samples = []
        for inst, context, scores in zip(instances, contexts, answers):
            logprobs = [s.logprob for s in scores]
            pred, pred_norm = choose(logprobs, inst.continuations)
            samples.append(_sample(task, prompt, inst, context, pred, pred_norm=pred_norm, logprobs=tuple(logprobs),
                                   tokens=tuple(s.tokens for s in scores), greedy=tuple(s.greedy for s in scores)))
        return samples
    # Sample k of every document has seed seed * 1000 + k: samples differ, and each is reproducible.
    requests = [
        GenerationRequest(encode_context(tokenizer, c), prompt.max_tokens, prompt.stop, temperature, seed * 1000 + k)
        for c in contexts for k in range(n_samples)
    ]
    texts = runner.generate(requests, progress=progress)
    return [_generated_sample(task, prompt, inst, context, texts[d * n_samples : (d + 1) * n_samples])
            for d, (inst, context) in enumerate(zip(instances, contexts))]


def with_scores(instances: Sequence[Instance], samples: list[Sample]) -> list[Sample]:
    """A graded task's samples with their predicted and gold scores (see :func:`evalsuite.scoring.expected_score`)."""
    out = []
    for inst, sample in zip(instances, samples):
        values = inst.choice_scores
        if sample.logprobs is not None:
            score = expected_score(sample.logprobs, values)
        else:  # a generated answer: the extracted choice's value, or the mean value when unparseable
            score = values[sample.pred] if sample.pred >= 0 else float(np.mean(values))
        out.append(replace(sample, score=score, gold_score=inst.gold_score))
    return out


def _read_answer(inst: Instance, extracted: str | None) -> int:
    """The choice an extracted answer names (-1: unparseable); free-form targets: 0 if it is the gold text."""
    if inst.answer_values:
        return answer_index(extracted, inst.answer_values)
    return 0 if extracted is not None and extracted.strip() == inst.gold_text.strip() else -1


def _generated_sample(task: TaskSpec, prompt: PromptSpec, inst: Instance, context: str,
                      generations: list[str]) -> Sample:
    """One document's sample from its generation, or from the majority vote of several."""
    try:
        extracted = [extract_answer(text, prompt.answer.pattern) for text in generations]
    except LimitError as exc:
        raise SpecError(f"{prompt.path}: field 'header.answer.pattern' on document {inst.doc_id} of task "
                        f"'{task.name}': {exc}") from None
    preds = [_read_answer(inst, answer) for answer in extracted]
    if len(generations) == 1:
        return _sample(task, prompt, inst, context, preds[0], generation=generations[0], extracted=extracted[0])
    # A vote is the answer's index (a free-form answer: its normalised text); unparseable answers do not vote.
    keys = [(p if p >= 0 else None) if inst.answer_values else (normalise(a) if a else None)
            for p, a in zip(preds, extracted)]
    vote = majority_vote(keys)
    chosen = vote.sample
    return _sample(task, prompt, inst, context, -1 if chosen is None else preds[chosen],
                   generations=tuple(generations), votes=tuple(extracted),
                   extracted=None if chosen is None else extracted[chosen], agreement=vote.agreement)


def _sample(task: TaskSpec, prompt: PromptSpec, inst: Instance, context: str, pred: int, **fields: Any) -> Sample:
    return Sample(task=task.name, variant=prompt.name, doc_id=inst.doc_id, fewshot_ids=tuple(inst.fewshot_ids),
                  prompt=context, choices=tuple(inst.continuations), pred=pred, gold=inst.gold,
                  gold_text=inst.gold_text, **fields)
