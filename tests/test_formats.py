"""The raw-file parsers, on the real files in shared/data and on small malformed files (the generic formats, read
by the datasets library, are tested in test_sources.py)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from evalsuite.data.formats import GENERIC_FORMATS, PARSERS, parse
from evalsuite.errors import DataError

DATA = Path(os.environ.get("EVALSUITE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"raw benchmark data not found at {DATA}")

# (format, file, options, count stated in SOURCE.txt)
COUNTS = [
    ("copa_xml", "copa/balacopa-dev-all.xml", {}, 1000),
    ("copa_xml", "copa/balacopa-dev-all.xml", {"ids": [1, 500]}, 500),
    ("copa_xml", "copa/balacopa-dev-all.xml", {"ids": [1001, 1500]}, 500),
    ("piqa_jsonl", "piqa/valid.jsonl", {}, 1838),
    ("folio_jsonl", "folio/folio-validation.jsonl", {}, 204),
    ("folio_jsonl", "folio/folio-train.jsonl", {}, 1004),
    ("logiqa_txt", "logiqa/Eval.txt", {}, 651),
    ("logiqa_txt", "logiqa/Test.txt", {}, 651),
    ("rte_xml", "rte/rte1_dev.xml", {}, 567),
    ("rte_xml", "rte/rte1_test.xml", {}, 800),
    ("rte_xml", "rte/rte2_dev.xml", {}, 400),
    ("rte_xml", "rte/rte2_test.xml", {}, 800),
    ("rte_xml", "rte/rte3_dev.xml", {}, 800),
    ("rte_xml", "rte/rte3_test.xml", {}, 800),
    ("logicnli_json", "logicnli/dev_language.json", {}, 2000),
    ("logicnli_json", "logicnli/test_language.json", {}, 2000),
    ("logicnli_json", "logicnli/train_language.json", {}, 16000),
]

# Field name -> type(s) every document of the format must have.
SCHEMAS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "copa_xml": {"idx": int, "premise": str, "choice1": str, "choice2": str, "question": str, "label": int},
    "piqa_jsonl": {"goal": str, "sol1": str, "sol2": str, "label": int},
    "folio_jsonl": {"premises": str, "conclusion": str, "label": str},
    "logiqa_txt": {"context": str, "query": str, "options": list, "correct_option": int},
    "rte_xml": {"idx": int, "sentence1": str, "sentence2": str, "label": int},
    "logicnli_json": {"id": str, "facts": list, "rules": list, "statement": str, "label": str},
}

_cache: dict[tuple, list[dict]] = {}


def load(fmt: str, name: str, **options) -> list[dict]:
    key = (fmt, name, json.dumps(options, sort_keys=True))
    if key not in _cache:
        _cache[key] = parse(fmt, DATA / name, **options)
    return _cache[key]


def labels(docs: list[dict], field: str = "label") -> Counter:
    return Counter(doc[field] for doc in docs)


# --------------------------------------------------------------------------- real files


@needs_data
@pytest.mark.parametrize(("fmt", "name", "options", "count"), COUNTS, ids=[f"{c[1]}{c[2] or ''}" for c in COUNTS])
def test_count_schema_and_types(fmt: str, name: str, options: dict, count: int) -> None:
    docs = load(fmt, name, **options)
    assert len(docs) == count
    schema = SCHEMAS[fmt]
    for doc in docs:
        for field, kind in schema.items():
            assert isinstance(doc[field], kind), (field, doc)
            assert not isinstance(doc[field], bool)
            if kind is str and field not in ("answerKey",):
                assert doc[field].strip(), (field, doc)
    assert json.loads(json.dumps(docs)) == docs  # plain, JSON-serialisable values


def test_every_format_is_tested() -> None:
    assert {fmt for fmt, *_ in COUNTS} == set(PARSERS) - set(GENERIC_FORMATS)


@needs_data
def test_copa() -> None:
    docs = load("copa_xml", "copa/balacopa-dev-all.xml")
    assert [d["idx"] for d in docs] == list(range(1, 501)) + list(range(1001, 1501))  # sorted, not interleaved
    assert labels(docs, "question") == {"cause": 500, "effect": 500}
    assert set(labels(docs)) == {0, 1}
    # = super_glue/copa train[0] (original id 1).
    assert docs[0] == {"idx": 1, "premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.",
                       "choice2": "The grass was cut.", "question": "cause", "label": 0}
    # super_glue/copa validation[0] is original id 401 with its alternatives in the other order: same answer.
    val0 = docs[400]
    assert (val0["idx"], val0["premise"], val0["question"]) == (401, "The man turned on the faucet.", "effect")
    assert {val0["choice1"], val0["choice2"]} == {"The toilet filled with water.", "Water flowed from the spout."}
    assert val0[f"choice{val0['label'] + 1}"] == "Water flowed from the spout."
    mirrored = load("copa_xml", "copa/balacopa-dev-all.xml", ids=(1001, 1001))
    assert mirrored == [{"idx": 1001, "premise": "The garden looked well-groomed.", "choice1": "The grass was cut.",
                         "choice2": "The sun was rising.", "question": "cause", "label": 0}]
    # Whitespace around element text (e.g. item 1010's premise) is layout, not content.
    assert all(d[f] == d[f].strip() for d in docs for f in ("premise", "choice1", "choice2"))


@needs_data
def test_piqa() -> None:
    docs = load("piqa_jsonl", "piqa/valid.jsonl")
    assert set(labels(docs)) == {0, 1}
    assert docs[0]["goal"] == "How do I ready a guinea pig cage for it's new occupants?"
    assert docs[0]["sol1"].startswith("Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper")
    assert docs[0]["label"] == 0
    assert docs[1] == {"goal": "dresser", "sol1": "replace drawer with bobby pin ", "sol2": "finish, woodgrain with  bobby pin ", "label": 1}


@needs_data
def test_folio() -> None:
    val = load("folio_jsonl", "folio/folio-validation.jsonl")
    train = load("folio_jsonl", "folio/folio-train.jsonl")
    assert labels(val) == {"True": 72, "False": 63, "Uncertain": 69}
    assert labels(train) == {"True": 388, "False": 286, "Uncertain": 330}  # 'Unknown' normalised
    assert val[0]["premises"].split("\n")[0] == (
        "If people perform in school talent shows often, then they attend and are very engaged with school events.")
    assert len(val[0]["premises"].split("\n")) == len(val[0]["premises-FOL"].split("\n")) == 6
    assert val[0]["conclusion"] == "Bonnie performs in school talent shows often."
    assert val[0]["conclusion-FOL"] == "Engaged(bonnie)"
    assert val[0]["label"] == "Uncertain"
    assert "story_id" not in val[0]
    assert train[0]["story_id"] == 406 and train[0]["example_id"] == 1131
    assert "conclusion-FOL" not in train[0] and "premises-FOL" in train[0]
    assert train[0]["premises"].startswith("All people who regularly drink coffee are dependent on caffeine.\nPeople either")


@needs_data
def test_logiqa() -> None:
    ev = load("logiqa_txt", "logiqa/Eval.txt")
    test = load("logiqa_txt", "logiqa/Test.txt")
    assert labels(ev, "correct_option") == {0: 109, 1: 122, 2: 150, 3: 270}
    assert labels(test, "correct_option") == {0: 132, 1: 159, 2: 179, 3: 181}
    first = ev[0]
    assert first["context"].startswith("Black Americans are twice as likely to suffer from hypertension as white Americans.")
    assert first["query"] == ("The following conclusions about contemporary westernized African blacks, "
                              "if the item is true, can it best support the researchers' hypothesis?")
    assert first["options"][0].startswith("The blood pressure of the descendants of Senegalese and Gambians")
    assert first["options"][3].startswith("The blood pressure of Yoruba people in West Africa is not high.")
    assert first["correct_option"] == 0
    for doc in ev + test:
        assert len(doc["options"]) == 4 and all(doc["options"])
    every = [o for doc in ev + test for o in doc["options"]]
    assert not any(o.startswith(("A.", "B.", "C.", "D.")) and o[2:3] == " " for o in every)
    # Prefix stripped only where present; noisy lines kept whole.
    assert "Country A.H will become a developed country within five years." in every
    assert "A small amount of cultivated land in C.A area is available farmland." in every
    assert "Storehouse B.3" in every
    assert ["first", "Third", "Fourth", "fifth"] in [d["options"] for d in test]  # 'A first' ... 'D fifth'
    # Test.txt has items whose option lines read A, C, B, D: put back in letter order (the answer names the letter).
    valves = next(d for d in test if d["query"].startswith("Now we need to open the No.1 valve"))
    assert valves["options"] == ["No.2 valve and No.4 valve.", "No.2 valve and No.3 valve.",
                                 "No.3 valve and No.5 valve.", "No.4 valve and No.5 valve."]
    assert valves["correct_option"] == 1


@needs_data
def test_rte() -> None:
    expected = {"rte1_dev": {0: 283, 1: 284}, "rte1_test": {0: 400, 1: 400}, "rte2_dev": {0: 210, 1: 190},
                "rte2_test": {0: 400, 1: 400}, "rte3_dev": {0: 412, 1: 388}, "rte3_test": {0: 410, 1: 390}}
    for name, counts in expected.items():
        docs = load("rte_xml", f"rte/{name}.xml")
        assert labels(docs) == counts, name
        assert len({d["idx"] for d in docs}) == len(docs), name
    rte1 = load("rte_xml", "rte/rte1_dev.xml")
    assert rte1[0] == {"idx": 8, "sentence1": "Crude oil for April delivery traded at $37.80 a barrel, down 28 cents",
                       "sentence2": "Crude oil prices rose to $37.80 per barrel", "label": 1}
    assert rte1[2]["label"] == 0  # value="TRUE"
    rte2 = load("rte_xml", "rte/rte2_dev.xml")
    assert rte2[0]["idx"] == 2 and rte2[0]["sentence2"] == "A local banker bids for Bank Antonveneta." and rte2[0]["label"] == 0
    assert rte2[1]["idx"] == 4 and rte2[1]["label"] == 1  # entailment="NO"
    assert load("rte_xml", "rte/rte3_test.xml")[0]["sentence2"] == "Le Beau Serge was directed by Chabrol."


@needs_data
def test_logicnli() -> None:
    for name, per_class in (("dev", 500), ("test", 500), ("train", 4000)):
        docs = load("logicnli_json", f"logicnli/{name}_language.json")
        assert labels(docs) == {lab: per_class for lab in ("entailment", "contradiction", "self_contradiction", "neutral")}
        assert len({d["id"] for d in docs}) == len(docs)
    dev = load("logicnli_json", "logicnli/dev_language.json")
    assert [d["id"] for d in dev[:2]] == ["0_0", "0_1"] and dev[20]["id"] == "1_0"
    assert dev[0]["facts"][0] == "Eli is not soft." and len(dev[0]["facts"]) == 12
    assert dev[0]["rules"][0] == "If someone is southern, then he is neither jittery nor soft."
    assert dev[0]["statement"] == "Eli is jittery." and dev[1]["statement"] == "Ronald is not scared."
    assert dev[0]["facts"] == dev[19]["facts"] and dev[0]["facts"] is not dev[19]["facts"]
    assert all(isinstance(x, str) for d in dev for x in d["facts"] + d["rules"])


# --------------------------------------------------------------------------- parse() and malformed files


def test_unknown_format_lists_known(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data format 'nope'.*copa_xml.*jsonl.*tsv"):
        parse("nope", tmp_path / "x")


def test_missing_file_names_path_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "absent.jsonl"
    with pytest.raises(DataError) as err:
        parse("piqa_jsonl", missing)
    assert str(missing) in str(err.value)
    assert "--data-dir" in str(err.value) and "EVALSUITE_DATA_DIR" in str(err.value)


def test_options_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.xml"
    path.write_text('<copa-corpus><item id="1" asks-for="cause" most-plausible-alternative="2">'
                    "<p>P.</p><a1>A.</a1><a2>B.</a2></item></copa-corpus>", encoding="utf-8")
    assert parse("copa_xml", path, ids=[1, 1])[0]["label"] == 1
    assert parse("copa_xml", path, ids=[2, 9]) == []
    with pytest.raises(DataError, match="does not take option.*idz.*ids"):
        parse("copa_xml", path, idz=[1, 2])
    with pytest.raises(DataError, match="takes no options"):
        parse("parquet", path, ids=[1, 2])
    for bad in ([5, 1], [1], "1-5", [1.0, 2]):
        with pytest.raises(DataError, match="ids"):
            parse("copa_xml", path, ids=bad)


def _copa(pair: str) -> str:
    return f'<?xml version="1.0"?>\n<copa-corpus>\n{pair}\n</copa-corpus>\n'


def _rte(pair: str) -> str:
    return f'<?xml version="1.0"?>\n<entailment-corpus>\n{pair}\n</entailment-corpus>\n'


GOOD_PIQA = '{"goal": "g", "sol1": "a", "sol2": "b"}\n'
GOOD_FOLIO = '{"premises": ["p"], "conclusion": "c", "label": "True"}\n'
LOGIQA_ITEM = "\na\nContext.\nQuery?\nA.one\nB.two\nC.three\nD.four\n"

# (format, file name, content, extra files, text the message must contain besides the file name)
MALFORMED = [
    ("copa_xml", "bad.xml", _copa('<item id="1" asks-for="cause" most-plausible-alternative="1"><p>x</p><a1>y</a1>'), {}, "line"),
    ("copa_xml", "label.xml", _copa('<item id="7" asks-for="cause" most-plausible-alternative="3">'
                                    "<p>x</p><a1>y</a1><a2>z</a2></item>"), {}, "id='7'"),
    ("copa_xml", "noa2.xml", _copa('<item id="8" asks-for="effect" most-plausible-alternative="1"><p>x</p><a1>y</a1></item>'), {}, "id='8'"),
    ("copa_xml", "noid.xml", _copa('<item asks-for="effect" most-plausible-alternative="1"><p>x</p><a1>y</a1><a2>z</a2></item>'), {}, "#1"),
    ("piqa_jsonl", "valid.jsonl", GOOD_PIQA + '{"goal": "g", "sol1": "a"\n', {"valid-labels.lst": "0\n1\n"}, "line 2"),
    ("piqa_jsonl", "count.jsonl", GOOD_PIQA * 2, {"count-labels.lst": "0\n"}, "1 labels"),
    ("piqa_jsonl", "lab.jsonl", GOOD_PIQA, {"lab-labels.lst": "2\n"}, "lab-labels.lst: line 1"),
    ("piqa_jsonl", "nolabels.jsonl", GOOD_PIQA, {}, "nolabels-labels.lst"),
    ("folio_jsonl", "folio.jsonl", GOOD_FOLIO + GOOD_FOLIO.replace('"True"', '"Maybe"'), {}, "line 2"),
    ("folio_jsonl", "folio2.jsonl", GOOD_FOLIO + '{"premises": "not a list", "conclusion": "c", "label": "True"}\n', {}, "line 2"),
    ("logiqa_txt", "short.txt", LOGIQA_ITEM + "\nb\nContext.\nQuery?\nA.one\n", {}, "item 2"),
    ("logiqa_txt", "letter.txt", LOGIQA_ITEM + LOGIQA_ITEM.replace("\na\n", "\ne\n"), {}, "line 10"),
    ("logiqa_txt", "shift.txt", LOGIQA_ITEM + "x" + LOGIQA_ITEM, {}, "line 9"),
    ("rte_xml", "bad.xml", _rte('<pair id="3" value="TRUE"><t>a</t><h>b</h></pear>'), {}, "line 3"),
    ("rte_xml", "label.xml", _rte('<pair id="3" entailment="MAYBE"><t>a</t><h>b</h></pair>'), {}, "id='3'"),
    ("rte_xml", "empty.xml", _rte(""), {}, "no <pair>"),
    ("logicnli_json", "l.json", '{"0": {"facts": [], "rules": [], "statements": ["s"], "labels": ["maybe"]}}', {}, "'0'"),
    ("logicnli_json", "l2.json", '{"0": {"facts": [], "rules": [], "statements": ["s", "t"], "labels": ["neutral"]}}', {}, "'0'"),
    ("logicnli_json", "l3.json", '{"0": {"facts": []', {}, "top level"),
]


@pytest.mark.parametrize(("fmt", "name", "content", "extra", "where"), MALFORMED, ids=[f"{m[0]}-{m[1]}" for m in MALFORMED])
def test_malformed_file_raises_data_error(tmp_path: Path, fmt: str, name: str, content: str | bytes,
                                          extra: dict[str, str], where: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    for extra_name, extra_content in extra.items():
        (tmp_path / extra_name).write_text(extra_content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        parse(fmt, path)
    message = str(err.value)
    assert where in message and any(n in message for n in (name, *extra)), message


def test_good_small_files_parse(tmp_path: Path) -> None:
    """The well-formed halves of the malformed fixtures parse, with BOM, CRLF and trailing newlines tolerated."""
    (tmp_path / "ok.jsonl").write_text(GOOD_PIQA + "\n", encoding="utf-8")
    (tmp_path / "ok-labels.lst").write_text("1\r\n", encoding="utf-8")
    assert parse("piqa_jsonl", tmp_path / "ok.jsonl") == [{"goal": "g", "sol1": "a", "sol2": "b", "label": 1}]
    (tmp_path / "q.txt").write_text(LOGIQA_ITEM * 2, encoding="utf-8")
    assert parse("logiqa_txt", tmp_path / "q.txt")[1] == {
        "context": "Context.", "query": "Query?", "options": ["one", "two", "three", "four"], "correct_option": 0}

