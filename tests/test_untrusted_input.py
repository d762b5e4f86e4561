"""Untrusted input: templates, task files, documents and raw data files from a user's folder.

Whatever they hold, the outcome is a result or one clear error of the evalsuite family (never another
exception, never a traceback), and nothing in them runs as Python: templates are sandboxed, YAML is
safe-loaded, document text is data.
"""

from __future__ import annotations

import contextlib
import signal
import string
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalsuite import cli
from evalsuite.api import load_tasks
from evalsuite.data import load_split
from evalsuite.data.formats import parse
from evalsuite.errors import DataError, SpecError, TemplateError
from evalsuite.prompting import PromptRenderer
from evalsuite.sandbox import LETTERS
from evalsuite.spec import load_prompt, load_task
from test_formats import MALFORMED
from test_prompting import DOC, TOY_TASK, renderer_for

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CATALOG = load_tasks()


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail (rather than hang) if the block runs longer than ``seconds``."""

    def expire(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- templates ---------------------------------------------------------------------------------------------

BOMBS = [
    "{{ 9 ** (9 ** 9) }}",
    "{{ (2 ** (10 ** 10)) | string | length }}",
    "{{ (10 ** 100) ** (10 ** 100) }}",
    "{{ 'x' * 10 ** 10 }}",
    "{{ ([0] * 100000) * 100000 }}",
    "{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
    "{% set ns = namespace(x=7) %}{% for i in range(99999) %}{% set ns.x = ns.x ** 2 %}{% endfor %}{{ ns.x }}",
]


@pytest.mark.parametrize("template", BOMBS)
def test_arithmetic_that_would_never_finish_is_refused(tmp_path, template):
    renderer = renderer_for(tmp_path, "Question: {{ question }}\n" + template)
    with time_limit(10), pytest.raises(TemplateError) as info:
        renderer.render(DOC, 0)
    assert "too large for a template" in str(info.value) and "evil.jinja: line 2" in str(info.value)


def test_ordinary_arithmetic_still_works(tmp_path):
    template = "{{ 2 ** 10 }} {{ 3 * 4 }} {{ 'ab' * 3 }} {{ [0] * 3 }} {{ 2 ** -1 }} {{ 1.5 ** 2 }} {{ 7 // 2 }}"
    assert renderer_for(tmp_path, template).render(DOC, 0).context == "1024 12 ababab [0, 0, 0] 0.5 2.25 3"


# Pieces that templates use to climb out of a sandbox.
ROOTS = ["question", "a", "label", "letters", "range", "lipsum", "cycler", "joiner", "namespace", "zip",
         "enumerate", "len", "''", "0", "[1]", "{}", "self", "loop", "dict", "(1).real"]
ATTRIBUTES = ["__class__", "__mro__", "__subclasses__", "__globals__", "__init__", "__dict__", "__builtins__",
              "__import__", "__base__", "__bases__", "__getattribute__", "__reduce_ex__", "__code__", "mro",
              "format", "format_map", "append", "pop", "update", "gi_frame", "f_globals", "func_globals", "os",
              "popen", "system", "__func__", "__self__", "im_func", "_TemplateReference__context", "environment"]
LEAKS = ["<module", "__builtins__", "'__name__'", "Popen", "<frame", "<code", "Environment", "subprocess",
         "_io.", "posix"]


@st.composite
def escape_attempts(draw) -> str:
    expression = draw(st.sampled_from(ROOTS))
    for _ in range(draw(st.integers(1, 6))):
        attribute = draw(st.sampled_from(ATTRIBUTES))
        expression = draw(st.sampled_from([
            f"{expression}.{attribute}", f"{expression}['{attribute}']", f"({expression} | attr('{attribute}'))",
            f"{expression}()", f"{expression}[0]", f"{expression}.{attribute}('id')",
        ]))
    return draw(st.sampled_from([
        f"{{{{ {expression} }}}}", f"{{% for x in {expression} %}}{{{{ x }}}}{{% endfor %}}",
        f"{{% set y = {expression} %}}{{{{ y }}}}", f"{{{{ {expression} | string }}}}",
        f"{{{{ {expression} | map(attribute='__class__') | list }}}}", f"{{{{ {expression} is defined }}}}",
    ]))


@FUZZ
@given(template=escape_attempts())
def test_templates_cannot_reach_python_internals(tmp_path, template):
    renderer = renderer_for(tmp_path, "Q: {{ question }}\n" + template)
    try:
        with time_limit(10):
            context = renderer.render(dict(DOC), 0).context
    except TemplateError as exc:
        assert str(exc).startswith(str(tmp_path / "prompts" / "toy" / "evil.jinja"))
        return
    assert not any(leak in context for leak in LEAKS), context
    assert LETTERS == tuple(string.ascii_uppercase)


@FUZZ
@given(template=st.text(alphabet=st.sampled_from(list("{}%#-+*/()[]|.,'\"~ _aqxyz019=!<>\n")), max_size=60))
def test_any_template_text_renders_or_fails_clearly(tmp_path, template):
    prompt = tmp_path / "prompts" / "toy" / "evil.jinja"
    try:
        renderer = renderer_for(tmp_path, template)
        with time_limit(10):
            renderer.render(dict(DOC), 0)
    except (SpecError, TemplateError) as exc:
        assert str(exc).startswith(str(prompt)), exc


# --- task and prompt files -------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["copa_xml", "eval", "[a, b]", "label", "accuracy", "evil"]))
yaml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4),
    max_leaves=12,
)
BASE_TASK = yaml.safe_load(TOY_TASK)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))


@st.composite
def mutated_tasks(draw) -> str:
    """The toy task with some fields replaced, removed or added."""
    task = yaml.safe_load(TOY_TASK)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(task))))
        if not path:
            continue
        parent = task
        for key in path[:-1]:
            parent = parent[key]
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(yaml_values)
        elif action == "remove":
            del parent[path[-1]]
        else:
            parent[draw(st.one_of(st.text(max_size=8), st.integers()))] = draw(yaml_values)
    return yaml.safe_dump(task, allow_unicode=True)


def _task_folder(root: Path, task_text: str, template: str = "Q: {{ question }}") -> tuple[Path, Path]:
    tasks, prompts = root / "tasks", root / "prompts"
    (prompts / "toy").mkdir(parents=True, exist_ok=True)
    tasks.mkdir(exist_ok=True)
    (prompts / "toy" / "evil.jinja").write_text(template, encoding="utf-8")
    (tasks / "toy.yml").write_text(task_text, encoding="utf-8")
    return tasks, prompts


def _cli_fails_cleanly(args: list[str], capsys) -> None:
    """``evalsuite ARGS`` succeeds, or prints one ``evalsuite: error:`` line naming a file and exits 2."""
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("evalsuite: error: ") and "Traceback" not in err, err


@FUZZ
@given(task_text=mutated_tasks())
def test_malformed_task_files_give_one_clear_error(tmp_path, capsys, task_text):
    with tempfile.TemporaryDirectory(dir=tmp_path) as root:
        tasks, prompts = _task_folder(Path(root), task_text)
        try:
            load_task(tasks / "toy.yml", [prompts])
        except SpecError as exc:
            assert str(exc).startswith(str(tasks / "toy.yml")), exc
        _cli_fails_cleanly(["tasks", "--task-dir", str(tasks), "--prompt-dir", str(prompts)], capsys)


@FUZZ
@given(text=st.text(max_size=200) | st.sampled_from([
    "name: [", "{a: 1, a: 2}", "- 1\n- 2", "name: toy\n\tcategory: x", "&a [*a]", "!!binary AAAA", "? [1]\n: 2",
    "x: !!python/name:os.system", "x: !!set {a, b}", "key: 1e999", "name: toy\nname: toy2",
]))
def test_any_task_file_text_gives_a_task_or_one_clear_error(tmp_path, text):
    with tempfile.TemporaryDirectory(dir=tmp_path) as root:
        tasks, prompts = _task_folder(Path(root), text)
        try:
            load_task(tasks / "toy.yml", [prompts])
        except SpecError as exc:
            assert str(exc).startswith(str(tasks / "toy.yml")), exc


@FUZZ
@given(header=yaml_values, body=st.text(max_size=40))
def test_any_prompt_header_gives_a_prompt_or_one_clear_error(tmp_path, header, body):
    path = tmp_path / "evil.jinja"
    header_text = yaml.safe_dump(header).replace("#}", "# }")
    path.write_text("{#-\n" + header_text + "-#}\n" + body, encoding="utf-8")
    try:
        load_prompt(path)
    except SpecError as exc:
        assert str(exc).startswith(str(path)), exc


PYTHON_TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:subprocess.check_output [['touch', '{marker}']]",
    "!!python/object/new:os.system ['touch {marker}']",
    "!!python/name:os.system",
]


@pytest.mark.parametrize("tag", PYTHON_TAGS)
def test_yaml_python_tags_are_refused_not_run(tmp_path, capsys, tag):
    marker = tmp_path / "ran"
    tasks, prompts = _task_folder(tmp_path, TOY_TASK.replace("name: toy", "name: " + tag.format(marker=marker)))
    with pytest.raises(SpecError, match="toy.yml.*invalid YAML"):
        load_task(tasks / "toy.yml", [prompts])
    header = tmp_path / "header.jinja"
    header.write_text("{#-\ndescription: " + tag.format(marker=marker) + "\n-#}\nQ", encoding="utf-8")
    with pytest.raises(SpecError, match="header.jinja.*invalid YAML"):
        load_prompt(header)
    _cli_fails_cleanly(["tasks", "--task-dir", str(tasks), "--prompt-dir", str(prompts)], capsys)
    assert not marker.exists()


def test_yml_task_files_are_found(tmp_path, capsys):
    tasks, prompts = _task_folder(tmp_path, TOY_TASK.replace("prompts: [evil]", "prompts: [evil]\ntags: [mine]"))
    assert "toy" in load_tasks([tasks], [prompts])
    assert cli.main(["tasks", "--json", "--task-dir", str(tasks), "--prompt-dir", str(prompts)]) == 0
    assert '"name": "toy"' in capsys.readouterr().out


# --- documents ---------------------------------------------------------------------------------------------

PAIRS = [(name, prompt.name) for name, task in sorted(CATALOG.items()) for prompt in task.prompts]
field_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**20), st.floats(allow_nan=True), st.text(max_size=20),
                         st.lists(st.text(max_size=5) | st.integers(), max_size=5),
                         st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=3))
_first_docs: dict[str, dict] = {}


HUB_DOCS = yaml.safe_load((Path(__file__).parent / "hub_documents.yaml").read_text())


def first_doc(task_name: str, data_dir: Path) -> dict:
    """A real document: from the data folder or a generator, or (hub-only tasks) one in the hub's schema."""
    if task_name not in _first_docs:
        task = CATALOG[task_name]
        if task.local is None and task.generated is None:
            _first_docs[task_name] = HUB_DOCS[task_name]["docs"][0]["row"]
        else:
            _first_docs[task_name] = load_split(task, task.eval_split, data_dir).docs[0]
    return _first_docs[task_name]


@FUZZ
@given(pair=st.sampled_from(PAIRS), data=st.data())
def test_malformed_documents_render_or_fail_clearly(data_dir, pair, data):
    """A real document with fields replaced by anything, or removed, through every built-in prompt."""
    task_name, variant = pair
    task = CATALOG[task_name]
    doc = dict(first_doc(task_name, data_dir))
    for key in data.draw(st.lists(st.sampled_from(sorted(doc)), max_size=3, unique=True)):
        if data.draw(st.booleans()):
            doc[key] = data.draw(field_values)
        else:
            del doc[key]
    try:
        with time_limit(10):
            PromptRenderer(task, task.prompt(variant)).render(doc, 0)
    except TemplateError as exc:
        assert f"'{task_name}'" in str(exc) or str(task.path) in str(exc), exc


PAYLOAD = "{{ 7 * 191 }}{% for i in range(3) %}{{ i }}{% endfor %}{{ ''.__class__ }}"


@pytest.mark.parametrize("task_name, variant", PAIRS, ids=[f"{t}-{v}" for t, v in PAIRS])
def test_document_text_is_never_executed(data_dir, task_name, variant):
    task = CATALOG[task_name]
    real = first_doc(task_name, data_dir)

    def inject(value):
        if isinstance(value, str):
            return value + PAYLOAD
        if isinstance(value, list):
            return [inject(v) for v in value]
        if isinstance(value, dict):
            return {k: inject(v) for k, v in value.items()}
        return value

    doc = {k: (inject(v) if k not in ("label", "answerKey", "correct_option") else v) for k, v in real.items()}
    try:
        instance = PromptRenderer(task, task.prompt(variant)).render(doc, 0)
    except TemplateError:  # an injected field may no longer be a valid answer; that is a clear error too
        return
    text = instance.context + "".join(instance.continuations)
    assert PAYLOAD in text and "1337" not in text and "012" not in text.replace(PAYLOAD, "")


# --- raw data files ----------------------------------------------------------------------------------------


@st.composite
def mutated_files(draw) -> tuple[str, str, bytes, dict]:
    """One of the sample files of each format, with random bytes inserted, deleted or replaced."""
    fmt, name, content, extra, _ = draw(st.sampled_from(MALFORMED))
    raw = bytearray(content if isinstance(content, bytes) else content.encode("utf-8"))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        piece = draw(st.binary(min_size=1, max_size=4) | st.sampled_from([b"\n", b"\t", b'"', b"<", b"{", b"\xff", b"1"]))
        if action == "insert":
            raw[at:at] = piece
        elif action == "delete":
            del raw[at : at + len(piece)]
        elif action == "replace":
            raw[at : at + len(piece)] = piece
        else:
            del raw[at:]
    return fmt, name, bytes(raw), extra


@FUZZ
@given(sample=mutated_files())
def test_malformed_data_files_give_documents_or_one_clear_error(tmp_path, sample):
    fmt, name, content, extra = sample
    with tempfile.TemporaryDirectory(dir=tmp_path) as root:
        path = Path(root) / name
        path.write_bytes(content)
        for extra_name, extra_content in extra.items():
            (Path(root) / extra_name).write_text(extra_content, encoding="utf-8")
        try:
            docs = parse(fmt, path)
        except DataError as exc:
            assert str(exc).startswith(root), exc  # names the file at fault: the data file or its label file
        else:
            assert isinstance(docs, list) and all(isinstance(d, dict) for d in docs)

