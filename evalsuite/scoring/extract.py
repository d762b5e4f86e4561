"""Answer extraction from generated text."""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

UNPARSEABLE = -1


def normalise(text: str) -> str:
    """NFKC, case-folded, surrounding whitespace and punctuation removed: '(B).' and 'b' compare equal."""
    text = unicodedata.normalize("NFKC", text).casefold().strip()
    return text.strip(" \t\n.,;:!?()[]{}\"'`*")


def extract_answer(text: str, pattern: str) -> str | None:
    """The answer named by the *last* match of ``pattern`` (group 1 if the pattern has a group).

    The last match wins because chain-of-thought text often mentions options before concluding.
    """
    matches = list(re.finditer(pattern, unicodedata.normalize("NFKC", text)))
    if not matches:
        return None
    last = matches[-1]
    return last.group(1) if last.re.groups else last.group(0)


def answer_index(answer: str | None, values: Sequence[str]) -> int:
    """Index of ``answer`` among ``values`` after :func:`normalise`; -1 when absent or ambiguous."""
    if answer is None:
        return UNPARSEABLE
    wanted = normalise(answer)
    hits = [i for i, v in enumerate(values) if normalise(v) == wanted]
    return hits[0] if len(hits) == 1 else UNPARSEABLE
