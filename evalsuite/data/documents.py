"""From the rows a source reads to a split's documents: the source's ``fields`` map, then the split's selection
(``first``, ``rows``, ``fraction``, each optionally in a seeded order, or ``where``). The task-file syntax is
described in :mod:`evalsuite.spec.task`."""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import jinja2

from evalsuite import sandbox
from evalsuite.errors import DataError, SpecError
from evalsuite.spec import Selection


def _compiled(path: Path, field: str, expression: str) -> Any:
    try:
        return sandbox.compile_expression(expression)
    except jinja2.TemplateSyntaxError as exc:
        raise SpecError(f"{path}: field '{field}': invalid expression: {exc.message}") from None


def lay_out(path: Path, field: str, mapping: dict[str, str] | None, rows: Sequence[dict], origin: str) -> list[dict]:
    """The documents made from ``rows`` by ``mapping`` (field name -> Jinja expression), or the rows as they are.

    An expression sees the row's columns by name, the whole row as ``row`` (for a column whose name is not a
    Jinja name, ``row['#1 String']``) and its 0-based position as ``row_index``; a column of either name wins.
    ``field`` is the task file's field holding the map (``source.local.fields``), named in errors with ``path``.
    """
    if mapping is None:
        return list(rows)
    compiled = {name: _compiled(path, f"{field}.{name}", expression) for name, expression in mapping.items()}
    docs = []
    for index, row in enumerate(rows):
        values = {"row": row, "row_index": index, **row}
        doc = {}
        for name, expression in compiled.items():
            try:
                doc[name] = expression(**values)
                sandbox.require_defined(doc[name])
            except Exception as exc:  # noqa: BLE001 - one message naming the task file, field and row
                raise DataError(f"{path}: field '{field}.{name}' on row {index} of {origin}: "
                                f"{sandbox.describe(exc)}") from None
        docs.append(doc)
    return docs


def seeded_order(n: int, seed: int) -> list[int]:
    """Row numbers 0..n-1 ordered by the SHA-256 of ``"<seed>:<row number>"``: the same order on every machine
    and with every library version, and for a longer file the same relative order of the rows it shares."""
    return sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())


def _fraction_row(fraction: float, n: int) -> int:
    """``floor(fraction * n)`` with the fraction read as the decimal written (0.29 * 100 is 29, not 28)."""
    return math.floor(Fraction(repr(fraction)) * n)


def select(path: Path, field: str, selection: Selection | None, docs: list[dict], origin: str
           ) -> tuple[list[dict], str]:
    """The documents ``selection`` keeps (in file order) and the origin that records it."""
    if selection is None:
        return docs, origin
    described = f"{origin} {selection}"
    if selection.where is not None:
        keep = _compiled(path, f"{field}.where", selection.where)
        kept = []
        for number, doc in enumerate(docs):
            try:
                chosen = bool(keep(**doc))
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"{path}: field '{field}.where' on document {number} of {origin}: "
                                f"{sandbox.describe(exc)}") from None
            if chosen:
                kept.append(doc)
        return kept, described
    n = len(docs)
    if selection.rows is not None:
        start, stop = selection.rows
        stop = n if stop is None else stop
        if stop > n or start >= n:
            raise DataError(f"{path}: field '{field}': {selection} asks for rows that {origin} does not have "
                            f"(it has {n}, numbered from 0)")
    else:
        start, stop = (_fraction_row(f, n) for f in selection.fraction)
    order = range(n) if selection.seed is None else seeded_order(n, selection.seed)
    return [docs[i] for i in sorted(order[start:stop])], described
