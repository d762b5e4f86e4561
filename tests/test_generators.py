"""Generated logic tasks: seeds, difficulty levels, and labels re-checked from the rendered text by
independent solvers (brute force over models, truth tables, assignments), not the generators' own."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from evalsuite.api import load_tasks
from evalsuite.pipeline.render import render_instances
from evalsuite.data import GeneratedDocs, content_hash, load_split
from evalsuite.data.generators import GENERATORS, generate
from evalsuite.errors import SpecError
from evalsuite.prompting import PromptRenderer
from evalsuite.spec import load_task

ROOT = Path(__file__).resolve().parents[1]
GENERATED_TASKS = ["gen_deduction", "gen_knights_knaves", "gen_propositional", "gen_syllogisms"]


# ------------------------------------------------------------------------------------------ seeds
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_items_different_seed_different_items(name):
    first = generate(name, n=30, seed=1234, split="test")
    assert generate(name, n=30, seed=1234, split="test") == first
    assert generate(name, n=12, seed=1234, split="test") == first[:12]  # a prefix does not depend on n
    other = generate(name, n=30, seed=1235, split="test")
    key = GENERATORS[name].key
    # Adjacent seeds share no item (a generator seeded with seed + index would share all but one).
    assert not {key(d) for d in first} & {key(d) for d in other}
    assert not {key(d) for d in first} & {key(d) for d in generate(name, n=30, seed=1234, split="train")}
    assert len({key(d) for d in first}) == 30  # no repeated item within a split


def test_items_do_not_depend_on_the_hash_seed():
    code = "from evalsuite.data.generators import generate; print(generate('deduction', n=5, seed=3, split='test'))"
    outputs = {
        subprocess.run([sys.executable, "-c", code], env={"PYTHONHASHSEED": h, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, check=True).stdout
        for h in ("0", "1", "12345")
    }
    assert len(outputs) == 1


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_levels_have_equal_counts_and_labels_are_balanced(name):
    docs = generate(name, n=120, seed=7, split="test")
    levels = Counter(d["difficulty"] for d in docs)
    assert sorted(levels) == list(GENERATORS[name].levels)
    assert len(set(levels.values())) == 1
    labels = Counter(d["label"] for d in docs)
    assert max(labels.values()) - min(labels.values()) <= len(levels)


def test_levels_param_restricts_levels():
    docs = generate("deduction", n=10, seed=0, split="test", levels=[2, 4])
    assert [d["difficulty"] for d in docs] == [2, 4] * 5
    with pytest.raises(ValueError, match="supports levels"):
        generate("knights_knaves", n=3, seed=0, split="test", levels=[5])


# --------------------------------------------------------------------------- syllogisms
_STATEMENT = re.compile(r"^(All|No|Some) (\w+) are (not )?(\w+)\.$")
# The 15 forms valid without existential import (mood of major, minor, conclusion; figure 1-4).
_VALID_FORMS = {
    ("AAA", 1), ("EAE", 1), ("AII", 1), ("EIO", 1), ("EAE", 2), ("AEE", 2), ("EIO", 2), ("AOO", 2),
    ("IAI", 3), ("AII", 3), ("OAO", 3), ("EIO", 3), ("AEE", 4), ("IAI", 4), ("EIO", 4),
}
# The 9 forms valid only when every term is non-empty: the generator must never produce them.
_CONDITIONAL_FORMS = {
    ("AAI", 1), ("EAO", 1), ("AEO", 2), ("EAO", 2), ("AAI", 3), ("EAO", 3), ("AEO", 4), ("EAO", 4), ("AAI", 4),
}


def _parse_categorical(sentence: str) -> tuple[str, str, str]:
    quantifier, subject, negated, predicate = _STATEMENT.match(sentence).groups()
    form = {"All": "A", "No": "E", "Some": "O" if negated else "I"}[quantifier]
    return form, subject, predicate


def _holds(statement, model: set[frozenset]) -> bool:
    form, s, p = statement
    return {
        "A": all(p in r for r in model if s in r),
        "E": not any(s in r and p in r for r in model),
        "I": any(s in r and p in r for r in model),
        "O": any(s in r and p not in r for r in model),
    }[form]


def _brute_force_valid(premises, conclusion, terms, existential_import: bool) -> bool:
    """Every model (a set of non-empty Venn regions) of the premises satisfies the conclusion."""
    regions = [frozenset(c) for k in range(1, len(terms) + 1) for c in itertools.combinations(terms, k)]
    for bits in range(1 << len(regions)):
        model = {r for i, r in enumerate(regions) if bits >> i & 1}
        if existential_import and not all(any(t in r for r in model) for t in terms):
            continue
        if all(_holds(p, model) for p in premises) and not _holds(conclusion, model):
            return False
    return True


def test_classic_syllogisms_follow_the_mood_figure_table():
    docs = [d for d in generate("syllogisms", n=400, seed=11, split="test") if d["difficulty"] == 1]
    seen = Counter()
    for doc in docs:
        major_minor = [_parse_categorical(p) for p in doc["premises"]]
        form, subject, predicate = _parse_categorical(doc["conclusion"])
        major = next(p for p in major_minor if predicate in p[1:])
        minor = next(p for p in major_minor if p is not major)
        middle = ({major[1], major[2]} - {predicate}).pop()
        figure = {(True, False): 1, (False, False): 2, (True, True): 3, (False, True): 4}[
            (major[1] == middle, minor[1] == middle)]
        mood = major[0] + minor[0] + form
        assert ((mood, figure) in _VALID_FORMS) == (doc["label"] == "Valid"), doc
        assert (mood, figure) not in _CONDITIONAL_FORMS, doc
        seen[doc["label"]] += 1
    assert seen["Valid"] >= 30 and seen["Invalid"] >= 30


def test_syllogism_chains_agree_with_brute_force_over_models():
    docs = [d for d in generate("syllogisms", n=40, seed=5, split="test") if d["difficulty"] == 2][:6]
    for doc in docs:
        premises = [_parse_categorical(p) for p in doc["premises"]]
        conclusion = _parse_categorical(doc["conclusion"])
        terms = sorted({t for _, s, p in premises for t in (s, p)})
        assert len(terms) == 4
        for existential in (False, True):
            assert _brute_force_valid(premises, conclusion, terms, existential) == (doc["label"] == "Valid"), doc


# ---------------------------------------------------------------------------- deduction
_FACT = re.compile(r"^(\w+) is (not )?(\w+)$")
_IF_RULE = re.compile(r"^If someone is (.+) then they are (not )?(\w+)$")
_ALL_RULE = re.compile(r"^All (.+) people are (not )?(\w+)$")


def _parse_theory(theory: str, person: str):
    facts, rules = [], []
    for sentence in theory.rstrip(".").split(". "):
        if m := _FACT.match(sentence):
            if m[1] == person:
                facts.append((m[3], not m[2]))
        elif m := _IF_RULE.match(sentence):
            rules.append((tuple(m[1].split(" and ")), (m[3], not m[2])))
        elif m := _ALL_RULE.match(sentence):
            rules.append((tuple(m[1].split(", ")), (m[3], not m[2])))
        else:
            raise AssertionError(f"unparsed sentence {sentence!r}")
    return facts, rules


def _truth_table_label(facts, rules, query) -> str:
    atoms = sorted({a for a, _ in facts} | {a for body, (h, _) in rules for a in (*body, h)} | {query[0]})
    verdicts = set()
    for values in itertools.product((True, False), repeat=len(atoms)):
        world = dict(zip(atoms, values))
        if all(world[a] == v for a, v in facts) and all(
            not all(world[b] for b in body) or world[h] == v for body, (h, v) in rules
        ):
            verdicts.add(world[query[0]] == query[1])
    assert verdicts, "inconsistent theory"
    return "True" if verdicts == {True} else "False" if verdicts == {False} else "Unknown"


def _rounds_to_derive(facts, rules, literal) -> int | None:
    known, level = set(facts), 0
    while literal not in known:
        positive = {a for a, v in known if v}
        new = {head for body, head in rules if set(body) <= positive} - known
        if not new:
            return None
        known |= new
        level += 1
    return level


def test_deduction_labels_match_truth_tables_and_depth():
    docs = generate("deduction", n=45, seed=21, split="test")
    for doc in docs:
        person, negated, attribute = _FACT.match(doc["question"].rstrip(".")).groups()
        query = (attribute, not negated)
        facts, rules = _parse_theory(doc["theory"], person)
        assert _truth_table_label(facts, rules, query) == doc["label"], doc
        ending = {"True": "is true.", "False": "is false.", "Unknown": "cannot be decided."}[doc["label"]]
        assert doc["reasoning"].endswith(ending)
        if doc["label"] != "Unknown":
            deciding = query if doc["label"] == "True" else (attribute, bool(negated))
            assert _rounds_to_derive(facts, rules, deciding) == doc["difficulty"], doc
            # The worked reasoning applies exactly the d rules of the proof, each one stated in the theory.
            assert doc["reasoning"].count(", so ") == doc["difficulty"]


# ----------------------------------------------------------------------- knights and knaves
def _claim(text: str, speaker: str, names: list[str]):
    """The statement as a function of {name: is knight}; 'I' is the speaker."""
    who = lambda word: speaker if word == "I" else word  # noqa: E731
    patterns = [
        (r"(\w+) is a knight", lambda w, x: w[x]),
        (r"(\w+) is a knave", lambda w, x: not w[x]),
        (r"(\w+) and (\w+) are both knights", lambda w, x, y: w[x] and w[y]),
        (r"(\w+) and (\w+) are both knaves", lambda w, x, y: not w[x] and not w[y]),
        (r"At least one of (\w+) or (\w+) is a knight", lambda w, x, y: w[x] or w[y]),
        (r"(\w+) and (\w+) are the same kind", lambda w, x, y: w[x] == w[y]),
        (r"(\w+) and (\w+) are different kinds", lambda w, x, y: w[x] != w[y]),
        (r"If (\w+) is a knight, then (?:I am|(\w+) is) a knave", lambda w, x, y: not w[x] or not w[y]),
    ]
    for pattern, meaning in patterns:
        if m := re.fullmatch(pattern + r"\.", text):
            args = [who(g) if g else speaker for g in m.groups()]
            assert all(a in names for a in args)
            return lambda world: meaning(world, *args)
    raise AssertionError(f"unparsed statement {text!r}")


def test_knights_and_knaves_have_one_solution_and_it_is_the_gold_option():
    for doc in generate("knights_knaves", n=30, seed=3, split="test"):
        names = doc["names"]
        claims = []
        for line in doc["statements"]:
            speaker, text = re.fullmatch(r'(\w+) says: "(.*)"', line).groups()
            claims.append((speaker, _claim(text, speaker, names)))
        solutions = []
        for values in itertools.product((True, False), repeat=len(names)):
            world = dict(zip(names, values))
            if all(claim(world) == world[speaker] for speaker, claim in claims):
                solutions.append(world)
        assert len(solutions) == 1, doc
        options = [dict(re.findall(r"(\w+) is a (knight|knave)", o)) for o in doc["options"]]
        as_text = [{n: k == "knight" for n, k in o.items()} for o in options]
        assert as_text.count(solutions[0]) == 1 and as_text.index(solutions[0]) == doc["label"]
        assert len(doc["options"]) == 4 and len(set(doc["options"])) == 4


# ---------------------------------------------------------------------- propositional logic
def _parse_formula(text: str):
    """Recursive descent over the rendered grammar: 'if A then B', 'A iff B', 'A and/or B', 'not A'."""
    tokens = re.findall(r"\(|\)|\w+", text)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take(expected=None):
        nonlocal pos
        token = tokens[pos]
        assert expected is None or token == expected, (text, token, expected)
        pos += 1
        return token

    def atom():
        if peek() == "(":
            take("(")
            inner = expression()
            take(")")
            return inner
        if peek() == "not":
            take()
            operand = atom()
            return lambda w: not operand(w)
        name = take()
        return lambda w: w[name]

    def expression():
        if peek() == "if":
            take()
            a = atom()
            take("then")
            b = atom()
            return lambda w: (not a(w)) or b(w)
        a = atom()
        op = peek()
        if op == "and":
            take()
            b = atom()
            return lambda w: a(w) and b(w)
        if op == "or":
            take()
            b = atom()
            return lambda w: a(w) or b(w)
        if op == "if":  # "A if and only if B"
            take(), take("and"), take("only"), take("if")
            b = atom()
            return lambda w: a(w) == b(w)
        return a

    result = expression()
    assert pos == len(tokens), f"trailing tokens in {text!r}"
    return result


def test_propositional_labels_match_truth_tables():
    for doc in generate("propositional", n=45, seed=8, split="test"):
        premises = [_parse_formula(p) for p in doc["premises"]]
        conclusion = _parse_formula(doc["conclusion"])
        variables = sorted(set(re.findall(r"\b[p-z]\b", " ".join(doc["premises"]))))
        assert len(variables) == doc["difficulty"] + 1
        rows = [dict(zip(variables, v)) for v in itertools.product((True, False), repeat=len(variables))]
        models = [w for w in rows if all(p(w) for p in premises)]
        assert models
        verdict = {conclusion(w) for w in models}
        assert {"True": {True}, "False": {False}, "Unknown": {True, False}}[doc["label"]] == verdict, doc


# ----------------------------------------------------------------------- tasks and prompts
@pytest.fixture(scope="module")
def catalog():
    return load_tasks()


@pytest.mark.parametrize("task_name", GENERATED_TASKS)
def test_each_generated_task_renders_every_variant(catalog, task_name):
    task = catalog[task_name]
    assert [p.name for p in task.prompts] == ["plain", "lettered", "cot"]
    assert task.prompt("cot").method == "generation" and task.prompt("cot").answer is not None
    splits = {name: load_split(task, name) for name in ("test", "train")}
    docs = splits["test"].docs
    assert len({d["difficulty"] for d in docs}) == len(GENERATORS[task.generated.generator].levels)
    for prompt in task.prompts:
        renderer = PromptRenderer(task, prompt)
        for shots in (0, 2):
            instances, _, _ = render_instances(task, renderer, lambda t, s: splits[s], shots=shots, seed=1,
                                         limit=6, sampler=None)
            for inst, doc in zip(instances, docs):
                assert 0 <= inst.gold < len(inst.answer_values or inst.continuations)
                assert "{{" not in inst.context and "{%" not in inst.context
                if prompt.name == "lettered":
                    assert inst.continuations[inst.gold].strip() == "ABCD"[inst.gold]
                if prompt.name == "plain" and doc.get("label") in ("True", "False", "Unknown", "Valid", "Invalid"):
                    assert inst.continuations[inst.gold] == " " + doc["label"]


class GoldForEvenDocs:
    """A scripted log-likelihood engine: the gold choice for even documents, the first choice otherwise."""

    def __init__(self, tokenizer, gold):
        self.tokenizer, self.gold = tokenizer, gold

    def describe(self):
        return {"engine": "scripted", "model_sha256": "0" * 64, "dtype": "none"}

    def loglikelihood(self, requests, progress=None):
        from evalsuite.engines import ContinuationScore

        best = [g if i % 2 == 0 else 0 for i, g in enumerate(self.gold)]
        return [tuple(ContinuationScore(-1.0 if k == b else -3.0, k == b, 1) for k in range(len(r.continuations)))
                for r, b in zip(requests, best)]

    def generate(self, requests, progress=None):
        raise AssertionError("not used")


def test_run_reports_accuracy_by_difficulty_and_the_data_seed(tmp_path):
    from tiny_models import byte_tokenizer

    from evalsuite.api import evaluate

    task = load_tasks()["gen_deduction"]
    docs = load_split(task, "test", data_seed=77).docs[:40]
    gold = [["True", "False", "Unknown"].index(d["label"]) for d in docs]
    run = evaluate("scripted", "gen_deduction", engine=GoldForEvenDocs(byte_tokenizer(), gold), limit=40,
                   data_seed=77, output=tmp_path, progress=False, n_boot=200)
    [ev] = run.record["evaluations"]
    assert run.record["config"]["data_seed"] == 77 and "seed=77" in ev["origin"]
    correct = [i % 2 == 0 or g == 0 for i, g in enumerate(gold)]
    by_level = ev["by_difficulty"]
    assert list(by_level) == ["1", "2", "3", "4", "5"]
    for level, row in by_level.items():
        mine = [c for c, d in zip(correct, docs) if d["difficulty"] == int(level)]
        assert row["n"] == len(mine) == 8
        assert row["accuracy"] == pytest.approx(sum(mine) / 8)
        assert row["low"] <= row["accuracy"] <= row["high"]
    assert ev["metrics"]["accuracy"]["value"] == pytest.approx(sum(correct) / 40)
    assert "unparseable_rate" not in ev["metrics"]  # only generation prompts add it
    samples = [json.loads(line) for line in (run.path / "samples.jsonl").read_text().splitlines()]
    assert [s["difficulty"] for s in samples] == [d["difficulty"] for d in docs]  # read by the report's plot


def test_data_seed_replaces_the_task_seed(catalog):
    task = catalog["gen_deduction"]
    own = load_split(task, "test")
    fresh = load_split(task, "test", data_seed=42)
    again = load_split(task, "test", data_seed=42)
    assert own.origin == "generated:deduction:test:seed=1234:n=500" and "seed=42" in fresh.origin
    assert fresh.docs == again.docs and fresh.sha256 == again.sha256 != own.sha256
    assert len(fresh.docs) == 500
    # The same data seed still gives different items in the few-shot split.
    fewshot = load_split(task, "train", data_seed=42)
    assert not {d["theory"] for d in fewshot.docs} & {d["theory"] for d in fresh.docs}


def test_a_generated_split_is_made_afresh_on_each_pass_with_the_hash_of_its_list(catalog):
    split = load_split(catalog["gen_knights_knaves"], "test", data_seed=5)
    docs = generate("knights_knaves", n=450, seed=5, split="test", levels=[2, 3, 4])
    assert isinstance(split.docs, GeneratedDocs) and len(split.docs) == 450
    assert list(split.docs) == docs and list(split.docs) == docs and split.docs == docs
    assert split.sha256 == content_hash(docs)
    assert split.docs[7] == docs[7] and split.docs[-1] == docs[-1]
    assert split.docs[3:40:3] == docs[3:40:3] and split.docs[:5] == docs[:5] and split.docs[::-2] == docs[::-2]
    with pytest.raises(IndexError):
        split.docs[450]


def _task_file(tmp_path, source: str) -> str:
    path = tmp_path / "t.yaml"
    path.write_text(f"""name: t
category: logical
source:
{source}
splits: {{eval: test}}
choices: '["True", "False", "Unknown"]'
target: label
prompts: [plain]
metrics: [accuracy]
""")
    prompts = tmp_path / "prompts" / "t"
    prompts.mkdir(parents=True, exist_ok=True)
    (prompts / "plain.jinja").write_text("{{ theory }}")
    return path


@pytest.mark.parametrize("source, message", [
    ("  generated: {generator: nope, splits: {test: {n: 5, seed: 1}}}", "unknown generator 'nope'"),
    ("  generated: {generator: deduction, params: {depth: 3}, splits: {test: {n: 5, seed: 1}}}",
     "source.generated.params.depth': unknown parameter"),
    ("  generated: {generator: deduction, params: {levels: [9]}, splits: {test: {n: 5, seed: 1}}}",
     "supports levels"),
])
def test_generated_source_errors_name_the_field(tmp_path, source, message):
    task = load_task(_task_file(tmp_path, source), [tmp_path / "prompts"])
    with pytest.raises(SpecError, match=re.escape(message)):
        load_split(task, "test")


@pytest.mark.parametrize("source, message", [
    ("  generated: {generator: deduction, splits: {test: {n: 0, seed: 1}}}", "must be at least 1"),
    ("  generated: {generator: deduction, splits: {test: {n: 5}}}", "source.generated.splits.test.seed': is required"),
    ("  generated: {generator: deduction, splits: {test: {n: 5, seed: 1}}}\n  hub: {path: x, splits: {test: test}}",
     "cannot be combined"),
    ("  generated: {generator: deduction, splits: {dev: {n: 5, seed: 1}}}", "not defined under source.generated"),
])
def test_generated_spec_errors(tmp_path, source, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        load_task(_task_file(tmp_path, source), [tmp_path / "prompts"])



def test_show_renders_the_items_of_a_data_seed(catalog, capsys):
    from evalsuite import cli

    def shown(data_seed: int) -> str:
        assert cli.main(["show", "gen_syllogisms", "--prompt", "plain", "--data-seed", str(data_seed)]) == 0
        return capsys.readouterr().out

    first = next(iter(load_split(catalog["gen_syllogisms"], "test", data_seed=5).docs))
    assert shown(5) == shown(5) != shown(6)
    assert first["premises"][0] in shown(5)
