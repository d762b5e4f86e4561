"""Frozen, validated specifications: tasks (YAML) and prompt variants (Jinja with a YAML header).

Every error raised here is a :class:`~evalsuite.errors.SpecError` naming the file and the field.
"""

from evalsuite.spec.prompt import AnswerRule, PromptSpec, load_prompt
from evalsuite.spec.task import (
    CATEGORIES,
    GeneratedSource,
    GeneratedSplit,
    GradedScore,
    HubSource,
    LocalSource,
    LocalSplit,
    TaskSpec,
    builtin_dirs,
    find_tasks,
    load_task,
)

__all__ = [
    "CATEGORIES",
    "AnswerRule",
    "GeneratedSource",
    "GeneratedSplit",
    "GradedScore",
    "HubSource",
    "LocalSource",
    "LocalSplit",
    "PromptSpec",
    "TaskSpec",
    "builtin_dirs",
    "find_tasks",
    "load_prompt",
    "load_task",
]
