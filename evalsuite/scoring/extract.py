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

With thinking models (``--think``), :func:`split_thinking` first removes the thinking, so that an answer
considered while thinking is never read as the final one; a thinking block that never closes leaves no
answer at all (unparseable).
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
