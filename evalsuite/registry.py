"""Registries: the names a run or a task may give an engine, a data format or a metric.

Built-ins register themselves when their module is imported (``register_engine``, ``register_format``,
``register_metric``). Another package adds its own without editing evalsuite: it declares an entry point in
the registry's group, named after what it registers, e.g. in its ``pyproject.toml``::

    [project.entry-points."evalsuite.metrics"]
    balanced_accuracy = "my_package.metrics"

Entry points are read only when a name is not registered: the one of that name is loaded, which imports its
module and so runs its ``register_*`` calls. (An entry point may also name the object itself,
``"my_package.metrics:BALANCED"``; it is then registered under the entry point's name.) Built-in names come
first: an entry point cannot replace one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from types import ModuleType
from typing import TypeVar

from evalsuite.errors import EvalsuiteError

T = TypeVar("T")


class Registry(Mapping[str, T]):
    """Names -> registered objects of one kind. As a mapping it holds what is registered so far; :meth:`resolve`
    also loads entry points.

    ``kind`` names one object in messages ("data format"), ``group`` is the entry-point group and ``error`` the
    exception raised for an unknown or duplicate name.
    """

    def __init__(self, kind: str, group: str, error: type[EvalsuiteError]):
        self.kind, self.group, self.error = kind, group, error
        self._registered: dict[str, T] = {}

    def __getitem__(self, name: str) -> T:
        return self._registered[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._registered)

    def __len__(self) -> int:
        return len(self._registered)

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name`` and return it; a name another object holds is refused."""
        held = self._registered.get(name)
        if held is not None and held is not obj:
            held_by = f" by {_origin(held)}" if _origin(held) else ""
            raise self.error(f"{self.kind} {name!r} is already registered{held_by}: "
                             f"register {_origin(obj) or 'the new one'} under another name")
        self._registered[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """:meth:`add` as a decorator."""
        return lambda obj: self.add(name, obj)

    def names(self) -> list[str]:
        """Every name a run may use: those registered and those of the group's entry points, sorted."""
        return sorted(set(self._registered) | {point.name for point in metadata.entry_points(group=self.group)})

    def resolve(self, name: str) -> T:
        """The object registered as ``name``, after loading the entry point of that name if it is not yet
        registered; an unknown name raises ``error`` listing the known ones."""
        if name not in self._registered:
            self._load(name)
        if name not in self._registered:
            raise self.error(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}")
        return self._registered[name]

    def _load(self, name: str) -> None:
        point = next((p for p in metadata.entry_points(group=self.group) if p.name == name), None)
        if point is None:
            return
        where = f"entry point '{point.name} = {point.value}' (group {self.group})"
        try:
            loaded = point.load()
        except Exception as exc:  # noqa: BLE001 - whatever a plugin raises on import, name the plugin
            raise self.error(f"{self.kind} {name!r}: cannot load {where}: {type(exc).__name__}: {exc}") from exc
        if name not in self._registered and not isinstance(loaded, ModuleType):
            self.add(name, loaded)
        if name not in self._registered:
            raise self.error(f"{where} registers no {self.kind} named {name!r}")


def _origin(obj: object) -> str:
    """Where a class or function was defined, ``module.qualname``; "" for other objects."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else ""
