"""The optimisation loop: a generator that yields one :class:`Progress` per objective evaluation.

The widget, the command line and the Python API all drive :func:`run`. Closing the generator
stops the work within one evaluation and frees the device memory. However the run ends (finished,
closed, interrupted, or an error after its first evaluation), ``run``'s ``keep`` callback gets the
image of the last finished evaluation as a :class:`~napari_nst.core.records.Pastiche`; ``resume``
continues a run from such a pastiche.
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

from napari_nst.core.compute import memory, tune
from napari_nst.core.compute.device import (
    NetworkPlan,
    apply_network_plan,
    autocast_dtype,
    available_memory,
    cudnn_benchmark,
    empty_cache,
    is_oom,
    lbfgs_history_dtype,
    native_bf16,
    network_plan,
    pick_device,
    resize_on_host,
)
from napari_nst.core.compute.memory import (
    LBFGS_HISTORY,
    MEMORY_HEADROOM,
    TILED_HISTORY,
)
from napari_nst.core.encoder.vgg import VGGFeatures, build_vgg
from napari_nst.core.errors import DeviceMemoryError, NonFiniteLossError, OptionError
from napari_nst.core.image.arrays import to_rgb_float
from napari_nst.core.image.tensors import resize, to_numpy, to_tensor
from napari_nst.core.objective import statistics, tiles
from napari_nst.core.objective.controls import Controls
from napari_nst.core.objective.graphed import Objective
from napari_nst.core.objective.losses import (
    ContentTerm,
    StyleTarget,
    StyleTerm,
    TVTerm,
    content_loss,
    evaluate,
    gram,
    gram_loss,
    gram_taps,
)
from napari_nst.core.objective.weights import auto_style_weight, resolve_weights
from napari_nst.core.optim import levers, probe
from napari_nst.core.optim.lbfgs import LBFGS
from napari_nst.core.optim.levers import Levers
from napari_nst.core.optim.masked import Restyle
from napari_nst.core.optim.pyramid import PyramidImage
from napari_nst.core.options import Options, split_steps
from napari_nst.core.records import Pastiche, Progress

#: the largest change of any pixel one L-BFGS step may make (image units, [0, 1]; see lbfgs.py)
LBFGS_MAX_CHANGE = 0.25

#: weight of each coarser pyramid layer relative to the one below it (``Options.pyramid``)
PYRAMID_GAMMA = 0.5

#: Adam's step size (image units per step; ``optimizer="adam"``, a departure from the paper)
ADAM_LR = 0.02

#: after an out-of-memory half-way, when the free memory says nothing better: suggest this
#: fraction of the size that failed
OOM_SIZE_FACTOR = 0.7


# --------------------------------------------------------------------------- memory
# The model itself is torch-free (core/compute/memory.py, which the widget uses before a run); here
# with ``dtype`` a torch dtype (None: float32).


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
    """Bytes a whole-image run at working ``shape`` needs (:func:`napari_nst.core.compute.memory.estimate_memory`)."""
    return memory.estimate_memory(shape, model, _dtype_name(dtype), optimizer, history, device_type)


def largest_fitting_size(
    content_shape: tuple[int, int],
    available: int,
    model: str = "vgg19",
    dtype: torch.dtype | None = None,
    optimizer: str = "lbfgs",
    history: int = LBFGS_HISTORY,
    device_type: str = "cpu",
) -> int:
    """The largest long edge (px) whose whole-image run fits (:func:`.memory.largest_fitting_size`)."""
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
    history = levers.current().history_size or LBFGS_HISTORY
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
    """The run's :class:`~napari_nst.core.compute.memory.MemoryPlan` (whole image, or tiles when that does
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
    controls: Any = None  # several styles, regions, colours, strength (core/objective/controls.py); None: the paper's
    # hooks for a caller that runs many images with one context (core/stack/engine.py): style Gram
    # matrices memoised by the style's working shape, and extra terms for a level's shape
    style_grams: dict[Any, dict[str, torch.Tensor]] | None = None
    extra_terms: Callable[[tuple[int, int]], list[Any]] | None = None
    tile_size: int | None = None  # evaluate levels larger than this in tiles (core/objective/tiles.py); None: whole
    memory_note: str = ""  # the records' note: why the run is tiled (the engine chose it), the plan measured
    levers: Levers = field(default_factory=levers.current)  # what a measurement switched (optim/levers.py)
    held: _Held | None = None  # the last finished evaluation's image, kept on the device (see pastiche)
    resume: Pastiche | None = None  # continue from this pastiche (its step) instead of the start
    float32_plan: NetworkPlan | None = None  # the plan a bfloat16 level finishes in (_Finish; None: it does not)
    # whether the memory plan lets small levels keep the Winograd kernels (core/compute/memory.py,
    # KEEP_KERNELS_BELOW; False: every level makes them at each call)
    keep_kernels: bool = True
    finished_from: tuple[torch.dtype | None, NetworkPlan] | None = None  # the level's own, after a switch
    # options changed during the run (core/live.py): the mailbox read before each evaluation, the
    # images as given (to build the controls again), and the level's targets kept for a rebuild
    updates: Any = None
    sources: tuple[np.ndarray, Any] | None = None
    targets_memo: dict[Any, Any] | None = None
    restyle: Restyle | None = None  # a mask: only its pixels change (core/optim/masked.py); None: every pixel

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
    grams: Any = None,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], Any, dict[str, tuple[int, int]]]:
    """Content features, style Gram matrices (``grams`` if given; another ``style_loss``: the
    style's :class:`~napari_nst.core.objective.statistics.StyleStats`, the sliced loss's
    directions drawn from ``seed`` and the level's shape) and the pastiche's (N_l, M_l), without autograd."""
    # The targets are computed once per level, so they cost nothing to compute in float32: the
    # objective is then exactly the float32 one, whatever precision the evaluations run in.
    with torch.no_grad():
        cf = net(content)
        if grams is None:
            sf = net(style)
            if opts.style_loss == "gram":
                grams = {n: gram(sf[n]) for n in opts.style_layers}
            else:
                shape = (int(content.shape[-2]), int(content.shape[-1]))
                grams = statistics.style_stats(opts.style_loss, sf, opts.style_layers, seed, shape)
    nm = {n: (cf[n].shape[1], cf[n].shape[2] * cf[n].shape[3]) for n in opts.style_layers}
    return {n: cf[n].float() for n in opts.content_layers}, grams, nm


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return nullcontext()
    # no cast cache: each weight is cast once per evaluation anyway, and a CUDA graph must not
    # keep casts made during its capture in a cache that is cleared afterwards
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)


def _make_optimizer(opts: Options, var: PyramidImage, lv: Levers, tiled: bool = False) -> Any:
    """The optimiser: ``step(closure)`` evaluates the objective once and moves ``var``."""
    if opts.optimizer == "adam":
        # Departure from the paper (an option): Gatys et al. use L-BFGS.
        return torch.optim.Adam(var.params, lr=ADAM_LR)
    # tiled: a shorter history, since its pairs are image-sized whatever the tile (docs/tiles.md)
    history = lv.history_size or (TILED_HISTORY if tiled else LBFGS_HISTORY)
    if lv.lbfgs == "torch":  # torch's L-BFGS, only to measure what ours buys
        return torch.optim.LBFGS(
            var.params, lr=1.0, max_iter=1, max_eval=1, history_size=history, tolerance_grad=0.0, tolerance_change=0.0
        )
    stored = lv.history_dtype  # set only to measure what the default saves
    return LBFGS(
        var.params,
        history,
        max_change=LBFGS_MAX_CHANGE if lv.max_change is None else lv.max_change,
        image_change=var.change,
        history_dtype=lbfgs_history_dtype(var.params[0].device) if stored is None else getattr(torch, stored),
    )


@dataclass(frozen=True)
class _Held:
    """The image of the last finished evaluation, as evaluated (on the device; no copy to the
    host until the run ends), its step, losses and level; ``recorded``: the host copy when that
    evaluation's record carried one already."""

    image: torch.Tensor
    step: int
    losses: dict[str, float]
    level: int
    shape: tuple[int, int]
    recorded: np.ndarray | None


def pastiche(ctx: _Run) -> Pastiche | None:
    """The last finished evaluation's pastiche (None before the first): copied to the host here,
    once (nothing when its record carried the image already)."""
    held = ctx.held
    if held is None:
        return None
    image = held.recorded
    if image is None:
        image = to_numpy(_shown(ctx, held.image))
    luminance = ctx.controls is not None and ctx.controls.chroma is not None
    return Pastiche(
        state=to_numpy(held.image) if luminance else None,  # the network's image: resume from it
        image=image,
        step=held.step,
        total=ctx.total,
        losses=dict(held.losses),
        level=held.level,
        levels=len(ctx.shapes),
        shape=held.shape,
        size=max(ctx.shapes[-1]),
    )


def _shown(ctx: _Run, image: torch.Tensor) -> torch.Tensor:
    """An evaluated image as recorded: in luminance mode with the content's chroma; with a mask,
    composited with the kept image (exactly it outside the mask)."""
    shown = image if ctx.controls is None else ctx.controls.shown(image)
    return shown if ctx.restyle is None else ctx.restyle.shown(shown)


def _hand_back(ctx: _Run, keep: Callable[[Pastiche], None] | None) -> None:
    """Give ``keep`` the run's newest pastiche on the way out; never masks the error ending the run."""
    if keep is None:
        return
    try:
        found = pastiche(ctx)
    except Exception:  # e.g. the device failed: the error that ended the run is what matters
        return
    if found is not None:
        keep(found)


def run(
    content: np.ndarray,
    style: Any,
    opts: Options,
    keep: Callable[[Pastiche], None] | None = None,
    resume: Pastiche | None = None,
    updates: Any = None,
) -> Iterator[Progress]:
    """Stylise ``content`` (float32 (H, W, 3) in [0, 1]) with ``style`` (one such image or a
    list); yield per evaluation.

    ``keep``: called once when the run ends, however it ends (finished, the generator closed, an
    exception such as KeyboardInterrupt or an error after the first evaluation), with the last
    finished evaluation's :class:`Pastiche`; not called when it ends before its first evaluation.
    ``resume``: continue a run of the same inputs and options from this pastiche: its remaining
    evaluations, starting from its image at its level (settings are the caller's to compare:
    :mod:`napari_nst.core.resume`; the evaluation count and the level's shape are checked here).
    The optimiser's history starts empty.
    ``updates``: a :class:`napari_nst.core.live.Updates` mailbox of options changed during the run
    (checked already, :data:`napari_nst.core.live.LIVE_OPTIONS` only), applied before the next
    evaluation (see :func:`_apply_update`).

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
    if resume is not None:
        resume_point(resume, shapes, counts)  # before any work
    mplan = plan_memory(content.shape[:2], shapes[-1], opts, device, dtype, styles)
    ctx = _prepare(content, style, opts, device, dtype, shapes, counts, tune_shape=_tuned_shape(shapes[-1], mplan))
    ctx.keep_kernels = mplan.kernels
    if ctx.dtype != dtype and not _same_memory_plan(content.shape[:2], shapes[-1], opts, ctx, mplan, styles):
        _static_plan(ctx, dtype)  # the measured precision would need another memory plan: keep the static one
    if ctx.dtype is not None and not _same_memory_plan(content.shape[:2], shapes[-1], opts, ctx, mplan, styles, None):
        ctx.float32_plan = None  # finishing in float32 (more memory) would not fit the plan: stay in bfloat16
    ctx.tile_size = mplan.tile_size
    ctx.restyle = _restyle(content, opts, shapes[-1])  # a mask (not in the paper): core/optim/masked.py
    ctx.memory_note = "; ".join(n for n in (mplan.text if mplan.auto else "", ctx.memory_note) if n)
    ctx.resume = resume
    if updates is not None:
        _take_updates(ctx, updates, content, style)
    records = _levels(ctx, keep)
    del ctx  # held by the records alone: freed with them, before an out-of-memory error is made
    yield from guard_memory(records, content.shape[:2], shapes[-1], opts, device, dtype)


def guard_memory(
    records: Iterator[Progress],
    content_shape: tuple[int, int],
    shape: tuple[int, int],
    opts: Options,
    device: torch.device,
    dtype: torch.dtype | None,
) -> Iterator[Progress]:
    """``records`` (a run's levels, a stack's frames) in cuDNN's benchmark mode; when they end
    (done, failed or closed) the device's cached memory goes back, and an allocation failure
    becomes :class:`DeviceMemoryError` naming a size that fits what is free once the run is freed.
    For that the caller keeps no reference to the run's network and pictures, only ``records``."""
    oom = None
    try:
        with cudnn_benchmark(device):
            yield from records
    except DeviceMemoryError:
        raise
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc):
            raise
        # text only: the exception's traceback would keep the failed run's tensors alive
        oom = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        empty_cache(device)
    if oom is not None:
        assert opts.size is not None  # for_device filled it in
        raise _out_of_memory(content_shape, shape, opts, opts.size, device, dtype, oom)


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
    plan measured on this machine (core/compute/tune.py: cached, or timed now); None: the static rules."""
    where = torch.device("cpu") if resize_on_host(device) else device
    controls, content, style = Controls.build(content, style, opts, where)  # None without controls
    layer_w = _layer_weights(opts)
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
    # the plan a bfloat16 run finishes in (_Finish): the fastest float32 plan that keeps no Winograd
    # kernels, whose 151 MB (VGG16) would come on top of a run sized for bfloat16 for the few
    # evaluations of the finish (measured: docs/benchmarks.md, the memory rows)
    f32 = decision.table.choose("float32", kernels=False) if decision.table is not None else None
    float32_plan = _with_knobs(f32.plan if f32 is not None else network_plan(device, None), opts)
    apply_network_plan(net, plan)
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


def _layer_weights(opts: Options) -> dict[str, float]:
    """The weight ``w_l`` of each style layer: ``style_layer_weights``, else equal, summing to 1."""
    if opts.style_layer_weights is None:
        return {n: 1.0 / len(opts.style_layers) for n in opts.style_layers}
    return dict(zip(opts.style_layers, opts.style_layer_weights, strict=True))


def _restyle(content: np.ndarray, opts: Options, final: tuple[int, int]) -> Restyle | None:
    """The mask's settings (None without one): the image kept outside it is ``init`` where that is
    an image (Continue: the pastiche repainted), else the content."""
    if opts.mask is None:
        return None
    keep = to_rgb_float(opts.init, name="init") if isinstance(opts.init, np.ndarray) else content
    return Restyle.build(opts.mask, keep, final, gray=opts.preserve_color == "luminance")


def _with_knobs(plan: NetworkPlan, opts: Options) -> NetworkPlan:
    """``plan`` with the levers a measurement set (optim/levers.py; they win over the rules and the tuner)."""
    lv = levers.current()
    for knob in ("channels_last", "lean_pool", "winograd", "winograd_wide"):  # only to measure what each buys
        if getattr(lv, knob) is not None:
            plan = dataclasses.replace(plan, **{knob: bool(getattr(lv, knob))})
    if lv.winograd_min is not None:
        plan = dataclasses.replace(plan, winograd_min=int(lv.winograd_min))
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
    *dtype: torch.dtype | None,
) -> bool:
    """Whether the run's memory plan (whole image or tiles of a size) holds in ``ctx.dtype`` (or
    in ``dtype``, if given) too."""
    try:
        other = plan_memory(content_shape, shape, opts, ctx.device, dtype[0] if dtype else ctx.dtype, styles)
    except (DeviceMemoryError, OptionError):
        return False
    return other.tile_size == mplan.tile_size


def _static_plan(ctx: _Run, dtype: torch.dtype | None) -> None:
    """Back to the static rules' precision and plan (device.network_plan)."""
    ctx.dtype, ctx.plan = dtype, _with_knobs(network_plan(ctx.device, dtype), ctx.opts)
    apply_network_plan(ctx.net, ctx.plan)
    ctx.memory_note = ""


def _first_image(ctx: _Run) -> torch.Tensor:
    opts, shape = ctx.opts, ctx.shapes[0]
    if isinstance(opts.init, np.ndarray):
        init = to_rgb_float(opts.init, name="init")
        return ctx.resized(to_tensor(init, ctx.content.device), shape)
    if opts.init == "noise":
        return torch.rand(1, 3, *shape, generator=ctx.gen).to(ctx.device)
    if opts.init == "preview":
        return ctx.resized(to_tensor(_preview(ctx, shape), ctx.content.device), shape)
    return ctx.resized(ctx.content, shape)


def _preview(ctx: _Run, shape: tuple[int, int]) -> np.ndarray:
    """The instant preview (core/preview.py) at ``shape``, of the images as the network sees them
    (in luminance mode gray, in histogram mode the styles' colours matched): the start the
    optimisation would look for."""
    from napari_nst.core.preview import paint

    ctl = ctx.controls
    styles = [to_numpy(s) for s in ctl.styles] if ctl is not None else [to_numpy(ctx.style)]
    regions = None if ctl is None else ctl.regions
    opts = dataclasses.replace(ctx.opts, preserve_color=None, regions=regions, region_styles=None)
    if ctl is not None:
        opts.region_styles = ctl.mapping
    return paint(to_numpy(ctx.content), styles, shape, opts)


def _levels(ctx: _Run, keep: Callable[[Pastiche], None] | None = None) -> Iterator[Progress]:
    """The run's levels, coarse to fine (from where a resumed run stopped); however they end
    (finished, closed, interrupted, failed), ``keep`` gets the newest pastiche on the way out."""
    try:
        first, done, x, carried = _start(ctx)
        for level, (shape, count) in enumerate(zip(ctx.shapes, ctx.counts, strict=True), start=1):
            if level < first:
                continue  # done before the run was resumed
            if level > first or carried:
                x = _next_level_start(ctx, x, shape)
            todo = count - (done if level == first else 0)
            x = yield from _level(ctx, level, shape, todo, x)  # the next level starts from this one's result
    finally:
        _hand_back(ctx, keep)
        ctx.net.release_transforms()


def _start(ctx: _Run) -> tuple[int, int, torch.Tensor, bool]:
    """Where the run starts: (level, its evaluations already made, image, whether the image is
    the previous level's result, to be carried up to the level's size first)."""
    if ctx.resume is None:
        x = _first_image(ctx)
        if ctx.controls is not None:
            x = ctx.controls.network_image(x, ctx.opts.init)
        return 1, 0, x, False
    level, done, carried = resume_point(ctx.resume, ctx.shapes, ctx.counts)
    state = ctx.resume.state if ctx.resume.state is not None else ctx.resume.image
    x = to_tensor(np.asarray(state, dtype=np.float32), ctx.device)
    if ctx.controls is not None and ctx.resume.state is None:  # luminance mode: the pastiche's luminance
        x = ctx.controls.network_image(x, ctx.resume.image)
    ctx.step = ctx.resume.step
    return level, done, x, carried


def resume_point(resume: Pastiche, shapes: list[tuple[int, int]], counts: list[int]) -> tuple[int, int, bool]:
    """Where a run of levels ``shapes`` with ``counts`` evaluations continues from ``resume``:
    (level, evaluations of it already made, whether ``resume`` is the previous level's result).
    Raises :class:`OptionError` when the pastiche cannot belong to such a run."""
    total, k = sum(counts), int(resume.step)
    size = max(shapes[-1])
    if int(resume.total) != total or (resume.size and int(resume.size) != size):
        raise OptionError(
            f"cannot resume: the saved run makes {resume.total} evaluations at {resume.size} px, this one "
            f"{total} at {size} px; give size={resume.size} and steps={resume.total} as the saved run had "
            "them (left empty, both depend on the device)"
        )
    if not 1 <= k < total:
        raise OptionError(
            f"cannot resume: the saved pastiche is at step {k} of {total}; "
            + ("the run is complete, nothing is left to do" if k >= total else "it has no finished evaluation")
        )
    end = 0
    for level, count in enumerate(counts, start=1):
        begin, end = end, end + count
        if k < end:
            carried = k == begin  # the previous level's last evaluation
            made_at = level - 1 if carried else level
            want = shapes[made_at - 1]
            got = tuple(int(n) for n in np.shape(resume.image)[:2])
            if got != tuple(want) or int(resume.level) != made_at:
                raise OptionError(
                    f"cannot resume: step {k} is made at level {made_at} of {len(shapes)} ({want[0]}x{want[1]} px) "
                    f"in this run, but the saved pastiche is {got[0]}x{got[1]} px at level {resume.level} of "
                    f"{resume.levels}; resume with the settings the saved run had (scales, size, steps)"
                )
            return level, k - begin, carried
    raise AssertionError("unreachable: k < total")


def _next_level_start(ctx: _Run, x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Where a coarse-to-fine level starts: the content at ``shape`` plus the change the coarser
    level made to its own content, enlarged (``c + up(x - down(c))``): the previous result's low
    frequencies, the content's fine detail.

    Not in the paper (which has no levels; an option's detail, ``scales``). The previous result
    merely enlarged is blurred at the new size: the lowest style layers' ReLUs are dead on it, no
    gradient revives them, and at 1024 px it scored worse than the content (34 against 28) and
    the level stalled near 11 while single scale fell to 0.14 (docs/benchmarks.md)."""
    c = ctx.resized(ctx.content, shape)  # the content as the network sees it (controls: colours done)
    change = x - resize(c, (int(x.shape[-2]), int(x.shape[-1])))  # what the coarse level did to its content
    up = F.interpolate(change, size=shape, mode="bilinear", align_corners=False)
    return (c + up).clamp(0.0, 1.0)


def _terms(ctx: _Run, shape: tuple[int, int], tiling: tiles.Tiling | None = None) -> tuple[list[Any], dict[str, float]]:
    """The objective's terms at working ``shape`` (targets and weights of this level);
    ``tiling``: the targets computed tile by tile."""
    opts = ctx.opts
    kept = ctx.targets_memo  # a run whose options may change: the level's targets are computed once
    if kept is not None and shape in kept:
        content_t, grams, nm = kept[shape]
    else:
        content_t, grams, nm = _level_targets(ctx, shape, tiling)
        if kept is not None:
            kept[shape] = (content_t, grams, nm)
    a, style = _style_term(opts, content_t, grams, ctx.layer_w, nm)
    terms: list[Any] = [ContentTerm(content_t, a), style]
    if ctx.controls is not None:  # several styles, regions, style strength (core/objective/controls.py)
        if ctx.controls.wants_floors():  # a balanced blend: how far each style is reached alone
            ctl = ctx.controls
            ctx.controls.set_floors(probe.style_floors(ctx, ctl.styles, ctl.style_shapes, _targets, _style_term))
        terms[1] = ctx.controls.style_term(ctx, shape, terms[1], nm)
    if opts.tv_weight > 0:
        terms.append(TVTerm(opts.tv_weight))
    if ctx.extra_terms is not None:
        terms.extend(ctx.extra_terms(shape))
    return terms, {t.name: float(t.weight) for t in terms}


def _level_targets(
    ctx: _Run, shape: tuple[int, int], tiling: tiles.Tiling | None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, tuple[int, int]]]:
    """The level's content features, the first style's Gram matrices and the pastiche's (N_l, M_l)."""
    opts = ctx.opts
    c = ctx.resized(ctx.content, shape)
    s = ctx.resized(ctx.style, opts.style_shape(ctx.style_shape, shape))
    memo = ctx.style_grams
    known = None if memo is None else memo.get(tuple(s.shape))
    if tiling is None:
        content_t, grams, nm = _targets(ctx.net, c, s, opts, known, ctx.gen.initial_seed())
    else:
        layers = (list(opts.content_layers), list(opts.style_layers))
        content_t, grams, nm = tiles.tiled_targets(
            ctx.net, c, s, tiling, ctx.net.model, *layers, known, loss=opts.style_loss
        )
    if memo is not None:
        memo[tuple(s.shape)] = grams
    return content_t, grams, nm


def _style_term(
    opts: Options,
    content_t: dict[str, torch.Tensor],
    grams: Any,
    layer_w: dict[str, float],
    nm: dict[str, tuple[int, int]],
) -> tuple[float, Any]:
    """The content weight ``a`` and the style term of one style, weight ``b``: the paper's, or
    another ``style_loss``'s (its automatic ``b`` from its own loss at zero features)."""
    if opts.style_loss == "gram":
        a, b = resolve_weights(opts, content_t, grams, layer_w, nm)
        return a, StyleTerm([StyleTarget(grams)], layer_w, b)
    a, _ = resolve_weights(dataclasses.replace(opts, style_weight=1.0), content_t, {}, layer_w, nm)
    term = statistics.blended_term(opts.style_loss, [grams], [1.0], layer_w, nm)
    term.weight = auto_style_weight(opts, term.at_zero())
    return a, term


def _want_image(ctx: _Run, last_of_level: bool) -> bool:
    """Images only where they will be used: the last of each level, and every ``preview_every``-th
    evaluation once ``preview_interval`` seconds have passed since the last record with one."""
    if last_of_level:
        return True
    if ctx.step % ctx.opts.preview_every:
        return False
    return time.perf_counter() - ctx.last_image_at >= ctx.opts.preview_interval


@dataclass
class _LevelState:
    """What a level's evaluations use: its terms and weights, the variable, the optimiser, the
    objective and the bfloat16 level's switch to float32; made anew when options change."""

    terms: list[Any]
    weights: dict[str, float]
    var: PyramidImage
    optimizer: Any
    objective: Any
    finish: _Finish | None

    @classmethod
    def start(cls, ctx: _Run, shape: tuple[int, int], tiling: tiles.Tiling | None, x: torch.Tensor) -> _LevelState:
        """The level's objective from the options now, and a fresh optimiser starting at ``x``."""
        terms, weights = _terms(ctx, shape, tiling)
        var = _variable(ctx, x, shape)
        optimizer = _make_optimizer(ctx.opts, var, ctx.levers, tiling is not None)
        objective = _objective(ctx, terms) if tiling is None else _tiled_objective(ctx, terms, tiling)
        finish = _Finish.start(ctx, weights, var.image().detach()) if tiling is None else None
        return cls(terms, weights, var, optimizer, objective, finish)

    def to_float32(self, ctx: _Run) -> None:
        """The bfloat16 level goes on in float32 (see :class:`_Finish`)."""
        ctx.finished_from = (ctx.dtype, ctx.plan)
        assert ctx.float32_plan is not None  # _Finish.start saw to it
        _set_plan(ctx, None, ctx.float32_plan)
        self.objective = _objective(ctx, self.terms)
        restart = getattr(self.optimizer, "restart_reference", None)
        if restart is not None:
            restart()  # the objective's value jumps by up to bfloat16's error: no step is judged across it
        self.finish = None


def _level(
    ctx: _Run, level: int, shape: tuple[int, int], count: int, x: torch.Tensor
) -> Generator[Progress, None, torch.Tensor]:
    """One coarse-to-fine level: ``count`` evaluations at ``shape`` starting from ``x``."""
    if ctx.finished_from is not None:  # the previous level finished in float32: this one starts as the run does
        _set_plan(ctx, *ctx.finished_from)
        ctx.finished_from = None
    tiling = _tiling(ctx, shape)
    # a large level (or tile) makes the Winograd kernels at every call instead of keeping them
    seen = shape if tiling is None else (min(shape[0], tiling.size), min(shape[1], tiling.size))
    keep = ctx.levers.keep_kernels
    ctx.net.keep_kernels(ctx.keep_kernels and memory.keeps_kernels(seen) if keep is None else keep)
    if ctx.targets_memo is not None:
        ctx.targets_memo.clear()  # the previous level's
    st = _LevelState.start(ctx, shape, tiling, x)
    del x
    for i in range(count):
        applied = ctx.updates.take() if ctx.updates is not None else None
        if applied is not None:  # options changed: the new objective from the current image, a fresh optimiser
            x = _apply_update(ctx, applied[1], st.var.detached())
            del st  # the old optimiser's history goes before the new one is made
            st = _LevelState.start(ctx, shape, tiling, x)
            del x
        ctx.step += 1
        last = i == count - 1
        want = _want_image(ctx, last) or applied is not None  # the first image of the new objective
        losses, image, evaluated = _evaluate_and_step(ctx, st.objective, st.var, st.optimizer, want)
        if not math.isfinite(losses["total"]):
            newest = pastiche(ctx)  # the last finite evaluation's image
            raise NonFiniteLossError(
                f"the objective became {losses['total']} at step {ctx.step} (weights {st.weights}); "
                "lower style_weight/content_weight or use precision='float32'. "
                "The last finite pastiche is kept.",
                newest.image if newest is not None else ctx.last_good,
            )
        if image is not None:
            ctx.last_good, ctx.last_image_at = to_numpy(_shown(ctx, image)), time.perf_counter()
        # one assignment: a KeyboardInterrupt between two bytecodes sees the old or the new, whole
        ctx.held = _Held(evaluated, ctx.step, losses, level, shape, ctx.last_good if image is not None else None)
        yield _record(ctx, losses, image is not None, (level, shape, last), st.weights, tiling, applied)
        if st.finish is not None and st.finish.due(losses["total"]) and not last:
            st.to_float32(ctx)
    return st.var.detached()


def _record(
    ctx: _Run,
    losses: dict[str, float],
    has_image: bool,
    where: tuple[int, tuple[int, int], bool],
    weights: dict[str, float],
    tiling: tiles.Tiling | None,
    applied: tuple[int, dict[str, Any]] | None,
) -> Progress:
    """The record of the evaluation just made (``where``: its level, shape, whether the level's last)."""
    level, shape, last = where
    return Progress(
        step=ctx.step,
        total=ctx.total,
        losses=losses,
        image=ctx.last_good if has_image else None,
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
        update=None if applied is None else dict(applied[1]),
        update_id=0 if applied is None else applied[0],
    )


# --------------------------------------------------------------------------- options changed during the run


def _take_updates(ctx: _Run, updates: Any, content: np.ndarray, style: Any) -> None:
    """Make ``ctx`` ready for options that change during the run: the mailbox, the images as
    given, and memos so that a new objective does not compute the level's targets again."""
    ctx.updates, ctx.sources, ctx.targets_memo = updates, (content, style), {}
    if ctx.controls is not None and ctx.controls.grams_memo is None:
        ctx.controls.grams_memo = {}


def _apply_update(ctx: _Run, changes: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    """Options changed during the run (:data:`napari_nst.core.live.LIVE_OPTIONS`, checked
    already): the run's options, layer weights and controls (several styles, regions, colours,
    strength) made anew; returns the current image ``x`` as the new objective's network sees it
    (it changes only when ``preserve_color`` switches to or from ``luminance``)."""
    assert ctx.sources is not None
    old, colour = ctx.controls, ctx.opts.preserve_color
    ctx.opts = dataclasses.replace(ctx.opts, **changes)
    ctx.layer_w = _layer_weights(ctx.opts)
    where = ctx.content.device
    controls, content, style = Controls.build(*ctx.sources, ctx.opts, where)
    if ctx.opts.preserve_color != colour:  # the content and styles as the network sees them change
        ctx.content, ctx.style = to_tensor(content, where), to_tensor(style, where)
        if ctx.targets_memo is not None:  # the targets go; bfloat16's resolution (an estimate of its
            # rounding, of the same network on a recoloured image) is kept: two network passes fewer
            for key in [k for k in ctx.targets_memo if not (isinstance(k, tuple) and k[:1] == ("bf16",))]:
                del ctx.targets_memo[key]
        x = _recoloured(old, controls, x)
        if ctx.restyle is not None:  # the kept image as the network sees it changes too
            ctx.restyle = _restyle(ctx.sources[0], ctx.opts, ctx.shapes[-1])
        if ctx.held is not None:  # the pastiche handed back if the run ends now, in the new terms
            ctx.held = dataclasses.replace(ctx.held, image=_recoloured(old, controls, ctx.held.image))
    elif old is not None and controls is not None:
        controls.grams_memo = old.grams_memo  # the same style images: their Gram matrices hold
    if controls is not None and controls.grams_memo is None:
        controls.grams_memo = {}
    ctx.controls = controls
    return x


def _recoloured(old: Controls | None, new: Controls | None, x: torch.Tensor) -> torch.Tensor:
    """The network's image ``x`` under ``old`` controls as the network sees it under ``new``: out
    of luminance mode, the pastiche as shown (the luminance with the content's chroma); into it,
    the pastiche's luminance."""
    if old is not None and old.chroma is not None:
        x = old.shown(x)
    if new is not None and new.chroma is not None:
        x = Controls.luminance_image(x)
    return x


def _variable(ctx: _Run, x: torch.Tensor, shape: tuple[int, int]) -> PyramidImage:
    """The level's variable, starting from ``x`` resized to ``shape``; with a mask the image it
    evaluates is the kept image outside it (core/optim/masked.py)."""
    gamma = PYRAMID_GAMMA if ctx.levers.pyramid_gamma is None else ctx.levers.pyramid_gamma
    keep: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    if ctx.restyle is not None:
        weight, keep, _ = ctx.restyle.at(shape, ctx.device)
    return PyramidImage(resize(x.detach(), shape), ctx.opts.pyramid, gamma, keep, weight)


def _set_plan(ctx: _Run, dtype: torch.dtype | None, plan: NetworkPlan) -> None:
    ctx.dtype, ctx.plan = dtype, plan
    apply_network_plan(ctx.net, plan)


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
    plan measured on this machine. Levers (optim/levers.py, only to measure): ``finish`` "off" never,
    an int N after the level's N-th evaluation; ``finish_factor`` the factor.
    """

    def __init__(self, resolution: float, factor: float, window: int, at: int | None) -> None:
        self.resolution, self.factor, self.window, self.at = resolution, factor, window, at
        self.best: list[float] = []

    @classmethod
    def start(cls, ctx: _Run, weights: dict[str, float], g: torch.Tensor) -> _Finish | None:
        """The level's switch, or None where it runs float32 already (or it is switched off)."""
        mode = ctx.levers.finish
        if ctx.dtype is None or ctx.float32_plan is None or mode == "off" or ctx.opts.optimizer != "lbfgs":
            return None
        if mode != "auto":
            return cls(0.0, 0.0, FINISH_WINDOW, int(mode))
        factor = FINISH_FACTOR if ctx.levers.finish_factor is None else ctx.levers.finish_factor
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


#: the key of ``_bf16_parts``' style part when it is the layers' weighted sum already (another
#: ``style_loss``: its statistics are not split by layer; a live change of the layer weights then
#: keeps the level's resolution as measured, an estimate either way)
WEIGHED = ""


def _bf16_resolution(ctx: _Run, weights: dict[str, float], g: torch.Tensor) -> float:
    """The objective bfloat16's rounding alone makes at image ``g``: bfloat16 features against
    the float32 features of ``g`` as targets, with the level's weights (see :class:`_Finish`).
    A run whose options may change keeps the unweighted parts for the level (``targets_memo``):
    a new objective weighs them again instead of evaluating the network twice more."""
    memo, key = ctx.targets_memo, ("bf16", tuple(g.shape[-2:]))
    if memo is not None and key in memo:
        content, style = memo[key]
    else:
        content, style = _bf16_parts(ctx, g)
        if memo is not None:
            memo[key] = (content, style)
    styled = style[WEIGHED] if WEIGHED in style else sum(w * style[n] for n, w in ctx.layer_w.items())
    return float(weights.get("content", 0.0) * content + weights.get("style", 0.0) * styled)


def _bf16_parts(ctx: _Run, g: torch.Tensor) -> tuple[float, dict[str, float]]:
    """The content loss and each style layer's Gram loss of ``g``'s bfloat16 features against its
    float32 features (unweighted)."""
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
        if ctx.opts.style_loss != "gram":  # the run's own style loss against f32's statistics, weighted already
            total = statistics.resolution_style(ctx.opts.style_loss, f16, f32, ctx.layer_w, ctx.gen.initial_seed())
            both = torch.stack([content.float(), torch.as_tensor(total).float()]).tolist()
            return both[0], {WEIGHED: both[1]}
        style = []
        for n in ctx.opts.style_layers:
            ch, m = f32[n].shape[1], f32[n].shape[2] * f32[n].shape[3]
            style.append(gram_loss(gram(f16[n]), gram(f32[n]), ch, m))
        values = torch.stack([content.float(), *(v.float() for v in style)]).tolist()  # one transfer
    return values[0], dict(zip(ctx.opts.style_layers, values[1:], strict=True))


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
    history = levers.current().history_size or LBFGS_HISTORY
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

    keep = ctx.controls.composite if ctx.controls is not None else None  # regions mapped to None: the content
    taps = gram_taps(terms)  # the Gram matrices made as the network goes (VGGFeatures.forward: less memory)

    def fn(g: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        g = keep(g) if keep is not None else g
        with _autocast(ctx.device, ctx.dtype):
            feats = ctx.net(g.contiguous(memory_format=torch.channels_last) if ctx.plan.channels_last else g, taps)
        return evaluate(terms, feats, g)

    graph = ctx.device.type == "cuda" and ctx.levers.cuda_graph
    return Objective(fn, graph=graph)


def _tiling(ctx: _Run, shape: tuple[int, int]) -> tiles.Tiling | None:
    """The level's tiling: None where the level is no larger than a tile (or the run is not tiled)."""
    if ctx.tile_size is None or max(shape) <= ctx.tile_size:
        return None
    stride = memory.tile_stride(ctx.net.model, ctx.opts.layers)
    halo = ctx.levers.tile_halo
    if halo is None:
        halo = memory.tile_halo(ctx.net.model, ctx.opts.layers)
    return tiles.Tiling(ctx.tile_size, halo, stride)


def _tiled_objective(ctx: _Run, terms: list[Any], tiling: tiles.Tiling) -> tiles.TiledObjective:
    """The level's whole-image objective evaluated tile by tile (two passes) on a fixed grid."""

    def forward(g: torch.Tensor) -> dict[str, torch.Tensor]:
        with _autocast(ctx.device, ctx.dtype):
            out: dict[str, torch.Tensor] = ctx.net(
                g.contiguous(memory_format=torch.channels_last) if ctx.plan.channels_last else g
            )
        return out

    return tiles.TiledObjective(forward, terms, tiling, ctx.net.model)


def _evaluate_and_step(
    ctx: _Run,
    objective: Objective | tiles.TiledObjective,
    var: PyramidImage,
    optimizer: Any,
    want_image: bool,
) -> tuple[dict[str, float], torch.Tensor | None, torch.Tensor]:
    """One objective evaluation (+ the optimiser's update): losses, the image evaluated if wanted
    (a copy), and the image evaluated, kept for :func:`pastiche` (a copy only where it is the
    optimiser's own variable, which the step then moves: ``pyramid=0``)."""
    out: dict[str, Any] = {}

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        var.project_()  # the textbook's way: project G onto [0, 1] before evaluating
        g = var.image()
        total, parts, grad = objective(g)
        torch.autograd.backward(g, grad)  # d total / d G, on through the pyramid to the optimiser's variables
        out["parts"], out["total"] = parts, total
        out["image"] = g.detach().clone() if want_image else None
        own = any(g is p for p in var.params)
        out["evaluated"] = out["image"] if out["image"] is not None else (g.detach().clone() if own else g.detach())
        return total

    optimizer.step(closure)
    # every scalar of this evaluation in one device-to-host transfer (one synchronisation)
    names = list(out["parts"])
    values = torch.stack([out["total"].float(), *(out["parts"][n].float() for n in names)]).tolist()
    losses = dict(zip(names, values[1:], strict=True))
    losses["total"] = values[0]
    return losses, out["image"], out["evaluated"]
