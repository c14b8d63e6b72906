"""Which methods a stage runs: ``--methods`` text -> validated method names.

``"all"`` is the default set (:data:`heatlab.explain.methods.DEFAULT_METHODS`, the papers' eleven);
a comma-separated list names methods of the registry, NoiseTunnel's short names or
``<short name>-<base>``. Every stage that takes ``--methods`` parses it here.
"""

from __future__ import annotations

from collections.abc import Sequence

from heatlab.errors import HeatlabError
from heatlab.explain.methods import DEFAULT_METHODS, NOISE_TUNNEL_NAMES, OPT_IN_TEXT, REGISTRY, is_method, lookup


def needs_image(method: str) -> bool:
    """True for methods that only work on N×C×H×W images (the CAM methods)."""
    return bool(getattr(lookup(method)[0], "needs_layer", False))


def parse_methods(text: str | Sequence[str], input_kind: str = "image") -> list[str]:
    """``"all"`` (the default set) or a comma-separated list of method names -> validated list:
    registry order, then opt-in names (NoiseTunnel's short names) in the order given.

    The opt-in methods (:data:`heatlab.explain.methods.OPT_IN_METHODS`) run only when named. For
    table data ``"all"`` leaves out the methods that need images; naming one is an error.
    """
    names = [m.strip() for m in text.split(",")] if isinstance(text, str) else list(text)
    if names == ["all"]:
        return [m for m in DEFAULT_METHODS if input_kind == "image" or not needs_image(m)]
    for m in names:  # a NoiseTunnel name over a base it cannot smooth says so
        if isinstance(m, str) and m.partition("-")[0] in NOISE_TUNNEL_NAMES and "-" in m:
            lookup(m)
    unknown = [m for m in names if not is_method(m)]
    if unknown or not names:
        raise HeatlabError(f"Unknown method {', '.join(unknown) or '(none)'}; choose from {', '.join(DEFAULT_METHODS)} "
                           f"or 'all', or the opt-in {OPT_IN_TEXT}.")
    if input_kind != "image" and (bad := [m for m in names if needs_image(m)]):
        raise HeatlabError(f"{', '.join(bad)} need image inputs but this run's data is a table; choose other methods.")
    return [m for m in REGISTRY if m in names] + list(dict.fromkeys(m for m in names if m not in REGISTRY))


def keep_methods(asked: list[str], earlier: Sequence[str], input_kind: str) -> list[str]:
    """``asked`` plus those ``earlier`` methods that still exist and apply, in :func:`parse_methods` order."""
    kept = [m for m in earlier if is_method(m) and (input_kind == "image" or not needs_image(m))]
    return parse_methods(list(dict.fromkeys([*asked, *kept])), input_kind)
