"""Everything a run can check without a model, checked before one loads.

Each evaluated document of each task and prompt variant renders, with its few-shot examples, exactly as the
run will render it (each prompt is dropped once rendered; only the indices of its examples are kept, for the
run to reuse); the few-shot pool holds enough examples; the output folder takes files; the request cache
opens. A run bound to fail on these fails in seconds and leaves nothing behind.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from evalsuite.engines import Engine
from evalsuite.engines.cache import RequestCache
from evalsuite.engines.classifier import is_classifier
from evalsuite.errors import SpecError
from evalsuite.pipeline.render import Picks, SplitLoader, fewshot_renderer, no_choices
from evalsuite.prompting import ChatFormat, PromptRenderer
from evalsuite.results import check_folder
from evalsuite.spec import PromptSpec, RunSpec, TaskSpec


def answered_by_head(engine: str | Engine, model: str) -> bool:
    """Whether a classification head answers (prompts then play no part). Known before loading for a built
    engine or a local checkpoint; a hub checkpoint's head is found, and checked, once it is loaded."""
    from evalsuite.engines import Classifier

    if not isinstance(engine, str):
        return isinstance(engine, Classifier)
    return engine == "hf" and (Path(model) / "config.json").is_file() and is_classifier(model)


def preflight(plan: list[tuple[TaskSpec, PromptSpec]], splits: SplitLoader, spec: RunSpec, *, by_head: bool) -> Picks:
    """Check the run's documents, output folder and cache; return the few-shot choices made on the way."""
    picks: Picks = {}
    if by_head:  # as the classification stage reads each document
        for task in {task.name: task for task, _ in plan}.values():
            renderer = PromptRenderer(task, task.prompts[0])
            for i, doc in enumerate(itertools.islice(splits(task, task.eval_split).docs, spec.limit)):
                renderer.inputs_of(doc, i)
                renderer.gold_of(doc, i, renderer.choices_of(doc, i))
    else:  # as the render stage renders each document
        for task, prompt in plan:
            check_fewshot_pool(task, splits, spec.shots)
            renderer = PromptRenderer(task, prompt, ChatFormat(spec.system_prompt, spec.fewshot_as_multiturn))
            render, _ = fewshot_renderer(task, renderer, splits, shots=spec.shots, seed=spec.seed,
                                         sampler=spec.fewshot_sampler, picks=picks)
            for i, doc in enumerate(itertools.islice(splits(task, task.eval_split).docs, spec.limit)):
                if not render(doc, i).continuations and prompt.method == "loglikelihood":
                    raise no_choices(task, prompt)
    check_folder(spec.output)
    if spec.cache is not False:
        RequestCache(None if spec.cache is True else spec.cache).close()
    return picks


def check_fewshot_pool(task: TaskSpec, splits: SplitLoader, shots: int) -> None:
    """Enough few-shot examples for ``shots``: an evaluated document is never its own example."""
    if not shots or task.fewshot_split is None:
        return
    same = task.fewshot_split == task.eval_split
    usable = len(splits(task, task.fewshot_split).docs) - same
    if shots > usable:
        raise SpecError(
            f"{task.path}: --shots {shots} is more than the {usable} examples that task '{task.name}' can draw from "
            f"its few-shot split '{task.fewshot_split}'{' (a document is never its own example)' if same else ''}: "
            + (f"use --shots {usable} or fewer" if usable else "evaluate it zero-shot"))
