"""Load: the tasks a run selects, their prompt variants, and their data splits (each read once)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evalsuite.data import Split, load_split
from evalsuite.errors import MetricError, SpecError
from evalsuite.scoring import resolve_metric
from evalsuite.spec import PromptSpec, TaskCatalog, TaskSpec


def select_tasks(catalog: dict[str, TaskSpec], selection: str | Sequence[str]) -> list[TaskSpec]:
    """Names, tags (``starter``), categories, or ``all``; comma-separated or a list; order kept."""
    items = selection.split(",") if isinstance(selection, str) else list(selection)
    chosen: dict[str, TaskSpec] = {}
    for item in (i.strip() for i in items if i.strip()):
        if isinstance(catalog, TaskCatalog):
            catalog.refuse_broken(item)
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


def variants(task: TaskSpec, prompts: str | Sequence[str] | None) -> list[PromptSpec]:
    """The prompt variants asked for: ``None`` (or ``default``) the task's first, ``all``, or names."""
    if prompts is None or prompts == "default":
        return [task.prompts[0]]
    if prompts == "all":
        return list(task.prompts)
    names = prompts.split(",") if isinstance(prompts, str) else list(prompts)
    present = [task.prompt(n) for n in names if n in {p.name for p in task.prompts}]
    if not present:
        raise SpecError(f"task '{task.name}' has none of the prompt variants {names}")
    return present


def check_metrics(task: TaskSpec) -> None:
    for name in task.metrics:
        try:
            resolve_metric(name)
        except MetricError as exc:
            raise SpecError(f"{task.path}: field 'metrics': {exc}") from None


class Splits:
    """The data splits of a run's tasks, each loaded once and kept for the run."""

    def __init__(self, data_dir: Path | None, data_seed: int | None = None):
        self.data_dir, self.data_seed = data_dir, data_seed
        self._loaded: dict[tuple[str, str], Split] = {}

    def __call__(self, task: TaskSpec, name: str) -> Split:
        if (task.name, name) not in self._loaded:
            self._loaded[task.name, name] = load_split(task, name, self.data_dir, self.data_seed)
        return self._loaded[task.name, name]
