"""Rendering built-in tasks on real documents, few-shot selection, and the template sandbox."""

from __future__ import annotations

import random
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from evalsuite.api import load_tasks
from evalsuite.pipeline.render import render_instances
from evalsuite.data import Split, load_split
from evalsuite.errors import TemplateError
from evalsuite.prompting import ChatFormat, FewshotSampler, Message, PromptRenderer
from evalsuite.spec import load_task

CATALOG = load_tasks()
# Tasks with raw files in the data folder; hub-only tasks are rendered in test_task_library.py.
PAIRS = [(name, prompt.name) for name, task in sorted(CATALOG.items()) if task.local for prompt in task.prompts]


@lru_cache(maxsize=None)
def _split(task_name: str, split: str, data_dir: Path) -> Split:
    return load_split(CATALOG[task_name], split, data_dir)


def split_loader(data_dir: Path):
    return lambda task, split: _split(task.name, split, data_dir)


def test_the_built_in_catalog_is_complete():
    assert len(CATALOG) >= 8
    assert {"copa", "piqa", "commonsenseqa", "folio", "logiqa", "rte", "mrpc", "sick_entailment"} <= set(CATALOG)
    assert all(len(t.prompts) >= 2 for t in CATALOG.values())


# --- every built-in task x every variant on real documents -----------------------------------------------


@pytest.mark.parametrize("task_name, variant", PAIRS, ids=[f"{t}-{v}" for t, v in PAIRS])
def test_built_in_prompt_renders_real_documents(task_name, variant, data_dir):
    task = CATALOG[task_name]
    prompt = task.prompt(variant)
    renderer = PromptRenderer(task, prompt)
    docs = _split(task_name, task.eval_split, data_dir).docs[:3]
    assert len(docs) == 3
    for doc_id, doc in enumerate(docs):
        inst = renderer.render(doc, doc_id)
        assert inst.doc_id == doc_id and inst.fewshot_ids == ()
        assert inst.context.strip() and "{{" not in inst.context and "{%" not in inst.context
        if prompt.target_delimiter:  # the delimiter belongs to the continuation
            assert not inst.context.endswith(prompt.target_delimiter)
        if prompt.method == "loglikelihood":
            assert len(inst.continuations) >= 2
            for continuation in inst.continuations:
                assert continuation.startswith(prompt.target_delimiter)
                assert continuation[len(prompt.target_delimiter):].strip(), f"empty answer in {inst.continuations}"
            assert 0 <= inst.gold < len(inst.continuations)
            assert inst.continuations[inst.gold] == prompt.target_delimiter + inst.gold_text
            assert len(set(inst.continuations)) == len(inst.continuations)
        assert len(inst.answer_values) == len(inst.continuations)
        # the same document renders the same way twice
        assert renderer.render(doc, doc_id) == inst


def test_lettered_variants_score_letters(data_dir):
    for name, task in CATALOG.items():
        if "lettered" not in {p.name for p in task.prompts} or not task.local:
            continue
        renderer = PromptRenderer(task, task.prompt("lettered"))
        doc = _split(name, task.eval_split, data_dir).docs[0]
        inst = renderer.render(doc, 0)
        letters = [c.strip() for c in inst.continuations]
        assert letters == [chr(ord("A") + i) for i in range(len(letters))], name
        for letter in letters:
            assert f"\n{letter}. " in inst.context or f"\n{letter}) " in inst.context, (name, letter)


def test_gold_follows_the_document_label(data_dir):
    """COPA's gold answer is the choice its label names, for both labels."""
    task = CATALOG["copa"]
    renderer = PromptRenderer(task, task.prompt("lettered"))
    docs = _split("copa", task.eval_split, data_dir).docs
    golds = {renderer.render(doc, i).gold for i, doc in enumerate(docs[:30])}
    assert golds == {0, 1}
    for i, doc in enumerate(docs[:30]):
        assert renderer.render(doc, i).gold == doc["label"]


# --- few-shot rendering ----------------------------------------------------------------------------------


def few_shot(task_name: str, data_dir: Path, *, shots=3, seed=0, limit=12, sampler=None, variant=None):
    task = CATALOG[task_name]
    renderer = PromptRenderer(task, task.prompt(variant) if variant else task.prompts[0])
    instances, evaluated, pool = render_instances(task, renderer, split_loader(data_dir), shots=shots, seed=seed,
                                            limit=limit, sampler=sampler)
    return task, renderer, instances, evaluated, pool


@pytest.mark.parametrize("sampler", ["first", "random"])
def test_evaluated_document_is_never_its_own_example(data_dir, sampler):
    task, renderer, instances, evaluated, pool = few_shot("piqa", data_dir, shots=5, limit=20, sampler=sampler)
    assert task.fewshot_split == task.eval_split and pool is evaluated
    for inst in instances:
        assert len(inst.fewshot_ids) == 5 and len(set(inst.fewshot_ids)) == 5
        assert inst.doc_id not in inst.fewshot_ids
        own = renderer.context_of(evaluated.docs[inst.doc_id], inst.doc_id)
        examples = inst.context[: -len(own)]
        assert inst.context.endswith(own) and own not in examples
    if sampler == "first":  # the first five, skipping the document itself
        assert instances[2].fewshot_ids == (0, 1, 3, 4, 5)
        assert instances[10].fewshot_ids == (0, 1, 2, 3, 4)


@pytest.mark.parametrize("task_name", ["copa", "folio", "rte"])
def test_examples_are_joined_by_the_separator(data_dir, task_name):
    task, renderer, instances, evaluated, pool = few_shot(task_name, data_dir, shots=3, limit=5)
    sep = renderer.prompt.fewshot_separator
    assert sep == "\n\n"
    for inst in instances:
        parts = [renderer.example(pool.docs[j], j) for j in inst.fewshot_ids]
        own = renderer.context_of(evaluated.docs[inst.doc_id], inst.doc_id)
        assert inst.context == sep.join(parts + [own])
        for j, part in zip(inst.fewshot_ids, parts):
            example = renderer.render(pool.docs[j], j)
            # an example is its context, the delimiter and its gold answer
            assert part == example.context + example.continuations[example.gold]
        assert inst.context.count(sep) >= len(parts)


# --- conversations --------------------------------------------------------------------------------------


@pytest.mark.parametrize("task_name, variant", [("copa", "plain"), ("gen_deduction", "cot")])
def test_a_document_is_also_a_conversation(data_dir, task_name, variant):
    """One user turn holding the plain text, or with examples as turns: the user turns are the examples' and the
    document's prompts, the assistant turns their gold answers, and the plain text is their concatenation."""
    task, renderer, instances, evaluated, pool = few_shot(task_name, data_dir, shots=3, limit=4, variant=variant)
    prompt = renderer.prompt
    turns = PromptRenderer(task, prompt, ChatFormat(system="Be brief.", multiturn=True))
    for inst in instances:
        assert inst.messages == (Message("user", inst.context),)  # the default: the whole prompt, one turn
        doc = evaluated.docs[inst.doc_id]
        conversation = turns.render(doc, inst.doc_id, [(j, pool.docs[j]) for j in inst.fewshot_ids])
        assert conversation.context == inst.context  # the plain text does not change
        system, *pairs, question = conversation.messages
        assert system == Message("system", "Be brief.")
        assert question == Message("user", renderer.context_of(doc, inst.doc_id))
        assert [m.role for m in pairs] == ["user", "assistant"] * 3
        shots = [(pairs[k].content, pairs[k + 1].content) for k in range(0, len(pairs), 2)]
        assert shots == [renderer.example_turns(pool.docs[j], j) for j in inst.fewshot_ids]
        joined = [user + prompt.target_delimiter + answer for user, answer in shots] + [question.content]
        assert prompt.fewshot_separator.join(joined) == inst.context
    system_only = PromptRenderer(task, prompt, ChatFormat(system="")).render(evaluated.docs[0], 0)
    assert system_only.messages == (Message("system", ""), Message("user", system_only.context))


def test_a_preamble_opens_the_first_user_turn(tmp_path):
    renderer = renderer_for(tmp_path, '{#- \npreamble: "Pick one."\n-#}\nQuestion: {{ question }}')
    task, prompt = renderer.task, renderer.prompt
    turns = PromptRenderer(task, prompt, ChatFormat(multiturn=True))
    examples = [(7, {**DOC, "question": "Before?"})]
    assert turns.render(DOC, 0, examples).messages == (
        Message("user", "Pick one.\n\nQuestion: Before?"), Message("assistant", "first"),
        Message("user", "Question: Which?"))
    assert turns.render(DOC, 0).messages == (Message("user", "Pick one.\n\nQuestion: Which?"),)
    assert renderer.render(DOC, 0, examples).context == "Pick one.\n\nQuestion: Before? first\n\nQuestion: Which?"


def test_same_seed_gives_identical_prompts(data_dir):
    first = few_shot("copa", data_dir, seed=5)[2]
    second = few_shot("copa", data_dir, seed=5)[2]
    assert [i.context for i in first] == [i.context for i in second]
    assert [i.fewshot_ids for i in first] == [i.fewshot_ids for i in second]


def test_different_seed_gives_different_examples(data_dir):
    a = few_shot("copa", data_dir, seed=0)[2]
    b = few_shot("copa", data_dir, seed=1)[2]
    differing = [x.fewshot_ids != y.fewshot_ids for x, y in zip(a, b)]
    assert all(differing)
    assert all(x.context != y.context for x, y in zip(a, b))


def test_examples_differ_between_documents(data_dir):
    instances = few_shot("copa", data_dir, seed=0, limit=10)[2]
    assert len({i.fewshot_ids for i in instances}) == 10


def test_balanced_task_sampler_balances_labels(data_dir):
    task, renderer, instances, _, pool = few_shot("folio", data_dir, shots=6, limit=10)
    assert task.fewshot_sampler == "balanced" and len(task.labels) == 3
    for inst in instances:
        labels = Counter(renderer.render(pool.docs[j], j).gold for j in inst.fewshot_ids)
        assert set(labels) == {0, 1, 2}
        assert max(labels.values()) - min(labels.values()) <= 1


def test_limit_does_not_change_the_examples(data_dir):
    """Selection is per document: evaluating fewer documents leaves the others' examples unchanged."""
    few = few_shot("copa", data_dir, limit=4)[2]
    many = few_shot("copa", data_dir, limit=12)[2]
    assert [i.context for i in few] == [i.context for i in many[:4]]


# --- the sampler itself ----------------------------------------------------------------------------------


def test_first_sampler():
    sampler = FewshotSampler(range(10), k=3, method="first")
    assert sampler.select(0) == [0, 1, 2] and sampler.select(7) == [0, 1, 2]
    same = FewshotSampler(range(10), k=3, method="first", same_split=True)
    assert same.select(1) == [0, 2, 3] and same.select(5) == [0, 1, 2]


def test_random_sampler_is_seeded():
    pool = range(100)
    a = FewshotSampler(pool, k=5, method="random", seed=1, salt="copa")
    b = FewshotSampler(pool, k=5, method="random", seed=1, salt="copa")
    c = FewshotSampler(pool, k=5, method="random", seed=2, salt="copa")
    d = FewshotSampler(pool, k=5, method="random", seed=1, salt="piqa")
    for doc in range(20):
        picks = a.select(doc)
        assert len(picks) == 5 and len(set(picks)) == 5 and all(0 <= p < 100 for p in picks)
        assert picks == b.select(doc)
    assert [a.select(i) for i in range(20)] != [c.select(i) for i in range(20)]
    assert [a.select(i) for i in range(20)] != [d.select(i) for i in range(20)]
    assert len({tuple(a.select(i)) for i in range(20)}) == 20  # each document gets its own draw


def test_random_sampler_known_values():
    """Pinned output: the selection must not change across Python versions, platforms or hash seeds."""
    sampler = FewshotSampler(range(50), k=4, method="random", seed=0, salt="t")
    expected = random.Random("0:t:3").sample(range(50), 4)
    assert sampler.select(3) == expected


@pytest.mark.parametrize("k", [3, 6, 7, 9])
def test_balanced_sampler_counts(k):
    labels = [0, 1, 2] * 10
    rng = random.Random(4)
    rng.shuffle(labels)
    sampler = FewshotSampler(range(30), k=k, method="balanced", seed=3, labels=labels)
    for doc in range(15):
        picks = sampler.select(doc)
        assert len(picks) == k and len(set(picks)) == k
        counts = Counter(labels[p] for p in picks)
        if k >= 3:
            assert set(counts) == {0, 1, 2}
        assert max(counts.values()) - min(counts.values()) <= 1
        if k == 6:
            assert counts == {0: 2, 1: 2, 2: 2}


def test_balanced_sampler_with_a_scarce_label_still_returns_k():
    labels = [0] * 20 + [1]
    sampler = FewshotSampler(range(21), k=6, method="balanced", labels=labels)
    picks = sampler.select(0)
    assert len(picks) == 6 and len(set(picks)) == 6 and 20 in picks


def test_balanced_sampler_excludes_the_document_in_the_same_split():
    labels = [0, 1] * 4
    sampler = FewshotSampler(range(8), k=7, method="balanced", labels=labels, same_split=True)
    for doc in range(8):
        picks = sampler.select(doc)
        assert sorted(picks) == [i for i in range(8) if i != doc]


@pytest.mark.parametrize("method", ["random", "first", "balanced"])
def test_selection_does_not_depend_on_request_order(method):
    labels = [i % 3 for i in range(40)]
    make = lambda: FewshotSampler(range(40), k=4, method=method, seed=9, salt="x", labels=labels, same_split=True)
    forward = make()
    in_order = {doc: forward.select(doc) for doc in range(40)}
    backward = make()
    shuffled = list(range(40))
    random.Random(0).shuffle(shuffled)
    in_shuffle = {doc: backward.select(doc) for doc in shuffled}
    assert in_order == in_shuffle
    # and asking twice does not change an answer
    assert all(backward.select(doc) == in_order[doc] for doc in reversed(range(40)))


def test_sampler_rejects_bad_setups():
    with pytest.raises(ValueError, match="unknown few-shot sampler"):
        FewshotSampler(range(5), k=2, method="stratified")
    with pytest.raises(ValueError, match="needs the pool's labels"):
        FewshotSampler(range(5), k=2, method="balanced")
    with pytest.raises(ValueError, match="fewer than k=5"):
        FewshotSampler(range(5), k=5, same_split=True).select(0)
    assert FewshotSampler(range(5), k=0).select(0) == []


# --- the sandbox -----------------------------------------------------------------------------------------

TOY_TASK = """\
name: toy
category: logical
source: {local: {format: copa_xml, splits: {eval: toy.xml}}}
splits: {eval: eval}
choices: "[a, b]"
target: label
prompts: [evil]
metrics: [accuracy]
"""
DOC = {"question": "Which?", "a": "first", "b": "second", "label": 0}


def renderer_for(tmp_path: Path, template: str, task_text: str = TOY_TASK) -> PromptRenderer:
    (tmp_path / "prompts" / "toy").mkdir(parents=True, exist_ok=True)
    (tmp_path / "prompts" / "toy" / "evil.jinja").write_text(template, encoding="utf-8")
    (tmp_path / "toy.yaml").write_text(task_text, encoding="utf-8")
    task = load_task(tmp_path / "toy.yaml", [tmp_path / "prompts"])
    return PromptRenderer(task, task.prompts[0])


ESCAPES = [
    ("{{ ''.__class__.__mro__ }}", "forbidden by the template sandbox"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "forbidden by the template sandbox"),
    ("{{ cycler.__init__.__globals__ }}", "forbidden by the template sandbox"),
    ("{{ joiner.__init__.__globals__.os }}", "forbidden by the template sandbox"),
    ("{{ lipsum.__globals__ }}", "forbidden by the template sandbox"),
    ("{{ lipsum.__globals__['os'].popen('id').read() }}", "forbidden by the template sandbox"),
    ("{{ namespace.__init__.__globals__ }}", "forbidden by the template sandbox"),
    ("{{ self._TemplateReference__context }}", "forbidden by the template sandbox"),
    ("{{ question.__class__.__base__.__subclasses__() }}", "forbidden by the template sandbox"),
    ("{{ letters.__class__ }}", "forbidden by the template sandbox"),
    ("{{ zip.__init__.__globals__ }}", "forbidden by the template sandbox"),
    ("{{ question.format.__globals__ }}", "forbidden by the template sandbox"),
    ("{% set xs = [1] %}{{ xs.append(2) }}", "forbidden by the template sandbox"),
    ("{{ config }}", "'config' is undefined"),
    ("{{ config.__class__.__init__.__globals__ }}", "forbidden by the template sandbox"),
    ("{{ request.application.__globals__ }}", "'request' is undefined"),
    ("{{ range(10 ** 9) | length }}", "Range too big"),
]


@pytest.mark.parametrize("template, expected", ESCAPES, ids=[t for t, _ in ESCAPES])
def test_sandbox_refuses_python_internals(tmp_path, template, expected):
    renderer = renderer_for(tmp_path, "{#- description: x -#}\nQuestion: {{ question }}\n" + template)
    with pytest.raises(TemplateError) as info:
        renderer.render(DOC, 0)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'prompts' / 'toy' / 'evil.jinja'}: line 3:")
    assert expected in message
    assert "Traceback" not in message


@pytest.mark.parametrize("expression", ["''.__class__.__mro__", "cycler.__init__.__globals__", "a.__class__"])
def test_sandbox_covers_task_expressions(tmp_path, expression):
    renderer = renderer_for(tmp_path, "Question: {{ question }}", TOY_TASK.replace('"[a, b]"', f'"{expression}"'))
    with pytest.raises(TemplateError) as info:
        renderer.render(DOC, 0)
    message = str(info.value)
    assert str(tmp_path / "toy.yaml") in message and "field 'choices'" in message
    assert "forbidden by the template sandbox" in message


def test_sandbox_still_allows_ordinary_templates(tmp_path):
    template = (
        "{% for x in [a, b] %}{{ letters[loop.index0] }}. {{ x | upper }}\n{% endfor %}"
        "{{ range(3) | list }} {{ len(question) }} {% for i, x in enumerate([a]) %}{{ i }}{{ x }}{% endfor %}"
    )
    inst = renderer_for(tmp_path, template).render(DOC, 0)
    assert inst.context == "A. FIRST\nB. SECOND\n[0, 1, 2] 6 0first"


def test_document_fields_cannot_inject_template_code(tmp_path):
    doc = {**DOC, "question": "{{ ''.__class__ }} {% if true %}x{% endif %}"}
    inst = renderer_for(tmp_path, "Q: {{ question }}").render(doc, 0)
    assert inst.context == "Q: {{ ''.__class__ }} {% if true %}x{% endif %}"


def test_fixed_sampler_shares_examples_and_never_uses_the_document_itself():
    from evalsuite.prompting import FewshotSampler

    sampler = FewshotSampler(range(20), k=4, method="fixed", seed=3, salt="t", same_split=True)
    picks = {doc: sampler.select(doc) for doc in range(20)}
    common = picks[19]
    assert len(set(common)) == 4
    for doc, pick in picks.items():
        assert doc not in pick and len(pick) == 4
        if doc not in common:
            assert pick == common
    assert FewshotSampler(range(20), k=4, method="fixed", seed=4, salt="t").select(0) != common
