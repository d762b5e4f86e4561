"""Data: a task's logical split -> a list of documents (plain dicts in the hub dataset's schema).

Raw files in a data directory are read by one parser per format (:mod:`evalsuite.data.formats`), which
emit the same schema as the task's Hugging Face dataset, so one template serves both sources. Generated
tasks draw their items from a seed (:mod:`evalsuite.data.generators`), whatever the data directory. A
task's ``filter`` expression is applied to every loaded split.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from evalsuite.errors import DataError, SpecError
from evalsuite.spec import TaskSpec

DATA_DIR_ENV = "EVALSUITE_DATA_DIR"


@dataclass(frozen=True)
class Split:
    """Documents of one logical split, where they came from, and a hash of their content."""

    task: str
    name: str
    docs: list[dict]
    origin: str
    sha256: str


def default_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


def content_hash(docs: list[dict]) -> str:
    """SHA-256 of the documents as canonical JSON: the same data gives the same hash from any source."""
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def load_split(task: TaskSpec, split: str, data_dir: Path | None = None, data_seed: int | None = None) -> Split:
    """Documents of ``split`` (a logical split name of the task).

    A ``generated`` source draws its items from the split's seed, or from ``data_seed`` when given (a
    fresh, never-seen test set). With a data directory and a ``local`` source, the raw files are read from
    it; otherwise the hub dataset is loaded with ``datasets.load_dataset``. Documents failing the task's
    ``filter`` are dropped.
    """
    if task.generated is not None:
        return _load_generated(task, split, data_seed)
    if data_dir is not None and task.local is not None:
        return _filtered(task, _load_local(task, split, Path(data_dir)))
    if task.hub is not None:
        return _filtered(task, _load_hub(task, split))
    raise DataError(
        f"task '{task.name}' ({task.path}) only has local files: pass --data-dir or set {DATA_DIR_ENV} "
        "to the folder that holds them"
    )


def _load_local(task: TaskSpec, split: str, data_dir: Path) -> Split:
    from evalsuite.data.formats import parse

    local = task.local
    spec = local.splits[split]
    path = data_dir / spec.file
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist: fix --data-dir or {DATA_DIR_ENV}")
    docs = parse(local.format, path, **spec.options)
    if not docs:
        raise DataError(f"{path}: split '{split}' of task '{task.name}' has no documents")
    return Split(task.name, split, docs, f"local:{local.format}:{spec.file}", content_hash(docs))


def _load_hub(task: TaskSpec, split: str) -> Split:
    hub = task.hub
    hub_split = hub.splits[split]
    label = hub.path + (f"/{hub.name}" if hub.name else "") + f" split {hub_split}"
    try:
        import datasets

        dataset = datasets.load_dataset(hub.path, hub.name, split=hub_split, revision=hub.revision)
        docs = [dict(row) for row in dataset]
    except Exception as exc:  # noqa: BLE001 - any hub failure gets one message with the way out
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = f" or pass --data-dir (or set {DATA_DIR_ENV}) to read its raw files" if task.local else ""
        raise DataError(
            f"task '{task.name}': cannot load hub dataset {label}: {reason}. Check the network{hint}"
        ) from None
    if not docs:
        raise DataError(f"task '{task.name}': hub dataset {label} is empty")
    return Split(task.name, split, docs, f"hub:{label}", content_hash(docs))


def _load_generated(task: TaskSpec, split: str, data_seed: int | None) -> Split:
    from evalsuite.data.generators import GENERATORS, generate

    source = task.generated
    spec = source.splits[split]
    field = "source.generated"
    if source.generator not in GENERATORS:
        raise SpecError(
            f"{task.path}: field '{field}.generator': unknown generator {source.generator!r}; "
            f"known: {', '.join(GENERATORS)}"
        )
    unknown = sorted(set(source.params) - {"levels"})
    if unknown:
        raise SpecError(f"{task.path}: field '{field}.params.{unknown[0]}': unknown parameter (known: levels)")
    levels = source.params.get("levels")
    if levels is not None and (not isinstance(levels, list) or not all(type(v) is int for v in levels)):
        raise SpecError(f"{task.path}: field '{field}.params.levels': expected a list of integers, got {levels!r}")
    seed = spec.seed if data_seed is None else data_seed
    try:
        docs = generate(source.generator, n=spec.n, seed=seed, split=split, levels=levels)
    except ValueError as exc:
        raise SpecError(f"{task.path}: field '{field}.params.levels': {exc}") from None
    origin = f"generated:{source.generator}:{split}:seed={seed}:n={spec.n}"
    return Split(task.name, split, docs, origin, content_hash(docs))
def _filtered(task: TaskSpec, loaded: Split) -> Split:
    """Keep the documents for which the task's ``filter`` expression is true."""
    if task.filter is None:
        return loaded
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    keep = env.compile_expression(task.filter, undefined_to_none=False)
    docs = []
    for number, doc in enumerate(loaded.docs):
        try:
            kept = bool(keep(**doc))
        except Exception as exc:  # noqa: BLE001 - one message naming the task file, field and document
            raise DataError(
                f"{task.path}: field 'filter' on document {number} of split '{loaded.name}' "
                f"({loaded.origin}): {type(exc).__name__}: {exc}"
            ) from None
        if kept:
            docs.append(doc)
    if not docs:
        raise DataError(f"{task.path}: field 'filter' {task.filter!r} keeps no document of split '{loaded.name}' "
                        f"({loaded.origin})")
    return Split(loaded.task, loaded.name, docs, f"{loaded.origin} filtered by {task.filter!r}", content_hash(docs))
