"""Render: documents through a prompt variant with their few-shot examples, into engine-ready instances."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence

from evalsuite.data import Split
from evalsuite.errors import SpecError
from evalsuite.prompting import FewshotSampler, Instance, PromptRenderer
from evalsuite.spec import PromptSpec, TaskSpec

# Evaluated documents are rendered, answered, written to samples.jsonl and dropped this many at a time, so a
# run's memory does not grow with the split; a usual test set still goes to the engine in one call, which
# lets it batch by length and share prompt prefixes across all of it.
CHUNK_DOCS = 2048

SplitLoader = Callable[[TaskSpec, str], Split]
# Few-shot example indices chosen per (task, variant, document, draw), carried from the pre-flight check to the run.
Picks = dict[tuple[str, str, int, int], list[int]]


def draw_salt(task: TaskSpec, draw: int) -> str:
    """What the few-shot sampler of a task's ``draw`` mixes with the run's seed: the task's name for draw 0
    (the choice of a run with one draw), ``<task>#draw<k>`` for draw k > 0. The sampler seeds its generator
    with ``<seed>:<salt>[:<document>]``, so no draw of seed s repeats a draw of seed s + 1."""
    return task.name if draw == 0 else f"{task.name}#draw{draw}"


def fewshot_renderer(
    task: TaskSpec, renderer: PromptRenderer, split_of: SplitLoader, *, shots: int, seed: int, sampler: str | None,
    picks: Picks | None = None, draw: int = 0,
) -> tuple[Callable[[dict, int], Instance], Split | None]:
    """A function rendering a document (given its index) with its few-shot examples, and their pool.

    ``draw`` k > 0 chooses the examples of a run's k-th few-shot draw (``--fewshot-draws``), seeded by
    :func:`draw_salt`: draw 0 is the choice of a run without draws. With the ``fixed`` sampler each draw is
    another fixed set shared by every document; the ``first`` sampler has one choice only, so it takes no draws.
    Choosing a document's examples takes a pass over the pool, so ``picks`` carries the choices from one
    rendering of the documents to the next: a document's choice is stored there when missing, and taken out
    (not chosen again) when present."""
    if shots == 0:
        return renderer.render, None
    if task.fewshot_split is None:
        raise SpecError(f"{task.path}: field 'splits.fewshot' is needed for few-shot runs of task '{task.name}'")
    pool = split_of(task, task.fewshot_split)
    examples = list(pool.docs)  # read by index; a few-shot split is small
    method = sampler or task.fewshot_sampler
    if draw > 0 and method == "first":
        raise SpecError(f"task '{task.name}': --fewshot-draws needs a sampler that can draw other examples, and the "
                        "'first' sampler always takes the pool's first ones: use --fewshot-sampler random, fixed or "
                        "balanced")
    labels = None
    if method == "balanced":
        labels = [renderer.gold_of(d, i, renderer.choices_of(d, i))[0] for i, d in enumerate(examples)]
    try:
        chooser = FewshotSampler(
            range(len(examples)), k=shots, method=method, seed=seed, salt=draw_salt(task, draw), labels=labels,
            same_split=task.fewshot_split == task.eval_split,
        )
    except ValueError as exc:
        raise SpecError(f"task '{task.name}': few-shot selection failed: {exc}") from None

    def render(doc: dict, doc_id: int) -> Instance:
        key = (task.name, renderer.prompt.name, doc_id, draw)
        if picks is not None and key in picks:
            pick = picks.pop(key)
        else:
            try:
                pick = chooser.select(doc_id)
            except ValueError as exc:
                raise SpecError(f"task '{task.name}': few-shot selection failed: {exc}") from None
            if picks is not None:
                picks[key] = pick
        return renderer.render(doc, doc_id, [(j, examples[j]) for j in pick])

    return render, pool


def render_instances(
    task: TaskSpec, renderer: PromptRenderer, split_of: SplitLoader, *, shots: int, seed: int, limit: int | None,
    sampler: str | None,
) -> tuple[list[Instance], Split, Split | None]:
    """Every evaluated document (the first ``limit``) rendered, the evaluated split and the few-shot pool."""
    evaluated = split_of(task, task.eval_split)
    render, pool = fewshot_renderer(task, renderer, split_of, shots=shots, seed=seed, sampler=sampler)
    return [render(doc, i) for i, doc in enumerate(itertools.islice(evaluated.docs, limit))], evaluated, pool


def no_choices(task: TaskSpec, prompt: PromptSpec) -> SpecError:
    """The error for a log-likelihood prompt whose task gives no choices to score."""
    return SpecError(f"{task.path}: task '{task.name}' has no 'choices' for log-likelihood prompt {prompt.path}")


def shard_range(n_docs: int, shard: tuple[int, int] | None) -> range:
    """The indices a run evaluates of its ``n_docs`` documents: all, or shard ``(i, N)``'s contiguous part.

    Shard i of N takes documents ⌊i·n/N⌋ to ⌊(i+1)·n/N⌋ (excluded) of the evaluated order, so the N parts
    tile the documents, differ in size by one at most, and put back in shard order give the unsharded order.
    A document's number (and so its few-shot examples) is the same in a shard as in the whole run."""
    if shard is None:
        return range(n_docs)
    index, count = shard
    return range(index * n_docs // count, (index + 1) * n_docs // count)


def evaluated_range(docs: Sequence[dict], limit: int | None, shard: tuple[int, int] | None = None) -> range:
    """The numbers of the documents a run evaluates: the first ``limit`` (all when None), or a shard's part."""
    return shard_range(min(len(docs), limit or len(docs)), shard)


def numbered_docs(docs: Iterable[dict], limit: int | None, shard: tuple[int, int] | None = None,
                  ) -> Iterator[tuple[int, dict]]:
    """The documents a run evaluates with their numbers (see :func:`evaluated_range`; ``docs`` needs a length
    only for a shard)."""
    if shard is None:
        return enumerate(itertools.islice(docs, limit))
    part = evaluated_range(docs, limit, shard)  # type: ignore[arg-type]
    return itertools.islice(enumerate(docs), part.start, part.stop)


def chunks(docs: Iterable[dict], limit: int | None, shard: tuple[int, int] | None = None,
           ) -> Iterator[list[tuple[int, dict]]]:
    """The documents a run evaluates (see :func:`numbered_docs`) with their numbers, ``CHUNK_DOCS`` at a time."""
    numbered = numbered_docs(docs, limit, shard)
    while chunk := list(itertools.islice(numbered, CHUNK_DOCS)):
        yield chunk

