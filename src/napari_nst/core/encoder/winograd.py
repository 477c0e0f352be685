"""3x3 convolutions through the Winograd transform F(4x4, 3x3) in plain torch (Lavin & Gray 2016).

Each 6x6 input tile ``d`` and the kernel ``g`` are transformed (``V = B^T d B``, ``U = G g G^T``),
multiplied element-wise over the 36 transform positions (36 matrix products over channels, one
batched ``bmm``) and transformed back to a 4x4 output tile (``A^T M A``): 36 multiplications
per 16 outputs instead of 144, so 4x fewer than the direct convolution. Where the channel count is
large the products dominate and run as well-shaped GEMMs; where it is small (VGG's 64 and 128
channel layers at full size) the transforms' memory traffic dominates and the direct convolution is
faster (a whole 256 px evaluation under AVX2: 0.74x the textbook's with it from 256 channels,
0.83x from 128), so only the layers with at least :data:`WIDE_MIN` input channels use it
(:class:`napari_nst.core.encoder.vgg.Conv3x3`).

Whether a run uses it at all is measured, not assumed (``core.compute.tune``: the plan
"winograd_wide"). The result is the same convolution to float32 rounding (relative error ~1e-5
against oneDNN's direct convolution, which is ~1e-6): the transforms' constants (1/4, 1/6, 1/24)
cost some precision. No departure from the objective's formulas.

Memory: the transformed kernel is 4x the kernel (VGG16's layers from conv3_2 to conv5_1: 151 MB
in all), kept on the module while a run uses it and released at the run's end. The
backward (the input gradient; the network is frozen) reuses it: the input gradient of a padding-1
3x3 correlation is the correlation of the output gradient with the kernel flipped and its channels
swapped, and flipping the gradient before and after the correlation turns the flipped kernel back
into the kernel, so one ``U`` (read transposed) serves both directions.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from napari_nst.core.encoder.layer_names import WIDE_MIN

#: the largest intermediate :func:`correlate` makes at once (bytes)
CHUNK_BYTES = 8 * 2**20

__all__ = ["WIDE_MIN", "WinogradConv3x3Fn", "correlate", "transform_weight"]


M = 4  # output tile
A = M + 2  # input tile

_BT: list[list[float]] = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
_G: list[list[float]] = [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
]
_AT: list[list[float]] = [
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
]


def _kron(rows: list[list[float]]) -> torch.Tensor:
    m = torch.tensor(rows, dtype=torch.float64)
    return torch.kron(m, m)


#: the kernels' 2-D transform as one matrix on flattened 3x3 kernels (36, 9)
_G2 = _kron(_G)
#: the 1-D input and output transforms, applied along each tile axis in turn (12 multiplications
#: per input value instead of the 2-D matrix's 36: half the time of the transforms at 256 px)
_B1, _A1 = torch.tensor(_BT, dtype=torch.float64), torch.tensor(_AT, dtype=torch.float64)


def _both_axes(m: torch.Tensor, v: torch.Tensor, n: int) -> torch.Tensor:
    """``m`` ``(k, 6)`` applied along both tile axes of ``v`` ``(6, 6, n)``: ``(k, k, n)``."""
    m = m.to(v)
    v = (m @ v.view(6, 6 * n)).view(m.shape[0], 6, n)  # along the first axis
    return torch.matmul(m, v)  # along the second, for each row of the first


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(Co, Ci, 3, 3)`` -> ``U`` ``(36, Ci, Co)`` float32: each transform position's ``Ci x Co``
    matrix, written in that layout by one matrix product (a 512 x 512 layer: ~20 ms on 2 cores)."""
    co, ci = weight.shape[:2]
    w = weight.detach().to(torch.float32).transpose(0, 1).reshape(ci * co, 9)  # rows (i, o)
    return (_G2.to(w) @ w.T).view(A * A, ci, co)


def correlate(x: torch.Tensor, u: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """The 3x3, stride-1, zero-padding-1 correlation of float32 ``x`` ``(1, Ci, H, W)`` with the
    kernel whose transform is ``u`` (``(36, Ci, Co)``; ``transpose``: ``u`` read as ``(36, Co, Ci)``,
    channels swapped). Returns ``(1, Co, H, W)`` in channels-last memory format, no bias."""
    _, c, h, w = x.shape
    co = u.shape[1] if transpose else u.shape[2]
    th, tw = -(-h // M), -(-w // M)
    xp = F.pad(x[0].permute(1, 2, 0), (0, 0, 1, M * tw + 1 - w, 1, M * th + 1 - h))  # (M th + 2, M tw + 2, C)
    tiles = xp.unfold(0, A, M).unfold(1, A, M)  # (th, tw, C, 6, 6), a view
    k = u.transpose(1, 2) if transpose else u
    # a tensor of its own (not a view), so that the in-place ReLU after it may write to it
    out = torch.empty((1, co, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    hwc = out[0].permute(1, 2, 0)
    # rows of tiles at a time, so that the intermediates (36 x tiles x channels) stay under
    # CHUNK_BYTES: the allocator then reuses the same few blocks instead of growing the heap
    rows = max(1, min(th, CHUNK_BYTES // (A * A * tw * max(c, co) * 4)))
    for r0 in range(0, th, rows):
        r1 = min(th, r0 + rows)
        t = (r1 - r0) * tw
        v = tiles[r0:r1].permute(3, 4, 0, 1, 2).reshape(A * A, t * c)  # the tiles, gathered (a copy)
        v = _both_axes(_B1, v, t * c).view(A * A, t, c)
        v = torch.bmm(v, k)  # (36, T, Co): the products
        v = _both_axes(_A1, v, t * co).view(M, M, r1 - r0, tw, co)
        v = v.permute(2, 0, 3, 1, 4).reshape(M * (r1 - r0), M * tw, co)
        y0, y1 = r0 * M, min(h, r1 * M)
        hwc[y0:y1].copy_(v[: y1 - y0, :w])
    return out


class WinogradConv3x3Fn(torch.autograd.Function):
    """Forward :func:`correlate` plus the bias; backward the input gradient only (frozen weights),
    through the same ``U`` (module docstring). Keeps ``U`` (the module's, not a copy) for backward,
    not the input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(u)
        y = correlate(x, u)
        if bias is not None:
            y += bias.view(1, -1, 1, 1)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (u,) = ctx.saved_tensors
        gx = correlate(gy.flip(2, 3), u, transpose=True)
        return gx.flip(2, 3), None, None
