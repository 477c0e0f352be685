"""3x3 convolutions through the Winograd transform F(4x4, 3x3) in plain torch (Lavin & Gray 2016).

Each 6x6 input tile ``d`` and the kernel ``g`` are transformed (``V = B^T d B``, ``U = G g G^T``),
multiplied element-wise over the 36 transform positions (36 matrix products over channels, one
batched ``bmm``) and transformed back to a 4x4 output tile (``A^T M A``): 36 multiplications
per 16 outputs instead of 144, so 4x fewer than the direct convolution. Where the channel count is
large the products dominate and run as well-shaped GEMMs; the fewer the channels, the more the
transforms' memory traffic weighs, and CPUs differ in where that tips. So a plan runs it on the
layers with at least :data:`WIDE_MIN` (256) input channels, or with at least ``NARROW_MIN`` (128:
conv2_2 and conv3_1 too; per evaluation at 256 px 0.91-1.00x the plan from 256 under AVX2, 1.03x in
float32 with AVX-512: benchmarks/results/cpu.json), and the 64-channel layers never.
:class:`napari_nst.core.encoder.vgg.Conv3x3` runs it; a VGG block run as one function
(``vgg._ConvPairPoolFn``) runs it on its bands of rows.

Whether a run uses it at all, and from which layer, is measured, not assumed (``core.compute.tune``:
the plans "winograd_wide", from 256 or from 128 channels). The result is the same convolution to
float32 rounding (relative error ~1e-5 against oneDNN's direct convolution, which is ~1e-6): the
transforms' constants (1/4, 1/6, 1/24) cost some precision. No departure from the objective's
formulas.

Memory: the transformed kernel is 4x the kernel (VGG16's layers from conv3_2 to conv5_1: 151 MB in
all, 158 MB from conv2_2). A small level keeps it on the module while the run uses it (released at
the run's end); a large one makes it at every call into one buffer of the work space
(:func:`kernel`: 36 MB for a 512-channel layer), which costs the same few milliseconds at any size
(:data:`napari_nst.core.compute.memory.KEEP_KERNELS_BELOW`). The
intermediates (the padded input, a band of rows at a time; the gathered, transformed and multiplied
tiles, :data:`CHUNK_BYTES` at a time) go into a work space made once per thread
(:class:`_Workspace`, ~20 MB at 512 px) instead of fresh tensors at every call. The backward (the
input gradient; the network is frozen) reuses the kernel: the input gradient of a padding-1 3x3
correlation is the correlation of the output gradient with the kernel flipped and its channels
swapped, and flipping the gradient before and after the correlation turns the flipped kernel back
into the kernel, so one ``U`` (read with its channels swapped) serves both directions. The flips
themselves are not made: :func:`correlate`'s ``mirror`` reverses the transforms' matrices instead."""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from napari_nst.core.encoder.layer_names import WIDE_MIN

#: the largest intermediate :func:`correlate` makes at once (bytes)
CHUNK_BYTES = 8 * 2**20
#: a work space buffer that may shrink is made again where it is more than this many times a call's need
SHRINK = 4

__all__ = [
    "WIDE_MIN",
    "WinogradConv3x3Fn",
    "conv3x3",
    "conv3x3_input_grad",
    "correlate",
    "kernel",
    "release_workspace",
    "transform_weight",
    "workspace_bytes",
]


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
#: float32 (Bt, At) for :func:`correlate`, plain (False) and mirrored (True: Bt's columns and At's rows reversed)
_TRANSFORMS = {
    False: (_B1.float(), _A1.float()),
    True: (_B1.flip(1).float(), _A1.flip(0).float()),
}


def _both_axes(m: torch.Tensor, v: torch.Tensor, n: int, mid: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``m`` ``(k, 6)`` applied along both tile axes of ``v`` ``(6, 6, n)``: ``(k, k, n)``, written
    into ``out`` through ``mid`` (flat buffers of the workspace)."""
    k = m.shape[0]
    t = torch.mm(m, v.view(6, 6 * n), out=mid[: k * 6 * n].view(k, 6 * n)).view(k, 6, n)  # first axis
    return torch.matmul(m, t, out=out[: k * k * n].view(k, k, n))  # the second, for each row of the first


def transform_weight(weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(Co, Ci, 3, 3)`` -> ``U`` ``(36, Co, Ci)`` float32: each transform position's ``Co x Ci``
    matrix, written by one matrix product from the weight as it lies in memory (no reordered copy);
    into ``out`` (a flat float32 buffer of at least ``36 Co Ci`` values) where given."""
    co, ci = weight.shape[:2]
    w = weight.detach().to(torch.float32).reshape(co * ci, 9)  # rows (o, i): a view of a contiguous weight
    g2 = _G2.to(w)
    if out is None:
        return (g2 @ w.T).view(A * A, co, ci)
    return torch.mm(g2, w.T, out=out[: A * A * co * ci].view(A * A, co * ci)).view(A * A, co, ci)


def kernel(k: torch.Tensor) -> torch.Tensor:
    """The transformed kernel ``U`` ``(36, Co, Ci)`` for ``k``: ``k`` itself where it is one, or
    for a kernel ``(Co, Ci, 3, 3)`` its transform made now into this thread's work space (the same
    numbers as :func:`transform_weight`'s, valid until the next call makes another)."""
    if k.dim() == 3:
        return k
    co, ci = k.shape[:2]
    return transform_weight(k, _WORK.get("u", A * A * co * ci, k, shrink=True))


class _Workspace(threading.local):
    """Flat float32 buffers that :func:`correlate` writes its intermediates into, per thread,
    grown to the largest call and kept until :func:`release_workspace`. Made fresh at every call
    (as they were), the intermediates of each layer fell between the evaluation's longer-lived
    tensors and fragmented the heap; made once, they do not."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, n: int, like: torch.Tensor, shrink: bool = False) -> torch.Tensor:
        """The buffer ``name`` of at least ``n`` values (made, or grown, as needed). ``shrink``:
        also made again, at ``n``, where it holds more than :data:`SHRINK` times ``n`` (the
        transformed kernels' buffer: the backward pass reaches the shallow layers, whose kernels
        are 16x smaller than conv5_1's, when the evaluation's memory peaks; 20 MiB less at the
        peak of a 512 px run)."""
        b = self.buffers.get(name)
        if b is None or b.numel() < n or b.device != like.device or (shrink and b.numel() > SHRINK * n):
            self.buffers.pop(name, None)  # free the old one before making the larger one
            b = self.buffers[name] = torch.empty(n, dtype=torch.float32, device=like.device)
        return b


_WORK = _Workspace()


def release_workspace() -> None:
    """Free this thread's :func:`correlate` buffers (a run's end)."""
    _WORK.buffers.clear()


def workspace_bytes() -> int:
    """What this thread's :func:`correlate` buffers hold now."""
    return sum(b.numel() * b.element_size() for b in _WORK.buffers.values())


def _padded_rows(
    xc: torch.Tensor, band: torch.Tensor, y0: int, rows: int, top: int, left: int, width: int
) -> torch.Tensor:
    """Rows ``y0 .. y0 + rows`` of ``xc`` ``(H, W, C)`` zero-padded (``top`` rows above, ``left``
    columns to the left, to ``width`` columns), written into the flat buffer ``band``."""
    h, w, c = xc.shape
    out = band[: rows * width * c].view(rows, width, c)
    a, b = max(y0, top), min(y0 + rows, top + h)  # the padded rows that hold image rows
    if a >= b:
        out.zero_()
        return out
    out[: a - y0].zero_()
    out[b - y0 :].zero_()
    out[a - y0 : b - y0, :left].zero_()
    out[a - y0 : b - y0, left + w :].zero_()
    out[a - y0 : b - y0, left : left + w].copy_(xc[a - top : b - top])
    return out


def correlate(x: torch.Tensor, u: torch.Tensor, transpose: bool = False, mirror: bool = False) -> torch.Tensor:
    """The 3x3, stride-1, zero-padding-1 correlation of float32 ``x`` ``(1, Ci, H, W)`` with the
    kernel whose transform is ``u`` (``(36, Co, Ci)``, or the kernel ``(Co, Ci, 3, 3)`` itself,
    transformed now: :func:`kernel`; ``transpose``: the kernel with its channels swapped, ``Co`` in
    and ``Ci`` out). Returns ``(1, Co, H, W)`` in channels-last memory format, no bias.

    ``mirror``: the same with ``x`` and the result flipped in both spatial axes, that is
    ``flip(correlate(flip(x)))``, without making the flipped copies: a tile of the flipped, padded
    input is a tile of ``x`` padded on the other sides, reversed, and reversing a tile before the
    input transform (after the output transform) is reversing the transform matrix's columns (rows).
    """
    u = kernel(u)
    _, c, h, w = x.shape
    co = u.shape[2] if transpose else u.shape[1]
    th, tw = -(-h // M), -(-w // M)
    pw = M * tw + 2  # the padded input's width: 1 zero on one side, the rest on the other (and so its height)
    top, left = (M * th + 1 - h, M * tw + 1 - w) if mirror else (1, 1)
    xc = x[0].permute(1, 2, 0)  # (H, W, C), a view
    k = u if transpose else u.transpose(1, 2)  # (36, C in, C out), as bmm multiplies
    bt, at = (m.to(x.device) for m in _TRANSFORMS[mirror])
    # a tensor of its own (not a view), so that the in-place ReLU after it may write to it
    out = torch.empty((1, co, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    hwc = out[0].permute(1, 2, 0)
    oy, ox = (M * th - h, M * tw - w) if mirror else (0, 0)  # where the result starts in the tiles' grid
    # rows of tiles at a time, so that the intermediates (36 x tiles x channels) stay under
    # CHUNK_BYTES, in two buffers used in turn
    rows = max(1, min(th, CHUNK_BYTES // (A * A * tw * max(c, co) * 4)))
    n = A * A * rows * tw * max(c, co)
    a, b = _WORK.get("a", n, x), _WORK.get("b", n, x)
    band = _WORK.get("pad", (M * rows + 2) * pw * c, x)
    for r0 in range(0, th, rows):
        r1 = min(th, r0 + rows)
        t = (r1 - r0) * tw
        tiles = _padded_rows(xc, band, r0 * M, M * (r1 - r0) + 2, top, left, pw).unfold(0, A, M).unfold(1, A, M)
        v = a[: A * A * t * c].view(A, A, r1 - r0, tw, c)
        v.copy_(tiles.permute(3, 4, 0, 1, 2))  # the tiles (r1 - r0, tw, C, 6, 6), gathered
        v = _both_axes(bt, v.view(A, A, t * c), t * c, b, a).view(A * A, t, c)
        p = torch.bmm(v, k, out=b[: A * A * t * co].view(A * A, t, co))  # (36, T, Co): the products
        v = _both_axes(at, p.view(A, A, t * co), t * co, a, b).view(M, M, r1 - r0, tw, co)
        grid = a[: M * M * t * co].view(r1 - r0, M, tw, M, co)
        grid.copy_(v.permute(2, 0, 3, 1, 4))  # the output tiles in place in their rows
        v = grid.view(M * (r1 - r0), M * tw, co)
        g0, g1 = max(r0 * M, oy), min(r1 * M, oy + h)  # rows of the grid that are in the result
        hwc[g0 - oy : g1 - oy].copy_(v[g0 - r0 * M : g1 - r0 * M, ox : ox + w])
    return out


def conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The padding-1 3x3 convolution whose transformed kernel is ``u`` (or the kernel, transformed
    at the call: :func:`kernel`): :func:`correlate` plus the bias."""
    y = correlate(x, u)
    if bias is not None:
        y += bias.view(1, -1, 1, 1)
    return y


def conv3x3_input_grad(gy: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The input gradient of :func:`conv3x3` for the output gradient ``gy``, through the same ``u``
    (module docstring)."""
    return correlate(gy, u, transpose=True, mirror=True)


class WinogradConv3x3Fn(torch.autograd.Function):
    """Forward :func:`conv3x3`; backward the input gradient only (frozen weights),
    :func:`conv3x3_input_grad`. Keeps ``u`` (the module's kept transform, or its weight, transformed
    again in backward; not a copy) for backward, not the input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(u)
        return conv3x3(x, u, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (u,) = ctx.saved_tensors
        return conv3x3_input_grad(gy, u), None, None
