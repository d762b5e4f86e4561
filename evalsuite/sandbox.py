"""The one sandbox for untrusted text, and its limits.

Task and prompt files come from anyone: their Jinja templates and expressions (prompts, ``choices``,
``target``, ``filter``, ...) run in :data:`SANDBOX`, their regular expressions through :func:`regex_sub`,
:func:`regex_findall` and :func:`regex_finditer`, and the files they name are found with :func:`inside`.
Whatever they hold, they cannot reach Python internals, read files outside their folders, or take
unbounded time or memory:

- **size**: no value a template builds (a string, a list, nested items counted each time they appear,
  which is what printing it makes) and no rendered text may exceed :data:`MAX_SIZE`. Operations that can
  build far more than they are given (``center``, ``format``, ``%``, ``*``, ``join``, ``replace``, ...) are
  checked *before* they run, from their arguments; everything else is checked on its result.
- **work and time**, per document (:func:`limits`): at most :data:`MAX_STEPS` loop steps and calls, at
  most :data:`MAX_BUILT` characters and items built in all, and at most :data:`RENDER_SECONDS`.
- **regular expressions** stop after :data:`REGEX_SECONDS` (a pattern such as ``(a|aa)+$`` takes
  exponential time on some texts).

Going over a limit raises :class:`LimitError`; callers turn it into their own error naming the file and field.
Printing a null value, or joining one with ``~``, raises :class:`NullValueError` the same way: a prompt never
says "None" where a document lacks a field.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import math
import operator
import re
import reprlib
import string
import time
from collections.abc import ItemsView, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import jinja2
import regex  # like ``re``, plus a ``timeout`` that bounds catastrophic backtracking
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace, generate_lorem_ipsum

LETTERS = tuple(string.ascii_uppercase)

# A prompt is at most a few thousand tokens; a million characters is far beyond any model's context.
MAX_SIZE = 1_000_000  # characters and items in one value or one rendered text
MAX_STEPS = 200_000  # loop steps and calls, for one document (a built-in prompt takes at most a few hundred)
MAX_BUILT = 20 * MAX_SIZE  # characters and items built, for one document
MAX_INT_BITS = 4096  # integers made by ** and *
RENDER_SECONDS = 10.0  # for one document: its template, few-shot examples and expressions
REGEX_SECONDS = 1.0  # for one search or substitution


class LimitError(Exception):
    """Untrusted input went over one of the sandbox's limits; the message names the limit and the way out."""


class NullValueError(Exception):
    """A template printed a null value (``None``), or joined one with ``~``: the prompt would say "None".

    A key missing from one row of a JSON Lines file, or an empty CSV cell, reaches a document as null (the
    ``datasets`` builders give every row every column), so this is how such a row is found."""


# Why a document holds a null, for messages about one.
NULL_CAUSE = "a key missing from a row of a JSON Lines file, or an empty CSV cell, is read as null"


# --- the budget of one document ------------------------------------------------------------------------


@dataclass
class _Budget:
    deadline: float
    steps: int = 0
    built: int = 0


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("evalsuite_sandbox_budget", default=None)


@contextlib.contextmanager
def limits() -> Iterator[None]:
    """Everything the sandbox runs inside this block shares one budget of steps, characters built and time
    (one document's). A block inside another shares the outer one's budget."""
    if _BUDGET.get() is not None:
        yield
        return
    token = _BUDGET.set(_Budget(deadline=time.monotonic() + RENDER_SECONDS))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _step() -> None:
    """Counts one loop step or call against the current budget (outside :func:`limits`, e.g. while compiling, none)."""
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.steps += 1
    if budget.steps > MAX_STEPS:
        raise LimitError(f"the template took more than {MAX_STEPS} loop steps and calls for one document "
                         "(the limit): make its loops smaller")
    if time.monotonic() > budget.deadline:
        raise LimitError(f"rendering one document took longer than {RENDER_SECONDS:g} s (the limit): "
                         "make the template's loops or recursion smaller")


def _built(size: int) -> None:
    """Counts characters and items built against the current budget."""
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.built += size
    if budget.built > MAX_BUILT:
        raise LimitError(f"the template built more than {MAX_BUILT} characters and items for one document "
                         "(the limit): make its loops smaller")


def _remaining_seconds() -> float:
    budget = _BUDGET.get()
    return REGEX_SECONDS if budget is None else max(0.0, min(REGEX_SECONDS, budget.deadline - time.monotonic()))


# --- sizes ---------------------------------------------------------------------------------------------


def measure(value: Any, limit: int | None = None) -> tuple[int, int]:
    """(size, depth) of ``value``: its characters and items, nested items counted each time they appear
    (roughly the length of its printed form), and how deeply it nests. Counting stops soon past ``limit``
    (default :data:`MAX_SIZE`)."""
    limit = MAX_SIZE if limit is None else limit
    size = depth = 0
    stack = [(value, 1)]
    while stack and size <= limit:
        item, level = stack.pop()
        size += 1
        depth = max(depth, level)
        if isinstance(item, (str, bytes)):
            size += len(item)
        elif isinstance(item, int):
            size += item.bit_length() // 3  # about its decimal digits
        elif isinstance(item, (list, tuple, set, frozenset, dict, KeysView, ValuesView, ItemsView, Mapping)):
            size += len(item)
            if size <= limit:
                parts = itertools.chain.from_iterable(item.items()) if isinstance(item, Mapping) else item
                stack.extend(zip(parts, itertools.repeat(level + 1)))
        elif isinstance(item, Namespace):
            stack.append((getattr(item, "_Namespace__attrs", {}), level + 1))
    return size, depth


def _too_large(size: int, what: str) -> LimitError:
    return LimitError(f"{what} of about {size} characters and items is too large for a template "
                      f"(limit {MAX_SIZE}): build shorter text")


def _check(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise _too_large(size, what)


def checked(value: Any, what: str = "a value") -> Any:
    """``value`` if it is within :data:`MAX_SIZE`; what it allocated is counted as work."""
    _check(measure(value)[0], what)
    _built(len(value) if isinstance(value, (str, bytes, list, tuple, dict, set)) else 1)
    return value


# Upper bounds of what an operation would build, computed from its arguments before it runs.


def _int(value: Any) -> int:
    """An integer argument (numpy's too, as Python's own functions take them), else 0."""
    try:
        return operator.index(value)
    except TypeError:
        return 0


def _text(value: Any) -> str | bytes:
    return value if isinstance(value, (str, bytes)) else str(value)


def _widened(text: Any, width: Any = 80, *_: Any) -> int:
    return measure(text)[0] + _int(width)


def _tabs(text: Any, tabsize: Any = 8) -> int:
    text = _text(text)
    return len(text) + text.count("\t" if isinstance(text, str) else b"\t") * _int(tabsize)


def _replaced(text: Any, old: Any = "", new: Any = "", count: Any = None) -> int:
    text, old, new = _text(text), _text(old), _text(new)
    hits = text.count(old) if old else len(text) + 1
    if _int(count) > 0:
        hits = min(hits, count)
    return len(text) + hits * max(0, len(new) - len(old))


def _joined(items: Any, separator: Any = "", *_: Any) -> int:
    return measure(items)[0] + (len(items) if hasattr(items, "__len__") else 0) * measure(separator)[0]


def _translated(text: Any, table: Any = None) -> int:
    values = table.values() if isinstance(table, Mapping) else ()
    return len(_text(text)) * max((len(v) if isinstance(v, str) else 1 for v in values), default=1)


def _lines_grow(text: Any, lines: int, extra: int) -> int:
    return measure(text)[0] + lines * extra


def _indented(text: Any, width: Any = 4, *_: Any) -> int:
    lines = _text(text).count("\n") + 1
    return _lines_grow(text, lines, len(width) if isinstance(width, str) else _int(width))


def _wrapped(text: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None, *_: Any) -> int:
    # Two consecutive wrapped lines hold at least ``width`` characters.
    text = _text(text)
    lines = 2 * len(text) // max(1, _int(width)) + text.count("\n") + 2
    return _lines_grow(text, lines, 1 if wrapstring is None else measure(wrapstring)[0])


def _linked(text: Any, trim_url_limit: Any = None, nofollow: Any = False, target: Any = None, rel: Any = None,
            *_: Any) -> int:
    words = len(_text(text).split())  # each may become <a href="..." rel="..." target="...">...</a>
    return 2 * _lines_grow(text, words, 64 + measure(target)[0] + measure(rel)[0])


def _printed(value: Any, indent: Any = None, *_: Any) -> int:
    size, depth = measure(value)
    step = len(indent) if isinstance(indent, str) else _int(indent)
    return size * (12 + step * depth)  # an escaped character takes up to 12; lines are indented per level


def _padded(value: Any, count: Any = 0, *_: Any) -> int:
    return measure(value)[0] + _int(count)


def _summed(items: Any, attribute: Any = None, start: Any = 0) -> int:
    if isinstance(start, (int, float)):
        return 1
    size = measure(items)[0]  # adding sequences copies the growing total once per item
    return size * (size + measure(start)[0])


def _lorem(n: Any = 5, html: Any = True, min: Any = 20, max: Any = 100) -> int:
    return _int(n) * _int(max) * 16


_FIELD_BASE = re.compile(r"[^.\[]*")
_FIELD_NUMBER = re.compile(r"\d+")
_PERCENT_FIELD = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?.", re.DOTALL)
_NUMBER_TEXT = 400  # a number's longest printed form without a width, with room to spare


def _formatted(fmt: Any, fields: int, widths: list[int], texts: int) -> int:
    """A format string with ``fields`` fields at most ``max(widths)`` wide, filled with ``texts`` characters."""
    return measure(fmt)[0] + texts + fields * (max(widths, default=0) + _NUMBER_TEXT)


def _percent(fmt: Any, values: Any = ()) -> int:
    """``fmt % values`` (the ``%`` operator and the ``format`` filter)."""
    fields = _PERCENT_FIELD.findall(fmt.decode("latin-1") if isinstance(fmt, bytes) else _text(fmt))
    widths = [int(n) for _, width, precision in fields for n in (width, precision) if n.isdigit()]
    if isinstance(values, Mapping):
        texts = sum(measure(values.get(key))[0] for key, _, _ in fields)
        return _formatted(fmt, len(fields), widths, texts)
    values = values if isinstance(values, tuple) else (values,)
    if any("*" in (width, precision) for _, width, precision in fields):
        widths += [_int(v) for v in values]
    return _formatted(fmt, len(fields), widths, sum(measure(v)[0] for v in values))


def _format_filter(fmt: Any, *args: Any, **kwargs: Any) -> int:
    return _percent(fmt, kwargs or args)


def _braces(fmt: Any, args: tuple = (), kwargs: Mapping = {}) -> int:  # noqa: B006 - never changed
    """``fmt.format(*args, **kwargs)``: each field holds the value it names, at most as wide as its spec says."""
    try:
        fields = [(name, spec or "") for _, name, spec, _ in string.Formatter().parse(_text(fmt)) if name is not None]
    except ValueError:
        return 0  # malformed: the call itself raises
    widths = [int(n) for _, spec in fields for n in _FIELD_NUMBER.findall(spec)]
    if any("{" in spec for _, spec in fields):  # nested fields such as {:{width}} take widths from the values
        widths += [_int(v) for v in (*args, *kwargs.values())]
    longest = max((measure(v)[0] for v in (*args, *kwargs.values())), default=0)
    texts, automatic = 0, 0
    for name, _ in fields:
        base = _FIELD_BASE.match(name).group()
        if base == "":
            base, automatic = automatic, automatic + 1
        value = args[int(base)] if str(base).isdigit() and int(base) < len(args) else kwargs.get(base, None)
        texts += longest if value is None else measure(value)[0]
    return _formatted(fmt, len(fields), widths, texts)


# Methods of strings, bytes and integers that a template may call, by name.
_METHOD_BOUNDS: dict[str, Callable[..., int]] = {
    "center": _widened, "ljust": _widened, "rjust": _widened, "zfill": _widened, "expandtabs": _tabs,
    "replace": _replaced, "join": lambda separator, items=(): _joined(items, separator), "translate": _translated,
    "format": lambda fmt, *args, **kwargs: _braces(fmt, args, kwargs),
    "format_map": lambda fmt, mapping={}: _braces(fmt, (), mapping),  # noqa: B006
    "to_bytes": lambda number, length=1, *_, **__: _int(length),
}
# Filters (and globals) that can build much more than they are given, by name.
_FILTER_BOUNDS: dict[str, Callable[..., int]] = {
    "center": _widened, "indent": _indented, "wordwrap": _wrapped, "replace": _replaced, "join": _joined,
    "format": _format_filter, "tojson": _printed, "pprint": lambda value, *_: _printed(value, 1),
    "batch": _padded, "slice": _padded, "sum": _summed, "urlize": _linked, "lipsum": _lorem,
}
# Arguments read several times (by the bound and by the operation): a one-pass iterator becomes a list.
_MATERIALISED = {"join", "sum"}


def _bound(bounds: Callable[..., int], args: tuple, kwargs: dict) -> int:
    try:
        return bounds(*args, **kwargs)
    except (TypeError, ValueError, AttributeError):
        return 0  # arguments the operation itself refuses


def _listed(value: Any) -> Any:
    """An iterator as a list (of at most :data:`MAX_SIZE` items); anything else as it is."""
    if isinstance(value, (str, bytes, list, tuple, Mapping, set, frozenset, range, jinja2.Undefined)):
        return value
    try:
        items = list(itertools.islice(value, MAX_SIZE + 1))
    except TypeError:
        return value
    if len(items) > MAX_SIZE:
        raise _too_large(len(items), "a sequence")
    return items


def _bounded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a filter or global) checked: its likely size before it runs, its result's size after."""
    bounds = _FILTER_BOUNDS.get(name)
    skip = 1 if hasattr(function, "jinja_pass_arg") else 0  # the context, environment or eval context Jinja passes

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _step()
        if name in _MATERIALISED and len(args) > skip:
            args = (*args[:skip], _listed(args[skip]), *args[skip + 1:])
        if bounds is not None:
            _check(_bound(bounds, args[skip:], kwargs), f"the result of '{name}'")
        return checked(function(*args, **kwargs), f"the result of '{name}'")

    return bounded


# --- regular expressions -------------------------------------------------------------------------------


def _timed(run: Callable[..., Any], pattern: str, *args: Any) -> Any:
    try:
        return run(pattern, *args, timeout=_remaining_seconds())
    except TimeoutError:
        raise LimitError(f"regular expression {pattern!r} ran longer than {REGEX_SECONDS:g} s (the limit): "
                         "simplify it (nested repetition such as (a+)+ can take exponential time)") from None


def regex_sub(pattern: str, replacement: str, text: str) -> str:
    """``re.sub``, stopped once the replacements would make the text too large."""
    grown = len(text)

    def replace(match: Any) -> str:
        nonlocal grown
        new = match.expand(replacement)
        grown += len(new)
        _check(grown, "a regex_replace result")
        return new

    return _timed(regex.sub, pattern, replace, text)


def regex_findall(pattern: str, text: str) -> list:
    return _timed(regex.findall, pattern, text)


def regex_finditer(pattern: str, text: str) -> list:
    """All matches, as a list (the timeout covers finding them all)."""
    return _timed(lambda *args, timeout: list(regex.finditer(*args, timeout=timeout)), pattern, text)


def regex_error(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid regular expression, or None."""
    try:
        regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _regex_replace(value: Any, pattern: str, replacement: str = "") -> str:
    """``re.sub``: e.g. HellaSwag's bracketed WikiHow artifacts, ``text | regex_replace('\\[.*?\\]', '')``."""
    return regex_sub(pattern, replacement, str(value))


def _regex_findall(value: Any, pattern: str) -> list:
    """``re.findall``: e.g. the "(A) ..." option lines of a BIG-Bench Hard input."""
    return regex_findall(pattern, str(value))


# --- the environment -----------------------------------------------------------------------------------


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles templates whose loops count their steps, and whose literals and ``~`` joins are size-checked.

    Wrapping the iterable of every ``for`` (and the values of every literal) in a call to the environment
    puts the checks inside the template's own code, so a loop is stopped at the step that goes over the
    limit, wherever it is (a macro, a block, a nested loop), and the error carries the template line.
    """

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        node.iter = nodes.Call(nodes.EnvironmentAttribute("counted"), [node.iter], [], None, None, lineno=node.lineno)
        super().visit_For(node, frame)

    def _sized(self, visit: Callable[[Any, Frame], None], node: Any, frame: Frame) -> None:
        self.write("environment.sized(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._sized(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._sized(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "store":  # an assignment target, not a value
            super().visit_Tuple(node, frame)
        else:
            self._sized(super().visit_Tuple, node, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # As Jinja's, with the parts size-checked before they are turned into strings and joined.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment.sized({join}(environment.joinable((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))))")


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}`` passes here before it is turned into text."""
    if value is None:
        raise NullValueError(f"the template printed a null value, which would read 'None' in the prompt "
                             f"({NULL_CAUSE}): give it a value in the data file, or print a default, "
                             "e.g. {{ field or '' }}")
    if not isinstance(value, str):
        size = measure(value)[0]
        _check(size, "a printed value")
        _built(size)
    return value


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the limits of this module on everything a template builds."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"**", "*", "%", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _step()
        if operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
            _check_bits(math.log2(abs(_int(left))) * _int(right), "power")
        if operator == "*":
            if _is_int(left) and _is_int(right):
                _check_bits(abs(_int(left)).bit_length() + abs(_int(right)).bit_length(), "product")
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and _is_int(times):
                    _check(measure(seq)[0] * _int(times), "a repeated sequence")
        if operator == "%" and isinstance(left, (str, bytes)):
            _check(_percent(left, right), "a '%' formatted string")
        return checked(super().call_binop(context, operator, left, right), f"the result of '{operator}'")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
        _step()
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox hands out str.format wrapped
        owner = getattr(method, "__self__", None)
        name = getattr(method, "__name__", "")
        if isinstance(owner, (str, bytes, int)) and name in _METHOD_BOUNDS:
            if name == "join" and args:
                args = (_listed(args[0]), *args[1:])
            _check(_bound(_METHOD_BOUNDS[name], (owner, *args), kwargs), f"the result of '{name}'")
        return checked(super().call(__context, __obj, *args, **kwargs), f"the result of '{name or 'a call'}'")

    def concat(self, pieces: Any) -> str:  # type: ignore[override]
        """Joins a template's (or a macro's, a block's) output, stopping as soon as it grows too large."""
        kept, size = [], 0
        for piece in pieces:
            size += len(piece)
            if size > MAX_SIZE:
                raise LimitError(f"the rendered text grew past {MAX_SIZE} characters (the limit): "
                                 "render less text per document")
            kept.append(piece)
        _built(size)
        return "".join(kept)

    @staticmethod
    def sized(value: Any) -> Any:
        return checked(value, "a literal")

    @staticmethod
    def joinable(parts: tuple) -> tuple:
        if any(part is None for part in parts):
            raise NullValueError(f"'~' joined a null value, which would read 'None' in the text ({NULL_CAUSE}): "
                                 "give it a value in the data file, or join a default, e.g. (field or '')")
        _check(sum(measure(part)[0] for part in parts), "a '~' joined string")
        return parts

    @staticmethod
    def counted(iterable: Any) -> Iterator[Any]:
        for item in iterable:
            _step()
            yield item


def _is_int(value: Any) -> bool:
    """An integer (numpy's too), not a boolean."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _check_bits(bits: float, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise LimitError(f"an integer {what} of about {int(bits)} bits is too large for a template "
                         f"(limit {MAX_INT_BITS} bits): use smaller numbers")


def _sandbox() -> Sandbox:
    env = Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False, finalize=_finalize)
    # ``range`` is deliberately not replaced: the sandbox's own ``range`` refuses huge ranges (MAX_RANGE).
    env.globals.update(letters=LETTERS, enumerate=enumerate, zip=zip, len=len)
    env.filters.update(regex_replace=_regex_replace, regex_findall=_regex_findall)
    env.filters = {name: _bounded(name, function) for name, function in env.filters.items()}
    env.globals["lipsum"] = _bounded("lipsum", generate_lorem_ipsum)
    return env


SANDBOX = _sandbox()


def check_syntax(source: str, *, expression: bool = False) -> None:
    """Parse a template (or an expression) without running it; raises ``jinja2.TemplateSyntaxError``."""
    try:
        if not expression:
            SANDBOX.parse(source)
            return
        parser = Parser(SANDBOX, source, state="variable")
        parser.parse_expression()
        if not parser.stream.eos:
            raise jinja2.TemplateSyntaxError("unexpected text after the expression", parser.stream.current.lineno)
    except (RecursionError, MemoryError):
        raise jinja2.TemplateSyntaxError("nested too deeply", 1) from None


def compile_template(source: str, name: str, filename: str) -> jinja2.Template:
    """A template whose render errors report ``filename`` and its line; raises ``jinja2.TemplateSyntaxError``."""
    try:
        code = SANDBOX.compile(source, name=name, filename=filename)
    except (RecursionError, MemoryError, SyntaxError) as exc:
        if isinstance(exc, jinja2.TemplateSyntaxError):
            raise
        raise jinja2.TemplateSyntaxError("nested too deeply to compile", 1) from None
    return SANDBOX.template_class.from_code(SANDBOX, code, SANDBOX.make_globals(None), None)


def render(template: jinja2.Template, values: dict) -> str:
    with limits():
        return template.render(**values)


def compile_expression(source: str) -> Callable[..., Any]:
    """An expression evaluated within :func:`limits` (an undefined result stays undefined);
    raises ``jinja2.TemplateSyntaxError``."""
    try:
        expression = SANDBOX.compile_expression(source, undefined_to_none=False)
    except (RecursionError, MemoryError, SyntaxError) as exc:
        if isinstance(exc, jinja2.TemplateSyntaxError):
            raise
        raise jinja2.TemplateSyntaxError("nested too deeply to compile", 1) from None

    def evaluate(**values: Any) -> Any:
        with limits():
            return expression(**values)

    return evaluate


def require_defined(value: Any) -> None:
    """An expression gives ``Undefined`` (not an error) for a missing name or key; fail now, not when it is used."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming what is missing
        raise jinja2.UndefinedError("the expression gave an undefined value")
    if isinstance(value, (list, tuple)):
        for item in value:
            require_defined(item)
    elif isinstance(value, dict):
        for item in value.values():
            require_defined(item)


def describe(exc: Exception) -> str:
    """What went wrong in a template or expression, in one line for an error message."""
    if isinstance(exc, jinja2.UndefinedError):
        # "'x' is undefined" is a missing top-level field; "... has no attribute ..." a missing key or attribute.
        top_level = str(exc.message).endswith("is undefined")
        missing = "the document has no such field" if top_level else "no such key or attribute"
        return f"{exc.message} ({missing})"
    if isinstance(exc, NullValueError):
        return str(exc)
    if isinstance(exc, LimitError):
        return f"over a limit of the template sandbox: {exc}"
    if isinstance(exc, SecurityError):
        return f"forbidden by the template sandbox: {exc}"
    if isinstance(exc, RecursionError):
        return "RecursionError: the template recurses too deeply (a macro calling itself without end?)"
    return f"{type(exc).__name__}: {exc}"


# --- paths ---------------------------------------------------------------------------------------------


def inside(folder: Path, name: str | Path) -> Path | None:
    """``folder / name`` with every symbolic link followed, or None when that lies outside ``folder``
    (an absolute ``name``, a ``..`` that climbs out, or a link that leads out)."""
    root = Path(folder).resolve()
    path = (root / name).resolve()
    return path if path.is_relative_to(root) else None


# --- quoting -------------------------------------------------------------------------------------------

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 2, 4, 4, 4


def shown(value: Any) -> str:
    """``repr(value)`` cut short: an error message quotes untrusted values, whatever their size or nesting."""
    return _SHORT.repr(value)
