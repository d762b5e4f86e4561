"""Data: a task's logical split -> a sequence of documents (plain dicts in the hub dataset's schema).

Raw files in a data directory are read by one parser per format (:mod:`evalsuite.data.formats`), which
emit the same schema as the task's Hugging Face dataset, so one template serves both sources. Generated
tasks draw their items from a seed (:mod:`evalsuite.data.generators`), whatever the data directory; their
documents are made afresh on each pass (:class:`GeneratedDocs`), so a split of any size takes no memory. A
task's ``filter`` expression is applied to every loaded split.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from evalsuite import sandbox
from evalsuite.errors import DataError, SpecError
from evalsuite.spec import TaskSpec

DATA_DIR_ENV = "EVALSUITE_DATA_DIR"


@dataclass(frozen=True)
class Split:
    """Documents of one logical split, where they came from, and a hash of their content."""

    task: str
    name: str
    docs: Sequence[dict]  # a list, or a GeneratedDocs for generated splits: iterate rather than index it
    origin: str
    sha256: str


class GeneratedDocs(Sequence[dict]):
    """The documents of a generated split, made one by one afresh on every pass instead of held in memory.

    Item ``i`` is the same on every pass (see :mod:`evalsuite.data.generators`). Indexing makes the items
    before the one asked for, so read the documents in order by iterating.
    """

    def __init__(self, generator: str, *, n: int, seed: int | str, split: str, levels: Sequence[int] | None = None):
        from evalsuite.data.generators import items

        self._n = n
        self._items = functools.partial(items, generator, n=n, seed=seed, split=split, levels=levels)
        self._items()  # checks the generator's name and levels now, making no item

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[dict]:
        return self._items()

    def __getitem__(self, index: Any) -> Any:
        positions = range(self._n)[index]  # IndexError when out of range, like a list
        if isinstance(positions, int):
            return next(itertools.islice(self, positions, None))
        if positions.step < 0:
            return list(self)[index]
        return list(itertools.islice(self, positions.start, positions.stop, positions.step))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # equal by content, like a list


def default_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


def content_hash(docs: Iterable[dict]) -> str:
    """SHA-256 of the documents as canonical JSON: the same data gives the same hash from any source (it
    reads them in one pass, so a generated split is hashed without being held in memory)."""
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
    if sandbox.inside(data_dir, spec.file) is None:
        raise DataError(
            f"{task.path}: field 'source.local.splits.{split}': {sandbox.shown(spec.file)} leads outside the data "
            f"directory {data_dir} (links followed): name a file inside it, relative to it"
        )
    docs = parse(local.format, path, **spec.options)
    if not docs:
        raise DataError(f"{path}: split '{split}' of task '{task.name}' has no documents")
    return Split(task.name, split, docs, f"local:{local.format}:{spec.file}", content_hash(docs))


def _load_hub(task: TaskSpec, split: str) -> Split:
    hub = task.hub
    hub_split = hub.splits[split]
    label = hub.path + (f"/{hub.name}" if hub.name else "") + f" split {hub_split}"
    if Path(hub.path).exists():  # load_dataset reads a local folder of that name before asking the hub
        raise DataError(f"{task.path}: field 'source.hub.path': {hub.path!r} is a local folder here "
                        f"({Path(hub.path).resolve()}), not the hub dataset: put local files under source.local")
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
    from evalsuite.data.generators import GENERATORS

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
        docs = GeneratedDocs(source.generator, n=spec.n, seed=seed, split=split, levels=levels)
    except ValueError as exc:
        raise SpecError(f"{task.path}: field '{field}.params.levels': {exc}") from None
    origin = f"generated:{source.generator}:{split}:seed={seed}:n={spec.n}"
    return Split(task.name, split, docs, origin, content_hash(docs))


def _filtered(task: TaskSpec, loaded: Split) -> Split:
    """Keep the documents for which the task's ``filter`` expression is true."""
    if task.filter is None:
        return loaded
    import jinja2

    try:
        keep = sandbox.compile_expression(task.filter)
    except jinja2.TemplateSyntaxError as exc:
        raise SpecError(f"{task.path}: field 'filter': invalid expression: {exc.message}") from None
    docs = []
    for number, doc in enumerate(loaded.docs):
        try:
            kept = bool(keep(**doc))
        except Exception as exc:  # noqa: BLE001 - one message naming the task file, field and document
            raise DataError(
                f"{task.path}: field 'filter' on document {number} of split '{loaded.name}' "
                f"({loaded.origin}): {sandbox.describe(exc)}"
            ) from None
        if kept:
            docs.append(doc)
    if not docs:
        raise DataError(f"{task.path}: field 'filter' {task.filter!r} keeps no document of split '{loaded.name}' "
                        f"({loaded.origin})")
    return Split(loaded.task, loaded.name, docs, f"{loaded.origin} filtered by {task.filter!r}", content_hash(docs))
