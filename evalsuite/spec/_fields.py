"""Small typed readers for mappings parsed from YAML: each failure names the file and the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evalsuite.errors import SpecError
from evalsuite.sandbox import shown

_MISSING = object()
# Task and prompt files are a few kilobytes; the pure-Python YAML parser needs seconds for much more.
MAX_FILE_BYTES = 100_000


def read_text(path: Path, what: str = "file") -> str:
    """A task or prompt file's text: UTF-8, at most :data:`MAX_FILE_BYTES`; otherwise a SpecError naming it."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read {what} ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(f"{path}: the {what} is larger than {MAX_FILE_BYTES} bytes (the limit): make it smaller")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(f"{path}: line {line}: the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x}): "
                        "save it as UTF-8") from None


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases: ``*name`` could expand a few lines into billions of items ("billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed: write the value out", event.start_mark
            )
        return super().compose_node(parent, index)


def read_yaml(path: Path, text: str | None = None, what: str = "YAML") -> Any:
    """Safe-load YAML (no Python object tags, no aliases); a syntax error names the file, line and ``what`` was read."""
    source = read_text(path, "task file") if text is None else text
    try:
        return yaml.load(source, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}:{where}: invalid {what}: {problem}") from None
    except RecursionError:
        raise SpecError(f"{path}: invalid {what}: nested too deeply") from None


class Fields:
    """A YAML mapping being read into a spec; tracks which keys were consumed to reject unknown ones."""

    def __init__(self, data: Any, path: Path, where: str = ""):
        if not isinstance(data, dict):
            raise SpecError(f"{path}: {where or 'top level'} must be a mapping, got {type(data).__name__}")
        self.data, self.path, self.where, self.used = data, path, where, set()

    def field(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str) -> SpecError:
        field = str(self.field(key))
        field = field if len(field) <= 120 else field[:117] + "..."  # a key may be any text of the file
        return SpecError(f"{self.path}: field '{field}': {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"expected {_names(kinds)}, got a boolean")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.error(key, f"expected {_names(kinds)}, got {type(value).__name__} {shown(value)}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self.get(key, str, default)
        if value not in allowed:
            raise self.error(key, f"must be one of {', '.join(allowed)}; got {shown(value)}")
        return value

    def strings(self, key: str, default: Any = _MISSING) -> tuple[str, ...] | None:
        value = self.get(key, (list, str), default)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        for item in value:
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                raise self.error(key, f"expected a list of strings, got item {shown(item)}")
        return tuple(str(item) for item in value)

    def sub(self, key: str, default: Any = _MISSING) -> Fields | None:
        value = self.get(key, dict, default)
        return None if value is None else Fields(value, self.path, self.field(key))

    def finish(self) -> None:
        """Reject keys nobody read: a typo must not be silently ignored."""
        unknown = sorted(set(self.data) - self.used, key=str)  # keys may be numbers: YAML allows them
        if unknown:
            known = ", ".join(sorted(map(str, self.used)))
            raise self.error(unknown[0], f"unknown key (known keys here: {known})")


def _names(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a mapping", bool: "true/false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
