"""The one registry pattern of heatlab's four extension kinds: models, methods, metrics, datasets.

A :class:`Registry` is an immutable, ordered mapping ``name -> entry`` of one kind; an entry is a
frozen dataclass with a ``name``. Nothing is ever added in place:

- ``registry.register(entry)`` returns a **new** registry with ``entry`` appended (a name may occur
  once); the registry it was called on is unchanged, so a registration is visible exactly where
  the new registry is passed, and a test's toy entry cannot leak into another test;
- ``registry.with_entry_points()`` returns a new registry with the entries that installed
  distributions declare in the entry-point group ``heatlab.<kind>``
  (``[project.entry-points."heatlab.metrics"] my_score = "mypkg.scores:MY_SCORE"``; the object must
  be an entry of the kind, or something the kind's ``adapt`` turns into one).

Each kind keeps its built-in registry as a module constant (``heatlab.score.metrics.METRICS``,
``heatlab.explain.methods.REGISTRY``, ``heatlab.data.registry.DATASETS``,
``heatlab.models.zoo.builtin_models()``) and offers a function for the registry the stages use by default:
the built-ins plus the entry points. A stage that takes a registry argument (``metrics=`` of
``evaluate_run``) uses the one it is given.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from heatlab.errors import HeatlabError

E = TypeVar("E")

#: The kinds that have an entry-point group ``heatlab.<kind>``.
KINDS = ("models", "methods", "metrics", "datasets")


class Registry(Mapping[str, E], Generic[E]):
    """An immutable, ordered ``name -> entry`` mapping of one ``kind`` (see the module docstring).

    entry_type: the class every entry must be an instance of; adapt: ``adapt(name, obj) -> entry``
    for an entry point's object that is not an entry itself (None: such an object is refused).
    """

    __slots__ = ("kind", "entry_type", "adapt", "_by_name")

    def __init__(self, kind: str, entry_type: type, entries: Iterable[E] = (),
                 adapt: Callable[[str, object], E] | None = None):
        by_name: dict[str, E] = {}
        for entry in entries:
            if not isinstance(entry, entry_type):
                raise HeatlabError(f"A {kind} registry holds {entry_type.__name__} entries, got "
                                   f"{type(entry).__name__}; pass a {entry_type.__name__}.")
            name = getattr(entry, "name", None)
            if not isinstance(name, str) or not name:
                raise HeatlabError(f"A {kind} entry needs a non-empty string name, got {name!r}.")
            if name in by_name:
                raise HeatlabError(f"A {kind[:-1]} named {name!r} is already registered; pick another name.")
            by_name[name] = entry
        for slot, value in (("kind", kind), ("entry_type", entry_type), ("adapt", adapt), ("_by_name", by_name)):
            object.__setattr__(self, slot, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"A Registry is immutable; register() returns a new one (tried to set {name}).")

    def __getitem__(self, name: str) -> E:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._by_name)})"

    def __reduce__(self):  # pickles (Ray ships stages holding a registry) as its constructor call
        return (Registry, (self.kind, self.entry_type, tuple(self._by_name.values()), self.adapt))

    @property
    def group(self) -> str:
        """The entry-point group of this kind: ``heatlab.<kind>``."""
        return f"heatlab.{self.kind}"

    def register(self, *entries: E) -> Registry[E]:
        """A new registry: this one's entries, then ``entries`` (HeatlabError for a name already present)."""
        return Registry(self.kind, self.entry_type, (*self._by_name.values(), *entries), self.adapt)

    def with_entry_points(self) -> Registry[E]:
        """A new registry: this one's entries, then those of the ``heatlab.<kind>`` entry points, by name."""
        return self.register(*(self._load(ep) for ep in sorted(entry_points(self.group), key=lambda ep: ep.name)))

    def _load(self, ep: importlib.metadata.EntryPoint) -> E:
        where = f"The {self.group} entry point {ep.name!r} ({ep.value})"
        try:
            obj = ep.load()
        except Exception as exc:  # a plugin may raise anything while importing
            raise HeatlabError(f"{where} failed to load ({type(exc).__name__}: {exc}); fix or uninstall the "
                               "package that declares it.") from None
        if isinstance(obj, self.entry_type):
            return obj
        if self.adapt is not None:
            return self.adapt(ep.name, obj)
        raise HeatlabError(f"{where} gives a {type(obj).__name__}, not a {self.entry_type.__name__}; point it at a "
                           f"{self.entry_type.__name__}.")


def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    """The entry points that installed distributions declare in ``group``."""
    return list(importlib.metadata.entry_points(group=group))
