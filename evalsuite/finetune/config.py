"""Hyper-parameters of a fine-tuning run, validated once, recorded in the training card."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from evalsuite.errors import SpecError

METHODS = ("classifier", "lora")
MONITORS = ("loss", "accuracy")
# Learning rates that work for each method when none is given.
DEFAULT_LEARNING_RATE = {"classifier": 5e-5, "lora": 2e-4}
DEFAULT_MAX_LENGTH = {"classifier": 128, "lora": 1024}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights, besides the base model and the data.

    ``learning_rate`` and ``max_length`` default by method (see ``DEFAULT_*``). ``warmup_ratio`` is the
    share of all steps spent warming the learning rate up linearly from 0; it then decays linearly to 0.
    ``patience``: epochs without improvement of the monitored validation quantity before training stops.
    ``validation_fraction``: the seeded share of the train split held out when the task has no
    validation split. ``limit`` / ``validation_limit``: use only the first N documents (after the split).
    ``lora_*``: LoRA rank, scaling alpha, dropout and target modules (None: peft's default for the model).
    """

    learning_rate: float | None = None
    epochs: int = 3
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    patience: int = 2
    monitor: str = "loss"
    max_length: int | None = None
    seed: int = 0
    validation_fraction: float = 0.1
    limit: int | None = None
    validation_limit: int | None = None
    prompt: str | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] | None = None

    def check(self) -> None:
        """Reject values that cannot train, naming the option."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "patience": self.patience,
                    "lora_r": self.lora_r, "max_length": self.max_length or 1, "limit": self.limit or 1,
                    "validation_limit": self.validation_limit or 1}
        for name, value in positive.items():
            if value < 1:
                raise SpecError(f"fine-tuning option {name} must be at least 1, got {value}")
        if self.learning_rate is not None and not self.learning_rate >= 0:
            raise SpecError(f"fine-tuning option learning_rate must be >= 0, got {self.learning_rate}")
        for name in ("weight_decay", "max_grad_norm"):
            if not getattr(self, name) >= 0:
                raise SpecError(f"fine-tuning option {name} must be >= 0, got {getattr(self, name)}")
        for name in ("warmup_ratio", "lora_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise SpecError(f"fine-tuning option {name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 < self.validation_fraction < 1:
            raise SpecError(f"fine-tuning option validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.monitor not in MONITORS:
            raise SpecError(f"fine-tuning option monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_targets"] = list(self.lora_targets) if self.lora_targets else None
        return data
