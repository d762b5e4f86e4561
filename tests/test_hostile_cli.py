"""Hostile and broken conditions met through the command line: each gives one line naming the file or folder
and the way out, exit status 2, never a traceback; a run that fails leaves nothing half-written; whatever
can be checked without a model is checked before one loads; published files escape what they show and keep
the machine's paths to themselves.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from synthetic_runs import evaluation, pattern, samples, write_run

from evalsuite import api, cli, pipeline, results
from evalsuite.engines.cache import RequestCache
from evalsuite.errors import EvalsuiteError
from evalsuite.leaderboard import build_leaderboard
from evalsuite.leaderboard.compare import compare, parse_side

ROOT = Path(__file__).resolve().parents[1]
RUN = ["run", "--tasks", "copa", "--limit", "5", "--no-progress"]


def error_of(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """Run the command line; it must fail with status 2 and one error line (no traceback). Return that line."""
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("evalsuite: error: ")]
    assert code == 2, err
    assert "Traceback" not in err and len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    return errors[0]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load a model fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded although the run could be refused without one")

    monkeypatch.setattr(pipeline, "load_engine", refuse)


@pytest.fixture
def good_run(tmp_path: Path) -> Path:
    """A complete run folder (results.json and samples.jsonl) made without a model."""
    docs = samples("t_logic", "plain", pattern(20, 12))
    return write_run(tmp_path / "runs", "m1", [(evaluation("t_logic", "plain", docs), docs)], run_id="good")


# --- files and folders that cannot be written ------------------------------------------------------------


def test_output_that_is_a_file(tmp_path, data_dir, capsys, no_model):
    output = tmp_path / "results"
    output.write_text("not a folder")
    line = error_of(capsys, *RUN, "--model", tmp_path / "model", "--data-dir", data_dir, "--output", output)
    assert f"--output {output}: cannot write there: a file is in the way" in line


def test_output_below_a_file(tmp_path, data_dir, capsys, no_model):
    (tmp_path / "file").write_text("")
    output = tmp_path / "file" / "results"
    line = error_of(capsys, *RUN, "--model", tmp_path / "model", "--data-dir", data_dir, "--output", output)
    assert f"--output {output}: cannot write there: a part of the path is a file" in line


def test_read_only_output(tmp_path, data_dir, capsys, no_model, monkeypatch):
    def read_only(*args, **kwargs):  # what the kernel answers on a read-only mount (root included)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir"))

    monkeypatch.setattr(results.tempfile, "TemporaryFile", read_only)
    output = tmp_path / "results"
    line = error_of(capsys, *RUN, "--model", tmp_path / "model", "--data-dir", data_dir, "--output", output)
    assert f"--output {output}: cannot write there: read-only file system: choose a folder you can write to" in line


@pytest.mark.parametrize("command", ["leaderboard", "report"])
def test_published_files_into_a_file(tmp_path, good_run, capsys, command):
    output = tmp_path / "board"
    output.write_text("")
    assert f"--output {output}: cannot write there" in error_of(capsys, command, good_run, "--output", output)


def test_cache_dir_that_is_a_file(tmp_path, data_dir, capsys, no_model):
    cache = tmp_path / "cache"
    cache.write_text("")
    line = error_of(capsys, *RUN, "--model", tmp_path / "model", "--data-dir", data_dir,
                    "--output", tmp_path / "results", "--cache-dir", cache)
    assert f"request cache {cache / 'requests.sqlite'}" in line and "--no-cache" in line
    assert error_of(capsys, "cache", "info", "--cache-dir", cache) == line


def test_finetune_output_below_a_file(tmp_path, data_dir, capsys, tiny_model):
    (tmp_path / "file").write_text("")
    line = error_of(capsys, "finetune", "--task", "copa", "--model", tiny_model, "--data-dir", data_dir,
                    "--output", tmp_path / "file" / "checkpoint", "--no-progress")
    assert f"--output {tmp_path / 'file'}: cannot write there" in line


class FullDisk:
    """A file on a disk with ``room`` characters left: a write beyond it fails as a full disk does."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, text: str) -> int:
        if len(text) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(text)
        return self.handle.write(text)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.mark.parametrize("full", ["samples", "results"])
def test_disk_full_keeps_nothing_half_written_and_the_rerun_resumes(tmp_path, data_dir, tiny_model, capsys,
                                                                   monkeypatch, request_cache_dir, full):
    output = tmp_path / "results"
    argv = [*RUN, "--model", tiny_model, "--data-dir", data_dir, "--output", output]
    with monkeypatch.context() as disk:
        if full == "samples":  # room for two documents' samples (about 430 characters each), not five
            disk.setattr(results, "open", lambda *a, **k: FullDisk(open(*a, **k), 1000), raising=False)
        else:  # samples.jsonl fits; results.json does not
            fdopen = os.fdopen
            disk.setattr(results.os, "fdopen", lambda *a, **k: FullDisk(fdopen(*a, **k), 0))
        line = error_of(capsys, *argv)
    assert f"--output {output}: cannot write the run's {full}: no space left on the device" in line
    assert f"kept in the request cache {request_cache_dir / 'requests.sqlite'}: rerun the same command to resume" in line
    assert list(output.iterdir()) == []  # no .partial folder, no results

    assert cli.main([str(a) for a in argv]) == 0
    assert "5 loglikelihood requests: 5 from the cache, 0 to compute" in capsys.readouterr().err
    (run,) = output.iterdir()
    assert len(results.read_samples(run)) == 5 and results.read_run(run)["evaluations"][0]["n"] == 5


@pytest.mark.parametrize("error, message", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/x.jsonl"),
     "evalsuite: error: /data/x.jsonl: permission denied: check its permissions, or choose another place"),
    (OSError(errno.ENOSPC, "No space left on device"),
     "evalsuite: error: no space left on the device: free some space, or choose a folder on another disk"),
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), "evalsuite: error: Broken pipe"),  # not our stdout's reader
])
def test_any_other_file_error_is_one_line(capsys, monkeypatch, error, message):
    def fail(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "tasks", fail)
    assert error_of(capsys, "tasks") == message


# --- run records that are damaged or not ours ------------------------------------------------------------

SHAPES = {
    "a list": "[]",
    "an empty object": "{}",
    "no config": '{"schema_version": 1, "run_id": "r", "created": "c", "evaluations": []}',
    "evaluations an object": '{"schema_version": 1, "run_id": "r", "created": "c", "config": {"model": "m"}, '
                             '"evaluations": {"a": 1}}',
    "a metric a number": '{"schema_version": 1, "run_id": "r", "created": "c", "config": {"model": "m"}, '
                         '"evaluations": [{"task": "t", "variant": "v", "main_metric": "accuracy", '
                         '"metrics": {"accuracy": 3}}]}',
    "the main metric missing": '{"schema_version": 1, "run_id": "r", "created": "c", "config": {"model": "m"}, '
                               '"evaluations": [{"task": "t", "variant": "v", "main_metric": "f1", "metrics": {}}]}',
    "an evaluation a string": '{"schema_version": 1, "run_id": "r", "created": "c", "config": {"model": "m"}, '
                              '"evaluations": ["t"]}',
}


@pytest.mark.parametrize("command", ["leaderboard", "report", "compare"])
@pytest.mark.parametrize("shape", [*SHAPES, "not UTF-8", "not JSON"])
def test_a_broken_results_file_is_named(tmp_path, good_run, capsys, command, shape):
    path = good_run / "results.json"
    path.write_bytes({"not UTF-8": b"\xff\xfe{", "not JSON": b'{"schema_version": 1,'}.get(shape)
                     or SHAPES[shape].encode())
    argv = [command, good_run, good_run] if command == "compare" else [command, good_run, "--output", tmp_path / "b"]
    line = error_of(capsys, *argv)
    assert line.startswith(f"evalsuite: error: {path}: ") and "run that evaluation again" in line


@pytest.mark.parametrize("command", ["report", "compare"])
@pytest.mark.parametrize("bad", ['{"task": "t_logic"}', "[1, 2", '{"task": "t_logic", "variant": "plain", '
                                 '"doc_id": 0, "pred": 0, "gold": 1, "correct": false, "logprobs": ["x"]}', "3"])
def test_a_broken_samples_line_is_named(tmp_path, good_run, capsys, command, bad):
    with open(good_run / "samples.jsonl", "a", encoding="utf-8") as handle:
        handle.write(bad + "\n")
    argv = [command, good_run, good_run] if command == "compare" else [command, good_run, "--output", tmp_path / "b"]
    assert error_of(capsys, *argv).startswith(f"evalsuite: error: {good_run / 'samples.jsonl'}: line 21: ")


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=6)


def _paths(value, prefix=()):
    """Every (path, value) inside a JSON value."""
    yield prefix, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from _paths(inner, (*prefix, key))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damage_to_a_record_is_a_result_or_one_clear_error(tmp_path, good_run, data):
    """A valid record with one value replaced by any JSON value, or one field dropped: the leaderboard and the
    paired comparison either work or raise an evalsuite error, never anything else."""
    record = json.loads((good_run / "results.json").read_text())
    where, _ = data.draw(st.sampled_from([p for p in _paths(record) if p[0]]))
    parent = record
    for key in where[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(JSON_VALUES)
    folder = tmp_path / f"damaged-{abs(hash(str(where)))}"
    folder.mkdir(exist_ok=True)
    (folder / "samples.jsonl").write_text((good_run / "samples.jsonl").read_text())
    (folder / "results.json").write_text(json.dumps(record))
    try:
        build_leaderboard([folder], folder / "board")
        compare(parse_side(str(folder)), parse_side(str(good_run)), n_boot=50)
    except EvalsuiteError:
        pass


# --- a closed pipe ---------------------------------------------------------------------------------------


def _piped(argv: list[str], reader: list[str]) -> tuple[int, str, str]:
    """``evalsuite ARGV | READER`` with a real pipe: evalsuite's status and stderr, the reader's output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ours = subprocess.Popen([sys.executable, "-m", "evalsuite", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    theirs = subprocess.Popen(reader, stdin=ours.stdout, stdout=subprocess.PIPE)
    ours.stdout.close()  # only the reader holds the pipe's reading end
    shown = theirs.communicate(timeout=120)[0].decode()
    err = ours.stderr.read().decode()
    return ours.wait(timeout=120), err, shown


def test_tasks_piped_into_head():
    status, err, shown = _piped(["tasks"], ["head", "-1"])
    assert shown.split() == ["name", "category", "split", "prompts", "source", "license"]
    assert status in (0, 141) and err == ""  # 0 when all output fitted in the pipe before head left


def test_output_cut_short_by_its_reader_ends_quietly():
    # About 100 KB: more than a pipe holds, so evalsuite is still writing when head has gone.
    status, err, shown = _piped(["show", "copa", "--shots", "300", "--prompt", "all"], ["head", "-1"])
    assert shown.startswith("===== copa / plain (300-shot, document 0) =====")
    assert status == 141 and err == ""


# --- failures found before any model loads ---------------------------------------------------------------

LATE_TASK = """\
name: copa_hint
category: commonsense
description: COPA with a prompt that reads a field only some documents have
source:
  local:
    format: copa_xml
    splits:
      train: {file: copa/balacopa-dev-all.xml, ids: [1, 400]}
      validation: {file: copa/balacopa-dev-all.xml, ids: [401, 500]}
splits: {eval: validation, fewshot: train}
choices: "[choice1, choice2]"
target: label
prompts: [plain]
metrics: [accuracy]
"""
LATE_PROMPT = """\
{#-
description: the premise, and a hint that document 49 (COPA item 450) lacks
-#}
{{ premise }}{% if idx == 450 %} Hint: {{ hint }}{% endif %}
"""


def test_a_field_missing_from_one_document_midway_stops_the_run_before_the_model(tmp_path, data_dir, capsys,
                                                                                   no_model):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "copa_hint.yaml").write_text(LATE_TASK)
    (tmp_path / "prompts" / "copa_hint").mkdir(parents=True)
    prompt = tmp_path / "prompts" / "copa_hint" / "plain.jinja"
    prompt.write_text(LATE_PROMPT)
    output = tmp_path / "results"
    argv = ["run", "--model", tmp_path / "model", "--tasks", "copa_hint", "--task-dir", tmp_path / "tasks",
            "--prompt-dir", tmp_path / "prompts", "--data-dir", data_dir, "--output", output, "--no-progress"]
    line = error_of(capsys, *argv)
    assert f"{prompt}: line 4: rendering document 49 of task 'copa_hint': 'hint' is undefined" in line
    assert not output.exists()
    # With --limit 40 document 49 is not evaluated: the checks pass, and the run goes on to load the model.
    with pytest.raises(AssertionError, match="a model was loaded"):
        cli.main([str(a) for a in argv] + ["--limit", "40"])


@pytest.mark.parametrize("options, message", [
    (["--tasks", "copa", "--shots", "401"],
     "--shots 401 is more than the 400 examples that task 'copa' can draw from its few-shot split 'train': "
     "use --shots 400 or fewer"),
    (["--tasks", "bbh_web_of_lies", "--shots", "250"],  # 250 documents, each the pool of the others
     "--shots 250 is more than the 249 examples that task 'bbh_web_of_lies' can draw from its few-shot split "
     "'test' (a document is never its own example): use --shots 249 or fewer"),
    (["--tasks", "copa", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--tasks", "copa", "--bootstrap", "0"], "--bootstrap must be at least 1, got 0"),
    (["--tasks", "copa", "--seed", "-1"], "--seed must be 0 or more, got -1"),
    (["--tasks", "copa", "--temperature", "nan"], "the temperature a number at least 0"),
])
def test_options_out_of_range_stop_the_run_before_the_model(tmp_path, data_dir, capsys, no_model, options, message):
    output = tmp_path / "results"
    line = error_of(capsys, "run", "--model", tmp_path / "model", "--limit", "3", "--data-dir", data_dir,
                    "--output", output, *options)
    assert message in line and not output.exists()


def test_few_shot_pool_just_large_enough_passes_the_checks(tmp_path, data_dir, no_model):
    with pytest.raises(AssertionError, match="a model was loaded"):
        cli.main(["run", "--model", str(tmp_path / "model"), "--tasks", "bbh_web_of_lies", "--shots", "249",
                  "--limit", "2", "--data-dir", str(data_dir), "--output", str(tmp_path / "results")])


@pytest.mark.parametrize("argv, message", [
    (["show", "copa", "--shots", "-2"], "--doc and --shots must be 0 or more"),
    (["show", "copa", "--doc", "-1"], "--doc and --shots must be 0 or more"),
    (["show", "copa", "--shots", "401"], "--shots 401 is more than the 400 examples"),
    (["compare", "{run}", "{run}", "--bootstrap", "0"], "--bootstrap must be at least 1 and --seed 0 or more"),
    (["compare", "{run}", "{run}", "--seed", "-1"], "--bootstrap must be at least 1 and --seed 0 or more"),
])
def test_other_options_out_of_range(good_run, data_dir, capsys, argv, message):
    argv = [str(good_run) if a == "{run}" else a for a in argv]
    assert message in error_of(capsys, *argv, *(["--data-dir", data_dir] if argv[0] == "show" else []))


def test_cache_clear_refuses_a_negative_age(tmp_path, capsys):
    with RequestCache(tmp_path) as cache:
        cache.put("key", "loglikelihood", "0" * 64, "m", [-1.0])
    line = error_of(capsys, "cache", "clear", "--older-than", "-1", "--cache-dir", tmp_path)
    assert "--older-than must be a number of days, 0 or more, got -1.0" in line
    with RequestCache(tmp_path) as cache:
        assert len(cache) == 1  # a negative age would have matched every entry


# --- published files -------------------------------------------------------------------------------------

HOSTILE = "a|b <img src=x onerror=alert(1)> [click](http://example.com) `x` *y* \\"


def _rendered(markdown: str) -> tuple[list[list[list[str]]], list[str]]:
    """The tables of a Markdown page (rows of cell texts) and its second-level headings, rendered as GitHub
    would (CommonMark with tables); no run text may become a tag."""
    html = MarkdownIt("commonmark").enable("table").render(markdown)
    assert "<img" not in html and "<a " not in html and "<code>" not in html

    class Reader(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.headings, self.open = [], [], []

        def handle_starttag(self, tag, attrs):
            self.open.append(tag)
            if tag == "table":
                self.tables.append([])
            elif tag == "tr":
                self.tables[-1].append([])
            elif tag in ("td", "th"):
                self.tables[-1][-1].append("")
            elif tag == "h2":
                self.headings.append("")

        def handle_endtag(self, tag):
            self.open.pop()

        def handle_data(self, data):
            if self.open and self.open[-1] in ("td", "th"):
                self.tables[-1][-1][-1] += data
            elif self.open and self.open[-1] == "h2":
                self.headings[-1] += data

    reader = Reader()
    reader.feed(html)
    return reader.tables, reader.headings


def test_markdown_shows_a_hostile_model_name_as_text(tmp_path):
    docs = samples("t_logic", "plain", pattern(20, 12))
    write_run(tmp_path / "runs", HOSTILE, [(evaluation("t_logic", "plain", docs), docs)], run_id="hostile")
    write_run(tmp_path / "runs", "plain-model", [(evaluation("t_logic", "plain", docs), docs)], run_id="plain")
    assert cli.main(["leaderboard", str(tmp_path / "runs"), "--output", str(tmp_path / "board")]) == 0
    tables, _ = _rendered((tmp_path / "board" / "leaderboard.md").read_text(encoding="utf-8"))
    assert len(tables) == 3 and all(len(row) == len(table[0]) for table in tables for row in table)  # no cell split
    assert [row[0] for row in tables[0][1:]] == [HOSTILE, "plain-model"]  # shown exactly, not as markup
    tables, headings = _rendered((tmp_path / "board" / "variants.md").read_text(encoding="utf-8"))
    assert all(len(row) == len(table[0]) for table in tables for row in table)
    assert headings == [f"{HOSTILE}, zero-shot", "plain-model, zero-shot"]


def test_csv_cells_never_start_a_formula(tmp_path):
    docs = samples("t_logic", "plain", pattern(20, 12))
    write_run(tmp_path / "runs", "=HYPERLINK(\"http://example.com\")", [(evaluation("t_logic", "plain", docs), docs)],
              run_id="formula")
    board = build_leaderboard([tmp_path / "runs"], tmp_path / "board")
    row = board["csv"].read_text().splitlines()[1]
    assert row.startswith('"\'=HYPERLINK(""http://example.com"")"')


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, data_dir, tiny_model) -> tuple[Path, Path]:
    """A real run of the tiny model given by an absolute path (a link with a name of its own), with an absolute
    --data-dir: (the run's --output, the model path)."""
    folder = tmp_path_factory.mktemp("published")
    model = folder / "models" / "tiny-llama-7f3"
    model.parent.mkdir()
    model.symlink_to(tiny_model, target_is_directory=True)
    assert cli.main([*RUN, "--model", str(model), "--data-dir", str(data_dir), "--output", str(folder / "results"),
                     "--no-cache"]) == 0
    return folder / "results", model


def test_published_files_keep_the_machines_paths_to_themselves(real_run, tmp_path, data_dir, monkeypatch, capsys):
    output, model = real_run
    (run,) = output.iterdir()
    record = results.read_run(run)  # the private record keeps them
    assert record["config"]["model"] == str(model) and record["config"]["data_dir"] == str(data_dir)
    monkeypatch.chdir(model.parent.parent)  # the user works in the folder above the models
    assert cli.main(["leaderboard", str(output), "--output", str(tmp_path / "board")]) == 0
    assert cli.main(["report", str(output), "--output", str(tmp_path / "board")]) == 0
    published = sorted((tmp_path / "board").iterdir())
    assert [p.name for p in published] == ["index.html", "leaderboard.csv", "leaderboard.json", "leaderboard.md",
                                           "variants.md"]
    private = [str(model), str(model.resolve()), str(data_dir), str(run), str(output), str(tmp_path),
               os.path.expanduser("~")]
    for path in published:
        text = path.read_text(encoding="utf-8")
        assert [p for p in private if p in text] == [], path.name
        assert "models/tiny-llama-7f3" in text, path.name  # relative to where the command ran

    assert cli.main(["leaderboard", str(output), "--output", str(tmp_path / "abs"), "--absolute-paths"]) == 0
    assert cli.main(["report", str(output), "--output", str(tmp_path / "abs"), "--absolute-paths"]) == 0
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "variants.md", "index.html"):
        assert str(model) in (tmp_path / "abs" / name).read_text(encoding="utf-8"), name
    capsys.readouterr()
