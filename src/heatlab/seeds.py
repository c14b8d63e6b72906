"""Seeds derived from a run's seed: one stable 63-bit integer per purpose (split, shard, branch, ...).

Below data and models, so both (and every later stage) draw their seeds from the same function.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from ``seed`` and ``parts`` (e.g. split and shard index), stable across runs."""
    text = "/".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
