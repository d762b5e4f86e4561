"""Concurrent writers: processes sharing one request cache, runs sharing one cache, leaderboard builds at once."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from evalsuite.engines.cache import RequestCache
from evalsuite.leaderboard import build_leaderboard
from evalsuite.results import find_runs, read_run, read_samples
from test_leaderboard import shifted, write_run

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _writer(folder: str, first: int, count: int) -> None:
    with RequestCache(folder) as cache:
        for i in range(first, first + count):
            cache.put(f"key-{i}", "generation", "f" * 64, "/models/m", f"answer {i}")
            if i % 50 == 0:  # readers and writers interleave
                assert cache.get_many([f"key-{i}"]) == {f"key-{i}": f"answer {i}"}


def test_processes_writing_one_cache_lose_nothing(tmp_path):
    """Four processes store overlapping answers at the same time: every answer is there, once, intact."""
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(str(tmp_path), k * 300, 600)) for k in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [w.exitcode for w in workers] == [0] * 4
    with RequestCache(tmp_path) as cache:
        assert cache.integrity_check() == "ok"
        assert len(cache) == 1500
        keys = [f"key-{i}" for i in range(1500)]
        assert cache.get_many(keys) == {k: f"answer {k.removeprefix('key-')}" for k in keys}


def test_two_runs_sharing_one_cache_both_complete(tmp_path, data_dir, tiny_model):
    """Two real runs of the same model at once, on one cache and one output folder."""
    cache, output = tmp_path / "cache", tmp_path / "results"
    command = [sys.executable, "-m", "evalsuite", "run", "--model", str(tiny_model), "--tasks", "copa",
               "--limit", "30", "--batch-size", "1", "--no-progress", "--data-dir", str(data_dir),
               "--output", str(output), "--cache-dir", str(cache)]
    runs = [subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs

    folders = find_runs([output])
    assert len(folders) == 2 and sorted(p.name for p in output.iterdir()) == [f.name for f in folders]
    first, second = (read_samples(f) for f in folders)
    assert len(first) == 30 and first == second
    records = [read_run(f) for f in folders]
    assert [r["evaluations"][0]["metrics"] for r in records] == [records[0]["evaluations"][0]["metrics"]] * 2
    for r in records:
        assert r["cache"]["requests"] == r["cache"]["hits"] + r["cache"]["computed"] == 30
    with RequestCache(cache) as shared:
        assert shared.integrity_check() == "ok"
        assert len(shared) == 30


BUILDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from evalsuite.leaderboard import build_leaderboard

    for _ in range(int(sys.argv[3])):
        build_leaderboard([Path(sys.argv[1])], Path(sys.argv[2]))
""")


def _check_outputs(folder: Path, rows: int) -> None:
    """Every file is whole: the JSON parses, the CSV has all its rows, the Markdown has its last section."""
    assert len(json.loads((folder / "leaderboard.json").read_text(encoding="utf-8"))["rows"]) == rows
    assert len(list(csv.DictReader(io.StringIO((folder / "leaderboard.csv").read_text(encoding="utf-8"))))) == rows
    markdown = (folder / "leaderboard.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Leaderboard") and "## Runs included" in markdown and markdown.endswith("|\n")


def test_two_leaderboard_builds_at_once_never_leave_a_truncated_file(tmp_path):
    runs, board = tmp_path / "runs", tmp_path / "board"
    for k in range(12):
        write_run(runs, f"model-{k}", evaluations=shifted(k / 100), created=f"2026-11-22T18:{k:02d}:00+00:00")
    reference = tmp_path / "reference"
    build_leaderboard([runs], reference)
    _check_outputs(reference, 12)

    builders = [subprocess.Popen([sys.executable, "-c", BUILDER, str(runs), str(board), "15"], env=ENV,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    reads = 0
    while any(b.poll() is None for b in builders):  # read while they write: never a partial file
        if (board / "leaderboard.md").exists() and (board / "leaderboard.json").exists() and (board / "leaderboard.csv").exists():
            _check_outputs(board, 12)
            reads += 1
        time.sleep(0.01)
    errors = [b.communicate()[1] for b in builders]
    assert [b.returncode for b in builders] == [0, 0], errors
    assert reads > 0
    _check_outputs(board, 12)
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json"):
        assert (board / name).read_bytes() == (reference / name).read_bytes()
    # nothing but the outputs themselves: no temporary files left behind
    assert sorted(p.name for p in board.iterdir()) == sorted(p.name for p in reference.iterdir())
