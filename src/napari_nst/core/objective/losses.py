"""The objective: pure loss functions and composable loss terms.

Default objective (Gatys et al. 2015, the seed's formulas, exactly)::

    L_total   = a * L_content + b * L_style
    L_content = 1/2 * sum_ij (F_ij - P_ij)^2
    L_GM(l)   = 1/(4 N_l^2 M_l^2) * sum_ij (G_ij - A_ij)^2,   G = F F^T
    L_style   = sum_l w_l * L_GM(l)

Everything here is computed in float32, also when the network ran in bfloat16.
Each term reports its *unweighted* value; the objective multiplies by the term's weight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.autograd.function import once_differentiable


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix ``G = F F^T`` of ``(1, N, H, W)`` or ``(N, H, W)`` features, in float32.

    Unnormalised, as in the paper: ``G_ij = sum_k F_ik F_jk`` over the ``M = H * W`` positions.
    Features in another dtype (bfloat16 from autocast) are multiplied as float32 copies; the
    copies are not kept for backward. Its gradient is one matrix product (see :class:`_Gram`). A
    channels_last feature map is read in place (its ``(N, M)`` view needs no copy).
    """
    f = features.reshape(features.shape[-3], -1)
    if torch.is_grad_enabled() and f.requires_grad:
        out: torch.Tensor = _Gram.apply(f)
        return out
    f = f.float()
    return f @ f.T


class _Gram(torch.autograd.Function):
    """``G = F F^T`` in float32 of ``(N, M)`` features (float32, or bfloat16 from autocast).

    The same forward as ``f = F.float(); f @ f.T``, so the same float32 ``G``. Backward uses that
    ``G`` is symmetric: ``dL/dF = (dL/dG + dL/dG^T) F``, one ``(N, N) x (N, M)`` product, where
    autograd's ``dL/dG F + (F^T dL/dG)^T`` takes two (0.54x the Gram's forward + backward time at
    the VGG layers' shapes, one thread, AVX2: docs/benchmarks.md); the two are equal up
    to float32 rounding. For bfloat16 features it keeps only ``F`` itself for backward (which the
    network keeps anyway: a ReLU's output and the next convolution's input), not the float32
    copy, which autograd would keep at twice ``F``'s bytes (48 MiB for relu1_1 at 512x384), and
    the gradient is rounded once to ``F``'s dtype, as autograd's cast would.
    """

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f)
        with torch.autocast(f.device.type, enabled=False):  # float32 even if called under autocast
            f32 = f.float()
            return f32 @ f32.T

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        return gram_grad(f, grad)


def gram_grad(f: torch.Tensor, grad: torch.Tensor, row: torch.Tensor | None = None) -> torch.Tensor:
    """``dL/dF = (dL/dG + dL/dG^T) F`` (plus ``row`` ``(N,)`` added at every position: the gradient
    of a sum over positions, :class:`~napari_nst.core.objective.statistics.Moments`), in ``F``'s
    dtype and layout; see :class:`_Gram`."""
    if f.dtype == torch.float32:
        s32 = grad + grad.T
        with torch.autocast(f.device.type, enabled=False):
            # the gradient in F's own layout: (F^T S)^T is S F for a symmetric S
            out: torch.Tensor = (f.T @ s32).T if f.T.is_contiguous() else s32 @ f
            return out if row is None else out.add_(row[:, None])
    # (M, N) rows are contiguous for a channels_last map: one float32 slice at a time, so the
    # float32 copy of F and the float32 gradient are never whole (G's gradient is symmetric
    # up to rounding; (g + g^T) is exactly symmetric, so (F^T S) = (S F)^T)
    s = grad.float() + grad.float().T
    out = torch.empty_like(f)
    ft, ot = f.T, out.T
    chunk = _GRAM_CHUNK_ELEMENTS if f.device.type == "cpu" else _GRAM_CHUNK_ELEMENTS_GPU
    step = max(1, chunk // max(1, f.shape[0]))
    with torch.autocast(f.device.type, enabled=False):
        for a in range(0, ft.shape[0], step):
            part = ft[a : a + step].float() @ s
            ot[a : a + step] = part if row is None else part.add_(row.float())
    return out


#: float32 elements per slice in :class:`_Gram`'s bfloat16 backward: on the CPU a cache-sized
#: 4 MiB; on a GPU 64 MiB, so that a 512 px layer is one matrix product rather than dozens of small
#: kernels (the slicing is there to bound the float32 copy's memory, which a GPU can afford)
_GRAM_CHUNK_ELEMENTS = 2**20
_GRAM_CHUNK_ELEMENTS_GPU = 2**24


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1/2 * sum_ij (F_ij - P_ij)^2``."""
    return 0.5 * (features.float() - target.float()).pow(2).sum()


def gram_loss(g: torch.Tensor, a: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """``1/(4 N^2 M^2) * sum_ij (G_ij - A_ij)^2``, computed as ``sum(((G - A) / (2 N M))^2)``.

    The same number; dividing before squaring keeps large Gram entries far from float32 overflow.
    """
    return ((g - a) / (2.0 * n * m)).pow(2).sum()


def style_loss(
    features: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float],
) -> torch.Tensor:
    """``sum_l w_l * L_GM(l)`` over the layers in ``layer_weights``."""
    total = torch.zeros((), device=next(iter(targets.values())).device)
    for name, w in layer_weights.items():
        f = features[name]
        n, m = f.shape[-3], f.shape[-2] * f.shape[-1]
        total = total + w * gram_loss(gram_of(features, name), targets[name], n, m)
    return total


def gram_of(features: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """:func:`gram` of ``features[name]``, or the one the network made as it computed that layer
    (``VGGFeatures.forward``'s ``taps``: the same matrix, made earlier in the graph)."""
    f = features[name]
    tapped = getattr(features, "tapped", None)
    hit = tapped.get(name) if tapped else None
    return hit[1] if hit is not None and hit[0] is f else gram(f)


def gram_taps(terms: Sequence[Any]) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The taps (``VGGFeatures.forward``) that make the Gram matrices ``terms`` read: those of each
    plain :class:`StyleTerm`'s layers (the regions' and the other style losses' terms read other
    statistics)."""
    return {n: gram for t in terms if type(t) is StyleTerm for n in t.layer_weights}


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation (squared differences of neighbours, *mean* over pixels).

    Not in Gatys et al. 2015 (an option, ``tv_weight``; default 0): a smoothness prior that removes
    high-frequency noise. The mean makes ``tv_weight`` independent of the image size.
    """
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.float().pow(2).mean() + dy.float().pow(2).mean()


def temporal_loss(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1/D * sum_k c_k (x_k - w_k)^2`` (Ruder, Dosovitskiy and Brox 2016, eq. 7): the squared
    difference to ``target`` (the previous frame's pastiche carried along the flow) where the
    ``mask`` c (1 where the flow is reliable, else 0; broadcast over the channels) allows it,
    divided by the number of values D, so that its weight does not depend on the image size.
    """
    return (mask * (image.float() - target).pow(2)).mean()


# --------------------------------------------------------------------------- terms


@dataclass
class ContentTerm:
    """``L_content`` summed over ``layers`` (one layer, relu4_2, by default)."""

    targets: dict[str, torch.Tensor]
    weight: float
    name: str = "content"

    @property
    def layers(self) -> list[str]:
        return list(self.targets)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        return sum(content_loss(features[n], t) for n, t in self.targets.items())  # type: ignore[return-value]


@dataclass
class StyleTarget:
    """One style image's Gram matrices and its blend weight.

    A list of these is the style target; several images blend by their weights. (Masks for
    per-region Gram matrices will live here too.)
    """

    grams: dict[str, torch.Tensor]
    weight: float = 1.0


@dataclass
class StyleTerm:
    """``L_style`` = sum over style targets of ``weight_k * sum_l w_l L_GM(l)``.

    With one target of weight 1 this is exactly the paper's ``L_style``.
    """

    targets: list[StyleTarget]
    layer_weights: dict[str, float]
    weight: float
    name: str = "style"

    @property
    def layers(self) -> list[str]:
        return list(self.layer_weights)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        return sum(t.weight * style_loss(features, t.grams, self.layer_weights) for t in self.targets)  # type: ignore[return-value]


@dataclass
class TVTerm:
    """Total variation of the image (see :func:`tv_loss`)."""

    weight: float
    name: str = "tv"
    layers: list[str] = field(default_factory=list)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        return tv_loss(image)


@dataclass
class TemporalTerm:
    """Temporal consistency of a stack's frame (see :func:`temporal_loss`).

    Not in Gatys et al. 2015 (Ruder et al. 2016's short-term term; stacks only, ``temporal_weight``).
    ``target`` (1, 3, H, W) and ``mask`` (1, 1, H, W) live on the device; no host synchronisation.
    """

    target: torch.Tensor
    mask: torch.Tensor
    weight: float
    name: str = "temporal"
    layers: list[str] = field(default_factory=list)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        return temporal_loss(image, self.target, self.mask)


def evaluate(
    terms: Sequence[ContentTerm | StyleTerm | TVTerm | TemporalTerm],
    features: Mapping[str, torch.Tensor],
    image: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted total and the unweighted value of each term."""
    parts = {t.name: t(features, image) for t in terms}
    total = sum(t.weight * parts[t.name] for t in terms)
    return total, parts  # type: ignore[return-value]


# --------------------------------------------------------------------------- guided (per-region) Grams
# Departure from the 2015 objective (options ``regions`` / ``region_styles``): Gatys et al. 2017,
# section 4, guided Gram matrices. Off unless regions are given.


def masked_gram(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``G_r = F diag(m_r) F^T`` for each row ``m_r`` of ``masks`` ``(R, M)``: ``(R, N, N)`` float32.

    ``features``: ``(1, N, H, W)`` or ``(N, H, W)`` with ``M = H * W``. Masks in [0, 1] that sum
    to 1 at every position split ``G`` exactly: ``sum_r G_r = F F^T``. Only ``F`` (which the network
    keeps anyway) and the masks are kept for backward (see :class:`_MaskedGram`).
    """
    f = features.reshape(features.shape[-3], -1)
    out: torch.Tensor = _MaskedGram.apply(f, masks)
    return out


class _MaskedGram(torch.autograd.Function):
    """Forward ``(F * m_r) F^T`` in float32; backward ``dL/dF = sum_r ((g_r + g_r^T) F) * m_r``."""

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f, masks)
        with torch.autocast(f.device.type, enabled=False):
            f32 = f.float()
            return torch.matmul(f32[None] * masks[:, None, :], f32.T)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        f, masks = ctx.saved_tensors
        with torch.autocast(f.device.type, enabled=False):
            s = grad.float() + grad.float().transpose(1, 2)
            out = (torch.matmul(s, f.float()) * masks[:, None, :]).sum(0)
        return out.to(f.dtype), None


def gathered_gram(features: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``F diag(m) F^T`` for a mask ``m`` given by its non-zero positions ``index`` and their
    ``values``: the same matrix as :func:`masked_gram` with one mask, for the cost of the region's
    positions only (a region of 40 % of the image costs 40 % of a Gram). ``(N, N)`` float32."""
    return gathered_grams(features, index, values, [(0, int(index.numel()))])[0]


def gathered_grams(
    features: torch.Tensor, index: torch.Tensor, values: torch.Tensor, bounds: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """``(R, N, N)``: each region's ``F diag(m_r) F^T``, region ``r`` given by its positions
    ``index[a:b]`` and their mask values ``values[a:b]`` for ``(a, b) = bounds[r]``.

    All regions in one gather of ``F``'s columns (one float32 copy, positions on a region's
    border appearing once per region they touch) and, in backward, one more gather and one
    scatter-add into the gradient: no per-region zero-filled gradient to add up. Keeps only
    ``F``, the index and the values for backward."""
    f = features.reshape(features.shape[-3], -1)
    out: torch.Tensor = _GatheredGrams.apply(f, index, values, tuple(bounds))
    return out


def _gather_rows(f: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``F``'s columns ``index`` as float32 rows ``(K, N)``, read in ``F``'s own layout: a
    channels-last map's positions are contiguous rows of ``F^T``, a contiguous map's are not."""
    if f.stride(0) == 1:
        return f.T.index_select(0, index).float()
    return f.index_select(1, index).float().T


class _GatheredGrams(torch.autograd.Function):
    """Forward ``G_r = (F_I * m_I)_r F_{I,r}^T`` over each region's positions; backward
    scatter-adds ``((g_r + g_r^T) F_{I,r}) * m_{I,r}`` into those positions (summed where regions
    share a border position)."""

    @staticmethod
    def forward(
        ctx: Any, f: torch.Tensor, index: torch.Tensor, values: torch.Tensor, bounds: tuple[tuple[int, int], ...]
    ) -> torch.Tensor:
        ctx.save_for_backward(f, index, values)
        ctx.bounds = bounds
        with torch.autocast(f.device.type, enabled=False):
            fi = _gather_rows(f, index)  # (K, N)
            fv = fi * values[:, None]
            return torch.stack([fv[a:b].T @ fi[a:b] for a, b in bounds])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        f, index, values = ctx.saved_tensors
        with torch.autocast(f.device.type, enabled=False):
            s = grad.float() + grad.float().transpose(1, 2)
            fi = _gather_rows(f, index)
            part = torch.empty(fi.shape, dtype=torch.float32, device=f.device)
            for r, (a, b) in enumerate(ctx.bounds):
                torch.matmul(fi[a:b], s[r], out=part[a:b])
            part *= values[:, None]
            if f.stride(0) == 1:  # channels-last: the gradient in F's layout, positions as rows
                rows = torch.zeros((f.shape[1], f.shape[0]), dtype=torch.float32, device=f.device)
                rows.index_add_(0, index, part)
                return rows.to(f.dtype).T, None, None, None
            out = torch.zeros(f.shape, dtype=torch.float32, device=f.device)
            out.index_add_(1, index, part.T)
        return out.to(f.dtype), None, None, None


@dataclass
class RegionTargets:
    """One style layer's regions: masks ``(R, M)`` at the layer's resolution, ``1 / area``
    ``(R,)``, the area fraction ``(R,)`` (the region's weight) and the area-normalised target
    Grams ``(R, N, N)``. ``index``/``values``: every mask's non-zero positions and values, one
    region after another, region ``r`` at ``bounds[r]`` (then the Grams are computed over those
    positions only, :func:`gathered_grams`)."""

    masks: torch.Tensor
    inv_area: torch.Tensor
    fraction: torch.Tensor
    grams: torch.Tensor
    index: torch.Tensor | None = None
    values: torch.Tensor | None = None
    bounds: tuple[tuple[int, int], ...] = ()

    def region_grams(self, features: torch.Tensor) -> torch.Tensor:
        """``(R, N, N)``: each region's ``F diag(m_r) F^T``."""
        if self.index is None or self.values is None:
            return masked_gram(features, self.masks)
        return gathered_grams(features, self.index, self.values, self.bounds)


def guided_gram_loss(g: torch.Tensor, t: RegionTargets, n: int) -> torch.Tensor:
    """``sum_r a_r * sum_ij ((G_r / |m_r| - A_r) / (2N))^2`` for region Grams ``g`` ``(R, N, N)``.

    With one region covering the image and a style of the pastiche's size this is the paper's
    ``L_GM``. An empty region (area 0, fraction 0) adds exactly 0.
    """
    diff = (g * t.inv_area[:, None, None] - t.grams) / (2.0 * n)
    return (diff.pow(2).sum((1, 2)) * t.fraction).sum()


@dataclass
class GuidedStyleTerm:
    """``L_style`` with guided Gram matrices: ``sum_l w_l * guided_gram_loss(l)``.

    Each region's Gram is normalised by its area and compared with its own target (its style's
    area-normalised Gram, or the blend of all styles); each region weighs by its area fraction,
    so that every pixel's style is pushed as hard as in a whole-image run. Regions without a
    style have no mask here (no style term); the content term stays global.
    """

    regions: dict[str, RegionTargets]
    layer_weights: dict[str, float]
    weight: float
    name: str = "style"

    @property
    def layers(self) -> list[str]:
        return list(self.layer_weights)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=image.device)
        for name, w in self.layer_weights.items():
            t = self.regions[name]
            total = total + w * guided_gram_loss(t.region_grams(features[name]), t, features[name].shape[-3])
        return total

    def at_zero(self) -> float:
        """The loss of an image whose Gram matrices are all zero, per unit of styled area."""
        total = 0.0
        for name, w in self.layer_weights.items():
            t = self.regions[name]
            zero = torch.zeros_like(t.grams)
            total += w * float(guided_gram_loss(zero, t, t.grams.shape[-1]))
        styled = float(next(iter(self.regions.values())).fraction.sum())
        return total / max(styled, 1e-12)
