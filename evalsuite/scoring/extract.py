"""Answer extraction from generated text.

The rule, in two steps:

1. :func:`extract_answer`: the text is normalised (Unicode NFKC, so full-width "（Ｂ）" reads "(B)";
   markdown bold/italic/code marks and LaTeX ``\\boxed{..}``/``\\text{..}`` wrappers removed), then the
   prompt's pattern is searched and the **last** match wins: chain-of-thought text mentions options while
   reasoning and concludes at the end, and a model that changes its mind ("the answer is A... no, the answer
   is B") is read by its final word. The answer is the match's group 1 (or the first group that took
   part, or the whole match for a pattern without groups).
2. :func:`answer_index`: the answer and each allowed value are normalised (NFKC, case-folded, surrounding
   whitespace, punctuation, quotes and brackets removed) and compared for equality; exactly one equal value
   gives its index, anything else (no answer, no equal value, several) is unparseable (-1) and counts as
   wrong. A hedge such as "A or B" is therefore unparseable when the pattern captures it whole.

This is the **strict** rule: the format the prompt asks for. Beside it every generation prompt has a
**flexible** rule (:func:`flexible_answer`), reported as ``accuracy_flexible`` and ``unparseable_rate_flexible``:

- the strict answer, when it names exactly one allowed value (free-form targets: when the strict rule found an
  answer at all);
- otherwise, with an ``answer.flexible`` pattern in the prompt's header, that pattern's last match, read as in
  step 1;
- otherwise the content of the last ``\\boxed{..}`` in the text (NFKC; one level of nested braces, and
  ``\\text{..}`` inside, allowed);
- otherwise the last allowed value standing as a whole word in the text of step 1: not inside a longer word or
  number (no letter, digit or "_" next to it, and no "." or "," joining it to a digit), a single-letter value
  (an option letter) in its own case only, so that the article "a" is never option "A", any other value
  (True, Unknown, yes, 3, ...) in any case; the longest value wins where several start at one place;
- free-form targets (no allowed values): the last number (digits with an optional decimal part and sign).

The flexible answer is then compared as in step 2; it reads the same text as the strict rule. With several
samples per document each rule takes its own majority vote.

With thinking models (``--think``), :func:`split_thinking` first removes the thinking, so that an answer
considered while thinking is never read as the final one; a thinking block that never closes leaves no
answer at all (unparseable), for both rules.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from evalsuite.sandbox import regex_finditer

UNPARSEABLE = -1
_PUNCTUATION = " \t\n.,;:!?()[]{}\"'`*"
_MARKUP = re.compile(r"\*+|`+|(?<!\w)_+|_+(?!\w)")
_LATEX = re.compile(r"\\(?:boxed|text|textbf|mathrm)\{([^{}]*)\}")
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
# A whole word: no word character on either side, and no "." or "," joining it to a digit ("4.5" holds no "4").
_BEFORE, _AFTER = r"(?<!\w)(?<!\d[.,])", r"(?!\w)(?![.,]\d)"

STRICT_RULE = ("strict rule: the last match of the prompt's answer pattern (its group 1) in the generation after "
               "Unicode NFKC and removing markdown marks and \\boxed{}/\\text{} wrappers, equal to exactly one "
               "allowed value once both are case-folded and stripped of outer whitespace, punctuation, quotes and "
               "brackets (free-form targets: equal to the gold text); anything else is unparseable")
FLEXIBLE_RULE = ("flexible rule: the strict answer when it names exactly one allowed value (free-form targets: when "
                 "the strict rule found one); else the last match of the prompt's answer.flexible pattern where it "
                 "has one; else the content of the last \\boxed{..}; else the last allowed value standing as a "
                 "whole word in the text the strict rule reads, never inside a longer word or number (single letters "
                 "in their own case, other values in any case); free-form targets: the last number; compared with "
                 "the allowed values as the strict answer is")


def normalise(text: str) -> str:
    """NFKC, case-folded, surrounding whitespace and punctuation removed: '(B).' and 'b' compare equal."""
    return unicodedata.normalize("NFKC", text).casefold().strip(_PUNCTUATION)


def clean_generation(text: str) -> str:
    """The text a pattern is searched in: NFKC, without markdown emphasis/code marks or LaTeX wrappers."""
    text = unicodedata.normalize("NFKC", text)
    text = _LATEX.sub(r"\1", text)
    return _MARKUP.sub("", text)


def extract_answer(text: str, pattern: str) -> str | None:
    """The answer named by the *last* match of ``pattern`` in :func:`clean_generation` of ``text``; a pattern
    that runs too long raises :class:`~evalsuite.sandbox.LimitError`."""
    matches = regex_finditer(pattern, clean_generation(text))  # the prompt's pattern, run with a time limit
    if not matches:
        return None
    last = matches[-1]
    answer = next((g for g in last.groups() if g is not None), None) if last.re.groups else last.group(0)
    return answer.strip() if answer is not None else None


def flexible_answer(text: str, values: Sequence[str], pattern: str | None = None) -> str | None:
    """The flexible rule's own reading of ``text`` (the caller keeps the strict answer first, see the module's
    docstring): the last match of ``pattern`` where the prompt has one, else the last ``\\boxed{..}``, else the
    last of ``values`` standing as a whole word, else (no values) the last number; None when there is none."""
    if pattern is not None:
        return extract_answer(text, pattern)
    text = unicodedata.normalize("NFKC", text)
    boxed = _BOXED.findall(text)
    if boxed:
        return clean_generation(boxed[-1]).strip()
    matches = list(re.finditer(_BEFORE + _values_pattern(values) + _AFTER, clean_generation(text)))
    return matches[-1].group(0) if matches else None


def _values_pattern(values: Sequence[str]) -> str:
    """The alternatives a whole word may be: the values (longest first, single letters case-sensitive), or a
    number when there are none. Values are matched as literal text, so no pattern of a prompt runs here."""
    words = sorted({v.strip() for v in values if v.strip()}, key=len, reverse=True)
    if not words:
        return _NUMBER
    return "(?:" + "|".join(re.escape(w) if len(w) == 1 else f"(?i:{re.escape(w)})" for w in words) + ")"


def describe_flexible(pattern: str | None, values: Sequence[str]) -> str:
    """The flexible fallback for one document's allowed ``values``, in words (``evalsuite show``)."""
    if pattern is not None:
        return f"the last match of /{pattern}/"
    last = ("the last number" if not any(v.strip() for v in values)
            else "the last of " + ", ".join(repr(v.strip()) for v in values) + " standing as a whole word")
    return f"the last \\boxed{{..}}, else {last}"


def answer_index(answer: str | None, values: Sequence[str]) -> int:
    """Index of ``answer`` among ``values`` after :func:`normalise`; -1 when absent or ambiguous."""
    if answer is None:
        return UNPARSEABLE
    wanted = normalise(answer)
    hits = [i for i, v in enumerate(values) if normalise(v) == wanted]
    return hits[0] if len(hits) == 1 else UNPARSEABLE


@dataclass(frozen=True)
class Thinking:
    """A generation split into its thinking and its answer; ``answer`` is None when the thinking never closed."""

    thinking: str
    answer: str | None


def split_thinking(text: str | None, tags: tuple[str, str], *, reasoning: str | None = None,
                   opened: bool = False) -> Thinking:
    """The thinking and the answer of a generated ``text``, for thinking blocks between ``tags`` (open, close).

    - Every block from an opening tag to the next closing tag is thinking; the text outside blocks is the answer.
    - A closing tag before any opening one closes a block that the prompt opened (a chat template that starts
      the model thinking); so does ``opened=True`` (the prompt ends with the opening tag), in which case a
      text without a closing tag never stopped thinking.
    - ``reasoning``, a server's separate reasoning field (``reasoning_content``), is thinking too; a text of
      None beside it means the server returned no answer, because the thinking never closed.
    - A block still open at the end leaves no answer (None): the generation is unparseable, whatever its
      thinking says.
    """
    open_tag, close_tag = tags
    thoughts = [reasoning] if reasoning else []
    if text is None:
        return Thinking("".join(thoughts), None if reasoning else "")
    first_close, first_open = text.find(close_tag), text.find(open_tag)
    inside = opened or (first_close >= 0 and (first_open < 0 or first_close < first_open))
    answer, rest = [], text
    while True:
        if inside:
            end = rest.find(close_tag)
            if end < 0:
                return Thinking("".join(thoughts + [rest]), None)
            thoughts.append(rest[:end])
            rest, inside = rest[end + len(close_tag) :], False
        else:
            start = rest.find(open_tag)
            if start < 0:
                return Thinking("".join(thoughts), "".join(answer + [rest]))
            answer.append(rest[:start])
            rest, inside = rest[start + len(open_tag) :], True
