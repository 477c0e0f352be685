"""A run plan: one task per output image (no Qt; built on the main thread from snapshots).

:func:`build_plan` is the one plan builder, for a 2-D run and a stack alike: it takes what the
widget asks for as live layers (:class:`RunRequest`) and snapshots them. A 2-D run is one task:
the displayed slice of the content, painted at ``size``. A stack run is one task per slice along
an axis the canvas does not show (``Task.index = (t,)``, the content snapshot's position moved to
slice t), all run by one engine so that frame t starts from frame t-1. Each task holds its style
images as :class:`StylePart` s (style 1 first).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_nst._run.inputs import LayerSnapshot, slice_axes, slice_shape, snapshot
from napari_nst._run.labels import LabelsSnapshot, as_labels, labels_snapshot
from napari_nst.core.image.arrays import resized_shape
from napari_nst.core.options import Options


@dataclass(frozen=True)
class StylePart:
    """One style image of a task: its snapshot, its axes shown as rows and columns, and the Labels
    layer painted over it saying which part supplies each label's style (None: used whole)."""

    snapshot: LayerSnapshot
    axes: tuple[int, int]
    regions: LabelsSnapshot | None = None

    @property
    def name(self) -> str:
        return self.snapshot.name


@dataclass(frozen=True)
class Task:
    """One output image: which slice of which inputs, with which engine options."""

    content: LayerSnapshot
    styles: tuple[StylePart, ...]  #: style 1, 2 ... (several: blended, or painted in regions)
    options: dict[str, Any]  #: engine keywords (``init`` is a string here; a layer is in ``init``)
    axes: tuple[int, int]  #: the content's axes shown as rows and columns
    full_shape: tuple[int, int]  #: the content slice at full resolution
    init: LayerSnapshot | None = None  #: a layer to start from
    init_axes: tuple[int, int] | None = None
    index: tuple[int, ...] = ()  #: where the output goes in the sink (() for a 2-D run)
    regions: LabelsSnapshot | None = None  #: the Labels layer that says which style goes where
    mask: LabelsSnapshot | None = None  #: the Labels (or rasterised Shapes) layer: restyle only where nonzero

    @property
    def final_shape(self) -> tuple[int, int]:
        """The pastiche's shape at the last (finest) level."""
        return resized_shape(self.full_shape, int(self.options["size"]))

    def style_long_edge(self, k: int = 0) -> int:
        """Style image ``k``'s long edge at the finest level, by the engine's own formula (each style
        is resized on its own, with its own ``style_scale`` when one is given per style)."""
        opts = Options(style_scale=self.options.get("style_scale", 1.0))
        index = k if isinstance(opts.style_scale, tuple) and k < len(opts.style_scale) else 0
        part = self.styles[k]
        return max(opts.style_shape(slice_shape(part.snapshot, part.axes), self.final_shape, index))

    @property
    def style_names(self) -> list[str]:
        return [part.name for part in self.styles]

    @property
    def style_regions(self) -> bool:
        """Whether a Labels layer is painted over any style image."""
        return any(part.regions is not None for part in self.styles)


@dataclass(frozen=True)
class RunPlan:
    """What one press of Run (or Continue) does."""

    tasks: tuple[Task, ...]
    output_name: str
    settings: dict[str, Any] = field(default_factory=dict)  #: JSON-friendly, for the layer metadata
    stack_axis: int | None = None  #: a stack run: the content's axis its tasks go along
    start: int = 0  #: a stack run's first task (Continue)
    previous: LayerSnapshot | None = None  #: the stack pastiche layer a Continue fills further

    @property
    def steps(self) -> int:
        return sum(int(t.options["steps"]) for t in self.tasks[self.start :])

    def task_for(self, rec: Any) -> Task:
        """The task a record belongs to (its frame in a stack run)."""
        return self.tasks[rec.frame] if self.stack_axis is not None else self.tasks[0]


@dataclass(frozen=True)
class RunRequest:
    """What the widget asks for, as live layers (read on the main thread by :func:`build_plan`)."""

    content: Any
    styles: Sequence[Any]  #: style layers, style 1 first
    options: dict[str, Any]  #: engine keywords (``init`` a string)
    settings: dict[str, Any]  #: for the layer metadata
    init: Any = None  #: a layer to start from (a 2-D run)
    regions: Any = None  #: a Labels layer over the content
    style_regions: Sequence[Any] = ()  #: a Labels layer over each style image (None: whole), or ()
    mask: Any = None  #: a Labels or Shapes layer over the content: restyle only where it marks
    stack_axis: int | None = None  #: every slice along this content axis; None: the slice shown
    start: int = 0  #: a stack's first frame to make (Continue)
    previous: Any = None  #: the stack pastiche layer holding the frames before ``start``


def output_name(content: str, styles: Sequence[str], continued: bool) -> str:
    return f"{content} × {' + '.join(styles)}" + (" (continued)" if continued else "")


def stack_axes(snap: LayerSnapshot, axes: tuple[int, int]) -> list[tuple[int, int]]:
    """``(axis, length)`` of each axis of the content a stack run can go along."""
    return [(ax, int(snap.shape[ax])) for ax in range(snap.ndim) if ax not in axes and int(snap.shape[ax]) > 1]


def build_plan(req: RunRequest, point: Sequence[float], displayed: Sequence[int]) -> RunPlan:
    """The plan for ``req`` with the viewer's dims at ``point`` showing the axes ``displayed``:
    one task (the slice shown), or one per slice along ``req.stack_axis``. Main thread."""
    world_ndim = len(point)
    content = snapshot(req.content, point)
    axes = slice_axes(content, world_ndim, displayed)
    if req.mask is not None:  # a Shapes layer rasterised once, here on the main thread
        settings = {**req.settings, "mask": f"layer: {req.mask.name}"}
        req = dataclasses.replace(req, mask=as_labels(req.mask, req.content, point, axes), settings=settings)
    sources = list(req.style_regions) or [None] * len(req.styles)
    styles = tuple(
        _style_part(lay, lab, point, world_ndim, displayed) for lay, lab in zip(req.styles, sources, strict=True)
    )
    base = Task(content, styles, dict(req.options), axes, slice_shape(content, axes))
    if req.stack_axis is None:
        init = snapshot(req.init, point) if req.init is not None else None
        task = dataclasses.replace(
            base,
            init=init,
            init_axes=slice_axes(init, world_ndim, displayed) if init is not None else None,
            regions=labels_snapshot(req.regions, req.content, point, axes) if req.regions is not None else None,
            mask=labels_snapshot(req.mask, req.content, point, axes) if req.mask is not None else None,
        )
        name = output_name(content.name, task.style_names, continued=init is not None)
        return RunPlan(tasks=(task,), output_name=name, settings=dict(req.settings))
    previous = snapshot(req.previous, point) if req.previous is not None and req.start > 0 else None
    tasks = _frame_tasks(req, base, point, continued=previous is not None)
    settings = dict(req.settings, stack={"axis": req.stack_axis, "frames": len(tasks)})
    return RunPlan(
        tasks=tasks,
        output_name=output_name(content.name, base.style_names, continued=False),
        settings=settings,
        stack_axis=req.stack_axis,
        start=req.start,
        previous=previous,
    )


def _style_part(
    layer: Any, labels: Any, point: Sequence[float], world_ndim: int, displayed: Sequence[int]
) -> StylePart:
    snap = snapshot(layer, point)
    axes = slice_axes(snap, world_ndim, displayed)
    return StylePart(snap, axes, labels_snapshot(labels, layer, point, axes) if labels is not None else None)


def _frame_tasks(req: RunRequest, base: Task, point: Sequence[float], continued: bool) -> tuple[Task, ...]:
    """One task per slice of the content along ``req.stack_axis``; the first frame made has the
    run's steps unless it continues from an earlier frame, the others the frame steps; a Labels
    layer is read as it lies over each frame (one of the stack's dims gives each frame its own)."""
    from napari_nst.core.stack.frames import frame_steps_for

    axis, content = int(req.stack_axis or 0), base.content
    pos0 = np.zeros(content.ndim) if content.position is None else np.asarray(content.position, dtype=float)
    later = frame_steps_for(req.options.get("steps"), req.options.get("frame_steps"))
    tasks = []
    for t in range(int(content.shape[axis])):
        pos = pos0.copy()
        pos[axis] = t
        first = t == req.start and not continued
        opts = dict(req.options, init="content", steps=int(req.options["steps"]) if first else later)
        at = _frame_point(req.content, point, pos)  # the Labels layers as they lie over frame t
        regions = labels_snapshot(req.regions, req.content, at, base.axes) if req.regions is not None else None
        mask = labels_snapshot(req.mask, req.content, at, base.axes) if req.mask is not None else None
        snap = dataclasses.replace(content, position=pos)
        tasks.append(dataclasses.replace(base, content=snap, options=opts, index=(t,), regions=regions, mask=mask))
    return tuple(tasks)


def _frame_point(layer: Any, point: Sequence[float], pos: np.ndarray) -> list[float]:
    """The world point of the slice of ``layer`` at data position ``pos`` (the other world axes
    as in ``point``)."""
    world = np.asarray(layer.data_to_world(list(pos)), float)
    p = list(point)
    if len(world) <= len(p):
        p[len(p) - len(world) :] = list(world)
    return p
