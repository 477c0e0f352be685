"""Stacks and time-lapses: every frame stylised, each starting where the one before ended.

Frame t starts from frame t-1's pastiche carried along the optical flow between the two content
frames (core/stack/flow.py) and is kept there by a temporal term (Ruder, Dosovitskiy and Brox 2016,
``losses.TemporalTerm``: squared difference to the carried pastiche where the flow is reliable).
Where the flow is not reliable (content entering at the edge, disocclusions) it starts from its own
content plus the carried paint instead (``flow._repainted``), and the temporal term is off there.
The network, the style's Gram matrices and the weights file are set up once for the whole stack
(engine._prepare, with ``_Run.style_grams`` memoising the Grams); only the frame being made is on
the device. Frames are read one at a time from a :class:`FrameSource`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from napari_nst.core.compute.device import (
    autocast_dtype,
    pick_device,
    resize_on_host,
)
from napari_nst.core.errors import DeviceMemoryError, OptionError
from napari_nst.core.image.tensors import resize, to_numpy, to_tensor
from napari_nst.core.objective.colour import gray3, luminance
from napari_nst.core.objective.losses import TemporalTerm
from napari_nst.core.optim import engine
from napari_nst.core.options import Options, split_steps
from napari_nst.core.records import Pastiche, Progress
from napari_nst.core.stack.flow import OPENCV_NOTE, carry, have_flow
from napari_nst.core.stack.frames import FrameSource, frame_steps_for

#: the automatic ``temporal_weight``: the temporal term is a mean squared difference in [0, 1]
#: image units, so a carried pastiche off by 0.05 per value costs 2.5e-3 x this; the content and
#: style terms are relative errors of order 1 (objective.weights.STYLE_BALANCE). Measured in docs/stacks.md.
TEMPORAL_BALANCE = 200.0


def frame_steps(opts: Options) -> int:
    """Evaluations of each frame after the first (``opts.steps`` must be resolved)."""
    return frame_steps_for(opts.steps, opts.frame_steps)


def temporal_weight(opts: Options) -> float:
    return TEMPORAL_BALANCE if opts.temporal_weight is None else float(opts.temporal_weight)


@dataclasses.dataclass
class _Carried:
    """What frame t takes from frame t-1: its pastiche and its content, at the working shape."""

    pastiche: np.ndarray
    content: np.ndarray
    labels: np.ndarray | None = None  # frame t-1's regions at the working shape (a Labels stack)


def run_stack(
    frames: FrameSource,
    style: np.ndarray,
    opts: Options,
    start: int = 0,
    previous: np.ndarray | None = None,
    keep: Callable[[Pastiche], None] | None = None,
) -> Iterator[Progress]:
    """Stylise ``frames[start:]`` one after the other; yield per evaluation (see Progress.frame).

    ``previous``: the pastiche of frame ``start - 1`` (to continue a stopped stack); frame
    ``start`` then starts from it as any later frame does. Closing the generator stops at once.
    ``keep``: called when the run ends before the last frame is finished (closed, interrupted, an
    error) with the unfinished frame's newest :class:`Pastiche` (its ``frame`` set), if it had
    a finished evaluation; the finished frames are in their last records.
    """
    device = pick_device(opts.device)
    opts = opts.for_device(gpu=device.type != "cpu")
    dtype = autocast_dtype(opts.precision, device)
    first = frames[start]
    if opts.tile_size is not None:  # tiles (core/objective/tiles.py) are for single images so far
        raise OptionError(f"tile_size={opts.tile_size}: stacks are not tiled yet; leave tile_size empty")
    opts.check_size(first.shape[:2])
    shapes = opts.level_shapes(first.shape[:2])
    engine.check_memory(first.shape[:2], shapes[-1], opts, device, dtype)
    base = engine._prepare(
        first,
        style,
        _frame_options(opts, start),
        device,
        dtype,
        shapes,
        split_steps(int(opts.steps or 1), len(shapes)),
        tune_shape=shapes[-1],
    )
    assert base is not None
    if base.dtype != dtype:  # the measured plan's precision: does the stack still fit?
        try:
            engine.check_memory(first.shape[:2], shapes[-1], opts, device, base.dtype)
        except DeviceMemoryError:
            engine._static_plan(base, dtype)
    if base.dtype is not None:  # a bfloat16 frame may finish in float32 (engine._Finish) where that fits
        try:
            engine.check_memory(first.shape[:2], shapes[-1], opts, device, None)
        except DeviceMemoryError:
            base.float32_plan = None
    base.style_grams = {}  # the style's Grams once for the whole stack
    base.restyle = engine._restyle(first, _frame_options(opts, start), shapes[-1])  # each frame: its own
    if base.controls is not None:
        base.controls.grams_memo = {}  # also those of several styles (core/objective/controls.py)
    base.opts = opts  # per-frame regions and masks: _frame_context gives each frame its own
    records = _frames(base, frames, start, previous, keep)
    del base  # held by the records alone (see engine.guard_memory)
    yield from engine.guard_memory(records, first.shape[:2], shapes[-1], opts, device, dtype)


def _frame_options(opts: Options, frame: int) -> Options:
    """``opts`` with frame ``frame``'s own regions and mask where they are given per frame (N, H, W)."""
    out = opts
    for name in ("regions", "mask"):
        given = getattr(opts, name)
        if given is not None and np.ndim(given) == 3:
            out = dataclasses.replace(out) if out is opts else out  # a copy: the caller's options unchanged
            setattr(out, name, np.asarray(given[frame]))
    return out


def _frames(
    base: engine._Run,
    frames: FrameSource,
    start: int,
    previous: np.ndarray | None,
    keep: Callable[[Pastiche], None] | None = None,
) -> Iterator[Progress]:
    n, opts, shape = len(frames), base.opts, base.shapes[-1]
    later = frame_steps(opts)
    totals = [later if (t > start or previous is not None) else int(opts.steps or 1) for t in range(start, n)]
    stack_total, done, t0 = sum(totals), 0, time.perf_counter()
    carried = None
    if previous is not None:
        carried = _Carried(
            _at(np.asarray(previous, dtype=np.float32), shape),
            _at(frames[start - 1], shape),
            _labels_at(opts, start - 1, shape),
        )
    flow = have_flow()
    for t, steps in zip(range(start, n), totals, strict=True):
        content = frames[t]
        ctx, note = _frame_context(base, t, content, steps, carried, flow, t0)
        last: np.ndarray | None = None
        try:
            for rec in engine._levels(ctx):
                if rec.image is not None:
                    last = rec.image
                yield dataclasses.replace(
                    rec, frame=t, frames=n, stack_step=done + rec.step, stack_total=stack_total, note=note
                )
        except BaseException:  # closed, interrupted, an error: the frame's newest pastiche goes back
            _hand_back(ctx, keep, t, n)
            raise
        assert last is not None
        done += steps
        carried = _Carried(last, _at(content, shape), _labels_at(opts, t, shape))


def _hand_back(ctx: engine._Run, keep: Callable[[Pastiche], None] | None, frame: int, frames: int) -> None:
    def frame_keep(p: Pastiche) -> None:
        assert keep is not None
        if p.step < p.total:  # a frame whose last record (with its pastiche) was yielded is finished
            keep(dataclasses.replace(p, frame=frame, frames=frames))

    engine._hand_back(ctx, frame_keep if keep is not None else None)


def _frame_context(
    base: engine._Run, frame: int, content: np.ndarray, steps: int, carried: _Carried | None, flow: bool, t0: float
) -> tuple[engine._Run, str]:
    """The run context of frame ``frame``: the shared network and Grams, this frame's content,
    regions, mask, start and temporal term."""
    opts, note, extra = base.opts, "", None
    if carried is not None:
        shape = base.shapes[-1]
        here = _at(content, shape)
        if flow:
            now = _labels_at(opts, frame, shape)
            labels = None if carried.labels is None or now is None else (carried.labels, now)
            start_image, mask = carry(
                carried.pastiche, carried.content, here, labels=labels, repaint=base.levers.repaint_unreliable
            )
            weight = temporal_weight(opts)
            if weight > 0:  # in luminance mode the network's image is gray: so is the target
                lum = base.controls is not None and base.controls.chroma is not None
                extra = _temporal_terms(base, gray3(luminance(start_image)) if lum else start_image, mask, weight)
        else:
            start_image, note = carried.pastiche, OPENCV_NOTE
        opts = dataclasses.replace(opts, init=start_image, steps=steps)
    where = torch.device("cpu") if resize_on_host(base.device) else base.device
    controls, net_content = _frame_controls(base.controls, opts, frame, content, where)
    restyle = None
    if base.restyle is not None:  # outside its mask a frame keeps its own content
        restyle = base.restyle.for_frame(_frame_options(base.opts, frame).mask, content)
    ctx = dataclasses.replace(
        base,
        opts=opts,
        controls=controls,
        restyle=restyle,
        content=to_tensor(net_content, where),
        counts=split_steps(steps, len(base.shapes)),
        step=0,
        t0=t0,
        last_image_at=-math.inf,
        last_good=None,
        extra_terms=extra,
    )
    return ctx, note


def _frame_controls(
    controls: Any, opts: Options, frame: int, content: np.ndarray, where: torch.device
) -> tuple[Any, np.ndarray]:
    """The artistic controls of one frame and its content as the network sees it: its own regions
    (``regions`` (N, H, W)) and, in luminance mode, its own luminance and chroma. The styles keep
    the colours they were matched to on the first frame (one target for the whole stack)."""
    if controls is None:
        return None, content
    changes: dict[str, Any] = {}
    if opts.regions is not None and np.ndim(opts.regions) == 3:  # one label image per frame
        changes["regions"] = np.asarray(opts.regions[frame])
    if controls.chroma is not None:  # preserve_color="luminance"
        changes["chroma"] = to_tensor(content, where)
        content = gray3(luminance(content))
    return (dataclasses.replace(controls, **changes, _cache={}) if changes else controls), content


def _temporal_terms(base: engine._Run, target: np.ndarray, mask: np.ndarray, weight: float) -> Any:
    """``extra_terms`` for the engine: the temporal term at each level's shape."""
    target_t = to_tensor(target, base.device)
    mask_t = torch.from_numpy(np.ascontiguousarray(mask))[None, None].to(base.device)

    def terms(shape: tuple[int, int]) -> list[Any]:
        tt = resize(target_t, shape)
        mt = (
            mask_t
            if tuple(mask_t.shape[-2:]) == tuple(shape)
            else torch.nn.functional.interpolate(mask_t, size=shape, mode="area").eq(1.0).float()
        )  # reliable only where all of it was
        return [TemporalTerm(tt, mt, weight)]

    return terms


def _labels_at(opts: Options, frame: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Frame ``frame``'s label image at ``shape`` (nearest), for per-frame regions; else None."""
    if opts.regions is None or np.ndim(opts.regions) != 3:
        return None
    labels = np.asarray(opts.regions[frame])
    rows = np.minimum((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0], labels.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1], labels.shape[1] - 1).astype(int)
    out: np.ndarray = labels[rows[:, None], cols[None, :]]
    return out


def _at(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """float RGB (H, W, 3) resized to ``shape`` as the engine resizes (antialiased bilinear)."""
    if tuple(image.shape[:2]) == tuple(shape):
        return np.ascontiguousarray(image, dtype=np.float32)
    return to_numpy(resize(to_tensor(image, torch.device("cpu")), shape))
