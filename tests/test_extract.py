"""Answer extraction on hostile model outputs, with the rules the shipped chain-of-thought prompts state."""

from __future__ import annotations

import functools

import pytest

from evalsuite.api import evaluate, load_tasks
from evalsuite.cli import main
from evalsuite.data import load_split
from evalsuite.errors import SpecError
from evalsuite.prompting import PromptRenderer
from evalsuite.results import read_run, read_samples
from evalsuite.results.records import Outcome, Sample, predictions
from evalsuite.scoring import (
    Thinking,
    answer_index,
    clean_generation,
    extract_answer,
    flexible_answer,
    normalise,
    split_thinking,
)
from evalsuite.spec import load_prompt


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


# --- the flexible rule ----------------------------------------------------------------------------------

RATINGS = ["0", "1", "2", "3", "4", "5"]
# (text, allowed values, what the flexible fallback reads: the answer's index, -1 = nothing)
FLEXIBLE_CASES = [
    ("B looks right, and a C would be wrong, so (D).", LETTERS, 3),  # the last option letter
    ("Alice is a knave, a knight is honest.", LETTERS, -1),  # the article "a" is never option A
    ("The final option: **B**", LETTERS, 1),  # markdown removed first
    ("Option （Ｃ）", LETTERS, 2),  # NFKC
    ("So \\boxed{C}. Though D looked good.", LETTERS, 2),  # a boxed answer wins over later letters
    ("\\boxed{\\text{(A)}} and \\boxed{B}", LETTERS, 1),  # the last box, its \\text unwrapped
    ("\\boxed{maybe} B", LETTERS, -1),  # a box that names no value is read as it is: unparseable
    ("It is TRUE that Anne is red, so the statement is false.", WORDS, 1),  # any case; the last one
    ("Untrue and unknowable claims", WORDS, -1),  # whole words only
    ("**Unknown**", WORDS, 2),
    ("Yes. Well, no.", ["yes", "no"], 1),
    ("It is invalid.", ["Valid", "Invalid"], 1),  # "valid" inside "invalid" is no value
    ("A 4.5 at first, rounded: 5", RATINGS, 5),  # "4.5" holds neither 4 nor 5
    ("Between 4.5 and 3.5", RATINGS, -1),
    ("step1 and x3", RATINGS, -1),  # digits inside words
    ("", LETTERS, -1),
]


@pytest.mark.parametrize("text, values, expected", FLEXIBLE_CASES)
def test_flexible_fallback(text, values, expected):
    assert answer_index(flexible_answer(text, values), values) == expected


@pytest.mark.parametrize("text, expected", [
    ("x = 3, so y = -4.25.", "-4.25"), ("\\boxed{12} and then 13", "12"), ("42 apples, 7 left", "7"),
    ("no number", None), ("version2 of 3.", "3"),
])
def test_flexible_fallback_reads_the_last_number_without_values(text, expected):
    assert flexible_answer(text, []) == expected


def test_a_prompts_flexible_pattern_replaces_the_default_fallback():
    pattern = r"(?i)final:\s*([a-d])"
    assert flexible_answer("Final: b. Then \\boxed{C} D", LETTERS, pattern) == "b"
    assert flexible_answer("\\boxed{C} D", LETTERS, pattern) is None


def test_a_prompts_flexible_pattern_is_checked_when_loaded(tmp_path):
    path = tmp_path / "cot.jinja"
    header = '{#-\nmethod: generation\nanswer:\n  pattern: "answer: (\\\\w)"\n  flexible: %s\n-#}\nQ'
    path.write_text(header % '"final: (\\\\w)"', encoding="utf-8")
    assert load_prompt(path).answer.flexible == r"final: (\w)"
    path.write_text(header % '"final: ("', encoding="utf-8")
    with pytest.raises(SpecError, match=r"cot.jinja: field 'header.answer.flexible': invalid regular expression"):
        load_prompt(path)


def test_every_generated_task_reads_its_own_fewshot_targets_by_both_rules():
    """A solved example of each generated task's cot prompt (its few-shot target after the question) is read as
    the gold by the strict rule and by the flexible fallback alone; dataset tasks: tests/test_task_library.py."""
    generated = [task for task in load_tasks().values() if not (task.hub or task.local)]
    assert len(generated) == 4
    for task in generated:
        prompt = task.prompt("cot")
        renderer = PromptRenderer(task, prompt)
        for i, doc in enumerate(load_split(task, task.fewshot_split).docs[:10]):
            example, inst = renderer.example(doc, i), renderer.render(doc, i)
            assert answer_index(extract_answer(example, prompt.answer.pattern), inst.answer_values) == inst.gold
            fallback = flexible_answer(example, inst.answer_values, prompt.answer.flexible)
            assert answer_index(fallback, inst.answer_values) == inst.gold, (task.name, example[-200:])


def test_show_states_both_rules(capsys):
    assert main(["show", "gen_knights_knaves", "--prompt", "cot"]) == 0
    out = capsys.readouterr().out
    assert "strict rule: the last match of /" + _rule("gen_knights_knaves") + "/ naming one of ['A', 'B', 'C', 'D']" in out
    assert ("flexible rule: the strict answer, else the last \\boxed{..}, else the last of 'A', 'B', 'C', 'D' "
            "standing as a whole word") in out


class ScriptedWriter:
    """Generations from a script, one text per document."""

    def __init__(self, tokenizer, texts):
        self.tokenizer, self.texts = tokenizer, texts

    def describe(self):
        return {"engine": "scripted", "model_sha256": "0" * 64, "dtype": "none"}

    def loglikelihood(self, requests, progress=None):
        raise AssertionError("not used")

    def generate(self, requests, progress=None):
        return self.texts[: len(requests)]


@pytest.fixture(scope="module")
def byte_tok():
    from tiny_models import byte_tokenizer

    return byte_tokenizer()


# gen_deduction's cot, with --think: (generation, strict reading, flexible reading), indices into WORDS
RUN_CASES = [
    ("Answer: True", 0, 0),
    ("So the statement is false.", -1, 1),  # no answer line: only the fallback reads it
    ("Answer: True or Unknown", -1, 2),  # a hedge: unparseable, the fallback reads its last value
    ("Answer: False, though it looks true", 1, 1),  # the strict answer is kept where it reads
    ("<think>It is true.</think> No idea.", -1, -1),  # the thinking is never read, by either rule
    ("<think>Answer: True</think> it must be unknown", -1, 2),
    ("<think>Answer: True, so true", -1, -1),  # unclosed thinking: unparseable for both
]


def test_a_run_reads_every_generation_by_both_rules(tmp_path, byte_tok):
    texts = [text for text, _, _ in RUN_CASES]
    run = evaluate("scripted", "gen_deduction", engine=ScriptedWriter(byte_tok, texts), prompts="cot",
                   limit=len(texts), think=True, output=tmp_path, progress=False, n_boot=50)
    samples = read_samples(run.path)
    assert [(s["pred"], s["pred_flexible"]) for s in samples] == [(p, f) for _, p, f in RUN_CASES]
    assert [s["extracted_flexible"] for s in samples][:4] == ["True", "false", "Unknown", "False"]
    assert samples[6]["extracted"] is None and samples[6]["extracted_flexible"] is None
    gold = [s["gold"] for s in samples]
    [ev] = read_run(run.path)["evaluations"]
    metrics = {name: m["value"] for name, m in ev["metrics"].items()}
    n = len(RUN_CASES)
    assert metrics["accuracy"] == pytest.approx(sum(p == g for (_, p, _), g in zip(RUN_CASES, gold)) / n)
    assert metrics["accuracy_flexible"] == pytest.approx(sum(f == g for (_, _, f), g in zip(RUN_CASES, gold)) / n)
    assert (metrics["unparseable_rate"], metrics["unparseable_rate_flexible"]) == pytest.approx((5 / n, 2 / n))
    for name in ("accuracy_flexible", "unparseable_rate_flexible"):
        m = ev["metrics"][name]
        assert m["low"] <= m["value"] <= m["high"] and "flexible rule: the strict answer" in m["definition"]
    assert "strict rule: the last match of the prompt's answer pattern" in ev["metrics"]["accuracy"]["definition"]


def test_samples_round_trip_with_and_without_the_flexible_reading():
    sample = Sample(task="t", variant="cot", doc_id=0, fewshot_ids=(), choices=("A", "B"), pred=-1, gold=1,
                    gold_text="B", generation="it is B", extracted=None, pred_flexible=1, extracted_flexible="B")
    line = sample.to_dict()
    assert (line["extracted"], line["extracted_flexible"], line["pred_flexible"]) == (None, "B", 1)
    assert Sample.from_dict(line) == sample
    unread = Sample.from_dict({**line, "pred_flexible": 1, "extracted_flexible": None})
    assert unread.to_dict()["extracted_flexible"] is None  # written: the flexible rule read nothing

    older = {k: v for k, v in line.items() if not k.endswith("_flexible")}  # a file from before the rule
    loaded = Sample.from_dict(older)
    assert loaded.pred_flexible is None and loaded.to_dict() == older
    assert predictions([Outcome.of(loaded)], ("A", "B"), None).pred_flexible is None
    assert list(predictions([Outcome.of(sample)], ("A", "B"), None).pred_flexible) == [1]
