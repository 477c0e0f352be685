"""Stack runs in the widget: every slice along one axis (no Qt, no torch).

A stack run's plan (:func:`napari_nst._run.plan.build_plan` with a ``stack_axis``) has one task
per slice, all run by one engine so that frame t starts from frame t-1; here:

* :class:`StackSink`: the nD layer that fills in frame by frame;
* :func:`stack_memory_problem`: a stack too big for memory is refused before it starts, with a
  size that fits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_nst._run.plan import RunPlan, Task
from napari_nst.core.image.arrays import resized_shape

#: the output layer (RGBA float32) and the frames sent to the engine (RGB float32) may use at most
#: this fraction of the free memory
STACK_MEMORY_FRACTION = 0.5


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
