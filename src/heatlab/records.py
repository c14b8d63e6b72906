"""Typed reading of the JSON records heatlab stores (config.json, stage summaries, checkpoint metadata).

A record is checked against a *schema* when it is read, so a damaged or hand-edited file is one
sentence naming the file, the field and the fix, and no field of the wrong type reaches a stage or
a page. A schema is a dict from key to kind; a key ending in ``?`` may be missing or null. Kinds:

- ``int`` (a whole number, not a bool), ``float`` (any real number, not a bool), ``str``, ``bool``,
  ``dict``, ``list``, ``None`` and ``Any``;
- a nested schema (a dict), ``list[K]``, ``dict[str, K]`` (every value of kind K) and unions ``K1 | K2``.

Keys a schema does not name are kept unchecked (newer writers may add fields).
"""

from __future__ import annotations

import json
import os
import types
import typing
from typing import Any, Mapping

from heatlab.errors import HeatlabError
from heatlab.files import read_json

_NAMES = {int: "a whole number", float: "a number", str: "a text", bool: "true or false", dict: "an object",
          list: "a list", type(None): "null"}


def _describe(kind: Any) -> str:
    if isinstance(kind, dict):
        return "an object"
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return "a list"
    if typing.get_origin(kind) is dict:
        return "an object"
    return _NAMES.get(kind if kind is not None else type(None), getattr(kind, "__name__", str(kind)))


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def _problem(value: Any, kind: Any, where: str) -> tuple[str, str, Any] | None:
    """The first place in ``value`` that does not fit ``kind``: (where, expected kind, value found), else None."""
    if kind is Any:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        if any(_problem(value, k, where) is None for k in typing.get_args(kind)):
            return None
        return where, _describe(kind), value
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            return where, "an object", value
        for key, sub in kind.items():
            name, optional = (key[:-1], True) if key.endswith("?") else (key, False)
            if optional and value.get(name) is None:
                continue
            if name not in value:
                return f"{where}.{name}".lstrip("."), "missing", None
            if (found := _problem(value[name], sub, f"{where}.{name}".lstrip("."))) is not None:
                return found
        return None
    if origin is list:
        if not isinstance(value, list):
            return where, "a list", value
        (item,) = typing.get_args(kind)
        return next((p for i, v in enumerate(value) if (p := _problem(v, item, f"{where}[{i}]")) is not None), None)
    if origin is dict:
        if not isinstance(value, dict):
            return where, "an object", value
        item = typing.get_args(kind)[1]
        return next((p for k, v in value.items() if (p := _problem(v, item, f"{where}.{k}".lstrip("."))) is not None),
                    None)
    if kind is None or kind is type(None):
        return None if value is None else (where, "null", value)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    return None if ok else (where, _describe(kind), value)


def check_record(record: Any, schema: Mapping[str, Any], *, path: str | os.PathLike, fix: str) -> dict:
    """``record`` when it fits ``schema``, else one HeatlabError naming ``path``, the field and ``fix``."""
    found = _problem(record, dict(schema), "")
    if found is None:
        return record
    where, expected, value = found
    if not where:
        raise HeatlabError(f"'{path}' holds {_describe(type(record))} where a JSON object is expected; {fix}.")
    if expected == "missing":
        raise HeatlabError(f"'{path}' lacks the field {where}; {fix}.")
    raise HeatlabError(f"'{path}' has {where} = {_show(value)} where {expected} is expected; {fix}.")


def read_record(path: str | os.PathLike, schema: Mapping[str, Any], *,
                fix: str = "delete it and run the step that writes it again") -> dict:
    """Read the JSON object at ``path`` (see :func:`heatlab.files.read_json`) and check it against ``schema``."""
    return check_record(read_json(path, fix=fix), schema, path=path, fix=fix)
