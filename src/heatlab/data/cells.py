"""Synthetic ten-class cell images with ground-truth heatmaps (paper 002, DESIGN §4.1).

Every length is drawn on the original 512-pixel canvas and every shape is evaluated analytically
at the output pixel centres (rotation and shift included), so ``size`` only changes the sampling
resolution: one seed gives the same picture at 64, 128 or 512 pixels. Nothing is interpolated
except the smooth noise fields, which are bilinear by definition.

Vectorised and chunk-proof: samples are drawn in fixed blocks of parameters (the random stream
never depends on ``size``), rendered class by class in chunks that keep every intermediate tensor
of a few MiB, and every pixel is computed on its own with element-wise IEEE operations
(``+ - * / sqrt``, comparisons, bilinear ``grid_sample``), so the bytes do not depend on chunk sizes
or thread counts. The one transcendental over pixels (the rings' sine) runs in float64 before
rounding to float32, where a last-bit difference between vectorised and scalar code paths is lost.

Tails follow the original (DESIGN §4.1): tail i of k points at 360°·i/k from straight down the cell's
own vertical axis, in the cell frame, so the cell's rotation U(-60°, 60°) turns all of them; each is a
band of the tail thickness along its direction, from 0.8·(vertical stretch)·radius from the centre
(inside the cell) to 1.5·(vertical stretch)·radius plus the border thickness, painted over border
and body in 0.75 × the border colour; the whole tail is the 0.9 region. Like the original, which
draws the cell centred on its 512 canvas, rotates that canvas and then shifts it, a tail loses what
falls off the centred canvas as well as what the shift moves off the image; only one-tailed cells
whose in-frame tail covers under 0.3% of the image are redrawn (three and eight tails never are).
The original thresholds the bilinearly rotated tail at a coverage of about 0.16 (its colour rule),
which widens each tail by 0.5 − coverage canvas pixels on every side; heatlab widens the band by the
same amount (:func:`_tail_widening`). Measured at 512 px, 1,000 cells per class: 0.9-areas T1 0.699%,
T3 1.884%, T8 5.029% of the image, against the original's 0.675%, 1.921% and 5.171% (200 cells per
class, 95% intervals ±5%). Ring backgrounds take the original's centre distribution: U(1/4, 3/4) of
the canvas *from the canvas centre* in each axis (the original's lattice is centred), so the centre
lies below right of the image, often outside it, and the rings appear as fingerprint-like arcs.

The one difference from the original, on purpose: masks are analytic at the pixel centres (the
widened band above stands in for the interpolated one), so ``size`` changes only the sampling.

Ground truth is 0.9 on the discriminative part, 0.4 on the rest of the cell, 0 elsewhere. Parts are
drawn binary with colours whose (1/3)·‖RGB‖₂ is at least 0.11 (see :data:`_SHAPE_SPEC`), so the
paper's rule "a part counts where (1/3)·‖part RGB‖₂ > 0.05" marks exactly the drawn parts.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from heatlab.data.split import TRUTH_LEVELS
from heatlab.errors import HeatlabError

CLASS_NAMES: tuple[str, ...] = (
    "CCell", "CCellM", "CCellP", "RCell", "RCellB", "RCellC", "CCellT1", "CCellT3", "CCellT8", "empty",
)
BACKGROUND_NAMES: tuple[str, ...] = ("black", "blotches", "rings")
TRUTH_VALUES = TRUTH_LEVELS  # one definition: heatlab.data.split
# At 64 px one pixel is 8 canvas pixels: the thinnest borders, bars and tails (10 on the canvas)
# are still 1.25 px wide and the cell 22+ px across, so every class stays recognisable; at 32 px
# they fall below one pixel and break into dots. Poles (5..40) under 512/size can still show gaps.
MIN_SIZE: int = 64
# Bumped whenever the same seed gives other pictures; data/shards.py stores it in the manifest so a
# resumed dataset never mixes shards of two generator versions. 2: tails as the original (from inside
# the cell, same reach every way, one tail pointing down the cell's axis), off-centre rings.
# 3: every tail count at fixed directions in the cell frame, tails clipped to the centred canvas and
# widened as the original's threshold does, only one-tailed cells redrawn.
GENERATOR_VERSION: int = 3

_CANVAS = 512.0
_TAILS = {6: 1, 7: 3, 8: 8}  # class -> number of tails
_RECTS = (3, 4, 5)  # class -> dominant border channel is class - 3
_EMPTY = 9
_WOBBLE_NODES = 16  # wobble grid nodes across: floor(512 / U(31, 64)) is 8..16; stored 16x16
_BLOTCH_NODES = 8  # 512 / 64
_RING_NODES = 16  # 512 / 32
_PARAM_BLOCK = 256  # samples drawn together; a constant, so the stream is the same at every size
_CHUNK_PIXELS = 1 << 19  # samples x pixels per render chunk: 2 MiB per float channel, 12 MiB at most
_CHECK_SIZE = 128  # resolution of the tail-area check (fixed, so redraws do not depend on size)
_MIN_TAIL_FRACTION = 0.003  # redraw a one-tailed cell whose in-frame tail covers less of the image
_REDRAWN = (6,)  # as the original: only CCellT1 is redrawn; three and eight tails are kept as drawn
_TAIL_START = 0.8  # tails run from 0.8 to 1.5 x stretch x radius (+ border thickness) from the centre
_TAIL_REACH = 1.5
_MAX_REDRAWS = 100

# name, low, high, columns. Lengths in canvas pixels, angles in degrees, colours in [0, 1].
_SHAPE_SPEC = (
    ("offset", -0.33 * _CANVAS, 0.33 * _CANVAS, 2),
    ("rotation", -60.0, 60.0, 1),
    ("radius", 90.0, 110.0, 1),
    ("thickness", 10.0, 30.0, 1),
    ("stretch", 0.5, 1.5, 1),
    ("noise_std", 6.0, 12.0, 1),
    ("noise_cell", 31.0, 64.0, 1),
    ("border_rgb", 0.5, 0.9, 3),
    ("inner_rg", 0.1, 0.3, 2),
    ("inner_b", 0.3, 0.5, 1),
    ("bar", 10.0, 30.0, 1),
    ("pole", 5.0, 40.0, 1),
    ("tail", 10.0, 30.0, 1),
    ("sides", 100.0, 200.0, 2),
    ("rect_main", 0.6, 0.9, 1),
    ("rect_other", 0.0, 0.2, 2),
)
_BACKGROUND_SPEC = (
    ("blotch", 0.2, 0.7, 3 * _BLOTCH_NODES**2),
    ("ring_noise", -0.3, 0.3, 3 * _RING_NODES**2),
    ("ring_stretch", 1e-4, 1e-3, 3),
    # as the original: U(1/4, 3/4) of the canvas measured from the canvas centre, so the rings'
    # centre lies below right of the image centre, often outside the image (fingerprint-like arcs)
    ("ring_centre", 0.75 * _CANVAS, 1.25 * _CANVAS, 2),
)


@dataclass
class CellBatch:
    """A batch of cells.

    images: float32 n×3×size×size in [0, 1]; labels: int64 n (index into CLASS_NAMES);
    truth: float32 n×size×size with values in TRUTH_VALUES; backgrounds: int64 n (index into
    BACKGROUND_NAMES); params: per sample, the drawn settings the class uses (lengths and the
    centre in pixels of the 512 canvas, x right and y down; angles in degrees; colours RGB in [0, 1]).
    """

    images: Tensor
    labels: Tensor
    truth: Tensor
    backgrounds: Tensor
    params: list[dict]


def generate(
    n: int,
    *,
    size: int = 128,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    backgrounds: Sequence[int] | None = None,
) -> CellBatch:
    """Draw ``n`` cells at ``size``×``size`` pixels, deterministically from ``seed``.

    Labels are balanced over ``classes`` (default all ten; sample i gets allowed[i % k], then the
    order is shuffled); each background is drawn uniformly from ``backgrounds`` (default all
    three). ``n = 0`` returns an empty batch. Same arguments give the same bytes, and the cells
    (shapes, colours, truth, params) do not depend on ``size`` or on the allowed backgrounds.
    """
    n = _as_int(n, "The number of cells")
    if n < 0:
        raise HeatlabError(f"The number of cells must not be negative, got {n}; pass n >= 1 (0 gives an empty batch).")
    size = _as_int(size, "The image size")
    if size < MIN_SIZE:
        raise HeatlabError(f"Image size {size} is below the minimum {MIN_SIZE}; pass size >= {MIN_SIZE} (default 128).")
    seed = _as_int(seed, "The seed")
    if not 0 <= seed < 2**64:
        raise HeatlabError(f"Seed {seed} is outside 0 .. 2**64 - 1; pass a non-negative integer seed below 2**64.")
    allowed = _allowed(classes, len(CLASS_NAMES), "class")
    allowed_bg = _allowed(backgrounds, len(BACKGROUND_NAMES), "background")

    gen = torch.Generator().manual_seed(seed)
    labels = allowed[torch.arange(n) % len(allowed)][torch.randperm(n, generator=gen)]
    # one uniform per sample whatever the choice: the cells do not depend on the allowed backgrounds
    pick = torch.rand(n, generator=gen).mul(len(allowed_bg)).long().clamp(max=len(allowed_bg) - 1)
    bgs = allowed_bg[pick]
    images = torch.empty(n, 3, size, size)
    truth = torch.empty(n, size, size)
    params: list[dict] = []
    for start in range(0, n, _PARAM_BLOCK):
        lab, bg = labels[start : start + _PARAM_BLOCK], bgs[start : start + _PARAM_BLOCK]
        shape = _draw_shapes(len(lab), gen)
        back = _draw(_BACKGROUND_SPEC, len(lab), gen)
        redraws = _redraw_short_tails(shape, lab, gen)
        out = slice(start, start + len(lab))
        _render_block(shape, back, lab, bg, images[out], truth[out])
        params += _describe(shape, lab, bg, redraws)
    return CellBatch(images=images, labels=labels, truth=truth, backgrounds=bgs, params=params)


# ----------------------------------------------------------------------------- validation


def _as_int(value, what: str) -> int:
    if isinstance(value, bool):
        raise HeatlabError(f"{what} must be an integer, got {value!r}; pass a whole number.")
    try:
        return operator.index(value)
    except TypeError:
        raise HeatlabError(f"{what} must be an integer, got {value!r}; pass a whole number.") from None


def _allowed(values, count: int, what: str) -> Tensor:
    """Validated allowed indices (int64 k); None means all ``count``."""
    if values is None:
        return torch.arange(count)
    if isinstance(values, (str, bytes)):
        raise HeatlabError(f"Allowed {what} indices must be a sequence of integers, got {values!r}; pass e.g. [0, 1].")
    items = [_as_int(v, f"Each {what} index") for v in values]
    if not items:
        raise HeatlabError(f"The list of allowed {what} indices is empty; pass at least one index or None for all.")
    bad = [v for v in items if not 0 <= v < count]
    if bad:
        raise HeatlabError(f"{what.capitalize()} index {bad[0]} is out of range; pass indices from 0 to {count - 1}.")
    if len(set(items)) != len(items):
        raise HeatlabError(f"Allowed {what} indices {items} contain duplicates; pass each index once.")
    return torch.tensor(items, dtype=torch.int64)


# ----------------------------------------------------------------------------- random settings


def _draw(spec, m: int, gen: torch.Generator) -> dict[str, Tensor]:
    """Uniform draws for ``spec``: name -> m (one column) or m×columns, float32."""
    u = torch.rand(m, sum(s[3] for s in spec), generator=gen)
    out, col = {}, 0
    for name, lo, hi, width in spec:
        x = lo + (hi - lo) * u[:, col : col + width]
        out[name] = x[:, 0] if width == 1 else x
        col += width
    return out


def _draw_shapes(m: int, gen: torch.Generator) -> dict[str, Tensor]:
    """Every shape setting for m samples (all classes use the same stream layout)."""
    shape = _draw(_SHAPE_SPEC, m, gen)
    shape["noise"] = torch.randn(m, 3, _WOBBLE_NODES, _WOBBLE_NODES, generator=gen)
    return shape


def _take(d: dict[str, Tensor], idx: Tensor) -> dict[str, Tensor]:
    return {k: v[idx] for k, v in d.items()}


def _redraw_short_tails(shape: dict[str, Tensor], labels: Tensor, gen: torch.Generator) -> Tensor:
    """Redraw (in place, position included) cells of :data:`_REDRAWN` whose in-frame tails cover under
    :data:`_MIN_TAIL_FRACTION` of the image; -> redraws per sample (m)."""
    redraws = torch.zeros(len(labels), dtype=torch.int64)
    todo = torch.isin(labels, torch.tensor(_REDRAWN)).nonzero().flatten()
    for _ in range(_MAX_REDRAWS):
        if len(todo) == 0:
            break
        short = torch.zeros(len(todo), dtype=torch.bool)
        for cls in _REDRAWN:
            for part in _chunks((labels[todo] == cls).nonzero().flatten(), _CHECK_SIZE):
                short[part] = _tail_area(_take(shape, todo[part]), _TAILS[cls], _CHECK_SIZE) < _MIN_TAIL_FRACTION
        todo = todo[short]
        if len(todo):
            for key, value in _draw_shapes(len(todo), gen).items():
                shape[key][todo] = value
            redraws[todo] += 1
    return redraws


# ----------------------------------------------------------------------------- geometry


def _col(x: Tensor) -> Tensor:
    """Per-sample values m -> m×1×1, to broadcast over pixels."""
    return x.view(-1, 1, 1)


def _cos_sin(degrees: Tensor) -> tuple[Tensor, Tensor]:
    # float64 then float32: per-sample values, identical however many samples share the call
    rad = torch.deg2rad(degrees.double())
    return rad.cos().float(), rad.sin().float()


def _pixel_centres(size: int) -> Tensor:
    """Canvas coordinates of the pixel centres (size,)."""
    return (torch.arange(size, dtype=torch.float64) + 0.5).mul(_CANVAS / size).float()


def _bilinear(grid: Tensor, fx: Tensor, fy: Tensor) -> Tensor:
    """Sample ``grid`` (m×C×G×G) at fractional node indices fx, fy (broadcastable to m×S×S, inside
    the grid) -> m×C×S×S. ``grid_sample`` computes each pixel on its own, so chunks do not matter."""
    m, _, _, g = grid.shape
    fx, fy = torch.broadcast_tensors(fx, fy)
    coords = torch.stack([fx, fy], -1).mul(2.0 / (g - 1)).sub(1.0).expand(m, -1, -1, -1)
    return F.grid_sample(grid, coords, mode="bilinear", padding_mode="border", align_corners=True)


def _unshifted(shape: dict[str, Tensor], size: int) -> tuple[Tensor, Tensor]:
    """Pixel centres relative to the cell centre (m×1×S and m×S×1, canvas px): the shift undone."""
    p = _pixel_centres(size)
    return (p.view(1, 1, -1) - _col(shape["offset"][:, 0] + _CANVAS / 2),
            p.view(1, -1, 1) - _col(shape["offset"][:, 1] + _CANVAS / 2))


def _unrotated(shape: dict[str, Tensor], px: Tensor, py: Tensor) -> tuple[Tensor, Tensor]:
    """``px, py`` with the cell's rotation undone: cell-frame coordinates u, v (m×S×S)."""
    cos, sin = (_col(t) for t in _cos_sin(shape["rotation"]))
    return cos * px + sin * py, cos * py - sin * px


def _on_centred_canvas(shape: dict[str, Tensor], size: int) -> Tensor:
    """Pixels the original can show, m×S×S bool: it draws the cell centred and unrotated on the
    512 canvas, rotates that canvas and then shifts it, so a pixel is lost when it lies off the
    canvas before the shift or before the rotation (only tails reach that far)."""
    px, py = _unshifted(shape, size)
    u, v = _unrotated(shape, px, py)
    half = _CANVAS / 2
    return (px.abs() <= half) & (py.abs() <= half) & (u.abs() <= half) & (v.abs() <= half)


def _local_frame(shape: dict[str, Tensor], size: int, channels: slice) -> tuple[Tensor, Tensor, Tensor]:
    """Cell-frame coordinates u, v of every pixel (m×S×S, canvas px: the cell's shift and rotation
    undone) and the wobble noise fields ``channels`` there (m×c×S×S, canvas px), so the noise
    moves and turns with the cell as in the original."""
    u, v = _unrotated(shape, *_unshifted(shape, size))
    nodes = _col(torch.floor(_CANVAS / shape["noise_cell"]))
    last = nodes - 1

    def node(a: Tensor) -> Tensor:  # canvas coordinate -> node index (pixel-centre convention)
        return torch.minimum(torch.clamp((a + _CANVAS / 2) * nodes / _CANVAS - 0.5, min=0), last)

    wobble = _bilinear(shape["noise"][:, channels], node(u), node(v)) * _col(shape["noise_std"]).unsqueeze(1)
    return u, v, wobble


def _ellipse(shape: dict[str, Tensor], u: Tensor, v: Tensor, wobble: Tensor) -> tuple[Tensor, Tensor]:
    """Cell (border and inside) and inside masks, m×S×S bool; wobble m×S×S added to the distance."""
    d = torch.sqrt(u * u + (v / _col(shape["stretch"])) ** 2) + wobble
    radius = _col(shape["radius"])
    return d <= radius, d < radius - _col(shape["thickness"])


def _skeleton(shape: dict[str, Tensor], u: Tensor, v: Tensor, pole: bool) -> Tensor:
    """Horizontal bar across the cell (and the vertical pole), m×S×S bool, on wobbled coordinates."""
    radius = _col(shape["radius"])
    mask = (u.abs() <= radius) & (v.abs() <= _col(shape["bar"]) / 2)
    if pole:
        mask |= (v.abs() <= radius * _col(shape["stretch"])) & (u.abs() <= _col(shape["pole"]) / 2)
    return mask


def _tail_widening(shape: dict[str, Tensor]) -> Tensor:
    """How far each tail reaches beyond its band on every side (canvas px, m), as in the original.

    The original rotates the painted canvas with bilinear interpolation and counts a pixel as tail
    where (1/3)·‖RGB‖₂ > 0.05, i.e. where the tail's coverage c exceeds 0.05·3 / ‖0.75·border RGB‖₂
    (about 0.16). Across an edge the interpolated coverage falls linearly over one canvas pixel from
    the band's last pixel centre, so the counted edge lies 0.5 − c past the band's own edge.
    """
    coverage = 0.15 / (0.75 * shape["border_rgb"].norm(dim=1))
    return (0.5 - coverage).clamp(min=0)


def _tail_masks(shape: dict[str, Tensor], u: Tensor, v: Tensor, k: int, canvas: Tensor) -> list[Tensor]:
    """k tails, m×S×S bool each, on the pixels of ``canvas`` (:func:`_on_centred_canvas`). As the
    original, tail i points at 90° + 360°·i/k in the cell frame (90° = down the cell's vertical axis,
    so the cell's rotation turns them) and is a band of the tail thickness along its direction from
    0.8·stretch·radius (inside the cell) to 1.5·stretch·radius plus the border thickness, widened
    by :func:`_tail_widening`."""
    masks = []
    grow = _tail_widening(shape)
    half = _col(shape["tail"] / 2 + grow)
    sr = shape["stretch"] * shape["radius"]
    start, reach = _col(_TAIL_START * sr - grow), _col(_TAIL_REACH * sr + shape["thickness"] + grow)
    for i in range(k):
        cos, sin = (_col(t) for t in _cos_sin(torch.full_like(sr, 90.0 + 360.0 * i / k)))
        along, across = cos * u + sin * v, cos * v - sin * u
        masks.append((along >= start) & (along <= reach) & (across.abs() <= half) & canvas)
    return masks


def _tail_area(shape: dict[str, Tensor], k: int, size: int) -> Tensor:
    """Fraction of the image the k tails (whole, painted, in frame) cover together, m."""
    u, v, wobble = _local_frame(shape, size, slice(1, 3))
    tails = _tail_masks(shape, u + wobble[:, 0], v + wobble[:, 1], k, _on_centred_canvas(shape, size))
    return functools.reduce(operator.or_, tails).sum((1, 2)).float() / (size * size)


# ----------------------------------------------------------------------------- painting


def _paint(image: Tensor, mask: Tensor, rgb: Tensor) -> Tensor:
    """image m×3×S×S with per-sample colour rgb (m×3) where mask (m×S×S)."""
    return torch.where(mask.unsqueeze(1), rgb.view(-1, 3, 1, 1), image)


def _draw_cells(shape: dict[str, Tensor], cls: int, size: int) -> tuple[Tensor, Tensor]:
    """One class's cells on black: image m×3×S×S and truth m×S×S. Bars, poles and tails are painted
    over the cell, and their whole painted area is the 0.9 region."""
    m = len(shape["radius"])
    image = torch.zeros(m, 3, size, size)
    if cls == _EMPTY:
        return image, torch.zeros(m, size, size)
    inner_rgb = torch.cat([shape["inner_rg"], shape["inner_b"][:, None]], 1)
    if cls in _RECTS:
        u, v, wobble = _local_frame(shape, size, slice(1, 3))
        u, v = (u + wobble[:, 0]).abs(), (v + wobble[:, 1]).abs()
        w, h, t = _col(shape["sides"][:, 0] / 2), _col(shape["sides"][:, 1] / 2), _col(shape["thickness"])
        cell = (u <= w) & (v <= h)
        inner = (u <= w - t) & (v <= h - t)
        main, other = cls - _RECTS[0], shape["rect_other"]
        rect_rgb = torch.cat([other[:, :main], shape["rect_main"][:, None], other[:, main:]], 1)
        image = _paint(_paint(image, cell, rect_rgb), inner, inner_rgb)
        return image, _truth(cell, cell & ~inner)
    u, v, wobble = _local_frame(shape, size, slice(0, 1 if cls == 0 else 3))
    cell, inner = _ellipse(shape, u, v, wobble[:, 0])
    border_rgb = shape["border_rgb"]
    image = _paint(_paint(image, cell, border_rgb), inner, inner_rgb)
    if cls == 0:
        return image, _truth(cell, cell & ~inner)
    u, v = u + wobble[:, 1], v + wobble[:, 2]
    if cls in _TAILS:
        tails = _tail_masks(shape, u, v, _TAILS[cls], _on_centred_canvas(shape, size))
        disc = functools.reduce(operator.or_, tails)
        return _paint(image, disc, 0.75 * border_rgb), _truth(cell, disc)
    disc = _skeleton(shape, u, v, pole=cls == 2)
    return _paint(image, disc, border_rgb), _truth(cell, disc)


def _truth(cell: Tensor, disc: Tensor) -> Tensor:
    """0.9 on the discriminative part, 0.4 on the rest of the cell, 0 elsewhere; m×S×S float32."""
    zero, loc, dis = (torch.tensor(t, dtype=torch.float32) for t in TRUTH_VALUES)
    return torch.where(disc, dis, torch.where(cell, loc, zero))


def _background(back: dict[str, Tensor], kind: int, size: int) -> Tensor:
    """Background ``kind`` (1 blotches, 2 rings) for m samples, m×3×S×S."""
    m = len(back["ring_stretch"])
    p = _pixel_centres(size)
    if kind == 1:
        node = ((p * _BLOTCH_NODES / _CANVAS) - 0.5).clamp(0, _BLOTCH_NODES - 1)
        grid = back["blotch"].view(m, 3, _BLOTCH_NODES, _BLOTCH_NODES)
        return _bilinear(grid, node.view(1, 1, -1), node.view(1, -1, 1))
    node = ((p * _RING_NODES / _CANVAS) - 0.5).clamp(0, _RING_NODES - 1)
    grid = back["ring_noise"].view(m, 3, _RING_NODES, _RING_NODES)
    distort = _bilinear(grid, node.view(1, 1, -1), node.view(1, -1, 1))
    dx = p.view(1, 1, -1) - _col(back["ring_centre"][:, 0])
    dy = p.view(1, -1, 1) - _col(back["ring_centre"][:, 1])
    d = torch.sqrt(dx * dx + dy * dy).unsqueeze(1)
    phase = back["ring_stretch"].view(m, 3, 1, 1) * (d + distort * d) * (180 / math.pi)
    # the one pixel-wise transcendental: in float64, vectorised and scalar paths round to one float32
    return (0.25 * torch.sin(phase.double()) + 0.25).float()


def _chunks(idx: Tensor, size: int) -> list[Tensor]:
    """Split sample indices into render chunks for ``size``-pixel images."""
    step = max(1, _CHUNK_PIXELS // (size * size))
    return list(idx.split(step))


def _render_block(shape, back, labels: Tensor, bgs: Tensor, images: Tensor, truth: Tensor) -> None:
    """Draw one block of samples into ``images`` (m×3×S×S) and ``truth`` (m×S×S) in place."""
    size = images.shape[-1]
    for cls in labels.unique().tolist():
        for part in _chunks((labels == cls).nonzero().flatten(), size):
            image, cell_truth = _draw_cells(_take(shape, part), cls, size)
            for kind in (1, 2):
                sel = (bgs[part] == kind).nonzero().flatten()
                if len(sel):
                    cell = image.index_select(0, sel)
                    fill = _background(_take(back, part[sel]), kind, size)
                    image.index_copy_(0, sel, torch.where(cell < 0.01, cell + fill, cell).clamp_(0, 1))
            images.index_copy_(0, part, image)
            truth.index_copy_(0, part, cell_truth)


# ----------------------------------------------------------------------------- description


def _describe(shape: dict[str, Tensor], labels: Tensor, bgs: Tensor, redraws: Tensor) -> list[dict]:
    """Per-sample JSON-ready settings, only those the sample's class uses."""
    s = {k: v.tolist() for k, v in shape.items() if k != "noise"}
    nodes = torch.floor(_CANVAS / shape["noise_cell"]).long().tolist()
    out = []
    for i, (cls, bg) in enumerate(zip(labels.tolist(), bgs.tolist())):
        p: dict = {"class": CLASS_NAMES[cls], "label": cls, "background": BACKGROUND_NAMES[bg]}
        if cls != _EMPTY:
            p.update(centre=[_CANVAS / 2 + o for o in s["offset"][i]], rotation_deg=s["rotation"][i],
                     border_thickness=s["thickness"][i], noise_std=s["noise_std"][i], noise_nodes=nodes[i],
                     inner_rgb=s["inner_rg"][i] + [s["inner_b"][i]])
        if cls in _RECTS:
            rgb = list(s["rect_other"][i])
            rgb.insert(cls - _RECTS[0], s["rect_main"][i])
            p.update(width=s["sides"][i][0], height=s["sides"][i][1], border_rgb=rgb)
        elif cls != _EMPTY:
            p.update(radius=s["radius"][i], vertical_stretch=s["stretch"][i], border_rgb=s["border_rgb"][i])
        if cls in (1, 2):
            p["bar_thickness"] = s["bar"][i]
        if cls == 2:
            p["pole_thickness"] = s["pole"][i]
        if cls in _TAILS:
            p.update(tails=_TAILS[cls], tail_thickness=s["tail"][i], tail_phase_deg=90.0,
                     redraws=int(redraws[i]))
        out.append(p)
    return out
