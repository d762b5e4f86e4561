"""Prompt variants: ``prompts/<task>/<variant>.jinja``.

The file is a Jinja2 template rendering one document into the *context*. An optional YAML header in the
file's first Jinja comment says how the answer is read::

    {#-
    description: Lettered options, scored by the letter's log-likelihood.
    choices: "letters[:options | length]"
    -#}
    {{ question }} ...

Header keys (all optional): ``description``; ``method`` (``loglikelihood`` | ``generation``);
``choices`` (Jinja expression overriding the task's answer texts); ``target_delimiter`` (default ``" "``,
put between context and answer); ``fewshot_separator`` (default ``"\\n\\n"``); ``preamble`` (text before
the few-shot examples); ``fewshot_target`` (expression for an example's answer text, default the gold
choice); ``generation`` (``max_tokens``, ``stop``); ``answer`` (``pattern``: regex whose last match's
group 1 is the answer, the strict rule; ``values``: expression listing the answer strings per choice, default
the choices; ``flexible``: regex of the flexible rule's fallback, default a ``\\boxed{..}`` answer, else the
last allowed value as a whole word, see :mod:`evalsuite.scoring.extract`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from evalsuite.errors import SpecError
from evalsuite.sandbox import check_syntax, regex_error
from evalsuite.spec._fields import Fields, read_text, read_yaml

METHODS = ("loglikelihood", "generation")
_HEADER = re.compile(r"\A\{#-?(.*?)-?#\}", re.DOTALL)


@dataclass(frozen=True)
class AnswerRule:
    """How a generated answer is extracted (:mod:`evalsuite.scoring.extract`): the last match of ``pattern``
    (group 1, or the whole match) in the text after NFKC and removing markdown marks, compared with ``values``
    (one string per choice) case-folded and without outer punctuation. No match, or no single equal value,
    counts as unparseable. That is the strict rule; the flexible rule falls back, where the strict one reads no
    allowed value, to the last match of ``flexible``, or without it to a default (a ``\\boxed{..}`` answer,
    else the last allowed value standing as a whole word)."""

    pattern: str
    values: str | None
    flexible: str | None = None


@dataclass(frozen=True)
class PromptSpec:
    name: str
    path: Path
    source: str
    description: str
    method: str
    choices: str | None
    target_delimiter: str
    fewshot_separator: str
    preamble: str
    fewshot_target: str | None
    max_tokens: int
    stop: tuple[str, ...]
    answer: AnswerRule | None


def load_prompt(path: Path) -> PromptSpec:
    """Read a prompt file; its template syntax and header are checked now, its variables at render time."""
    path = Path(path)
    source = read_text(path, "prompt file")
    try:
        check_syntax(source)
    except jinja2.TemplateSyntaxError as exc:
        raise SpecError(f"{path}: line {exc.lineno}: template syntax error: {exc.message}") from None

    match = _HEADER.match(source)
    header = read_yaml(path, match.group(1), "YAML in field 'header' (the first {# ... #} comment)") if match else None
    f = Fields(header if isinstance(header, dict) else {}, path, "header")
    method = f.choice("method", METHODS, "loglikelihood")
    generation = f.sub("generation", {})
    max_tokens = generation.get("max_tokens", int, 256)
    stop = generation.strings("stop", ("\n\n",))
    generation.finish()
    answer_fields = f.sub("answer", None)
    answer = None
    if answer_fields is not None:
        patterns = {"pattern": answer_fields.get("pattern", str), "flexible": answer_fields.get("flexible", str, None)}
        for key, pattern in patterns.items():
            problem = regex_error(pattern) if pattern is not None else None
            if problem:
                raise answer_fields.error(key, f"invalid regular expression: {problem}")
        answer = AnswerRule(values=answer_fields.get("values", str, None), **patterns)
        answer_fields.finish()
    if method == "generation" and answer is None:
        raise f.error("answer", "a generation prompt needs an 'answer' rule (pattern, values)")
    spec = PromptSpec(
        name=path.stem,
        path=path,
        source=source,
        description=f.get("description", str, ""),
        method=method,
        choices=f.get("choices", str, None),
        target_delimiter=f.get("target_delimiter", str, " "),
        fewshot_separator=f.get("fewshot_separator", str, "\n\n"),
        preamble=f.get("preamble", str, ""),
        fewshot_target=f.get("fewshot_target", str, None),
        max_tokens=max_tokens,
        stop=stop,
        answer=answer,
    )
    f.finish()
    return spec
