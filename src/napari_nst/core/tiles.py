"""Tiled evaluation: the objective and its gradient computed tile by tile, in memory bounded by the tile.

Departure from the paper (an option, ``Options.tile_size``; None = the whole image at once, the
paper's way). The image is cut into square *cores* on a grid; each core is evaluated with a halo
of context around it (``tile_size`` = core + 2 x halo, clipped at the image's edges) and only the
core's features enter the loss. Tiles start on the deepest layer's feature grid (16 px up to
relu5_1), so a tile's features are the whole image's, except near the tile's edge where the
network sees the halo's end instead of the rest of the image. Tiles at the image's edges keep
their full size and take more context from inside the image. Each tile's loss is the seed's
objective on that tile::

    L_t = a * 1/2 sum_core (F - P)^2 + b * sum_l w_l (M_t / M) L_GM(G_t, A (M_t / M), N_l, M_t)

where ``G_t`` is the Gram matrix of the core's ``M_t`` positions and ``A`` the whole style image's
Gram at the working scale (computed once, tile by tile). ``A (M_t / M)`` is the style target
scaled to the tile's number of positions, so ``L_GM`` compares ``G_t / M_t`` with ``A / M``, the
same per-position statistics the whole image is asked to have; the area weight ``M_t / M`` makes
``sum_t`` of the style terms comparable with the whole image's. The content terms add up to the
whole image's exactly; the style terms add up to at least the whole image's (Jensen: the whole
image's ``G / M`` is the area-weighted mean of the tiles' ``G_t / M_t``): every tile must carry the
style, not just the image on average (docs/tiles.md). The gradient is the exact gradient of this
sum (each tile's backward covers its halo too and is added where the tiles overlap). The engine
keeps the grid fixed; an ``offset`` function can move it on every evaluation (crowsonkb's trick
against seams), which measured worse with L-BFGS (docs/tiles.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .layers import layer_names
from .losses import ContentTerm, StyleTerm, content_loss, gram, gram_loss

Features = Mapping[str, torch.Tensor]
Forward = Callable[[torch.Tensor], Features]


@dataclass(frozen=True)
class Tile:
    """A tile: rows ``y0:y1``, columns ``x0:x1`` of the image, evaluated; its core ``cy0:cy1``,
    ``cx0:cx1`` enters the loss."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


@dataclass(frozen=True)
class Tiling:
    """How an image is cut: tiles of ``size`` px (halo included), a ``halo`` of context, starts on
    a ``stride`` px grid (the deepest layer's)."""

    size: int
    halo: int
    stride: int

    @property
    def core(self) -> int:
        return max(self.stride, (self.size - 2 * self.halo) // self.stride * self.stride)

    def tiles(self, shape: tuple[int, int], offset: tuple[int, int] = (0, 0)) -> list[Tile]:
        """The tiles covering ``shape`` (H, W); the core grid starts ``offset`` px before the image."""
        rows = self._spans(shape[0], offset[0])
        cols = self._spans(shape[1], offset[1])
        return [Tile(*r[:2], *c[:2], *r[2:], *c[2:]) for r in rows for c in cols]

    def _spans(self, n: int, offset: int) -> list[tuple[int, int, int, int]]:
        """(start, end, core start, core end) along one axis of ``n`` px.

        Every tile is ``size`` px long, the last one up to ``stride - 1`` px longer (tiles start on
        the stride grid and the last ends at the image's edge): a tile at an edge takes its context
        from inside the image. So an evaluation has at most two tile lengths per axis, the same on
        every evaluation whatever the offset (new shapes would cost memory: each gets its own
        kernels and allocations).
        """
        if n <= self.size:  # the whole axis fits one tile: no seam along it
            return [(0, n, 0, n)]
        last = (n - self.size) // self.stride * self.stride  # the last tile's start
        out = []
        for c0 in range(-(offset % self.core), n, self.core):
            a, b = max(c0, 0), min(c0 + self.core, n)
            if b > a:
                start = max(0, min(a - self.halo, last))
                out.append((start, n if start == last else start + self.size, a, b))
        return out

    def random_offset(self, gen: torch.Generator) -> tuple[int, int]:
        """A random offset of the core grid, on the stride grid (seeded by ``gen``)."""
        k = self.core // self.stride
        oy, ox = torch.randint(0, k, (2,), generator=gen).tolist()
        return int(oy) * self.stride, int(ox) * self.stride


def layer_factors(model: str, layers: list[str]) -> dict[str, int]:
    """Each layer's downsampling factor (1, 2, 4, 8, 16): 2 to the number of poolings before it."""
    names = layer_names(model)
    return {n: 2 ** sum(1 for m in names[: names.index(n)] if m.startswith("pool")) for n in layers}


def _core(f: torch.Tensor, t: Tile, factor: int) -> torch.Tensor:
    """The tile's features ``f`` (1, C, h, w) cropped to its core."""
    a, c = (t.cy0 - t.y0) // factor, (t.cx0 - t.x0) // factor
    b = (t.cy1 - t.y0) // factor if t.cy1 < t.y1 else f.shape[-2]
    d = (t.cx1 - t.x0) // factor if t.cx1 < t.x1 else f.shape[-1]
    return f[..., a:b, c:d]


def _global(t: Tile, factor: int, full: torch.Tensor, core: torch.Tensor) -> tuple[slice, slice]:
    """Where a tile's core features ``core`` lie in the whole image's feature map ``full``."""
    a, c = t.cy0 // factor, t.cx0 // factor
    return slice(a, a + core.shape[-2]), slice(c, c + core.shape[-1])


@torch.no_grad()
def features_by_tile(
    forward: Forward, image: torch.Tensor, tiling: Tiling, factors: dict[str, int]
) -> Iterator[tuple[Tile, dict[str, torch.Tensor]]]:
    """Each tile of ``image`` with its core features (no autograd), grid at offset 0."""
    for t in tiling.tiles(tuple(image.shape[-2:])):  # type: ignore[arg-type]
        feats = forward(image[..., t.y0 : t.y1, t.x0 : t.x1])
        yield t, {n: _core(feats[n], t, k) for n, k in factors.items()}


def tiled_grams(
    forward: Forward, image: torch.Tensor, tiling: Tiling, factors: dict[str, int]
) -> dict[str, torch.Tensor]:
    """The whole image's Gram matrices ``F F^T`` (float32), summed over the tiles' cores."""
    grams: dict[str, torch.Tensor] = {}
    for _, cores in features_by_tile(forward, image, tiling, factors):
        for n, f in cores.items():
            g = gram(f.contiguous())
            grams[n] = g if n not in grams else grams[n] + g
    return grams


def tiled_features(
    forward: Forward, image: torch.Tensor, tiling: Tiling, factors: dict[str, int]
) -> dict[str, torch.Tensor]:
    """The whole image's feature maps (float32), assembled from the tiles' cores."""
    h, w = image.shape[-2:]
    out: dict[str, torch.Tensor] = {}
    for t, cores in features_by_tile(forward, image, tiling, factors):
        for n, f in cores.items():
            if n not in out:
                k = factors[n]
                out[n] = torch.zeros(1, f.shape[1], h // k, w // k, device=f.device)
            ys, xs = _global(t, factors[n], out[n], f)
            out[n][..., ys, xs] = f.float()
    return out


def tiled_targets(
    forward: Forward,
    content: torch.Tensor,
    style: torch.Tensor,
    tiling: Tiling,
    model: str,
    content_layers: list[str],
    style_layers: list[str],
    grams: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, tuple[int, int]]]:
    """Content features, style Gram matrices (``grams`` if given) and the pastiche's (N_l, M_l),
    as ``engine._targets`` returns them, computed tile by tile."""
    factors = layer_factors(model, list(dict.fromkeys([*content_layers, *style_layers])))
    # only the content layers' maps are kept whole (relu4_2: 32 B/px); the style layers' would be
    # ~0.5 KB/px (relu1_1 alone 256 B/px: 3.2 GB at 4096 px)
    feats = tiled_features(forward, content, tiling, {n: factors[n] for n in content_layers})
    if grams is None:
        grams = tiled_grams(forward, style, tiling, {n: factors[n] for n in style_layers})
    h, w = content.shape[-2:]
    nm = {n: (grams[n].shape[0], (h // factors[n]) * (w // factors[n])) for n in style_layers}
    return {n: feats[n] for n in content_layers}, grams, nm


class TiledObjective:
    """``total, parts, grad = objective(image)`` as :class:`napari_nst.core.graphed.Objective`, the
    content and style terms evaluated tile by tile (the module's docstring); other terms (tv,
    temporal) act on the whole image and are evaluated on it at once.

    ``offset``: a function giving the core grid's offset for each evaluation (random, seeded).
    """

    def __init__(
        self,
        forward: Forward,
        terms: list[Any],
        tiling: Tiling,
        model: str,
        offset: Callable[[], tuple[int, int]],
    ) -> None:
        self.forward, self.tiling, self.offset = forward, tiling, offset
        self.content = next(t for t in terms if isinstance(t, ContentTerm))
        self.style = next(t for t in terms if isinstance(t, StyleTerm))
        self.others = [t for t in terms if t is not self.content and t is not self.style]
        self.factors = layer_factors(model, list(dict.fromkeys([*self.content.layers, *self.style.layers])))
        self.tiles_last = 0  # tiles of the last evaluation
        self.positions: dict[str, int] = {}

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        x = image.detach()
        grad = torch.zeros_like(x)
        c_sum = torch.zeros((), device=x.device)
        s_sum = torch.zeros((), device=x.device)
        h, w = x.shape[-2:]
        self.positions = {n: (h // k) * (w // k) for n, k in self.factors.items()}  # the image's M_l
        tiles = self.tiling.tiles((h, w), self.offset())
        for t in tiles:
            xt = x[..., t.y0 : t.y1, t.x0 : t.x1].clone().requires_grad_(True)
            c, s = self._tile_loss(self.forward(xt), t)
            (g,) = torch.autograd.grad(self.content.weight * c + self.style.weight * s, xt)
            grad[..., t.y0 : t.y1, t.x0 : t.x1] += g
            c_sum, s_sum = c_sum + c.detach(), s_sum + s.detach()
        self.tiles_last = len(tiles)
        parts = {self.content.name: c_sum, self.style.name: s_sum}
        total = self.content.weight * c_sum + self.style.weight * s_sum
        if self.others:  # whole-image terms: cheap, elementwise
            xg = x.clone().requires_grad_(True)
            extra = {t.name: t({}, xg) for t in self.others}
            rest = sum(t.weight * extra[t.name] for t in self.others)
            (g,) = torch.autograd.grad(rest, xg)
            grad += g
            total = total + rest.detach()
            parts.update({k: v.detach() for k, v in extra.items()})
        return total.detach(), parts, grad

    def _tile_loss(self, feats: Features, t: Tile) -> tuple[torch.Tensor, torch.Tensor]:
        """The unweighted content and style terms of one tile (its core)."""
        c = torch.zeros((), device=t_device(feats))
        for n, p in self.content.targets.items():
            f = _core(feats[n], t, self.factors[n])
            ys, xs = _global(t, self.factors[n], p, f)
            c = c + content_loss(f, p[..., ys, xs])
        s = torch.zeros((), device=c.device)
        for target in self.style.targets:
            for n, w in self.style.layer_weights.items():
                f = _core(feats[n], t, self.factors[n])
                n_l, m_t = f.shape[1], f.shape[-2] * f.shape[-1]
                share = m_t / self.positions[n]  # the tile's share of the image's positions at this layer
                layer = gram_loss(gram(f.contiguous()), target.grams[n] * share, n_l, m_t)
                s = s + target.weight * w * share * layer
        return c, s


def t_device(feats: Features) -> torch.device:
    return next(iter(feats.values())).device
