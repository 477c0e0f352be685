"""A run plan: one task per output image (no Qt; built on the main thread from snapshots).

A 2-D run is one task: the displayed slice of the content, painted at ``size``. A stack run
will be one task per slice of the same plan (same inputs, another ``index``), and the sink that
shows it an nD layer; the runner and the records do not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from napari_nst._run.inputs import LayerSnapshot, slice_axes, slice_shape
from napari_nst._run.labels import LabelsSnapshot
from napari_nst.core.image.arrays import resized_shape
from napari_nst.core.options import Options


@dataclass(frozen=True)
class Task:
    """One output image: which slice of which inputs, with which engine options."""

    content: LayerSnapshot
    style: LayerSnapshot
    init: LayerSnapshot | None
    options: dict[str, Any]  #: engine keywords (``init`` is a string here; a layer is in ``init``)
    axes: tuple[int, int]  #: the content's axes shown as rows and columns
    style_axes: tuple[int, int]
    init_axes: tuple[int, int] | None
    full_shape: tuple[int, int]  #: the content slice at full resolution
    index: tuple[int, ...] = ()  #: where the output goes in the sink (() for a 2-D run)
    extra_styles: tuple[LayerSnapshot, ...] = ()  #: styles 2, 3 ... (blended, or painted in regions)
    extra_style_axes: tuple[tuple[int, int], ...] = ()
    regions: LabelsSnapshot | None = None  #: the Labels layer that says which style goes where
    #: per style image: a Labels layer over it saying which part supplies each label's style (None: whole)
    style_regions: tuple[LabelsSnapshot | None, ...] = ()

    @property
    def final_shape(self) -> tuple[int, int]:
        """The pastiche's shape at the last (finest) level."""
        return resized_shape(self.full_shape, int(self.options["size"]))

    @property
    def style_long_edge(self) -> int:
        """The style image's long edge at the finest level, by the engine's own formula."""
        return self.long_edge_of(self.style, self.style_axes)

    def long_edge_of(self, style: LayerSnapshot, axes: tuple[int, int]) -> int:
        """A style image's long edge at the finest level (each style is resized on its own, with
        its own ``style_scale`` when one is given per style)."""
        opts = Options(style_scale=self.options.get("style_scale", 1.0))
        index = next((k for k, s in enumerate([self.style, *self.extra_styles]) if s is style), 0)
        index = index if isinstance(opts.style_scale, tuple) and index < len(opts.style_scale) else 0
        return max(opts.style_shape(slice_shape(style, axes), self.final_shape, index))

    @property
    def style_names(self) -> list[str]:
        return [self.style.name, *(s.name for s in self.extra_styles)]


@dataclass(frozen=True)
class RunPlan:
    """What one press of Run (or Continue) does."""

    tasks: tuple[Task, ...]
    output_name: str
    settings: dict[str, Any] = field(default_factory=dict)  #: JSON-friendly, for the layer metadata
    stack_axis: int | None = None  #: a stack run (_run/stack.py): the content's axis its tasks go along
    start: int = 0  #: a stack run's first task (Continue)
    previous: LayerSnapshot | None = None  #: the stack pastiche layer a Continue fills further

    @property
    def steps(self) -> int:
        return sum(int(t.options["steps"]) for t in self.tasks[self.start :])

    def task_for(self, rec: Any) -> Task:
        """The task a record belongs to (its frame in a stack run)."""
        return self.tasks[rec.frame] if self.stack_axis is not None else self.tasks[0]


def output_name(content: str, style: str, continued: bool) -> str:
    return f"{content} × {style}" + (" (continued)" if continued else "")


def with_controls(
    plan: RunPlan,
    styles: Sequence[LayerSnapshot],
    regions: LabelsSnapshot | None,
    world_ndim: int,
    displayed: Sequence[int],
) -> RunPlan:
    """``plan`` with more style images and/or a Labels layer of regions."""
    if not styles and regions is None:
        return plan
    from dataclasses import replace

    task = replace(
        plan.tasks[0],
        extra_styles=tuple(styles),
        regions=regions,
        extra_style_axes=tuple(slice_axes(s, world_ndim, displayed) for s in styles),
    )
    name = plan.output_name
    if styles:
        name = name.replace(f" × {task.style.name}", " × " + " + ".join(task.style_names), 1)
    return replace(plan, tasks=(task,), output_name=name)


def with_style_regions(
    plan: RunPlan, sources: Sequence[Any], style_layers: Sequence[Any], point: Sequence[float]
) -> RunPlan:
    """``plan`` with a Labels layer over each style image (None: the style image used whole),
    each read as napari shows it over its style image's slice on screen. Main thread."""
    if not any(lay is not None for lay in sources):
        return plan
    from dataclasses import replace

    from napari_nst._run.labels import labels_snapshot

    task = plan.tasks[0]
    axes = [task.style_axes, *task.extra_style_axes]
    snaps = tuple(
        None if lab is None else labels_snapshot(lab, style, point, ax)
        for lab, style, ax in zip(sources, style_layers, axes, strict=True)
    )
    return replace(plan, tasks=(replace(task, style_regions=snaps),))


def plan_2d(
    content: LayerSnapshot,
    style: LayerSnapshot,
    init: LayerSnapshot | None,
    options: dict[str, Any],
    settings: dict[str, Any],
    world_ndim: int,
    displayed: Sequence[int],
) -> RunPlan:
    """One task: the slice of ``content`` shown now, styled by the slice of ``style`` shown now."""
    axes = slice_axes(content, world_ndim, displayed)
    task = Task(
        content=content,
        style=style,
        init=init,
        options=dict(options),
        axes=axes,
        style_axes=slice_axes(style, world_ndim, displayed),
        init_axes=slice_axes(init, world_ndim, displayed) if init is not None else None,
        full_shape=slice_shape(content, axes),
    )
    name = output_name(content.name, style.name, continued=init is not None)
    return RunPlan(tasks=(task,), output_name=name, settings=dict(settings))
