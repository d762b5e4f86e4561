"""The documents a fine-tuning run learns from and validates on, and the record of where they came from."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalsuite.data import Split, content_hash, load_split
from evalsuite.errors import SpecError
from evalsuite.finetune.config import TrainConfig
from evalsuite.spec import TaskSpec


@dataclass(frozen=True)
class TrainingData:
    """(document id in its split, document) pairs for training and validation, and their provenance."""

    train: list[tuple[int, dict]]
    validation: list[tuple[int, dict]]
    record: dict[str, Any]


def check_splits(task: TaskSpec) -> None:
    """A task can be trained on only when it names a train split that is not the evaluated one."""
    if task.train_split is None:
        raise SpecError(f"{task.path}: field 'splits.train': task '{task.name}' has no train split, so it cannot "
                        "be fine-tuned on; add one (e.g. splits: {train: train}) or pick another task")
    if task.train_split == task.eval_split:
        raise SpecError(f"{task.path}: field 'splits.train': the train split {task.train_split!r} is the evaluated "
                        f"split; fine-tuning on it would score the model on its own training documents")


def training_data(task: TaskSpec, data_dir: Path | None, config: TrainConfig) -> TrainingData:
    """The task's train split, and its validation split, or a seeded slice of train when it has none.

    A declared validation split that is the evaluated split is not used (early stopping on the test
    documents would leak): a slice of train is held out instead.
    """
    check_splits(task)
    train_split = load_split(task, task.train_split, data_dir)
    indexed = list(enumerate(train_split.docs))
    own = task.validation_split not in (None, task.eval_split, task.train_split)
    if own:
        val_split = load_split(task, task.validation_split, data_dir)
        validation, train = list(enumerate(val_split.docs)), indexed
        held_out = None
    else:
        val_split = train_split
        count = max(1, round(config.validation_fraction * len(indexed)))
        if count >= len(indexed):
            raise SpecError(f"task '{task.name}': its train split has {len(indexed)} documents, too few to hold "
                            f"out a validation slice and still train")
        picked = set(random.Random(f"{config.seed}/{task.name}/validation").sample(range(len(indexed)), count))
        validation = [pair for pair in indexed if pair[0] in picked]
        train = [pair for pair in indexed if pair[0] not in picked]
        held_out = f"seeded {config.validation_fraction:.0%} of split '{task.train_split}' (seed {config.seed})"
    train = train[: config.limit] if config.limit else train
    validation = validation[: config.validation_limit] if config.validation_limit else validation
    record = {
        "train": _describe(train_split, train),
        "validation": {**_describe(val_split, validation), "held_out": held_out,
                       **({"doc_ids": [i for i, _ in validation]} if held_out else {})},
    }
    return TrainingData(train, validation, record)


def _describe(split: Split, used: list[tuple[int, dict]]) -> dict[str, Any]:
    return {"split": split.name, "origin": split.origin, "split_sha256": split.sha256, "n": len(used),
            "sha256": content_hash([doc for _, doc in used])}
