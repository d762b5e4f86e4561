"""Multi-step deduction over facts and rules: is a statement True, False or Unknown?

A theory of facts ("Anne is big.", "Bob is not kind.") and rules ("If someone is big and round then they
are red.", "All red people are not cold.") about two or three people, in the style of ProofWriter. At level
``d`` the answer takes exactly ``d`` rule applications: a hidden chain of ``d`` rules leads from a fact to
the statement (or its negation); for Unknown the chain is broken at one link (a missing fact or side
condition). Distractor facts and rules about the same attributes and people are mixed in, and every
sentence is shuffled. Each item carries its ``reasoning`` (the proof, or why the chain is broken), used as
the worked example of few-shot chain-of-thought prompts.

Labels are classical entailment, checked per person (rules say "someone", so people never interact):
the theory is Horn (positive bodies; a head may be negative), so "X is a" is entailed exactly when ``a`` is
in the least model, and "X is not a" exactly when adding "X is a" makes the theory inconsistent. An item is
kept only when the theory is consistent, forward chaining (apply rules to known facts, no contraposition)
gives the same label, and the deciding literal is first derived after exactly ``d`` rounds — so a reader
who chains forward and one who reasons classically get the same answer, at the stated depth.
"""

from __future__ import annotations

import random
from typing import Any

NAME = "deduction"
LEVELS = (1, 2, 3, 4, 5)
LABELS = ("True", "False", "Unknown")
DESCRIPTION = "Facts and rules about people; is a statement True, False or Unknown after d rule applications?"
PEOPLE = ("Anne", "Bob", "Charlie", "Dave", "Erin", "Fiona", "Gary", "Harry")
ATTRIBUTES = (
    "big", "blue", "cold", "furry", "green", "kind", "nice", "quiet", "red", "rough", "round", "smart",
    "white", "young", "calm", "quick", "tall", "wise",
)
N_DISTRACTOR_FACTS = 3
N_DISTRACTOR_RULES = 3

Literal = tuple[str, bool]  # (attribute, positive)
Rule = tuple[tuple[str, ...], Literal]  # (body attributes, all positive; head literal)
Fact = tuple[str, str, bool]  # (person, attribute, positive)


def fact_sentence(fact: Fact) -> str:
    person, attribute, positive = fact
    return f"{person} is {attribute}." if positive else f"{person} is not {attribute}."


def rule_sentence(rule: Rule, style: int) -> str:
    body, (head, positive) = rule
    then = head if positive else f"not {head}"
    if style == 0:
        return f"If someone is {' and '.join(body)} then they are {then}."
    return f"All {', '.join(body)} people are {then}."


def closure(facts: set[Literal], rules: list[Rule]) -> dict[Literal, int]:
    """Forward chaining: every derivable literal and the round it is first derived in (facts: 0)."""
    known = {literal: 0 for literal in facts}
    round_ = 0
    while True:
        round_ += 1
        positive = {a for (a, p) in known if p}
        new = {head for body, head in rules if head not in known and all(b in positive for b in body)}
        if not new:
            return known
        known.update((literal, round_) for literal in new)


def consistent(facts: set[Literal], rules: list[Rule]) -> bool:
    """A Horn theory is consistent when its least model violates no negative fact or negative-head rule."""
    known = closure({f for f in facts if f[1]}, [r for r in rules if r[1][1]])
    model = {a for (a, _) in known}
    negatives = [a for (a, p) in facts if not p] + [h for body, (h, p) in rules if not p and set(body) <= model]
    return not any(a in model for a in negatives)


def entailed(facts: set[Literal], rules: list[Rule], query: Literal) -> bool:
    """Classical entailment for a consistent Horn theory (see the module docstring)."""
    attribute, positive = query
    if positive:
        return (attribute, True) in closure({f for f in facts if f[1]}, [r for r in rules if r[1][1]])
    return not consistent(facts | {(attribute, True)}, rules)


def label_of(facts: set[Literal], rules: list[Rule], query: Literal) -> str:
    if entailed(facts, rules, query):
        return "True"
    if entailed(facts, rules, (query[0], not query[1])):
        return "False"
    return "Unknown"


def make(rng: random.Random, level: int, slot: int) -> dict[str, Any]:
    label = LABELS[slot % 3]
    while True:
        item = _draw(rng, level, label)
        if item is not None:
            return item


def _draw(rng: random.Random, depth: int, label: str) -> dict[str, Any] | None:
    people = rng.sample(PEOPLE, 3)
    subject, other = people[0], people[1]
    attributes = list(ATTRIBUTES)
    rng.shuffle(attributes)
    chain, spare = attributes[: depth + 1], attributes[depth + 1 :]
    facts: list[Fact] = [(subject, chain[0], True)]
    rules: list[Rule] = []
    side: list[int] = []  # links with a side condition ("... and round ...")
    for i in range(depth):
        body: tuple[str, ...] = (chain[i],)
        if rng.random() < 0.35 and spare:
            condition = spare.pop()
            body = tuple(rng.sample([chain[i], condition], 2))
            facts.append((subject, condition, True))
            side.append(i)
        rules.append((body, (chain[i + 1], True)))
    negate_head = rng.random() < 0.5  # the last rule concludes "not a_d"
    if negate_head:
        rules[-1] = (rules[-1][0], (chain[-1], False))
    if label == "Unknown":  # break one link: drop the chain's first fact or a side condition
        broken = rng.choice(["start", *(f"side{i}" for i in side)])
        drop = chain[0] if broken == "start" else next(c for c in rules[int(broken[4:])][0] if c != chain[int(broken[4:])])
        facts = [f for f in facts if f[1] != drop]
        facts.append((other, drop, True))  # the broken fact still appears, about someone else
        query = (chain[-1], rng.random() < 0.5)
    else:
        # True: query the chain's conclusion as derived; False: query its negation.
        derived = (chain[-1], not negate_head)
        query = derived if label == "True" else (derived[0], not derived[1])

    # Distractors: facts about everyone (spare attributes, or chain attributes for other people), and rules
    # over the same vocabulary whose bodies the subject does not satisfy or whose heads are irrelevant.
    vocabulary = chain + spare[:4]
    for _ in range(N_DISTRACTOR_FACTS):
        person = rng.choice(people)
        facts.append((person, rng.choice(vocabulary), rng.random() < 0.7))
    for _ in range(N_DISTRACTOR_RULES):
        body = tuple(rng.sample(vocabulary, rng.choice((1, 1, 2))))
        head = rng.choice([a for a in vocabulary if a not in body])
        rules.append((body, (head, rng.random() < 0.7)))

    facts = list(dict.fromkeys(facts))
    rules = list(dict.fromkeys(rules))
    if len({(p, a) for p, a, _ in facts}) != len(facts):
        return None  # a fact and its negation about the same person
    if not _accepted(facts, rules, subject, query, label, depth):
        return None
    said = {rule: rule_sentence(rule, rng.randrange(2)) for rule in rules}
    sentences = [fact_sentence(f) for f in facts] + list(said.values())
    rng.shuffle(sentences)
    question = fact_sentence((subject, *query))
    if label == "Unknown":
        missing = fact_sentence((subject, drop, True))
        reasoning = (f"The chain of rules that leads to the statement needs that {missing[:-1]}, but nothing says "
                     "so, and no other fact or rule decides the statement. So it cannot be decided.")
    else:
        steps = [f"{subject} is {chain[0]}."]
        for rule in rules[:depth]:
            body, (head, positive) = rule
            steps.append(f"{said[rule]} {subject} is {' and '.join(body)}, so {fact_sentence((subject, head, positive))}")
        verdict = "true" if label == "True" else "false"
        steps.append(f"So the statement \"{question}\" is {verdict}.")
        reasoning = " ".join(steps)
    return {"theory": " ".join(sentences), "question": question, "label": label, "reasoning": reasoning}


def _accepted(facts: list[Fact], rules: list[Rule], subject: str, query: Literal, label: str, depth: int) -> bool:
    for person in {p for p, _, _ in facts}:
        if not consistent({(a, v) for p, a, v in facts if p == person}, rules):
            return False
    mine = {(a, v) for p, a, v in facts if p == subject}
    if label_of(mine, rules, query) != label:
        return False
    known = closure(mine, rules)  # forward chaining, negative heads included, no contraposition
    if label == "Unknown":
        return query not in known and (query[0], not query[1]) not in known
    deciding = query if label == "True" else (query[0], not query[1])
    return known.get(deciding) == depth


def key(doc: dict[str, Any]) -> str:
    return doc["theory"] + " ? " + doc["question"]
