"""The demo script's suite (the starter suite with the raw files, the generated tasks without them) and the data
source of each task that a run prints."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from evalsuite import cli
from evalsuite.results.records import data_sources
from evalsuite.spec import load_tasks

ROOT = Path(__file__).resolve().parents[1]

# Stands in for the installed command: writes its arguments and the data directory it was given.
RECORDING_EVALSUITE = """#!/usr/bin/env bash
echo "EVALSUITE_DATA_DIR=${EVALSUITE_DATA_DIR-<unset>} $*" >> "$(dirname "$0")/../../calls.txt"
"""


def demo(tmp_path: Path, shared_data: bool, **env: str) -> tuple[str, list[str]]:
    """``scripts/demo.sh`` run in a copy of the repository's layout whose setup does nothing and whose
    ``evalsuite`` records its calls; ``shared_data``: whether ``../shared/data`` exists beside it. Returns what the
    script printed and the calls."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "demo.sh", repo / "scripts" / "demo.sh")
    (repo / "scripts" / "setup.sh").write_text("exit 0\n")
    command = repo / ".venv" / "bin" / "evalsuite"
    command.parent.mkdir(parents=True)
    command.write_text(RECORDING_EVALSUITE)
    command.chmod(command.stat().st_mode | stat.S_IXUSR)
    if shared_data:
        (tmp_path / "shared" / "data").mkdir(parents=True)
    environment = {k: v for k, v in os.environ.items() if k not in ("EVALSUITE_DATA_DIR", "TASKS", "LIMIT")}
    done = subprocess.run(["bash", str(repo / "scripts" / "demo.sh")], capture_output=True, text=True,
                          env={**environment, "LIMIT": "5", **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout, (repo / "calls.txt").read_text().splitlines()


def test_with_the_raw_files_the_demo_runs_the_starter_suite_into_leaderboards(tmp_path):
    printed, calls = demo(tmp_path, shared_data=True)
    data = tmp_path / "shared" / "data"
    assert calls == [
        f"EVALSUITE_DATA_DIR={data} run --model smollm2 --tasks starter --mode zero-shot --limit 5 "
        "--output results/demo",
        f"EVALSUITE_DATA_DIR={data} run --model smollm2 --tasks starter --mode few-shot --shots 5 --fewshot-sampler "
        "fixed --limit 5 --output results/demo",
        f"EVALSUITE_DATA_DIR={data} leaderboard results/demo --output leaderboards",
        f"EVALSUITE_DATA_DIR={data} report results/demo --output leaderboards"]
    assert f"raw files from the data directory {data}; writing leaderboards/" in printed


@pytest.mark.parametrize("shared_data, env", [(False, {}), (True, {"EVALSUITE_DATA_DIR": ""})],
                         ids=["no-shared-data", "data-dir-set-empty"])
def test_without_the_raw_files_the_demo_runs_the_generated_tasks_elsewhere(tmp_path, shared_data, env):
    printed, calls = demo(tmp_path, shared_data, **env)
    assert calls == [
        "EVALSUITE_DATA_DIR=<unset> run --model smollm2 --tasks generated --mode zero-shot --limit 5 "
        "--output results/demo-without-data",
        "EVALSUITE_DATA_DIR=<unset> run --model smollm2 --tasks generated --mode few-shot --shots 5 "
        "--fewshot-sampler fixed --limit 5 --output results/demo-without-data",
        "EVALSUITE_DATA_DIR=<unset> leaderboard results/demo-without-data --output results/leaderboards-without-data",
        "EVALSUITE_DATA_DIR=<unset> report results/demo-without-data --output results/leaderboards-without-data"]
    assert "no data directory" in printed and "are all logical: the commonsense and semantic_matching" in printed
    assert "the committed leaderboards/ (the starter suite) are left as they are" in printed


def test_the_demo_without_data_says_what_the_generated_tasks_cover():
    """What demo.sh says of the 'generated' tag: its tasks need no data, and they are all logical."""
    catalog = load_tasks()
    generated = [t for t in catalog.values() if "generated" in t.tags]
    assert len(generated) >= 4
    assert all(t.generated is not None and t.local is None and t.hub is None for t in generated)
    assert {t.category for t in generated} == {"logical"}
    assert {t.category for t in catalog.values()} == {"logical", "commonsense", "semantic_matching"}


def test_data_sources_of_a_record():
    record = {"config": {"data_dir": "/data"}, "evaluations": [
        {"task": "copa", "origin": "local:copa_xml:copa/balacopa-dev-all.xml"},
        {"task": "copa", "origin": "local:copa_xml:copa/balacopa-dev-all.xml"},  # a second prompt variant
        {"task": "boolq", "origin": "hub:google/boolq@main split validation"},
        {"task": "gen_deduction", "origin": "generated:deduction:test:seed=1234:n=500"}]}
    assert data_sources(record) == {
        "copa": "local:copa_xml:copa/balacopa-dev-all.xml (data directory /data)",
        "boolq": "hub:google/boolq@main split validation",
        "gen_deduction": "generated:deduction:test:seed=1234:n=500"}
    beside = "local:jsonl:data/q.jsonl rows 10: in the task file's folder"  # no data directory named
    record["evaluations"].append({"task": "mine", "origin": beside})
    assert data_sources(record)["mine"] == beside


def test_a_run_prints_the_data_source_of_each_task(tiny_model, data_dir, tmp_path, capsys):
    status = cli.main(["run", "--model", str(tiny_model), "--tasks", "gen_deduction,copa", "--prompts", "plain",
                       "--limit", "2", "--data-dir", str(data_dir), "--output", str(tmp_path), "--no-progress",
                       "--no-cache", "--bootstrap", "100"])
    out = capsys.readouterr().out
    assert status == 0
    assert f"{'gen_deduction':<20} data: generated:deduction:test:seed=1234:n=500\n" in out
    assert f"{'copa':<20} data: local:copa_xml:copa/balacopa-dev-all.xml (data directory {data_dir})\n" in out
