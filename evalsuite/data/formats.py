"""Readers of data files, one per file format, each registered under the format's name
(:func:`register_format`; a task file names it as ``source.local.format``).

Generic formats (``jsonl``, ``json``, ``csv``, ``tsv``, ``parquet``) are read by the ``datasets`` library's
own builders, row by row as they are. The raw benchmark formats that ``datasets`` cannot read (COPA's and
RTE's XML, LogiQA's text blocks, PIQA's questions with labels in a second file, LogicNLI's theories holding
many statements, FOLIO's files whose columns differ from file to file) have a parser each, which emits the
layout of the task's Hugging Face hub dataset, so one prompt template works on documents from either source.

A reader returns plain dict documents (JSON-serialisable, in file order). Every failure is raised as
:class:`DataError` naming the file and, where possible, the line or item at fault.
"""

from __future__ import annotations

import csv
import glob
import inspect
import json
import math
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evalsuite.errors import DataError
from evalsuite.registry import Registry
from evalsuite.sandbox import inside, shown

Parser = Callable[..., list[dict]]
# A parser is called as parser(path, **options), the options being the keyword-only parameters it declares.
PARSERS: Registry[Parser] = Registry("data format", "evalsuite.formats", DataError)


def register_format(name: str) -> Callable[[Parser], Parser]:
    """Register a parser as data format ``name`` (``source.local.format`` in a task file).

    Another package registers its formats through the ``evalsuite.formats`` entry-point group
    (see :mod:`evalsuite.registry`).
    """
    return PARSERS.register(name)


# --------------------------------------------------------------------------- shared helpers


def _read_text(path: Path) -> str:
    """The whole file as text; utf-8-sig also reads plain UTF-8, and drops a BOM where one exists."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return handle.read()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 text (byte {err.start}): {err.reason}") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read file: {err.strerror or err}") from err


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end-of-line) for every line of the file."""
    text = _read_text(path)
    if text.endswith("\n"):
        text = text[:-1]
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.rstrip("\r")


def _describe(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        where = f"line {err.lineno}, column {err.colno}" if "\n" in err.doc else f"column {err.colno}"
        return f"invalid JSON: {err.msg} ({where})"
    if isinstance(err, KeyError):
        return f"missing field {err.args[0]!r}"
    return str(err) or type(err).__name__


@contextmanager
def _at(path: Path, where: str) -> Iterator[None]:
    """Re-raise a parsing failure inside the block as DataError naming the file and place."""
    try:
        yield
    except DataError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, csv.Error) as err:
        raise DataError(f"{path}: {where}: {_describe(err)}") from err


def _field(obj: Any, key: str, kind: type | tuple[type, ...] = str) -> Any:
    """obj[key], checked to be of the given type (bool never passes for int/float)."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a JSON object, got {type(obj).__name__}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise TypeError(f"field {key!r} should be {names}, got {type(value).__name__}")
    return value


def _str_list(obj: Any, key: str) -> list[str]:
    values = _field(obj, key, list)
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"field {key!r} should be a list of strings")
    return values


def _number(value: Any, kind: type[int] | type[float], what: str) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number):
        raise ValueError(f"{what} should be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return number


def _label(value: Any, mapping: Mapping[str, Any], what: str = "label") -> Any:
    try:
        return mapping[value]
    except (KeyError, TypeError):
        raise ValueError(f"bad {what} {value!r}; expected one of {', '.join(mapping)}") from None


def _jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """('line N', parsed object) for each non-blank line of a JSON Lines file."""
    for number, line in _lines(path):
        if line.strip():
            where = f"line {number}"
            with _at(path, where):
                obj = json.loads(line)
            yield where, obj


def _xml_root(path: Path, tag: str) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        line, column = err.position
        reason = re.sub(r": line \d+, column \d+$", "", str(err))
        raise DataError(f"{path}: line {line}, column {column}: malformed XML: {reason}") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read file: {err.strerror or err}") from err
    if root.find(tag) is None:
        raise DataError(f"{path}: no <{tag}> elements under <{root.tag}>")
    return root


def _xml_text(elem: ET.Element, child: str) -> str:
    """Text of a required child element, with XML layout whitespace collapsed to single spaces."""
    node = elem.find(child)
    if node is None:
        raise ValueError(f"missing <{child}> element")
    text = " ".join((node.text or "").split())
    if not text:
        raise ValueError(f"empty <{child}> element")
    return text


def _xml_items(path: Path, root: ET.Element, tag: str) -> Iterator[tuple[str, ET.Element]]:
    for number, elem in enumerate(root.iter(tag), start=1):
        ident = elem.get("id")
        yield (f"<{tag}> #{number}" if ident is None else f"<{tag} id={ident!r}>"), elem


# --------------------------------------------------------------------------- generic formats

GENERIC_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")  # read by the datasets library's builders


@contextmanager
def _quiet_progress(datasets: Any) -> Iterator[None]:
    """No progress bars while a local file is read (it takes a moment, and they would clutter a run's output)."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _innermost(exc: BaseException) -> str:
    """The first line of the deepest cause: datasets wraps a reader's error in its own."""
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def read_with_datasets(builder: str, path: Path, what: str, **config: Any) -> list[dict]:
    """Every row of ``path`` read by the ``datasets`` builder ``builder`` (json, csv, parquet), in file order.

    The builder's cache goes to a temporary folder deleted afterwards: nothing is written beside the data (or
    into the user's cache), and a file edited in place is always read afresh. Works offline.
    """
    import datasets

    with tempfile.TemporaryDirectory(prefix="evalsuite-read-") as cache, _quiet_progress(datasets):
        try:
            # datasets reads data_files as glob patterns: escaped, "q[1].jsonl" is that file and not "q1.jsonl"
            dataset = datasets.load_dataset(builder, data_files={"rows": [glob.escape(str(path))]}, split="rows",
                                            cache_dir=cache, **config)
            return dataset.to_list()
        except Exception as exc:  # noqa: BLE001 - whatever the builder raises, one message naming the file
            raise DataError(f"{path}: cannot be read as {what}: {_innermost(exc)}") from None


def _first_character(path: Path) -> str:
    """The file's first character that is not white space (a byte-order mark skipped), or ''."""
    with open(path, "rb") as handle:
        head = handle.read(4096).decode("utf-8-sig", errors="replace").lstrip()
    return head[:1]


@register_format("jsonl")
def read_jsonl(path: Path) -> list[dict]:
    """JSON Lines: one JSON object per line, each a document as it is."""
    if _first_character(path) not in ("{", ""):
        raise DataError(f"{path}: not JSON Lines (one object per line): for a JSON list use format json")
    return read_with_datasets("json", path, "JSON Lines")


@register_format("json")
def read_json(path: Path, *, field: str | None = None) -> list[dict]:
    """A JSON list of objects, or (``field``) the list under that key of a JSON object."""
    if field is None and _first_character(path) != "[":
        raise DataError(f"{path}: not a JSON list of objects: name the key of the list with the option 'field' "
                        "(e.g. {file: ..., field: examples}), or use format jsonl for one object per line")
    return read_with_datasets("json", path, "JSON" + (f" (the list under {field!r})" if field else ""),
                              **({"field": field} if field is not None else {}))


_QUOTING = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}


def _read_table(path: Path, separator: str, what: str, column_names: list[str] | None, quoting: str) -> list[dict]:
    if quoting not in _QUOTING:
        raise DataError(f"option quoting must be one of {', '.join(_QUOTING)}; got {quoting!r}")
    if column_names is not None and (not isinstance(column_names, list) or not column_names
                                     or not all(isinstance(n, str) for n in column_names)):
        raise DataError(f"option column_names must be a list of column names; got {column_names!r}")
    named = {} if column_names is None else {"column_names": column_names,
                                             "usecols": list(range(len(column_names)))}
    # Text stays text ("NA", "None", "null" are words); an empty cell is a missing value (null).
    return read_with_datasets("csv", path, what, sep=separator, quoting=_QUOTING[quoting], keep_default_na=False,
                              na_values=[""], **named)


@register_format("csv")
def read_csv(path: Path, *, column_names: list[str] | None = None, quoting: str = "minimal") -> list[dict]:
    """Comma-separated values with a header row (or ``column_names``, for a file without one: the columns after
    those named are left out); ``quoting: none`` reads quote marks as text. Numbers become numbers."""
    return _read_table(path, ",", "CSV", column_names, quoting)


@register_format("tsv")
def read_tsv(path: Path, *, column_names: list[str] | None = None, quoting: str = "minimal") -> list[dict]:
    """Tab-separated values, as ``csv``."""
    return _read_table(path, "\t", "TSV", column_names, quoting)


@register_format("parquet")
def read_parquet(path: Path) -> list[dict]:
    """A Parquet file, each row a document."""
    return read_with_datasets("parquet", path, "Parquet")


# --------------------------------------------------------------------------- parsers


@register_format("copa_xml")
def parse_copa_xml(path: Path, *, ids: list[int] | tuple[int, int] | None = None) -> list[dict]:
    """COPA / Balanced-COPA XML (<item id asks-for most-plausible-alternative><p/><a1/><a2/>), as super_glue/copa.

    ``ids=[lo, hi]`` keeps items whose id is in the inclusive range (1-500 original COPA dev,
    1001-1500 Balanced-COPA mirrored). Documents are sorted by id; ``idx`` is the COPA item id
    (the hub's idx is 0-based per split), ``label`` = most-plausible-alternative - 1.
    """
    lo, hi = _id_range(ids)
    docs = []
    for where, item in _xml_items(path, _xml_root(path, "item"), "item"):
        with _at(path, where):
            idx = _number(item.get("id"), int, "item id")
            if not lo <= idx <= hi:
                continue
            docs.append({
                "idx": idx,
                "premise": _xml_text(item, "p"),
                "choice1": _xml_text(item, "a1"),
                "choice2": _xml_text(item, "a2"),
                "question": _label(item.get("asks-for"), {"cause": "cause", "effect": "effect"}, "asks-for"),
                "label": _label(item.get("most-plausible-alternative"), {"1": 0, "2": 1},
                                "most-plausible-alternative"),
            })
    return sorted(docs, key=lambda doc: doc["idx"])


def _id_range(ids: Any) -> tuple[float, float]:
    if ids is None:
        return float("-inf"), float("inf")
    if (not isinstance(ids, (list, tuple)) or len(ids) != 2
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids) or ids[0] > ids[1]):
        raise DataError(f"option ids must be [lo, hi], two integers with lo <= hi; got {ids!r}")
    return ids[0], ids[1]


@register_format("piqa_jsonl")
def parse_piqa_jsonl(path: Path) -> list[dict]:
    """PIQA JSONL {goal, sol1, sol2} plus line-aligned labels from ``<stem>-labels.lst``, as piqa (ybisk/piqa)."""
    labels_path = path.with_name(f"{path.stem}-labels.lst")
    if inside(path.parent, labels_path.name) is None:
        raise DataError(f"{path}: label file {labels_path} leads outside its folder (links followed): "
                        "keep the labels beside the questions")
    if not labels_path.is_file():
        raise DataError(f"{path}: label file {labels_path} not found (PIQA labels live beside the questions)")
    labels = []
    for number, line in _lines(labels_path):
        if line.strip():
            with _at(labels_path, f"line {number}"):
                labels.append(_label(line.strip(), {"0": 0, "1": 1}))
    docs = []
    for where, obj in _jsonl(path):
        with _at(path, where):
            docs.append({key: _field(obj, key) for key in ("goal", "sol1", "sol2")})
    if len(docs) != len(labels):
        raise DataError(f"{path}: {len(docs)} questions but {labels_path.name} has {len(labels)} labels")
    for doc, label in zip(docs, labels):
        doc["label"] = label
    return docs


_FOLIO_LABELS = {"True": "True", "False": "False", "Uncertain": "Uncertain", "Unknown": "Uncertain"}


@register_format("folio_jsonl")
def parse_folio_jsonl(path: Path) -> list[dict]:
    """FOLIO JSONL (premises and premises-FOL as lists), as yale-nlp/FOLIO.

    Lists are joined with newlines; story_id, example_id, premises-FOL and conclusion-FOL are kept
    only when the file has them (the v0.0 train file lacks conclusion-FOL, validation lacks ids);
    label "Unknown" (train) is normalised to "Uncertain".
    """
    docs = []
    for where, obj in _jsonl(path):
        with _at(path, where):
            doc: dict[str, Any] = {}
            for key in ("story_id", "example_id"):
                if key in obj:
                    doc[key] = _field(obj, key, int)
            doc["premises"] = "\n".join(_str_list(obj, "premises"))
            if "premises-FOL" in obj:
                doc["premises-FOL"] = "\n".join(_str_list(obj, "premises-FOL"))
            doc["conclusion"] = _field(obj, "conclusion")
            if "conclusion-FOL" in obj:
                doc["conclusion-FOL"] = _field(obj, "conclusion-FOL")
            doc["label"] = _label(obj.get("label"), _FOLIO_LABELS)
            docs.append(doc)
    return docs


_OPTION_PREFIX = re.compile(r"([A-Da-d])[.?]\s*|([A-D])\s+")


def _logiqa_options(lines: list[str]) -> list[str]:
    """Strip option letters where present; reorder lines whose letters are a shuffled A-D (Test.txt has A, C, B, D)."""
    matches = [_OPTION_PREFIX.match(line) for line in lines]
    letters = [((m.group(1) or m.group(2)).upper() if m else None) for m in matches]
    if sorted(letters, key=str) == list("ABCD"):
        return [line[m.end():] for _, line, m in sorted(zip(letters, lines, matches), key=lambda t: t[0])]
    # Otherwise strip a prefix only where it is the letter expected at that position, so
    # "A small amount of ..." in third place or "Country A.H will ..." are kept whole.
    return [line[m.end():] if m and letter == expected else line
            for expected, letter, line, m in zip("ABCD", letters, lines, matches)]


@register_format("logiqa_txt")
def parse_logiqa_txt(path: Path) -> list[dict]:
    """LogiQA v1 text: 8-line blocks (blank, answer letter a-d, context, query, 4 options), as lucasmccabe/logiqa.

    An option's letter prefix ("A.", "d.", "C?", "D ") is stripped only when present, so
    unprefixed or noisy lines ("Country A.H will ...") are kept whole. Where the four lines carry
    the letters A-D out of order, they are put in letter order, since the answer letter names the
    labelled option (not the line position).
    """
    lines = list(_lines(path))
    while lines and not lines[-1][1].strip():
        lines.pop()
    docs = []
    for start in range(0, len(lines), 8):
        block = lines[start:start + 8]
        first = block[0][0]
        where = f"item {start // 8 + 1} (line {first})"
        if len(block) < 8:
            raise DataError(f"{path}: {where}: incomplete item, {len(block)} of 8 lines")
        texts = [line.strip() for _, line in block]
        if texts[0]:
            raise DataError(f"{path}: line {first}: expected the blank line that starts an item, "
                            f"got {texts[0][:40]!r}")
        for (number, _), text in zip(block[2:], texts[2:]):
            if not text:
                raise DataError(f"{path}: {where}: line {number} is empty")
        with _at(path, f"{where}, line {block[1][0]}"):
            correct = _label(texts[1].lower(), {"a": 0, "b": 1, "c": 2, "d": 3}, "answer letter")
        docs.append({"context": texts[2], "query": texts[3], "options": _logiqa_options(texts[4:]),
                     "correct_option": correct})
    return docs


_RTE_LABELS = {"TRUE": 0, "YES": 0, "FALSE": 1, "NO": 1}


@register_format("rte_xml")
def parse_rte_xml(path: Path) -> list[dict]:
    """PASCAL RTE 1-3 XML (<pair id value|entailment><t/><h/>), as nyu-mll/glue rte.

    RTE1 labels are value=TRUE/FALSE, RTE2/3 entailment=YES/NO; 0 = entailment, 1 = not_entailment.
    ``idx`` is the pair id (unique within a file, not sorted in RTE1).
    """
    docs = []
    for where, pair in _xml_items(path, _xml_root(path, "pair"), "pair"):
        with _at(path, where):
            raw = pair.get("entailment", pair.get("value"))
            docs.append({
                "idx": _number(pair.get("id"), int, "pair id"),
                "sentence1": _xml_text(pair, "t"),
                "sentence2": _xml_text(pair, "h"),
                "label": _label(raw.upper() if raw else raw, _RTE_LABELS, "entailment/value"),
            })
    return docs


_LOGICNLI_LABELS = {name: name for name in ("entailment", "contradiction", "self_contradiction", "neutral")}


@register_format("logicnli_json")
def parse_logicnli_json(path: Path) -> list[dict]:
    """LogicNLI JSON object: theory id -> {facts[], rules[], statements[], labels[]} (20 statements per theory).

    One document per statement, in file order: ``id`` is "<theory id>_<statement index>" (0-based),
    ``facts``/``rules`` are the theory's lists, ``statement``/``label`` the pair at that index.
    """
    with _at(path, "top level"):
        data = json.loads(_read_text(path))
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object keyed by id, got {type(data).__name__}")
    docs = []
    for key, theory in data.items():
        with _at(path, f"item {key!r}"):
            facts, rules = _str_list(theory, "facts"), _str_list(theory, "rules")
            statements, labels = _str_list(theory, "statements"), _str_list(theory, "labels")
            if len(statements) != len(labels):
                raise ValueError(f"{len(statements)} statements but {len(labels)} labels")
            for number, (statement, label) in enumerate(zip(statements, labels)):
                docs.append({"id": f"{key}_{number}", "facts": list(facts), "rules": list(rules),
                             "statement": statement, "label": _label(label, _LOGICNLI_LABELS)})
    return docs


def parse(format: str, path: Path, **options: Any) -> list[dict]:
    """Parse ``path`` with the parser registered for ``format``.

    Unknown format -> DataError listing known formats; missing file -> DataError naming the path
    and saying to set --data-dir / EVALSUITE_DATA_DIR; unknown option -> DataError.
    """
    parser = PARSERS.resolve(format)
    path = Path(path)
    try:
        found = path.exists()
    except OSError as err:  # e.g. a name too long for the file system
        raise DataError(f"{shown(str(path))}: cannot read file: {err.strerror}") from None
    if not found:
        raise DataError(f"data file not found: {path} (set --data-dir or EVALSUITE_DATA_DIR "
                        "to the folder holding the raw benchmark files)")
    accepted = [name for name, p in inspect.signature(parser).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"it takes: {', '.join(accepted)}" if accepted else "it takes no options"
        raise DataError(f"format {format!r} does not take option(s) {', '.join(unknown)}; {takes}")
    return parser(path, **options)
