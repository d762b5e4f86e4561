"""Results: the run record, written so that a killed run never leaves a truncated file behind.

A run writes into ``<output>/<run-id>.partial/``: ``samples.jsonl`` streams there line by line, and
``results.json`` is written last (temporary file, fsync, rename); only then is the folder renamed to
``<output>/<run-id>/``. Readers (the leaderboard) only look at complete folders. See ``SCHEMA`` for keys.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from evalsuite.errors import EvalsuiteError

SCHEMA_VERSION = 1
PARTIAL = ".partial"

SCHEMA = {
    "schema_version": "integer, the version of this layout",
    "run_id": "folder name: UTC time, model, mode and a short hash of the configuration",
    "created": "UTC time the run finished, ISO 8601",
    "config": "everything the run was asked for: model, engine, adapter, mode, shots, seed, tasks, prompts, "
    "limit, batch_size, dtype, data_dir, fewshot_sampler, chat_template, n_boot",
    "model": "what the engine reports: engine, model_path, model_sha256 (config + weights), dtype, device; "
    "finetuned (base, task, method) for a fine-tuned checkpoint or adapter",
    "versions": "python and package versions",
    "timings": "engine_load_s, total_s",
    "evaluations": "one entry per task x prompt variant: task, category, variant, method, split, n, "
    "main_metric, metrics{name: {value, low, high, definition}}, confusion{gold: {pred: count}}, "
    "hashes{task, prompt, data, fewshot_data}, origin, license, timing_s, docs_per_s",
}


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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

    def write_samples(self, samples: Iterable[dict[str, Any]]) -> None:
        for sample in samples:
            self._samples.write(json.dumps(sample, ensure_ascii=False) + "\n")
        self._samples.flush()

    def finish(self, record: dict[str, Any]) -> Path:
        """Close the samples, write ``results.json`` and publish the folder under its final name."""
        self._samples.flush()
        os.fsync(self._samples.fileno())
        self._samples.close()
        atomic_write_text(self.partial / "results.json", json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        os.replace(self.partial, self.final)
        return self.final

    def abandon(self) -> None:
        if not self._samples.closed:
            self._samples.close()


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
    if record.get("schema_version") != SCHEMA_VERSION:
        raise EvalsuiteError(f"{path}: schema_version {record.get('schema_version')!r} is not {SCHEMA_VERSION}")
    return record


def read_samples(folder: Path) -> list[dict[str, Any]]:
    with open(Path(folder) / "samples.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]
