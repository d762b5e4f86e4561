"""Hostile and broken task, prompt and data inputs: files outside their folders, inputs that would take
unbounded time or memory, files that are not UTF-8, and one broken file among good ones.

Each is refused with one clear error of the evalsuite family naming the file (and field) at fault, fast:
every bomb below runs inside ``time_limit``.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from evalsuite import cli, sandbox
from evalsuite.api import evaluate, load_tasks, select_tasks
from evalsuite.pipeline.answer import _generated_sample, _Reader
from evalsuite.spec import RunSpec
from evalsuite.data import load_split
from evalsuite.engines import ContinuationScore
from evalsuite.errors import DataError, SpecError, TemplateError
from evalsuite.scoring import extract_answer
from evalsuite.spec import load_prompt, load_task
from test_prompting import DOC, TOY_TASK, renderer_for
from test_untrusted_input import FUZZ, time_limit

COPA_XML = """<?xml version="1.0"?>
<copa-corpus version="1.0">
<item id="1" asks-for="cause" most-plausible-alternative="1"><p>{premise}</p><a1>one</a1><a2>two</a2></item>
<item id="2" asks-for="effect" most-plausible-alternative="2"><p>{premise} again</p><a1>three</a1><a2>four</a2></item>
</copa-corpus>
"""
COPA_TASK = """\
name: {name}
category: commonsense
source: {{local: {{format: copa_xml, splits: {{eval: {file}}}}}}}
splits: {{eval: eval}}
choices: "[choice1, choice2]"
target: label
prompts: [{variant}]
metrics: [accuracy]
"""
SECRET = "SECRET-FROM-OUTSIDE"


@contextlib.contextmanager
def memory_limit(extra_mb: int = 400):
    """Fail (rather than swap) if the block needs ``extra_mb`` more address space: a refused bomb allocates nothing."""
    in_use = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (in_use + extra_mb * 2**20, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    """tasks/, prompts/<task>/plain.jinja, data/good.xml, and outside/ with a secret data file and template."""
    folders = {name: tmp_path / name for name in ("tasks", "prompts", "data", "outside")}
    for folder in folders.values():
        folder.mkdir()
    (folders["data"] / "good.xml").write_text(COPA_XML.format(premise="ordinary"), encoding="utf-8")
    (folders["outside"] / "secret.xml").write_text(COPA_XML.format(premise=SECRET), encoding="utf-8")
    (folders["outside"] / "x.jinja").write_text(SECRET + " {{ premise }}", encoding="utf-8")
    return folders


def write_task(folders: dict[str, Path], name: str, file: str = "good.xml", variant: str = "plain",
               text: str | None = None) -> Path:
    (folders["prompts"] / name).mkdir(exist_ok=True)
    (folders["prompts"] / name / "plain.jinja").write_text("Q: {{ premise }}", encoding="utf-8")
    path = folders["tasks"] / f"{name}.yaml"
    text = COPA_TASK.format(name=name, file=file, variant=variant) if text is None else text
    path.write_text(text, encoding="utf-8")
    return path


# --- files outside their folders -----------------------------------------------------------------------


@pytest.mark.parametrize("file", ["../outside/secret.xml", "{outside}/secret.xml", "sub/../../outside/secret.xml"])
def test_a_data_file_outside_the_data_directory_is_refused(folders, file):
    path = write_task(folders, "toy", file=file.format(outside=folders["outside"]))
    with pytest.raises(SpecError) as info:
        load_task(path, [folders["prompts"]])
    message = str(info.value)
    assert message.startswith(f"{path}: field 'source.local.splits.eval'") and "inside the data directory" in message


def test_a_link_out_of_the_data_directory_is_refused(folders):
    (folders["data"] / "link.xml").symlink_to(folders["outside"] / "secret.xml")
    (folders["data"] / "sub").mkdir()
    (folders["data"] / "sub" / "out").symlink_to(folders["outside"], target_is_directory=True)
    for file in ("link.xml", "sub/out/secret.xml"):
        path = write_task(folders, "toy", file=file)
        task = load_task(path, [folders["prompts"]])
        with pytest.raises(DataError) as info:
            load_split(task, "eval", folders["data"])
        message = str(info.value)
        assert message.startswith(f"{path}: field 'source.local.splits.eval'") and "outside the data directory" in message
        assert SECRET not in message


def test_a_label_file_beside_the_data_that_links_out_is_refused(folders):
    (folders["data"] / "piqa").mkdir()
    (folders["data"] / "piqa" / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n', encoding="utf-8")
    (folders["outside"] / "labels.lst").write_text("1\n", encoding="utf-8")
    (folders["data"] / "piqa" / "valid-labels.lst").symlink_to(folders["outside"] / "labels.lst")
    text = COPA_TASK.format(name="toy", file="piqa/valid.jsonl", variant="plain").replace("copa_xml", "piqa_jsonl")
    task = load_task(write_task(folders, "toy", text=text), [folders["prompts"]])
    with pytest.raises(DataError, match="valid-labels.lst leads outside its folder"):
        load_split(task, "eval", folders["data"])


def test_a_link_inside_the_data_directory_is_followed(folders):
    (folders["data"] / "alias.xml").symlink_to(folders["data"] / "good.xml")
    task = load_task(write_task(folders, "toy", file="alias.xml"), [folders["prompts"]])
    assert [d["premise"] for d in load_split(task, "eval", folders["data"]).docs] == ["ordinary", "ordinary again"]


@pytest.mark.parametrize("variant", ["../../outside/x", "sub/../../../outside/x", "{outside}/x", "link"])
def test_a_prompt_variant_outside_the_prompt_folder_is_refused(folders, variant):
    (folders["prompts"] / "toy").mkdir()
    (folders["prompts"] / "toy" / "link.jinja").symlink_to(folders["outside"] / "x.jinja")
    (folders["prompts"] / "other").mkdir()
    (folders["prompts"] / "other" / "plain.jinja").write_text("{{ premise }}", encoding="utf-8")
    path = write_task(folders, "toy", variant=variant.format(outside=folders["outside"]))
    with pytest.raises(SpecError) as info:
        load_task(path, [folders["prompts"]])
    message = str(info.value)
    assert message.startswith(f"{path}: field 'prompts'") and "outside the prompt folder" in message


HUB_TASK = COPA_TASK.replace("{{local: {{format: copa_xml, splits: {{eval: {file}}}}}}}",
                              "{{hub: {{path: '{file}', splits: {{eval: validation}}}}}}")


@pytest.mark.parametrize("hub_path", ["{outside}", "../outside", "a/../../outside", "./outside", "x/y/z"])
def test_a_hub_path_that_names_a_folder_is_refused(folders, hub_path):
    path = write_task(folders, "toy", text=HUB_TASK.format(name="toy", file=hub_path.format(outside=folders["outside"]),
                                                           variant="plain"))
    with pytest.raises(SpecError) as info:
        load_task(path, [folders["prompts"]])
    assert str(info.value).startswith(f"{path}: field 'source.hub.path'") and "not a hub dataset id" in str(info.value)


def test_a_hub_id_that_is_a_local_folder_here_is_refused(folders, monkeypatch):
    (folders["outside"] / "hubdir").mkdir()
    (folders["outside"] / "hubdir" / "validation.jsonl").write_text(
        '{"premise": "%s", "choice1": "a", "choice2": "b", "label": 0}\n' % SECRET, encoding="utf-8")
    monkeypatch.chdir(folders["outside"].parent)
    task = load_task(write_task(folders, "toy", text=HUB_TASK.format(name="toy", file="outside/hubdir", variant="plain")),
                     [folders["prompts"]])
    with pytest.raises(DataError, match="field 'source.hub.path': 'outside/hubdir' is a local folder here"):
        load_split(task, "eval")


segments = st.sampled_from(["..", ".", "data", "outside", "secret.xml", "good.xml", "link", "/", "sub"])


@FUZZ
@given(parts=st.lists(segments, min_size=1, max_size=6))
def test_no_data_file_name_reads_outside_the_data_directory(folders, parts):
    link = folders["data"] / "link"
    if not link.is_symlink():
        link.symlink_to(folders["outside"], target_is_directory=True)
    file = "/".join(parts).replace("//", "/")
    try:
        task = load_task(write_task(folders, "toy", file=f"'{file}'"), [folders["prompts"]])
        docs = load_split(task, "eval", folders["data"]).docs
    except (SpecError, DataError) as exc:
        assert str(exc).startswith(str(folders["tasks"] / "toy.yaml")) or str(folders["data"]) in str(exc), exc
    else:
        assert all(SECRET not in doc["premise"] for doc in docs)


# --- string-building filters, methods and operators ----------------------------------------------------

BOMBS = [
    # filters
    "{{ 'x' | center(10 ** 9) }}",
    "{{ 'a\nb' | indent(10 ** 9) }}",
    "{{ 'a\nb\nc' | indent('y' * 400000) }}",
    "{{ ('x ' * 300000) | wordwrap(1, wrapstring='y' * 10) }}",
    "{{ ('x' * 100000) | replace('x', 'y' * 100) }}",
    "{{ range(100000) | join('y' * 100) }}",
    "{{ '%0999999999d' | format(1) }}",
    "{{ '%.999999999f' | format(1.5) }}",
    "{{ '%*d' | format(10 ** 9, 1) }}",
    "{{ [1, [2, [3]]] | tojson(indent=10 ** 6) }}",
    "{{ [1] | batch(10 ** 9, 0) | list }}",
    "{{ [1] | slice(10 ** 9) | list }}",
    "{{ ([[0] * 1000] * 400) | sum(start=[]) | length }}",
    "{{ ('www.a.b ' * 100000) | urlize(target='y' * 100) }}",
    "{{ ['x'] | map('center', 10 ** 9) | list }}",
    "{{ lipsum(10 ** 6) }}",
    # the % operator
    "{{ '%0999999999d' % 1 }}",
    "{{ '%(a)0999999999d' % {'a': 1} }}",
    "{{ ('%' ~ 10 ** 9 ~ 's') % 'x' }}",
    # methods of strings and numbers
    "{{ 'x'.ljust(10 ** 9) }}",
    "{{ 'x'.rjust(10 ** 9) }}",
    "{{ 'x'.zfill(10 ** 9) }}",
    "{{ 'x'.center(10 ** 9) }}",
    "{{ ('\t' * 100000).expandtabs(10 ** 4) }}",
    "{{ ('x' * 100000).replace('x', 'y' * 100) }}",
    "{{ ('y' * 100).join(range(100000) | map('string')) }}",
    "{{ ('x' * 100000).translate({120: 'y' * 100}) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:{}}'.format(1, 10 ** 9) }}",
    "{{ ('{0}' * 1000).format('y' * 100000) }}",
    "{{ '{a:>999999999}'.format_map({'a': 1}) }}",
    "{{ (1).to_bytes(10 ** 9, 'big') }}",
    # growth by repetition
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(x=range(50000) | list) %}{% for i in range(40) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}",
    "{% set big = 'x' * 100000 %}{% set s %}{% for i in range(100000) %}{{ big ~ i }}{% endfor %}{% endset %}",
    "{% set ns = namespace(x=range(5000) | list) %}{% for i in range(300) %}{% set ns.x = [ns.x] %}{% endfor %}"
    "{{ ns.x | pprint }}",
    # unbounded loops and recursion
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100) %}{% for j in range(100) %}{% for k in range(100) %}{% endfor %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    # rendered size
    "{% for i in range(20) %}{{ 'x' * 100000 }}{% endfor %}",
]


@pytest.mark.parametrize("bomb", BOMBS)
def test_text_bombs_are_refused_fast(tmp_path, bomb):
    renderer = renderer_for(tmp_path, "Question: {{ question }}\n" + bomb)
    with time_limit(20), memory_limit(), pytest.raises(TemplateError) as info:
        renderer.render(DOC, 0)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "prompts" / "toy" / "evil.jinja")), message
    assert "over a limit of the template sandbox" in message and "limit" in message.split("sandbox: ")[1], message
    assert len(message) < 500


def test_template_errors_name_the_line_and_the_way_out(tmp_path):
    renderer = renderer_for(tmp_path, "Q: {{ question }}\n\n{{ 'x' | center(10 ** 9) }}")
    with pytest.raises(TemplateError) as info:
        renderer.render(DOC, 0)
    assert "evil.jinja: line 3: rendering document 0 of task 'toy'" in str(info.value)
    assert f"(limit {sandbox.MAX_SIZE})" in str(info.value) and "build shorter text" in str(info.value)


def test_ordinary_string_building_still_works(tmp_path):
    template = ("{{ 'ab' | center(6) }}|{{ 'a\nb' | indent(2) }}|{{ 'aa bb' | wordwrap(2) }}|"
                "{{ 'abc' | replace('b', 'xy') }}|{{ [1, 2] | join(', ') }}|{{ '%03d' | format(7) }}|"
                "{{ '%s-%s' % ('a', 'b') }}|{{ '{:>3}'.format('a') }}|"
                "{{ 'abcdefghijklmnopqrstuvwxyz' | truncate(12, end='..', leeway=0) }}|{{ [1] | tojson }}|"
                "{{ [1, 2, 3] | batch(2) | list }}|{{ [[1], [2]] | sum(start=[]) }}|{{ 'x'.zfill(3) }}|"
                "{{ ', '.join(['a', 'b']) }}|"
                "{% set ns = namespace(s='') %}{% for c in 'abc' %}{% set ns.s = ns.s ~ c %}{% endfor %}{{ ns.s }}")
    context = renderer_for(tmp_path, template).render(DOC, 0).context
    assert context == ("  ab  |a\n  b|aa\nbb|axyc|1, 2|007|a-b|  a|abcdefghij..|[1]|[[1, 2], [3]]|[1, 2]|00x|a, b|abc")


def test_a_prompt_longer_than_the_limit_is_refused(tmp_path):
    renderer = renderer_for(tmp_path, "Q: {{ question }}")
    long_doc = {**DOC, "question": "x" * (sandbox.MAX_SIZE // 3)}
    assert len(renderer.render(long_doc, 0).context) > sandbox.MAX_SIZE // 3
    with time_limit(20), pytest.raises(TemplateError) as info:
        renderer.render(long_doc, 0, [(1, long_doc), (2, long_doc), (3, long_doc)])
    assert f"more than the limit of {sandbox.MAX_SIZE}" in str(info.value) and "fewer few-shot examples" in str(info.value)


def test_rendering_stops_at_the_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "RENDER_SECONDS", 0.3)
    template = "{% set big = range(100000) | list %}{% for i in range(1000) %}{% set x = big | sort %}{% endfor %}"
    renderer = renderer_for(tmp_path, template)
    with time_limit(10), pytest.raises(TemplateError) as info:
        renderer.render(DOC, 0)
    assert "took longer than 0.3 s (the limit)" in str(info.value) and "evil.jinja: line 1" in str(info.value)


def test_the_budget_covers_the_whole_document(tmp_path, monkeypatch):
    """The steps of a document's few-shot examples and its own rendering count together."""
    renderer = renderer_for(tmp_path, "{% for i in range(60) %}.{% endfor %}")
    renderer.render(DOC, 0, [(1, DOC)])
    monkeypatch.setattr(sandbox, "MAX_STEPS", 100)
    renderer.render(DOC, 0)
    with pytest.raises(TemplateError, match="more than 100 loop steps"):
        renderer.render(DOC, 0, [(1, DOC)])


@st.composite
def string_builders(draw) -> str:
    """A chain of string-building operations with sizes from tiny to huge."""
    size = st.sampled_from(["3", "1000", "10 ** 5", "10 ** 6", "10 ** 9", "-1"])
    expression = draw(st.sampled_from(["'ab'", "'x\ty\nz'", "question", "range(50) | list", "'%s%d'"]))
    for _ in range(draw(st.integers(1, 4))):
        n = draw(size)
        expression = draw(st.sampled_from([
            f"({expression}) | center({n})", f"({expression}) | indent({n})", f"({expression}) | string",
            f"({expression}) | replace('a', 'b' * {n})", f"({expression}) | join('-' * {n})",
            f"({expression}) | wordwrap(2, wrapstring='~' * {n})", f"({expression}) | tojson(indent={n})",
            f"({expression} | string).ljust({n})", f"({expression} | string).expandtabs({n})",
            f"('%' ~ ({n}) ~ 's') % ({expression},)", f"'{{:>{{}}}}'.format({expression}, {n})",
            f"({expression}) ~ ({expression})", f"[{expression}] * {n}", f"({expression} | string) * {n}",
            f"({expression}) | batch({n}, 0) | list", f"({expression} | string) | regex_replace('', '+' * {n})",
        ]))
    return "{{ (" + expression + ") | length }}"


@FUZZ
@given(template=string_builders())
def test_string_building_is_bounded(tmp_path, template):
    renderer = renderer_for(tmp_path, template)
    try:
        with time_limit(20), memory_limit():
            context = renderer.render(dict(DOC), 0).context
    except TemplateError as exc:
        assert "MemoryError" not in str(exc) and str(exc).startswith(str(tmp_path / "prompts")), exc
    else:
        assert int(context) <= sandbox.MAX_SIZE


# --- regular expressions -------------------------------------------------------------------------------


@pytest.mark.parametrize("template", [
    "{{ ('a' * 60 ~ '!') | regex_replace('(a|aa)+$', '') }}",
    "{{ ('a' * 60 ~ '!') | regex_findall('(a|aa)+$') }}",
])
def test_catastrophic_template_regexes_stop(tmp_path, monkeypatch, template):
    monkeypatch.setattr(sandbox, "REGEX_SECONDS", 0.2)
    renderer = renderer_for(tmp_path, template)
    with time_limit(10), pytest.raises(TemplateError) as info:
        renderer.render(DOC, 0)
    assert "regular expression '(a|aa)+$' ran longer than 0.2 s (the limit): simplify it" in str(info.value)


def test_regex_replacements_cannot_grow_without_bound(tmp_path):
    renderer = renderer_for(tmp_path, "{{ ('x' * 1000) | regex_replace('', 'y' * 2000) }}")
    with time_limit(10), pytest.raises(TemplateError, match="regex_replace result .* too large for a template"):
        renderer.render(DOC, 0)
    assert renderer_for(tmp_path, "{{ 'a-b' | regex_replace('(\\\\w)', '<\\\\1>') }}").render(DOC, 0).context == "<a>-<b>"


GENERATION_PROMPT = """{#-
method: generation
answer: {pattern: "(a|aa)+$"}
-#}
Q: {{ premise }}"""


class FixedAnswers:
    """Answers every generation with one text and prefers the first choice when scoring."""

    def __init__(self, tokenizer, text: str = "a" * 60 + "!"):
        self.tokenizer, self.text = tokenizer, text

    def describe(self):
        return {"engine": "fixed", "model_sha256": "0" * 64, "dtype": "none"}

    def loglikelihood(self, requests, progress=None):
        return [tuple(ContinuationScore(-1.0 if k == 0 else -2.0, k == 0, len(c))
                      for k, c in enumerate(r.continuations)) for r in requests]

    def generate(self, requests, progress=None):
        return [self.text for _ in requests]


@pytest.fixture(scope="module")
def byte_tok():
    from tiny_models import byte_tokenizer

    return byte_tokenizer()


def test_a_catastrophic_answer_pattern_stops_the_run_with_its_file(folders, monkeypatch, byte_tok):
    monkeypatch.setattr(sandbox, "REGEX_SECONDS", 0.2)
    with time_limit(10), pytest.raises(sandbox.LimitError, match=r"ran longer than 0.2 s"):
        extract_answer("a" * 60 + "!", "(a|aa)+$")
    path = write_task(folders, "gen")
    (folders["prompts"] / "gen" / "plain.jinja").write_text(GENERATION_PROMPT, encoding="utf-8")
    with time_limit(30), pytest.raises(SpecError) as info:
        evaluate("fixed", "gen", engine=FixedAnswers(byte_tok), task_dirs=[folders["tasks"]],
                 prompt_dirs=[folders["prompts"]], data_dir=folders["data"], output=folders["outside"], progress=False)
    message = str(info.value)
    assert message.startswith(f"{folders['prompts'] / 'gen' / 'plain.jinja'}: field 'header.answer.pattern' on document 0")
    assert path.exists() and "ran longer than 0.2 s" in message


def test_generated_sample_turns_a_regex_limit_into_a_spec_error(folders, monkeypatch):
    monkeypatch.setattr(sandbox, "REGEX_SECONDS", 0.2)
    write_task(folders, "gen")
    (folders["prompts"] / "gen" / "plain.jinja").write_text(GENERATION_PROMPT, encoding="utf-8")
    task = load_task(folders["tasks"] / "gen.yaml", [folders["prompts"]])
    from evalsuite.prompting import PromptRenderer

    doc = {"premise": "p", "choice1": "a", "choice2": "b", "label": 0}
    instance = PromptRenderer(task, task.prompts[0]).render(doc, 4)
    with time_limit(10), pytest.raises(SpecError, match="field 'header.answer.pattern' on document 4 of task 'gen'"):
        _generated_sample(task, task.prompts[0], instance, instance.context, ["a" * 60 + "!"],
                          _Reader(RunSpec("m"), None, False), None)


# --- the filter expression ------------------------------------------------------------------------------


@pytest.mark.parametrize("expression", [
    "('x' | center(10 ** 9)) | length > 0",
    "('%0999999999d' % 1) | length > 0",
    "(range(100000) | map('string') | join('x' * 100000)) | length > 0",
    "(premise * 10 ** 9) | length > 0",
    "lipsum(10 ** 6) | length > 0",
])
def test_filter_expressions_have_the_template_limits(folders, expression):
    task_text = COPA_TASK.format(name="toy", file="good.xml", variant="plain") + f'filter: "{expression}"\n'
    task = load_task(write_task(folders, "toy", text=task_text), [folders["prompts"]])
    with time_limit(20), memory_limit(), pytest.raises(DataError) as info:
        load_split(task, "eval", folders["data"])
    message = str(info.value)
    assert message.startswith(f"{task.path}: field 'filter' on document 0") and "over a limit of the template sandbox" in message


def test_filter_expressions_run_in_the_template_sandbox(folders, monkeypatch):
    text = COPA_TASK.format(name="toy", file="good.xml", variant="plain") + "filter: \"letters[label] == 'B'\"\n"
    task = load_task(write_task(folders, "toy", text=text), [folders["prompts"]])
    assert [d["label"] for d in load_split(task, "eval", folders["data"]).docs] == [1]
    monkeypatch.setattr(sandbox, "REGEX_SECONDS", 0.2)
    text = COPA_TASK.format(name="toy", file="good.xml", variant="plain") + \
        "filter: \"('a' * 60 ~ '!') | regex_findall('(a|aa)+$')\"\n"
    task = load_task(write_task(folders, "toy", text=text), [folders["prompts"]])
    with time_limit(10), pytest.raises(DataError, match="ran longer than 0.2 s"):
        load_split(task, "eval", folders["data"])


# --- YAML ----------------------------------------------------------------------------------------------


def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 "lol"'] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nname: *a{levels - 1}\ncategory: logical\n"


def test_yaml_aliases_are_refused(folders):
    for text, alias in [(billion_laughs(), "*a0"), ("name: &n toy\ndescription: *n\n", "*n")]:
        path = write_task(folders, "toy", text=text)
        with time_limit(10), pytest.raises(SpecError) as info:
            load_task(path, [folders["prompts"]])
        assert str(info.value).startswith(f"{path}: line 2") and f"aliases ({alias}) are not allowed" in str(info.value)
        assert len(str(info.value)) < 300


def test_oversized_and_deeply_nested_yaml_is_refused(folders):
    path = write_task(folders, "toy", text="description: " + "x" * 200_000 + "\n")
    with time_limit(10), pytest.raises(SpecError, match="larger than 100000 bytes"):
        load_task(path, [folders["prompts"]])
    path = write_task(folders, "toy", text="name: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with time_limit(20), pytest.raises(SpecError, match=f"{re.escape(str(path))}.*nested too deeply"):
        load_task(path, [folders["prompts"]])


@pytest.mark.parametrize("line", [
    "name: " + "x" * 90_000,
    "category: " + "x" * 90_000,
    "labels: [" + ", ".join(["x" * 10] * 5000) + "]\npositive: " + "y" * 20_000,
    "x" * 90_000 + ": 1",
])
def test_error_messages_quote_the_file_briefly(folders, line):
    text = COPA_TASK.format(name="toy", file="good.xml", variant="plain")
    key = line.split(":")[0]
    text = "\n".join(l for l in text.splitlines() if not l.startswith(key)) + "\n" + line + "\n"
    path = write_task(folders, "toy", text=text)
    with pytest.raises(SpecError) as info:
        load_task(path, [folders["prompts"]])
    assert str(info.value).startswith(str(path)) and len(str(info.value)) < 1000


@FUZZ
@given(anchors=st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=4), data=st.data())
def test_any_yaml_with_anchors_and_aliases_loads_or_fails_briefly(folders, anchors, data):
    lines = []
    for i, anchor in enumerate(anchors):
        value = data.draw(st.sampled_from(["1", "[x, y]", f"[*{anchor}, *{anchor}]", "{k: v}", f"*{anchor}"]))
        lines.append(f"k{i}: &{anchor} {value}")
    path = write_task(folders, "toy", text="\n".join(lines) + "\nname: toy\n")
    try:
        with time_limit(10):
            load_task(path, [folders["prompts"]])
    except SpecError as exc:
        assert str(exc).startswith(str(path)) and len(str(exc)) < 500


def test_a_template_nested_too_deeply_is_a_spec_error(folders):
    prompt = folders["prompts"] / "toy" / "deep.jinja"
    prompt.parent.mkdir()
    prompt.write_text("{{ " + "(" * 20_000 + "1" + ")" * 20_000 + " }}", encoding="utf-8")
    message = f"{prompt}: line 1: template syntax error: nested too deeply"
    with time_limit(20), pytest.raises(SpecError, match=re.escape(message)):
        load_prompt(prompt)


# --- files that are not UTF-8, and one broken file among good ones --------------------------------------


def test_a_task_file_that_is_not_utf8_names_its_line(folders):
    path = write_task(folders, "toy")
    path.write_bytes(path.read_bytes() + "description: café\n".encode("latin-1"))
    message = f"{path}: line 9: the task file is not UTF-8 text (byte 0xe9): save it as UTF-8"
    with pytest.raises(SpecError, match=re.escape(message)):
        load_task(path, [folders["prompts"]])


def test_a_prompt_file_that_is_not_utf8_names_the_prompt(folders):
    path = write_task(folders, "toy")
    prompt = folders["prompts"] / "toy" / "plain.jinja"
    prompt.write_bytes("Q: {{ premise }}\nCafé?".encode("latin-1"))
    with pytest.raises(SpecError, match=re.escape(f"{prompt}: line 2: the prompt file is not UTF-8 text")):
        load_task(path, [folders["prompts"]])


BROKEN = {
    "latin": "name: latin\ndescription: caf\xe9\n".encode("latin-1"),
    "syntax": b"name: [\n",
    "field": COPA_TASK.format(name="field", file="good.xml", variant="plain").replace("metrics:", "metricz:").encode(),
    "aliases": billion_laughs().encode(),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_one_broken_file_fails_only_the_runs_that_select_it(folders, capsys, byte_tok, kind):
    write_task(folders, "good")
    broken = folders["tasks"] / f"{kind}.yaml"
    broken.write_bytes(BROKEN[kind])
    dirs = ["--task-dir", str(folders["tasks"]), "--prompt-dir", str(folders["prompts"])]

    catalog = load_tasks([folders["tasks"]], [folders["prompts"]])
    assert "good" in catalog and "copa" in catalog and [b.path for b in catalog.broken] == [broken]
    assert [t.name for t in select_tasks(catalog, "good,copa")] == ["good", "copa"]
    for selection in (broken.stem, "all", "good," + broken.stem):
        with pytest.raises(SpecError) as info:
            select_tasks(catalog, selection)
        assert str(info.value).startswith(str(broken))

    assert cli.main(["tasks", "--json", *dirs]) == 0
    out, err = capsys.readouterr()
    assert '"name": "good"' in out and "1 task file(s) could not be loaded" in err and f"  {broken}" in err
    assert cli.main(["show", "good", "--data-dir", str(folders["data"]), *dirs]) == 0
    assert "Q: ordinary" in capsys.readouterr().out
    assert cli.main(["show", broken.stem, "--data-dir", str(folders["data"]), *dirs]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"evalsuite: error: {broken}") and len(err.splitlines()) == 1 and len(err) < 500

    run = evaluate("fixed", "good", engine=FixedAnswers(byte_tok), task_dirs=[folders["tasks"]],
                   prompt_dirs=[folders["prompts"]], data_dir=folders["data"], output=folders["outside"], progress=False)
    assert [ev["task"] for ev in run.record["evaluations"]] == ["good"]


def test_a_broken_user_task_is_not_replaced_by_the_built_in_one(folders):
    (folders["tasks"] / "copa.yaml").write_text("name: copa\ncategory: commonsense\nsource: [\n", encoding="utf-8")
    catalog = load_tasks([folders["tasks"]], [folders["prompts"]])
    assert "copa" not in catalog and "rte" in catalog
    for selection in ("copa", "commonsense", "starter"):
        with pytest.raises(SpecError, match=re.escape(str(folders["tasks"] / "copa.yaml"))):
            select_tasks(catalog, selection if selection != "starter" else "copa,rte")
    assert [t.name for t in select_tasks(catalog, "rte")] == ["rte"]


def test_a_broken_file_with_a_readable_category_fails_that_category(folders):
    text = COPA_TASK.format(name="mine", file="good.xml", variant="plain").replace("metrics:", "metricz:")
    write_task(folders, "mine", text=text + "tags: [mytag]\n")
    catalog = load_tasks([folders["tasks"]], [folders["prompts"]])
    for selection in ("mine", "commonsense", "mytag"):
        with pytest.raises(SpecError, match="mine.yaml: field 'metric"):
            select_tasks(catalog, selection)
    assert [t.name for t in select_tasks(catalog, "logical")]
