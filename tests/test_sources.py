"""Data sources: JSON Lines, JSON, CSV/TSV and Parquet files read by the datasets library's builders, a
source's ``fields`` map, splits carved from one file (first N, row ranges, fractions, a seeded order, an id
range), files that lead out of their folder, hub sources (revision, data files, gated datasets), and the
built-in tasks that moved from hand-written parsers to these readers (their documents are unchanged)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from evalsuite import cli
from evalsuite.api import evaluate, load_tasks
from evalsuite.data import hub_arguments, load_split
from evalsuite.data.formats import GENERIC_FORMATS, PARSERS
from evalsuite.errors import DataError, SpecError
from evalsuite.results import read_run
from evalsuite.spec import load_task

ROWS = [
    {"id": 101, "question": "Which is heavier?", "options": ["a feather", "a brick"], "answer": 1},
    {"id": 102, "question": "Which floats?", "options": ["wood", "iron"], "answer": 0},
    {"id": 103, "question": "Which is colder, NA?", "options": ["ice", "steam"], "answer": 0},
    {"id": 104, "question": "Which is a fruit?", "options": ["carrot", "apple"], "answer": 1},
    {"id": 105, "question": "Which flies?", "options": ["a penguin", "a sparrow"], "answer": 1},
    {"id": 106, "question": "Which is sweet?", "options": ["salt", "sugar"], "answer": 1},
]
TABLE = [{"id": r["id"], "question": r["question"], "first": r["options"][0], "second": r["options"][1],
          "answer": r["answer"]} for r in ROWS]

TASK = """\
name: {name}
category: commonsense
source:
  local:
{source}
splits: {{eval: {eval}{fewshot}}}
choices: "{choices}"
target: answer
prompts: [plain]
metrics: [accuracy]
"""


def write_files(folder: Path) -> dict[str, Path]:
    """The same questions as JSON Lines, a JSON list, a list under a key, CSV, TSV and Parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "jsonl": folder / "qa.jsonl",
        "json": folder / "qa.json",
        "json_key": folder / "qa_keyed.json",
        "csv": folder / "qa.csv",
        "tsv": folder / "qa.tsv",
        "parquet": folder / "qa.parquet",
    }
    files["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    files["json"].write_text(json.dumps(ROWS, indent=1), encoding="utf-8")
    files["json_key"].write_text(json.dumps({"version": 2, "questions": ROWS}), encoding="utf-8")
    for kind, delimiter in (("csv", ","), ("tsv", "\t")):
        with open(files[kind], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(TABLE[0]), delimiter=delimiter)
            writer.writeheader()
            writer.writerows(TABLE)
    pd.DataFrame(ROWS).to_parquet(files["parquet"])
    return files


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    """A user's task folder (tasks/) and its prompt folder; data files are written by each test."""
    folders = {"tasks": tmp_path / "tasks", "prompts": tmp_path / "prompts", "outside": tmp_path / "outside"}
    for folder in folders.values():
        folder.mkdir()
    return folders


def make_task(folders: dict[str, Path], source: str, name: str = "qa", eval: str = "test", fewshot: str = "",
              choices: str = "options") -> Path:
    (folders["prompts"] / name).mkdir(exist_ok=True)
    (folders["prompts"] / name / "plain.jinja").write_text("{{ question }}\nAnswer:", encoding="utf-8")
    path = folders["tasks"] / f"{name}.yaml"
    indented = "\n".join("    " + line for line in source.strip("\n").splitlines())
    path.write_text(TASK.format(name=name, source=indented, eval=eval, choices=choices,
                                fewshot=f", fewshot: {fewshot}" if fewshot else ""), encoding="utf-8")
    return path


BESIDE = " in the task file's folder"  # ends the origin of a split read beside its task file


def load(folders, source: str, split: str = "test", data_dir: Path | None = None, **task):
    task_spec = load_task(make_task(folders, source, **task), [folders["prompts"]])
    return load_split(task_spec, split, data_dir)


# --- every file format ---------------------------------------------------------------------------------


def test_every_generic_format_is_tested():
    assert set(GENERIC_FORMATS) <= set(PARSERS) and set(GENERIC_FORMATS) == {
        "jsonl", "json", "csv", "tsv", "parquet"}


@pytest.mark.parametrize("fmt, file, options", [
    ("jsonl", "qa.jsonl", ""), ("json", "qa.json", ""), ("json", "qa_keyed.json", ", field: questions"),
    ("parquet", "qa.parquet", ""),
])
def test_json_and_parquet_rows_are_documents_as_they_are(folders, fmt, file, options):
    write_files(folders["tasks"])
    split = load(folders, f"format: {fmt}\nsplits: {{test: {{file: {file}{options}}}}}")
    assert split.docs == ROWS  # values and types kept: lists stay lists, numbers numbers
    assert split.origin == f"local:{fmt}:{file} in the task file's folder"


@pytest.mark.parametrize("kind", ["csv", "tsv"])
def test_csv_and_tsv_rows_with_a_header_are_documents(folders, kind):
    write_files(folders["tasks"])
    split = load(folders, f"format: {kind}\nsplits: {{test: qa.{kind}}}", choices="[first, second]")
    assert split.docs == TABLE
    assert split.docs[2]["question"] == "Which is colder, NA?"  # text is never read as a missing value


def test_a_csv_file_without_header_takes_column_names_and_keeps_quotes_as_text(folders):
    (folders["tasks"] / "pairs.tsv").write_text(
        '\ufeff"a\tb"\t1\tsource note\n'        # a byte-order mark, quote marks that are text, an extra column
        'plain\t0\n'
        'NA\t\n', encoding="utf-8")           # "NA" is text; an empty cell is missing
    split = load(folders, "format: tsv\noptions: {quoting: none, column_names: [text, answer]}\n"
                          "splits: {test: pairs.tsv}", choices="[text]")
    assert split.docs == [{"text": '"a', "answer": 'b"'}, {"text": "plain", "answer": "0"},
                          {"text": "NA", "answer": None}]


def test_the_same_rows_from_every_format_give_the_same_content_hash(folders):
    write_files(folders["tasks"])
    fields = "fields: {id: id, question: question, options: options, answer: answer}"
    hashes = {load(folders, f"format: {fmt}\nsplits: {{test: qa.{fmt}}}\n{fields}").sha256
              for fmt in ("jsonl", "json", "parquet")}
    table_fields = "fields: {id: id, question: question, options: '[first, second]', answer: answer}"
    hashes |= {load(folders, f"format: {fmt}\nsplits: {{test: qa.{fmt}}}\n{table_fields}").sha256
               for fmt in ("csv", "tsv")}
    assert len(hashes) == 1


@pytest.mark.parametrize("fmt, name, content, message", [
    ("jsonl", "bad.jsonl", '{"question": "q", "answer": 1}\n{"question": "q2", "answer":\n',
     "bad.jsonl: cannot be read as JSON Lines"),
    ("jsonl", "list.jsonl", json.dumps(ROWS), "not JSON Lines (one object per line): for a JSON list use format json"),
    ("json", "object.json", json.dumps({"questions": ROWS}),
     "not a JSON list of objects: name the key of the list with the option 'field'"),
    ("csv", "ragged.csv", "question,answer\nq,1\nq2,0,extra,more\n", "ragged.csv: cannot be read as CSV"),
    ("parquet", "fake.parquet", "not parquet at all", "fake.parquet: cannot be read as Parquet"),
])
def test_a_malformed_file_is_one_data_error_naming_it(folders, fmt, name, content, message):
    (folders["tasks"] / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="^") as info:
        load(folders, f"format: {fmt}\nsplits: {{test: {name}}}")
    assert message in str(info.value) and "Traceback" not in str(info.value)


def test_a_missing_key_of_a_json_object_is_named(folders):
    write_files(folders["tasks"])
    with pytest.raises(DataError, match="qa_keyed.json: cannot be read as JSON .the list under 'items'.: KeyError"):
        load(folders, "format: json\nsplits: {test: {file: qa_keyed.json, field: items}}")


def test_a_file_name_with_glob_characters_is_that_file_only(folders):
    for name, row in (("q[1].jsonl", ROWS[0]), ("q1.jsonl", ROWS[1]), ("q*.jsonl", ROWS[2])):
        (folders["tasks"] / name).write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert load(folders, "format: jsonl\nsplits: {test: 'q[1].jsonl'}").docs == ROWS[:1]
    assert load(folders, "format: jsonl\nsplits: {test: 'q*.jsonl'}").docs == ROWS[2:3]


def test_reader_options_are_checked(folders):
    write_files(folders["tasks"])
    with pytest.raises(DataError, match="format 'jsonl' does not take option.*quoting.*it takes no options"):
        load(folders, "format: jsonl\noptions: {quoting: none}\nsplits: {test: qa.jsonl}")
    with pytest.raises(DataError, match="option quoting must be one of minimal, none; got 'all'"):
        load(folders, "format: csv\noptions: {quoting: all}\nsplits: {test: qa.csv}")


def test_reading_works_offline_and_writes_nothing_beside_the_data_or_in_the_hub_cache(folders, monkeypatch,
                                                                                      tmp_path):
    import datasets

    assert os.environ["HF_DATASETS_OFFLINE"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"
    hub_cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hub_cache)
    files = write_files(folders["tasks"])
    before = sorted(p.name for p in folders["tasks"].iterdir())  # the data files, and the task file written below
    for fmt in ("jsonl", "csv", "parquet"):
        assert len(load(folders, f"format: {fmt}\nsplits: {{test: {files[fmt].name}}}").docs) == len(ROWS)
    assert sorted(p.name for p in folders["tasks"].iterdir()) == sorted([*before, "qa.yaml"])
    assert not hub_cache.exists() or not any(hub_cache.rglob("*"))


def test_a_file_edited_in_place_is_read_afresh(folders):
    files = write_files(folders["tasks"])
    assert len(load(folders, "format: jsonl\nsplits: {test: qa.jsonl}").docs) == 6
    files["jsonl"].write_text(json.dumps(ROWS[0]) + "\n", encoding="utf-8")
    assert load(folders, "format: jsonl\nsplits: {test: qa.jsonl}").docs == ROWS[:1]


# --- the fields map ------------------------------------------------------------------------------------


def test_fields_make_documents_with_exactly_those_fields(folders):
    (folders["tasks"] / "pairs.tsv").write_text("Quality\t#1 String\t#2 String\n1\tA cat.\tA feline.\n0\tUp.\tDown.\n",
                                                encoding="utf-8")
    split = load(folders, "format: tsv\nsplits: {test: pairs.tsv}\n"
                          "fields: {idx: row_index, sentence1: \"row['#1 String']\", sentence2: \"row['#2 String']\","
                          " answer: Quality, both: \"[row['#1 String'], row['#2 String']] | join(' / ')\"}",
                 choices="[sentence1, sentence2]")
    assert split.docs == [
        {"idx": 0, "sentence1": "A cat.", "sentence2": "A feline.", "answer": 1, "both": "A cat. / A feline."},
        {"idx": 1, "sentence1": "Up.", "sentence2": "Down.", "answer": 0, "both": "Up. / Down."}]


def test_a_field_that_fails_on_one_row_is_named_with_the_row(folders):
    # the datasets library gives every row every column: a key missing from one line arrives as null
    rows = [{"question": "q", "options": ["a", "b"], "answer": 0}] * 4
    rows = rows[:2] + [{"question": "q", "answer": 1}] + rows[2:]
    (folders["tasks"] / "gap.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = make_task(folders, "format: jsonl\nsplits: {test: gap.jsonl}\n"
                              "fields: {q: question, second: 'options[1]', answer: answer}")
    with pytest.raises(DataError) as info:
        load_split(load_task(path, [folders["prompts"]]), "test")
    assert str(info.value).startswith(f"{path}: field 'source.local.fields.second' on row 2 of local:jsonl:gap.jsonl: ")
    path = make_task(folders, "format: jsonl\nsplits: {test: gap.jsonl}\nfields: {q: question, opts: choices}")
    with pytest.raises(DataError, match=r"field 'source.local.fields.opts' on row 0 of .*'choices' is undefined"):
        load_split(load_task(path, [folders["prompts"]]), "test")


def test_a_null_joined_by_a_fields_map_is_named_with_the_row(folders):
    rows = [{"text": "t", "question": "q", "answer": 0}] * 4
    rows = rows[:2] + [{"text": "t", "answer": 1}] + rows[2:]  # read as question: null
    (folders["tasks"] / "gap.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = make_task(folders, "format: jsonl\nsplits: {test: gap.jsonl}\n"
                              "fields: {q: \"text ~ ' ' ~ question\", answer: answer}")
    with pytest.raises(DataError) as info:
        load_split(load_task(path, [folders["prompts"]]), "test")
    assert str(info.value).startswith(f"{path}: field 'source.local.fields.q' on row 2 of local:jsonl:gap.jsonl: "
                                      "'~' joined a null value, which would read 'None' in the text")


def test_a_fields_map_with_a_bad_expression_is_refused_when_the_task_loads(folders):
    path = make_task(folders, "format: jsonl\nsplits: {test: qa.jsonl}\nfields: {q: 'question |'}")
    with pytest.raises(SpecError, match=r"field 'source.local.fields.q': invalid Jinja expression"):
        load_task(path, [folders["prompts"]])


# --- splits carved from one file -----------------------------------------------------------------------

CARVE = "format: jsonl\nsplits:\n  {a}\n  {b}"


def carved(folders, a: str, b: str, **task) -> tuple:
    write_files(folders["tasks"])
    path = make_task(folders, CARVE.format(a=a, b=b), fewshot="fewshot", **task)
    spec = load_task(path, [folders["prompts"]])
    return load_split(spec, "fewshot"), load_split(spec, "test")


def test_first_n_and_a_row_range_to_the_end(folders):
    fewshot, test = carved(folders, "fewshot: {file: qa.jsonl, first: 2}", "test: {file: qa.jsonl, rows: [2, null]}")
    assert fewshot.docs == ROWS[:2] and test.docs == ROWS[2:]
    assert fewshot.origin == f"local:jsonl:qa.jsonl rows 0:2{BESIDE}"
    assert test.origin == f"local:jsonl:qa.jsonl rows 2:{BESIDE}"


def test_a_closed_row_range(folders):
    fewshot, test = carved(folders, "fewshot: {file: qa.jsonl, rows: [1, 3]}", "test: {file: qa.jsonl, rows: [3, 6]}")
    assert fewshot.docs == ROWS[1:3] and test.docs == ROWS[3:6]


def test_fractions_are_read_as_the_decimals_written(folders):
    fewshot, test = carved(folders, "fewshot: {file: qa.jsonl, fraction: [0, 0.34]}",
                           "test: {file: qa.jsonl, fraction: [0.34, 1]}")
    # floor(0.34 * 6) = 2 rows, the rest evaluated
    assert fewshot.docs == ROWS[:2] and test.docs == ROWS[2:]
    assert test.origin == f"local:jsonl:qa.jsonl fraction 0.34:1{BESIDE}"


def _sha_order(seed: int, n: int) -> list[int]:
    """The documented seeded order, computed here independently: rows by SHA-256 of "<seed>:<row>"."""
    keys = {i: hashlib.sha256(("%d:%d" % (seed, i)).encode("ascii")).hexdigest() for i in range(n)}
    return sorted(keys, key=keys.get)


@pytest.mark.parametrize("seed", [7, 1234])
def test_a_seeded_split_is_disjoint_complete_and_follows_the_documented_order(folders, seed):
    fewshot, test = carved(folders, f"fewshot: {{file: qa.jsonl, seed: {seed}, first: 2}}",
                           f"test: {{file: qa.jsonl, seed: {seed}, rows: [2, null]}}")
    order = _sha_order(seed, len(ROWS))
    assert fewshot.docs == [ROWS[i] for i in sorted(order[:2])]  # kept in file order
    assert test.docs == [ROWS[i] for i in sorted(order[2:])]
    assert sorted(d["id"] for d in fewshot.docs + test.docs) == [r["id"] for r in ROWS]
    assert fewshot.origin == f"local:jsonl:qa.jsonl rows 0:2 seed {seed}{BESIDE}"


def test_different_seeds_give_different_splits(folders):
    picks = set()
    for seed in range(6):
        fewshot, _ = carved(folders, f"fewshot: {{file: qa.jsonl, seed: {seed}, fraction: [0, 0.5]}}",
                            f"test: {{file: qa.jsonl, seed: {seed}, fraction: [0.5, 1]}}")
        picks.add(tuple(d["id"] for d in fewshot.docs))
    assert len(picks) > 1


def test_an_id_range_keeps_the_documents_it_names(folders):
    fewshot, test = carved(folders, "fewshot: {file: qa.jsonl, where: 'id <= 102'}",
                           "test: {file: qa.jsonl, where: '103 <= id <= 105'}")
    assert [d["id"] for d in fewshot.docs] == [101, 102] and [d["id"] for d in test.docs] == [103, 104, 105]
    assert test.origin == f"local:jsonl:qa.jsonl where '103 <= id <= 105'{BESIDE}"


def test_rows_beyond_the_file_are_refused(folders):
    with pytest.raises(DataError, match="rows 0:10 asks for rows that local:jsonl:qa.jsonl does not have .it has 6"):
        carved(folders, "fewshot: {file: qa.jsonl, first: 10}", "test: {file: qa.jsonl, rows: [10, null]}")


@pytest.mark.parametrize("a, b, message", [
    ("fewshot: {file: qa.jsonl, first: 3}", "test: {file: qa.jsonl, rows: [2, null]}", "shares rows with split 'fewshot'"),
    ("fewshot: {file: qa.jsonl, fraction: [0, 0.5]}", "test: {file: qa.jsonl, fraction: [0.4, 1]}", "shares rows"),
    ("fewshot: {file: qa.jsonl, first: 0}", "test: qa.jsonl", "'source.local.splits.fewshot.first': must be at least 1"),
    ("fewshot: {file: qa.jsonl, rows: [4, 2]}", "test: qa.jsonl", "must be .start, stop., 0 <= start < stop"),
    ("fewshot: {file: qa.jsonl, fraction: [0.5, 1.5]}", "test: qa.jsonl", "must be .a, b. with 0 <= a < b <= 1"),
    ("fewshot: {file: qa.jsonl, first: 2, rows: [0, 2]}", "test: qa.jsonl", "cannot be combined with 'first'"),
    ("fewshot: {file: qa.jsonl, seed: 3}", "test: qa.jsonl", "seed': orders the rows for 'first', 'rows' or 'fraction'"),
    ("fewshot: {file: qa.jsonl, seed: 3, where: 'id > 1'}", "test: qa.jsonl", "seed': has no effect with 'where'"),
])
def test_a_bad_selection_is_refused_when_the_task_loads(folders, a, b, message):
    with pytest.raises(SpecError, match=message):
        carved(folders, a, b)


def test_disjoint_parts_with_different_seeds_are_not_compared(folders):
    # different orders: the task file says what it means; only same-order overlaps can be seen statically
    fewshot, test = carved(folders, "fewshot: {file: qa.jsonl, seed: 1, first: 3}",
                           "test: {file: qa.jsonl, seed: 2, rows: [0, 3]}")
    assert len(fewshot.docs) == len(test.docs) == 3


def test_the_carved_split_and_its_hash_are_recorded_in_the_results(folders, tmp_path, byte_tok):
    from test_pipeline import ScriptedEngine

    fewshot, test = carved(folders, "fewshot: {file: qa.jsonl, seed: 5, first: 2}",
                           "test: {file: qa.jsonl, seed: 5, rows: [2, null]}")
    engine = ScriptedEngine(byte_tok, [d["answer"] for d in test.docs])
    run = evaluate("scripted", "qa", engine=engine, shots=2, mode="few-shot", task_dirs=[folders["tasks"]],
                   prompt_dirs=[folders["prompts"]], output=tmp_path / "runs", progress=False)
    record = read_run(run.path)["evaluations"][0]
    assert record["origin"] == f"local:jsonl:qa.jsonl rows 2: seed 5{BESIDE}" == test.origin
    assert record["hashes"]["data"] == test.sha256 and record["n"] == 4


@pytest.fixture(scope="module")
def byte_tok():
    from tiny_models import byte_tokenizer

    return byte_tokenizer()


# --- files outside their folders -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../outside/qa.jsonl", "{outside}/qa.jsonl", "sub/../../outside/qa.jsonl"])
def test_a_name_that_leaves_the_folders_is_refused(folders, name):
    write_files(folders["outside"])
    path = make_task(folders, f"format: jsonl\nsplits: {{test: '{name.format(outside=folders['outside'])}'}}")
    with pytest.raises(SpecError) as info:
        load_task(path, [folders["prompts"]])
    assert str(info.value).startswith(f"{path}: field 'source.local.splits.test'")
    assert "inside the data directory (or the task file's folder)" in str(info.value)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_a_link_out_of_the_task_folder_is_refused(folders, fmt):
    files = write_files(folders["outside"])
    (folders["tasks"] / f"link.{fmt}").symlink_to(files[fmt])
    (folders["tasks"] / "sub").mkdir()
    (folders["tasks"] / "sub" / "out").symlink_to(folders["outside"], target_is_directory=True)
    for name in (f"link.{fmt}", f"sub/out/qa.{fmt}"):
        path = make_task(folders, f"format: {fmt}\nsplits: {{test: {name}}}")
        with pytest.raises(DataError) as info:
            load_split(load_task(path, [folders["prompts"]]), "test")
        assert str(info.value).startswith(f"{path}: field 'source.local.splits.test'")
        assert f"leads outside the task file's folder {folders['tasks']}" in str(info.value)
        assert "Which is heavier" not in str(info.value)


def test_a_link_out_of_the_data_directory_is_refused(folders, tmp_path):
    files = write_files(folders["outside"])
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa.jsonl").symlink_to(files["jsonl"])
    with pytest.raises(DataError, match=f"leads outside the data directory {data}"):
        load(folders, "format: jsonl\nsplits: {test: qa.jsonl}", data_dir=data)


def test_files_are_looked_for_in_the_data_directory_then_beside_the_task(folders, tmp_path):
    write_files(folders["tasks"])
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa.jsonl").write_text(json.dumps(ROWS[5]) + "\n", encoding="utf-8")
    from_data = load(folders, "format: jsonl\nsplits: {test: qa.jsonl}", data_dir=data)
    assert from_data.docs == ROWS[5:] and from_data.origin == "local:jsonl:qa.jsonl"
    beside = load(folders, "format: json\nsplits: {test: qa.json}", data_dir=data)  # not in data/
    assert beside.docs == ROWS and beside.origin == f"local:json:qa.json{BESIDE}"
    with pytest.raises(DataError, match=r"data file 'absent.jsonl' not found in the data directory .* or the task "
                                        r"file's folder .*set --data-dir or EVALSUITE_DATA_DIR"):
        load(folders, "format: jsonl\nsplits: {test: absent.jsonl}", data_dir=data)


def test_a_built_in_task_never_reads_files_beside_its_task_file(monkeypatch):
    task = load_tasks()["logicnli"]
    monkeypatch.delenv("EVALSUITE_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="only has local files: pass --data-dir or set EVALSUITE_DATA_DIR"):
        load_split(task, "test")


# --- hub sources ---------------------------------------------------------------------------------------


def test_every_built_in_hub_source_is_pinned_and_names_its_files_where_the_repository_has_a_script():
    catalog = load_tasks()
    hub_tasks = {name: task for name, task in catalog.items() if task.hub}
    assert len(hub_tasks) >= 30
    for name, task in hub_tasks.items():
        assert task.hub.revision, name
        for split in task.hub.splits:
            arguments = hub_arguments(task, split)
            assert arguments["revision"] == task.hub.revision
            if task.hub.revision == "refs/convert/parquet" or task.hub.data_files:
                assert arguments["name"] is None and list(arguments["data_files"]) == [arguments["split"]]
                assert all(f.endswith(".parquet") for f in arguments["data_files"][arguments["split"]])
    # repositories whose main branch is a loading script are read from their parquet conversion
    for name in ("piqa", "logiqa", "social_iqa", "sick_entailment", "bbh_web_of_lies"):
        assert hub_tasks[name].hub.data_files, name
    assert hub_arguments(catalog["piqa"], "validation") == {
        "path": "ybisk/piqa", "name": None, "split": "validation", "revision": "refs/convert/parquet",
        "data_files": {"validation": ["*/validation/*.parquet"]}}
    assert hub_arguments(catalog["mnli"], "validation")["data_files"] == {
        "validation_matched": ["mnli/validation_matched/*.parquet"]}
    assert [n for n, t in hub_tasks.items() if t.hub.gated] == ["folio"]


def test_a_gated_dataset_says_so_in_the_task_list(capsys):
    assert cli.main(["tasks", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["folio"]["gated"] is True and rows["folio"]["source"].startswith("hub:yale-nlp/FOLIO (gated)")
    assert rows["copa"]["gated"] is False
    assert cli.main(["tasks"]) == 0
    folio_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("folio "))
    assert "hub:yale-nlp/FOLIO (gated)" in folio_line


def test_a_gated_dataset_that_cannot_load_says_how_to_get_access(monkeypatch):
    """The real datasets library, offline: the failure message carries the way to the dataset's terms."""
    monkeypatch.delenv("EVALSUITE_DATA_DIR", raising=False)
    with pytest.raises(DataError) as info:
        load_split(load_tasks()["folio"], "validation")
    message = str(info.value)
    assert message.startswith("task 'folio': cannot load hub dataset yale-nlp/FOLIO@main split validation: ")
    assert "gated: accept its terms at https://huggingface.co/datasets/yale-nlp/FOLIO" in message
    assert "huggingface-cli login" in message and "HF_TOKEN" in message


def test_a_hub_source_reads_its_files_at_its_revision_and_lays_them_out(folders, monkeypatch):
    """What reaches datasets.load_dataset, and what the rows become (a mirror with other column names)."""
    import datasets

    asked = []

    def load_dataset(**arguments):
        asked.append(arguments)
        return [{"prompt": f"q{i}", "opts": ["x", "y"], "gold": "BA"[i % 2]} for i in range(5)]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    path = folders["tasks"] / "mirror.yaml"
    (folders["prompts"] / "mirror").mkdir()
    (folders["prompts"] / "mirror" / "plain.jinja").write_text("{{ question }}", encoding="utf-8")
    path.write_text("""\
name: mirror
category: commonsense
source:
  hub:
    path: someone/mirror
    revision: 0123456789abcdef0123456789abcdef01234567
    data_files: {train: [data/train-*.parquet]}
    splits: {fewshot: {split: train, first: 2}, test: {split: train, rows: [2, null]}}
    fields: {question: prompt, options: opts, answer: "'AB'.index(gold)"}
splits: {eval: test, fewshot: fewshot}
choices: options
target: answer
prompts: [plain]
metrics: [accuracy]
""", encoding="utf-8")
    split = load_split(load_task(path, [folders["prompts"]]), "test")
    assert asked == [{"path": "someone/mirror", "name": None, "split": "train",
                      "revision": "0123456789abcdef0123456789abcdef01234567",
                      "data_files": {"train": ["data/train-*.parquet"]}}]
    assert split.docs == [{"question": f"q{i}", "options": ["x", "y"], "answer": 1 - i % 2} for i in range(2, 5)]
    assert split.origin == ("hub:someone/mirror@0123456789abcdef0123456789abcdef01234567 split train "
                            "(data/train-*.parquet) rows 2:")


@pytest.mark.parametrize("hub, message", [
    ("{path: a/b, name: c, data_files: {train: x.parquet}, splits: {test: train}}", "cannot be combined with 'name'"),
    ("{path: a/b, data_files: {train: x.parquet}, splits: {test: validation}}", "hub split 'validation' has no files"),
    ("{path: a/b, splits: {test: {split: train}}}", "with no first, rows, fraction or where, write the hub split name"),
    ("{path: a/b, gated: yes-please, splits: {test: train}}", "'source.hub.gated': expected true/false"),
])
def test_a_bad_hub_source_is_refused_when_the_task_loads(folders, hub, message):
    path = folders["tasks"] / "h.yaml"
    path.write_text(f"name: h\ncategory: logical\nsource: {{hub: {hub}}}\nsplits: {{eval: test}}\ntarget: x\n"
                    "prompts: [plain]\nmetrics: [accuracy]\n", encoding="utf-8")
    (folders["prompts"] / "h").mkdir()
    (folders["prompts"] / "h" / "plain.jinja").write_text("x", encoding="utf-8")
    with pytest.raises(SpecError, match=message):
        load_task(path, [folders["prompts"]])


# --- built-in tasks read with the generic readers: documents unchanged -----------------------------------
#
# These tasks' raw files were read by hand-written parsers; they are now read by the datasets library's
# builders and laid out by each task's fields map. Every document of every split is compared with the
# document computed here from the raw file by independent means (the standard library's json and csv), in
# the layout the parsers produced, so the migration cannot have changed a document or its hash.


def _bbh(path: Path) -> list[dict]:
    return [{"input": e["input"], "target": e["target"]} for e in json.loads(path.read_text("utf-8"))["examples"]]


def _commonsenseqa(path: Path) -> list[dict]:
    docs = []
    for line in path.read_text("utf-8").splitlines():
        item = json.loads(line)
        choices = item["question"]["choices"]
        docs.append({"id": item["id"], "question": item["question"]["stem"],
                     "question_concept": item["question"]["question_concept"],
                     "choices": {"label": [c["label"] for c in choices], "text": [c["text"] for c in choices]},
                     "answerKey": item["answerKey"]})
    return docs


def _tab_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return [row for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if row]


def _mrpc(path: Path) -> list[dict]:
    return [{"idx": i, "sentence1": r[3], "sentence2": r[4], "label": int(r[0])}
            for i, r in enumerate(_tab_rows(path)[1:])]


def _sick(path: Path) -> list[dict]:
    names = ["ENTAILMENT", "NEUTRAL", "CONTRADICTION"]
    return [{"pair_ID": int(r[0]), "sentence_A": r[1], "sentence_B": r[2], "relatedness_score": float(r[3]),
             "label": names.index(r[4])} for r in _tab_rows(path)[1:]]


def _stsb(path: Path) -> list[dict]:
    return [{"idx": i, "sentence1": r[5], "sentence2": r[6], "label": float(r[4]), "genre": r[0]}
            for i, r in enumerate(_tab_rows(path))]


MIGRATED = {"commonsenseqa": _commonsenseqa, "mrpc": _mrpc, "sick_entailment": _sick, "sick_relatedness": _sick,
            "stsb": _stsb, **{name: _bbh for name in load_tasks() if name.startswith("bbh_")}}


@pytest.mark.parametrize("name", sorted(MIGRATED))
def test_a_migrated_built_in_task_has_the_documents_its_raw_files_hold(name, data_dir):
    task = load_tasks()[name]
    assert task.local.format in GENERIC_FORMATS
    for split, spec in task.local.splits.items():
        loaded = load_split(task, split, data_dir)
        expected = MIGRATED[name](data_dir / spec.file)
        assert len(loaded.docs) == len(expected) > 0
        for number, (doc, reference) in enumerate(zip(loaded.docs, expected)):
            assert json.dumps(doc, sort_keys=True) == json.dumps(reference, sort_keys=True), (split, number)


def test_facts_of_the_migrated_data(data_dir):
    """Published properties of these datasets, seen through the tasks."""
    tasks = load_tasks()

    def docs(name, split):
        return load_split(tasks[name], split, data_dir).docs

    mrpc_test, mrpc_val, mrpc_train = docs("mrpc", "test"), docs("mrpc", "validation"), docs("mrpc", "train")
    assert Counter(d["label"] for d in mrpc_test) == {1: 1147, 0: 578}  # the standard MRPC test split
    assert Counter(d["label"] for d in mrpc_train + mrpc_val) == {1: 2753, 0: 1323}  # the 4076-pair train split
    assert mrpc_train[0]["sentence1"].startswith('Amrozi accused his brother, whom he called "the witness"')
    assert [d["idx"] for d in mrpc_val] == list(range(500))
    sick = docs("sick_entailment", "test")
    assert Counter(d["label"] for d in sick) == {0: 1414, 1: 2793, 2: 720}
    dev = docs("stsb", "validation")
    assert dev[0] == {"idx": 0, "sentence1": "A man with a hard hat is dancing.",
                      "sentence2": "A man wearing a hard hat is dancing.", "label": 5.0, "genre": "main-captions"}
    assert all(0.0 <= d["label"] <= 5.0 for d in dev) and dev[1]["label"] == 4.75
    assert not any("Europe Media Monitor" in d["sentence2"] for d in dev)  # extra source columns left out
    csqa = docs("commonsenseqa", "validation")
    assert csqa[0]["choices"] == {"label": ["A", "B", "C", "D", "E"],
                                  "text": ["bank", "library", "department store", "mall", "new york"]}
    assert all(d["answerKey"] in d["choices"]["label"] for d in csqa)
    assert sum(len(docs(n, "test")) for n in tasks if n.startswith("bbh_")) == 13 * 250 - 63  # causal_judgement: 187
