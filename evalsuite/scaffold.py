"""``evalsuite new-task``: a task file and its three prompt variants for a data file of the user's.

The file's columns are read from its rows (JSON Lines, JSON, CSV, TSV or Parquet, through pandas), the field
mapping is guessed (the text, a context or a sentence pair; the options as a list or as columns; the answer as
an index, a letter, the option's text, or a label), and written as a starting point, the guesses commented:

    DIR/tasks/NAME.yaml                 the task; its data file is copied beside it, into DIR/tasks/data/
    DIR/prompts/NAME/plain.jinja        each option (or label) scored as a continuation
    DIR/prompts/NAME/lettered.jinja     lettered options; the letter is scored
    DIR/prompts/NAME/cot.jinja          chain of thought; the last "answer is ..." is read

Then ``evalsuite check NAME --task-dir DIR/tasks --prompt-dir DIR/prompts`` shows what still needs editing.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalsuite.errors import DataError, SpecError
from evalsuite.spec.task import _NAME

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
           ".parquet": "parquet", ".pq": "parquet"}
LETTERS = "ABCDEFGHIJ"
SAMPLE_ROWS = 200  # rows the guesses look at
FEWSHOT_ROWS = 10  # rows kept for few-shot examples when the file has enough to spare them
MAX_LABELS = 10  # answers taking at most this many values (and no options) are labels of a classification

# Column names, most likely first.
TEXTS = ("question", "query", "problem", "prompt", "input", "goal", "stem", "sentence", "text", "premise",
         "context", "passage")
CONTEXTS = ("context", "passage", "text", "premise", "story", "article")
PAIRS = (("premise", "hypothesis"), ("sentence1", "sentence2"), ("text", "hypothesis"), ("question1", "question2"),
         ("sentence_a", "sentence_b"), ("text_a", "text_b"), ("sentence_1", "sentence_2"))
OPTION_LISTS = ("options", "choices", "endings", "candidates", "answers", "alternatives")
OPTION_COLUMNS = (tuple("ABCDEFGHIJ"), tuple("abcdefghij"), ("option_a", "option_b", "option_c", "option_d", "option_e"),
                  ("optionA", "optionB", "optionC", "optionD", "optionE"), ("choice1", "choice2", "choice3", "choice4"),
                  ("option1", "option2", "option3", "option4"), ("sol1", "sol2", "sol3", "sol4"),
                  ("ending0", "ending1", "ending2", "ending3"), ("opa", "opb", "opc", "opd"))
ANSWERS = ("answer", "label", "target", "gold", "answerKey", "answer_key", "correct", "correct_answer", "output", "y")


@dataclass(frozen=True)
class Mapping:
    """The guessed layout: the prompt's text fields, the options (a Jinja expression giving a list) or the labels,
    and the target (a Jinja expression giving the answer's index)."""

    texts: tuple[tuple[str, str], ...]  # (caption, column), shown in this order
    choices: str | None
    labels: tuple[str, ...] | None
    target: str  # the correct option's index, or the correct label (its index or its text)
    notes: tuple[str, ...]  # how each guess was made, for the comments and the command's output
    pair: tuple[str, str] | None = None


def new_task(name: str, data: Path, output: Path, *, force: bool = False) -> tuple[list[Path], dict[str, str]]:
    """Write the task file, its prompt variants and the data file's copy under ``output``; return the paths
    written and the guessed mapping (field -> how it was guessed)."""
    if not _NAME.match(name):
        raise SpecError(f"task name {name!r} must be lower-case letters, digits, '_', '-' or '.' (at most 100)")
    fmt, options, rows = read_rows(Path(data))
    mapping = guess_mapping(Path(data), rows[:SAMPLE_ROWS])
    tasks, prompts = output / "tasks", output / "prompts" / name
    copy = tasks / "data" / Path(data).name
    same_file = copy.exists() and copy.resolve() == Path(data).resolve()
    files = {tasks / f"{name}.yaml": task_yaml(name, fmt, options, copy.relative_to(tasks).as_posix(), len(rows),
                                               mapping, Path(data)),
             **{prompts / f"{variant}.jinja": text for variant, text in prompt_files(mapping).items()}}
    existing = [p for p in [*files, *([] if same_file else [copy])] if p.exists()]
    if existing and not force:
        raise SpecError(f"{existing[0]} exists (and {len(existing) - 1} more of the files new-task writes): "
                        "pass --force to replace them, or choose another --output or name")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if not same_file:
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data, copy)
    written = [*files, copy]
    return written, {"format": fmt, **dict(n.split(": ", 1) for n in mapping.notes)}


def read_rows(path: Path) -> tuple[str, dict[str, Any], list[dict]]:
    """The file's format, the reader's options it needs, and its rows."""
    import pandas as pd

    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown kind of data file {path.suffix!r}; new-task reads "
                        + ", ".join(sorted(FORMATS)))
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    options: dict[str, Any] = {}
    try:
        if fmt == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        elif fmt == "json":
            data = json.loads(path.read_text(encoding="utf-8-sig"))
            if isinstance(data, dict):  # the rows under a key of an object
                key = next((k for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)), None)
                if key is None:
                    raise ValueError("a JSON object with no list of objects under any key")
                options["field"], data = key, data[key]
            frame = pd.DataFrame(data)
        elif fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="," if fmt == "csv" else "\t")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it as {fmt}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if frame.empty:
        raise DataError(f"{path}: no rows")
    rows = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    return fmt, options, rows


def _plain(value: Any) -> Any:
    """A pandas cell as a Python value (numpy numbers and arrays too)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def guess_mapping(path: Path, rows: list[dict]) -> Mapping:
    columns = [c for c in rows[0] if isinstance(c, str)]
    usable = [c for c in columns if c.isidentifier()]  # a template names a column by its name
    notes = []
    if len(usable) < len(columns):
        notes.append("skipped: columns that are not names (" + ", ".join(c for c in columns if c not in usable) + ")")

    def first(names: tuple[str, ...], taken: tuple[str, ...] = ()) -> str | None:
        lower = {c.lower(): c for c in usable if c not in taken}
        return next((lower[n.lower()] for n in names if n.lower() in lower), None)

    answer = first(ANSWERS)
    if answer is None:
        raise DataError(f"{path}: no answer column found among {usable} (looked for {', '.join(ANSWERS)}): "
                        "rename the column that holds the answer to 'answer'")
    notes.append(f"answer: column '{answer}'")
    options = _options(usable, rows, answer)
    values = [row[answer] for row in rows]
    pair = next((p for p in PAIRS if first(p[:1]) and first(p[1:])), None)
    if pair is not None:
        pair = (first(pair[:1]), first(pair[1:]))
        captions = ("Text", "Hypothesis") if pair[1].lower() == "hypothesis" else ("Sentence 1", "Sentence 2")
        texts = tuple(zip(captions, pair))
        notes.append(f"text pair: columns '{pair[0]}' and '{pair[1]}'")
    else:
        taken = (answer, *(options[1] if options else ()))
        text = first(TEXTS, taken)
        if text is None:
            raise DataError(f"{path}: no text column found among {usable} (looked for {', '.join(TEXTS)})")
        context = first(tuple(c for c in CONTEXTS if c.lower() != text.lower()), (*taken, text))
        texts = ((("Context", context),) if context else ()) + (("Question", text),)
        notes.append(f"text: column '{text}'" + (f", after the context column '{context}'" if context else ""))
    if options is not None:
        choices, option_columns = options
        notes.append(f"options: {choices}")
        target, how = _index_target(values, choices, option_columns, rows, answer)
        notes.append(f"target: {how}")
        return Mapping(texts, choices, None, target, tuple(notes), pair)
    distinct = list(dict.fromkeys(values))
    if len(distinct) > MAX_LABELS:
        raise DataError(f"{path}: column '{answer}' takes {len(distinct)} values and no options were found (looked "
                        f"for list columns {', '.join(OPTION_LISTS)} or option columns such as A, B, C, D): new-task "
                        "writes multiple-choice and classification tasks")
    if all(isinstance(v, bool) for v in distinct):
        labels, target, how = ("no", "yes"), f"{answer} | int", "true/false as no/yes"
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in distinct) and min(distinct) >= 0:
        labels = tuple(str(v) for v in range(max(distinct) + 1))
        target, how = answer, f"label index 0-{max(distinct)} (name the labels)"
    else:
        labels = tuple(sorted(str(v) for v in distinct))
        target, how = answer, "label text"
    notes.append(f"labels: {', '.join(labels)}")
    notes.append(f"target: {how}")
    return Mapping(texts, None, labels, target, tuple(notes), pair)


def _options(usable: list[str], rows: list[dict], answer: str) -> tuple[str, tuple[str, ...]] | None:
    """The options: a column holding lists, or one column per option; as a Jinja expression and its columns."""
    lower = {c.lower(): c for c in usable}
    for name in OPTION_LISTS:
        column = lower.get(name)
        if column and column != answer and all(isinstance(row[column], list) for row in rows):
            return column, (column,)
    for group in OPTION_COLUMNS:
        present = [lower[n.lower()] for n in group if n.lower() in lower]
        if len(present) >= 2 and present == [lower[n.lower()] for n in group[:len(present)]]:
            return "[" + ", ".join(present) + "]", tuple(present)
    return None


def _index_target(values: list, choices: str, columns: tuple[str, ...], rows: list[dict], answer: str) -> tuple[str, str]:
    """The target as an index into the options: the answer as a 0- or 1-based index, a letter, or the text."""
    n = max(len(row[columns[0]]) for row in rows) if len(columns) == 1 else len(columns)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if min(values) >= 1 and max(values) == n and 0 not in values:
            return f"{answer} - 1", "index 1-based"
        return answer, "index 0-based"
    if all(isinstance(v, str) and len(v.strip()) == 1 and v.strip().upper() in LETTERS[:n] for v in values):
        return f"'{LETTERS}'.index({answer} | trim | upper)", "letter"
    return f"{choices}.index({answer})", "the option's text"


def source_block(fmt: str, options: dict[str, Any], file: str, n_rows: int) -> str:
    """The task file's ``source`` and ``splits``: one file of the task's folder, a few rows carved off for few-shot
    examples when it has rows to spare (else the examples come from the evaluated split itself)."""
    reader = f"\n    options: {{field: {_quoted(options['field'])}}}" if options else ""
    if n_rows > 2 * FEWSHOT_ROWS:
        return (f"source:\n  local:\n    format: {fmt}{reader}\n"
                f"    # The first {FEWSHOT_ROWS} rows are few-shot examples; the other {n_rows - FEWSHOT_ROWS} are "
                "evaluated.\n"
                f"    splits:\n      fewshot: {{file: {file}, first: {FEWSHOT_ROWS}}}\n"
                f"      test: {{file: {file}, rows: [{FEWSHOT_ROWS}, null]}}\n"
                "splits: {eval: test, fewshot: fewshot}\n")
    return (f"source:\n  local:\n    format: {fmt}{reader}\n    splits: {{test: {file}}}\n"
            f"# Only {n_rows} rows: few-shot examples come from the evaluated split, never the evaluated row itself.\n"
            "splits: {eval: test, fewshot: test}\n")


def task_yaml(name: str, fmt: str, options: dict[str, Any], file: str, n_rows: int, mapping: Mapping,
              data: Path) -> str:
    guessed = "".join(f"#   {note}\n" for note in mapping.notes)
    lines = [
        f"# Written by 'evalsuite new-task' from {data.name} ({n_rows} rows). Guessed mapping, check it:\n{guessed}",
        f"name: {name}",
        # A text pair is most often a matching task (paraphrase, entailment); the rest default to commonsense.
        "category: semantic_matching  # or logical, commonsense" if mapping.pair is not None
        else "category: commonsense  # or logical, semantic_matching",
        f"description: {_quoted(f'{name} - questions from {data.name}.')}",
        "license: unknown",
        source_block(fmt, options, file, n_rows).rstrip("\n"),
    ]
    if mapping.choices is not None:
        lines.append(f"choices: {_quoted(mapping.choices)}")
        metrics = "[accuracy, accuracy_norm, f1_macro, mcc]"
    else:
        lines.append(f"labels: {json.dumps(list(mapping.labels))}")
        lines.append(f"choices: {_quoted(json.dumps(list(mapping.labels)))}  # the words scored for the labels")
        metrics = "[accuracy, f1_macro, mcc]"
    lines.append(f"target: {_quoted(mapping.target)}  # the correct "
                 + ("option's index" if mapping.choices is not None else "label (its index or its text)"))
    if mapping.pair is not None and mapping.labels is not None:
        lines.append(f"inputs: [{mapping.pair[0]}, {mapping.pair[1]}]  # the text pair an encoder classifies")
    lines += ["prompts: [plain, lettered, cot]", f"metrics: {metrics}"]
    if mapping.labels is not None:
        lines.append("fewshot: {sampler: balanced}")
    return "\n".join(lines) + "\n"


def prompt_files(mapping: Mapping) -> dict[str, str]:
    """The three standard variants, in the style of the built-in prompts."""
    body = "\n".join(f"{caption}: {{{{ {column} }}}}" for caption, column in mapping.texts)
    if mapping.choices is not None:
        options = (f"{{% for option in {mapping.choices} -%}}\n{{{{ '{LETTERS}'[loop.index0] }}}}. {{{{ option }}}}\n"
                   "{% endfor -%}\n")
        letters = f"'{LETTERS}'[:{mapping.choices} | length] | list"
        answer_of = f"'{LETTERS}'[{mapping.target}]"
        pattern = f"(?i:answer is)[:\\s]*\\(?([{LETTERS[0]}-{LETTERS[-1]}])\\b"
        plain = "description: Question-answer format; each option text scored as a continuation."
        finish = '"So the answer is (X)." where X is the letter of the correct option.'
        cot_target = f"'So the answer is (' ~ {answer_of} ~ ').'"
    else:
        labels = list(mapping.labels)
        options = ""  # the lettered variant lists the labels
        lettered = "".join(f"{LETTERS[k]}. {label}\n" for k, label in enumerate(labels))
        letters = json.dumps(list(LETTERS[:len(labels)]))
        answer_of = (mapping.target if mapping.target.isidentifier()  # the label's text
                     else f"{json.dumps(labels)}[{mapping.target}]")
        pattern = r"(?i)answer is[:\s]*\(?(" + "|".join(re.escape(label) for label in labels) + r")\b"
        plain = "description: Each label scored as a continuation."
        finish = " or ".join(f'"So the answer is {label}."' for label in labels)
        cot_target = f"'So the answer is ' ~ {answer_of} ~ '.'"
        body += "\nWhich is it: " + ", ".join(labels) + "?"
    values = letters if mapping.choices is not None else json.dumps(labels)
    stop = mapping.texts[0][0]
    return {
        "plain": f"{{#-\n{plain}\n-#}}\n{body}\nAnswer:\n",
        "lettered": (f"{{#-\ndescription: Instruction with lettered options; the answer letter is scored.\n"
                     f"choices: {_quoted(letters)}\n-#}}\n{body}\n{options or lettered}Answer:\n"),
        "cot": (f"{{#-\ndescription: \"Chain of thought; the last \\\"answer is\\\" is read.\"\nmethod: generation\n"
                f"answer:\n  pattern: {_quoted(pattern)}\n  values: {_quoted(values)}\n"
                f"generation: {{max_tokens: 256, stop: [\"\\n\\n{stop}:\"]}}\n"
                f"fewshot_target: {_quoted(cot_target)}\n-#}}\n"
                f"{body}\n{options}Think step by step, then finish with {finish}\nAnswer: Let's think step by step.\n"),
    }


def _quoted(text: str) -> str:
    """A YAML single-quoted string: no escapes, so expressions and patterns read as they are written."""
    return "'" + text.replace("'", "''") + "'"
