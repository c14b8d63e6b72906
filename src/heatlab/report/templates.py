"""The report's one escaping layer: every HTML page and fragment heatlab writes is a Jinja2 template
rendered here with autoescape on, so every value from a run (names, paths, numbers, messages) reaches
the page as text, never as markup.

- :func:`render` renders a template file of ``heatlab/report/templates/`` (by name, e.g.
  ``"page.html"``) or a template source string (a section's fragment) and returns
  :class:`markupsafe.Markup`. Only what this function returns is passed on as ready HTML; every other
  value given to a template is escaped.
- Number formats are filters: ``num`` (3 decimals, NaN/None as an en dash), ``g`` (Python's ``:g``, or ``g(".3g")``)
  and ``pct`` (a fraction as a whole percentage); a value that is not a number passes as its text
  (and is then escaped like any other).
- ``templates/macros.html`` holds the shared pieces: ``note``, ``figure`` (its caption is the call
  block), ``table``.

This module imports nothing of heatlab; :mod:`heatlab.report.page` builds on it.
"""

from __future__ import annotations

import functools
import math
import numbers

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup


def _real(value: object) -> float | None:
    """``value`` as a float when it is a real number (not bool, not text), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def number(value: object) -> str:
    """A number with 3 decimals; NaN or None as an en dash; anything else as its text (unescaped)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return str(value)
    return "–" if math.isnan(x) else f"{x:.3f}"


def general(value: object, spec: str = "g") -> str:
    """A real number in Python's format ``spec`` (``:g`` by default, e.g. ".3g"); anything else as its
    text (unescaped)."""
    x = _real(value)
    return str(value) if x is None else format(x, spec)


def percent(value: object) -> str:
    """A fraction as a whole percentage (0.25 -> "25%"); anything else as its text (unescaped)."""
    x = _real(value)
    return str(value) if x is None else f"{x:.0%}"


ENV = Environment(
    loader=PackageLoader("heatlab.report", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
ENV.filters.update(num=number, g=general, pct=percent)
ENV.policies["json.dumps_kwargs"] = {"separators": (",", ":")}  # |tojson: compact (it writes <, >, &, ' as JSON escapes)


def template_text(name: str) -> str:
    """The text of file ``name`` under ``templates/`` as it is (a style sheet, a script)."""
    return ENV.loader.get_source(ENV, name)[0]


@functools.lru_cache(maxsize=None)
def _from_source(source: str):
    return ENV.from_string(source)


def render(name_or_source: str, /, **values) -> Markup:
    """Render template file ``name_or_source`` (a name under ``templates/``) or template source text
    with ``values``; every value is escaped unless it is Markup this function returned."""
    is_source = "{" in name_or_source or "<" in name_or_source or "\n" in name_or_source
    template = _from_source(name_or_source) if is_source else ENV.get_template(name_or_source)
    return Markup(template.render(**values))
