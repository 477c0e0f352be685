"""The optimisation loop: a generator that yields one :class:`Progress` per objective evaluation.

The widget, the command line and the Python API all drive :func:`run`. Closing the generator
stops the work within one evaluation and frees the device memory.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import memory, tiles, tune
from .controls import Controls
from .device import (
    NetworkPlan,
    autocast_dtype,
    cpu_has_fast_bf16,
    cudnn_benchmark,
    empty_cache,
    is_oom,
    lbfgs_history_dtype,
    native_bf16,
    network_plan,
    pick_device,
    resize_on_host,
)
from .errors import DeviceMemoryError, NonFiniteLossError, OptionError
from .graphed import Objective
from .images import to_rgb_float
from .lbfgs import LBFGS
from .losses import ContentTerm, StyleTarget, StyleTerm, TVTerm, content_loss, evaluate, gram, gram_loss
from .memory import (  # noqa: F401  (kept importable here: benchmarks and tests read them from engine)
    ACTIVATION_BYTES_PER_PX,
    CUDNN_WORKSPACE_FACTOR,
    FIXED_BYTES,
    LBFGS_HISTORY,
    MEMORY_HEADROOM,
    TILED_HISTORY,
)
from .options import Options
from .pyramid import PyramidImage
from .records import Progress
from .vgg import VGGFeatures, build_vgg

#: the automatic style weight: ``b = STYLE_BALANCE / L_style(0)`` (see Options.style_weight); 5, re-tuned
#: on photo/painting pairs against the textbook's a = 1, b = 100 (docs/controls.md, benchmarks/balance.py)
STYLE_BALANCE = 5.0

#: the largest change of any pixel one L-BFGS step may make (image units, [0, 1]; see lbfgs.py)
LBFGS_MAX_CHANGE = 0.25

#: weight of each coarser pyramid layer relative to the one below it (``Options.pyramid``)
PYRAMID_GAMMA = 0.5

#: Adam's step size (image units per step; ``optimizer="adam"``, a departure from the paper)
ADAM_LR = 0.02

#: after an out-of-memory half-way, when the free memory says nothing better: suggest this
#: fraction of the size that failed
OOM_SIZE_FACTOR = 0.7

# kept under their old names: benchmarks and tests read them from here
_cpu_has_fast_bf16 = cpu_has_fast_bf16
_is_oom = is_oom


# --------------------------------------------------------------------------- helpers


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) float32 -> (1, 3, H, W) on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) -> new float32 (H, W, 3) array in [0, 1] on the host."""
    out: np.ndarray = t.detach()[0].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy().copy()
    return out


def resize(t: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (1, 3, H, W), antialiased when shrinking."""
    if tuple(t.shape[-2:]) == tuple(shape):
        return t
    shrink = shape[0] < t.shape[-2] or shape[1] < t.shape[-1]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=shrink).clamp(0, 1)


#: coarse-to-fine (``Options.scales``): each level gets this fraction of the evaluations of the
#: level before it (coarser, a quarter of the pixels), so that most evaluations are cheap and a
#: few refine the full size (measured at 1024 px in docs/coarse_to_fine.md)
LEVEL_STEP_RATIO = 1 / 3


def split_steps(steps: int, scales: int) -> list[int]:
    """Evaluations per level, coarse to fine: one each, and the rest in proportion ``1, r, r^2, ...``
    with ``r = LEVEL_STEP_RATIO`` (largest remainders rounded up, coarser first), so that they add
    up to ``steps`` and never grow from one level to the next (300 over two levels: 225 + 75;
    over three: 207 + 69 + 24)."""
    if scales < 1 or steps < scales:
        raise OptionError(f"steps={steps} is too few for scales={scales}; give at least {scales} steps")
    weights = [LEVEL_STEP_RATIO**k for k in range(scales)]
    shares = [(steps - scales) * w / sum(weights) for w in weights]
    counts = [1 + math.floor(x) for x in shares]
    by_remainder = sorted(range(scales), key=lambda k: (-(shares[k] - math.floor(shares[k])), k))
    for k in by_remainder[: steps - sum(counts)]:
        counts[k] += 1
    return counts


# --------------------------------------------------------------------------- memory
# The model itself is torch-free (core/memory.py, which the widget uses before a run); kept
# importable here under the old names, with ``dtype`` a torch dtype (None: float32).


def _dtype_name(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None or dtype == torch.float32 else "bfloat16"


def estimate_memory(
    shape: tuple[int, int],
    model: str = "vgg19",
    dtype: torch.dtype | None = None,
    optimizer: str = "lbfgs",
    history: int = LBFGS_HISTORY,
    device_type: str = "cpu",
) -> int:
    """Bytes a whole-image run at working ``shape`` needs (:func:`napari_nst.core.memory.estimate_memory`)."""
    return memory.estimate_memory(shape, model, _dtype_name(dtype), optimizer, history, device_type)


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (None when unknown: then no check is made)."""
    try:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            idx = device.index if device.index is not None else torch.cuda.current_device()
            cached = torch.cuda.memory_reserved(idx) - torch.cuda.memory_allocated(idx)
            return int(free + cached)
        if device.type == "mps":
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        try:
            import psutil

            return int(psutil.virtual_memory().available)
        except ImportError:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
    except Exception:
        return None
    return None


def largest_fitting_size(
    content_shape: tuple[int, int],
    available: int,
    model: str = "vgg19",
    dtype: torch.dtype | None = None,
    optimizer: str = "lbfgs",
    history: int = LBFGS_HISTORY,
    device_type: str = "cpu",
) -> int:
    """The largest long edge (px) whose whole-image run fits (:func:`napari_nst.core.memory.largest_fitting_size`)."""
    return memory.largest_fitting_size(
        content_shape, available, model, _dtype_name(dtype), optimizer, history, device_type
    )


def _bf16_hint(device: torch.device, dtype: torch.dtype | None) -> str:
    """Suggest bfloat16 (about 7 % fewer bytes per pixel) only where the device runs it in hardware."""
    return ", or precision='bfloat16'" if dtype is None and native_bf16(device) else ""


def check_memory(
    content_shape: tuple[int, int],
    shape: tuple[int, int],
    opts: Options,
    device: torch.device,
    dtype: torch.dtype | None,
    available: int | None = None,
) -> int:
    """Raise :class:`DeviceMemoryError` at once if a run at working ``shape`` will not fit.

    ``available``: free bytes (default: asked of the device). Returns the estimated bytes.
    """
    history = int(opts.extra.get("history_size", LBFGS_HISTORY))
    need = estimate_memory(shape, opts.network, dtype, opts.optimizer, history, device.type)
    if available is None:
        available = available_memory(device)
    if available is None or need <= available * MEMORY_HEADROOM:
        return need
    fit = largest_fitting_size(content_shape, available, opts.network, dtype, opts.optimizer, history, device.type)
    raise DeviceMemoryError(
        f"a {shape[0]}x{shape[1]} px run needs about {need / 2**30:.1f} GiB on {device}, but only "
        f"{available / 2**30:.1f} GiB is free; use size={fit} or less"
        + _bf16_hint(device, dtype)
        + (" or device='cpu'" if device.type != "cpu" else ""),
        fit,
    )


def plan_memory(
    content_shape: tuple[int, int],
    shape: tuple[int, int],
    opts: Options,
    device: torch.device,
    dtype: torch.dtype | None,
    styles: int = 1,
    available: int | None = None,
) -> memory.MemoryPlan:
    """The run's :class:`~napari_nst.core.memory.MemoryPlan` (whole image, or tiles when that does
    not fit); raises at once if nothing fits: :class:`OptionError` when ``max_memory`` is what is
    too small, else :class:`DeviceMemoryError`. ``available``: free bytes (default: asked of the device)."""
    if available is None:
        available = available_memory(device)
    p = memory.plan(content_shape, opts, available, dtype=_dtype_name(dtype), device_type=device.type, styles=styles)
    if p.fits:
        return p
    cap = memory.parse_bytes(opts.max_memory) if opts.max_memory is not None else None
    if cap is not None and (available is None or cap < available * MEMORY_HEADROOM):
        raise OptionError(
            f"max_memory={memory.format_bytes(cap)} is too small for a {shape[0]}x{shape[1]} px run ({p.text}): "
            "raise max_memory or lower size"
        )
    if opts.tile_size is None:
        check_memory(content_shape, shape, opts, device, dtype, available)  # the whole image's error, as before
    fit = largest_fitting_size(
        content_shape, available or 0, opts.network, dtype, opts.optimizer, device_type=device.type
    )
    raise DeviceMemoryError(f"a {shape[0]}x{shape[1]} px run needs {p.text}; use size={fit} or less", fit)


# --------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """What one run needs at every level: its options as resolved, device, network, pictures."""

    opts: Options
    device: torch.device
    dtype: torch.dtype | None
    plan: NetworkPlan
    net: VGGFeatures
    content: torch.Tensor  # full resolution, (1, 3, H, W); on the host where resizing is (resize_on_host)
    style: torch.Tensor
    style_shape: tuple[int, int]
    shapes: list[tuple[int, int]]
    counts: list[int]
    layer_w: dict[str, float]
    gen: torch.Generator
    t0: float = field(default_factory=time.perf_counter)
    step: int = 0
    last_image_at: float = -math.inf  # perf_counter time of the last record that had an image
    last_good: np.ndarray | None = None  # the last image recorded (kept for NonFiniteLossError)
    controls: Any = None  # several styles, regions, colours, strength (core/controls.py); None: the paper's
    # hooks for a caller that runs many images with one context (core/stack.py): style Gram
    # matrices memoised by the style's working shape, and extra terms for a level's shape
    style_grams: dict[Any, dict[str, torch.Tensor]] | None = None
    extra_terms: Callable[[tuple[int, int]], list[Any]] | None = None
    tile_size: int | None = None  # evaluate levels larger than this in tiles (core/tiles.py); None: whole
    memory_note: str = ""  # the records' note: why the run is tiled (the engine chose it), the plan measured
    float32_plan: NetworkPlan | None = None  # the plan a bfloat16 level finishes in (see _Finish)
    finished_from: tuple[torch.dtype | None, NetworkPlan] | None = None  # the level's own, after a switch

    @property
    def total(self) -> int:
        return sum(self.counts)

    def resized(self, t: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """``t`` (content, style or an init image) resized to ``shape``, on the run's device."""
        return resize(t, shape).to(self.device)


def _targets(
    net: VGGFeatures,
    content: torch.Tensor,
    style: torch.Tensor,
    opts: Options,
    grams: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, tuple[int, int]]]:
    """Content features, style Gram matrices (``grams`` if given) and the pastiche's (N_l, M_l),
    without autograd."""
    # The targets are computed once per level, so they cost nothing to compute in float32: the
    # objective is then exactly the float32 one, whatever precision the evaluations run in.
    with torch.no_grad():
        cf = net(content)
        if grams is None:
            sf = net(style)
            grams = {n: gram(sf[n]) for n in opts.style_layers}
    nm = {n: (cf[n].shape[1], cf[n].shape[2] * cf[n].shape[3]) for n in opts.style_layers}
    return {n: cf[n].float() for n in opts.content_layers}, grams, nm


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return nullcontext()
    # no cast cache: each weight is cast once per evaluation anyway, and a CUDA graph must not
    # keep casts made during its capture in a cache that is cleared afterwards
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)


def resolve_weights(
    opts: Options,
    content_t: dict[str, torch.Tensor],
    grams: dict[str, torch.Tensor],
    layer_w: dict[str, float],
    nm: dict[str, tuple[int, int]],
) -> tuple[float, float]:
    """``a`` and ``b``: the options' values, or the automatic ones (see :class:`Options`)."""
    a = opts.content_weight
    if a is None:
        a = 1.0 / max(sum(content_loss(torch.zeros_like(t), t).item() for t in content_t.values()), 1e-30)
    b = opts.style_weight
    if b is None:
        # L_style(0): the style loss of an image whose Gram matrices are all zero
        ref = sum(w * gram_loss(torch.zeros_like(grams[n]), grams[n], *nm[n]).item() for n, w in layer_w.items())
        b = STYLE_BALANCE / max(ref, 1e-30)
    return a, b


def _make_optimizer(opts: Options, var: PyramidImage, tiled: bool = False) -> Any:
    """The optimiser: ``step(closure)`` evaluates the objective once and moves ``var``."""
    if opts.optimizer == "adam":
        # Departure from the paper (an option): Gatys et al. use L-BFGS.
        return torch.optim.Adam(var.params, lr=ADAM_LR)
    # tiled: a shorter history, since its pairs are image-sized whatever the tile (docs/tiles.md)
    history = int(opts.extra.get("history_size", TILED_HISTORY if tiled else LBFGS_HISTORY))
    if opts.extra.get("lbfgs") == "torch":  # torch's L-BFGS, only to measure what ours buys
        return torch.optim.LBFGS(
            var.params, lr=1.0, max_iter=1, max_eval=1, history_size=history, tolerance_grad=0.0, tolerance_change=0.0
        )
    max_change = opts.extra.get("max_change", LBFGS_MAX_CHANGE)
    stored = opts.extra.get("history_dtype")  # "float32" only to measure what the default saves
    return LBFGS(
        var.params,
        history,
        max_change=None if max_change is None else float(max_change),
        image_change=var.change,
        history_dtype=lbfgs_history_dtype(var.params[0].device) if stored is None else getattr(torch, stored),
    )


def run(content: np.ndarray, style: Any, opts: Options) -> Iterator[Progress]:
    """Stylise ``content`` (float32 (H, W, 3) in [0, 1]) with ``style`` (one such image or a
    list); yield per evaluation.

    Errors in the options, the size or the memory estimate are raised at the first ``next()``
    (this is a generator); :func:`napari_nst.iter_stylize` checks the options before that.
    """
    device = pick_device(opts.device)
    opts = opts.for_device(gpu=device.type != "cpu")  # size and steps "by device"
    assert opts.size is not None and opts.steps is not None  # for_device filled them in
    dtype = autocast_dtype(opts.precision, device)
    opts.check_size(content.shape[:2])  # layer names were checked by Options.validate
    shapes = opts.level_shapes(content.shape[:2])
    counts = split_steps(opts.steps, len(shapes))
    styles = len(style) if isinstance(style, (list, tuple)) else 1
    opts.check_tiles(content.shape[:2], styles)
    mplan = plan_memory(content.shape[:2], shapes[-1], opts, device, dtype, styles)
    ctx = _prepare(content, style, opts, device, dtype, shapes, counts, tune_shape=_tuned_shape(shapes[-1], mplan))
    if ctx.dtype != dtype and not _same_memory_plan(content.shape[:2], shapes[-1], opts, ctx, mplan, styles):
        _static_plan(ctx, dtype)  # the measured precision would need another memory plan: keep the static one
    ctx.tile_size = mplan.tile_size
    ctx.memory_note = "; ".join(n for n in (mplan.text if mplan.auto else "", ctx.memory_note) if n)
    oom = None
    try:
        with cudnn_benchmark(device):
            yield from _levels(ctx)
    except DeviceMemoryError:
        raise
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc):
            raise
        oom = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        del ctx  # free the network and the pictures before anything else
        empty_cache(device)
    if oom is not None:
        raise _out_of_memory(content.shape[:2], shapes[-1], opts, opts.size, device, dtype, oom)


def _prepare(
    content: np.ndarray,
    style: Any,
    opts: Options,
    device: torch.device,
    dtype: torch.dtype | None,
    shapes: list[tuple[int, int]],
    counts: list[int],
    *,
    tune_shape: tuple[int, int] | None = None,
) -> _Run:
    """The run's context. ``tune_shape``: the shape the network is evaluated at, to choose the
    plan measured on this machine (core/tune.py: cached, or timed now); None: the static rules."""
    where = torch.device("cpu") if resize_on_host(device) else device
    controls, content, style = Controls.build(content, style, opts, where)  # None without controls
    if opts.style_layer_weights is None:
        layer_w = {n: 1.0 / len(opts.style_layers) for n in opts.style_layers}
    else:
        layer_w = dict(zip(opts.style_layers, opts.style_layer_weights, strict=True))
    gen = torch.Generator().manual_seed(opts.seed if opts.seed is not None else int(time.time_ns() % 2**31))
    # model None: the network the weights file holds (vgg.resolve_model), else vgg19
    net = build_vgg(opts.model, opts.layers, weights=opts.weights, pooling=opts.pooling)
    if device.type != "cpu":  # the kept network stays on the CPU: the device's memory goes back after the run
        net = copy.deepcopy(net).to(device)
    decision = tune.static_decision(device, dtype)
    if tune_shape is not None:
        pic = content
        decision = tune.plan_for_run(
            net,
            device,
            opts.precision,
            dtype,
            lambda: resize(to_tensor(pic, where), tune_shape).to(device),
            tune_shape,
            opts.content_layers,
            opts.style_layers,
        )
    dtype, plan = decision.dtype, _with_knobs(decision.plan, opts)
    f32 = decision.table.choose("float32") if decision.table is not None else None
    float32_plan = _with_knobs(f32.plan if f32 is not None else network_plan(device, None), opts)
    net.set_lean_pool(plan.lean_pool)
    net.set_winograd(plan.winograd)
    return _Run(
        opts,
        device,
        dtype,
        plan,
        net,
        to_tensor(content, where),
        to_tensor(style, where),
        style.shape[:2],
        shapes,
        counts,
        layer_w,
        gen,
        controls=controls,
        memory_note=decision.note,
        float32_plan=float32_plan,
    )


def _with_knobs(plan: NetworkPlan, opts: Options) -> NetworkPlan:
    """``plan`` with the engine's measuring knobs applied (they win over the rules and the tuner)."""
    for knob in ("channels_last", "lean_pool", "winograd"):  # only to measure what each buys
        if knob in opts.extra:
            plan = dataclasses.replace(plan, **{knob: bool(opts.extra[knob])})
    return plan


def _tuned_shape(shape: tuple[int, int], mplan: memory.MemoryPlan) -> tuple[int, int]:
    """The shape the network is evaluated at: the finest level's, or (tiled) a tile's at most."""
    if mplan.tile_size is None:
        return shape
    return (min(shape[0], mplan.tile_size), min(shape[1], mplan.tile_size))


def _same_memory_plan(
    content_shape: tuple[int, int],
    shape: tuple[int, int],
    opts: Options,
    ctx: _Run,
    mplan: memory.MemoryPlan,
    styles: int,
) -> bool:
    """Whether the run's memory plan (whole image or tiles of a size) holds in ``ctx.dtype`` too."""
    try:
        other = plan_memory(content_shape, shape, opts, ctx.device, ctx.dtype, styles)
    except (DeviceMemoryError, OptionError):
        return False
    return other.tile_size == mplan.tile_size


def _static_plan(ctx: _Run, dtype: torch.dtype | None) -> None:
    """Back to the static rules' precision and plan (device.network_plan)."""
    ctx.dtype, ctx.plan = dtype, _with_knobs(network_plan(ctx.device, dtype), ctx.opts)
    ctx.net.set_lean_pool(ctx.plan.lean_pool)
    ctx.net.set_winograd(ctx.plan.winograd)
    ctx.memory_note = ""


def _first_image(ctx: _Run) -> torch.Tensor:
    opts, shape = ctx.opts, ctx.shapes[0]
    if isinstance(opts.init, np.ndarray):
        init = to_rgb_float(opts.init, name="init")
        return ctx.resized(to_tensor(init, ctx.content.device), shape)
    if opts.init == "noise":
        return torch.rand(1, 3, *shape, generator=ctx.gen).to(ctx.device)
    c = ctx.resized(ctx.content, shape)
    if opts.extra.get("init") == "colour":  # measured in docs/performance.md (issue 11), not a default
        return colour_matched(c, ctx.resized(ctx.style, opts.style_shape(ctx.style_shape, shape)))
    return c


def colour_matched(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """The content with the style's colour statistics (each RGB channel's mean and standard
    deviation), clamped to [0, 1]: a start nearer the style's Gram matrices than the content."""
    mc, sc = content.mean((0, 2, 3), keepdim=True), content.std((0, 2, 3), keepdim=True)
    ms, ss = style.mean((0, 2, 3), keepdim=True), style.std((0, 2, 3), keepdim=True)
    return ((content - mc) / sc.clamp(min=1e-6) * ss + ms).clamp(0.0, 1.0)


def _levels(ctx: _Run) -> Iterator[Progress]:
    x = _first_image(ctx)
    if ctx.controls is not None:
        x = ctx.controls.network_image(x, ctx.opts.init)
    for level, (shape, count) in enumerate(zip(ctx.shapes, ctx.counts, strict=True), start=1):
        if level > 1:
            x = _next_level_start(ctx, x, shape)
        x = yield from _level(ctx, level, shape, count, x)  # the next level starts from this one's result


def _next_level_start(ctx: _Run, x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Where a coarse-to-fine level starts: the content at ``shape`` plus the change the coarser
    level made to its own content, enlarged (``c + up(x - down(c))``): the previous result's low
    frequencies, the content's fine detail.

    Not in the paper (which has no levels; an option's detail, ``scales``). The previous result
    merely enlarged is blurred at the new size: the lowest style layers' ReLUs are dead on it, no
    gradient revives them, and at 1024 px it scored worse than the content (34 against 28) and
    the level stalled near 11 while single scale fell to 0.14 (docs/coarse_to_fine.md)."""
    c = ctx.resized(ctx.content, shape)  # the content as the network sees it (controls: colours done)
    change = x - resize(c, (int(x.shape[-2]), int(x.shape[-1])))  # what the coarse level did to its content
    up = F.interpolate(change, size=shape, mode="bilinear", align_corners=False)
    return (c + up).clamp(0.0, 1.0)


def _terms(ctx: _Run, shape: tuple[int, int], tiling: tiles.Tiling | None = None) -> tuple[list[Any], dict[str, float]]:
    """The objective's terms at working ``shape`` (targets and weights of this level);
    ``tiling``: the targets computed tile by tile."""
    opts = ctx.opts
    c = ctx.resized(ctx.content, shape)
    s = ctx.resized(ctx.style, opts.style_shape(ctx.style_shape, shape))
    memo = ctx.style_grams
    known = None if memo is None else memo.get(tuple(s.shape))
    if tiling is None:
        content_t, grams, nm = _targets(ctx.net, c, s, opts, known)
    else:
        layers = (list(opts.content_layers), list(opts.style_layers))
        content_t, grams, nm = tiles.tiled_targets(ctx.net, c, s, tiling, ctx.net.model, *layers, known)
    if memo is not None:
        memo[tuple(s.shape)] = grams
    del c, s
    a, b = resolve_weights(opts, content_t, grams, ctx.layer_w, nm)
    terms: list[Any] = [ContentTerm(content_t, a), StyleTerm([StyleTarget(grams)], ctx.layer_w, b)]
    if ctx.controls is not None:  # several styles, regions, style strength (core/controls.py)
        terms[1] = ctx.controls.style_term(ctx, shape, terms[1], nm)
    if opts.tv_weight > 0:
        terms.append(TVTerm(opts.tv_weight))
    if ctx.extra_terms is not None:
        terms.extend(ctx.extra_terms(shape))
    return terms, {t.name: float(t.weight) for t in terms}


def _want_image(ctx: _Run, last_of_level: bool) -> bool:
    """Images only where they will be used: the last of each level, and every ``preview_every``-th
    evaluation once ``preview_interval`` seconds have passed since the last record with one."""
    if last_of_level:
        return True
    if ctx.step % ctx.opts.preview_every:
        return False
    return time.perf_counter() - ctx.last_image_at >= ctx.opts.preview_interval


def _level(
    ctx: _Run, level: int, shape: tuple[int, int], count: int, x: torch.Tensor
) -> Generator[Progress, None, torch.Tensor]:
    """One coarse-to-fine level: ``count`` evaluations at ``shape`` starting from ``x``."""
    if ctx.finished_from is not None:  # the previous level finished in float32: this one starts as the run does
        _set_plan(ctx, *ctx.finished_from)
        ctx.finished_from = None
    tiling = _tiling(ctx, shape)
    terms, weights = _terms(ctx, shape, tiling)
    gamma = float(ctx.opts.extra.get("pyramid_gamma", PYRAMID_GAMMA))
    var = PyramidImage(resize(x.detach(), shape), ctx.opts.pyramid, gamma)
    del x
    optimizer = _make_optimizer(ctx.opts, var, tiling is not None)
    objective = _objective(ctx, terms) if tiling is None else _tiled_objective(ctx, terms, tiling)
    finish = _Finish.start(ctx, weights, var.image().detach()) if tiling is None else None
    for i in range(count):
        ctx.step += 1
        last = i == count - 1
        losses, image = _evaluate_and_step(ctx, objective, var, optimizer, _want_image(ctx, last))
        if not math.isfinite(losses["total"]):
            raise NonFiniteLossError(
                f"the objective became {losses['total']} at step {ctx.step} (weights {weights}); "
                "lower style_weight/content_weight or use precision='float32'. "
                "The last finite pastiche is kept.",
                ctx.last_good,
            )
        if image is not None:
            shown = image if ctx.controls is None else ctx.controls.shown(image)  # luminance: content's chroma
            ctx.last_good, ctx.last_image_at = to_numpy(shown), time.perf_counter()
        yield Progress(
            step=ctx.step,
            total=ctx.total,
            losses=losses,
            image=ctx.last_good if image is not None else None,
            level=level,
            levels=len(ctx.shapes),
            shape=shape,
            elapsed=time.perf_counter() - ctx.t0,
            weights=weights,
            device=str(ctx.device),
            last_of_level=last,
            size=max(ctx.shapes[-1]),
            precision="bfloat16" if ctx.dtype is not None else "float32",
            tile_size=tiling.size if tiling is not None else 0,
            note=ctx.memory_note,
        )
        if finish is not None and finish.due(losses["total"]) and not last:
            ctx.finished_from = (ctx.dtype, ctx.plan)
            _set_plan(ctx, None, ctx.float32_plan or network_plan(ctx.device, None))
            objective = _objective(ctx, terms)
            restart = getattr(optimizer, "restart_reference", None)
            if restart is not None:
                restart()  # the objective's value jumps by up to bfloat16's error: no step is judged across it
            finish = None
    return var.detached()


def _set_plan(ctx: _Run, dtype: torch.dtype | None, plan: NetworkPlan) -> None:
    ctx.dtype, ctx.plan = dtype, plan
    ctx.net.set_lean_pool(plan.lean_pool)
    ctx.net.set_winograd(plan.winograd)


#: a bfloat16 level goes on in float32 once the objective's decrease per evaluation (best so far,
#: over the last FINISH_WINDOW evaluations) falls below FINISH_FACTOR times bfloat16's resolution:
#: the objective that bfloat16's rounding alone makes (see _Finish)
FINISH_WINDOW = 10
FINISH_FACTOR = 1.0


class _Finish:
    """When a bfloat16 level goes on in float32 (the objective's formulas unchanged; only the
    network's number format changes).

    bfloat16 keeps 8 bits of each value: the network's features are off by ~0.4 % of themselves,
    so near the optimum the objective and its gradient are those of a slightly different problem
    and the run stalls above the float32 objective's minimum. The *resolution* ``r`` is measured
    at the level's start: the objective of the bfloat16 features against the float32 features of
    the same image as targets (``a * L_content(F16, F32) + b * sum_l w_l L_GM(G(F16), G(F32))``),
    one forward pass in each precision without gradients. Once the objective falls by less than
    ``FINISH_FACTOR * r`` per evaluation (its best value, over the last ``FINISH_WINDOW``
    evaluations), bfloat16 has nothing more to give: the level goes on in float32, with the float32
    plan measured on this machine. ``Options.extra["finish"]``: ``"off"`` never, an int N after the
    level's N-th evaluation (both only to measure); ``extra["finish_factor"]``: the factor.
    """

    def __init__(self, resolution: float, factor: float, window: int, at: int | None) -> None:
        self.resolution, self.factor, self.window, self.at = resolution, factor, window, at
        self.best: list[float] = []

    @classmethod
    def start(cls, ctx: _Run, weights: dict[str, float], g: torch.Tensor) -> _Finish | None:
        """The level's switch, or None where it runs float32 already (or it is switched off)."""
        mode = ctx.opts.extra.get("finish", "auto")
        if ctx.dtype is None or mode == "off" or ctx.opts.optimizer != "lbfgs":
            return None
        if mode != "auto":
            return cls(0.0, 0.0, FINISH_WINDOW, int(mode))
        factor = float(ctx.opts.extra.get("finish_factor", FINISH_FACTOR))
        return cls(_bf16_resolution(ctx, weights, g), factor, FINISH_WINDOW, None)

    def due(self, total: float) -> bool:
        """After each evaluation (its objective ``total``): whether to go on in float32 now."""
        self.best.append(min(total, self.best[-1]) if self.best else total)
        n = len(self.best)
        if self.at is not None:
            return n >= self.at
        if n <= self.window:
            return False
        progress = (self.best[-1 - self.window] - self.best[-1]) / self.window
        return progress < self.factor * self.resolution


def _bf16_resolution(ctx: _Run, weights: dict[str, float], g: torch.Tensor) -> float:
    """The objective bfloat16's rounding alone makes at image ``g``: bfloat16 features against
    the float32 features of ``g`` as targets, with the level's weights (see :class:`_Finish`)."""
    dtype, plan = ctx.dtype, ctx.plan
    with torch.no_grad():
        _set_plan(ctx, None, ctx.float32_plan or network_plan(ctx.device, None))
        f32 = ctx.net(g)
        _set_plan(ctx, dtype, plan)
        with _autocast(ctx.device, dtype):
            f16 = ctx.net(g.contiguous(memory_format=torch.channels_last) if plan.channels_last else g)
        content = torch.zeros((), device=g.device)
        for n in ctx.opts.content_layers:
            content = content + content_loss(f16[n], f32[n])
        style = torch.zeros((), device=g.device)
        for n, w in ctx.layer_w.items():
            ch, m = f32[n].shape[1], f32[n].shape[2] * f32[n].shape[3]
            style = style + w * gram_loss(gram(f16[n]), gram(f32[n]), ch, m)
        return float(weights.get("content", 0.0) * content + weights.get("style", 0.0) * style)


def _out_of_memory(
    content_shape: tuple[int, int],
    shape: tuple[int, int],
    opts: Options,
    size: int,
    device: torch.device,
    dtype: torch.dtype | None,
    what: str,
) -> DeviceMemoryError:
    """The error for an out-of-memory half-way (the estimate was too low, or something else took
    the memory): the run's memory is freed by now; suggest a size that fits what is free now."""
    gc.collect()
    empty_cache(device)  # MPS and CUDA: the cached blocks of the failed run back to the device first
    avail = available_memory(device)
    history = int(opts.extra.get("history_size", LBFGS_HISTORY))
    fit = (
        largest_fitting_size(content_shape, avail, opts.network, dtype, opts.optimizer, history, device.type)
        if avail is not None
        else 0
    )
    if fit >= size or fit == 0:
        fit = max(1, int(size * OOM_SIZE_FACTOR))
    return DeviceMemoryError(
        f"ran out of memory on {device} at {shape[0]}x{shape[1]} px ({what}); use size={fit} or less"
        + _bf16_hint(device, dtype),
        fit,
    )


def _objective(ctx: _Run, terms: list[Any]) -> Objective:
    """The objective of one level as a function of the image, as a CUDA graph where that pays."""

    def fn(g: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with _autocast(ctx.device, ctx.dtype):
            feats = ctx.net(g.contiguous(memory_format=torch.channels_last) if ctx.plan.channels_last else g)
        return evaluate(terms, feats, g)

    graph = ctx.device.type == "cuda" and bool(ctx.opts.extra.get("cuda_graph", True))  # off only to measure it
    return Objective(fn, graph=graph)


def _tiling(ctx: _Run, shape: tuple[int, int]) -> tiles.Tiling | None:
    """The level's tiling: None where the level is no larger than a tile (or the run is not tiled)."""
    if ctx.tile_size is None or max(shape) <= ctx.tile_size:
        return None
    stride = memory.tile_stride(ctx.net.model, ctx.opts.layers)
    halo = int(ctx.opts.extra.get("tile_halo", memory.tile_halo(ctx.net.model, ctx.opts.layers)))  # to measure
    return tiles.Tiling(ctx.tile_size, halo, stride)


def _tiled_objective(ctx: _Run, terms: list[Any], tiling: tiles.Tiling) -> tiles.TiledObjective:
    """The level's whole-image objective evaluated tile by tile (two passes) on a fixed grid.
    ``extra["tile_shift"] = "random"`` moves the grid by a seeded random offset every evaluation
    (only the halo's approximation then changes under L-BFGS's curvature pairs; docs/tiles.md),
    kept to measure."""

    def forward(g: torch.Tensor) -> dict[str, torch.Tensor]:
        with _autocast(ctx.device, ctx.dtype):
            out: dict[str, torch.Tensor] = ctx.net(
                g.contiguous(memory_format=torch.channels_last) if ctx.plan.channels_last else g
            )
        return out

    moving = ctx.opts.extra.get("tile_shift") == "random"
    offset = (lambda: tiling.random_offset(ctx.gen)) if moving else (lambda: (0, 0))
    return tiles.TiledObjective(forward, terms, tiling, ctx.net.model, offset)


def _evaluate_and_step(
    ctx: _Run,
    objective: Objective | tiles.TiledObjective,
    var: PyramidImage,
    optimizer: Any,
    want_image: bool,
) -> tuple[dict[str, float], torch.Tensor | None]:
    """One objective evaluation (+ the optimiser's update); losses and, if wanted, the image evaluated."""
    out: dict[str, Any] = {}
    clamp_in_graph = ctx.opts.extra.get("clamp", "inplace") == "graph"  # measurement only

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        if clamp_in_graph:
            # G = clamp(x, 0, 1) inside the graph (measurement only): consistent curvature pairs, but
            # a pixel pushed past 0 or 1 gets no gradient and stays there (a black content never moves)
            g = var.image().clamp(0.0, 1.0)
        else:
            var.project_()  # the textbook's way: project G onto [0, 1] before evaluating
            g = var.image()
        total, parts, grad = objective(g)
        torch.autograd.backward(g, grad)  # d total / d G, on through the pyramid to the optimiser's variables
        out["parts"], out["total"] = parts, total
        out["image"] = g.detach().clone() if want_image else None
        return total

    optimizer.step(closure)
    # every scalar of this evaluation in one device-to-host transfer (one synchronisation)
    names = list(out["parts"])
    values = torch.stack([out["total"].float(), *(out["parts"][n].float() for n in names)]).tolist()
    losses = dict(zip(names, values[1:], strict=True))
    losses["total"] = values[0]
    return losses, out["image"]
