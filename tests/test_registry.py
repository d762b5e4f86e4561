"""Registries of engines, data formats and metrics: built-ins, entry points of other packages, clear refusals.

The end-to-end test runs ``evalsuite run`` on a third-party package (``tests/plugins/evalsuite_toy``, found
through its ``.dist-info/entry_points.txt``) that registers an engine and a metric; evalsuite names neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evalsuite.data.formats import PARSERS, parse
from evalsuite.engines import Classifier, load_engine
from evalsuite.errors import DataError, EngineError, MetricError
from evalsuite.registry import Registry
from evalsuite.results import read_run, read_samples
from evalsuite.scoring import METRICS, Metric, Predictions, compute_metrics, document_mean, resolve_metric
from evalsuite.spec import builtin_dirs

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "tests" / "plugins"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(PLUGINS)])}


# --------------------------------------------------------------------------- a third-party package, end to end


def test_third_party_engine_and_metric_are_used_by_evalsuite_run(tmp_path, data_dir):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    [builtin] = builtin_dirs()[0].glob("*/rte.yaml")
    yaml = builtin.read_text().replace("metrics: [accuracy, f1, mcc]", "metrics: [balanced_accuracy, accuracy]")
    assert "balanced_accuracy" in yaml
    (tasks / "rte.yaml").write_text(yaml)
    command = [sys.executable, "-m", "evalsuite", "run", "--engine", "toy", "--model", "toy", "--tasks", "rte",
               "--task-dir", str(tasks), "--limit", "30", "--data-dir", str(data_dir), "--output", str(tmp_path / "runs"),
               "--no-progress", "--no-cache"]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    [folder] = (tmp_path / "runs").iterdir()
    record = read_run(folder)
    assert record["config"]["engine"] == "toy" and record["model"]["engine"] == "toy"
    [ev] = record["evaluations"]
    assert ev["main_metric"] == "balanced_accuracy" and ev["n"] == 30
    samples = read_samples(folder)
    # The toy engine prefers choice len(context) % 2 (context length in bytes): its answers vary.
    assert all(s["logprobs"][s["pred"]] == 0.0 and sorted(s["logprobs"]) == [-1.0, 0.0] for s in samples)
    assert {s["pred"] for s in samples} == {0, 1}
    recalls = []
    for label in {s["gold"] for s in samples}:
        of_label = [s for s in samples if s["gold"] == label]
        recalls.append(sum(s["pred"] == label for s in of_label) / len(of_label))
    balanced = ev["metrics"]["balanced_accuracy"]
    assert balanced["value"] == pytest.approx(sum(recalls) / len(recalls), abs=1e-12)
    assert balanced["value"] != pytest.approx(ev["metrics"]["accuracy"]["value"])  # not accuracy under a new name
    assert balanced["low"] <= balanced["value"] <= balanced["high"]
    assert balanced["definition"].startswith("balanced_accuracy: mean over the gold classes")
    assert f"balanced_accuracy={balanced['value']:.3f}" in done.stdout


def test_plugins_and_built_in_engines_are_imported_only_when_named():
    code = ("import sys; from evalsuite.cli import main; main(['tasks', '--json']);"
            "from evalsuite.engines import ENGINES; from evalsuite.scoring import METRICS;"
            "print(sorted(n for n in ('evalsuite_toy', 'torch', 'vllm', 'httpx') if n in sys.modules), ENGINES.names(),"
            " 'balanced_accuracy' in METRICS.names(), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[] ['chat', 'hf', 'server', 'toy', 'vllm'] True"


def test_unknown_engine_lists_the_built_in_and_installed_ones(tmp_path, data_dir):
    command = [sys.executable, "-m", "evalsuite", "run", "--engine", "tyo", "--model", "x", "--tasks", "rte",
               "--limit", "1", "--data-dir", str(data_dir), "--output", str(tmp_path)]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "evalsuite: error: unknown engine 'tyo'; known engines: chat, hf, server, toy, vllm"


# --------------------------------------------------------------------------- the registries in this process


def test_unknown_names_list_the_known_ones():
    with pytest.raises(EngineError, match=r"^unknown engine 'nope'; known engines: chat, hf, server, vllm$"):
        load_engine("nope", "x")
    with pytest.raises(MetricError, match=r"^unknown metric 'bleu'; known metrics: accuracy, accuracy_flexible, accuracy_norm, "):
        resolve_metric("bleu")
    with pytest.raises(DataError, match=r"^unknown data format 'nope'; known data formats: copa_xml, csv, "):
        parse("nope", Path("x"))


def test_a_name_cannot_be_registered_twice():
    def first(model): ...

    def second(model): ...

    widgets = Registry("widget", "evalsuite_tests.widgets", EngineError)
    assert widgets.register("w")(first) is first
    widgets.add("w", first)  # the same object again: nothing changes
    with pytest.raises(EngineError, match=r"^widget 'w' is already registered by .*\.first: "
                                          r"register .*\.second under another name$"):
        widgets.add("w", second)
    assert widgets["w"] is first and list(widgets) == ["w"]
    accuracy = METRICS["accuracy"]
    with pytest.raises(MetricError, match="^metric 'accuracy' is already registered: register the new one"):
        METRICS.add("accuracy", Metric("accuracy", lambda p: p.gold, document_mean, lambda p: "a copy"))
    assert resolve_metric("accuracy") is accuracy


PROBE_MODULE = '''
import numpy as np
from evalsuite.scoring import Metric, document_mean, register_metric

register_metric(Metric("probe_first_rate", lambda p: (p.pred == 0).astype(np.float64), document_mean,
                       lambda p: "probe_first_rate: share of documents answered with choice 0"))


def parse_lines(path, *, upper=False):
    return [{"text": line.upper() if upper else line} for line in path.read_text().splitlines()]
'''

PROBE_ENTRY_POINTS = """
[evalsuite.metrics]
probe_first_rate = evalsuite_probe
probe_silent = evalsuite_probe
probe_broken = evalsuite_probe_missing

[evalsuite.formats]
probe_lines = evalsuite_probe:parse_lines
"""


@pytest.fixture
def probe_package(tmp_path, monkeypatch):
    """A package with entry points on sys.path; what it registers is undone after the test."""
    (tmp_path / "evalsuite_probe.py").write_text(PROBE_MODULE)
    info = tmp_path / "evalsuite_probe-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evalsuite-probe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(PROBE_ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    for registry in (METRICS, PARSERS):
        monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    yield tmp_path
    sys.modules.pop("evalsuite_probe", None)


def test_entry_point_is_loaded_only_when_its_name_is_asked_for(probe_package):
    preds = Predictions(pred=np.array([0, 1, 0, 0]), gold=np.array([0, 1, 1, 0]), n_classes=2, labels=("a", "b"))
    compute_metrics(["accuracy", "mcc"], preds, n_boot=10)
    assert "probe_first_rate" in METRICS.names() and "probe_first_rate" not in METRICS
    assert "evalsuite_probe" not in sys.modules

    result = compute_metrics(["probe_first_rate"], preds, n_boot=10)["probe_first_rate"]
    assert "evalsuite_probe" in sys.modules and "probe_first_rate" in METRICS
    assert result.value == 0.75 and result.definition.startswith("probe_first_rate: share of documents")


def test_entry_point_naming_an_object_registers_it_under_its_name(probe_package):
    (probe_package / "lines.txt").write_text("one\ntwo\n")
    assert parse("probe_lines", probe_package / "lines.txt", upper=True) == [{"text": "ONE"}, {"text": "TWO"}]
    assert PARSERS["probe_lines"] is sys.modules["evalsuite_probe"].parse_lines
    with pytest.raises(DataError, match="format 'probe_lines' does not take option.*size; it takes: upper"):
        parse("probe_lines", probe_package / "lines.txt", size=3)


def test_a_broken_or_silent_entry_point_is_named(probe_package):
    with pytest.raises(MetricError, match=r"^metric 'probe_broken': cannot load entry point "
                                          r"'probe_broken = evalsuite_probe_missing' \(group evalsuite.metrics\): "
                                          r"ModuleNotFoundError"):
        resolve_metric("probe_broken")
    with pytest.raises(MetricError, match=r"^entry point 'probe_silent = evalsuite_probe' \(group evalsuite.metrics\) "
                                          r"registers no metric named 'probe_silent'$"):
        resolve_metric("probe_silent")


# --------------------------------------------------------------------------- the classifier protocol


class _Head:
    tokenizer, labels, max_length, model_path = None, ("yes", "no"), 16, "head"

    def classify(self, requests, progress=None):
        return [(0.0, -1.0) for _ in requests]

    def describe(self):
        return {"engine": "head"}


class _Scorer:
    tokenizer = None

    def loglikelihood(self, requests, progress=None):
        return []

    def generate(self, requests, progress=None):
        return []

    def describe(self):
        return {"engine": "scorer"}


def test_classifiers_are_recognised_by_their_protocol():
    from evalsuite.engines.classifier import ClassifierEngine

    assert isinstance(_Head(), Classifier)
    assert not isinstance(_Scorer(), Classifier)
    # A classification head scores no prompts: it offers no such methods at all.
    assert not hasattr(ClassifierEngine, "loglikelihood") and not hasattr(ClassifierEngine, "generate")
