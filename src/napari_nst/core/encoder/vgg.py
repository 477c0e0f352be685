"""The VGG feature extractor: torchvision's VGG16/VGG19 convolutions, named layers, weights.

Layer names (``conv1_1``, ``relu4_2``, ``pool3`` ...) are derived from torchvision's
``features`` indices, as pystiche does. The network is cut after the last layer in use,
frozen, in eval mode, and takes RGB in [0, 1]: the ImageNet normalisation is inside.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from napari_nst.core.encoder import winograd
from napari_nst.core.encoder.layer_names import _CFGS, check_layers, layer_names
from napari_nst.core.errors import WeightsError
from napari_nst.core.inputs import check_weights_path

MODELS = ("vgg16", "vgg19")
POOLINGS = ("max", "avg")
WEIGHTS_ENV = "NAPARI_NST_WEIGHTS"

logger = logging.getLogger("napari_nst")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _MaxPool2x2Fn(torch.autograd.Function):
    """2x2, stride-2 max pooling whose backward keeps no indices.

    ``nn.MaxPool2d`` keeps an int64 index per output value for backward: 8 bytes per output, as
    many bytes as its whole bfloat16 input (pool1 at 512x384: 24 MiB, all four pools 45 MiB).
    This keeps the input and the output instead, which the network keeps anyway (the input is
    the in-place ReLU's output, the output the next convolution's input), and finds each
    window's maximum again in backward: the first of the window's four values (row by row) that
    equals it, which is the one torch's CPU kernels pick on ties (tested), and its CUDA kernels
    too (they scan in the same order and keep the first strict maximum). So the gradient is
    torch's, exactly: each output's gradient goes to one input, the others get 0. (On a device
    whose kernel breaks ties otherwise, e.g. MPS, the gradient of a tie may go to another of the
    tied inputs: an equally valid subgradient. A NaN input differs too: torch routes the NaN
    output's gradient to it, this routes it nowhere; the loss is NaN then anyway.)
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(x, 2, 2)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> torch.Tensor:
        x, y = ctx.saved_tensors
        gx = torch.zeros_like(x)  # keeps x's memory format; rows/columns pooling drops stay 0
        ho, wo = y.shape[-2:]
        zero = gy.new_zeros(())
        taken: torch.Tensor | None = None
        for di in (0, 1):
            for dj in (0, 1):
                hit = x[..., di : 2 * ho : 2, dj : 2 * wo : 2] == y
                if taken is None:
                    taken = hit
                else:
                    hit &= ~taken
                    taken |= hit
                torch.where(hit, gy, zero, out=gx[..., di : 2 * ho : 2, dj : 2 * wo : 2])  # in place: no temporary
        return gx


class _ReluMaxPool2x2Fn(torch.autograd.Function):
    """``max_pool2d(relu(x), 2, 2)`` through torch's kernels, keeping only the pooled output and
    torch's indices for backward, for a ReLU whose output nothing else needs.

    Autograd's in-place ReLU keeps its whole output for its backward, and ``max_pool2d`` keeps it
    too (as its input): 4 bytes per value in float32, 48 MiB at relu1_2 of a 512x384 px run,
    92 MiB over VGG's four pools. Here the window's maximum is taken before the ReLU, which
    commutes with it (both are monotone), and the ReLU runs on the 4x smaller pooled output; in
    backward the ReLU's gradient is applied to the pooled gradient before it is scattered to the
    windows' maxima: a maximum passed the ReLU exactly when its pooled value is positive. So
    there is no full-size ReLU pass either way. Output and gradient are torch's exactly (tested):
    where a window's maximum is positive its first occurrence is the same in ``x`` and in
    ``relu(x)``; where it is not, the gradient is 0 whichever position torch routes it to.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor
        y, idx = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
        y.relu_()
        ctx.save_for_backward(y, idx)
        ctx.x_meta = (x.shape, x.stride())
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> torch.Tensor:
        y, idx = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(gy, y, 0)  # the ReLU's gradient: gy where y > 0, else 0
        shape, stride = ctx.x_meta
        gx = torch.empty_strided(shape, stride, dtype=gy.dtype, device=gy.device)
        # torch's pooling backward takes the input only for its shape and memory format (the
        # input itself is not kept): gx serves as both, and the kernel zeroes it before scattering
        torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
            g, gx, [2, 2], [2, 2], [0, 0], [1, 1], False, idx, grad_input=gx
        )
        return gx


#: the most bytes of the second convolution's output (and of its gradient) that
#: :class:`_ConvPairPoolFn` makes at once: a band of rows
BAND_BYTES = 8 * 2**20


def _sole_owner(t: torch.Tensor) -> bool:
    """Whether a gradient autograd hands over is held by no other tensor and may be written over: a
    tensor of its own, or a view of the whole of one that only the view holds (a loss's gradient
    often comes reshaped). A gradient can be shared (``a + b`` hands the same tensor to both
    sides), expanded (stride 0) or part of another tensor; torch's use counts tell. They count
    C++ references only: Python ones (a hook that kept the gradient) are the caller's to check
    (:func:`_free_gradient_refs`)."""
    if t.requires_grad or 0 in t.stride():
        return False
    use = getattr(t, "_use_count", None)
    count = getattr(torch._C, "_storage_Use_Count", None)
    if use is None or count is None or use() != 1:
        return False
    holders = int(count(t.untyped_storage()._cdata)) - 1  # less the temporary storage object
    base = t._base
    if base is None:
        return holders == 1  # no other tensor (a detached alias, a view) on its memory
    # the view holds its base (1), and so does the temporary ``t._base`` (1); the memory is held
    # by the two of them only
    base_uses: int = base._use_count()  # type: ignore[attr-defined]
    return base._base is None and base.numel() == t.numel() and base_uses == 2 and holders == 2


class _RefsProbe(torch.autograd.Function):
    """Measures how many Python references a backward's gradient argument has when nothing else
    holds it (this interpreter's and torch's own: the argument tuples, the frame): a gradient
    with more is held by someone else too, e.g. a tensor hook that kept it (torch's use count
    sees C++ references only)."""

    refs = 0

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.clone(), x.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, ga: torch.Tensor, gb: torch.Tensor) -> torch.Tensor:
        _RefsProbe.refs = sys.getrefcount(ga)  # the same call as _ConvPairPoolFn.backward's
        return ga + gb


@lru_cache(maxsize=1)
def _free_gradient_refs() -> int:
    with torch.enable_grad(), torch.autocast("cpu", enabled=False):
        x = torch.zeros(2, requires_grad=True)
        a, b = _RefsProbe.apply(x)
        (a * 2 + b).sum().backward()
    return _RefsProbe.refs


def _row_bands(h: int, w: int, c: int, itemsize: int) -> list[tuple[int, int]]:
    """Bands of an even number of rows, ``BAND_BYTES`` of ``(c, rows, w)`` at most (``c``: all the
    batch's channels), over the rows a 2x2 pool reads (an odd last row is dropped by it)."""
    h2 = h // 2 * 2
    rows = max(2, BAND_BYTES // max(1, w * c * itemsize) // 2 * 2)
    return [(r0, min(h2, r0 + rows)) for r0 in range(0, h2, rows)]


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, u: torch.Tensor | None) -> torch.Tensor:
    """A 3x3, padding-1 convolution: torch's, or where ``u`` (``w``'s Winograd transform) is
    given, :func:`winograd.conv3x3`."""
    return F.conv2d(x, w, b, padding=1) if u is None else winograd.conv3x3(x, u, b)


def _conv_input_grad(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """The input gradient of a 3x3, padding-1 convolution of ``x`` with ``w`` (torch's kernel; where
    ``u``, ``w``'s Winograd transform, is given: :func:`winograd.conv3x3_input_grad`). Only
    ``x``'s shape, dtype and layout matter (the input gradient does not depend on its values): in
    another dtype it is not converted, only stood in for."""
    if u is not None:
        return winograd.conv3x3_input_grad(g, u)
    w = w.to(g.dtype)
    x = x if x.dtype == g.dtype else torch.empty_like(x, dtype=g.dtype)
    out: torch.Tensor = torch.ops.aten.convolution_backward(
        g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, False, False]
    )[0]
    return out


class _ConvPairPoolFn(torch.autograd.Function):
    """A VGG block's ``conv_a, ReLU, conv_b, ReLU, 2x2 max pool`` as one function, returning
    ``relu_a``'s output (a loss may want it: relu1_1, relu2_1) and the pooled output.

    Run layer by layer, at relu1_x of a 512x384 px float32 run, the block makes three full-size
    maps that live only briefly: ``conv_b``'s output in forward, and in backward the pool's
    gradient and ``conv_b``'s input gradient, while ``relu_a``'s output and the loss's gradient
    for it are alive (48 MiB each). Here ``conv_b`` runs on bands of rows (:data:`BAND_BYTES`,
    one row of overlap on each side), each band pooled at once as :class:`_ReluMaxPool2x2Fn`
    does (the maximum, then the ReLU); backward sends the pooled gradient back through the pool
    and ``conv_b`` band by band and adds it to the gradient the losses handed over for
    ``relu_a``'s output, written over in place when nothing else holds it, then applies
    ``relu_a``'s mask in place. So beside ``relu_a``'s output and its gradient, only bands exist.

    Torch's kernels throughout (oneDNN's convolution, its pooling and threshold kernels), or for a
    convolution given its Winograd-transformed kernel (``ua``, ``ub``: the plan runs that layer
    through :func:`winograd.correlate`) that, forward and for the input gradient, on the same bands;
    the numbers differ from the layer-by-layer ones only by the float rounding of convolving a band
    instead of the whole map (tested). Under autocast the convolutions run in its dtype, as they
    would layer by layer.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        wa: torch.Tensor,
        ba: torch.Tensor | None,
        wb: torch.Tensor,
        bb: torch.Tensor | None,
        ua: torch.Tensor | None = None,
        ub: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _free_gradient_refs()  # measured once, here rather than in a backward
        fa = _conv(x, wa, ba, ua).relu_()
        n, _, h, w = fa.shape
        c = wb.shape[0]
        layout = torch.channels_last if _is_channels_last(fa) else torch.contiguous_format
        y = torch.empty((n, c, h // 2, w // 2), dtype=fa.dtype, device=fa.device, memory_format=layout)
        bands = _row_bands(h, w, n * c, fa.element_size())
        # the windows' positions within their band, kept as int32 (half of torch's int64: 12 MiB at
        # pool1 of a 512x384 px run); converted as they are copied in, and back for torch's kernel
        kind = torch.int32 if (bands[0][1] - bands[0][0] + 2) * w < 2**31 else torch.int64
        idx = torch.empty((n, c, h // 2, w // 2), dtype=kind, device=fa.device, memory_format=layout)
        kb = winograd.kernel(ub) if ub is not None else None  # a kernel made per call: once for all bands
        for r0, r1 in bands:
            lo, hi = max(r0 - 1, 0), min(r1 + 1, h)  # the rows the band's outputs read
            ob = _conv(fa[:, :, lo:hi], wb, bb, kb)[:, :, r0 - lo : r1 - lo]
            yb, ib = torch.ops.aten.max_pool2d_with_indices(ob, [2, 2], [2, 2])
            y[:, :, r0 // 2 : r1 // 2].copy_(yb.relu_())
            idx[:, :, r0 // 2 : r1 // 2].copy_(ib)
        ctx.save_for_backward(x, fa, y, idx, wa, wb, ua, ub)
        ctx.bands, ctx.layout = bands, layout
        return fa, y

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, gfa: torch.Tensor | None, gy: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, None, None, None, None, None, None]:
        x, fa, y, idx, wa, wb, ua, ub = ctx.saved_tensors
        n, _, h, w = fa.shape
        if gfa is None:
            g = torch.zeros_like(fa)
        elif (
            sys.getrefcount(gfa) <= _free_gradient_refs()
            and _sole_owner(gfa)
            and gfa.dtype == fa.dtype
            and gfa.stride()[1:] == fa.stride()[1:]
        ):
            g = gfa  # the losses' gradient, added to in place
        else:
            g = torch.empty_like(fa).copy_(gfa)
        if gy is not None:
            kb = winograd.kernel(ub) if ub is not None else None
            for r0, r1 in ctx.bands:
                lo, hi = max(r0 - 1, 0), min(r1 + 1, h)
                rows = slice(r0 // 2, r1 // 2)
                gp = torch.ops.aten.threshold_backward(gy[:, :, rows], y[:, :, rows], 0)  # the ReLU after the pool
                # the gradient of the band's convolution outputs: zero on the overlap rows, whose
                # outputs the forward dropped
                go = torch.empty(
                    (n, wb.shape[0], hi - lo, w), dtype=fa.dtype, device=fa.device, memory_format=ctx.layout
                )
                go[:, :, : r0 - lo].zero_()
                go[:, :, r1 - lo :].zero_()
                inner = go[:, :, r0 - lo : r1 - lo]
                # the pool's kernel takes its input only for the shape and layout, and zeroes its
                # output before scattering: ``inner`` serves as both (as in _ReluMaxPool2x2Fn)
                torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
                    gp, inner, [2, 2], [2, 2], [0, 0], [1, 1], False, idx[:, :, rows].long(), grad_input=inner
                )
                g[:, :, lo:hi] += _conv_input_grad(go, fa[:, :, lo:hi], wb, kb)
        torch.ops.aten.threshold_backward.grad_input(g, fa, 0, grad_input=g)  # relu_a's mask, in place
        gx = _conv_input_grad(g, x, wa, ua).to(x.dtype) if ctx.needs_input_grad[0] else None
        return gx, None, None, None, None, None, None


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2, 2)`` with the same output and gradient, without int64 indices kept for
    backward (see :class:`_MaxPool2x2Fn`) while ``lean`` is True; torch's ``max_pool2d`` (with
    indices) when it is False. Which one pays depends on the device and dtype: the engine sets it
    per run (``VGGFeatures.set_lean_pool``; the choice and its measurements are in device.py)."""

    def __init__(self, lean: bool = True) -> None:
        super().__init__(2, 2)
        self.lean = lean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lean and torch.is_grad_enabled() and x.requires_grad:
            y: torch.Tensor = _MaxPool2x2Fn.apply(x)
            return y
        return F.max_pool2d(x, 2, 2)

    def fuses_relu(self, x: torch.Tensor) -> bool:
        """Whether the ReLU before this pool (when nothing else wants its output) runs with it,
        :class:`_ReluMaxPool2x2Fn`: torch's pooling (not ``lean``) with a gradient, on the CPU,
        where that is measured to keep less and run no slower (the CUDA and MPS kernels' handling
        of the shared input and output buffer is not tested here)."""
        return not self.lean and torch.is_grad_enabled() and x.requires_grad and x.device.type == "cpu"

    def relu_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``self(relu(x))`` for a ``x`` that :meth:`fuses_relu`."""
        y: torch.Tensor = _ReluMaxPool2x2Fn.apply(x)
        return y


_FusingPool = MaxPool2x2  # the class itself, whatever a test puts in the module's name


class _WinogradConv3x3Fn(torch.autograd.Function):
    """A 3x3, stride-1, padding-1 convolution through NNPACK's Winograd transform (float32, CPU),
    forward and backward, for frozen weights (no weight gradient).

    Winograd F(6x6, 3x3) multiplies about 5x fewer numbers than the direct convolution oneDNN
    runs; measured 2.0-2.9x faster per layer at VGG16's shapes (192x256 px, one thread, AVX2 and
    AVX-512; docs/benchmarks.md), with a relative error of ~1e-5 against it (float32
    rounding of the transforms; the objective's formulas are unchanged). The input gradient of a
    3x3 padding-1 convolution is the same convolution of the output gradient with the kernel
    flipped and its channels swapped, so backward runs through NNPACK too. Only the weight is
    kept for backward (autograd's convolution keeps the input as well, for a weight gradient that
    a frozen network never needs).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        out: torch.Tensor = torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, [1, 1])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (w,) = ctx.saved_tensors
        flipped = w.flip(2, 3).transpose(0, 1).contiguous()  # (in, out, 3, 3): 2.4M values at most
        return torch._nnpack_spatial_convolution(gy.contiguous(), flipped, None, [1, 1]), None, None


def nnpack_available() -> bool:
    """Whether torch has NNPACK here; the call also initialises it (its convolutions fail before)."""
    try:
        return bool(torch._nnpack_available())
    except Exception:
        return False


class Conv3x3(nn.Conv2d):
    """VGG's ``nn.Conv2d(c_in, c_out, 3, padding=1)``. Two other convolution algorithms serve the
    calls they can (float32 on the CPU, frozen weights, no autocast); otherwise torch's convolution:

    * ``winograd`` (contiguous input): NNPACK's Winograd F(6x6, 3x3), :class:`_WinogradConv3x3Fn`;
    * ``winograd_wide`` (layers of at least :data:`winograd.WIDE_MIN` input channels, one image at a
      time): napari-nst's own Winograd F(4x4, 3x3) (:mod:`napari_nst.core.encoder.winograd`), which keeps the
      transformed kernel on the module while it is on and ``keep_kernel`` is True, else makes it at
      every call (into the work space: less memory, a few milliseconds per call).

    The engine sets them per run (``VGGFeatures.set_winograd``, ``set_winograd_wide``; the choice
    is the compute plan's, measured by ``core.compute.tune``) and ``keep_kernel`` per level
    (``VGGFeatures.keep_kernels``: the memory plan's)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, 3, padding=1)
        self.winograd = False
        self.winograd_wide = False
        #: the fewest input channels with which ``winograd_wide`` applies to this layer
        self.winograd_min = winograd.WIDE_MIN
        #: with ``winograd_wide``: keep the transformed kernel (True) or make it at every call
        self.keep_kernel = True
        self._u: torch.Tensor | None = None  # winograd.transform_weight(self.weight)
        self._u_of: tuple[int, int, torch.device] | None = None  # the weight it was made from

    def _serves(self, x: torch.Tensor) -> bool:
        return (
            self.padding_mode == "zeros"  # both transforms pad with zeros
            and x.device.type == "cpu"
            and x.dtype == self.weight.dtype == torch.float32
            and not self.weight.requires_grad
            and not torch.is_autocast_enabled("cpu")
        )

    def transformed_weight(self) -> torch.Tensor:
        """The kernel's Winograd transform, made once per weight (a new or changed weight, or one
        moved to another device, makes it again)."""
        key = (self.weight.data_ptr(), self.weight._version, self.weight.device)
        if self._u is None or self._u_of != key:
            self._u, self._u_of = winograd.transform_weight(self.weight), key
        return self._u

    def release(self, workspace: bool = True) -> None:
        """Drop the transformed kernel and (``workspace``) the transform's work space, which every
        layer shares (the plan no longer uses them)."""
        self._u = self._u_of = None
        if workspace:
            winograd.release_workspace()

    @property
    def wide(self) -> bool:
        """Whether the plan runs this layer through the Winograd F(4x4, 3x3) (where a call can)."""
        return self.winograd_wide and self.in_channels >= self.winograd_min

    def _wide(self, x: torch.Tensor) -> bool:
        return self.wide and x.shape[0] == 1 and self._serves(x)

    def _nnpack(self, x: torch.Tensor) -> bool:
        return self.winograd and x.is_contiguous() and self._serves(x)

    def runs_torch(self, x: torch.Tensor) -> bool:
        """Whether a call with ``x`` runs torch's own convolution (neither Winograd path)."""
        return self.padding_mode == "zeros" and not self._wide(x) and not self._nnpack(x)

    def runs_in_block(self, x: torch.Tensor) -> bool:
        """Whether a call with ``x`` runs a convolution :class:`_ConvPairPoolFn` can run on bands:
        torch's or the Winograd F(4x4, 3x3) (not NNPACK's)."""
        return self.padding_mode == "zeros" and (self._wide(x) or not self._nnpack(x))

    def kernel_for(self, x: torch.Tensor) -> torch.Tensor | None:
        """Where a call with ``x`` runs the Winograd F(4x4, 3x3), what :mod:`winograd`'s functions
        take for the kernel: the kept transform (``keep_kernel``), else the weight, transformed at
        each call (:func:`winograd.kernel`); else None."""
        if not self._wide(x):
            return None
        return self.transformed_weight() if self.keep_kernel else self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_for(x)
        if k is not None:
            out: torch.Tensor = winograd.WinogradConv3x3Fn.apply(x, k, self.bias)
            return out
        if self._nnpack(x):
            y: torch.Tensor = _WinogradConv3x3Fn.apply(x, self.weight, self.bias)
            return y
        return super().forward(x)


class Features(dict[str, torch.Tensor]):
    """What :meth:`VGGFeatures.forward` returns: ``{name: activation}``, and in ``tapped``, for
    each layer given a tap, ``(activation, tap(activation))``."""

    def __init__(self) -> None:
        super().__init__()
        self.tapped: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


class VGGFeatures(nn.Module):
    """VGG ``features`` up to the last requested layer; returns ``{name: activation}``.

    Input: ``(B, 3, H, W)`` RGB in [0, 1]. Frozen (``requires_grad=False``), eval mode.
    """

    def __init__(self, model: str, layers: list[str], pooling: str = "max") -> None:
        super().__init__()
        self.model: str = model  #: the network built (vgg16 or vgg19)
        names = layer_names(model)
        self.wanted = {names.index(n): n for n in layers}
        last = max(self.wanted)
        mods: list[nn.Module] = []
        in_ch = 3
        for v in _CFGS[model]:
            if v == "M":
                # Departure from torchvision (an option, pooling="avg"): Gatys et al. use average
                # pooling for nicer gradients; "max" keeps torchvision's network as trained.
                mods.append(MaxPool2x2() if pooling == "max" else nn.AvgPool2d(2, 2))
            else:
                mods += [Conv3x3(in_ch, v), nn.ReLU(inplace=True)]
                in_ch = v
        for idx, name in self.wanted.items():
            # a conv output we keep must not be overwritten by the in-place ReLU after it
            if name.startswith("conv") and idx + 1 < len(mods):
                mods[idx + 1] = nn.ReLU(inplace=False)
        self.layers = nn.Sequential(*mods[: last + 1])
        #: ReLUs before a max pool whose output is not wanted: they may run with the pool
        #: (MaxPool2x2.fuses_relu), so that their full-size output is not kept for backward
        self.fusible = {
            i
            for i, m in enumerate(self.layers)
            if isinstance(m, nn.ReLU)
            and i + 1 < len(self.layers)
            and isinstance(self.layers[i + 1], nn.MaxPool2d)  # MaxPool2x2 (forward checks it still is)
            and i not in self.wanted
        }
        #: blocks ``conv, ReLU, conv, ReLU, max pool`` (first index) that may run as one function,
        #: :class:`_ConvPairPoolFn`: neither convolution's output wanted, the second ReLU fusible
        self.blocks = {
            i
            for i in range(len(self.layers) - 4)
            if isinstance(self.layers[i], Conv3x3)
            and isinstance(self.layers[i + 2], Conv3x3)
            and i + 3 in self.fusible
            and not {i, i + 2} & set(self.wanted)
            and isinstance(self.layers[i + 1], nn.ReLU)
            and self.layers[i + 1].inplace
        }
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def set_lean_pool(self, lean: bool) -> None:
        """Max pooling without int64 indices (True) or torch's ``max_pool2d`` (False)."""
        for m in self.layers:
            if isinstance(m, MaxPool2x2):
                m.lean = bool(lean)

    def set_winograd(self, on: bool) -> bool:
        """Convolutions through NNPACK's Winograd transform where they can (see :class:`Conv3x3`);
        returns whether they will (False where this torch has no NNPACK)."""
        on = bool(on) and nnpack_available()
        for m in self.layers:
            if isinstance(m, Conv3x3):
                m.winograd = on
        return on

    def set_winograd_wide(self, on: bool, release: bool = True, min_channels: int = winograd.WIDE_MIN) -> bool:
        """The convolutions of layers with at least ``min_channels`` input channels through
        napari-nst's Winograd F(4x4, 3x3) (see :class:`Conv3x3`); a layer that no longer uses it
        releases its transformed kernel unless ``release`` is False (the tuner, switching plans
        between passes, keeps them). Returns ``on``."""
        for m in self.layers:
            if isinstance(m, Conv3x3):
                m.winograd_wide, m.winograd_min = bool(on), int(min_channels)
                if release and not m.wide:
                    m.release(workspace=not on)  # on: the other layers still use the work space
        return bool(on)

    def keep_kernels(self, keep: bool) -> None:
        """Whether the layers that run napari-nst's Winograd F(4x4, 3x3) keep their transformed
        kernels (True) or make them at every call (False: their memory, 151 MB for VGG16, is not
        held; the memory plan's choice per level, ``core.compute.memory.keeps_kernels``)."""
        for m in self.layers:
            if isinstance(m, Conv3x3):
                m.keep_kernel = bool(keep)
                if not keep:
                    m.release(workspace=False)  # the buffer it makes them in is the work space's

    def release_transforms(self) -> None:
        """Drop the Winograd-transformed kernels (made again at the next call that needs them): a
        run's end, so that a warm engine does not hold them while idle."""
        for m in self.layers:
            if isinstance(m, Conv3x3):
                m.release()

    def forward(
        self, x: torch.Tensor, taps: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None
    ) -> Features:
        """``{name: activation}`` of ``x``. ``taps``: functions of a wanted layer's activation, run
        (with gradients on) as soon as the activation exists, their results in ``out.tapped``. A
        loss computed there is earlier in autograd's graph than the deeper layers, so backward
        makes its gradient when the layers above have made theirs, not at its start: the Gram
        matrices' gradients (relu1_1's alone is 48 MiB at 512x384 px in float32) are then not
        all alive through the whole backward pass."""
        out = Features()

        def keep(i: int, t: torch.Tensor) -> None:
            if i in self.wanted:
                name = self.wanted[i]
                out[name] = t
                tap = taps.get(name) if taps else None
                if tap is not None and torch.is_grad_enabled() and t.requires_grad:
                    out.tapped[name] = (t, tap(t))

        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        x = (x - mean.to(x.dtype)) / std.to(x.dtype)
        idx, layers = 0, self.layers
        while idx < len(layers):
            if idx in self.blocks and idx + 3 in self.fusible and self._runs_block(idx, x):
                ca, cb = cast(Conv3x3, layers[idx]), cast(Conv3x3, layers[idx + 2])  # _runs_block checked
                fa, x = _ConvPairPoolFn.apply(
                    x, ca.weight, ca.bias, cb.weight, cb.bias, ca.kernel_for(x), cb.kernel_for(x)
                )
                keep(idx + 1, fa)
                idx += 4
                keep(idx, x)
                idx += 1
                continue
            pool = layers[idx + 1] if idx in self.fusible else None
            if isinstance(pool, _FusingPool) and pool.fuses_relu(x):
                x, idx = pool.relu_forward(x), idx + 1  # the ReLU and the pool at once
            else:
                x = layers[idx](x)
            keep(idx, x)
            idx += 1
        return out

    def _runs_block(self, i: int, x: torch.Tensor) -> bool:
        """Whether the block at ``i`` (in :attr:`blocks`) runs as one function for ``x``: its pool
        fuses the ReLU before it (torch's pooling, with a gradient, on the CPU) and both
        convolutions would run torch's kernel or the Winograd F(4x4, 3x3) (the second reads
        ``relu_a``'s output, which has ``x``'s batch, device, dtype and layout: what the choice
        looks at)."""
        pool, ca, cb = self.layers[i + 4], self.layers[i], self.layers[i + 2]
        return (
            isinstance(pool, _FusingPool)
            and pool.fuses_relu(x)
            and isinstance(ca, Conv3x3)  # as blocks found them (and for the type checker)
            and isinstance(cb, Conv3x3)
            and ca.runs_in_block(x)
            and cb.runs_in_block(x)
        )


# --------------------------------------------------------------------------- weights


def _features_only(state: Any, source: str) -> dict[str, torch.Tensor]:
    """``features.N.weight``-style keys from a full or features-only state dict."""
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{source} does not hold a VGG state dict (got {type(state).__name__})")
    out = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            continue
        if key.startswith("features."):
            out[key[len("features.") :]] = value
        elif key.split(".", 1)[0].isdigit():
            out[key] = value
    if not out:
        some = ", ".join(list(map(str, state))[:4])
        raise WeightsError(
            f"{source} has no VGG convolution weights (keys like 'features.0.weight'); its keys start with: {some}"
        )
    return out


def _conv_shapes(model: str) -> dict[int, tuple[int, int, int, int]]:
    """``{features index: weight shape}`` of the convolutions of torchvision's ``model``."""
    out, idx, in_ch = {}, 0, 3
    for v in _CFGS[model]:
        if v == "M":
            idx += 1
        else:
            out[idx] = (v, in_ch, 3, 3)
            idx, in_ch = idx + 2, v  # the conv, then its ReLU
    return out


def detect_model(state_dict: Any) -> str | None:
    """Which VGG a state dict holds, from its keys and shapes: ``"vgg16"``, ``"vgg19"`` or None.

    Takes a full torchvision state dict, one with ``features.*`` keys only, or the ``N.weight``
    keys :func:`load_weights_file` returns. A network is detected when every convolution weight
    in the dict sits at one of that network's ``features`` indices with that layer's shape; None
    when neither fits, or both do (a file cut before the first layer where they differ, index 16).
    """
    if not isinstance(state_dict, dict):
        return None
    convs: dict[int, tuple[int, ...]] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor) or value.ndim != 4:
            continue
        parts = key[len("features.") :].split(".") if key.startswith("features.") else key.split(".")
        if len(parts) == 2 and parts[0].isdigit() and parts[1] == "weight":
            convs[int(parts[0])] = tuple(value.shape)
    if not convs:
        return None
    fits = [m for m in MODELS if all(_conv_shapes(m).get(i) == shape for i, shape in convs.items())]
    return fits[0] if len(fits) == 1 else None


def _fit(net: VGGFeatures, features: dict[str, torch.Tensor], model: str, source: str) -> None:
    own = net.layers.state_dict()
    guess = detect_model(features)
    hint = f"; it looks like {guess} weights: pass model={guess!r}" if guess and guess != model else ""
    for key, param in own.items():
        if key not in features:
            raise WeightsError(f"{source} does not fit {model}: it lacks features.{key}{hint}")
        if tuple(features[key].shape) != tuple(param.shape):
            raise WeightsError(
                f"{source} does not fit {model}: features.{key} has shape "
                f"{tuple(features[key].shape)}, expected {tuple(param.shape)}{hint}"
            )
    if isinstance(features, _Weights):
        features.check_finite(own, source)
    # The parameters *are* the cached tensors (assign=True), not copies of them: every network
    # built from one weights file shares one copy of the weights (38 MiB for vgg16 to relu5_1)
    # with the cache and with each other. They are frozen and nothing here changes them in place.
    # A tensor in another dtype or layout is converted (a copy) as load_state_dict would.
    net.layers.load_state_dict({k: _as_param(features[k], own[k]) for k in own}, strict=True, assign=True)


def _as_param(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if t.dtype == like.dtype and t.device == like.device and t.is_contiguous():
        return t
    return t.to(device=like.device, dtype=like.dtype).contiguous()


def load_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file safely (``weights_only=True``); return its ``features.*`` tensors."""
    check_weights_path(path)  # missing, a folder: what the API says before a run
    p = Path(path).expanduser()
    if p.stat().st_size == 0:
        raise WeightsError(f"the weights file {str(p)!r} is empty")
    try:
        with open(p, "rb") as fh:
            head = fh.read(2)
    except OSError as exc:  # permissions, a FIFO, ...
        raise WeightsError(f"cannot open the weights file {str(p)!r}: {exc.strerror or exc}") from None
    try:
        state = _torch_load(p, head)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        msg = str(exc)
        if head != b"PK" and not head.startswith(b"\x80"):  # neither torch.save's zip nor a pickle
            raise WeightsError(
                f"{str(p)!r} is not a PyTorch weights file (expected a .pth state dict written by "
                "torch.save); check the path"
            ) from None
        if "weights_only" in msg or "Unsupported global" in msg or "UnpicklingError" in type(exc).__name__:
            found = re.search(r"GLOBAL ([\w.]+)", msg)
            what = f" ({found.group(1)})" if found else ""
            raise WeightsError(
                f"refused to load {str(p)!r}: it holds Python objects{what}, not only tensors "
                "(napari-nst loads plain state dicts with weights_only=True, so code in a pickle never runs). "
                "If you trust its source, re-save only its tensors: torch.save(model.state_dict(), path)"
            ) from None
        raise WeightsError(
            f"cannot read {str(p)!r} as a PyTorch weights file (truncated or corrupt?): "
            f"{type(exc).__name__}: {_first_sentence(msg)}"
        ) from None
    return _features_only(state, f"the weights file {str(p)!r}")


def _torch_load(p: Path, head: bytes) -> Any:
    """``torch.load`` of a weights file, memory-mapped where it is torch.save's zip format: only
    the pages of the layers a network uses are read, and they are the file's pages (shared by
    every process that maps it; VGG16's conv5_2 and conv5_3, 18 MiB, are never read for relu5_1).
    The file must not be rewritten in place while a network uses it (as with any mapped file);
    a new file at the same path is read again (:func:`_weights_key`)."""
    if head == b"PK":
        try:
            return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # e.g. a file system that cannot map it: read it whole (which reports its errors)
            pass
    return torch.load(p, map_location="cpu", weights_only=True)


def _first_sentence(msg: str) -> str:
    return re.split(r"(?<=[.!])\s", msg.strip(), maxsplit=1)[0] if msg.strip() else ""


def _torchvision_weights(model: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights through its own API and cache (downloads once)."""
    from napari_nst.core.deps import torchvision_models

    tvm = torchvision_models()  # InstallError naming the torchvision to install if it cannot be imported
    enum = {"vgg16": tvm.VGG16_Weights, "vgg19": tvm.VGG19_Weights}[model].IMAGENET1K_V1
    url = enum.url
    filename = url.rsplit("/", 1)[-1]
    cache = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        if cache.is_file():  # downloaded (and its hash checked) before: mapped, as a weights file is
            with contextlib.suppress(Exception):
                return _features_only(_torch_load(cache, b"PK"), f"torchvision's {model} weights")
        # what enum.get_state_dict() does, through torch.hub's public function and cache
        state = torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True)
    except Exception as exc:  # URLError, HTTPError, OSError, socket errors ...
        raise WeightsError(
            f"could not get torchvision's {model} ImageNet weights ({type(exc).__name__}: {exc}). "
            f"torchvision wanted the file {filename} from {url} and caches it at {cache}. "
            f"Offline? Copy that file there, or pass a local weights file: weights='path/to/{filename}' "
            f"(Python), --weights PATH (command line), the Weights field (napari widget), "
            f"or set the environment variable {WEIGHTS_ENV}=PATH. A VGG16 file works too, e.g. the shared "
            f"vgg16-hed-features.pth: with model left unset the network is read from the file "
            f"(else pass model='vgg16')"
        ) from None
    return _features_only(state, f"torchvision's {model} weights")


@lru_cache(maxsize=1)
def _cached_features(model: str, weights: str | None, stamp: tuple[int, int]) -> dict[str, torch.Tensor]:
    # ``stamp`` (mtime, size) makes a rewritten file a new cache entry
    return _Weights(load_weights_file(weights) if weights else _torchvision_weights(model))


class _Weights(dict[str, torch.Tensor]):
    """A weights file's ``features.*`` tensors as read, and which of them were checked finite."""

    checked: set[str]

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(tensors)
        self.checked = set()

    def check_finite(self, keys: Iterable[str], source: str) -> None:
        """Raise :class:`WeightsError` where one of ``keys``' tensors has NaN or infinite values:
        the layers a network uses, each checked once per file read, not at every build (0.4 s of
        a warm engine's run on a 2-core CPU), and the layers it does not use never (a mapped file
        then reads only the used ones)."""
        for key in keys:
            t = self.get(key)
            if key in self.checked or t is None:
                continue
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise WeightsError(f"{source} is corrupt: features.{key} has NaN or infinite values")
            self.checked.add(key)


def _weights_key(weights: str | os.PathLike[str] | None) -> tuple[str | None, tuple[int, int]]:
    """The resolved path of ``weights`` (or ``$NAPARI_NST_WEIGHTS``; None: torchvision's) and its
    (mtime, size) stamp for the cache."""
    if weights is None and os.environ.get(WEIGHTS_ENV):
        weights = os.environ[WEIGHTS_ENV]
    key = str(Path(weights).expanduser().resolve()) if weights else None
    stamp = (0, 0)
    if key and os.path.isfile(key):
        st = os.stat(key)
        stamp = (st.st_mtime_ns, st.st_size)
    return key, stamp


def resolve_model(model: str | None, weights: str | os.PathLike[str] | None = None) -> str:
    """The network :func:`build_vgg` builds: ``model`` if given; for None the one the weights file
    holds (:func:`detect_model`), else ``vgg19`` (the paper's; also torchvision's default here).

    Reads the weights file (through the same in-memory cache as :func:`build_vgg`).
    """
    if model is not None:
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of {MODELS}")
        return model
    key, stamp = _weights_key(weights)
    if key is None:
        return "vgg19"
    found = detect_model(_cached_features("", key, stamp))
    if found is not None:
        logger.info("model: %s, detected from the weights file %s", found, key)
    return found or "vgg19"


def build_vgg(
    model: str | None,
    layers: list[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    pooling: str = "max",
) -> VGGFeatures:
    """A frozen :class:`VGGFeatures` with ``weights`` loaded.

    On the CPU its parameters share memory with the weights cache and with every other network
    built from the same file: do not change them in place.

    ``model``: ``vgg16``, ``vgg19``, or None = the network the weights file holds, else ``vgg19``
    (:func:`resolve_model`); the network built is ``net.model``.
    ``weights``: None uses ``$NAPARI_NST_WEIGHTS`` if set, else torchvision's ImageNet weights
    (downloaded once into torch's cache); a path loads a full torchvision VGG state dict or one
    with only the ``features.*`` keys. The last file read is cached in memory.
    """
    if model is not None and model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {MODELS}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    if model is not None:
        check_layers(model, layers, "layer")  # before reading any file
    key, stamp = _weights_key(weights)
    model = resolve_model(model, key)
    check_layers(model, layers, "layer")
    features = _cached_features(model if key is None else "", key, stamp)
    return _network(
        model,
        tuple(layers),
        pooling,
        features,
        f"the weights file {key!r}" if key else f"torchvision's {model} weights",
    )


#: (model, layers, pooling) -> (the weights read, the network built from them); see _network
_NETS: dict[tuple[str, tuple[str, ...], str], tuple[dict[str, torch.Tensor], VGGFeatures]] = {}
_NETS_KEPT = 2
#: networks built and builds saved by the cache, in this process (benchmarks and batch tests read it)
NETWORK_STATS = {"builds": 0, "hits": 0}


def _network(
    model: str, layers: tuple[str, ...], pooling: str, features: dict[str, torch.Tensor], source: str
) -> VGGFeatures:
    """One network per (model, layers, pooling) and weights as read (the very same tensors): a
    warm engine process, a dask worker or a script calling ``stylize`` again builds it once (about
    0.5 s on a 2-core CPU). Runs only set its pooling variant and move it to their device."""
    key = (model, layers, pooling)
    kept = _NETS.get(key)
    if kept is not None and kept[0] is features:
        NETWORK_STATS["hits"] += 1
        return kept[1]
    NETWORK_STATS["builds"] += 1
    net = VGGFeatures(model, list(layers), pooling)
    _fit(net, features, model, source)
    while len(_NETS) >= _NETS_KEPT:
        _NETS.pop(next(iter(_NETS)))
    _NETS[key] = (features, net)
    return net
