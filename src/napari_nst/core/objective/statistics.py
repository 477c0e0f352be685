"""Style losses beyond the Gram matrix (option ``style_loss``): pure functions and their terms.

Departures from Gatys et al. 2015 (whose Gram loss, ``style_loss="gram"``, stays the default and
lives in :mod:`losses`). For a style layer with features ``F`` (``N`` channels at ``M``
positions)::

    wasserstein  L_W2(l) = 1/N * ( |mu - mu_s|^2 + tr(S + S_s - 2 (S_s^1/2 S S_s^1/2)^1/2) )
    sliced       L_SW(l) = 1/(K M) * sum_k sum_i (sort(v_k^T F)_i - sort(v_k^T F_s)_i)^2

``wasserstein``: the squared 2-Wasserstein distance between the Gaussians fitted to the
pastiche's and the style's features (mean ``mu``, covariance ``S``), as in crowsonkb's
style-transfer-pytorch. The style's covariance is eigendecomposed once per level; the cross
term's square root is taken of an ``r x r`` matrix in the style's significant eigen-directions
(:func:`w2_loss`): on the CPU by an eigendecomposition, on a GPU by :data:`NS_ITERATIONS` coupled
Newton-Schulz iterations (matrix products only: no host synchronisation, so it replays in a CUDA
graph). ``sliced``: the sliced
Wasserstein distance of Heitz et al. (CVPR 2021), with ``K = N`` random unit directions ``v_k``
drawn once per level from the run's seed (fixed while L-BFGS uses its history; Heitz et al. draw
new ones every step, which suits Adam only); the style's sorted projections are resampled to
``M`` values (its quantiles), so style and pastiche may differ in size. The pastiche's
projections are not sorted: each finds its rank in a fine histogram (:func:`match_in_place`, a
departure named there).

Both divide by ``N`` (W2, a mean over the channels) or by ``K M`` (sliced), so that at zero
features both are ``tr(S_s + mu_s mu_s^T) / N``, the mean square of the style's features. The
statistics are float32 whatever the network's precision (the square root needs it).

Blends (several styles) target the styles' mixture: W2 the Gaussian fitted to it (means and
second moments ``E[f f^T]`` mixed by the blend's weights, as crowsonkb does), sliced the mixed
samples (each style's quantiles in proportion to its weight). Regions: a region's statistics are
those of its pixels (W2: the region's mask-weighted moments; sliced: the positions where the
region is the largest), each region weighed by its area.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from napari_nst.core.objective.losses import gram, gram_grad

#: coupled Newton-Schulz iterations of the matrix square root (crowsonkb's: 12, on N x N matrices;
#: here 20 on the r x r ones of :func:`w2_loss`: the trace's error fell from 0.4-2.4 % of tr S_s to
#: under 0.1 % at every layer, Tubingen against The Starry Night at 192 px, for less work)
NS_ITERATIONS = 20
#: the style covariance's eigen-directions kept: eigenvalues above this fraction of the largest
#: (dropping the others changed the W2 trace by about 1e-4 of tr S_s there)
EIG_FLOOR = 1e-4


# --------------------------------------------------------------------------- Gaussians (W2)


@dataclass
class Moments:
    """One layer's additive statistics of a set of positions: ``gram = F F^T`` (unnormalised),
    ``total = F 1`` (sum over positions) and ``count = M``. Sums over tiles or positions add up."""

    gram: torch.Tensor
    total: torch.Tensor
    count: float

    @classmethod
    def of(cls, features: torch.Tensor) -> Moments:
        f = features.reshape(features.shape[-3], -1)
        if torch.is_grad_enabled() and f.requires_grad:
            g, total = _Moments.apply(f)
            return cls(g, total, float(f.shape[1]))
        return cls(gram(features), f.sum(1, dtype=torch.float32), float(f.shape[1]))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.gram + other.gram, self.total + other.total, self.count + other.count)

    def mean(self) -> torch.Tensor:
        return self.total / self.count

    def second(self) -> torch.Tensor:
        return self.gram / self.count


class _Moments(torch.autograd.Function):
    """``(F F^T, F 1)`` in float32 from one float32 view of ``F`` ``(N, M)``; backward in one pass,
    ``(dG + dG^T) F + dt 1^T`` (:func:`~napari_nst.core.objective.losses.gram_grad`), rather than
    the Gram's gradient and the sum's broadcast added as two feature-map-sized tensors."""

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(f)
        with torch.autocast(f.device.type, enabled=False):
            f32 = f.float()
            return f32 @ f32.T, f32.sum(1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_gram: torch.Tensor, grad_total: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        return gram_grad(f, grad_gram, grad_total)


def mix_moments(moments: Sequence[Moments], weights: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and second moment ``E[f f^T]`` of the styles' mixture (weights summing to 1)."""
    mean = sum(w * m.mean() for w, m in zip(weights, moments, strict=True))
    second = sum(w * m.second() for w, m in zip(weights, moments, strict=True))
    return mean, second  # type: ignore[return-value]


@dataclass
class Gaussian:
    """A W2 target (leading dimensions: one per region): mean ``(..., N)``, covariance ``(..., N,
    N)``, ``tr(cov)``, and ``basis`` ``(..., N, r)``: the covariance's eigenvectors scaled by the
    square roots of their eigenvalues, those below :data:`EIG_FLOOR` of the largest dropped, so
    that ``S_s^1/2 = basis basis^T``-like products reduce to ``r x r`` matrices (see :func:`w2_loss`).
    Built once per level, outside the objective."""

    mean: torch.Tensor
    cov: torch.Tensor
    basis: torch.Tensor
    trace: torch.Tensor

    @classmethod
    def of(cls, mean: torch.Tensor, second: torch.Tensor) -> Gaussian:
        mean, second = mean.float(), second.float()
        cov = second - mean[..., :, None] * mean[..., None, :]
        cov = (cov + cov.transpose(-1, -2)) / 2
        vals, vecs = torch.linalg.eigh(cov.double())  # exact, once per level (not in the graph); ascending
        keep = vals > EIG_FLOOR * vals[..., -1:]
        r = max(1, int(keep.sum(-1).max()))
        scale = vals[..., -r:].clamp(min=0).sqrt() * keep[..., -r:]
        basis = (vecs[..., -r:] * scale[..., None, :]).float()
        return cls(mean, cov, basis, torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1))

    def at_zero(self) -> torch.Tensor:
        """``L_W2`` of zero features: ``(|mu_s|^2 + tr S_s) / N`` (per leading index)."""
        return (self.mean.pow(2).sum(-1) + self.trace) / self.mean.shape[-1]


def _newton_schulz(a: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coupled Newton-Schulz iterations on ``a / |a|_F``: ``(Y, Z, |a|_F)`` with ``Y -> (a/|a|)^1/2``,
    ``Z -> (a/|a|)^-1/2``. Matrix products only: no host synchronisation."""
    norm = a.pow(2).sum((-2, -1), keepdim=True).sqrt().clamp(min=1e-30)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    y, z = a / norm, eye
    for _ in range(iterations):
        t = 1.5 * eye - 0.5 * (z @ y)
        y, z = y @ t, t @ z
    return y, z, norm


def sqrtm_ns(a: torch.Tensor, iterations: int = NS_ITERATIONS) -> torch.Tensor:
    """Square root of symmetric positive semi-definite ``a`` ``(..., N, N)`` by coupled Newton-Schulz
    iterations. Eigenvalues far below ``|a|_F`` converge slowly: the root is a little low there.
    Differentiable by autograd (through the iterations)."""
    y, _, norm = _newton_schulz(a, iterations)
    return y * norm.sqrt()


def trace_sqrtm(a: torch.Tensor, iterations: int = NS_ITERATIONS) -> torch.Tensor:
    """``tr(a^1/2)`` (per leading index) and its gradient ``a^-1/2 / 2``: by an eigendecomposition
    on the CPU, by ``iterations`` Newton-Schulz iterations elsewhere (see :class:`_TraceSqrt`)."""
    out: torch.Tensor = _TraceSqrt.apply(a, iterations)
    return out


class _TraceSqrt(torch.autograd.Function):
    """``tr(a^1/2)``; backward ``d tr(a^1/2) / da = a^-1/2 / 2``.

    On the CPU from one symmetric eigendecomposition (float64; exact, and 4-8x faster there than
    the iterations' matrix products at these sizes); elsewhere by the Newton-Schulz iterations,
    whose ``Z`` is ``a^-1/2`` already (no backward through the iterations, which would cost twice
    the forward's products; no host synchronisation, so a CUDA graph replays it). Eigenvalues
    below :data:`ROOT_FLOOR` of ``|a|_F`` count as that floor in the gradient (the iterations
    resolve about as far; the true derivative is unbounded at 0). Where the iterations have not
    converged, their gradient is up to half the derivative of the value computed there."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, iterations: int) -> torch.Tensor:
        if a.device.type == "cpu":
            a64 = a.double()
            vals, vecs = torch.linalg.eigh((a64 + a64.transpose(-1, -2)) / 2)
            norm = a64.pow(2).sum((-2, -1), keepdim=True).sqrt()[..., 0]
            inv = vals.clamp(min=0).add(ROOT_FLOOR * norm).clamp(min=1e-300).rsqrt()
            ctx.save_for_backward(((vecs * inv[..., None, :]) @ vecs.transpose(-1, -2)).to(a.dtype))
            value: torch.Tensor = vals.clamp(min=0).sqrt().sum(-1).to(a.dtype)
            return value
        y, z, norm = _newton_schulz(a, iterations)
        root_norm = norm.sqrt()
        ctx.save_for_backward(z / root_norm)
        return torch.diagonal(y, dim1=-2, dim2=-1).sum(-1) * root_norm[..., 0, 0]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (inv_root,) = ctx.saved_tensors
        half = 0.25 * (inv_root + inv_root.transpose(-1, -2))
        return half * grad[..., None, None], None


#: the eigenvalue floor of :class:`_TraceSqrt`'s gradient, relative to ``|a|_F``: 20 Newton-Schulz
#: iterations resolve inverse roots up to about ``1.5^20`` times ``|a|_F^-1/2`` (``1.5^-40 ~ 1e-7``)
ROOT_FLOOR = 1e-7


def w2_loss(
    mean: torch.Tensor, second: torch.Tensor, target: Gaussian, iterations: int = NS_ITERATIONS
) -> torch.Tensor:
    """``L_W2`` (module docstring) of the Gaussian with ``mean`` and second moment ``second``
    against ``target``; leading dimensions (regions) give one value each.

    ``tr((S_s^1/2 S S_s^1/2)^1/2) = tr((B^T S B)^1/2)`` with ``B`` the target's ``basis`` (``S_s =
    B B^T``: both matrices have the same non-zero eigenvalues), an ``r x r`` matrix: at the deep
    layers ``r`` is a half to a third of ``N``, and the iterations cost ``r^3``."""
    cov = second - mean[..., :, None] * mean[..., None, :]
    b = target.basis
    cross = trace_sqrtm(b.transpose(-1, -2) @ cov @ b, iterations)
    trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1) + target.trace - 2.0 * cross
    return ((mean - target.mean).pow(2).sum(-1) + trace) / mean.shape[-1]


# --------------------------------------------------------------------------- sorted projections (sliced)


def projections(n: int, generator: torch.Generator, k: int | None = None) -> torch.Tensor:
    """``(N, K)`` random unit directions (``K = N`` by default, as Heitz et al.), float32, CPU."""
    v = torch.randn(n, k or n, generator=generator)
    out: torch.Tensor = v / v.norm(dim=0, keepdim=True)
    return out


def sorted_projections(features: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """``(K, M)``: each direction's projections of ``features``' ``M`` positions, sorted."""
    f = features.reshape(features.shape[-3], -1).float()
    return sort_rows(proj.T @ f)[0]


#: row length from which :func:`sort_rows` sorts a CPU tensor's rows one by one as int32 keys: the
#: length from which torch sorts a 1-D integer tensor by radix sort (at::internal::GRAIN_SIZE)
RADIX_MIN = 32768


def sort_rows(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``p.sort(dim=1)`` of float32 ``(K, M)``: sorted values and their positions.

    On the CPU, rows of :data:`RADIX_MIN` values or more are sorted one at a time as int32 keys that
    order as the floats do (the bits of a negative float flipped but its sign), which torch sorts
    by radix sort: 3-4x faster there than its comparison sort of float rows (relu1_1 at 512 x 384,
    64 rows of 196608: 0.18 s against 0.57 s on two cores). The same values; ties may be ordered
    otherwise."""
    if p.device.type != "cpu" or p.shape[1] < RADIX_MIN or p.dtype != torch.float32:
        out = p.sort(dim=1)
        return out.values, out.indices
    keys = _flip(p.contiguous().view(torch.int32))
    order = torch.empty(p.shape, dtype=torch.int64)
    for r in range(p.shape[0]):
        torch.sort(keys[r], out=(keys[r], order[r]))
    return _flip(keys).view(torch.float32), order


def _flip(bits: torch.Tensor) -> torch.Tensor:
    """A float32's bits as an int32 that orders as the float does, and back (its own inverse): a
    negative float's bits but the sign flipped."""
    out = bits >> 31
    return out.bitwise_and_(0x7FFFFFFF).bitwise_xor_(bits)


def quantiles(values: torch.Tensor, m: int) -> torch.Tensor:
    """Sorted ``(K, M0)`` -> ``(K, m)``: the empirical quantile function read at ``m`` evenly
    spaced levels (linear interpolation; stays sorted)."""
    if values.shape[1] == m:
        return values
    return F.interpolate(values[None], size=m, mode="linear", align_corners=False)[0]


def mix_sorted(parts: Sequence[torch.Tensor], weights: Sequence[float], m: int) -> torch.Tensor:
    """The styles' samples mixed in proportion: ``round(w_i m)`` quantiles of each, sorted ``(K, m)``."""
    total, cum, ends = float(sum(weights)), 0.0, [0]
    for w in weights:  # each style's share, rounded so that the shares add up to m exactly
        cum += w
        ends.append(round(m * cum / total))
    counts = [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]
    taken = [quantiles(p, c) for p, c in zip(parts, counts, strict=True) if c > 0]
    return torch.cat(taken, dim=1).sort(dim=1).values


#: the ranks' histogram (:func:`matched_targets`): buckets per direction, one per
#: :data:`RANK_POSITIONS_PER_BUCKET` positions, at least :data:`RANK_BUCKETS_MIN` and at most
#: :data:`RANK_BUCKETS_MAX` (512 x 384 px, Tubingen against The Starry Night: the loss within
#: 0.05 % of the sorted one at every style layer, the gradients' cosine above 0.9995)
RANK_POSITIONS_PER_BUCKET = 16
RANK_BUCKETS_MIN = 1024
RANK_BUCKETS_MAX = 65536
#: the buckets span the target's range widened by this fraction of it on each side
RANK_MARGIN = 0.25
#: values per pass of the matching on a CPU: a few directions at a time, so that its dozen passes
#: run in the cache rather than over the whole layer's projections
MATCH_CHUNK = 1 << 21


class MatchBuffers:
    """The matching's buffers (:func:`match_in_place`), kept by a term across its evaluations:
    each layer's projections, a float32 copy of its largest layer's features (then that layer's
    gradient before rounding) and a chunk's scratch. Allocating them anew each time costs the CPU a page fault per 4 KiB
    touched, about as much as the matching itself."""

    def __init__(self) -> None:
        self._features: torch.Tensor | None = None
        self._chunk: tuple[torch.Tensor, ...] = ()
        self._differences: dict[Any, torch.Tensor] = {}

    def differences(self, key: Any, k: int, m: int, device: torch.device) -> torch.Tensor:
        """A float32 ``(k, m)`` buffer for the projections of the term's part ``key`` (a layer, a
        region of a layer), then their differences from their partners, kept for its backward (a
        later evaluation overwrites it, and autograd refuses an earlier graph's backward then)."""
        buf = self._differences.get(key)
        if buf is None or buf.shape != (k, m) or buf.device != device:
            buf = self._differences[key] = torch.empty(k, m, device=device)
        return buf

    def like(self, shape: tuple[int, int], channels_last: bool, device: torch.device) -> torch.Tensor:
        """A float32 ``(N, M)`` buffer, its positions as rows (channels-last) or its channels."""
        n, m = shape
        if self._features is None or self._features.numel() < n * m or self._features.device != device:
            self._features = torch.empty(n * m, device=device)
        flat = self._features[: n * m]
        return flat.view(m, n).T if channels_last else flat.view(n, m)

    def chunk(self, rows: int, m: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows, m)`` views: int64 bucket indices, float32 values, complex64 table entries."""
        n = rows * m
        if not self._chunk or self._chunk[0].numel() < n or self._chunk[0].device != device:
            self._chunk = (
                torch.empty(n, dtype=torch.int64, device=device),
                torch.empty(n, device=device),
                torch.empty(n, dtype=torch.complex64, device=device),
            )
        index, values, entries = self._chunk
        return index[:n].view(rows, m), values[:n].view(rows, m), entries[:n].view(rows, m)


def sliced_loss(
    features: torch.Tensor,
    proj: torch.Tensor,
    target: torch.Tensor,
    buffers: MatchBuffers | None = None,
    key: Any = None,
) -> torch.Tensor:
    """``L_SW`` (module docstring) of ``(…, N, H, W)`` or ``(N, M)`` features against sorted
    ``target`` ``(K, M)``, ``proj`` ``(N, K)``. See :class:`_Sliced` for the gradient and
    :func:`match_in_place` for how each projection finds its sorted partner; ``buffers``: a
    term's, to reuse, and ``key`` this call's part of the term (one per call of an evaluation)."""
    f = features.reshape(features.shape[-3], -1) if features.dim() != 2 else features
    out: torch.Tensor = _Sliced.apply(f, proj, target, buffers or MatchBuffers(), key)
    return out


def rank_buckets(m: int) -> int:
    """Buckets per direction of the ranks' histogram for ``m`` positions."""
    return max(RANK_BUCKETS_MIN, min(RANK_BUCKETS_MAX, m // RANK_POSITIONS_PER_BUCKET))


def bucket_frame(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per direction, ``lo`` and ``scale`` that put the sorted ``target``'s range, widened by
    :data:`RANK_MARGIN` of it on each side, onto the buckets ``[0, rank_buckets(M))``."""
    t_min, t_max = target[:, 0], target[:, -1]
    width = (t_max - t_min).clamp_min(1e-12) * (1 + 2 * RANK_MARGIN)
    scale = rank_buckets(target.shape[1]) * (1 - 1e-6) / width
    return t_min - RANK_MARGIN * (t_max - t_min), scale


def match_in_place(
    u: torch.Tensor,
    target: torch.Tensor,
    lo: torch.Tensor,
    scale: torch.Tensor,
    buffers: MatchBuffers,
    complex_gather: bool | None = None,
) -> None:
    """``u`` ``(K, M)``: projections in bucket units, ``(p - lo) * scale`` (:func:`bucket_frame`),
    replaced by their differences from their sorted partners, ``u - (target[rank] - lo) * scale``.

    Departure from Heitz et al., who sort each direction's projections: the ranks come from a
    histogram of :func:`rank_buckets` buckets over the target's range (values beyond it counted
    in the end buckets). A bucket holding the ranks ``a..b-1`` maps its values linearly onto the
    sorted targets ``t_a..t_{b-1}``, centred so that the bucket's values average
    ``(t_a + t_{b-1}) / 2``: exact for a bucket of one value, ties share their targets' middle,
    and values spread in the bucket get the sort's partners up to the target's curvature over a
    few ranks. It is 8 passes over the projections, a few directions at a time on a CPU so that
    they run in the cache, instead of a sort. ``complex_gather``: read the table in one gather of
    complex numbers (default: on a CPU, where it is faster; MPS has no complex64)."""
    k_all, m = u.shape
    bins = rank_buckets(m)
    top = bins * (1 - 1e-6)
    rows = k_all if u.device.type != "cpu" else max(1, min(k_all, MATCH_CHUNK // m))
    index, clamped, entries = buffers.chunk(rows, m, u.device)
    one = torch.ones((), device=u.device)
    for r0 in range(0, k_all, rows):
        r1 = min(k_all, r0 + rows)
        n = r1 - r0
        ur, k, uc = u[r0:r1], index[:n], clamped[:n]
        e = entries[:n] if (u.device.type == "cpu" if complex_gather is None else complex_gather) else None
        torch.clamp(ur, 0, top, out=uc)
        k.copy_(uc)
        counts = torch.zeros(n, bins, device=u.device).scatter_add_(1, k, one.expand_as(uc))
        sums = torch.zeros(n, bins, device=u.device).scatter_add_(1, k, uc)
        ends = counts.cumsum(1)
        frame_lo, frame_scale = lo[r0:r1, None], scale[r0:r1, None]
        t = target[r0:r1]
        low = t.gather(1, (ends - counts).long().clamp_(max=m - 1)).sub_(frame_lo).mul_(frame_scale)
        high = t.gather(1, (ends.long() - 1).clamp_(min=0)).sub_(frame_lo).mul_(frame_scale)
        d = high - low
        mean_u = sums.div_(counts.clamp_min_(1.0))
        # partner = (low + high) / 2 + (uc - mean_u) * d  =  c + uc * d
        c = low.add_(high).mul_(0.5).sub_(mean_u.mul_(d))
        if e is not None:  # the CPU: (c, d) read in one gather of complex numbers
            parts = torch.view_as_real(torch.gather(torch.complex(c, d), 1, k, out=e))
            ur.sub_(parts[..., 0].addcmul_(parts[..., 1], uc))
        else:  # a GPU: plain float32 gathers (complex64 is not on every backend, MPS)
            ur.sub_(c.gather(1, k).addcmul_(d.gather(1, k), uc))


class _Sliced(torch.autograd.Function):
    """Forward ``mean((sort(V^T F) - T)^2)`` in float32 (each projection's partner by
    :func:`match_in_place`), keeping the differences ``p - T[rank]`` (float32, ``(K, M)``) for
    backward: the gradient ``V (2 (p - T[rank]) / KM)``, one matrix product made in ``F``'s layout
    with the incoming gradient folded into ``V``. For bfloat16 ``F`` (autocast) that product is
    bfloat16's, as autocast's matrix products are (0.26 % from the float32 product rounded, at
    every style layer of a 512 px run); float32 ``F`` gets it in float32."""

    @staticmethod
    def forward(
        ctx: Any, f: torch.Tensor, proj: torch.Tensor, target: torch.Tensor, buffers: MatchBuffers, key: Any
    ) -> torch.Tensor:
        with torch.autocast(f.device.type, enabled=False):
            lo, scale = bucket_frame(target)
            layout = ((f.shape[0], f.shape[1]), f.stride(0) == 1 and f.shape[0] > 1, f.device)  # channels-last
            f32 = f if f.dtype == torch.float32 else buffers.like(*layout).copy_(f)
            u = buffers.differences(key, proj.shape[1], f.shape[1], f.device)
            torch.addmm((-lo * scale)[:, None], (proj * scale).T, f32, out=u)  # bucket units
            match_in_place(u, target, lo, scale, buffers)  # u: differences, row k in units of 1 / scale_k
            loss: torch.Tensor = (torch.linalg.vector_norm(u, dim=1) / scale).square().sum() / u.numel()
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(u, proj, scale)
            ctx.layout, ctx.dtype, ctx.buffers = layout, f.dtype, buffers
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        u, proj, scale = ctx.saved_tensors
        (n, m), channels_last, device = ctx.layout
        back = proj * (grad.float() * 2 / u.numel() / scale)  # d loss / d p = 2 (p - T) / n, rows rescaled
        if ctx.dtype == torch.bfloat16:  # one product in bfloat16, float32 sums, as autocast's
            ub, bb = u.to(ctx.dtype), back.to(ctx.dtype)
            return ((ub.T @ bb.T).T if channels_last else bb @ ub), None, None, None, None
        # float32 features get a gradient of their own; others (float16) one rounded from the buffer
        fresh = ctx.dtype == torch.float32
        out = MatchBuffers().like((n, m), channels_last, device) if fresh else ctx.buffers.like(*ctx.layout)
        if channels_last:
            torch.mm(u.T, back.T, out=out.T)
        else:
            torch.mm(back, u, out=out)
        return (out if fresh else out.to(ctx.dtype)), None, None, None, None


# --------------------------------------------------------------------------- terms


@dataclass
class W2StyleTerm:
    """``L_style = sum_l w_l L_W2(l)`` against one Gaussian per layer (the style's, or the blend's)."""

    targets: dict[str, Gaussian]
    layer_weights: dict[str, float]
    weight: float
    name: str = "style"

    @property
    def layers(self) -> list[str]:
        return list(self.layer_weights)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=image.device)
        for n, w in self.layer_weights.items():
            m = Moments.of(features[n])
            total = total + w * w2_loss(m.mean(), m.second(), self.targets[n])
        return total

    def of_moments(self, moments: Mapping[str, Moments]) -> torch.Tensor:
        """The same value from the pastiche's moments (tiles: summed over the tiles' cores)."""
        out = sum(
            w * w2_loss(moments[n].mean(), moments[n].second(), self.targets[n]) for n, w in self.layer_weights.items()
        )
        return out  # type: ignore[return-value]

    def at_zero(self) -> float:
        return sum(w * float(self.targets[n].at_zero()) for n, w in self.layer_weights.items())


@dataclass
class SlicedStyleTerm:
    """``L_style = sum_l w_l L_SW(l)``: the level's directions ``proj`` and the target's sorted
    projections, resampled to the pastiche's positions, per layer."""

    proj: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    layer_weights: dict[str, float]
    weight: float
    name: str = "style"
    buffers: MatchBuffers = field(default_factory=MatchBuffers, repr=False, compare=False)

    @property
    def layers(self) -> list[str]:
        return list(self.layer_weights)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=image.device)
        for n, w in self.layer_weights.items():
            total = total + w * sliced_loss(features[n], self.proj[n], self.targets[n], self.buffers, n)
        return total

    def at_zero(self) -> float:
        return sum(w * float(self.targets[n].pow(2).mean()) for n, w in self.layer_weights.items())


@dataclass
class RegionGaussians:
    """One layer's regions for W2: masks ``(R, M)``, ``1 / area``, area fractions, the targets
    (one Gaussian per region, stacked), and the masks' non-zero positions for the Grams
    (:class:`~napari_nst.core.objective.losses.RegionTargets`)."""

    regions: Any  # losses.RegionTargets: masks, inv_area, fraction, index/values/bounds
    target: Gaussian

    def loss(self, features: torch.Tensor) -> torch.Tensor:
        r = self.regions
        f = features.reshape(features.shape[-3], -1)
        second = r.region_grams(features) * r.inv_area[:, None, None]
        mean = (r.masks @ f.float().T) * r.inv_area[:, None]
        out: torch.Tensor = (w2_loss(mean, second, self.target) * r.fraction).sum()
        return out


@dataclass
class GuidedW2Term:
    """``L_style`` with regions: ``sum_l w_l sum_r a_r L_W2(region r)`` (``a_r`` its area fraction)."""

    regions: dict[str, RegionGaussians]
    layer_weights: dict[str, float]
    weight: float
    name: str = "style"

    @property
    def layers(self) -> list[str]:
        return list(self.layer_weights)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=image.device)
        for n, w in self.layer_weights.items():
            total = total + w * self.regions[n].loss(features[n])
        return total

    def at_zero(self) -> float:
        """Per unit of styled area, as :meth:`GuidedStyleTerm.at_zero`."""
        total, styled = 0.0, 1e-12
        for n, w in self.layer_weights.items():
            r = self.regions[n]
            total += w * float((r.target.at_zero() * r.regions.fraction).sum())
            styled = max(styled, float(r.regions.fraction.sum()))
        return total / styled


@dataclass
class RegionSorted:
    """One layer's regions for sliced: each region's positions (where it is the largest mask),
    its area fraction and its target's sorted projections resampled to its positions."""

    index: list[torch.Tensor]
    fraction: list[float]
    targets: list[torch.Tensor]


@dataclass
class GuidedSlicedTerm:
    """``L_style`` with regions: ``sum_l w_l sum_r a_r L_SW(region r's positions)``."""

    proj: dict[str, torch.Tensor]
    regions: dict[str, RegionSorted]
    layer_weights: dict[str, float]
    weight: float
    name: str = "style"
    buffers: MatchBuffers = field(default_factory=MatchBuffers, repr=False, compare=False)

    @property
    def layers(self) -> list[str]:
        return list(self.layer_weights)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=image.device)
        for n, w in self.layer_weights.items():
            f = features[n].reshape(features[n].shape[-3], -1)
            r = self.regions[n]
            for i, (index, a, t) in enumerate(zip(r.index, r.fraction, r.targets, strict=True)):
                part = sliced_loss(f.index_select(1, index), self.proj[n], t, self.buffers, (n, i))
                total = total + (w * a) * part
        return total

    def at_zero(self) -> float:
        total, styled = 0.0, 1e-12
        for n, w in self.layer_weights.items():
            r = self.regions[n]
            total += w * sum(a * float(t.pow(2).mean()) for a, t in zip(r.fraction, r.targets, strict=True))
            styled = max(styled, sum(r.fraction))
        return total / styled


# --------------------------------------------------------------------------- a level's targets


@dataclass
class StyleStats:
    """What one style image gives at a level, per layer: its :class:`Moments` (W2), or its sorted
    projections along the level's directions ``proj`` (sliced; not yet resampled)."""

    moments: dict[str, Moments] = field(default_factory=dict)
    sorted: dict[str, torch.Tensor] = field(default_factory=dict)
    proj: dict[str, torch.Tensor] = field(default_factory=dict)


def level_projections(
    seed: int, shape: tuple[int, int], channels: Mapping[str, int], device: torch.device
) -> dict[str, torch.Tensor]:
    """The level's directions per layer, drawn from the run's ``seed`` and the level's ``shape``
    (the pastiche's): the same for every evaluation of the level, every style image, and every
    frame of a stack."""
    gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + shape[0] * 65_537 + shape[1]) % 2**62)
    return {n: projections(c, gen).to(device) for n, c in channels.items()}


def style_stats(
    loss: str, feats: Mapping[str, torch.Tensor], layers: Sequence[str], seed: int, shape: tuple[int, int]
) -> StyleStats:
    """A style image's statistics at a level whose pastiche is ``shape`` (its network features
    ``feats``; no autograd)."""
    with torch.no_grad():
        if loss == "wasserstein":
            return StyleStats(moments={n: Moments.of(feats[n]) for n in layers})
        device = next(iter(feats.values())).device
        proj = level_projections(seed, shape, {n: int(feats[n].shape[-3]) for n in layers}, device)
        return StyleStats(sorted={n: sorted_projections(feats[n], proj[n]) for n in layers}, proj=proj)


def blended_term(
    loss: str,
    stats: Sequence[StyleStats],
    weights: Sequence[float],
    layer_weights: dict[str, float],
    nm: Mapping[str, tuple[int, int]],
) -> W2StyleTerm | SlicedStyleTerm:
    """The style term of one style (``weights`` ``[1]``) or of several blended (their mixture);
    weight 1 (the caller sets it). ``nm``: the pastiche's (N, M) per layer."""
    if loss == "wasserstein":
        targets = {}
        for n in layer_weights:
            mean, second = mix_moments([s.moments[n] for s in stats], weights)
            targets[n] = Gaussian.of(mean, second)
        return W2StyleTerm(targets, layer_weights, 1.0)
    sorted_t = {n: mix_sorted([s.sorted[n] for s in stats], weights, nm[n][1]) for n in layer_weights}
    return SlicedStyleTerm(stats[0].proj, sorted_t, layer_weights, 1.0)


# --------------------------------------------------------------------------- several styles, regions


def controls_term(ctl: Any, ctx: Any, shape: tuple[int, int], nm: Mapping[str, tuple[int, int]]) -> Any:
    """The level's style term of :class:`~napari_nst.core.objective.controls.Controls` ``ctl``
    (several styles, regions) for ``style_loss`` wasserstein or sliced, its weight automatic (or
    ``style_weight``) times the style strength's factor (as for gram: weights.strength_factor)."""
    from napari_nst.core.objective.weights import auto_style_weight, strength_factor

    layer_weights = dict(ctx.layer_w)
    stats = _styles_stats(ctl, ctx, shape)
    term: Any
    if ctl.regions is None:
        term = blended_term(ctx.opts.style_loss, stats, ctl.coefficients(), layer_weights, nm)
    elif ctx.opts.style_loss == "wasserstein":
        term = GuidedW2Term(_region_gaussians(ctl, ctx, shape, stats, nm), layer_weights, 1.0)
    else:
        term = GuidedSlicedTerm(stats[0].proj, _region_sorted(ctl, ctx, shape, stats, nm), layer_weights, 1.0)
    term.weight = auto_style_weight(ctx.opts, term.at_zero()) * strength_factor(ctl.strength)
    return term


def _styles_stats(ctl: Any, ctx: Any, shape: tuple[int, int]) -> list[StyleStats]:
    """Each style image's statistics at the level (each its own ``style_scale``); kept in
    ``ctl.grams_memo`` where a stack keeps them for all frames."""
    key = ("stats", shape)
    if ctl.grams_memo is not None and key in ctl.grams_memo:
        return ctl.grams_memo[key]  # type: ignore[no-any-return]
    out = []
    for i, (s, s_shape) in enumerate(zip(ctl.styles, ctl.style_shapes, strict=True)):
        x = ctx.resized(s, ctx.opts.style_shape(s_shape, shape, i))
        with torch.no_grad():
            feats = ctx.net(x)
        out.append(style_stats(ctx.opts.style_loss, feats, ctx.opts.style_layers, ctx.gen.initial_seed(), shape))
    if ctl.grams_memo is not None:
        ctl.grams_memo[key] = out
    return out


def _group_mix(ctl: Any, target: Any) -> tuple[list[int], list[float]]:
    """The styles a region group takes its style from, and their weights."""
    from napari_nst.core.objective.regions import BLEND

    if target == BLEND:
        return list(range(len(ctl.styles))), ctl.coefficients()
    return [int(target)], [1.0]


def _region_gaussians(
    ctl: Any, ctx: Any, shape: tuple[int, int], stats: list[StyleStats], nm: Mapping[str, tuple[int, int]]
) -> dict[str, RegionGaussians]:
    """Per layer: the regions' masks (as the guided Grams have them) and each region group's target
    Gaussian (its style's, or the styles' mixture)."""
    keyed = ctl._groups()
    grams = [{n: s.moments[n].gram for n in s.moments} for s in stats]
    sizes = [{n: s.moments[n].count for n in s.moments} for s in stats]
    regions = ctl._region_targets(ctx, shape, keyed, (grams, sizes, {}), nm)  # .grams: the mixed E[f f^T]
    out = {}
    for n, r in regions.items():
        means = []
        for target, _source in keyed:
            uses, ws = _group_mix(ctl, target)
            mixed: Any = sum(w * stats[i].moments[n].mean() for i, w in zip(uses, ws, strict=True))
            means.append(mixed)
        out[n] = RegionGaussians(r, Gaussian.of(torch.stack(means), r.grams))
    return out


def _region_sorted(
    ctl: Any, ctx: Any, shape: tuple[int, int], stats: list[StyleStats], nm: Mapping[str, tuple[int, int]]
) -> dict[str, RegionSorted]:
    """Per layer: each region group's positions (where its mask is the largest, the unstyled rest
    included), area fraction and target (its style's sorted projections, or the styles' mixed)."""
    keyed = ctl._groups()
    zeros = [{n: torch.zeros(()) for n in s.sorted} for s in stats]
    ones = [{n: 1 for n in s.sorted} for s in stats]
    regions = ctl._region_targets(ctx, shape, keyed, (zeros, ones, {}), nm)
    out = {}
    for n, r in regions.items():
        m = r.masks
        owner = torch.cat([m, (1.0 - m.sum(0, keepdim=True)).clamp(min=0)]).argmax(0)
        found = RegionSorted([], [], [])
        for k, (target, _source) in enumerate(keyed):
            index = torch.nonzero(owner == k).flatten()
            if index.numel() == 0:
                continue
            uses, ws = _group_mix(ctl, target)
            found.index.append(index)
            found.fraction.append(index.numel() / m.shape[1])
            found.targets.append(mix_sorted([stats[i].sorted[n] for i in uses], ws, int(index.numel())))
        out[n] = found
    return out


def resolution_style(
    loss: str,
    f16: Mapping[str, torch.Tensor],
    f32: Mapping[str, torch.Tensor],
    layer_weights: dict[str, float],
    seed: int,
) -> torch.Tensor:
    """``L_style`` of the features ``f16`` against the statistics of ``f32`` (the engine's
    bfloat16 resolution, ``engine._Finish``), for ``style_loss`` wasserstein or sliced."""
    any_f = next(iter(f32.values()))
    stats = style_stats(loss, f32, list(layer_weights), seed, (int(any_f.shape[-2]), int(any_f.shape[-1])))
    nm = {n: (int(f.shape[-3]), int(f.shape[-2] * f.shape[-1])) for n, f in f32.items()}
    term = blended_term(loss, [stats], [1.0], layer_weights, nm)
    return term(f16, any_f)
