"""Answer extraction on hostile model outputs, with the rules the shipped chain-of-thought prompts state."""

from __future__ import annotations

import functools

import pytest

from evalsuite.api import load_tasks
from evalsuite.scoring import Thinking, answer_index, clean_generation, extract_answer, normalise, split_thinking


@functools.cache
def _rule(task: str) -> str:
    return load_tasks()[task].prompt("cot").answer.pattern


WORDS = ["True", "False", "Unknown"]
LETTERS = ["A", "B", "C", "D"]

# (model output, expected answer index; -1 = unparseable)
WORD_CASES = [
    ("Anne is big, so Anne is red.\nAnswer: True", 0),
    ("answer: false.", 1),  # lower case, trailing punctuation
    ("ANSWER IS UNKNOWN!", 2),
    ("The answer is **Unknown**.", 2),  # markdown bold
    ("**Answer:** False", 1),
    ("__Answer__: `true`", 0),  # other markdown marks
    ("ＡＮＳＷＥＲ：ＴＲＵＥ", 0),  # full-width letters and colon (NFKC)
    ('Answer: "False"', 1),
    ("Answer: (Unknown)", 2),
    ("Answer: \\boxed{False}", 1),
    # several answers: the last "answer" wins
    ("First I thought the answer is True. But rule 3 says otherwise. Answer: False", 1),
    ("Answer: True\nWait, re-reading the rules, the answer is Unknown.", 2),
    # an answer mentioned inside the reasoning, then a final one
    ("If the answer were False, Bob would be red. He is not, so the answer is not False. Answer: True", 0),
    # the final answer names several: unparseable, not the earlier one
    ("The answer is True. Hmm. Answer: True or Unknown", -1),
    ("Answer: True/False", -1),
    ("Answer: (True) or (False)", -1),
    ("Answer: True, because Anne is red.", 0),  # a comma before an explanation is not a hedge
    # none
    ("", -1),
    ("Anne is red. True.", -1),  # no "answer" marker: nothing is guessed
    ("The answer is not clear from the rules.", -1),
    ("Answer: maybe", -1),
    ("Answers vary. True", -1),
]


@pytest.mark.parametrize("text, expected", WORD_CASES)
def test_word_answers(text, expected):
    pattern = _rule("gen_deduction")
    assert answer_index(extract_answer(text, pattern), WORDS) == expected


LETTER_CASES = [
    ("Answer: B", 1),
    ("answer: b", 1),  # a lone lower-case letter
    ("answer: c.", 2),
    ("The answer is (Ｂ).", 1),  # full-width letter in brackets
    ("答え Answer：（Ｃ）", 2),
    ("Answer: **D**", 3),
    ("Answer: [A]", 0),
    ("Answer: A, since Alice lies.", 0),
    ("So the answer is A.\nChecking again: the answer is D", 3),
    # lower-case 'a' as an article is never an answer
    ("The answer is a knave configuration. Answer: C", 2),
    ("The answer is a knave configuration.", -1),
    ("Answer: And so Alice is a knight", -1),
    # hedges in the final answer
    ("Answer: A or B", -1),
    ("Answer: a/b", -1),
    ("Answer: C and D", -1),
    ("The answer is B. Final answer: B or C", -1),
    ("No idea.", -1),
    ("Answer: E", -1),  # not an option
]


@pytest.mark.parametrize("text, expected", LETTER_CASES)
def test_letter_answers(text, expected):
    pattern = _rule("gen_knights_knaves")
    assert answer_index(extract_answer(text, pattern), LETTERS) == expected


@pytest.mark.parametrize("text, expected", [
    ("Answer: Invalid", 1), ("answer: valid.", 0), ("The answer is INVALID", 1),
    ("Answer: valid or invalid", -1), ("It is not valid. Answer: Invalid", 1), ("Valid.", -1),
])
def test_valid_invalid_answers(text, expected):
    assert answer_index(extract_answer(text, _rule("gen_syllogisms")), ["Valid", "Invalid"]) == expected


def test_every_generated_cot_prompt_reads_its_own_fewshot_answer_line():
    """The few-shot target of each CoT prompt ("Answer: X") is read back as X by the prompt's own rule."""
    for name in ("gen_deduction", "gen_propositional", "gen_syllogisms", "gen_knights_knaves"):
        pattern = _rule(name)
        values = LETTERS if name == "gen_knights_knaves" else (
            ["Valid", "Invalid"] if name == "gen_syllogisms" else WORDS)
        for k, value in enumerate(values):
            assert answer_index(extract_answer(f"...\nAnswer: {value}", pattern), values) == k


def test_extract_answer_rules():
    assert extract_answer("x=1, x=2", r"x=(\d)") == "2"  # last match
    assert extract_answer("nothing", r"x=(\d)") is None
    assert extract_answer("ANSWER 7", r"ANSWER \d") == "ANSWER 7"  # no group: the whole match
    assert extract_answer("b: 5", r"a: (\d)|b: (\d)") == "5"  # the group that took part
    assert clean_generation("**（Ａ）** `x` \\text{y} snake_case") == "(A) x y snake_case"


@pytest.mark.parametrize("answer, values, expected", [
    ("(B).", ["A", "B"], 1),
    ("ｂ", ["A", "B"], 1),
    ("  TRUE ", ["True", "False"], 0),
    (None, ["A"], -1),
    ("C", ["A", "B"], -1),
    ("a", ["A", "a"], -1),  # ambiguous after normalising
])
def test_answer_index(answer, values, expected):
    assert answer_index(answer, values) == expected


def test_normalise():
    assert normalise("  «Ｔｒｕｅ».") == "«true»"  # only ASCII punctuation is stripped
    assert normalise("(B).") == "b"


# --- thinking models ------------------------------------------------------------------------------------

TAGS = ("<think>", "</think>")
# (text, options, expected split): the answer is what the rule reads; None = the thinking never closed.
THINKING_CASES = [
    ("Answer: True", {}, Thinking("", "Answer: True")),  # no thinking at all
    ("<think>maybe Answer: False</think>\nAnswer: True", {}, Thinking("maybe Answer: False", "\nAnswer: True")),
    ("Answer: False <think>or Answer: True?</think>", {}, Thinking("or Answer: True?", "Answer: False ")),
    ("<think>a</think>x<think>b</think>y", {}, Thinking("ab", "xy")),  # several blocks
    ("<think>Answer: True and on", {}, Thinking("Answer: True and on", None)),  # never closed
    ("<think>a</think>x<think>Answer: True", {}, Thinking("aAnswer: True", None)),  # the last one never closed
    ("steps</think>Answer: False", {}, Thinking("steps", "Answer: False")),  # the prompt opened the block
    ("Answer: True", {"opened": True}, Thinking("Answer: True", None)),  # opened by the prompt, never closed
    ("s</think>Answer: True", {"opened": True}, Thinking("s", "Answer: True")),
    ("Answer: True", {"reasoning": "r"}, Thinking("r", "Answer: True")),  # a server's reasoning_content
    (None, {"reasoning": "Answer: True"}, Thinking("Answer: True", None)),  # reasoning but no answer
    (None, {}, Thinking("", "")),
    ("[[Answer: False]] Answer: True", {"tags": ("[[", "]]")}, Thinking("Answer: False", " Answer: True")),
]


@pytest.mark.parametrize("text, options, expected", THINKING_CASES)
def test_thinking_is_split_from_the_answer(text, options, expected):
    options = dict(options)
    assert split_thinking(text, options.pop("tags", TAGS), **options) == expected


def test_an_unclosed_block_reads_no_answer_where_the_plain_rule_reads_one():
    pattern, text = _rule("gen_deduction"), "<think>Perhaps. Answer: True"
    assert answer_index(extract_answer(text, pattern), WORDS) == 0  # the thinking would be read as the answer
    assert split_thinking(text, TAGS).answer is None
