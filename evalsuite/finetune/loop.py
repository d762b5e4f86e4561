"""The training loop both methods share: AdamW, linear warmup and decay, gradient clipping, validation after
every epoch, early stopping with patience, and the best epoch's weights kept.

Batches group examples of similar length (seeded shuffle, then sorted within chunks), so padding stays small
and the same seed gives the same batches, the same dropout masks and the same weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from evalsuite.finetune.config import TrainConfig

log = logging.getLogger(__name__)

# How many batches' worth of shuffled examples are sorted by length together.
_BUCKET_BATCHES = 50


@dataclass(frozen=True)
class EpochStats:
    """One point of the validation curve; epoch 0 is the model before training."""

    epoch: int
    train_loss: float | None
    validation_loss: float
    validation_accuracy: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class TrainResult:
    curve: list[EpochStats]
    best_epoch: int
    stopped_early: bool
    steps: int
    seconds: float


def length_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Seeded batches of similar-length examples, in shuffled order: every example exactly once per epoch."""
    rng = random.Random(f"{seed}/{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * _BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches for evaluation: longest first, so padding is minimal."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed every generator training draws from, with deterministic kernels; restore the previous mode."""
    import numpy as np
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _optimizer(model: Any, config: TrainConfig, learning_rate: float):
    import torch

    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            # Biases and normalisation weights (1-d) are not decayed, as in BERT's recipe.
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate)


def train(
    model: Any,
    lengths: Sequence[int],
    step_loss: Callable[[Any, list[int]], Any],
    validate: Callable[[Any], tuple[float, float | None]],
    config: TrainConfig,
    learning_rate: float,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place and leave it holding its best epoch's weights.

    ``step_loss(model, batch)`` is the loss of one batch of example indices (a scalar tensor to minimise);
    ``validate(model)`` gives (validation loss, validation accuracy or None). The monitored quantity is
    ``config.monitor``; an epoch counts as better only when it strictly improves on the best so far.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    started = time.perf_counter()
    steps_per_epoch = math.ceil(len(lengths) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = _optimizer(model, config, learning_rate)
    schedule = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * total), total)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def score(stats: EpochStats) -> float:
        return stats.validation_loss if config.monitor == "loss" else -(stats.validation_accuracy or 0.0)

    def snapshot() -> dict[str, Any]:
        return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    model.eval()
    loss, accuracy = validate(model)
    curve = [EpochStats(0, None, loss, accuracy, round(time.perf_counter() - started, 3))]
    best, best_state, waited, steps = curve[0], snapshot(), 0, 0
    bar = _bar(total, progress)
    try:
        for epoch in range(1, config.epochs + 1):
            epoch_started = time.perf_counter()
            model.train()
            losses = []
            for batch in length_batches(lengths, config.batch_size, config.seed, epoch):
                loss = step_loss(model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append((float(loss.detach()), len(batch)))
                steps += 1
                if bar is not None:
                    bar.set_description(f"epoch {epoch}/{config.epochs}")
                    bar.set_postfix(loss=f"{losses[-1][0]:.4f}")
                    bar.update(1)
            model.eval()
            val_loss, val_accuracy = validate(model)
            train_loss = sum(l * n for l, n in losses) / max(sum(n for _, n in losses), 1)
            stats = EpochStats(epoch, train_loss, val_loss, val_accuracy, round(time.perf_counter() - epoch_started, 3))
            curve.append(stats)
            if bar is not None:
                accuracy_text = "" if val_accuracy is None else f", validation accuracy {val_accuracy:.4f}"
                bar.write(f"epoch {epoch}: train loss {train_loss:.4f}, validation loss {val_loss:.4f}{accuracy_text}")
            if score(stats) < score(best):
                best, best_state, waited = stats, snapshot(), 0
            else:
                waited += 1
                if waited >= config.patience:
                    break
    finally:
        if bar is not None:
            bar.close()
    with torch.no_grad():
        named = dict(model.named_parameters())
        for name, value in best_state.items():
            named[name].copy_(value)
    if best.epoch == 0 and len(curve) > 1:
        log.warning(
            "no training epoch improved the validation %s of the untrained model, so the untrained weights are kept "
            "(for a classifier, a random head); try --monitor accuracy, another learning rate or more data",
            config.monitor,
        )
    stopped = len(curve) - 1 < config.epochs
    return TrainResult(curve, best.epoch, stopped, steps, round(time.perf_counter() - started, 3))


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True)
