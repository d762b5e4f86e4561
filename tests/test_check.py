"""``evalsuite check`` (every problem of a task found without a model) and ``evalsuite new-task`` (a task file
and prompts written for a data file)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import evalsuite.pipeline
from evalsuite import cli
from evalsuite.api import evaluate
from evalsuite.data.formats import PARSERS, register_format
from evalsuite.errors import DataError, SpecError, TemplateError
from evalsuite.prompting import PromptRenderer
from evalsuite.scaffold import new_task, read_rows
from evalsuite.spec import load_task

ROOT = Path(__file__).resolve().parents[1]

def parse_rows_jsonl(path: Path) -> list[dict]:
    """Every line's object as it is: a document may lack a field, as a user's file may."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(autouse=True, scope="module")
def rows_jsonl_format():
    """A format registered for this module's tests only, so other tests see the built-in formats alone."""
    register_format("rows_jsonl")(parse_rows_jsonl)
    yield
    del PARSERS._registered["rows_jsonl"]

TASK = """\
name: quiz
category: commonsense
source:
  local:
    format: rows_jsonl
    splits: {train: quiz/train.jsonl, test: quiz/test.jsonl}
splits: {eval: test, fewshot: train}
choices: options
target: answer
prompts: [plain, lettered]
metrics: [accuracy]
"""
PLAIN = "{#-\ndescription: plain\n-#}\nQuestion: {{ question }}\nAnswer:\n"
LETTERED = ("{#-\ndescription: lettered\nchoices: \"['A', 'B', 'C']\"\n-#}\nQuestion: {{ question }}\n"
            "{% for o in options %}{{ 'ABC'[loop.index0] }}. {{ o }}\n{% endfor %}Answer:\n")


def row(i: int) -> dict:
    return {"question": f"Question {i}?", "options": ["x", "y", "z"], "answer": i % 3}


def make_task(tmp_path: Path, test: list[dict], train: list[dict] | None = None, lettered: str = LETTERED) -> dict:
    """A user's task folder, prompt folder and data folder holding the task ``quiz``."""
    folders = {name: tmp_path / name for name in ("tasks", "prompts", "data")}
    (folders["prompts"] / "quiz").mkdir(parents=True)
    (folders["data"] / "quiz").mkdir(parents=True)
    folders["tasks"].mkdir()
    (folders["tasks"] / "quiz.yaml").write_text(TASK)
    (folders["prompts"] / "quiz" / "plain.jinja").write_text(PLAIN)
    (folders["prompts"] / "quiz" / "lettered.jinja").write_text(lettered)
    for name, rows in (("test", test), ("train", [row(i) for i in range(8)] if train is None else train)):
        (folders["data"] / "quiz" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folders


def check(folders: dict, capsys, *extra: str) -> tuple[int, str]:
    status = cli.main(["check", "quiz", "--task-dir", str(folders["tasks"]), "--prompt-dir", str(folders["prompts"]),
                       "--data-dir", str(folders["data"]), *extra])
    out = capsys.readouterr()
    return status, out.out + out.err


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    """No check loads a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(evalsuite.pipeline, "load_engine", refuse)


def test_a_field_missing_from_one_document_in_the_middle_is_named_with_the_template_line(tmp_path, capsys):
    rows = [row(i) for i in range(10)]
    del rows[5]["question"]
    folders = make_task(tmp_path, rows)
    status, out = check(folders, capsys)
    assert status == 2
    plain, lettered = folders["prompts"] / "quiz" / "plain.jinja", folders["prompts"] / "quiz" / "lettered.jinja"
    assert f"{plain}: line 4: rendering document 5 of task 'quiz': 'question' is undefined" in out
    assert f"{lettered}: line 5: rendering document 5 of task 'quiz': 'question' is undefined" in out
    assert out.count("document 5") == 2 and "document 4" not in out and "document 6" not in out  # once a variant
    assert out.startswith("2 problem(s) in 1 task(s)")


def jsonl_task(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    """A task written by new-task for a JSON Lines file of 30 questions (read by the datasets library's JSON
    builder): its folders, and its rows, to be edited and written with ``write_rows``."""
    rows = [{"question": f"Q{i}?", "options": ["w", "x", "y", "z"], "answer": i % 4} for i in range(30)]
    write_rows(tmp_path / "quiz.jsonl", rows)
    new_task("quiz", tmp_path / "quiz.jsonl", tmp_path / "mine")
    return tmp_path / "mine" / "tasks", tmp_path / "mine" / "prompts", rows


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_key_missing_from_one_jsonl_row_in_the_middle_is_named_not_printed_as_none(tmp_path, capsys):
    tasks, prompts, rows = jsonl_task(tmp_path)
    del rows[17]["question"]  # the datasets library reads it as null: document 7 of the evaluated rows 10-29
    write_rows(tasks / "data" / "quiz.jsonl", rows)
    status = cli.main(["check", "quiz", "--task-dir", str(tasks), "--prompt-dir", str(prompts)])
    out = capsys.readouterr().out
    assert status == 2 and out.startswith("3 problem(s) in 1 task(s)")
    assert "  split 'test' (local:jsonl:data/quiz.jsonl rows 10: in the task file's folder), plain, 0-shot:\n" in out
    for variant, line in (("plain", 4), ("lettered", 5), ("cot", 10)):
        assert (f"{prompts / 'quiz' / variant}.jinja: line {line}: rendering document 7 (its null fields: "
                "'question') of task 'quiz': the template printed a null value, which would read 'None'") in out
    assert "document 6" not in out and "document 8" not in out
    with pytest.raises(TemplateError, match=r"rendering document 7 \(its null fields: 'question'\)"):
        evaluate("no-model", "quiz", task_dirs=[tasks], prompt_dirs=[prompts], output=tmp_path / "out",
                 progress=False)
    assert not (tmp_path / "out").exists()


def test_a_null_target_or_choice_is_named(tmp_path, capsys):
    tasks, prompts, rows = jsonl_task(tmp_path)
    del rows[12]["answer"]
    rows[14]["options"] = ["w", "x", None, "z"]
    write_rows(tasks / "data" / "quiz.jsonl", rows)
    assert cli.main(["check", "quiz", "--task-dir", str(tasks), "--prompt-dir", str(prompts), "--prompts",
                     "plain", "--shots", "0"]) == 2
    out = capsys.readouterr().out
    assert (f"{tasks / 'quiz.yaml'}: field 'target' on document 2 (its null fields: 'answer') of task 'quiz': "
            "the expression gave a null value") in out
    assert (f"{tasks / 'quiz.yaml'}: field 'choices' on document 4 of task 'quiz': item 2 of its list is null, "
            "which would read 'None'") in out
    assert out.startswith("2 problem(s) in 1 task(s)")


def test_a_field_missing_from_a_raw_file_in_the_middle_is_named_with_its_line(tmp_path, capsys, data_dir):
    """A raw format's parser names the file and line: check reports it as the split's problem."""
    (tmp_path / "piqa").mkdir()
    lines = (data_dir / "piqa" / "valid.jsonl").read_text().splitlines()[:6]
    broken = json.loads(lines[3])
    del broken["sol2"]
    lines[3] = json.dumps(broken)
    (tmp_path / "piqa" / "valid.jsonl").write_text("\n".join(lines) + "\n")
    labels = (data_dir / "piqa" / "valid-labels.lst").read_text().splitlines()[:6]
    (tmp_path / "piqa" / "valid-labels.lst").write_text("\n".join(labels) + "\n")
    assert cli.main(["check", "piqa", "--data-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "split 'validation':" in out
    assert f"{tmp_path / 'piqa' / 'valid.jsonl'}: line 4" in out and "sol2" in out


def test_a_target_out_of_range_is_named(tmp_path, capsys):
    rows = [row(i) for i in range(6)]
    rows[3]["answer"] = 7
    folders = make_task(tmp_path, rows)
    status, out = check(folders, capsys)
    assert status == 2
    assert f"{folders['tasks'] / 'quiz.yaml'}: field 'target' gave index 7 on document 3, but there are 3 choices" in out
    assert out.count("gave index 7") == 1  # the same problem under two variants is one problem


def test_a_fewshot_pool_too_small_is_named(tmp_path, capsys):
    folders = make_task(tmp_path, [row(i) for i in range(4)], train=[row(0), row(1)])
    status, out = check(folders, capsys, "--shots", "3")
    assert status == 2
    assert "--shots 3 is more than the 2 examples that task 'quiz' can draw from its few-shot split 'train'" in out
    status, out = check(folders, capsys, "--shots", "2")
    assert status == 0 and out.endswith(": no problems\n")


def test_a_template_syntax_error_is_named_with_its_line(tmp_path, capsys):
    folders = make_task(tmp_path, [row(i) for i in range(4)],
                        lettered="{#-\ndescription: lettered\n-#}\nQuestion: {{ question }\nAnswer:\n")
    status, out = check(folders, capsys)
    assert status == 2
    assert f"{folders['prompts'] / 'quiz' / 'lettered.jinja'}: line 4: template syntax error" in out


def test_several_problems_are_reported_together_and_repeats_are_counted(tmp_path, capsys):
    rows = [row(i) for i in range(60)]
    rows[3]["answer"] = 9
    for r in rows[10:60]:
        del r["question"]
    folders = make_task(tmp_path, rows, train=[row(0), row(1)])
    status, out = check(folders, capsys, "--shots", "0", "--shots", "3", "--prompts", "plain")
    assert status == 2
    assert "gave index 9 on document 3" in out
    assert "more than the 2 examples" in out
    assert out.count("'question' is undefined") == 3  # three shown, the other 47 counted
    assert "... and 47 more like this (documents 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, ...)" in out
    assert out.startswith("52 problem(s) in 1 task(s)")


def test_the_run_stops_at_the_first_of_the_same_problems_before_loading_a_model(tmp_path):
    rows = [row(i) for i in range(10)]
    rows[3]["answer"] = 9
    del rows[5]["question"]
    folders = make_task(tmp_path, rows)
    with pytest.raises(TemplateError, match="gave index 9 on document 3"):
        evaluate("no-model", "quiz", task_dirs=[folders["tasks"]], prompt_dirs=[folders["prompts"]],
                 data_dir=folders["data"], output=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_clean_builtin_task_passes(data_dir, capsys):
    assert cli.main(["check", "copa", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert out == ("checked 1 task(s), 2 split(s), 500 documents, 3 prompt variant(s) (shots 0, 5 where the task "
                   "has a few-shot split; 1800 renderings): no problems\n")


def test_check_imports_no_torch(data_dir):
    code = ("import sys\nfrom evalsuite import cli\nstatus = cli.main(['check', 'copa', '--prompts', 'plain'])\n"
            "assert status == 0, status\nassert 'torch' not in sys.modules, 'torch imported'\nprint('ok')")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EVALSUITE_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("ok\n")


# --- new-task ------------------------------------------------------------------------------------------


def rendered_golds(output: Path, name: str, data: Path) -> dict[str, list[int]]:
    """Each written variant's gold index for every row of the data file (read as new-task reads it)."""
    task = load_task(output / "tasks" / f"{name}.yaml", [output / "prompts"])
    _, _, rows = read_rows(data)
    return {p.name: [PromptRenderer(task, p).render(doc, i).gold for i, doc in enumerate(rows)]
            for p in task.prompts}


def test_new_task_on_multiple_choice_jsonl(tmp_path, capsys):
    rows = [{"text": f"Story {i}.", "question": f"Q{i}?", "options": ["a", "b", "c", "d"], "answer": i % 4}
            for i in range(30)]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "mine"
    assert cli.main(["new-task", "mc", "--data", str(data), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "options: options" in printed and "target: index 0-based" in printed
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "prompts/mc/cot.jinja", "prompts/mc/lettered.jinja", "prompts/mc/plain.jinja", "tasks/data/mc.jsonl",
        "tasks/mc.yaml"]
    spec = yaml.safe_load((out / "tasks" / "mc.yaml").read_text())
    assert spec["source"] == {"local": {"format": "jsonl", "splits": {
        "fewshot": {"file": "data/mc.jsonl", "first": 10}, "test": {"file": "data/mc.jsonl", "rows": [10, None]}}}}
    assert spec["splits"] == {"eval": "test", "fewshot": "fewshot"}
    assert (spec["choices"], spec["target"], spec["prompts"]) == ("options", "answer", ["plain", "lettered", "cot"])
    golds = rendered_golds(out, "mc", data)
    assert golds == {v: [r["answer"] for r in rows] for v in ("plain", "lettered", "cot")}
    assert "Context: {{ text }}\nQuestion: {{ question }}" in (out / "prompts" / "mc" / "plain.jinja").read_text()


def test_new_task_on_a_csv_with_letter_answers_and_option_columns(tmp_path):
    data = tmp_path / "abcd.csv"
    with open(data, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "question", "A", "B", "C", "D", "answer"])
        for i in range(6):
            writer.writerow([i, f"Q{i}?", "w", "x", "y", "z", "ABCD"[i % 4]])
    _, mapping = new_task("abcd", data, tmp_path / "out")
    assert mapping["options"] == "[A, B, C, D]" and mapping["target"] == "letter"
    spec = yaml.safe_load((tmp_path / "out" / "tasks" / "abcd.yaml").read_text())
    assert spec["splits"] == {"eval": "test", "fewshot": "test"}  # too few rows to set examples apart
    assert rendered_golds(tmp_path / "out", "abcd", data)["lettered"] == [i % 4 for i in range(6)]


def test_new_task_on_a_yes_no_csv(tmp_path):
    data = tmp_path / "yn.csv"
    with open(data, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        for i in range(8):
            writer.writerow([f"Is {i} even?", "yes" if i % 2 == 0 else "no"])
    _, mapping = new_task("yn", data, tmp_path / "out")
    assert mapping["labels"] == "no, yes" and mapping["text"] == "column 'question'"
    spec = yaml.safe_load((tmp_path / "out" / "tasks" / "yn.yaml").read_text())
    assert (spec["labels"], spec["target"], spec["fewshot"]) == (["no", "yes"], "answer", {"sampler": "balanced"})
    assert spec["category"] == "commonsense"
    assert spec["source"]["local"] == {"format": "csv", "splits": {"test": "data/yn.csv"}}
    expected = [1 - i % 2 for i in range(8)]
    assert rendered_golds(tmp_path / "out", "yn", data) == {v: expected for v in ("plain", "lettered", "cot")}


def test_new_task_on_a_sentence_pair_file(tmp_path):
    labels = ["entailment", "neutral", "contradiction"]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"sentence1": f"A man {i}.", "sentence2": f"A person {i}.",
                                        "label": labels[i % 3]}) + "\n" for i in range(25)))
    _, mapping = new_task("pairs", data, tmp_path / "out")
    assert mapping["text pair"] == "columns 'sentence1' and 'sentence2'"
    spec = yaml.safe_load((tmp_path / "out" / "tasks" / "pairs.yaml").read_text())
    assert spec["inputs"] == ["sentence1", "sentence2"] and spec["labels"] == sorted(labels)
    assert spec["category"] == "semantic_matching"
    plain = (tmp_path / "out" / "prompts" / "pairs" / "plain.jinja").read_text()
    assert "Sentence 1: {{ sentence1 }}\nSentence 2: {{ sentence2 }}" in plain
    assert rendered_golds(tmp_path / "out", "pairs", data)["cot"] == [sorted(labels).index(labels[i % 3])
                                                                      for i in range(25)]


def test_new_task_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    data = tmp_path / "yn.jsonl"
    data.write_text("".join(json.dumps({"question": f"Q{i}?", "answer": bool(i % 2)}) + "\n" for i in range(4)))
    new_task("yn", data, tmp_path / "out")
    task_file = tmp_path / "out" / "tasks" / "yn.yaml"
    task_file.write_text("edited\n")
    with pytest.raises(SpecError, match=f"{task_file} exists .* pass --force"):
        new_task("yn", data, tmp_path / "out")
    assert cli.main(["new-task", "yn", "--data", str(data), "--output", str(tmp_path / "out")]) == 2
    assert "pass --force to replace them" in capsys.readouterr().err
    assert task_file.read_text() == "edited\n"
    new_task("yn", data, tmp_path / "out", force=True)
    assert yaml.safe_load(task_file.read_text())["labels"] == ["no", "yes"]


@pytest.mark.parametrize("name, content, message", [
    ("bad.txt", "x", "unknown kind of data file '.txt'"),
    ("free.jsonl", "".join(json.dumps({"question": f"Q{i}", "answer": f"A{i}"}) + "\n" for i in range(20)),
     "takes 20 values and no options were found"),
    ("noanswer.jsonl", json.dumps({"question": "Q"}) + "\n", "no answer column found"),
])
def test_new_task_refuses_a_file_it_cannot_map(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        new_task("t", tmp_path / name, tmp_path / "out")
    assert not (tmp_path / "out").exists()
