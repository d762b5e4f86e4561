"""Data: a task's logical split -> a sequence of documents (plain dicts).

Files are read by the reader registered for their format (:mod:`evalsuite.data.formats`: the ``datasets``
library's builders for JSON Lines, JSON, CSV/TSV and Parquet, a parser for each raw benchmark format), hub
datasets by ``datasets.load_dataset``; a source's ``fields`` map and a split's selection then make the
documents (:mod:`evalsuite.data.documents`). Generated tasks draw their items from a seed
(:mod:`evalsuite.data.generators`), whatever the data directory; their documents are made afresh on each pass
(:class:`GeneratedDocs`), so a split of any size takes no memory. A task's ``filter`` expression is applied to
every loaded split.
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
    fresh, never-seen test set). A ``local`` source is read when a data directory is given or the task has no
    hub source: from the data directory or, for a task file of the user's, its own folder. Otherwise the hub
    dataset is loaded with ``datasets.load_dataset``. Documents failing the task's ``filter`` are dropped.
    """
    if task.generated is not None:
        return _load_generated(task, split, data_seed)
    if task.local is not None and (data_dir is not None or task.hub is None):
        return _filtered(task, _load_local(task, split, None if data_dir is None else Path(data_dir)))
    if task.hub is not None:
        return _filtered(task, _load_hub(task, split))
    raise DataError(f"task '{task.name}' ({task.path}) has no data source")


def _is_builtin(task: TaskSpec) -> bool:
    from evalsuite.spec import builtin_dirs

    return task.path.resolve().is_relative_to(builtin_dirs()[0].resolve())


def _data_folders(task: TaskSpec, data_dir: Path | None) -> list[tuple[Path, str]]:
    """The folders a task's local files are looked for in, in order, each with how errors name it."""
    folders = []
    if data_dir is not None:
        if not data_dir.is_dir():
            raise DataError(f"data directory {data_dir} does not exist: fix --data-dir or {DATA_DIR_ENV}")
        folders.append((data_dir, "the data directory"))
    if not _is_builtin(task):  # a user's task file may keep its data beside it
        folders.append((task.path.parent, TASK_FOLDER))
    if not folders:
        raise DataError(
            f"task '{task.name}' ({task.path}) only has local files: pass --data-dir or set {DATA_DIR_ENV} "
            "to the folder that holds them"
        )
    return folders


TASK_FOLDER = "the task file's folder"
BESIDE_TASK_FILE = f"in {TASK_FOLDER}"  # ends the origin of a split read from there


def _find_file(task: TaskSpec, split: str, name: str, data_dir: Path | None) -> tuple[Path, str]:
    """The file ``name`` of a local split, links followed, in the first folder that has it (never outside one),
    and how errors name that folder."""
    field = f"source.local.splits.{split}"
    folders = _data_folders(task, data_dir)
    for folder, what in folders:
        path = sandbox.inside(folder, name)
        if path is None:
            raise DataError(f"{task.path}: field '{field}': {sandbox.shown(name)} leads outside {what} {folder} "
                            "(links followed): name a file inside it, relative to it")
        try:
            if path.exists():
                return path, what
        except OSError as exc:  # e.g. a name too long for the file system
            raise DataError(f"{task.path}: field '{field}': {sandbox.shown(name)}: cannot read file: "
                            f"{exc.strerror}") from None
    searched = " or ".join(f"{what} {folder}" for folder, what in folders)
    raise DataError(f"{task.path}: field '{field}': data file {sandbox.shown(name)} not found in {searched} "
                    f"(set --data-dir or {DATA_DIR_ENV} to the folder holding it)")


def _load_local(task: TaskSpec, split: str, data_dir: Path | None) -> Split:
    from evalsuite.data.documents import lay_out, select
    from evalsuite.data.formats import parse

    local = task.local
    spec = local.splits[split]
    path, folder = _find_file(task, split, spec.file, data_dir)
    origin = f"local:{local.format}:{spec.file}"
    rows = parse(local.format, path, **{**local.options, **spec.options})
    docs = lay_out(task.path, "source.local.fields", local.fields, rows, origin)
    docs, origin = select(task.path, f"source.local.splits.{split}", spec.selection, docs, origin)
    if not docs:
        raise DataError(f"{path}: split '{split}' of task '{task.name}' has no documents ({origin})")
    if folder == TASK_FOLDER:  # file names are relative to the data directory unless the origin says otherwise
        origin += f" {BESIDE_TASK_FILE}"
    return Split(task.name, split, docs, origin, content_hash(docs))


def hub_arguments(task: TaskSpec, split: str) -> dict[str, Any]:
    """The keyword arguments of ``datasets.load_dataset`` that load the hub split behind logical ``split``."""
    hub = task.hub
    hub_split = hub.splits[split]
    arguments: dict[str, Any] = {"path": hub.path, "name": hub.name, "split": hub_split, "revision": hub.revision}
    if hub.data_files is not None:  # only this split's files: the others are not downloaded
        arguments["data_files"] = {hub_split: list(hub.data_files[hub_split])}
    return arguments


def _load_hub(task: TaskSpec, split: str) -> Split:
    from evalsuite.data.documents import lay_out, select

    hub = task.hub
    arguments = hub_arguments(task, split)
    label = (hub.path + (f"/{hub.name}" if hub.name else "") + (f"@{hub.revision}" if hub.revision else "")
             + f" split {arguments['split']}")
    if "data_files" in arguments:
        label += f" ({', '.join(arguments['data_files'][arguments['split']])})"
    if Path(hub.path).exists():  # load_dataset reads a local folder of that name before asking the hub
        raise DataError(f"{task.path}: field 'source.hub.path': {hub.path!r} is a local folder here "
                        f"({Path(hub.path).resolve()}), not the hub dataset: put local files under source.local")
    try:
        import datasets

        rows = [dict(row) for row in datasets.load_dataset(**arguments)]
    except Exception as exc:  # noqa: BLE001 - any hub failure gets one message with the way out
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = f" or pass --data-dir (or set {DATA_DIR_ENV}) to read its raw files" if task.local else ""
        gated = (f". The dataset is gated: accept its terms at https://huggingface.co/datasets/{hub.path} while "
                 "logged in, then log in here with 'huggingface-cli login' (or set HF_TOKEN)") if hub.gated else ""
        raise DataError(
            f"task '{task.name}': cannot load hub dataset {label}: {reason}{gated}. Check the network{hint}"
        ) from None
    if not rows:
        raise DataError(f"task '{task.name}': hub dataset {label} is empty")
    origin = f"hub:{label}"
    docs = lay_out(task.path, "source.hub.fields", hub.fields, rows, origin)
    docs, origin = select(task.path, f"source.hub.splits.{split}", hub.selections.get(split), docs, origin)
    if not docs:
        raise DataError(f"task '{task.name}': split '{split}' has no documents ({origin})")
    return Split(task.name, split, docs, origin, content_hash(docs))


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
