"""Task specifications: what to evaluate, read from ``tasks/**/*.yaml``.

A task names its data, which logical split is evaluated and which one few-shot examples come from, the answer
space (Jinja expressions over a document), its prompt variants (``prompts/<task>/<variant>.jinja``) and its
metrics. Its ``source`` is one or more of:

- ``local``: files read with a ``format``. ``jsonl``, ``json`` (a list of objects; option ``field``: the list
  under that key of an object), ``csv``, ``tsv`` (options ``column_names``, for a file without a header row,
  and ``quoting: none``, for quotes that are text) and ``parquet`` are read by the ``datasets`` library's
  builders; the raw benchmark formats (``copa_xml``, ``logiqa_txt``, ...) by the parsers of
  :mod:`evalsuite.data.formats`. ``splits`` maps each logical split to a file (or ``{file: ..., option: ...}``),
  relative to the data directory or, for a task file of the user's, to the task file's own folder, and
  never outside them (links are followed before that is checked); ``options`` are reader options for every
  split's file. Local files are read when a data directory is given or the task has no hub source::

      source:
        local:
          format: jsonl
          splits: {test: questions.jsonl}

- ``hub``: ``datasets.load_dataset(path, name, split=..., revision=...)`` on the Hugging Face hub. ``splits``
  maps logical split -> hub split; ``revision`` (a commit, or a branch such as ``refs/convert/parquet``) pins
  the data and is recorded in the results; ``data_files`` (hub split -> a file or glob, or a list of them,
  inside the repository) reads files of the repository directly, as lm-evaluation-harness's
  ``dataset_kwargs: {data_files: ...}``; ``gated: true`` says that the dataset's terms must be accepted on its
  hub page first (shown by ``evalsuite tasks``).
- ``generated``: items made by a generator from a seed (:mod:`evalsuite.data.generators`).

A ``local`` or ``hub`` source may give ``fields``: the documents' fields, each a Jinja expression over a row
read (a column by its name, ``row['name with spaces']``, the row's 0-based position ``row_index``). A document
then has exactly those fields, so files in another layout (a hub mirror, a raw file) serve the same templates.

**Carving splits from one file.** A split entry (local ``{file: ...}``, or hub ``{split: ...}``) may keep part
of what it reads: ``first: N``; ``rows: [start, stop]`` (0-based, ``stop`` excluded, ``null`` for the end);
``fraction: [a, b]`` (rows ``floor(a*n)`` to ``floor(b*n)`` of the ``n`` read); with ``seed: S`` the rows are
first put in a seeded order (by the SHA-256 of ``"S:<row number>"``, the same on every machine), so splits
with the same seed and disjoint ranges are disjoint; or ``where``, a Jinja condition on the document (an id
range: ``where: "401 <= idx <= 500"``). The selection is part of the split's recorded origin::

      splits:
        fewshot: {file: questions.jsonl, first: 5}
        test: {file: questions.jsonl, rows: [5, null]}

Two optional keys serve particular datasets: ``filter`` (a Jinja boolean expression; documents for which it
is false are dropped when a split is loaded, e.g. SNLI's unlabelled ``label == -1`` pairs) and ``graded``
(for similarity ratings: ``values``, the numeric value of each choice, and ``gold``, the document's graded
score; the pipeline then predicts a score per document, see :mod:`evalsuite.scoring.metrics`). Optional
``inputs`` (one or two Jinja expressions) give the text or text pair an encoder classifies when fine-tuned.
Optional ``cluster`` (a Jinja expression, e.g. a story id or a shared passage) groups documents that are not
independent: each sample records its document's cluster, and intervals and paired tests resample whole
clusters (:func:`evalsuite.scoring.metrics.cluster_bootstrap_chunks`)::

      cluster: premises   # FOLIO: the conclusions drawn from one story's premises
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Sequence

import jinja2

from evalsuite.errors import SpecError
from evalsuite.sandbox import check_syntax, inside, shown
from evalsuite.spec._fields import Fields, read_yaml
from evalsuite.spec.prompt import PromptSpec, load_prompt

CATEGORIES = ("logical", "commonsense", "semantic_matching")
SAMPLERS = ("random", "first", "fixed", "balanced")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_HUB_ID = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


@dataclass(frozen=True)
class Selection:
    """The part of the rows read for a split that it keeps: ``rows`` [start, stop) (``first: N`` is [0, N)) or a
    ``fraction`` [a, b) of them, in file order or, with a ``seed``, in the seeded order; or the documents for
    which the Jinja condition ``where`` is true."""

    rows: tuple[int, int | None] | None = None
    fraction: tuple[float, float] | None = None
    seed: int | None = None
    where: str | None = None

    def __str__(self) -> str:
        """As recorded in a split's origin, e.g. ``rows 0:5``, ``fraction 0.8:1 seed 7``, ``where '1 <= idx'``."""
        if self.where is not None:
            return f"where {self.where!r}"
        if self.rows is not None:
            start, stop = self.rows
            part = f"rows {start}:{'' if stop is None else stop}"
        else:
            part = "fraction {:g}:{:g}".format(*self.fraction)
        return part + ("" if self.seed is None else f" seed {self.seed}")


@dataclass(frozen=True)
class HubSource:
    """``datasets.load_dataset(path, name, split=..., revision=..., data_files=...)``; ``splits`` maps logical
    split -> hub split, ``data_files`` hub split -> files of the repository; ``fields`` (field -> Jinja
    expression over a row) lays the rows out as documents; ``gated``: its terms must be accepted on the hub."""

    path: str
    name: str | None
    revision: str | None
    splits: dict[str, str]
    data_files: dict[str, tuple[str, ...]] | None = None
    fields: dict[str, str] | None = None
    gated: bool = False
    selections: dict[str, Selection] = field(default_factory=dict)  # logical split -> the part of it kept


@dataclass(frozen=True)
class LocalSplit:
    """One file (relative to the data directory or the task file's folder), options for its format's reader,
    and the part of its rows kept."""

    file: str
    options: dict[str, Any] = field(default_factory=dict)
    selection: Selection | None = None


@dataclass(frozen=True)
class LocalSource:
    """Files read by the reader registered for ``format`` with ``options``; ``fields`` (field -> Jinja
    expression over a row) lays the rows out as documents."""

    format: str
    splits: dict[str, LocalSplit]
    fields: dict[str, str] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # for every split's file (a split's own win)


@dataclass(frozen=True)
class GeneratedSplit:
    """``n`` items drawn from ``seed`` (a run's data seed, when given, replaces it)."""

    n: int
    seed: int


@dataclass(frozen=True)
class GeneratedSource:
    """Items made by a generator of :mod:`evalsuite.data.generators`; ``params`` go to the generator
    (``levels``: the difficulty levels to draw, round-robin)."""

    generator: str
    params: dict[str, Any]
    splits: dict[str, GeneratedSplit]


@dataclass(frozen=True)
class GradedScore:
    """A graded (similarity) task: ``values`` gives the number each choice stands for, in the choices' order
    (the same for every prompt variant); ``gold`` gives the document's graded gold score."""

    values: str
    gold: str


@dataclass(frozen=True)
class TaskSpec:
    """A validated task. ``choices``, ``target`` and ``inputs`` are Jinja expressions evaluated on a document."""

    name: str
    category: str
    description: str
    license: str
    path: Path
    hub: HubSource | None
    local: LocalSource | None
    eval_split: str
    fewshot_split: str | None
    train_split: str | None
    validation_split: str | None
    choices: str | None
    target: str
    labels: tuple[str, ...] | None
    positive: str | None
    prompts: tuple[PromptSpec, ...]
    metrics: tuple[str, ...]
    fewshot_sampler: str
    tags: tuple[str, ...] = ()
    generated: GeneratedSource | None = None
    filter: str | None = None
    graded: GradedScore | None = None
    # Jinja expressions giving an encoder's input text (one) or text pair (two); classification fine-tuning.
    inputs: tuple[str, ...] | None = None
    # Jinja expression giving a document's cluster (documents sharing a story or passage): intervals resample clusters.
    cluster: str | None = None

    def prompt(self, name: str) -> PromptSpec:
        for prompt in self.prompts:
            if prompt.name == name:
                return prompt
        known = ", ".join(p.name for p in self.prompts)
        raise SpecError(f"task '{self.name}' has no prompt variant '{name}' (it has: {known})")

    @property
    def source_names(self) -> str:
        parts = []
        if self.hub:
            parts.append(f"hub:{self.hub.path}" + (f"/{self.hub.name}" if self.hub.name else "")
                         + (" (gated)" if self.hub.gated else ""))
        if self.local:
            parts.append(f"local:{self.local.format}")
        if self.generated:
            parts.append(f"generated:{self.generated.generator}")
        return " ".join(parts)


def builtin_dirs() -> tuple[Path, Path]:
    """The packaged ``tasks`` and ``prompts`` folders (inside the wheel, or at the source checkout's root)."""
    package = Path(__file__).resolve().parents[1]
    for root in (package / "_builtin", package.parent):
        if (root / "tasks").is_dir() and (root / "prompts").is_dir():
            return root / "tasks", root / "prompts"
    raise SpecError(f"no built-in tasks folder found under {package}: the installation is incomplete")


def load_tasks(task_dirs: Sequence[Path] = (), prompt_dirs: Sequence[Path] = ()) -> TaskCatalog:
    """Built-in tasks plus the user's folders (a user task with a built-in task's name replaces it); task files
    that cannot be loaded are listed in the catalog's ``broken`` and fail only the selections that name them."""
    tasks_dir, prompts_dir = builtin_dirs()
    return find_tasks([*map(Path, task_dirs), tasks_dir], [*map(Path, prompt_dirs), prompts_dir])


def _check_expression(fields: Fields, key: str, value: str) -> str:
    try:
        check_syntax(value, expression=True)
    except jinja2.TemplateSyntaxError as exc:
        raise fields.error(key, f"invalid Jinja expression {shown(value)}: {exc.message}") from None
    return value


def _hub(fields: Fields | None) -> HubSource | None:
    if fields is None:
        return None
    splits_fields = fields.sub("splits")
    path = fields.get("path", str)
    if not _HUB_ID.match(path):  # load_dataset would read a local folder: local files belong under 'local'
        raise fields.error("path", f"{shown(path)} is not a hub dataset id such as owner/name; "
                                   "put local files under source.local")
    splits, selections = {}, {}
    for key in list(splits_fields.data):
        raw = splits_fields.get(key, (str, dict))
        if isinstance(raw, str):
            splits[key] = raw
            continue
        entry = Fields(raw, fields.path, splits_fields.field(key))
        splits[key] = entry.get("split", str)
        selections[key] = _selection(entry, required=True)
        entry.finish()
    data_files = None
    if (files := fields.sub("data_files", None)) is not None:
        data_files = {split: files.strings(split) for split in list(files.data)}
        if any(not patterns for patterns in data_files.values()):
            raise fields.error("data_files", "every hub split needs at least one file")
        for key, split in splits.items():
            if split not in data_files:
                raise splits_fields.error(key, f"hub split {shown(split)} has no files under source.hub.data_files")
    hub = HubSource(
        path=path,
        name=fields.get("name", str, None),
        revision=fields.get("revision", str, None),
        splits=splits,
        data_files=data_files,
        fields=_field_map(fields),
        gated=fields.get("gated", bool, False),
        selections=selections,
    )
    if hub.name is not None and data_files is not None:
        raise fields.error("data_files", "cannot be combined with 'name': the files are the configuration")
    _check_disjoint(splits_fields, {k: (splits[k], sel) for k, sel in selections.items()})
    fields.finish()
    return hub


def _local(fields: Fields | None) -> LocalSource | None:
    if fields is None:
        return None
    splits_fields = fields.sub("splits")
    splits = {}
    for key in list(splits_fields.data):
        raw = splits_fields.get(key, (str, dict))
        if isinstance(raw, str):
            splits[key] = LocalSplit(file=raw)
        else:
            entry = Fields(raw, fields.path, splits_fields.field(key))
            file = entry.get("file", str)
            selection = _selection(entry, required=False)
            options = {k: v for k, v in raw.items() if k != "file" and k not in _SELECTION_KEYS}
            splits[key] = LocalSplit(file=file, options=options, selection=selection)
        name = PurePath(splits[key].file)
        if name.is_absolute() or ".." in name.parts:  # links that lead out are refused when the data is read
            raise splits_fields.error(key, f"{shown(str(name))} must name a file inside the data directory (or the "
                                           "task file's folder), relative to it (no absolute path, no '..')")
    _check_disjoint(splits_fields, {k: (s.file, s.selection) for k, s in splits.items() if s.selection})
    local = LocalSource(format=fields.get("format", str), splits=splits, fields=_field_map(fields),
                        options=dict(fields.get("options", dict, {})))
    fields.finish()
    return local


_SELECTION_KEYS = ("first", "rows", "fraction", "seed", "where")


def _selection(entry: Fields, required: bool) -> Selection | None:
    """The part of a split's rows named by ``first``, ``rows``, ``fraction`` (with an optional ``seed``) or
    ``where``; None when the entry names none (an error when ``required``)."""
    given = [key for key in ("first", "rows", "fraction", "where") if entry.data.get(key) is not None]
    entry.used.update(_SELECTION_KEYS)
    if len(given) > 1:
        raise entry.error(given[1], f"cannot be combined with '{given[0]}': give one of first, rows, fraction, where")
    seed = entry.get("seed", int, None)
    if not given:
        if seed is not None:
            raise entry.error("seed", "orders the rows for 'first', 'rows' or 'fraction': give one of them")
        if required:
            raise entry.error("split", "with no first, rows, fraction or where, write the hub split name alone")
        return None
    kind = given[0]
    if kind == "where":
        if seed is not None:
            raise entry.error("seed", "has no effect with 'where': leave it out")
        return Selection(where=_check_expression(entry, "where", entry.get("where", str)))
    if kind == "first":
        first = entry.get("first", int)
        if first < 1:
            raise entry.error("first", f"must be at least 1, got {first}")
        return Selection(rows=(0, first), seed=seed)
    bounds = entry.get(kind, list)
    if kind == "rows":
        ok = (len(bounds) == 2 and type(bounds[0]) is int and (bounds[1] is None or type(bounds[1]) is int)
              and 0 <= bounds[0] and (bounds[1] is None or bounds[0] < bounds[1]))
        if not ok:
            raise entry.error("rows", f"must be [start, stop], 0 <= start < stop (stop excluded, null for the end); "
                                      f"got {shown(bounds)}")
        return Selection(rows=(bounds[0], bounds[1]), seed=seed)
    ok = (len(bounds) == 2 and all(type(b) in (int, float) for b in bounds)
          and 0 <= bounds[0] < bounds[1] <= 1)
    if not ok:
        raise entry.error("fraction", f"must be [a, b] with 0 <= a < b <= 1; got {shown(bounds)}")
    return Selection(fraction=(float(bounds[0]), float(bounds[1])), seed=seed)


def _check_disjoint(splits: Fields, carved: dict[str, tuple[str, Selection | None]]) -> None:
    """Two splits carved from the same file (or hub split) in the same order must not share rows: a few-shot
    example that is also evaluated would leak its answer."""
    ranges = [(key, source, sel) for key, (source, sel) in carved.items() if sel is not None and sel.where is None]
    for i, (key_a, source_a, a) in enumerate(ranges):
        for key_b, source_b, b in ranges[i + 1:]:
            if source_a != source_b or a.seed != b.seed or (a.rows is None) != (b.rows is None):
                continue
            lo_a, hi_a = a.rows or a.fraction
            lo_b, hi_b = b.rows or b.fraction
            if (hi_a is None or lo_b < hi_a) and (hi_b is None or lo_a < hi_b):
                raise splits.error(key_b, f"shares rows with split '{key_a}' ({a} and {b} of {shown(source_a)}): "
                                          "carve disjoint parts")


def _field_map(fields: Fields) -> dict[str, str] | None:
    """``fields``: each document field and the Jinja expression over a row that gives it."""
    mapping = fields.sub("fields", None)
    if mapping is None:
        return None
    result = {}
    for key in list(mapping.data):
        if not isinstance(key, str):
            raise mapping.error(str(key), "a field name must be text")
        result[key] = _check_expression(mapping, key, mapping.get(key, str))
    if not result:
        raise fields.error("fields", "names no field: leave it out to keep the rows as they are")
    return result


def _generated(fields: Fields | None) -> GeneratedSource | None:
    if fields is None:
        return None
    splits_fields = fields.sub("splits")
    splits = {}
    for key in list(splits_fields.data):
        split = splits_fields.sub(key)
        n, seed = split.get("n", int), split.get("seed", int)
        if n < 1:
            raise split.error("n", f"must be at least 1, got {n}")
        splits[key] = GeneratedSplit(n=n, seed=seed)
        split.finish()
    generated = GeneratedSource(
        generator=fields.get("generator", str), params=dict(fields.get("params", dict, {})), splits=splits
    )
    fields.finish()
    return generated


def load_task(path: Path, prompt_dirs: list[Path]) -> TaskSpec:
    """Read and validate one task file and its prompt variants (searched in ``prompt_dirs`` in order)."""
    path = Path(path)
    f = Fields(read_yaml(path), path)
    name = f.get("name", str)
    if not _NAME.match(name):
        raise f.error("name", f"{shown(name)} must be lower-case letters, digits, '_', '-' or '.' (at most 100)")
    source = f.sub("source")
    hub, local = _hub(source.sub("hub", None)), _local(source.sub("local", None))
    generated = _generated(source.sub("generated", None))
    source.finish()
    if hub is None and local is None and generated is None:
        raise f.error("source", "needs a 'hub' dataset, 'local' files (or both), or 'generated' items")
    if generated is not None and (hub is not None or local is not None):
        raise f.error("source", "'generated' items cannot be combined with 'hub' or 'local' data")

    splits = f.sub("splits")
    names = {key: splits.get(key, str, None) for key in ("eval", "fewshot", "train", "validation")}
    splits.finish()
    if names["eval"] is None:
        raise splits.error("eval", "is required: the logical split that is evaluated")
    for role, split in names.items():
        for src_name, src in (("hub", hub), ("local", local), ("generated", generated)):
            if split is not None and src is not None and split not in src.splits:
                raise splits.error(role, f"split {shown(split)} is not defined under source.{src_name}.splits")

    choices = f.get("choices", str, None)
    if choices is not None:
        _check_expression(f, "choices", choices)
    target = _check_expression(f, "target", f.get("target", str))
    labels = f.strings("labels", None)
    inputs = f.strings("inputs", None)
    if inputs is not None:
        if len(inputs) not in (1, 2):
            raise f.error("inputs", f"needs one text or a text pair (1 or 2 expressions), got {len(inputs)}")
        for expression in inputs:
            _check_expression(f, "inputs", expression)
        if labels is None:
            raise f.error("inputs", "needs the task to declare 'labels' (the classes an encoder's head predicts)")
    positive = f.get("positive", str, None)
    if positive is not None and (labels is None or positive not in labels):
        raise f.error("positive", f"{shown(positive)} must be one of the task's labels {shown(labels)}")

    doc_filter = f.get("filter", str, None)
    if doc_filter is not None:
        _check_expression(f, "filter", doc_filter)
    cluster = f.get("cluster", str, None)
    if cluster is not None:
        _check_expression(f, "cluster", cluster)
    graded = _graded(f.sub("graded", None))

    prompt_names = f.strings("prompts")
    if not prompt_names:
        raise f.error("prompts", "needs at least one prompt variant")
    prompts = tuple(_find_prompt(f, name, variant, prompt_dirs) for variant in prompt_names)
    metrics = f.strings("metrics")
    if not metrics:
        raise f.error("metrics", "needs at least one metric")
    fewshot = f.sub("fewshot", {})
    sampler = fewshot.choice("sampler", SAMPLERS, "random")
    fewshot.finish()
    if sampler == "balanced" and labels is None:
        raise fewshot.error("sampler", "'balanced' needs the task to declare 'labels'")

    task = TaskSpec(
        name=name,
        category=f.choice("category", CATEGORIES),
        description=f.get("description", str, ""),
        license=f.get("license", str, "unknown"),
        path=path,
        hub=hub,
        local=local,
        eval_split=names["eval"],
        fewshot_split=names["fewshot"],
        train_split=names["train"],
        validation_split=names["validation"],
        choices=choices,
        target=target,
        labels=labels,
        positive=positive,
        prompts=prompts,
        metrics=metrics,
        fewshot_sampler=sampler,
        tags=f.strings("tags", ()),
        generated=generated,
        filter=doc_filter,
        graded=graded,
        inputs=inputs,
        cluster=cluster,
    )
    f.finish()
    return task


def _graded(fields: Fields | None) -> GradedScore | None:
    if fields is None:
        return None
    graded = GradedScore(
        values=_check_expression(fields, "values", fields.get("values", str)),
        gold=_check_expression(fields, "gold", fields.get("gold", str)),
    )
    fields.finish()
    return graded


def _find_prompt(f: Fields, task: str, variant: str, prompt_dirs: list[Path]) -> PromptSpec:
    name = Path(task, f"{variant}.jinja")
    candidates = [d / name for d in prompt_dirs]
    for folder, candidate in zip(prompt_dirs, candidates):
        try:
            if inside(folder, name) is None:
                raise f.error("prompts", f"prompt variant {shown(variant)} leads outside the prompt folder {folder} "
                                         f"(links followed): name a file in {folder / task}, without .jinja")
            found = candidate.is_file()
        except OSError as exc:  # e.g. a name too long for the file system
            raise f.error("prompts", f"prompt variant {shown(variant)}: cannot look for its file "
                                     f"({exc.strerror})") from None
        if found:
            return load_prompt(candidate)
    searched = ", ".join(str(c) for c in candidates)
    raise f.error("prompts", f"prompt variant {shown(variant)} has no file (looked for {searched})")


@dataclass(frozen=True)
class BrokenTask:
    """A task file that could not be loaded. Only the runs that select it fail, with its ``error``: it is
    selected by ``all``, its ``name`` (the file's ``name`` where that can be read, else the file name) and its
    ``groups`` (its category and tags; None where the file cannot be read, so any category or tag may hold it)."""

    path: Path
    error: SpecError
    name: str
    groups: tuple[str, ...] | None = None

    def selected_by(self, item: str) -> bool:
        return item in ("all", self.name) or self.groups is None or item in self.groups


def _broken(path: Path, error: SpecError) -> BrokenTask:
    try:
        data = read_yaml(path)
    except SpecError:
        return BrokenTask(path, error, path.stem)
    data = data if isinstance(data, dict) else {}
    name, category, tags = data.get("name"), data.get("category"), data.get("tags")
    groups = [category] + (tags if isinstance(tags, list) else [tags])
    return BrokenTask(path, error, name if isinstance(name, str) else path.stem,
                      tuple(g for g in groups if isinstance(g, str)))


def _groups(entry: TaskSpec | BrokenTask) -> tuple[str, ...] | None:
    return entry.groups if isinstance(entry, BrokenTask) else (entry.category, *entry.tags)


class TaskCatalog(dict[str, TaskSpec]):
    """Tasks by name, and the task files that could not be loaded (``broken``)."""

    def __init__(self, tasks: dict[str, TaskSpec], broken: list[BrokenTask]):
        super().__init__(tasks)
        self.broken = tuple(broken)

    def refuse_broken(self, item: str) -> None:
        """Raise the error of a broken task file that ``item`` (a name, tag, category or ``all``) may select."""
        if item in self:
            return
        for file in self.broken:
            if file.selected_by(item):
                raise SpecError(str(file.error))


def find_tasks(task_dirs: list[Path], prompt_dirs: list[Path]) -> TaskCatalog:
    """All tasks (``*.yaml`` and ``*.yml``) under ``task_dirs``; earlier folders win, so user folders can override.
    A file that cannot be loaded (or repeats a name in its folder) is kept aside in ``broken``: it takes its
    name from later folders, and fails only the runs that select it."""
    tasks: dict[str, TaskSpec] = {}
    broken: list[BrokenTask] = []
    for directory in task_dirs:
        if Path(directory).is_file():
            raise SpecError(f"{directory}: is a file, not a task folder; pass the folder that holds task YAML files")
        if not Path(directory).is_dir():
            raise SpecError(f"{directory}: task folder does not exist")
        found: dict[str, list[TaskSpec | BrokenTask]] = {}
        for path in sorted(p for p in Path(directory).rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()):
            try:
                entry: TaskSpec | BrokenTask = load_task(path, prompt_dirs)
            except SpecError as exc:
                entry = _broken(path, exc)
            found.setdefault(entry.name, []).append(entry)
        for name, entries in found.items():
            if name in tasks or any(b.name == name for b in broken):
                continue  # an earlier folder defines it
            if len(entries) > 1:
                first, second = entries[0].path, entries[1].path
                groups = [_groups(entry) for entry in entries]
                entries = [BrokenTask(second, SpecError(
                    f"{second}: field 'name': task name {shown(name)} is already defined in {first} "
                    "(task names must be unique within a folder)"
                ), name, None if None in groups else tuple(g for group in groups for g in group))]
            if isinstance(entries[0], BrokenTask):
                broken.append(entries[0])
            else:
                tasks[name] = entries[0]
    return TaskCatalog(tasks, broken)
