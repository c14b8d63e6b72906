"""Griffe extension: show the Sphinx roles of heatlab's docstrings as inline code.

heatlab's docstrings are Google style with Sphinx cross-reference roles (``:func:`cam_layer```,
``:mod:`heatlab.explain.presets```). mkdocstrings renders Markdown, where a role would print
literally, so each role becomes the code span of its target (a leading ``~`` or ``.`` dropped).
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|data|attr|obj|exc|const):`~?\.?([^`]+)`")


def strip_roles(text: str) -> str:
    return ROLE.sub(lambda m: f"`{m.group(1)}`", text)


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = strip_roles(obj.docstring.value)
