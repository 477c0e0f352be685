"""The memory model: what a run needs, whether it fits, and the tile size that makes it fit (no torch here).

The widget calls :func:`plan` before a run (it never imports torch); the engine calls it again
with the device's free memory (``engine.check_memory``). Numbers are a linear model of measured
peak resident memory (docs/benchmarks.md, docs/tiles.md); precision is a string,
``"float32"`` or ``"bfloat16"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from napari_nst.core.encoder.layer_names import _CFGS, NARROW_MIN, min_side
from napari_nst.core.errors import OptionError
from napari_nst.core.image.arrays import resized_shape
from napari_nst.core.optim import levers

#: L-BFGS memory (pairs of image-sized vectors kept; see docs/benchmarks.md)
LBFGS_HISTORY = 20
#: L-BFGS memory when the run is tiled: the pairs are image-sized whatever the tile, and at 4096 px
#: twenty pairs alone are ~8 GB (docs/tiles.md measures what the shorter history costs)
TILED_HISTORY = 5

#: Bytes per input pixel the network's forward + backward keeps at its peak (saved activations,
#: their gradients, the float32 copies the Gram matrices take), up to relu5_1: the growth of a
#: 4-evaluation run's peak resident memory (VmHWM) from 256 to 512 px on the CPU (vgg16: 2.8 KB/px
#: float32, 2.6 KB/px bf16), rounded up; vgg19 ~15 % more (docs/benchmarks.md).
ACTIVATION_BYTES_PER_PX = {
    ("vgg16", "float32"): 2900,
    ("vgg16", "bfloat16"): 2700,
    ("vgg19", "float32"): 3300,
    ("vgg19", "bfloat16"): 3100,
}
#: ``style_loss="sliced"``'s bytes per input pixel on top (computed from the tensors' sizes, not
#: measured): the style layers hold 122 values per input pixel (relu1_1 64, relu2_1 32, relu3_1
#: 16, relu4_1 8, relu5_1 2); their sorted targets and their projections (kept by the term across
#: evaluations) in float32 (2 x 488 B), and a float32 copy of the largest layer's features
#: (relu1_1: 64 x 4 B)
SLICED_BYTES_PER_PX = 2 * 488 + 64 * 4
#: and the matching's scratch, a few directions at a time: ``statistics.MATCH_CHUNK`` (2^21)
#: values in int64, float32 and complex64
SLICED_FIXED_BYTES = 2**21 * (8 + 4 + 8)
#: the network's weights, their bfloat16 copies, the style image's pass and allocator slack
FIXED_BYTES = 320 * 2**20
#: CPU float32 plans may run the wide layers through napari-nst's Winograd F(4x4, 3x3), whose
#: transformed kernels are 36/9 = 4x the layers' float32 weights (encoder/winograd.py): counted in
#: every float32 CPU estimate, since the plan is measured only when the run starts. A level (or a
#: tile) smaller than KEEP_KERNELS_BELOW pixels keeps them (winograd_bytes); a larger one makes each
#: at every call into one buffer (winograd_call_bytes): a whole 512 px run (AVX2 on a 2-core
#: EPYC) peaks 96-144 MiB lower (benchmarks/results/cpu.json, 6 repeats). The transforms cost a
#: fixed 0.03-0.06 s per evaluation whatever the image (2 x 8 calls): per call took 1.19-1.22x the
#: kept kernels' time per evaluation at 256x192 px and 1.01-1.09x at 512x384 px (``python -m
#: benchmarks cpu --parts kernels``, AVX2 and AVX-512 on a 2-core EPYC), so small levels, where
#: memory is not short, keep them. A memory plan that does not fit with the kernels kept makes them
#: per call at any size (MemoryPlan.kernels).
KEEP_KERNELS_BELOW = 2**17


def _wide_layers(model: str) -> list[tuple[int, int]]:
    """(input, output) channels of ``model``'s layers up to conv5_1 with at least ``NARROW_MIN``
    input channels: those a plan may run through the Winograd F(4x4, 3x3)."""
    out, c_in, pools = [], 3, 0
    for v in _CFGS[model if model in _CFGS else "vgg19"]:
        if v == "M":
            pools += 1
            continue
        if c_in >= NARROW_MIN:
            out.append((c_in, int(v)))
        c_in = int(v)
        if pools == 4:  # conv5_1: the deepest layer the objective uses
            break
    return out


def winograd_bytes(model: str) -> int:
    """Bytes of the transformed kernels of ``model``'s layers up to conv5_1 with at least
    ``NARROW_MIN`` input channels, the most a plan keeps (vgg16: 158 MB, vgg19: 205 MB; the plan
    from ``WIDE_MIN`` channels keeps 7 MB less)."""
    return sum(36 * ci * co * 4 for ci, co in _wide_layers(model))


def winograd_call_bytes(model: str) -> int:
    """Bytes of the buffer a plan that makes the transformed kernels at every call holds: the
    largest layer's (512 x 512 channels: 36 MiB)."""
    return max(36 * ci * co * 4 for ci, co in _wide_layers(model))


def keeps_kernels(shape: tuple[int, int]) -> bool:
    """Whether a level (or tile) of ``shape`` keeps the Winograd kernels (see KEEP_KERNELS_BELOW)."""
    return int(shape[0]) * int(shape[1]) < KEEP_KERNELS_BELOW


#: fraction of the free memory a run may plan to use
MEMORY_HEADROOM = 0.85
#: cuDNN's convolution workspaces on top of the activations (a CUDA run's bytes per pixel x this)
CUDNN_WORKSPACE_FACTOR = 1.25
#: a tiled run's image-sized tensors besides the optimiser's vectors, per pixel of the whole image:
#: the content and style images, the image, its gradient and the accumulated tile gradients
#: (float32 RGB, 12 B each), and the content targets (relu4_2: 512 channels at 1/8 x 1/8, 32 B)
TILED_IMAGE_BYTES_PER_PX = 8 * 12 + 32

#: tiles: the halo around each tile's core is this many strides of the deepest layer used
#: (32 px for relu5_1, whose features lie on a 16 px grid); the smallest core is HALO_STRIDES strides
HALO_STRIDES = 2
#: auto-tiling chooses tile sizes on this grid (px)
TILE_GRID = 32

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_IUNITS = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def _dtype_name(dtype: Any) -> str:
    """``"bfloat16"`` or ``"float32"`` from a string, None (float32) or anything whose str names bfloat16."""
    return "bfloat16" if dtype is not None and "bfloat16" in str(dtype) else "float32"


def _vectors(optimizer: str, history: int) -> int:
    # L-BFGS: the pairs + the current and previous point and gradient, the direction and slack;
    # Adam: its two moment vectors, the variable, its gradient and two temporaries of its update
    return (2 * history + 8) if optimizer == "lbfgs" else 6


def _activation(model: str, dtype: Any, device_type: str) -> int:
    key = (model if model in ("vgg16", "vgg19") else "vgg19", _dtype_name(dtype))
    act = ACTIVATION_BYTES_PER_PX[key]
    return int(act * CUDNN_WORKSPACE_FACTOR) if device_type == "cuda" else act


def _fixed(model: str, dtype: Any, device_type: str, kernels: bool) -> int:
    """``FIXED_BYTES``, plus for a float32 CPU run :func:`winograd_bytes` (``kernels``: kept) or
    :func:`winograd_call_bytes` (made at every call)."""
    if device_type != "cpu" or _dtype_name(dtype) != "float32":
        return FIXED_BYTES
    return FIXED_BYTES + (winograd_bytes(model) if kernels else winograd_call_bytes(model))


def estimate_memory(
    shape: tuple[int, int],
    model: str = "vgg19",
    dtype: Any = None,
    optimizer: str = "lbfgs",
    history: int = LBFGS_HISTORY,
    device_type: str = "cpu",
    style_loss: str = "gram",
    kernels: bool | None = None,
) -> int:
    """Bytes a whole-image run at working ``shape`` (H, W) needs on its device beyond what is in use.

    ``dtype``: ``"bfloat16"`` or ``"float32"`` (None: float32). A linear model of the measurements:
    ``FIXED_BYTES`` (plus for a float32 CPU run the Winograd kernels: kept, ``kernels`` True, or
    made per call; None: as :func:`keeps_kernels` says for ``shape``) + pixels x (network bytes
    per pixel + optimiser state, each vector up to 4/3 of the image: the pyramid's coarser layers,
    Options.pyramid); ``style_loss="sliced"`` adds ``SLICED_BYTES_PER_PX`` and
    ``SLICED_FIXED_BYTES``.
    """
    px = int(shape[0]) * int(shape[1])
    extra = SLICED_BYTES_PER_PX if style_loss == "sliced" else 0
    fixed = SLICED_FIXED_BYTES if style_loss == "sliced" else 0
    return (
        fixed
        + _fixed(model, dtype, device_type, keeps_kernels(shape) if kernels is None else kernels)
        + px * (_activation(model, dtype, device_type) + int(_vectors(optimizer, history) * 16) + extra)
    )


def estimate_tiled(
    shape: tuple[int, int],
    tile_size: int,
    model: str = "vgg19",
    dtype: Any = None,
    optimizer: str = "lbfgs",
    history: int = TILED_HISTORY,
    device_type: str = "cpu",
) -> int:
    """Bytes a run at working ``shape`` needs when evaluated in tiles of ``tile_size`` px (halo included):
    the network's activations of one tile, the image-sized optimiser state and tensors."""
    h, w = int(shape[0]), int(shape[1])
    tile = (min(h, tile_size), min(w, tile_size))
    tile_px = tile[0] * tile[1]
    per_px = int(_vectors(optimizer, history) * 16) + TILED_IMAGE_BYTES_PER_PX
    return (
        _fixed(model, dtype, device_type, keeps_kernels(tile))
        + tile_px * _activation(model, dtype, device_type)
        + h * w * per_px
    )


def largest_fitting_size(
    content_shape: tuple[int, int],
    available: int,
    model: str = "vgg19",
    dtype: Any = None,
    optimizer: str = "lbfgs",
    history: int = LBFGS_HISTORY,
    device_type: str = "cpu",
) -> int:
    """The largest long edge (px) whose whole-image run fits ``available * MEMORY_HEADROOM`` bytes (0: none)."""
    budget = available * MEMORY_HEADROOM
    lo, hi = 0, max(content_shape) * 64 + 64
    while lo < hi:  # the estimate grows with the size: bisect
        mid = (lo + hi + 1) // 2
        need = estimate_memory(resized_shape(content_shape, mid), model, dtype, optimizer, history, device_type)
        lo, hi = (mid, hi) if need <= budget else (lo, mid - 1)
    return lo


# --------------------------------------------------------------------------- tiles


def tile_stride(model: str, layers: list[str] | tuple[str, ...]) -> int:
    """The grid (px) the deepest layer's features lie on: tiles start on it so that their features
    are the whole image's (16 px up to relu5_1)."""
    return min_side(model, layers)


def tile_halo(model: str, layers: list[str] | tuple[str, ...]) -> int:
    """Pixels of context around each tile's core (32 px up to relu5_1)."""
    return HALO_STRIDES * tile_stride(model, layers)


def min_tile(model: str, layers: list[str] | tuple[str, ...]) -> int:
    """The smallest ``tile_size``: a core of HALO_STRIDES strides with its halo on both sides (96 px up to relu5_1)."""
    return 2 * tile_halo(model, layers) + HALO_STRIDES * tile_stride(model, layers)


def check_tile_size(tile_size: int, shape: tuple[int, int], model: str, layers: list[str] | tuple[str, ...]) -> None:
    """Raise :class:`OptionError` naming the fix if ``tile_size`` does not suit a working ``shape``."""
    least = min_tile(model, layers)
    if tile_size < least:
        raise OptionError(
            f"tile_size={tile_size} is too small: {model} up to {layers[-1]} needs tiles of at least {least} px "
            f"(a {tile_halo(model, layers)} px halo on each side of the tile's core): raise tile_size to {least} "
            "or more, or leave it empty for the whole image"
        )
    if tile_size >= max(shape):
        raise OptionError(
            f"tile_size={tile_size} is not smaller than the {shape[0]}x{shape[1]} px image: one tile would be the "
            f"whole image; leave tile_size empty (the whole image at once) or lower it below {max(shape)}"
        )


def largest_fitting_tile(
    shape: tuple[int, int],
    budget: float,
    model: str = "vgg19",
    dtype: Any = None,
    optimizer: str = "lbfgs",
    history: int = TILED_HISTORY,
    device_type: str = "cpu",
    least: int = 96,
) -> int:
    """The largest tile size on the TILE_GRID (at least ``least``, below the image's long edge) whose
    run fits ``budget`` bytes; 0 if none does."""
    best = 0
    top = max(least, (max(shape) - 1) // TILE_GRID * TILE_GRID)
    for t in [least, *range(-(-least // TILE_GRID) * TILE_GRID, top + 1, TILE_GRID)]:
        if estimate_tiled(shape, t, model, dtype, optimizer, history, device_type) <= budget:
            best = max(best, t)
    return best


# --------------------------------------------------------------------------- max_memory


def parse_bytes(value: Any) -> int:
    """Bytes from an integer or text such as ``"8GB"``, ``"512MiB"``, ``"1.5 G"`` (decimal units
    k/M/G/T, binary KiB/MiB/GiB/TiB; a bare number is bytes). Raises :class:`OptionError`."""
    if isinstance(value, bool):
        raise OptionError(f"max_memory must be bytes or text like '8GB', got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]i?)?b?\s*", str(value).lower())
        if not m:
            raise OptionError(
                f"max_memory: {value!r} is not an amount of memory; write bytes or a number with a unit, "
                "like '8GB', '512MiB' or 2000000000"
            )
        unit = m.group(2) or ""
        n = float(m.group(1)) * (_IUNITS[unit] if unit.endswith("i") else _UNITS[unit])
    if not math.isfinite(n) or n <= 0:
        raise OptionError(f"max_memory must be a positive amount like '8GB', got {value!r}")
    return int(n)


def format_bytes(n: float) -> str:
    """``"1.2 GiB"``, ``"640 MiB"``."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def format_apart(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` as :func:`format_bytes` writes them, or both in MiB where it would write the
    same for two different amounts ("1.1 GiB, more than the 1.1 GiB")."""
    fa, fb = format_bytes(a), format_bytes(b)
    if fa == fb and int(a) != int(b):
        return f"{a / 2**20:.0f} MiB", f"{b / 2**20:.0f} MiB"
    return fa, fb


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class MemoryPlan:
    """What a run will need and how: ``bytes`` (estimated), ``tile_size`` (None: the whole image at
    once), ``text`` (one line for the user), ``fits`` (False: it does not fit even in tiles; ``text``
    says what to change), ``auto`` (the tiles, or Winograd kernels made per call, were chosen
    because the whole image does not fit otherwise), ``kernels`` (False: a float32 CPU run must not
    keep napari-nst's Winograd kernels, :func:`winograd_bytes`, even where its levels are small
    enough to keep them: it fits when it makes them at every call)."""

    bytes: int
    tile_size: int | None
    text: str
    fits: bool = True
    auto: bool = False
    budget: int | None = None
    kernels: bool = True


def tiles_supported(opts: Any, styles: int = 1) -> str:
    """Empty if a run with these options can be tiled, else why not (a sentence)."""
    if styles > 1:
        return "tiles work with one style image (not a blend of several)"
    if getattr(opts, "regions", None) is not None:
        return "tiles do not work with regions"
    if getattr(opts, "style_loss", "gram") == "sliced":
        # the sliced loss sorts the whole image's projections at every style layer: as many
        # numbers as the style layers' whole feature maps, the memory tiles are there to avoid
        return (
            "tiles do not work with style_loss='sliced' (it sorts the whole image's features): use wasserstein or gram"
        )
    return ""


def host_available() -> int | None:
    """Bytes of host memory available now (None: unknown): psutil's figure, else Linux's MemAvailable.
    The one place the free memory of this machine is read (the engine, the widget, stacks)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _budget(opts: Any, available_bytes: int | None) -> int | None:
    """Bytes the run may use: the free memory's share, capped by ``max_memory``."""
    cap = parse_bytes(opts.max_memory) if getattr(opts, "max_memory", None) is not None else None
    free = int(available_bytes * MEMORY_HEADROOM) if available_bytes is not None else None
    if cap is None or free is None:
        return cap if free is None else free
    return min(cap, free)


def plan(
    content_shape: tuple[int, int],
    opts: Any,
    available_bytes: int | None,
    *,
    dtype: str | None = None,
    device_type: str = "cpu",
    styles: int = 1,
) -> MemoryPlan:
    """The memory plan of a run of ``opts`` (an :class:`~napari_nst.core.options.Options`) on a
    content of ``content_shape`` (H, W), with ``available_bytes`` free (None: unknown).

    ``tile_size`` given: that tile size. None: the whole image if it fits the budget (the free
    memory x MEMORY_HEADROOM, capped by ``max_memory``), else the largest tile size that fits.
    ``dtype``: ``"bfloat16"`` or ``"float32"`` (None: bfloat16 only if ``precision='bfloat16'``,
    the larger float32 estimate for ``auto``). Raises :class:`OptionError` for a bad ``tile_size``
    or ``max_memory``; a run that does not fit is a plan with ``fits=False``.
    """
    shape = opts.level_shapes(content_shape)[-1]
    dt = dtype if dtype is not None else ("bfloat16" if opts.precision == "bfloat16" else "float32")
    model, layers = opts.network, opts.layers
    budget = _budget(opts, available_bytes)
    args = (model, dt, opts.optimizer)
    if opts.tile_size is not None:
        check_tile_size(opts.tile_size, shape, model, layers)
        need = estimate_tiled(shape, opts.tile_size, *args, _history(True), device_type)
        fits = budget is None or need <= budget
        text = f"about {format_bytes(need)} in tiles of {opts.tile_size} px"
        if not fits:
            text += f", more than the {format_bytes(budget or 0)} it may use: " + _tile_fix(
                shape, budget, opts, dt, device_type
            )
        return MemoryPlan(need, opts.tile_size, text, fits, budget=budget)
    need = estimate_memory(shape, *args, _history(False), device_type, getattr(opts, "style_loss", "gram"))
    if budget is None or need <= budget:
        return MemoryPlan(need, None, f"about {format_bytes(need)}", budget=budget)
    lean = estimate_memory(shape, *args, _history(False), device_type, getattr(opts, "style_loss", "gram"), False)
    if lean < need and lean <= budget:  # lean < need: a float32 CPU run whose levels would keep the kernels
        # the whole image fits with the Winograd kernels made at every call: that beats tiles,
        # which evaluate more pixels (the halos) and keep a shorter L-BFGS history (tiles of 480 px
        # at 512 px, AVX2: 1.9-2.3x the time per evaluation and a higher peak), and a plan without
        # the transform (1.2-1.5x; benchmarks/results/cpu.json, AVX2 memory runs)
        with_them, may = format_apart(need, budget)
        text = (
            f"about {format_bytes(lean)}, making the Winograd kernels at each call (keeping them {with_them}, "
            f"more than the {may} it may use)"
        )
        return MemoryPlan(lean, None, text, auto=True, budget=budget, kernels=False)
    why_not = tiles_supported(opts, styles)
    tile = 0 if why_not else _auto_tile(shape, budget, opts, dt, device_type)
    if tile:
        t_need = estimate_tiled(shape, tile, *args, _history(True), device_type)
        text = (
            f"about {format_bytes(t_need)} in tiles of {tile} px (the whole {shape[0]}x{shape[1]} px image at once "
            f"needs about {format_bytes(need)}, more than the {format_bytes(budget)} it may use)"
        )
        return MemoryPlan(t_need, tile, text, True, auto=True, budget=budget)
    text = f"about {format_bytes(need)}, more than the {format_bytes(budget)} it may use"
    text += f" ({why_not})" if why_not else " even in tiles"
    return MemoryPlan(need, None, text, False, budget=budget)


def _history(tiled: bool) -> int:
    """The L-BFGS history a run keeps (a benchmark may set another: ``optim.levers``)."""
    return levers.current().history_size or (TILED_HISTORY if tiled else LBFGS_HISTORY)


def _auto_tile(shape: tuple[int, int], budget: int, opts: Any, dt: str, device_type: str) -> int:
    least = min_tile(opts.network, opts.layers)
    return largest_fitting_tile(
        shape, budget, opts.network, dt, opts.optimizer, _history(True), device_type, least=least
    )


def _tile_fix(shape: tuple[int, int], budget: int | None, opts: Any, dt: str, device_type: str) -> str:
    tile = _auto_tile(shape, budget or 0, opts, dt, device_type) if budget else 0
    if tile:
        return f"lower tile_size to {tile} or less"
    return "lower size (the image-sized optimiser state alone does not fit), or raise max_memory"
