"""Answer: rendered instances to the engine, and its answers back as samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from evalsuite.engines import Engine, Generation, GenerationRequest, encode_choices, encode_context
from evalsuite.engines.base import InvalidAnswer, answer_parts
from evalsuite.errors import SpecError
from evalsuite.pipeline.render import no_choices
from evalsuite.prompting import Instance, chat_text
from evalsuite.prompting.chat import as_dicts
from evalsuite.results.records import Sample
from evalsuite.sandbox import LimitError
from evalsuite.scoring import (
    Thinking,
    answer_index,
    choose,
    expected_score,
    extract_answer,
    flexible_answer,
    majority_vote,
    normalise,
    split_thinking,
)
from evalsuite.spec import PromptSpec, RunSpec, TaskSpec

Progress = Callable[[int, Any], None] | None


def answer(runner: Engine, task: TaskSpec, prompt: PromptSpec, instances: list[Instance], spec: RunSpec, *,
           n_samples: int, progress: Progress) -> list[Sample]:
    """The engine's answers to rendered documents, as their samples (one engine call).

    An engine that takes conversations (``conversational``) receives each document's messages; the others its
    token ids, of the plain text or, in a chat-formatted run, of the messages through the model's chat template.
    """
    tokenizer = runner.tokenizer
    conversational = getattr(runner, "conversational", False)
    templated = spec.chat_template and not conversational
    contexts = [chat_text(tokenizer, i.messages) if templated else i.context for i in instances]
    conversations = [tuple(as_dicts(i.messages)) if spec.chat_template or conversational else None
                     for i in instances]
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
        for inst, context, conversation, scores in zip(instances, contexts, conversations, answers):
            logprobs = [s.logprob for s in scores]
            pred, pred_norm = choose(logprobs, inst.continuations)
            samples.append(_sample(task, prompt, inst, context, pred, pred_norm=pred_norm, logprobs=tuple(logprobs),
                                   tokens=tuple(s.tokens for s in scores), greedy=tuple(s.greedy for s in scores),
                                   messages=conversation))
        return samples
    # Sample k of every document has the k-th sampling seed (RunSpec.sampling_seeds): each is reproducible.
    max_tokens = spec.max_new_tokens or prompt.max_tokens
    seeds = spec.sampling_seeds()[:n_samples]
    inputs = [((), inst.messages) if conversational else (encode_context(tokenizer, c), None)
              for inst, c in zip(instances, contexts)]
    requests = [GenerationRequest(ids, max_tokens, prompt.stop, spec.temperature, seed, messages)
                for ids, messages in inputs for seed in seeds]
    answers = runner.generate(requests, progress=progress)
    reader = _Reader(spec, tokenizer, conversational)
    sampled = seeds if spec.temperature > 0 else None  # greedy decoding uses no seed
    return [_generated_sample(task, prompt, inst, context, answers[d * n_samples : (d + 1) * n_samples], reader,
                              conversation, sampled)
            for d, (inst, context, conversation) in enumerate(zip(instances, contexts, conversations))]


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


def _flexible(inst: Instance, pattern: str | None, text: str | None, strict: str | None, pred: int) -> str | None:
    """The flexible rule's answer: the strict one where that reads (names an allowed value; free-form targets:
    any answer), else the fallback's reading of the same text (none when the thinking never closed)."""
    reads = pred >= 0 if inst.answer_values else strict is not None
    return strict if reads or text is None else flexible_answer(text, inst.answer_values, pattern)


def _vote(inst: Instance, extracted: Sequence[str | None], preds: Sequence[int]) -> tuple[int, str | None, Any]:
    """The majority vote of one rule's answers: its prediction, its answer text and the vote. A vote is the
    answer's index (a free-form answer: its normalised text); unparseable answers do not vote."""
    keys = [(p if p >= 0 else None) if inst.answer_values else (normalise(a) if a else None)
            for p, a in zip(preds, extracted)]
    vote = majority_vote(keys)
    chosen = vote.sample
    return (-1, None, vote) if chosen is None else (preds[chosen], extracted[chosen], vote)


class _Reader:
    """Where a run reads answers in generations: with ``--think``, the text left once the thinking is removed
    (:func:`~evalsuite.scoring.split_thinking`); and how long thinking and answers are, in the tokenizer's
    tokens, or in characters for an engine without a tokenizer."""

    def __init__(self, spec: RunSpec, tokenizer: Any, conversational: bool):
        self.tags = spec.think_tags if spec.think else None
        self.tokenizer, self.conversational = tokenizer, conversational
        self.unit = "tokens" if tokenizer is not None else "characters"

    def read(self, generated: str | Generation, context: str) -> tuple[str, str | None, Thinking | None]:
        """The generation's text, the text its answer is read from (None: its thinking never closed), and its
        split. A token engine's prompt that ends with the opening tag started the model thinking (a chat API
        applies its template on the server, where this cannot be seen)."""
        text, reasoning = answer_parts(generated)
        if self.tags is None:
            return text or "", text or "", None
        opened = not self.conversational and context.rstrip().endswith(self.tags[0])
        parts = split_thinking(text, self.tags, reasoning=reasoning, opened=opened)
        return text or "", parts.answer, parts

    def lengths(self, splits: Sequence[Thinking]) -> dict[str, Any]:
        """Per document: thinking and answer lengths (means over its samples), their unit, unclosed blocks."""
        thinking = [self._length(s.thinking) for s in splits]
        answers = [self._length(s.answer or "") for s in splits]
        mean = (lambda v: v[0]) if len(splits) == 1 else (lambda v: round(float(np.mean(v)), 1))  # noqa: E731
        return {"thinking": mean(thinking), "answer": mean(answers), "unit": self.unit,
                "unclosed": sum(s.answer is None for s in splits)}

    def _length(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _generated_sample(task: TaskSpec, prompt: PromptSpec, inst: Instance, context: str,
                      generated: Sequence[str | Generation], reader: _Reader, messages: Any,
                      seeds: Sequence[int] | None = None) -> Sample:
    """One document's sample from its generation, or from the majority vote of several. Sampled generations
    (``seeds``: one per generation) record their seeds and whether each, read by the strict rule, is correct."""
    texts, readable, splits = zip(*(reader.read(g, context) for g in generated))
    reasonings = tuple(answer_parts(g)[1] for g in generated)
    rule = prompt.answer
    field = "pattern"
    try:
        extracted = [None if text is None else extract_answer(text, rule.pattern) for text in readable]
        preds = [_read_answer(inst, answer) for answer in extracted]
        field = "flexible"
        flexible = [_flexible(inst, rule.flexible, *read) for read in zip(readable, extracted, preds)]
    except LimitError as exc:
        raise SpecError(f"{prompt.path}: field 'header.answer.{field}' on document {inst.doc_id} of task "
                        f"'{task.name}': {exc}") from None
    flexible_preds = [_read_answer(inst, answer) for answer in flexible]
    fields: dict[str, Any] = {"messages": messages, "thinking": reader.lengths(splits) if reader.tags else None}
    if seeds is not None:
        gold = inst.gold if inst.gold >= 0 else 0  # a free-form target: pred 0 is the gold text (_read_answer)
        fields.update(seeds=tuple(seeds), correct_samples=tuple(p == gold for p in preds))
    if len(generated) == 1:
        return _sample(task, prompt, inst, context, preds[0], generation=texts[0], extracted=extracted[0],
                       pred_flexible=flexible_preds[0], extracted_flexible=flexible[0], reasoning=reasonings[0],
                       **fields)
    pred, answer, vote = _vote(inst, extracted, preds)
    pred_flexible, answer_flexible, _ = _vote(inst, flexible, flexible_preds)  # each rule votes on its own
    return _sample(task, prompt, inst, context, pred, generations=texts, votes=tuple(extracted),
                   reasonings=reasonings if any(reasonings) else None, extracted=answer, agreement=vote.agreement,
                   pred_flexible=pred_flexible, extracted_flexible=answer_flexible, votes_flexible=tuple(flexible),
                   **fields)


def _sample(task: TaskSpec, prompt: PromptSpec, inst: Instance, context: str, pred: int, **fields: Any) -> Sample:
    return Sample(task=task.name, variant=prompt.name, doc_id=inst.doc_id, fewshot_ids=tuple(inst.fewshot_ids),
                  prompt=context, choices=tuple(inst.continuations), pred=pred, gold=inst.gold,
                  gold_text=inst.gold_text, cluster=inst.cluster, permutation=inst.permutation, **fields)
