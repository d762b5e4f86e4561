"""Rendering documents through a task's prompt variant."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jinja2

from evalsuite import sandbox
from evalsuite.errors import TemplateError
from evalsuite.prompting.chat import ChatFormat, Message, conversation
from evalsuite.prompting.permute import ChoicePermuter
from evalsuite.spec import PromptSpec, TaskSpec


@dataclass(frozen=True)
class Instance:
    """One document ready for an engine.

    ``context`` is the full prompt (preamble, few-shot examples, this document); ``continuations`` are the
    answer strings scored after it (target delimiter included); ``gold`` indexes them (or the task labels);
    ``gold_text`` is the expected answer string; ``answer_values`` are the strings a generated answer is
    matched against, one per choice. Graded tasks also carry ``choice_scores`` (the numeric value of each
    choice) and ``gold_score`` (the document's graded score). ``messages`` is the same prompt as a conversation
    (:mod:`evalsuite.prompting.chat`), for chat templates and chat APIs. ``cluster`` is the document's cluster
    key when the task names a cluster field (:meth:`PromptRenderer.cluster_of`). ``permutation`` is the order
    the options were shown in when they were permuted (:mod:`evalsuite.prompting.permute`): entry j is the
    original position of the option shown at position j.
    """

    doc_id: int
    context: str
    continuations: tuple[str, ...]
    gold: int
    gold_text: str
    answer_values: tuple[str, ...]
    fewshot_ids: tuple[int, ...]
    choice_scores: tuple[float, ...] = ()
    gold_score: float | None = None
    messages: tuple[Message, ...] = ()
    cluster: str | None = None
    permutation: tuple[int, ...] | None = None


def _null_fields(doc: dict) -> str:
    """The document's null fields, for an error about a null value: where a missing key shows up."""
    names = [name for name, value in doc.items() if value is None]
    return f" (its null fields: {', '.join(map(repr, names))})" if names else ""


def _template_line(exc: BaseException, filename: str) -> int | None:
    """The line of ``filename`` where a render error happened (Jinja keeps it in the traceback)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class PromptRenderer:
    """Renders documents of one task through one prompt variant (``chat``: how they become conversations;
    ``permute``: with their options rotated, :mod:`evalsuite.prompting.permute`)."""

    def __init__(self, task: TaskSpec, prompt: PromptSpec, chat: ChatFormat = ChatFormat(), permute: bool = False):
        self.task, self.prompt, self.chat = task, prompt, chat
        filename = str(prompt.path)
        try:
            # Compiled with the file name so that render errors can report the template line.
            self._template = sandbox.compile_template(prompt.source, prompt.name, filename)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{filename}: line {exc.lineno}: template syntax error: {exc.message}") from None
        choices_expr = prompt.choices or task.choices
        self._choices = self._expression(choices_expr, "choices") if choices_expr else None
        self._target = self._expression(task.target, "target")
        self._fewshot_target = (
            self._expression(prompt.fewshot_target, "fewshot_target") if prompt.fewshot_target else None
        )
        values = prompt.answer.values if prompt.answer else None
        self._values = self._expression(values, "answer.values") if values else None
        graded = task.graded
        self._graded = (
            (self._expression(graded.values, "graded.values"), self._expression(graded.gold, "graded.gold"))
            if graded else None
        )
        self._inputs = [self._expression(e, "inputs") for e in task.inputs or ()]
        self._cluster = self._expression(task.cluster, "cluster") if task.cluster else None
        self._permute = ChoicePermuter(self) if permute else None

    def _expression(self, source: str, field: str) -> tuple[Callable[..., Any], str, str]:
        owner = self.prompt.path if field in ("fewshot_target", "answer.values") or (
            field == "choices" and self.prompt.choices
        ) else self.task.path
        try:
            return sandbox.compile_expression(source), field, str(owner)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{owner}: field '{field}': invalid expression {source!r}: {exc.message}") from None

    def _evaluate(self, compiled: tuple[Callable[..., Any], str, str], doc: dict, doc_id: int) -> Any:
        function, field, owner = compiled
        try:
            value = function(**doc)
            sandbox.require_defined(value)
            if value is None:
                raise sandbox.NullValueError(f"the expression gave a null value ({sandbox.NULL_CAUSE}): "
                                             "give it a value in the data file")
        except Exception as exc:  # noqa: BLE001 - every template failure becomes one clear message
            nulls = _null_fields(doc) if isinstance(exc, sandbox.NullValueError) else ""
            raise TemplateError(
                f"{owner}: field '{field}' on document {doc_id}{nulls} of task '{self.task.name}': "
                f"{sandbox.describe(exc)}"
            ) from None
        return value

    def context_of(self, doc: dict, doc_id: int) -> str:
        """The document rendered through the template alone (no preamble or examples)."""
        try:
            return sandbox.render(self._template, doc)
        except Exception as exc:  # noqa: BLE001
            line = _template_line(exc, str(self.prompt.path))
            where = f": line {line}" if line else ""
            nulls = _null_fields(doc) if isinstance(exc, sandbox.NullValueError) else ""
            raise TemplateError(
                f"{self.prompt.path}{where}: rendering document {doc_id}{nulls} of task '{self.task.name}': "
                f"{sandbox.describe(exc)}"
            ) from None

    def choices_of(self, doc: dict, doc_id: int) -> tuple[str, ...]:
        if self._choices is None:
            return ()
        return self._strings(self._choices, doc, doc_id)

    def _strings(self, compiled: tuple[Callable[..., Any], str, str], doc: dict, doc_id: int) -> tuple[str, ...]:
        """An expression that must give a list (choices, answer values), as strings."""
        value = self._evaluate(compiled, doc, doc_id)
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise TemplateError(f"{compiled[2]}: field '{compiled[1]}' must give a list, got {value!r} on document {doc_id}")
        nulls = [i for i, v in enumerate(value) if v is None]
        if nulls:
            raise TemplateError(
                f"{compiled[2]}: field '{compiled[1]}' on document {doc_id}{_null_fields(doc)} of task "
                f"'{self.task.name}': item {nulls[0]} of its list is null, which would read 'None' "
                f"({sandbox.NULL_CAUSE}): give it a value in the data file"
            )
        return tuple(str(v) for v in value)

    def inputs_of(self, doc: dict, doc_id: int) -> tuple[str, ...]:
        """The text (pair) an encoder classifies: the task's ``inputs`` expressions, as strings."""
        if not self._inputs:
            raise TemplateError(f"{self.task.path}: field 'inputs' is needed to classify documents of task "
                                f"'{self.task.name}' with an encoder (e.g. inputs: [sentence1, sentence2])")
        return tuple(str(self._evaluate(expression, doc, doc_id)) for expression in self._inputs)

    def cluster_of(self, doc: dict, doc_id: int) -> str | None:
        """The document's cluster key (None when the task names no cluster field): the value as text, or for a
        value longer than 64 characters (a shared passage) ``sha256:`` and 16 hex digits of its SHA-256."""
        if self._cluster is None:
            return None
        value = self._evaluate(self._cluster, doc, doc_id)
        if value is None or value == "":
            raise TemplateError(f"{self.task.path}: field 'cluster' gives no value on document {doc_id} of task "
                                f"'{self.task.name}': every document needs a cluster (a story id, a passage)")
        key = str(value)
        return key if len(key) <= 64 else "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]

    def gold_of(self, doc: dict, doc_id: int, choices: Sequence[str]) -> tuple[int, str]:
        """Gold index and gold answer text. A target is an index into the choices/labels or an answer string."""
        value = self._evaluate(self._target, doc, doc_id)
        names = list(choices) or list(self.task.labels or ())
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            if names and not 0 <= value < len(names):
                raise TemplateError(
                    f"{self.task.path}: field 'target' gave index {value} on document {doc_id}, "
                    f"but there are {len(names)} choices"
                )
            return value, names[value] if names else str(value)
        text = str(value)
        for options in (list(self.task.labels or ()), list(choices)):
            if text in options:
                index = options.index(text)
                if choices and index >= len(choices):
                    raise TemplateError(
                        f"{self.task.path}: field 'target' gave label {text!r} (index {index}) on document {doc_id}, "
                        f"but there are only {len(choices)} choices: 'labels' and 'choices' must have the same length"
                    )
                return index, (choices[index] if choices else text)
        if names:
            raise TemplateError(
                f"{self.task.path}: field 'target' gave {text!r} on document {doc_id}, which is not a label or choice"
            )
        return -1, text

    def scores_of(self, doc: dict, doc_id: int, n_choices: int) -> tuple[tuple[float, ...], float | None]:
        """A graded task's numeric value per choice and the document's gold score (``()``, ``None`` otherwise)."""
        if self._graded is None:
            return (), None
        values_expr, gold_expr = self._graded
        try:
            values = tuple(float(v) for v in self._evaluate(values_expr, doc, doc_id))
            gold = float(self._evaluate(gold_expr, doc, doc_id))
        except (TypeError, ValueError) as exc:
            raise TemplateError(
                f"{self.task.path}: field 'graded' on document {doc_id} of task '{self.task.name}': "
                f"values must be a list of numbers and gold a number ({exc})"
            ) from None
        if len(values) != n_choices:
            raise TemplateError(
                f"{self.task.path}: field 'graded.values' gives {len(values)} values on document {doc_id}, "
                f"but prompt {self.prompt.path} has {n_choices} choices"
            )
        return values, gold

    def answer_values_of(self, doc: dict, doc_id: int, choices: Sequence[str]) -> tuple[str, ...]:
        if self._values is None:
            return tuple(choices)
        return self._strings(self._values, doc, doc_id)

    def example(self, doc: dict, doc_id: int) -> str:
        """A solved few-shot example: context, delimiter, gold answer."""
        prompt, answer = self.example_turns(doc, doc_id)
        return prompt + self.prompt.target_delimiter + answer

    def example_turns(self, doc: dict, doc_id: int) -> tuple[str, str]:
        """A solved few-shot example as (its prompt, its gold answer)."""
        choices = self.choices_of(doc, doc_id)
        gold, gold_text = self.gold_of(doc, doc_id, choices)
        if self._fewshot_target is not None:
            answer = str(self._evaluate(self._fewshot_target, doc, doc_id))
        else:
            answer = choices[gold] if choices and gold >= 0 else gold_text
        return self.context_of(doc, doc_id), answer

    def render(self, doc: dict, doc_id: int, examples: Sequence[tuple[int, dict]] = ()) -> Instance:
        with sandbox.limits():  # one budget of work and time for the document, its examples and expressions
            return self._render(doc, doc_id, examples)

    def _render(self, doc: dict, doc_id: int, examples: Sequence[tuple[int, dict]]) -> Instance:
        permutation = None
        if self._permute is not None:  # the documents themselves rotated: every template and expression sees it
            doc, permutation = self._permute(doc, doc_id)
            examples = [(j, self._permute(ex, j)[0]) for j, ex in examples]
        prompt = self.prompt
        shots = [self.example_turns(ex, ex_id) for ex_id, ex in examples]
        question = self.context_of(doc, doc_id)
        parts = [prompt.preamble] if prompt.preamble else []
        parts += [shot + prompt.target_delimiter + answer for shot, answer in shots]
        parts.append(question)
        context = prompt.fewshot_separator.join(parts)
        if len(context) > sandbox.MAX_SIZE:
            raise TemplateError(
                f"{prompt.path}: document {doc_id} of task '{self.task.name}': the prompt has {len(context)} "
                f"characters, more than the limit of {sandbox.MAX_SIZE}: use fewer few-shot examples"
            )
        choices = self.choices_of(doc, doc_id)
        gold, gold_text = self.gold_of(doc, doc_id, choices)
        answer_values = self.answer_values_of(doc, doc_id, choices)
        choice_scores, gold_score = self.scores_of(doc, doc_id, len(answer_values))
        return Instance(
            doc_id=doc_id,
            context=context,
            continuations=tuple(prompt.target_delimiter + c for c in choices),
            gold=gold,
            gold_text=gold_text,
            answer_values=answer_values,
            fewshot_ids=tuple(ex_id for ex_id, _ in examples),
            choice_scores=choice_scores,
            gold_score=gold_score,
            messages=conversation(self.chat, context, question, shots, preamble=prompt.preamble,
                                  separator=prompt.fewshot_separator),
            cluster=self.cluster_of(doc, doc_id),
            permutation=permutation,
        )
