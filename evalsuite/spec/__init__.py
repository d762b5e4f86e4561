"""Frozen, validated specifications: tasks (YAML), prompt variants (Jinja with a YAML header) and runs
(what a run may ask for: modes, shots, dtypes, and the whole request as a ``RunSpec``).

Every error raised here is a :class:`~evalsuite.errors.SpecError` naming the file and the field.
"""

from evalsuite.spec.prompt import AnswerRule, PromptSpec, load_prompt
from evalsuite.spec.run import DEFAULT_SHOTS, DTYPES, MODES, RunSpec, mode_and_shots, setting_label
from evalsuite.spec.task import (
    CATEGORIES,
    BrokenTask,
    SAMPLERS,
    GeneratedSource,
    GeneratedSplit,
    GradedScore,
    HubSource,
    LocalSource,
    LocalSplit,
    Selection,
    TaskCatalog,
    TaskSpec,
    builtin_dirs,
    find_tasks,
    load_task,
    load_tasks,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_SHOTS",
    "DTYPES",
    "MODES",
    "RunSpec",
    "SAMPLERS",
    "AnswerRule",
    "BrokenTask",
    "GeneratedSource",
    "GeneratedSplit",
    "GradedScore",
    "HubSource",
    "LocalSource",
    "LocalSplit",
    "PromptSpec",
    "Selection",
    "TaskCatalog",
    "TaskSpec",
    "builtin_dirs",
    "find_tasks",
    "load_prompt",
    "load_task",
    "load_tasks",
    "mode_and_shots",
    "setting_label",
]
