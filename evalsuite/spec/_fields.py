"""Small typed readers for mappings parsed from YAML: each failure names the file and the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evalsuite.errors import SpecError

_MISSING = object()


def read_yaml(path: Path, text: str | None = None, what: str = "YAML") -> Any:
    """Safe-load YAML (no Python object tags); a syntax error names the file, line and ``what`` was read."""
    try:
        source = path.read_text(encoding="utf-8") if text is None else text
    except OSError as exc:
        raise SpecError(f"{path}: cannot read file ({exc.strerror})") from None
    try:
        return yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}:{where}: invalid {what}: {problem}") from None


class Fields:
    """A YAML mapping being read into a spec; tracks which keys were consumed to reject unknown ones."""

    def __init__(self, data: Any, path: Path, where: str = ""):
        if not isinstance(data, dict):
            raise SpecError(f"{path}: {where or 'top level'} must be a mapping, got {type(data).__name__}")
        self.data, self.path, self.where, self.used = data, path, where, set()

    def field(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.path}: field '{self.field(key)}': {message}")

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
            raise self.error(key, f"expected {_names(kinds)}, got {type(value).__name__} {value!r}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self.get(key, str, default)
        if value not in allowed:
            raise self.error(key, f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def strings(self, key: str, default: Any = _MISSING) -> tuple[str, ...] | None:
        value = self.get(key, (list, str), default)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        for item in value:
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                raise self.error(key, f"expected a list of strings, got item {item!r}")
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
