"""Every bad task or prompt gives one clear error naming the file and the field (and the line, for templates)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalsuite import api, cli, pipeline
from evalsuite.pipeline.load import check_metrics
from evalsuite.errors import EvalsuiteError, SpecError, TemplateError
from evalsuite.prompting import PromptRenderer
from evalsuite.spec import find_tasks, load_task

GOOD_TASK = """\
name: toy
category: logical
description: a toy task for error tests
source:
  local: {format: copa_xml, splits: {eval: toy/toy.xml, train: toy/train.xml}}
splits: {eval: eval, fewshot: train}
choices: "[a, b]"
target: label
prompts: [plain]
metrics: [accuracy]
"""

GOOD_PROMPT = """\
{#-
description: a toy prompt
-#}
Question: {{ question }}
Answer:"""

DOC = {"question": "Which?", "a": "first", "b": "second", "label": 1}


def write(tmp_path: Path, task: str = GOOD_TASK, prompts: dict[str, str] | None = None,
          file: str = "toy.yaml") -> tuple[Path, Path]:
    """A task file under tmp_path/tasks and its prompts under tmp_path/prompts/toy/."""
    tasks, prompt_dir = tmp_path / "tasks", tmp_path / "prompts"
    (prompt_dir / "toy").mkdir(parents=True, exist_ok=True)
    tasks.mkdir(exist_ok=True)
    for variant, text in (prompts or {"plain": GOOD_PROMPT}).items():
        (prompt_dir / "toy" / f"{variant}.jinja").write_text(text, encoding="utf-8")
    path = tasks / file
    path.write_text(task, encoding="utf-8")
    return path, prompt_dir


def load(tmp_path: Path, task: str = GOOD_TASK, prompts: dict[str, str] | None = None):
    path, prompt_dir = write(tmp_path, task, prompts)
    return load_task(path, [prompt_dir])


def spec_error(tmp_path: Path, task: str = GOOD_TASK, prompts: dict[str, str] | None = None) -> tuple[str, Path]:
    path, prompt_dir = write(tmp_path, task, prompts)
    with pytest.raises(SpecError) as info:
        load_task(path, [prompt_dir])
    return str(info.value), path


def test_the_base_task_is_valid(tmp_path):
    """The bad inputs below are each one change away from this valid task."""
    task = load(tmp_path)
    assert task.name == "toy" and task.category == "logical" and task.metrics == ("accuracy",)
    inst = PromptRenderer(task, task.prompt("plain")).render(DOC, 0)
    assert inst.context == "Question: Which?\nAnswer:"
    assert inst.continuations == (" first", " second") and inst.gold == 1


# --- task files ------------------------------------------------------------------------------------------


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = GOOD_TASK.replace("description: a toy task for error tests", "description: a: b: c")
    message, path = spec_error(tmp_path, bad)
    assert message.startswith(f"{path}:")
    assert "line 3" in message and "invalid YAML" in message


@pytest.mark.parametrize("text, kind", [("- name: toy\n- category: logical\n", "list"), ("just a string\n", "str"),
                                        ("", "NoneType")])
def test_top_level_not_a_mapping(tmp_path, text, kind):
    message, path = spec_error(tmp_path, text)
    assert str(path) in message
    assert "top level must be a mapping" in message and kind in message


def test_unknown_key_names_the_typo(tmp_path):
    message, path = spec_error(tmp_path, GOOD_TASK.replace("prompts: [plain]", "prompts: [plain]\npromts: [x]"))
    assert str(path) in message
    assert "field 'promts'" in message and "unknown key" in message
    assert "prompts" in message.split("known keys here:")[1]  # the valid spelling is offered


def test_unknown_nested_key_names_its_path(tmp_path):
    message, path = spec_error(tmp_path, GOOD_TASK.replace("{eval: eval, fewshot: train}",
                                                           "{eval: eval, fewshot: train, evl: eval}"))
    assert str(path) in message and "field 'splits.evl'" in message


@pytest.mark.parametrize("old, new, field, expected", [
    ("metrics: [accuracy]", "metrics: 3", "metrics", "got int 3"),
    ("name: toy", "name: [x]", "name", "expected a string, got list"),
    ('choices: "[a, b]"', "choices: true", "choices", "got a boolean"),
    ("source:\n  local:", "source: 7\nx:\n  local:", "source", "expected a mapping"),
])
def test_wrong_type(tmp_path, old, new, field, expected):
    message, path = spec_error(tmp_path, GOOD_TASK.replace(old, new))
    assert str(path) in message
    assert f"field '{field}'" in message and expected in message


def test_missing_required_target(tmp_path):
    message, path = spec_error(tmp_path, GOOD_TASK.replace("target: label\n", ""))
    assert str(path) in message
    assert "field 'target'" in message and "is required" in message


def test_bad_category(tmp_path):
    message, path = spec_error(tmp_path, GOOD_TASK.replace("category: logical", "category: reasoning"))
    assert str(path) in message and "field 'category'" in message
    assert "'reasoning'" in message and "semantic_matching" in message  # says what is allowed


def test_bad_name(tmp_path):
    message, path = spec_error(tmp_path, GOOD_TASK.replace("name: toy", "name: Toy Task"))
    assert str(path) in message and "field 'name'" in message and "'Toy Task'" in message


def test_split_not_defined_under_source(tmp_path):
    message, path = spec_error(tmp_path, GOOD_TASK.replace("{eval: eval, fewshot: train}",
                                                           "{eval: eval, fewshot: validation}"))
    assert str(path) in message
    assert "field 'splits.fewshot'" in message and "'validation'" in message and "source.local.splits" in message


def test_invalid_choices_expression(tmp_path):
    message, path = spec_error(tmp_path, GOOD_TASK.replace('choices: "[a, b]"', 'choices: "[a, b"'))
    assert str(path) in message and "field 'choices'" in message and "'[a, b'" in message


# --- prompt files ----------------------------------------------------------------------------------------


def test_missing_prompt_file_names_variant_and_searched_path(tmp_path):
    message, path = spec_error(tmp_path, GOOD_TASK.replace("prompts: [plain]", "prompts: [plain, lettered]"))
    assert str(path) in message and "field 'prompts'" in message
    assert "'lettered'" in message
    assert str(tmp_path / "prompts" / "toy" / "lettered.jinja") in message


def test_prompt_header_invalid_yaml(tmp_path):
    prompt = "{#-\ndescription: ok\nchoices: [a, b\n-#}\nQuestion: {{ question }}"
    message, _ = spec_error(tmp_path, prompts={"plain": prompt})
    prompt_path = tmp_path / "prompts" / "toy" / "plain.jinja"
    assert message.startswith(f"{prompt_path}:")
    assert "header" in message and "invalid YAML" in message
    assert "line 4" in message  # the header's lines are the file's lines


def test_prompt_header_unknown_key(tmp_path):
    prompt = "{#-\ndescription: ok\ndelimiter: ' '\n-#}\nQuestion: {{ question }}"
    message, _ = spec_error(tmp_path, prompts={"plain": prompt})
    assert str(tmp_path / "prompts" / "toy" / "plain.jinja") in message
    assert "field 'header.delimiter'" in message and "target_delimiter" in message


def test_generation_prompt_without_answer_rule(tmp_path):
    prompt = "{#-\nmethod: generation\n-#}\nQuestion: {{ question }}"
    message, _ = spec_error(tmp_path, prompts={"plain": prompt})
    assert str(tmp_path / "prompts" / "toy" / "plain.jinja") in message
    assert "field 'header.answer'" in message and "generation" in message


def test_prompt_header_invalid_regex(tmp_path):
    prompt = "{#-\nmethod: generation\nanswer: {pattern: 'Answer: ([A-D]'}\n-#}\nQuestion: {{ question }}"
    message, _ = spec_error(tmp_path, prompts={"plain": prompt})
    assert str(tmp_path / "prompts" / "toy" / "plain.jinja") in message
    assert "field 'header.answer.pattern'" in message and "regular expression" in message


def test_prompt_header_bad_method(tmp_path):
    prompt = "{#-\nmethod: sampling\n-#}\nQuestion: {{ question }}"
    message, _ = spec_error(tmp_path, prompts={"plain": prompt})
    assert str(tmp_path / "prompts" / "toy" / "plain.jinja") in message
    assert "field 'header.method'" in message and "loglikelihood" in message


def test_template_syntax_error_names_file_and_line(tmp_path):
    prompt = "{#-\ndescription: ok\n-#}\nQuestion: {{ question }}\nContext: {{ question }\nAnswer:"
    message, _ = spec_error(tmp_path, prompts={"plain": prompt})
    assert message.startswith(f"{tmp_path / 'prompts' / 'toy' / 'plain.jinja'}: line 5:")
    assert "template syntax error" in message


def test_unclosed_block_names_file(tmp_path):
    prompt = "Question: {{ question }}\n{% for x in a %}\n{{ x }}\nAnswer:"
    message, _ = spec_error(tmp_path, prompts={"plain": prompt})
    assert str(tmp_path / "prompts" / "toy" / "plain.jinja") in message
    assert "line" in message and "endfor" in message


def test_missing_template_variable_names_file_line_and_field(tmp_path):
    prompt = "{#-\ndescription: ok\n-#}\nQuestion: {{ question }}\nHint: {{ hint }}\nAnswer:"
    task = load(tmp_path, prompts={"plain": prompt})  # variables are only checked when rendering
    renderer = PromptRenderer(task, task.prompt("plain"))
    with pytest.raises(TemplateError) as info:
        renderer.render(DOC, 7)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'prompts' / 'toy' / 'plain.jinja'}: line 5:")
    assert "'hint' is undefined" in message and "document 7" in message and "'toy'" in message


def test_missing_variable_in_a_few_shot_example_is_reported_too(tmp_path):
    task = load(tmp_path)
    renderer = PromptRenderer(task, task.prompt("plain"))
    example = {k: v for k, v in DOC.items() if k != "question"}
    with pytest.raises(TemplateError, match=r"line 4: rendering document 3 .*'question' is undefined"):
        renderer.render(DOC, 0, [(3, example)])


# --- values computed from a document ---------------------------------------------------------------------


def test_unknown_metric_is_named_with_task_file_and_field(tmp_path):
    task = load(tmp_path, GOOD_TASK.replace("metrics: [accuracy]", "metrics: [accuracy, acuracy]"))
    with pytest.raises(SpecError) as info:
        check_metrics(task)
    message = str(info.value)
    assert str(task.path) in message and "field 'metrics'" in message and "'acuracy'" in message


def test_unknown_metric_stops_evaluate_before_any_model_loads(tmp_path, monkeypatch):
    path, prompt_dir = write(tmp_path, GOOD_TASK.replace("metrics: [accuracy]", "metrics: [acuracy]"))

    def no_engine(*args, **kwargs):
        raise AssertionError("the engine was loaded before the task's metrics were checked")

    monkeypatch.setattr(pipeline, "load_engine", no_engine)
    with pytest.raises(SpecError) as info:
        api.evaluate("no-such-model", "toy", task_dirs=[path.parent], prompt_dirs=[prompt_dir],
                     data_dir=tmp_path, output=tmp_path / "results", progress=False)
    assert str(path) in str(info.value) and "field 'metrics'" in str(info.value)
    assert not (tmp_path / "results").exists()


def test_target_index_out_of_range(tmp_path):
    task = load(tmp_path)
    renderer = PromptRenderer(task, task.prompt("plain"))
    with pytest.raises(TemplateError) as info:
        renderer.render({**DOC, "label": 5}, 11)
    message = str(info.value)
    assert str(task.path) in message and "field 'target'" in message
    assert "index 5" in message and "document 11" in message and "2 choices" in message


def test_target_not_a_label_or_choice(tmp_path):
    task = load(tmp_path)
    renderer = PromptRenderer(task, task.prompt("plain"))
    with pytest.raises(TemplateError, match=r"field 'target' gave 'maybe'"):
        renderer.render({**DOC, "label": "maybe"}, 0)


def test_label_beyond_the_choices(tmp_path):
    """A string target found among more labels than there are choices must not escape as an IndexError."""
    text = GOOD_TASK.replace("target: label", "target: label\nlabels: [x, y, z]")
    task = load(tmp_path, text)
    renderer = PromptRenderer(task, task.prompt("plain"))
    with pytest.raises(TemplateError) as info:
        renderer.render({**DOC, "label": "z"}, 0)
    assert str(task.path) in str(info.value) and "field 'target'" in str(info.value)


def test_choices_expression_returning_a_non_list(tmp_path):
    task = load(tmp_path, GOOD_TASK.replace('choices: "[a, b]"', "choices: a"))
    renderer = PromptRenderer(task, task.prompt("plain"))
    with pytest.raises(TemplateError) as info:
        renderer.render(DOC, 2)
    message = str(info.value)
    assert str(task.path) in message and "field 'choices'" in message
    assert "must give a list" in message and "'first'" in message


def test_prompt_choices_returning_a_non_list_names_the_prompt_file(tmp_path):
    prompt = "{#-\nchoices: \"len(a)\"\n-#}\nQuestion: {{ question }}"
    task = load(tmp_path, prompts={"plain": prompt})
    with pytest.raises(TemplateError) as info:
        PromptRenderer(task, task.prompt("plain")).render(DOC, 0)
    message = str(info.value)
    assert str(task.prompt("plain").path) in message and "field 'choices'" in message and "got 5" in message


def test_answer_values_returning_a_non_list(tmp_path):
    prompt = ("{#-\nmethod: generation\nanswer: {pattern: 'Answer: (\\w+)', values: 'a'}\n-#}\n"
              "Question: {{ question }}")
    task = load(tmp_path, prompts={"plain": prompt})
    with pytest.raises(TemplateError) as info:
        PromptRenderer(task, task.prompt("plain")).render(DOC, 0)
    message = str(info.value)
    assert str(task.prompt("plain").path) in message and "field 'answer.values'" in message


def test_choices_expression_naming_a_missing_field(tmp_path):
    task = load(tmp_path, GOOD_TASK.replace('choices: "[a, b]"', 'choices: "[a, c]"'))
    with pytest.raises(TemplateError) as info:
        PromptRenderer(task, task.prompt("plain")).render(DOC, 4)
    message = str(info.value)
    assert str(task.path) in message and "field 'choices'" in message and "'c' is undefined" in message



def test_target_naming_a_missing_field(tmp_path):
    """An expression gives Undefined rather than failing; that must still become a TemplateError, not a traceback."""
    task = load(tmp_path, GOOD_TASK.replace("target: label", "target: lable"))
    with pytest.raises(TemplateError) as info:
        PromptRenderer(task, task.prompt("plain")).render(DOC, 9)
    message = str(info.value)
    assert str(task.path) in message and "field 'target'" in message and "'lable' is undefined" in message
    assert "document 9" in message

# --- catalogs and selection ------------------------------------------------------------------------------


def test_duplicate_task_names_in_one_folder(tmp_path):
    first, prompt_dir = write(tmp_path, file="a.yaml")
    second, _ = write(tmp_path, file="b.yaml")
    catalog = find_tasks([first.parent], [prompt_dir])
    assert "toy" not in catalog and [b.path for b in catalog.broken] == [second]
    with pytest.raises(SpecError) as info:
        api.select_tasks(catalog, "toy")
    message = str(info.value)
    assert str(second) in message and str(first) in message
    assert "field 'name'" in message and "'toy'" in message


def test_missing_task_folder(tmp_path):
    with pytest.raises(SpecError, match="task folder does not exist"):
        find_tasks([tmp_path / "nowhere"], [])


def test_task_folder_that_is_a_file(tmp_path):
    task_file = tmp_path / "mytask.yaml"
    task_file.write_text("name: mytask\n")
    with pytest.raises(SpecError, match="mytask.yaml: is a file, not a task folder"):
        find_tasks([task_file], [])


def test_unknown_task_in_selection():
    catalog = api.load_tasks()
    with pytest.raises(SpecError) as info:
        api.select_tasks(catalog, "copa,copaa")
    assert "'copaa'" in str(info.value) and "evalsuite tasks" in str(info.value)
    assert [t.name for t in api.select_tasks(catalog, "copa")] == ["copa"]


def test_empty_selection():
    with pytest.raises(SpecError, match="no tasks selected"):
        api.select_tasks(api.load_tasks(), " , ")


def test_unknown_prompt_variant():
    task = api.load_tasks()["copa"]
    with pytest.raises(SpecError, match=r"task 'copa' has no prompt variant 'fancy' \(it has: plain, lettered, cot\)"):
        task.prompt("fancy")


# --- the command line ------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, field", [
    (("prompts: [plain]", "prompts: [plain]\npromts: [x]"), "promts"),
    (("metrics: [accuracy]", "metrics: 3"), "metrics"),
    (("name: toy", "name: [toy]\nx: : y"), None),
])
def test_cli_prints_one_line_and_exits_2(tmp_path, capsys, change, field):
    path, prompt_dir = write(tmp_path, GOOD_TASK.replace(*change))
    code = cli.main(["show", "toy", "--task-dir", str(path.parent), "--prompt-dir", str(prompt_dir)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"evalsuite: error: {path}:")
    if field:
        assert f"field '{field}'" in lines[0]
    assert "Traceback" not in err


def test_cli_unknown_task_in_show(tmp_path, capsys):
    code = cli.main(["show", "nosuchtask", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("evalsuite: error: ") and "'nosuchtask'" in err
    assert len(err.strip().splitlines()) == 1


def test_errors_share_one_family():
    assert issubclass(SpecError, EvalsuiteError) and issubclass(TemplateError, EvalsuiteError)



# --- encoder inputs (fine-tuning a classification head) --------------------------------------------------

LABELLED = GOOD_TASK.replace('choices: "[a, b]"', 'choices: "[a, b]"\nlabels: [first, second]')


def test_inputs_render_the_text_pair(tmp_path):
    task = load(tmp_path, LABELLED + "inputs: [question, a ~ ' / ' ~ b]\n")
    assert task.inputs == ("question", "a ~ ' / ' ~ b")
    assert PromptRenderer(task, task.prompts[0]).inputs_of(DOC, 0) == ("Which?", "first / second")


@pytest.mark.parametrize("inputs, expected", [
    ("[a, b, question]", "needs one text or a text pair (1 or 2 expressions), got 3"),
    ("['a +']", "invalid Jinja expression"),
])
def test_bad_inputs(tmp_path, inputs, expected):
    message, path = spec_error(tmp_path, LABELLED + f"inputs: {inputs}\n")
    assert message.startswith(f"{path}: field 'inputs':") and expected in message


def test_inputs_need_labels(tmp_path):
    message, path = spec_error(tmp_path, GOOD_TASK + "inputs: [question]\n")
    assert message == f"{path}: field 'inputs': needs the task to declare 'labels' (the classes an encoder's head predicts)"


def test_inputs_naming_a_missing_field(tmp_path):
    task = load(tmp_path, LABELLED + "inputs: [question, answer]\n")
    with pytest.raises(TemplateError, match="field 'inputs' on document 0 of task 'toy': 'answer' is undefined"):
        PromptRenderer(task, task.prompts[0]).inputs_of(DOC, 0)
