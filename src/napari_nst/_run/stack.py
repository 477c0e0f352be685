"""Stack runs in the widget: every slice along one axis (no Qt, no torch).

* :func:`stack_axes` says which of the content's axes a run can go along (not displayed, longer
  than 1); :func:`plan_stack` makes one :class:`Task` per slice (``Task.index = (t,)``, the content
  snapshot's position moved to slice t), all run by one engine process
  (:class:`napari_nst.core.process.client.StackEngineProcess`) so that frame t starts from frame t-1.
* :func:`run_stack_plan` is the worker-thread side (read every slice at the working size, relay
  records); :class:`StackSink` the nD layer that fills in frame by frame.
* :func:`stack_memory_problem`: a stack too big for memory is refused before it starts, with a
  size that fits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from napari_nst._run.inputs import LayerSnapshot, read_input, slice_axes, slice_shape
from napari_nst._run.labels import LabelsSnapshot, labels_snapshot, read_labels
from napari_nst._run.plan import RunPlan, Task, output_name, with_controls
from napari_nst._run.runner import ENGINE_NICE, PREVIEW_INTERVAL, Notes, ProcessRunner, read_inputs
from napari_nst.core.errors import EngineProcessError
from napari_nst.core.image.arrays import resized_shape

log = logging.getLogger(__name__)

#: the output layer (RGBA float32) and the frames sent to the engine (RGB float32) may use at most
#: this fraction of the free memory
STACK_MEMORY_FRACTION = 0.5


def stack_axes(snap: LayerSnapshot, axes: tuple[int, int]) -> list[tuple[int, int]]:
    """``(axis, length)`` of each axis of the content a stack run can go along."""
    return [(ax, int(snap.shape[ax])) for ax in range(snap.ndim) if ax not in axes and int(snap.shape[ax]) > 1]


def plan_stack(
    content: LayerSnapshot,
    style: LayerSnapshot,
    options: dict[str, Any],
    settings: dict[str, Any],
    world_ndim: int,
    displayed: Sequence[int],
    axis: int,
    start: int = 0,
    previous: LayerSnapshot | None = None,
) -> RunPlan:
    """One task per slice of ``content`` along ``axis``; ``start``/``previous``: continue a stack
    whose frames before ``start`` are made (``previous`` the pastiche layer holding them)."""
    axes = slice_axes(content, world_ndim, displayed)
    n = int(content.shape[axis])
    base = np.zeros(content.ndim) if content.position is None else np.asarray(content.position, dtype=float)
    later = _frame_steps(options)
    tasks = []
    for t in range(n):
        pos = base.copy()
        pos[axis] = t
        opts = dict(options, steps=int(options["steps"]) if t == start and previous is None else later)
        tasks.append(
            Task(
                content=dataclasses.replace(content, position=pos),
                style=style,
                init=None,
                options=opts,
                axes=axes,
                style_axes=slice_axes(style, world_ndim, displayed),
                init_axes=None,
                full_shape=slice_shape(content, axes),
                index=(t,),
            )
        )
    name = output_name(content.name, style.name, continued=False)
    meta = dict(settings, stack={"axis": axis, "frames": n})
    return RunPlan(tasks=tuple(tasks), output_name=name, settings=meta, stack_axis=axis, start=start, previous=previous)


def labels_per_frame(labels: Any, content: Any, point: Sequence[float], plan: RunPlan) -> list[LabelsSnapshot]:
    """The Labels layer as it lies over each frame of a stack plan (a Labels layer of the stack's
    dims gives each frame its own labels; a 2-D one the same for all). Main thread."""
    out = []
    for task in plan.tasks:
        pos = task.content.position
        world = np.asarray(content.data_to_world(list(pos)), float) if pos is not None else None
        p = list(point)
        if world is not None and len(world) <= len(p):
            p[len(p) - len(world) :] = list(world)  # the world point of this frame's slice
        out.append(labels_snapshot(labels, content, p, task.axes))
    return out


def with_stack_controls(
    plan: RunPlan,
    styles: Sequence[LayerSnapshot],
    regions: Sequence[LabelsSnapshot] | None,
    world_ndim: int,
    displayed: Sequence[int],
) -> RunPlan:
    """A stack plan with more style images and/or each frame's regions (``regions[t]``)."""
    if not styles and regions is None:
        return plan
    tasks, name = [], plan.output_name
    for t, task in enumerate(plan.tasks):
        one = with_controls(
            dataclasses.replace(plan, tasks=(task,)),
            styles,
            None if regions is None else regions[t],
            world_ndim,
            displayed,
        )
        tasks.append(one.tasks[0])
        name = one.output_name
    return dataclasses.replace(plan, tasks=tuple(tasks), output_name=name)


def _frame_steps(options: dict[str, Any]) -> int:
    from napari_nst.core.stack.frames import frame_steps_for

    return frame_steps_for(options.get("steps"), options.get("frame_steps"))


def stack_bytes(plan: RunPlan) -> int:
    """Bytes a stack run holds in napari's process: the RGBA float32 layer and the RGB float32
    frames read for the engine."""
    h, w = plan.tasks[0].final_shape
    return len(plan.tasks) * h * w * (4 + 3) * 4


def stack_memory_problem(plan: RunPlan, available: int | None) -> str | None:
    """A sentence saying the stack will not fit, with a size that does; None when it fits."""
    need = stack_bytes(plan)
    if available is None or need <= available * STACK_MEMORY_FRACTION:
        return None
    budget = available * STACK_MEMORY_FRACTION
    task = plan.tasks[0]
    size = int(task.options["size"])
    per_px = need / max(1, len(plan.tasks) * task.final_shape[0] * task.final_shape[1])
    while size > 16 and len(plan.tasks) * np.prod(resized_shape(task.full_shape, size)) * per_px > budget:
        size = int(size * 0.9)
    return (
        f"The stack of {len(plan.tasks)} frames at {task.final_shape[1]}×{task.final_shape[0]} px needs about "
        f"{need / 2**30:.1f} GiB in napari, but only {available / 2**30:.1f} GiB is free: set Size to {size} "
        "or less, or stylise this slice only."
    )


# --------------------------------------------------------------------------- worker thread


def read_frames(plan: RunPlan) -> tuple[np.ndarray, Any, np.ndarray | None, list[str], np.ndarray | None]:
    """Every slice at the working size (N, h, w, 3), the style (a list: several), the previous
    frame's pastiche (continuing), notes, and each frame's regions (N, h, w) or None. Worker
    thread: reads snapshots only."""
    size = int(plan.tasks[0].options["size"])
    first = read_inputs(plan.tasks[0])  # frame 0, the style(s), frame 0's regions
    frames: list[np.ndarray] = [first.content]
    labels: list[np.ndarray] = [first.options["regions"]] if "regions" in first.options else []
    for task in plan.tasks[1:]:
        img, _ = read_input(task.content, task.axes, size, "content")
        frames.append(img)
        if task.regions is not None:
            labels.append(read_labels(task.regions, task.full_shape, img.shape[:2]))
    regions = np.stack(labels) if labels else None
    previous = None
    if plan.previous is not None and plan.start > 0:
        previous = previous_frame(plan.previous, plan.stack_axis or 0, plan.start - 1)
    notes = [f"the content is stylised slice by slice along axis {plan.stack_axis} ({len(frames)} slices)"]
    # the content's own note names the one slice of frame 0 ("using the 2-D slice shown now"): its
    # other parts (multiscale level, colormap) and the styles' notes hold for every frame
    for note in first.notes:
        notes += [p for p in note.split("; ") if not (p.startswith("content ") and "2-D slice" in p)]
    return np.stack(frames), first.style, previous, notes, regions


def previous_frame(layer: LayerSnapshot, axis: int, t: int) -> np.ndarray:
    """Frame ``t`` of a stack pastiche layer (RGBA, the frame axis ``axis``) as RGB float32."""
    data = np.asarray(layer.data)
    index: list[Any] = [0] * (data.ndim - 1)
    index[axis] = t
    rows = [ax for ax in range(data.ndim - 1) if data.shape[ax] > 1 and ax != axis][-2:]
    for ax in rows:
        index[ax] = slice(None)
    return np.ascontiguousarray(np.asarray(data[tuple(index)], dtype=np.float32)[..., :3])


def run_stack_plan(runner: ProcessRunner, plan: RunPlan) -> Generator[Any, None, tuple[str, BaseException | None]]:
    """Worker-thread side of a stack run (as :func:`napari_nst._run.runner.run_task`)."""
    try:
        frames, style, previous, notes, regions = read_frames(plan)
        yield Notes(notes)
        yield from _stack_records(runner, frames, style, previous, plan, regions)
        return ("stopped" if runner.cancelled else "finished", None)
    except Exception as exc:
        if not isinstance(exc, (ValueError, MemoryError, EngineProcessError)):
            log.exception("style transfer failed")
        return ("failed", exc)


def _stack_records(
    runner: ProcessRunner,
    frames: np.ndarray,
    style: Any,
    previous: np.ndarray | None,
    plan: RunPlan,
    regions: np.ndarray | None = None,
) -> Any:
    from napari_nst.core.process import client as remote  # looked up now: the tests replace it

    options = {**plan.tasks[0].options, "preview_interval": PREVIEW_INTERVAL}
    if regions is not None:
        options["regions"] = regions  # (N, h, w): each frame's own labels
    options["steps"] = int(plan.settings.get("steps") or options["steps"])
    address = plan.settings.get("run_on")
    if address:  # a dask scheduler's workers (_run/dask_stack.py)
        from napari_nst._run.dask_stack import DaskStackProcess

        proc: Any = DaskStackProcess(frames, style, address=address, start=plan.start, previous=previous, **options)
    else:
        proc = remote.StackEngineProcess(
            frames, style, start=plan.start, previous=previous, nice=ENGINE_NICE, **options
        )
    yield from runner.follow(proc)


# --------------------------------------------------------------------------- the layer


class StackSink:
    """A stack's pastiche: one RGBA layer with the content's axes (1 along the axes neither shown
    nor stacked, placed at the slice shown), over the content; frames not made yet are
    transparent (alpha 0). Main thread only. ``follow``: move the dims slider to each new frame."""

    def __init__(self, viewer: Any, plan: RunPlan, follow: bool = False, layer: Any = None) -> None:
        self._viewer, self._plan, self.follow = viewer, plan, follow
        self.layer: Any = layer  # a layer to continue filling (Continue), else made on the first frame
        self.frames_done = plan.start

    def alive(self) -> bool:
        return self.layer is not None and self.layer in self._viewer.layers

    def _index(self, task: Task) -> tuple[Any, ...]:
        axis = int(self._plan.stack_axis or 0)
        index: list[Any] = [0] * task.content.ndim
        index[axis] = task.index[0]
        index[task.axes[0]] = index[task.axes[1]] = slice(None)
        return tuple(index)

    def _make(self, task: Task, shape: tuple[int, int], metadata: dict[str, Any]) -> None:
        from napari_nst._run.layer_view import pastiche_placement

        snap, axis = task.content, int(self._plan.stack_axis or 0)
        dims = [1] * snap.ndim
        dims[axis] = len(self._plan.tasks)
        a, b = task.axes
        dims[a], dims[b] = (shape[0], shape[1]) if a < b else (shape[1], shape[0])
        place = pastiche_placement(snap, task.axes, task.full_shape, shape)
        scale, translate = np.array(snap.scale, float), np.array(snap.translate, float)
        pos = np.zeros(snap.ndim) if snap.position is None else np.asarray(snap.position, float)
        for ax in range(snap.ndim):
            if ax not in (axis, a, b):
                translate[ax] += scale[ax] * np.round(pos[ax])  # the one slice shown when it was made
        scale[[a, b]], translate[[a, b]] = place["scale"], place["translate"]
        data = np.zeros((*dims, 4), np.float32)  # alpha 0: not made yet
        self.layer = self._viewer.add_image(
            data,
            name=self._plan.output_name,
            rgb=True,
            contrast_limits=(0.0, 1.0),
            scale=scale,
            translate=translate,
            metadata=metadata,
        )

    def show(self, task: Task, image: np.ndarray, shape: tuple[int, int] | None, metadata: dict[str, Any]) -> None:
        """Put ``image`` (a frame's preview or pastiche, float RGB at the working shape) in its
        frame; previews of a frame show while it is being made."""
        shape = (int(image.shape[0]), int(image.shape[1]))
        if self.layer is None:
            self._make(task, shape, metadata)
        elif not self.alive():
            return
        data = self.layer.data
        frame = image if task.axes[0] < task.axes[1] else np.swapaxes(image, 0, 1)
        if data[self._index(task)].shape[:2] != frame.shape[:2]:
            return  # a coarser level of a coarse-to-fine run: the frame shows at its last level
        data[self._index(task) + (slice(0, 3),)] = frame
        data[self._index(task) + (3,)] = 1.0
        self.layer.refresh()
        if self.follow:
            self._follow(task)

    def _follow(self, task: Task) -> None:
        """The dims slider to the frame being made (world axis of the stack axis)."""
        axis = int(self._plan.stack_axis or 0)
        world_axis = self._viewer.dims.ndim - task.content.ndim + axis
        if 0 <= world_axis < self._viewer.dims.ndim:
            step = list(self._viewer.dims.current_step)
            if step[world_axis] != task.index[0]:
                step[world_axis] = task.index[0]
                self._viewer.dims.current_step = tuple(step)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        if self.alive():
            self.layer.metadata = metadata

    def finish(self) -> None:
        """The run is over. The stack stays float32 RGBA (frames not made are transparent):
        napari's own TIFF writer saves it as it is, and Continue fills the same layer."""
