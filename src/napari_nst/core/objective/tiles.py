"""Tiled evaluation: the objective and its gradient computed tile by tile, in memory bounded by the tile.

Departure from the paper (an option, ``Options.tile_size``; None = the whole image at once, the
paper's way). The image is cut into square *cores* on a grid; each core is evaluated with a halo
of context around it (``tile_size`` = core + 2 x halo, clipped at the image's edges) and only the
core's features enter the loss. Tiles start on the deepest layer's feature grid (16 px up to
relu5_1), so a tile's features are the whole image's, except near the tile's edge where the
network sees the halo's end instead of the rest of the image. Tiles at the image's edges keep
their full size and take more context from inside the image.

The objective is the paper's, of the whole image (not each tile's own): the Gram matrix is a sum over
positions, ``G_l = sum_t F_t F_t^T`` over the tiles' cores, so an evaluation takes two passes:

1. without autograd, each tile's core features add up to ``G_l`` for every style layer; the seed's
   ``L_style`` of these Grams is the value, and ``dL/dG_l = sum_k weight_k w_l (G_l - A_kl) /
   (2 N_l^2 M_l^2)`` its gradient with respect to the Gram (closed form);
2. each tile again, with autograd, backpropagates ``b sum_l <dL/dG_l, F_t F_t^T> + a L_content(core)``
   to its pixels; the tiles' gradients add up where the tiles overlap.

Since ``dL/dF_t = 2 dL/dG_l F_t`` on each core, the sum of pass 2 is the whole image's gradient, and
the content term, a sum over positions, adds up exactly. Up to the halo: a feature within the
receptive field's reach of a tile's edge sees the tile's zero padding instead of the rest of the
image (relu5_1 sees ~200 px; the default halo is 32 px, so deep features near a core's edge are
approximate, shallow ones exact). Memory: one tile's activations at a time; time: two forwards and
one backward per tile. (The previous per-tile objective -- each tile's Gram matched to the whole
style's -- asked every tile to carry the style on its own, over-weighting style; docs/tiles.md.)
The grid is fixed: moving it on every evaluation (crowsonkb's trick against seams) was measured to
cost 1.5x the CPU time with L-BFGS for no gain here, as the two-pass objective leaves no seams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from napari_nst.core.encoder.layer_names import layer_names
from napari_nst.core.objective.losses import ContentTerm, StyleTerm, content_loss, gram, gram_loss
from napari_nst.core.objective.statistics import Moments, StyleStats, W2StyleTerm

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

    def tiles(self, shape: tuple[int, int]) -> list[Tile]:
        """The tiles covering ``shape`` (H, W)."""
        rows = self._spans(shape[0])
        cols = self._spans(shape[1])
        return [Tile(*r[:2], *c[:2], *r[2:], *c[2:]) for r in rows for c in cols]

    def _spans(self, n: int) -> list[tuple[int, int, int, int]]:
        """(start, end, core start, core end) along one axis of ``n`` px.

        Every tile is ``size`` px long, the last one up to ``stride - 1`` px longer (tiles start on
        the stride grid and the last ends at the image's edge): a tile at an edge takes its context
        from inside the image. So an evaluation has at most two tile lengths per axis, the same on
        every evaluation (new shapes would cost memory: each gets its own
        kernels and allocations).
        """
        if n <= self.size:  # the whole axis fits one tile: no seam along it
            return [(0, n, 0, n)]
        last = (n - self.size) // self.stride * self.stride  # the last tile's start
        out = []
        for c0 in range(0, n, self.core):
            a, b = max(c0, 0), min(c0 + self.core, n)
            if b > a:
                start = max(0, min(a - self.halo, last))
                out.append((start, n if start == last else start + self.size, a, b))
        return out


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
    """Each tile of ``image`` with its core features (no autograd)."""
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
    grams: Any = None,
    loss: str = "gram",
) -> tuple[dict[str, torch.Tensor], Any, dict[str, tuple[int, int]]]:
    """Content features, style Gram matrices (``grams`` if given) and the pastiche's (N_l, M_l),
    as ``engine._targets`` returns them, computed tile by tile. ``loss="wasserstein"``: the
    style's :class:`~napari_nst.core.objective.statistics.StyleStats` instead of its Grams (its
    moments summed over the tiles' cores as the Grams are)."""
    factors = layer_factors(model, list(dict.fromkeys([*content_layers, *style_layers])))
    # only the content layers' maps are kept whole (relu4_2: 32 B/px); the style layers' would be
    # ~0.5 KB/px (relu1_1 alone 256 B/px: 3.2 GB at 4096 px)
    feats = tiled_features(forward, content, tiling, {n: factors[n] for n in content_layers})
    style_factors = {n: factors[n] for n in style_layers}
    if grams is None and loss == "gram":
        grams = tiled_grams(forward, style, tiling, style_factors)
    elif grams is None:
        grams = StyleStats(moments=tiled_moments(forward, style, tiling, style_factors))
    h, w = content.shape[-2:]
    channels = {n: (g.shape[0] if loss == "gram" else grams.moments[n].gram.shape[0]) for n, g in _items(grams)}
    nm = {n: (channels[n], (h // factors[n]) * (w // factors[n])) for n in style_layers}
    return {n: feats[n] for n in content_layers}, grams, nm


def _items(grams: Any) -> list[tuple[str, Any]]:
    return list(grams.items()) if isinstance(grams, dict) else list(grams.moments.items())


def tiled_moments(forward: Forward, image: torch.Tensor, tiling: Tiling, factors: dict[str, int]) -> dict[str, Moments]:
    """The whole image's :class:`~napari_nst.core.objective.statistics.Moments`, summed over the tiles' cores."""
    out: dict[str, Moments] = {}
    for _, cores in features_by_tile(forward, image, tiling, factors):
        for n, f in cores.items():
            m = Moments.of(f.contiguous())
            out[n] = m if n not in out else out[n] + m
    return out


class TiledObjective:
    """``total, parts, grad = objective(image)`` as :class:`napari_nst.core.objective.graphed.Objective`: the
    paper's whole-image content and style terms and their exact gradient (up to the halo), computed
    tile by tile in two passes (the module's docstring); other terms (tv, temporal) act on the whole
    image and are evaluated on it at once.
    """

    def __init__(
        self,
        forward: Forward,
        terms: list[Any],
        tiling: Tiling,
        model: str,
    ) -> None:
        self.forward, self.tiling = forward, tiling
        self.content = next(t for t in terms if isinstance(t, ContentTerm))
        self.style = next(t for t in terms if isinstance(t, (StyleTerm, W2StyleTerm)))
        self.w2 = isinstance(self.style, W2StyleTerm)  # style_loss="wasserstein": moments, not Grams
        self.others = [t for t in terms if t is not self.content and t is not self.style]
        self.factors = layer_factors(model, list(dict.fromkeys([*self.content.layers, *self.style.layers])))
        self.tiles_last = 0  # tiles of the last evaluation

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        x = image.detach()
        tiles = self.tiling.tiles(tuple(x.shape[-2:]))  # type: ignore[arg-type]
        style_layers = {n: self.factors[n] for n in self.style.layers}
        grams = self._grams(x, tiles, style_layers)  # pass 1: the whole image's Grams (W2: moments)
        d_totals: dict[str, torch.Tensor] = {}
        if self.w2:
            s_value, d_grams, d_totals = self._w2_and_its_gradient(grams)
        else:
            s_value, d_grams = self._style_and_its_gram_gradient(grams, (x.shape[-2], x.shape[-1]))
        grad = torch.zeros_like(x)
        c_sum = torch.zeros((), device=x.device)
        for t in tiles:  # pass 2: each tile's share of the gradient
            xt = x[..., t.y0 : t.y1, t.x0 : t.x1].clone().requires_grad_(True)
            feats = self.forward(xt)
            c = self._content(feats, t)
            surrogate = sum(
                (d_grams[n] * gram(_core(feats[n], t, k).contiguous())).sum() for n, k in style_layers.items()
            )
            for n, d in d_totals.items():  # W2: the mean's share, <dL/d(F 1), F_core 1>
                surrogate = surrogate + (d * _core(feats[n], t, style_layers[n]).float().sum((-2, -1)).flatten()).sum()
            (g,) = torch.autograd.grad(self.content.weight * c + self.style.weight * surrogate, xt)
            grad[..., t.y0 : t.y1, t.x0 : t.x1] += g
            c_sum = c_sum + c.detach()
        self.tiles_last = len(tiles)
        parts = {self.content.name: c_sum, self.style.name: s_value}
        total = self.content.weight * c_sum + self.style.weight * s_value
        if self.others:  # whole-image terms: cheap, elementwise
            xg = x.clone().requires_grad_(True)
            extra = {t.name: t({}, xg) for t in self.others}
            rest = sum(t.weight * extra[t.name] for t in self.others)
            (g,) = torch.autograd.grad(rest, xg)
            grad += g
            total = total + rest.detach()
            parts.update({k: v.detach() for k, v in extra.items()})
        return total.detach(), parts, grad

    def _grams(self, x: torch.Tensor, tiles: list[Tile], layers: dict[str, int]) -> dict[str, Any]:
        """Pass 1 (no autograd): the whole image's ``G_l = sum_t F_core F_core^T`` (float32);
        W2: its :class:`Moments` (the Grams and ``sum_t F_core 1``)."""
        grams: dict[str, Any] = {}
        with torch.no_grad():
            for t in tiles:
                feats = self.forward(x[..., t.y0 : t.y1, t.x0 : t.x1])
                for n, k in layers.items():
                    core = _core(feats[n], t, k).contiguous()
                    g: Any = Moments.of(core) if self.w2 else gram(core)
                    grams[n] = g if n not in grams else grams[n] + g
                del feats
        return grams

    def _w2_and_its_gradient(
        self, moments: dict[str, Moments]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """W2's ``L_style`` of the whole image's moments and its gradients with respect to the
        Grams and the sums (autograd through the small ``(N, N)`` statistics only)."""
        assert isinstance(self.style, W2StyleTerm)
        names = list(self.style.layer_weights)
        g = {n: moments[n].gram.detach().requires_grad_(True) for n in names}
        s = {n: moments[n].total.detach().requires_grad_(True) for n in names}
        with torch.enable_grad():
            value = self.style.of_moments({n: Moments(g[n], s[n], moments[n].count) for n in names})
            grads = torch.autograd.grad(value, [*g.values(), *s.values()])
        n_g = len(names)
        return value.detach(), dict(zip(names, grads[:n_g], strict=True)), dict(zip(names, grads[n_g:], strict=True))

    def _style_and_its_gram_gradient(
        self, grams: dict[str, torch.Tensor], shape: tuple[int, int]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The seed's ``L_style`` of the whole image's Grams and ``dL_style/dG_l`` (closed form:
        ``sum_k weight_k w_l (G_l - A_kl) / (2 N_l^2 M_l^2)``)."""
        h, w = shape
        assert isinstance(self.style, StyleTerm)
        value = torch.zeros((), device=next(iter(grams.values())).device)
        d_grams: dict[str, torch.Tensor] = {}
        for n, w_l in self.style.layer_weights.items():
            g, k = grams[n], self.factors[n]
            n_l, m_l = g.shape[0], (h // k) * (w // k)
            d = torch.zeros_like(g)
            for target in self.style.targets:
                a = target.grams[n].float()
                value = value + target.weight * w_l * gram_loss(g, a, n_l, m_l)
                d += (target.weight * w_l / (2.0 * n_l * n_l * m_l * m_l)) * (g - a)
            d_grams[n] = d
        return value, d_grams

    def _content(self, feats: Features, t: Tile) -> torch.Tensor:
        """The unweighted content term of one tile's core (a sum over positions: the tiles' add up
        to the whole image's)."""
        c = torch.zeros((), device=t_device(feats))
        for n, p in self.content.targets.items():
            f = _core(feats[n], t, self.factors[n])
            ys, xs = _global(t, self.factors[n], p, f)
            c = c + content_loss(f, p[..., ys, xs])
        return c


def t_device(feats: Features) -> torch.device:
    return next(iter(feats.values())).device
