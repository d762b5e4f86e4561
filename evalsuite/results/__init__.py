"""Results: the run record, written so that a killed run never leaves a truncated file behind.

A run writes into ``<output>/<run-id>.partial/``: ``samples.jsonl`` streams there line by line, and
``results.json`` is written last (temporary file, fsync, rename); only then is the folder renamed to
``<output>/<run-id>/``. Readers (the leaderboard) only look at complete folders. See ``SCHEMA`` for keys.

Both files are strict JSON: a NaN or an infinity anywhere (which Python would write as the non-JSON ``NaN``
or ``Infinity``) stops the run with an error naming the field instead of being written.

A running writer holds a lock on its ``samples.jsonl``. When a run finishes, it deletes the ``.partial``
folders that earlier, killed runs of the same configuration left behind (same run id apart from its time
stamp, no live process holding their lock), so a resumed run leaves a clean output folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from evalsuite.errors import EvalsuiteError
from evalsuite.results.records import upgrade_v1

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # schema 1 is upgraded on reading (evalsuite.results.records.upgrade_v1)
PARTIAL = ".partial"
# A run id (made by evalsuite.api) is "<UTC stamp>-<model>-<mode>-<8 hex digits of the configuration
# hash>", with "-<n>" appended when two runs start in the same second; all but the stamp names the configuration.
_RUN_ID = re.compile(r"^\d{8}-\d{6}-(?P<config>.+-[0-9a-f]{8})(-\d+)?$")

SCHEMA = {
    "schema_version": "integer, the version of this layout",
    "run_id": "folder name: UTC time, model, mode and a short hash of the configuration",
    "created": "UTC time the run finished, ISO 8601",
    "config": "everything the run was asked for: model, engine, adapter, mode, shots, seed, tasks, prompts, "
    "limit, batch_size, dtype, data_dir, fewshot_sampler, chat_template, n_boot, data_seed (replaces generated "
    "tasks' seeds), samples and temperature (generation prompts)",
    "model": "what the engine reports: engine, model_path, model_sha256 (config + weights), dtype, device; "
    "finetuned (base, task, method) for a fine-tuned checkpoint or adapter",
    "versions": "python and package versions",
    "timings": "engine_load_s, total_s",
    "cache": "the request cache: path, requests (asked by the run), hits (answered from the cache), computed "
    "(distinct requests sent to the model); null when the run used no cache",
    "evaluations": "one entry per task x prompt variant: task, category, variant, method, split, n, "
    "main_metric, metrics{name: {value, low, high, definition}}, confusion{gold: {pred: count}}, "
    "hashes{task, prompt, data, fewshot_data}, origin, license, timing_s, docs_per_s, labels (class names in "
    "class-index order: gold and pred in samples.jsonl index them), positive (index of the positive class for "
    "binary F1, null: class 1); when documents have a "
    "'difficulty' (generated tasks): by_difficulty{level: {n, accuracy, low, high, unparseable_rate}}; with "
    "several samples per document: self_consistency{samples, temperature, vote, agreement{value, low, high, "
    "definition}}",
    "skipped": "tasks left out because their data could not be loaded (run with skip_unavailable): "
    "[{task, reason}]",
}


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
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


class RunWriter:
    """Streams samples and writes the final record of one run."""

    def __init__(self, output: Path, run_id: str):
        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        base, suffix = run_id, 1
        with _locked(self.output):  # a folder is never seen by another run before its samples are locked
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
            fcntl.flock(self._samples, fcntl.LOCK_EX)  # released by the kernel when this process dies

    def write_samples(self, samples: Iterable[dict[str, Any]]) -> None:
        lines = []  # all encoded first: a sample that cannot be written leaves no part of the batch behind
        for sample in samples:
            where = (f"{self.partial / 'samples.jsonl'}: the sample of task {sample.get('task')!r}, variant "
                     f"{sample.get('variant')!r}, document {sample.get('doc_id')}")
            lines.append(strict_json(sample, where) + "\n")
        self._samples.write("".join(lines))
        self._samples.flush()

    def finish(self, record: dict[str, Any]) -> Path:
        """Write ``results.json``, publish the folder under its final name, then close the samples."""
        self._samples.flush()
        os.fsync(self._samples.fileno())
        text = strict_json(record, str(self.partial / "results.json"), indent=2)
        atomic_write_text(self.partial / "results.json", text + "\n")
        os.replace(self.partial, self.final)
        # Closed only now: until the rename, its lock tells another run finishing at the same moment that
        # this .partial folder is alive, not a killed run's to delete.
        self._samples.close()
        self._remove_stale_partials()
        return self.final

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
        if not self._samples.closed:
            self._samples.close()


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


def read_run(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "results.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalsuiteError(f"{path}: not a readable results file ({exc})") from None
    version = record.get("schema_version") if isinstance(record, dict) else None
    if version not in READABLE_VERSIONS:
        raise EvalsuiteError(f"{path}: schema_version {version!r} is not one this evalsuite reads "
                             f"({', '.join(map(str, READABLE_VERSIONS))}); read it with the evalsuite that wrote it")
    return upgrade_v1(record) if version == 1 else record


def read_samples(folder: Path) -> list[dict[str, Any]]:
    with open(Path(folder) / "samples.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]
