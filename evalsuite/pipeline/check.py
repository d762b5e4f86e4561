"""Everything a run can check without a model, checked before one loads; and ``evalsuite check``.

Each evaluated document of each task and prompt variant renders, with its few-shot examples, exactly as the
run will render it (each prompt is dropped once rendered; only the indices of its examples are kept, for the
run to reuse); the few-shot pool holds enough examples; the output folder takes files; the request cache
opens. A run bound to fail on these fails in seconds and leaves nothing behind.

The same checks run in one of two modes (:class:`Problems`): a run's pre-flight check stops at the first
problem; :func:`check_tasks` (``evalsuite check``) goes on and collects every one, over every split, every
prompt variant, zero-shot and few-shot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from evalsuite.data import Split
from evalsuite.engines import Classifier, Engine
from evalsuite.engines.cache import RequestCache
from evalsuite.engines.classifier import is_classifier
from evalsuite.errors import EvalsuiteError, SpecError
from evalsuite.pipeline.load import Splits, check_metrics, select_tasks, variants
from evalsuite.pipeline.render import Picks, SplitLoader, evaluated_range, fewshot_renderer, no_choices, numbered_docs
from evalsuite.prompting import ChatFormat, PromptRenderer
from evalsuite.results import check_folder
from evalsuite.spec import PromptSpec, RunSpec, TaskSpec


@dataclass(frozen=True)
class Problem:
    """One problem found: the task, where in it (split, prompt variant, shots; empty for the task itself),
    and the message, which names the file, field, document and template line."""

    task: str
    where: str
    message: str


@dataclass
class Attempt:
    failed: bool = False


@dataclass
class Problems:
    """Where checks put what they find: raised at once (``collect=False``, a run's pre-flight check) or
    collected, every one (``collect=True``, ``evalsuite check``), with the number of documents rendered."""

    collect: bool = False
    found: list[Problem] = field(default_factory=list)
    rendered: int = 0
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    @contextmanager
    def of(self, task: str, where: str = "") -> Iterator[Attempt]:
        """Run the block; an error of the evalsuite family in it is raised, or collected (the block stops there)."""
        attempt = Attempt()
        try:
            yield attempt
        except EvalsuiteError as exc:
            if not self.collect:
                raise
            attempt.failed = True
            self.add(task, where, str(exc))

    def add(self, task: str, where: str, message: str) -> None:
        # The same message again (a task's target under another variant, a bad example met again) is one problem.
        if (task, message) not in self._seen:
            self._seen.add((task, message))
            self.found.append(Problem(task, where, message))


def answered_by_head(engine: str | Engine, model: str) -> bool:
    """Whether a classification head answers (prompts then play no part). Known before loading for a built
    engine or a local checkpoint; a hub checkpoint's head is found, and checked, once it is loaded."""
    if not isinstance(engine, str):
        return isinstance(engine, Classifier)
    return engine == "hf" and (Path(model) / "config.json").is_file() and is_classifier(model)


def preflight(plan: list[tuple[TaskSpec, PromptSpec]], splits: SplitLoader, spec: RunSpec, *, by_head: bool) -> Picks:
    """Check the run's documents, output folder and cache; return the few-shot choices made on the way."""
    picks: Picks = {}
    problems = Problems()  # the first problem stops the run
    tasks = {task.name: task for task, _ in plan}.values()
    if spec.shard is not None:
        for task in tasks:
            check_shard(task, splits, spec.limit, spec.shard)
    if by_head:  # as the classification stage reads each document
        for task in tasks:
            docs = (doc for _, doc in numbered_docs(splits(task, task.eval_split).docs, spec.limit, spec.shard))
            check_inputs(task, docs, problems)
    else:  # as the render stage renders each document
        for task, prompt in plan:
            for draw in range(spec.fewshot_draws):
                check_documents(task, prompt, splits, problems, shots=spec.shots, seed=spec.seed,
                                sampler=spec.fewshot_sampler, limit=spec.limit, picks=picks,
                                chat=ChatFormat(spec.system_prompt, spec.fewshot_as_multiturn), shard=spec.shard,
                                permute=spec.permute_choices, draw=draw)
    check_folder(spec.output)
    if spec.cache is not False:
        RequestCache(None if spec.cache is True else spec.cache).close()
    return picks


def check_documents(task: TaskSpec, prompt: PromptSpec, splits: SplitLoader, problems: Problems, *, shots: int,
                    seed: int, sampler: str | None, limit: int | None = None, picks: Picks | None = None,
                    skip: Sequence[int] = (), chat: ChatFormat = ChatFormat(),
                    shard: tuple[int, int] | None = None, permute: bool = False, draw: int = 0) -> set[int]:
    """Render the evaluated documents (the first ``limit``, or the ``shard``'s part of them, but those in
    ``skip``) through ``prompt`` with ``shots`` examples each (those of few-shot ``draw``), as the render stage
    will; return the numbers of the documents that failed."""
    setting = f"{prompt.name}, {shots}-shot" + (f", few-shot draw {draw}" if draw else "")
    with problems.of(task.name, f"split '{task.eval_split}', {setting}") as setup:
        evaluated = splits(task, task.eval_split)
        check_fewshot_pool(task, splits, shots)
        render, _ = fewshot_renderer(task, PromptRenderer(task, prompt, chat, permute), splits, shots=shots, seed=seed,
                                     sampler=sampler, picks=picks, draw=draw)
    if setup.failed:
        return set()
    where = f"{_named(evaluated)}, {setting}"
    failed, skip = set(), set(skip)
    for i, doc in numbered_docs(evaluated.docs, limit, shard):
        if i in skip:
            continue
        problems.rendered += 1
        with problems.of(task.name, where) as attempt:
            if not render(doc, i).continuations and prompt.method == "loglikelihood":
                raise no_choices(task, prompt)
        if attempt.failed:
            failed.add(i)
    return failed


def _named(split: Split) -> str:
    """A split as a problem's heading names it: with its origin, the file (and rows) its documents come from."""
    return f"split '{split.name}' ({split.origin})"


def check_inputs(task: TaskSpec, docs: Iterator[dict], problems: Problems, where: str = "") -> None:
    """The text (pair) and label a classification head reads from each document, as the classification stage
    reads them."""
    renderer = PromptRenderer(task, task.prompts[0])
    for i, doc in enumerate(docs):
        with problems.of(task.name, where):
            renderer.inputs_of(doc, i)
            renderer.gold_of(doc, i, renderer.choices_of(doc, i))


def check_shard(task: TaskSpec, splits: SplitLoader, limit: int | None, shard: tuple[int, int]) -> None:
    """A shard gets at least one document of each task (a part with none could not be scored)."""
    docs = splits(task, task.eval_split).docs
    if not evaluated_range(docs, limit, shard):
        index, count = shard
        n_docs = len(evaluated_range(docs, limit))
        raise SpecError(f"--shard {index}/{count}: task '{task.name}' has {n_docs} documents to evaluate, too few "
                        f"for {count} shards: split the run into {n_docs} shards or fewer")


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


# --------------------------------------------------------------------------- evalsuite check


@dataclass(frozen=True)
class CheckReport:
    """What ``evalsuite check`` looked at, and every problem it found."""

    tasks: tuple[str, ...]
    splits: int
    documents: int
    variants: int
    shots: tuple[int, ...]
    rendered: int
    problems: tuple[Problem, ...]


def check_tasks(selection: Sequence[str], *, task_dirs: Sequence[Path] = (), prompt_dirs: Sequence[Path] = (),
                data_dir: Path | None = None, prompts: str | Sequence[str] = "all",
                shots: Sequence[int] | None = None, seed: int = 0) -> CheckReport:
    """Check tasks without a model, collecting every problem: each split loads (evaluated, few-shot, train,
    validation); every evaluated document renders under every prompt variant asked for with each number of
    ``shots`` (default 0 and :data:`~evalsuite.spec.DEFAULT_SHOTS`; a few-shot setting only for tasks with a
    few-shot split), its target within its choices or
    labels (graded values, classification inputs where the task has them); every few-shot example renders
    as an example; the few-shot pool is large enough; train and validation documents render zero-shot under
    the first variant."""
    from evalsuite.data import default_data_dir
    from evalsuite.spec import DEFAULT_SHOTS, load_tasks

    shots = (0, DEFAULT_SHOTS) if shots is None else tuple(shots)
    if min(shots, default=0) < 0:
        raise SpecError(f"--shots must be 0 or more, got {min(shots)}")
    problems = Problems(collect=True)
    catalog = load_tasks(task_dirs, prompt_dirs)
    tasks: dict[str, TaskSpec] = {}
    for item in selection:
        broken = [] if item in catalog else [b for b in catalog.broken if b.selected_by(item)]
        for file in broken:
            problems.add(file.name, "", str(file.error))
        with problems.of(item):
            try:
                tasks.update((t.name, t) for t in select_tasks(dict(catalog), item))
            except SpecError:
                if not broken:
                    raise
    splits = Splits(data_dir or default_data_dir())
    n_splits = n_docs = n_variants = 0
    for task in tasks.values():
        with problems.of(task.name):
            check_metrics(task)
        with problems.of(task.name) as chosen:
            prompted = variants(task, prompts)
        if chosen.failed:
            continue
        n_variants += len(prompted)
        loaded = {}
        for name in dict.fromkeys((task.eval_split, task.fewshot_split, task.train_split, task.validation_split)):
            if name is not None:
                with problems.of(task.name, f"split '{name}'"):
                    loaded[name] = splits(task, name)
        n_splits += len(loaded)
        n_docs += sum(len(split.docs) for split in loaded.values())
        if task.eval_split not in loaded:
            continue
        few = [k for k in shots if k > 0 and task.fewshot_split in loaded]
        for prompt in prompted:
            failed = check_documents(task, prompt, splits, problems, shots=0, seed=seed, sampler=None)
            if few:
                _check_examples(task, prompt, loaded[task.fewshot_split], problems)
            for k in few:  # documents that failed alone would fail again, only later
                check_documents(task, prompt, splits, problems, shots=k, seed=seed, sampler=None, skip=failed)
        if task.inputs is not None:
            evaluated = loaded[task.eval_split]
            check_inputs(task, iter(evaluated.docs), problems, f"{_named(evaluated)}, classification inputs")
        for name, split in loaded.items():
            if name not in (task.eval_split, task.fewshot_split):
                _check_split(task, prompted[0], split, problems)
    return CheckReport(tuple(tasks), n_splits, n_docs, n_variants, tuple(shots), problems.rendered,
                       tuple(problems.found))


def _check_examples(task: TaskSpec, prompt: PromptSpec, pool: Split, problems: Problems) -> None:
    """Every document of the few-shot split rendered as a solved example, as a few-shot prompt shows it."""
    renderer = PromptRenderer(task, prompt)
    for j, doc in enumerate(pool.docs):
        problems.rendered += 1
        with problems.of(task.name, f"{_named(pool)} as few-shot examples, {prompt.name}"):
            renderer.example(doc, j)


def _check_split(task: TaskSpec, prompt: PromptSpec, split: Split, problems: Problems) -> None:
    """A split neither evaluated nor drawn from (train, validation): each document rendered zero-shot."""
    renderer = PromptRenderer(task, prompt)
    for i, doc in enumerate(split.docs):
        problems.rendered += 1
        with problems.of(task.name, f"{_named(split)}, {prompt.name}, 0-shot"):
            renderer.render(doc, i)
    if task.inputs is not None:
        check_inputs(task, iter(split.docs), problems, f"{_named(split)}, classification inputs")


def describe_report(report: CheckReport, *, per_kind: int = 3) -> list[str]:
    """The report as lines: a summary, then the problems grouped by task and where; problems that differ
    only in their document number show ``per_kind`` times, then as a count with the documents' numbers."""
    settings = "zero-shot" if set(report.shots) <= {0} else (
        "shots " + ", ".join(map(str, sorted(set(report.shots)))) + " where the task has a few-shot split")
    summary = (f"{len(report.tasks)} task(s), {report.splits} split(s), {report.documents} documents, "
               f"{report.variants} prompt variant(s) ({settings}; {report.rendered} renderings)")
    if not report.problems:
        return [f"checked {summary}: no problems"]
    affected = {p.task for p in report.problems}
    lines = [f"{len(report.problems)} problem(s) in {len(affected)} task(s); checked {summary}"]
    groups: dict[tuple[str, str], dict[str, list[str]]] = {}
    for problem in report.problems:
        kind = _DOCUMENT.sub("document #", problem.message)
        groups.setdefault((problem.task, problem.where), {}).setdefault(kind, []).append(problem.message)
    task = None
    for (name, where), kinds in groups.items():
        if name != task:
            lines += ["", name]
            task = name
        lines.append(f"  {where or 'task'}:")
        for messages in kinds.values():
            lines += [f"    {m}" for m in messages[:per_kind]]
            rest = messages[per_kind:]
            if rest:
                numbers = [m.group(1) for m in map(_DOCUMENT.search, rest) if m]
                shown = ", ".join(numbers[:10]) + (", ..." if len(numbers) > 10 else "")
                lines.append(f"    ... and {len(rest)} more like this" + (f" (documents {shown})" if numbers else ""))
    return lines


_DOCUMENT = re.compile(r"document (\d+)")
