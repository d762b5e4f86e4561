"""The wheel ships the built-in tasks and prompts, finds them once installed, and users can add or override tasks."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from evalsuite import cli
from evalsuite.api import load_tasks

ROOT = Path(__file__).resolve().parents[1]
TASK_FILES = sorted(p.relative_to(ROOT / "tasks").as_posix() for p in (ROOT / "tasks").rglob("*.yaml"))
PROMPT_FILES = sorted(p.relative_to(ROOT / "prompts").as_posix() for p in (ROOT / "prompts").rglob("*.jinja"))
MODULES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "evalsuite").rglob("*.py") if "__pycache__" not in p.parts)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the project (the working tree is never written to)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE", ".gitignore"):  # hatchling obeys .gitignore
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    if not (src / "README.md").exists():  # test_readme_exists reports this on its own
        (src / "README.md").write_text("# evalsuite\n", encoding="utf-8")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("evalsuite", "tasks", "prompts"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        command.append("--no-isolation")  # no network needed: use the hatchling installed here
    done = subprocess.run([*command, str(src)], capture_output=True, text=True, env=_clean_env(), timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = list(out.glob("evalsuite-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, env=_clean_env(), timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return target


def test_repository_has_built_in_files():
    assert "commonsense/copa.yaml" in TASK_FILES and len(TASK_FILES) >= 8
    assert "copa/plain.jinja" in PROMPT_FILES and len(PROMPT_FILES) >= 16


def test_readme_exists():
    """pyproject.toml declares readme = "README.md"; without it the wheel cannot be built from the checkout."""
    assert (ROOT / "README.md").is_file(), "README.md is missing: 'python -m build' fails on the repository"


def test_wheel_contains_every_task_and_prompt(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "evalsuite/_builtin/tasks/commonsense/copa.yaml" in names
        assert "evalsuite/_builtin/prompts/copa/plain.jinja" in names
        for rel in TASK_FILES:
            member = f"evalsuite/_builtin/tasks/{rel}"
            assert member in names, member
            assert zf.read(member) == (ROOT / "tasks" / rel).read_bytes(), member
        for rel in PROMPT_FILES:
            member = f"evalsuite/_builtin/prompts/{rel}"
            assert member in names, member
            assert zf.read(member) == (ROOT / "prompts" / rel).read_bytes(), member
        shipped_tasks = {n for n in names if n.startswith("evalsuite/_builtin/tasks/") and n.endswith(".yaml")}
        shipped_prompts = {n for n in names if n.startswith("evalsuite/_builtin/prompts/") and n.endswith(".jinja")}
        assert len(shipped_tasks) == len(TASK_FILES) and len(shipped_prompts) == len(PROMPT_FILES)
        assert "evalsuite/cli.py" in names and "evalsuite/spec/task.py" in names
        assert not any("__pycache__" in n or n.startswith(("tests/", "tasks/", "prompts/")) for n in names)
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "evalsuite = evalsuite.cli:main" in zf.read(entry_points).decode()



def test_wheel_contains_every_module(wheel):
    """No package module may be dropped, e.g. by a .gitignore pattern such as 'results/' that also matches
    evalsuite/results/."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = [m for m in MODULES if m not in names]
    assert not missing, f"modules missing from the wheel: {missing}"

def run_installed(installed: Path, cwd: Path, code: str) -> subprocess.CompletedProcess:
    """Python with only the installed wheel's folder (not the checkout) importable as evalsuite."""
    return subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); " + code,
                           str(installed)], cwd=cwd, capture_output=True, text=True, env=_clean_env(), timeout=120)


def test_builtin_dirs_from_the_installed_layout(installed, tmp_path):
    code = (
        "import json, evalsuite; from evalsuite.spec import builtin_dirs, find_tasks;"
        "tasks, prompts = builtin_dirs(); catalog = find_tasks([tasks], [prompts]);"
        "print(json.dumps({'package': evalsuite.__file__, 'tasks': str(tasks), 'prompts': str(prompts),"
        " 'catalog': {n: [str(t.path)] + [str(p.path) for p in t.prompts] for n, t in catalog.items()}}))"
    )
    done = run_installed(installed, tmp_path, code)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    root = installed.resolve()
    assert Path(found["package"]).resolve().is_relative_to(root)
    assert Path(found["tasks"]) == root / "evalsuite" / "_builtin" / "tasks"
    assert Path(found["prompts"]) == root / "evalsuite" / "_builtin" / "prompts"
    assert set(found["catalog"]) == set(load_tasks())
    for paths in found["catalog"].values():
        assert all(Path(p).resolve().is_relative_to(root) for p in paths), paths


def test_installed_command_line_lists_the_built_in_tasks(installed, tmp_path):
    code = "from evalsuite.cli import main; sys.exit(main(['tasks', '--json']))"
    done = run_installed(installed, tmp_path, code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {r["name"] for r in json.loads(done.stdout)} == set(load_tasks())


def test_builtin_dirs_from_the_checkout():
    from evalsuite.spec import builtin_dirs

    tasks, prompts = builtin_dirs()
    assert (tasks / "commonsense" / "copa.yaml").is_file() and (prompts / "copa" / "plain.jinja").is_file()


# --- user folders of tasks and prompts -------------------------------------------------------------------

NEW_TASK = """\
name: my_entailment
category: semantic_matching
description: a user's own task
source:
  local: {format: rte_xml, splits: {eval: rte/rte3_test.xml}}
splits: {eval: eval}
labels: [entailment, not_entailment]
target: label
choices: '["yes", "no"]'
prompts: [mine]
metrics: [accuracy, mcc]
"""

OVERRIDE_COPA = """\
name: copa
category: logical
description: the user's COPA
source:
  local: {format: copa_xml, splits: {eval: copa/balacopa-dev-all.xml}}
splits: {eval: eval}
choices: "[choice1, choice2]"
target: label
prompts: [mine]
metrics: [accuracy]
"""


def user_folders(tmp_path: Path, files: dict[str, str]) -> tuple[Path, Path]:
    tasks, prompts = tmp_path / "my_tasks", tmp_path / "my_prompts"
    for rel, text in files.items():
        path = (prompts if rel.endswith(".jinja") else tasks) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tasks, prompts


def tasks_json(capsys, *args: str) -> list[dict]:
    code = cli.main(["tasks", "--json", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_user_task_dir_adds_a_task(tmp_path, capsys):
    tasks, prompts = user_folders(tmp_path, {
        "mine/my_entailment.yaml": NEW_TASK,
        "my_entailment/mine.jinja": "{{ sentence1 }}\nQuestion: {{ sentence2 }}?\nAnswer:",
    })
    builtin = tasks_json(capsys)
    rows = tasks_json(capsys, "--task-dir", str(tasks), "--prompt-dir", str(prompts))
    by_name = {r["name"]: r for r in rows}
    assert len(rows) == len(builtin) + 1
    assert by_name["my_entailment"]["category"] == "semantic_matching"
    assert by_name["my_entailment"]["prompts"] == ["mine"]
    assert by_name["my_entailment"]["metrics"] == ["accuracy", "mcc"]
    assert {r["name"] for r in builtin} < set(by_name)
    filtered = tasks_json(capsys, "--task-dir", str(tasks), "--prompt-dir", str(prompts),
                          "--category", "semantic_matching")
    assert "my_entailment" in {r["name"] for r in filtered}
    assert all(r["category"] == "semantic_matching" for r in filtered)


def test_user_task_overrides_a_built_in_one(tmp_path, capsys):
    tasks, prompts = user_folders(tmp_path, {
        "copa.yaml": OVERRIDE_COPA,
        "copa/mine.jinja": "{{ premise }} ({{ question }})",
    })
    rows = tasks_json(capsys, "--task-dir", str(tasks), "--prompt-dir", str(prompts))
    copas = [r for r in rows if r["name"] == "copa"]
    assert len(copas) == 1
    assert copas[0]["prompts"] == ["mine"] and copas[0]["category"] == "logical"
    assert copas[0]["metrics"] == ["accuracy"]
    assert len(rows) == len(tasks_json(capsys))  # replaced, not added
    task = load_tasks([tasks], [prompts])["copa"]
    assert task.path == tasks / "copa.yaml" and task.prompt("mine").path == prompts / "copa" / "mine.jinja"


def test_user_prompt_dir_overrides_a_built_in_variant(tmp_path):
    _, prompts = user_folders(tmp_path, {"copa/plain.jinja": "My own: {{ premise }}"})
    task = load_tasks([], [prompts])["copa"]
    assert task.prompt("plain").path == prompts / "copa" / "plain.jinja"
    assert task.prompt("lettered").path == ROOT / "prompts" / "copa" / "lettered.jinja"
    assert load_tasks()["copa"].prompt("plain").path == ROOT / "prompts" / "copa" / "plain.jinja"


def test_user_task_renders_with_real_data(tmp_path, data_dir):
    from evalsuite.data import load_split
    from evalsuite.prompting import PromptRenderer

    tasks, prompts = user_folders(tmp_path, {
        "my_entailment.yaml": NEW_TASK,
        "my_entailment/mine.jinja": "{{ sentence1 }}\nQuestion: {{ sentence2 }}?\nAnswer:",
    })
    task = load_tasks([tasks], [prompts])["my_entailment"]
    docs = load_split(task, task.eval_split, data_dir).docs
    inst = PromptRenderer(task, task.prompt("mine")).render(docs[0], 0)
    assert inst.continuations == (" yes", " no") and inst.gold in (0, 1)
    assert inst.context.endswith("?\nAnswer:")
