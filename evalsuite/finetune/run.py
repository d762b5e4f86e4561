"""``finetune()``: check everything, train, and save the checkpoint with its training card, atomically."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from evalsuite.data import default_data_dir
from evalsuite.engines.models import TRAINING_CARD, fingerprint, model_name, resolve_model
from evalsuite.errors import EngineError, OutputError, SpecError, os_problem
from evalsuite.finetune.config import DEFAULT_LEARNING_RATE, DEFAULT_MAX_LENGTH, METHODS, TrainConfig
from evalsuite.finetune.data import check_splits, training_data
from evalsuite.results import check_folder
from evalsuite.results.provenance import library_versions, sha256_hex
from evalsuite.spec import TaskSpec, load_tasks

CARD_VERSION = 1
# The libraries that can change what training produces, recorded in the training card.
TRAINING_PACKAGES = ("torch", "transformers", "peft")


def _task(name: str, task_dirs: Sequence[Path], prompt_dirs: Sequence[Path]) -> TaskSpec:
    catalog = load_tasks(task_dirs, prompt_dirs)
    catalog.refuse_broken(name)
    if name not in catalog:
        raise SpecError(f"unknown task {name!r}; run 'evalsuite tasks' to list them")
    return catalog[name]


def _model_config(model_path: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_path)
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"cannot read the model config of {model_path}: {exc}") from None


def default_method(config: Any) -> str:
    """LoRA for causal LMs, a classification head for everything else (encoders)."""
    causal = any(str(a).endswith("ForCausalLM") for a in (config.architectures or []))
    return "lora" if causal else "classifier"


def finetune(
    task: str,
    model: str,
    *,
    output: str | Path | None = None,
    method: str | None = None,
    config: TrainConfig = TrainConfig(),
    data_dir: str | Path | None = None,
    task_dirs: Sequence[Path] = (),
    prompt_dirs: Sequence[Path] = (),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Fine-tune ``model`` on ``task``'s train split; return the saved checkpoint (or adapter) folder.

    ``method``: ``classifier`` (a head over the task's labels, for encoders) or ``lora`` (an adapter on a
    causal LM); by default chosen from the model's architecture. Every input is checked before training:
    the task's splits, labels and inputs, an existing head's labels, the prompt, the output folder.
    """
    config.check()
    spec = _task(task, task_dirs, prompt_dirs)
    check_splits(spec)
    model_path = resolve_model(model)
    model_config = _model_config(model_path)
    method = method or default_method(model_config)
    if method not in METHODS:
        raise SpecError(f"unknown fine-tuning method {method!r}; use one of {', '.join(METHODS)}")
    window = getattr(model_config, "max_position_embeddings", None) or 512
    max_length = min(config.max_length or DEFAULT_MAX_LENGTH[method], window)
    learning_rate = DEFAULT_LEARNING_RATE[method] if config.learning_rate is None else config.learning_rate
    if method == "classifier":
        from evalsuite.finetune.encoder import check_task

        check_task(spec, model_path)
        prompt = None
    else:
        from evalsuite.finetune.lora import prompt_of

        prompt = prompt_of(spec, config.prompt)
    suffix = "-lora" if method == "lora" else ""
    output = Path(output) if output else Path("checkpoints") / f"{model_name(model)}-{spec.name}{suffix}"
    if output.exists() and not overwrite:
        raise SpecError(f"{output} already exists: choose another --output or pass --overwrite")
    check_folder(output.parent)  # before training: the checkpoint is saved beside it
    data = training_data(spec, Path(data_dir) if data_dir else default_data_dir(), config)

    import torch

    from evalsuite.finetune.loop import seeded

    started = time.perf_counter()
    with seeded(config.seed):
        if method == "classifier":
            from evalsuite.finetune.encoder import finetune_classifier

            trained, tokenizer, result = finetune_classifier(spec, model_path, data, config, learning_rate,
                                                             max_length, progress)
            extra: dict[str, Any] = {"inputs": list(spec.inputs or ())}
            resolved: dict[str, Any] = {}
        else:
            from evalsuite.finetune.lora import finetune_lora

            trained, result, targets = finetune_lora(spec, model_path, prompt, data, config, learning_rate,
                                                     max_length, progress)
            tokenizer = None
            extra = {"prompt": {"variant": prompt.name, "file": str(prompt.path), "sha256": sha256_hex(prompt.source)}}
            resolved = {"lora_targets": targets}
    card = {
        "card_version": CARD_VERSION,
        "method": method,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": {"name": model_name(model), "model": model, "path": model_path,
                       "sha256": fingerprint(model_path)},
        "task": {"name": spec.name, "file": str(spec.path), "sha256": sha256_hex(spec.path.read_bytes()),
                 "labels": list(spec.labels) if spec.labels else None, **extra},
        "data": data.record,
        "hyperparameters": {**config.to_dict(), "learning_rate": learning_rate, "max_length": max_length, **resolved},
        "curve": [stats.to_dict() for stats in result.curve],
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.curve) - 1,
        "stopped_early": result.stopped_early,
        "steps": result.steps,
        "train_time_s": result.seconds,
        "total_time_s": round(time.perf_counter() - started, 3),
        "torch_threads": torch.get_num_threads(),
        "versions": library_versions(TRAINING_PACKAGES),
    }
    _save(output, trained, tokenizer, card, overwrite)
    return output


def _save(output: Path, trained: Any, tokenizer: Any, card: dict, overwrite: bool) -> None:
    """Written into ``<output>.partial`` and renamed when complete: a killed run leaves no half checkpoint."""
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        trained.save_pretrained(partial)
        if tokenizer is not None:
            tokenizer.save_pretrained(partial)
        (partial / TRAINING_CARD).write_text(json.dumps(card, indent=2) + "\n")
    except OSError as exc:  # a full disk, say: no half checkpoint stays
        shutil.rmtree(partial, ignore_errors=True)
        raise OutputError(f"--output {output}: cannot save the checkpoint: {os_problem(exc)}") from None
    if output.exists() and overwrite:
        shutil.rmtree(output)
    partial.rename(output)

