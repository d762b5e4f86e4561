"""Task specifications: what to evaluate, read from ``tasks/**/*.yaml``.

A task names its data (a Hugging Face hub dataset and/or raw files in a data directory, or items made by
a generator from a seed), which logical
split is evaluated and which one few-shot examples come from, the answer space (Jinja expressions over a
document), its prompt variants (``prompts/<task>/<variant>.jinja``) and its metrics.

Two optional keys serve particular datasets: ``filter`` (a Jinja boolean expression; documents for which it
is false are dropped when a split is loaded, e.g. SNLI's unlabelled ``label == -1`` pairs) and ``graded``
(for similarity ratings: ``values``, the numeric value of each choice, and ``gold``, the document's graded
score; the pipeline then predicts a score per document, see :mod:`evalsuite.scoring.metrics`).
document), its prompt variants (``prompts/<task>/<variant>.jinja``) and its metrics. Optional ``inputs``
(one or two Jinja expressions) give the text or text pair an encoder classifies when fine-tuned on the task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import jinja2

from evalsuite.errors import SpecError
from evalsuite.spec._fields import Fields, read_yaml
from evalsuite.spec.prompt import PromptSpec, load_prompt

CATEGORIES = ("logical", "commonsense", "semantic_matching")
SAMPLERS = ("random", "first", "fixed", "balanced")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class HubSource:
    """``datasets.load_dataset(path, name, revision=...)``; ``splits`` maps logical split -> hub split."""

    path: str
    name: str | None
    revision: str | None
    splits: dict[str, str]


@dataclass(frozen=True)
class LocalSplit:
    """One raw file (relative to the data directory) and options for its format's parser."""

    file: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalSource:
    """Raw files in a data directory, read by the parser registered for ``format``."""

    format: str
    splits: dict[str, LocalSplit]


@dataclass(frozen=True)
class GeneratedSplit:
    """``n`` items drawn from ``seed`` (a run's data seed, when given, replaces it)."""

    n: int
    seed: int


@dataclass(frozen=True)
class GeneratedSource:
    """Items made by a generator of :mod:`evalsuite.data.generators`; ``params`` go to the generator
    (``levels``: the difficulty levels to draw, round-robin)."""

    generator: str
    params: dict[str, Any]
    splits: dict[str, GeneratedSplit]


@dataclass(frozen=True)
class GradedScore:
    """A graded (similarity) task: ``values`` gives the number each choice stands for, in the choices' order
    (the same for every prompt variant); ``gold`` gives the document's graded gold score."""

    values: str
    gold: str


@dataclass(frozen=True)
class TaskSpec:
    """A validated task. ``choices``, ``target`` and ``inputs`` are Jinja expressions evaluated on a document."""

    name: str
    category: str
    description: str
    license: str
    path: Path
    hub: HubSource | None
    local: LocalSource | None
    eval_split: str
    fewshot_split: str | None
    train_split: str | None
    validation_split: str | None
    choices: str | None
    target: str
    labels: tuple[str, ...] | None
    positive: str | None
    prompts: tuple[PromptSpec, ...]
    metrics: tuple[str, ...]
    fewshot_sampler: str
    tags: tuple[str, ...] = ()
    generated: GeneratedSource | None = None
    filter: str | None = None
    graded: GradedScore | None = None
    # Jinja expressions giving an encoder's input text (one) or text pair (two); classification fine-tuning.
    inputs: tuple[str, ...] | None = None

    def prompt(self, name: str) -> PromptSpec:
        for prompt in self.prompts:
            if prompt.name == name:
                return prompt
        known = ", ".join(p.name for p in self.prompts)
        raise SpecError(f"task '{self.name}' has no prompt variant '{name}' (it has: {known})")

    @property
    def source_names(self) -> str:
        parts = []
        if self.hub:
            parts.append(f"hub:{self.hub.path}" + (f"/{self.hub.name}" if self.hub.name else ""))
        if self.local:
            parts.append(f"local:{self.local.format}")
        if self.generated:
            parts.append(f"generated:{self.generated.generator}")
        return " ".join(parts)


def builtin_dirs() -> tuple[Path, Path]:
    """The packaged ``tasks`` and ``prompts`` folders (inside the wheel, or at the source checkout's root)."""
    package = Path(__file__).resolve().parents[1]
    for root in (package / "_builtin", package.parent):
        if (root / "tasks").is_dir() and (root / "prompts").is_dir():
            return root / "tasks", root / "prompts"
    raise SpecError(f"no built-in tasks folder found under {package}: the installation is incomplete")


def load_tasks(task_dirs: Sequence[Path] = (), prompt_dirs: Sequence[Path] = ()) -> dict[str, TaskSpec]:
    """Built-in tasks plus the user's folders (a user task with a built-in task's name replaces it)."""
    tasks_dir, prompts_dir = builtin_dirs()
    return find_tasks([*map(Path, task_dirs), tasks_dir], [*map(Path, prompt_dirs), prompts_dir])


def _check_expression(fields: Fields, key: str, value: str) -> str:
    try:
        jinja2.Environment().parse("{{ " + value + " }}")
    except jinja2.TemplateSyntaxError as exc:
        raise fields.error(key, f"invalid Jinja expression {value!r}: {exc.message}") from None
    return value


def _hub(fields: Fields | None) -> HubSource | None:
    if fields is None:
        return None
    splits = fields.sub("splits")
    hub = HubSource(
        path=fields.get("path", str),
        name=fields.get("name", str, None),
        revision=fields.get("revision", str, None),
        splits={k: splits.get(k, str) for k in list(splits.data)},
    )
    splits.finish()
    fields.finish()
    return hub


def _local(fields: Fields | None) -> LocalSource | None:
    if fields is None:
        return None
    splits_fields = fields.sub("splits")
    splits = {}
    for key in list(splits_fields.data):
        raw = splits_fields.get(key, (str, dict))
        if isinstance(raw, str):
            splits[key] = LocalSplit(file=raw)
        else:
            split = Fields(raw, fields.path, splits_fields.field(key))
            file = split.get("file", str)
            splits[key] = LocalSplit(file=file, options={k: v for k, v in raw.items() if k != "file"})
    local = LocalSource(format=fields.get("format", str), splits=splits)
    fields.finish()
    return local


def _generated(fields: Fields | None) -> GeneratedSource | None:
    if fields is None:
        return None
    splits_fields = fields.sub("splits")
    splits = {}
    for key in list(splits_fields.data):
        split = splits_fields.sub(key)
        n, seed = split.get("n", int), split.get("seed", int)
        if n < 1:
            raise split.error("n", f"must be at least 1, got {n}")
        splits[key] = GeneratedSplit(n=n, seed=seed)
        split.finish()
    generated = GeneratedSource(
        generator=fields.get("generator", str), params=dict(fields.get("params", dict, {})), splits=splits
    )
    fields.finish()
    return generated


def load_task(path: Path, prompt_dirs: list[Path]) -> TaskSpec:
    """Read and validate one task file and its prompt variants (searched in ``prompt_dirs`` in order)."""
    path = Path(path)
    f = Fields(read_yaml(path), path)
    name = f.get("name", str)
    if not _NAME.match(name):
        raise f.error("name", f"{name!r} must be lower-case letters, digits, '_', '-' or '.'")
    source = f.sub("source")
    hub, local = _hub(source.sub("hub", None)), _local(source.sub("local", None))
    generated = _generated(source.sub("generated", None))
    source.finish()
    if hub is None and local is None and generated is None:
        raise f.error("source", "needs a 'hub' dataset, 'local' files (or both), or 'generated' items")
    if generated is not None and (hub is not None or local is not None):
        raise f.error("source", "'generated' items cannot be combined with 'hub' or 'local' data")

    splits = f.sub("splits")
    names = {key: splits.get(key, str, None) for key in ("eval", "fewshot", "train", "validation")}
    splits.finish()
    if names["eval"] is None:
        raise splits.error("eval", "is required: the logical split that is evaluated")
    for role, split in names.items():
        for src_name, src in (("hub", hub), ("local", local), ("generated", generated)):
            if split is not None and src is not None and split not in src.splits:
                raise splits.error(role, f"split {split!r} is not defined under source.{src_name}.splits")

    choices = f.get("choices", str, None)
    if choices is not None:
        _check_expression(f, "choices", choices)
    target = _check_expression(f, "target", f.get("target", str))
    labels = f.strings("labels", None)
    inputs = f.strings("inputs", None)
    if inputs is not None:
        if len(inputs) not in (1, 2):
            raise f.error("inputs", f"needs one text or a text pair (1 or 2 expressions), got {len(inputs)}")
        for expression in inputs:
            _check_expression(f, "inputs", expression)
        if labels is None:
            raise f.error("inputs", "needs the task to declare 'labels' (the classes an encoder's head predicts)")
    positive = f.get("positive", str, None)
    if positive is not None and (labels is None or positive not in labels):
        raise f.error("positive", f"{positive!r} must be one of the task's labels {labels}")

    doc_filter = f.get("filter", str, None)
    if doc_filter is not None:
        _check_expression(f, "filter", doc_filter)
    graded = _graded(f.sub("graded", None))

    prompt_names = f.strings("prompts")
    if not prompt_names:
        raise f.error("prompts", "needs at least one prompt variant")
    prompts = tuple(_find_prompt(f, name, variant, prompt_dirs) for variant in prompt_names)
    metrics = f.strings("metrics")
    if not metrics:
        raise f.error("metrics", "needs at least one metric")
    fewshot = f.sub("fewshot", {})
    sampler = fewshot.choice("sampler", SAMPLERS, "random")
    fewshot.finish()
    if sampler == "balanced" and labels is None:
        raise fewshot.error("sampler", "'balanced' needs the task to declare 'labels'")

    task = TaskSpec(
        name=name,
        category=f.choice("category", CATEGORIES),
        description=f.get("description", str, ""),
        license=f.get("license", str, "unknown"),
        path=path,
        hub=hub,
        local=local,
        eval_split=names["eval"],
        fewshot_split=names["fewshot"],
        train_split=names["train"],
        validation_split=names["validation"],
        choices=choices,
        target=target,
        labels=labels,
        positive=positive,
        prompts=prompts,
        metrics=metrics,
        fewshot_sampler=sampler,
        tags=f.strings("tags", ()),
        generated=generated,
        filter=doc_filter,
        graded=graded,
        inputs=inputs,
    )
    f.finish()
    return task


def _graded(fields: Fields | None) -> GradedScore | None:
    if fields is None:
        return None
    graded = GradedScore(
        values=_check_expression(fields, "values", fields.get("values", str)),
        gold=_check_expression(fields, "gold", fields.get("gold", str)),
    )
    fields.finish()
    return graded


def _find_prompt(f: Fields, task: str, variant: str, prompt_dirs: list[Path]) -> PromptSpec:
    candidates = [d / task / f"{variant}.jinja" for d in prompt_dirs]
    for candidate in candidates:
        if candidate.is_file():
            return load_prompt(candidate)
    searched = ", ".join(str(c) for c in candidates)
    raise f.error("prompts", f"prompt variant {variant!r} has no file (looked for {searched})")


def find_tasks(task_dirs: list[Path], prompt_dirs: list[Path]) -> dict[str, TaskSpec]:
    """All tasks (``*.yaml`` and ``*.yml``) under ``task_dirs``; earlier folders win, so user folders can override."""
    tasks: dict[str, TaskSpec] = {}
    for directory in task_dirs:
        if not Path(directory).is_dir():
            raise SpecError(f"{directory}: task folder does not exist")
        seen: dict[str, Path] = {}
        for path in sorted(p for p in Path(directory).rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()):
            task = load_task(path, prompt_dirs)
            if task.name in seen:
                raise SpecError(
                    f"{path}: field 'name': task name {task.name!r} is already defined in {seen[task.name]} "
                    "(task names must be unique within a folder)"
                )
            seen[task.name] = path
            tasks.setdefault(task.name, task)
    return tasks
