"""Results: the run record, written so that a killed run never leaves a truncated file behind.

A run writes into ``<output>/<run-id>.partial/``: ``samples.jsonl`` streams there line by line, and
``results.json`` is written last (temporary file, fsync, rename); only then is the folder renamed to
``<output>/<run-id>/``. Readers (the leaderboard) only look at complete folders. See ``SCHEMA`` for keys.

Both files are strict JSON: a NaN or an infinity anywhere (which Python would write as the non-JSON ``NaN``
or ``Infinity``) stops the run with an error naming the field instead of being written.

A running writer holds a lock on its ``samples.jsonl``. When a run finishes, it deletes the ``.partial``
folders that earlier, killed runs of the same configuration left behind (same run id apart from its time
stamp, no live process holding their lock), so a resumed run leaves a clean output folder. A run that fails
(an error, not a kill) deletes its own ``.partial`` folder at once.

Readers (:func:`read_run`, :func:`read_samples`) check a file's shape before anything uses it, so a damaged or
foreign file gives one message naming it, not an error deep inside the leaderboard.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from evalsuite.errors import EvalsuiteError, OutputError, os_problem
from evalsuite.results.records import upgrade_v1

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # schema 1 is upgraded on reading (evalsuite.results.records.upgrade_v1)
PARTIAL = ".partial"
# A run id (made by evalsuite.api) is "<UTC stamp>-<model>-<mode>-<8 hex digits of the configuration
# hash>", with "-<n>" appended when two runs start in the same second; all but the stamp names the configuration.
_RUN_ID = re.compile(r"^\d{8}-\d{6}-(?P<config>.+-[0-9a-f]{8})(-\d+)?$")

SCHEMA = {
    "schema_version": "integer, the version of this layout",
    "run_id": "folder name: UTC time, model, mode, shard<i>of<N> for a shard, and a short hash of the configuration",
    "created": "UTC time the run finished, ISO 8601",
    "config": "everything the run was asked for: model, engine, adapter, mode, shots, seed, tasks, prompts, "
    "limit, batch_size, dtype, data_dir, fewshot_sampler, chat_template, n_boot, data_seed (replaces generated "
    "tasks' seeds), samples and temperature (generation prompts), engine_args (secret ones such as api_key "
    "written as '<redacted>'), system_prompt (its text), fewshot_as_multiturn, max_new_tokens (null: each "
    "prompt's own), think and think_tags; only when given: fewshot_draws (K > 1 few-shot draws per document), "
    "seeds (the sampling seeds of --seeds) and permute_choices (every document's options rotated by one "
    "position; samples.jsonl then records each document's permutation)",
    "model": "what the engine reports: engine, model_path, model_sha256 (config + weights), dtype, device; "
    "finetuned (base, task, method) for a fine-tuned checkpoint or adapter",
    "versions": "python and package versions",
    "timings": "engine_load_s, total_s",
    "cache": "the request cache: path, requests (asked by the run), hits (answered from the cache), computed "
    "(distinct requests sent to the model); null when the run used no cache",
    "endpoints": "engines with endpoints (server, chat), per endpoint URL: answered (requests), failed (tries "
    "that failed), taken_out (times out of rotation), in_rotation (at the end), concurrency (its limit at the "
    "end), last_error; null for other engines",
    "evaluations": "one entry per task x prompt variant: task, category, variant, method, split, n, "
    "main_metric, metrics{name: {value, low, high, definition}}, confusion{gold: {pred: count}}, "
    "hashes{task, prompt, data, fewshot_data}, origin, license, timing_s, docs_per_s, labels (class names in "
    "class-index order: gold and pred in samples.jsonl index them), positive (index of the positive class for "
    "binary F1, null: class 1); when documents have a "
    "'difficulty' (generated tasks): by_difficulty{level: {n, accuracy, low, high, unparseable_rate}}; with "
    "several samples per document: self_consistency{samples, temperature, vote, agreement{value, low, high, "
    "definition}}; in runs with think: thinking{unit (tokens, or characters where the engine has no tokenizer), "
    "mean_thinking, mean_answer (mean lengths per document), unclosed_rate (share of generations whose thinking "
    "never closed)}; for a task with a cluster field: cluster (the field; samples.jsonl records each document's "
    "cluster key, and the intervals resample whole clusters); in runs with several few-shot draws: "
    "fewshot_draws (K; n counts documents, the metrics and confusion counts every document x draw, and the "
    "intervals resample documents with all their draws) and by_draw{metric, values (the main metric of each draw "
    "alone), range, sd, definition}",
    "skipped": "tasks left out because their data could not be loaded (run with skip_unavailable): "
    "[{task, reason}]",
    "shard": "only in a shard's record (a run with shard i/N): index, count, and documents{task: {total, start, "
    "stop}}, the documents start to stop - 1 of the task's total it evaluated; its metrics cover those alone, so "
    "readers of whole runs (leaderboard, report, compare) refuse it until 'evalsuite merge' combines the set",
    "merged_from": "only in a record made by 'evalsuite merge': the run ids of its shards, in shard order; its "
    "timings and cache counts are the shards' sums, each evaluation's timing_s too",
}


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A failure (read-only folder, full disk) leaves ``path`` as it was and raises :class:`OutputError`."""
    try:
        _atomic_write(Path(path), text)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write it: {os_problem(exc)}") from None


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes the file private; results and reports are meant to be read
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_folder(path: Path, option: str = "--output") -> None:
    """:class:`OutputError` naming ``path`` as ``option`` unless files can be written in it (or, while it does
    not exist, it can be made): tried on it or its nearest existing parent, leaving nothing behind."""
    path = Path(path)
    nearest = next(p for p in (path, *path.parents) if os.path.lexists(p))
    try:
        if not nearest.is_dir():
            raise OSError(errno.EEXIST if nearest == path else errno.ENOTDIR, "not a folder", str(nearest))
        with tempfile.TemporaryFile(dir=nearest):  # a folder can exist and still refuse files (read-only mount)
            pass
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write there: {os_problem(exc)}") from None


def make_folder(path: Path, option: str = "--output") -> Path:
    """``path`` as a folder that takes files, made if missing (see :func:`check_folder`)."""
    check_folder(path, option)
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write there: {os_problem(exc)}") from None
    return path


class RunWriter:
    """Streams samples and writes the final record of one run.

    A write that fails (read-only folder, full disk) raises :class:`OutputError` naming ``--output``; the
    caller then calls :meth:`abandon`, which deletes the unfinished folder."""

    def __init__(self, output: Path, run_id: str):
        self.output = make_folder(output)
        base, suffix = run_id, 1
        with _locked(self.output):  # a folder is never seen by another run before its samples are locked
            try:
                while True:  # two runs started in the same second get distinct folders
                    self.run_id = run_id
                    self.final = self.output / run_id
                    self.partial = self.output / (run_id + PARTIAL)
                    try:
                        if not self.final.exists():
                            self.partial.mkdir()
                            break
                    except FileExistsError:
                        pass
                    suffix += 1
                    run_id = f"{base}-{suffix}"
                self._samples = open(self.partial / "samples.jsonl", "w", encoding="utf-8")
            except OSError as exc:
                raise self._failed("run folder", exc) from None
            fcntl.flock(self._samples, fcntl.LOCK_EX)  # released by the kernel when this process dies

    def write_samples(self, samples: Iterable[dict[str, Any]]) -> None:
        lines = []  # all encoded first: a sample that cannot be written leaves no part of the batch behind
        for sample in samples:
            where = (f"{self.partial / 'samples.jsonl'}: the sample of task {sample.get('task')!r}, variant "
                     f"{sample.get('variant')!r}, document {sample.get('doc_id')}")
            lines.append(strict_json(sample, where) + "\n")
        try:
            self._samples.write("".join(lines))
            self._samples.flush()
        except OSError as exc:
            raise self._failed("samples", exc) from None

    def finish(self, record: dict[str, Any]) -> Path:
        """Write ``results.json``, publish the folder under its final name, then close the samples."""
        text = strict_json(record, str(self.partial / "results.json"), indent=2)
        try:
            self._samples.flush()
            os.fsync(self._samples.fileno())
            _atomic_write(self.partial / "results.json", text + "\n")
            os.replace(self.partial, self.final)
        except OSError as exc:
            raise self._failed("results", exc) from None
        # Closed only now: until the rename, its lock tells another run finishing at the same moment that
        # this .partial folder is alive, not a killed run's to delete.
        self._samples.close()
        self._remove_stale_partials()
        return self.final

    def _failed(self, what: str, exc: OSError) -> OutputError:
        return OutputError(f"--output {self.output}: cannot write the run's {what}: {os_problem(exc)}")

    def _remove_stale_partials(self) -> None:
        """Delete ``.partial`` folders of killed runs with this run's configuration."""
        mine = _RUN_ID.match(self.run_id)
        if not mine:
            return
        with _locked(self.output):
            for folder in self.output.glob(f"*{PARTIAL}"):
                other = _RUN_ID.match(folder.name.removesuffix(PARTIAL))
                if other and other["config"] == mine["config"] and _abandoned(folder):
                    shutil.rmtree(folder, ignore_errors=True)

    def abandon(self) -> None:
        """Close and delete the unfinished run folder: a failed run leaves nothing half-written behind."""
        with contextlib.suppress(OSError):  # closing flushes what is left, which a full disk refuses again
            self._samples.close()
        shutil.rmtree(self.partial, ignore_errors=True)


def strict_json(value: Any, where: str, **options: Any) -> str:
    """``value`` as strict JSON (no ``NaN`` or ``Infinity``); a non-finite number is an error naming its field."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, **options)
    except ValueError:
        found = _non_finite(value)
        if found is None:
            raise
        field, number = found
        raise EvalsuiteError(f"{where}: field '{field}' is {number}, which strict JSON cannot hold, so the run stops "
                             "rather than write it (an engine or a metric produced something that is not a "
                             "number)") from None


def _non_finite(value: Any, path: str = "") -> tuple[str, float] | None:
    """The path (``a.b[2]``) and value of the first non-finite float inside ``value``, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "(top)", value)
    if isinstance(value, dict):
        items = ((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    else:
        return None
    return next((found for sub, item in items if (found := _non_finite(item, sub)) is not None), None)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on a folder (held on the folder itself: no lock file is left behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _abandoned(partial: Path) -> bool:
    """True when no live process holds the lock on the folder's ``samples.jsonl`` (call with the output locked)."""
    try:
        with open(partial / "samples.jsonl", "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
    except FileNotFoundError:  # its writer died between creating the folder and the file
        return True
    except OSError:  # locked: its writer is running
        return False


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Complete run folders (those holding ``results.json``) under the given folders, sorted."""
    found = set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise EvalsuiteError(f"{path}: no such run folder")
        candidates = [path / "results.json"] if (path / "results.json").is_file() else path.rglob("results.json")
        for result in candidates:
            if not result.parent.name.endswith(PARTIAL):
                found.add(result.parent)
    return sorted(found)


def _not_a_number(name: str) -> Any:
    """Refuse NaN and Infinity: evalsuite writes strict JSON, so a file holding them was not written by it."""
    raise ValueError(f"{name} is not a number strict JSON allows")


def read_run(folder: Path) -> dict[str, Any]:
    """A run's ``results.json``, checked to have the layout its readers rely on (see ``SCHEMA``)."""
    path = Path(folder) / "results.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"), parse_constant=_not_a_number)
    except OSError as exc:
        raise EvalsuiteError(f"{path}: cannot read it: {os_problem(exc)}") from None
    except ValueError as exc:  # not strict JSON, or not UTF-8
        raise EvalsuiteError(f"{path}: not a results file ({exc}){_NOT_OURS}") from None
    if not isinstance(record, dict):
        raise EvalsuiteError(f"{path}: the top level is {_kind(record)}, not an object{_NOT_OURS}")
    version = record.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise EvalsuiteError(f"{path}: schema_version {version!r} is not one this evalsuite reads "
                             f"({', '.join(map(str, READABLE_VERSIONS))}){_NOT_OURS}")
    problem = _record_problem(record)
    if problem:
        raise EvalsuiteError(f"{path}: {problem}{_NOT_OURS}")
    return upgrade_v1(record) if version == 1 else record


def read_whole_run(folder: Path) -> dict[str, Any]:
    """A run's ``results.json`` (see :func:`read_run`), refused when it is a shard: its metrics cover a part of
    the documents, and only the merged set stands for the run."""
    record = read_run(folder)
    shard = record.get("shard")
    if shard is not None:
        raise EvalsuiteError(f"{folder}: shard {shard['index']}/{shard['count']} of a run, not a whole run: "
                             "combine its set with 'evalsuite merge SHARD_FOLDER... --output DIR' and keep shard "
                             "folders out of the folders read here")
    return record


def read_samples(folder: Path) -> list[dict[str, Any]]:
    """A run's ``samples.jsonl``, each line checked to have the fields its readers rely on."""
    path = Path(folder) / "samples.jsonl"
    samples = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    sample = json.loads(line, parse_constant=_not_a_number)
                except ValueError as exc:
                    raise EvalsuiteError(f"{path}: line {number}: not JSON ({getattr(exc, 'msg', exc)}){_NOT_OURS}") from None
                problem = _sample_problem(sample)
                if problem:
                    raise EvalsuiteError(f"{path}: line {number}: {problem}{_NOT_OURS}")
                samples.append(sample)
    except OSError as exc:
        raise EvalsuiteError(f"{path}: cannot read it: {os_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise EvalsuiteError(f"{path}: not UTF-8 text ({exc}){_NOT_OURS}") from None
    return samples


_NOT_OURS = ("; the file was damaged or not written by this version of evalsuite: run that evaluation again, "
             "or move its folder out of the folders read")
_NUMBER = (int, float)
# The layout readers rely on: field -> (types, required). Other fields are free.
_RUN = {"run_id": (str, True), "created": (str, True), "config": (dict, True), "model": (dict, False),
        "evaluations": (list, True), "skipped": (list, False), "shard": (dict, False)}
_SHARD = {"index": (int, True), "count": (int, True), "documents": (dict, True)}
_SHARD_PART = {"total": (int, True), "start": (int, True), "stop": (int, True)}
_CONFIG = {"model": (str, True), "adapter": (str, False), "mode": (str, False), "shots": (int, False),
           "engine": (str, False), "dtype": (str, False), "fewshot_draws": (int, False)}
_DESCRIBED = {"engine": (str, False), "dtype": (str, False), "finetuned": (dict, False)}
_FINETUNED = {"base": (str, True), "task": (str, True), "method": (str, True)}
_EVALUATION = {"task": (str, True), "variant": (str, True), "main_metric": (str, True), "metrics": (dict, True),
               "n": (int, False), "category": (str, False), "hashes": (dict, False), "confusion": (dict, False),
               "labels": (list, False), "positive": (int, False),
               "cluster": (str, False)}
_HASHES = {"data": (str, False)}
_METRIC = {"value": (_NUMBER, False), "low": (_NUMBER, False), "high": (_NUMBER, False), "definition": (str, False)}
_SAMPLE = {"task": (str, True), "variant": (str, True), "doc_id": (int, True), "pred": (int, True),
           "gold": (int, True), "correct": (bool, True), "doc_hash": (str, False), "pred_norm": (int, False),
           "choices": (list, False), "logprobs": (list, False), "fewshot_ids": (list, False), "votes": (list, False),
           "cluster": (str, False), "label_logprobs": (list, False), "draw": (int, False), "seeds": (list, False),
           "correct_samples": (list, False)}


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(
        type(value), "a number")


def _fields_problem(obj: Any, fields: dict[str, tuple[Any, bool]], where: str) -> str | None:
    """The first field of ``obj`` (``where`` names it) that is missing or of the wrong type, or None."""
    if not isinstance(obj, dict):
        name = f"field '{where.rstrip('.')}'" if where else "the line"
        return f"{name} is {_kind(obj)}, not an object"
    for key, (types, required) in fields.items():
        value = obj.get(key)
        if value is None and not required:
            continue
        if key not in obj:
            return f"field '{where}{key}' is missing"
        # bool is an int to Python, never to a results file; an int is a float.
        if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
            return f"field '{where}{key}' is {_kind(value)}"
    return None


def _sample_problem(sample: Any) -> str | None:
    problem = _fields_problem(sample, _SAMPLE, "")
    if problem:
        return problem
    if not all(isinstance(c, str) for c in sample.get("choices") or ()):
        return "field 'choices' is not a list of strings"
    for key in ("logprobs", "label_logprobs"):  # scoring turns them into choice probabilities
        if not all(isinstance(x, _NUMBER) and not isinstance(x, bool) for x in sample.get(key) or ()):
            return f"field '{key}' is not a list of numbers"
    return None


def _record_problem(record: dict[str, Any]) -> str | None:
    """The first way ``record`` departs from the layout of ``SCHEMA`` that readers rely on, or None."""
    described = record.get("model") or {}
    problem = (_fields_problem(record, _RUN, "") or _fields_problem(record["config"], _CONFIG, "config.")
               or _fields_problem(described, _DESCRIBED, "model."))
    if problem:
        return problem
    if record.get("shard") is not None:
        if problem := _fields_problem(record["shard"], _SHARD, "shard."):
            return problem
        for task, part in record["shard"]["documents"].items():
            if problem := _fields_problem(part, _SHARD_PART, f"shard.documents.{task}."):
                return problem
    if described.get("finetuned") is not None:
        if problem := _fields_problem(described["finetuned"], _FINETUNED, "model.finetuned."):
            return problem
    for i, ev in enumerate(record["evaluations"]):
        where = f"evaluations[{i}]."
        if problem := _fields_problem(ev, _EVALUATION, where):
            return problem
        if problem := _fields_problem(ev.get("hashes") or {}, _HASHES, f"{where}hashes."):
            return problem
        if ev["main_metric"] not in ev["metrics"]:
            return f"field '{where}metrics' lacks the main metric {ev['main_metric']!r}"
        for name, metric in ev["metrics"].items():
            if problem := _fields_problem(metric, _METRIC, f"{where}metrics.{name}."):
                return problem
        for gold, row in (ev.get("confusion") or {}).items():
            if not isinstance(row, dict) or not all(isinstance(c, int) for c in row.values()):
                return f"field '{where}confusion.{gold}' is not an object of counts"
    return None
