"""Permuted options (``--permute-choices``): a circular check of multiple-choice tasks.

The rule: every document's options are rotated by one position -- the option at position j + 1 moves to
position j, the first option to the last -- and the gold answer follows its option (gold index g becomes
(g − 1) mod n). The rotation is applied to the document itself, before any template reads it, so the prompt
shows the options in their new order (a template that prints letters keeps A, B, C… while the options move),
and the scored continuations and answer values follow. Few-shot examples are rotated the same way.

Which fields are the options comes from the task's ``choices`` expression: a field holding the list
(``choices.text``, ``endings | map(...) | list``: order-keeping filters only), or a list of expressions each
reading one field of its own (``[sol1, sol2]``, ``[option1 ~ rest, option2 ~ rest]``). The gold answer moves
by rewriting the one field the task's ``target`` reads beside the options (``label``, ``answerKey``) to the
value that names the new position, so that every expression of the document (a prompt's ``fewshot_target``
too) agrees. Tasks whose options are not such a list are refused: graded tasks (the choices' order carries
their values), free-form targets (no choices), and label tasks whose choices are fixed in the task file
(yes/no, Valid/Invalid: their templates print the labels as text, so nothing in the document can move).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import nodes
from jinja2.parser import Parser

from evalsuite import sandbox
from evalsuite.errors import SpecError, TemplateError

if TYPE_CHECKING:
    from evalsuite.prompting.render import PromptRenderer

RULE = ("every document's options rotated by one position (the option at position j + 1 moves to position j, the "
        "first to the last), the gold answer following its option; few-shot examples rotated the same way")
ORDER_KEEPING = {"map", "list"}  # filters that keep a list's order and length
Path = tuple[str, ...]


def rotation(n: int) -> tuple[int, ...]:
    """The permutation applied to n options: entry j is the original position of the option now at j."""
    return tuple((j + 1) % n for j in range(n))


def _path(node: nodes.Node) -> Path | None:
    """A field path (``choices.text``) of a name or attribute chain, else None."""
    if isinstance(node, nodes.Name):
        return (node.name,)
    if isinstance(node, nodes.Getattr):
        inner = _path(node.node)
        return inner + (node.attr,) if inner else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        inner = _path(node.node)
        return inner + (node.arg.value,) if inner else None
    return None


def _fields(node: nodes.Node) -> set[Path]:
    """The field paths an expression reads (its outermost name or attribute chains)."""
    if (path := _path(node)) is not None:
        return {path}
    return set().union(*(_fields(child) for child in node.iter_child_nodes()))


def _parse(source: str) -> nodes.Node:
    return Parser(sandbox.SANDBOX, source, state="variable").parse_expression()


def option_fields(task: Any) -> tuple[str, tuple[Path, ...]]:
    """How a task's documents hold their options: ``("list", (path,))`` for a field holding the list, or
    ``("fields", paths)`` for one field per option; :class:`SpecError` when they are not such a list."""
    why = f"{task.path}: --permute-choices: task '{task.name}'"
    if task.graded:
        raise SpecError(f"{why} is graded: the order of its choices carries their values, so they are not "
                        "permuted")
    if not task.choices:
        raise SpecError(f"{why} has no 'choices' (a free-form answer): there are no options to permute")
    try:
        node = _parse(task.choices)
    except jinja2.TemplateSyntaxError:
        node = None
    while isinstance(node, nodes.Filter) and node.name in ORDER_KEEPING:
        node = node.node
    if node is not None and (path := _path(node)) is not None:
        return "list", (path,)
    if isinstance(node, (nodes.List, nodes.Tuple)):
        if all(isinstance(item, nodes.Const) for item in node.items):
            raise SpecError(f"{why}: its choices {task.choices} are fixed labels written in the task file, which "
                            "its templates print as text: nothing in a document can move. --permute-choices "
                            "applies to tasks whose options are a list in each document")
        reads = [_fields(item) for item in node.items]
        own = [{p for p in paths if sum(p in other for other in reads) == 1} for paths in reads]
        if all(len(paths) == 1 for paths in own):
            return "fields", tuple(next(iter(paths)) for paths in own)
    raise SpecError(f"{why}: its choices expression {task.choices!r} is neither a field holding the list of "
                    "options nor a list reading one field per option, so the options cannot be permuted")


def _get(doc: dict, path: Path) -> Any:
    value: Any = doc
    for key in path:
        value = value[key]
    return value


def _set(doc: dict, path: Path, value: Any) -> dict:
    """A copy of ``doc`` with ``path`` set (the dicts along the path copied, the rest shared)."""
    out = dict(doc)
    out[path[0]] = value if len(path) == 1 else _set(doc[path[0]], path[1:], value)
    return out


class ChoicePermuter:
    """Rotates the options of a task's documents (see the module's rule) for one renderer."""

    def __init__(self, renderer: PromptRenderer):
        task = renderer.task
        self.renderer = renderer
        self.kind, self.paths = option_fields(task)
        roots = {p[0] for p in self.paths}
        try:
            reads = _fields(_parse(task.target))
        except jinja2.TemplateSyntaxError:
            reads = set()
        self.gold_fields = sorted({p[0] for p in reads if p[0] not in roots and p[0] != "letters"})
        self.where = f"{task.path}: --permute-choices: task '{task.name}'"

    def __call__(self, doc: dict, doc_id: int) -> tuple[dict, tuple[int, ...]]:
        """The document with its options rotated and its gold answer moved with them, and the permutation."""
        options = [_get(doc, p) for p in self.paths] if self.kind == "fields" else _get(doc, self.paths[0])
        if not isinstance(options, list) or len(options) < 2:
            count = len(options) if isinstance(options, list) else "no list of"
            raise SpecError(f"{self.where}: document {doc_id} has {count} option(s) in field "
                            f"'{'.'.join(self.paths[0])}': rotating needs at least two")
        order = rotation(len(options))
        moved = [options[k] for k in order]
        if self.kind == "fields":
            permuted = doc
            for path, value in zip(self.paths, moved):
                permuted = _set(permuted, path, value)
        else:
            permuted = _set(doc, self.paths[0], moved)
        gold = self._gold(doc, doc_id)
        return self._with_gold(permuted, doc_id, order.index(gold) if gold >= 0 else gold), order

    def _gold(self, doc: dict, doc_id: int) -> int:
        return self.renderer.gold_of(doc, doc_id, self.renderer.choices_of(doc, doc_id))[0]

    def _with_gold(self, doc: dict, doc_id: int, gold: int) -> dict:
        """``doc`` with the field the target reads set so that the target names position ``gold``."""
        if self._gives(doc, doc_id, gold):
            return doc  # the target names its option by content (or is unchanged): it followed already
        if len(self.gold_fields) == 1:
            name = self.gold_fields[0]
            for value in _candidates(doc, name):
                candidate = {**doc, name: value}
                if self._gives(candidate, doc_id, gold):
                    return candidate
        raise SpecError(f"{self.where}: cannot move the gold answer of document {doc_id} with its option: the target "
                        f"{self.renderer.task.target!r} reads {', '.join(self.gold_fields) or 'no field'} beside the "
                        "options, and no value of one such field names the new position")

    def _gives(self, doc: dict, doc_id: int, gold: int) -> bool:
        try:
            return self._gold(doc, doc_id) == gold
        except TemplateError:
            return False


def _candidates(doc: dict, name: str) -> list[Any]:
    """Values to try for the gold field ``name``, of its own type: for a string, the short strings of the
    document's lists (an answer key among the option labels) and small integers as text; for an integer, small
    integers."""
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return []
    if isinstance(value, int):
        return list(range(27))
    lists = [v for v in doc.values() if isinstance(v, list)]
    lists += [v for d in doc.values() if isinstance(d, dict) for v in d.values() if isinstance(v, list)]
    found = [s for items in lists for s in items if isinstance(s, str) and len(s) <= 8]
    return list(dict.fromkeys(found + [str(k) for k in range(27)]))
