"""What the engine is given for a plan: its images read at the working size, and the options
(no Qt; :func:`read_job` runs in the worker thread and reads snapshots only).

A 2-D run reads the displayed slice of the content and each style image; a stack reads every
slice of the content (N, h, w, 3), each frame's regions and mask, and (Continue) the last frame made. The
:class:`EngineJob` is what an engine factory (:mod:`napari_nst._run.runner`) makes an engine for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_nst._run.inputs import LayerSnapshot, read_input, slice_shape
from napari_nst._run.labels import read_labels
from napari_nst._run.plan import RunPlan, Task


@dataclass(frozen=True)
class EngineJob:
    """One engine run: the arguments of ``EngineProcess`` (one image) or ``StackEngineProcess``."""

    content: np.ndarray  #: (h, w, 3) float32; a stack: (N, h, w, 3)
    style: Any  #: one image, or a list of them (several styles)
    options: dict[str, Any]  #: engine keywords (``init`` an image where a layer was given)
    stack: bool = False  #: ``content`` is a stack of frames
    start: int = 0  #: a stack's first frame to make
    previous: np.ndarray | None = None  #: the pastiche of frame ``start - 1`` (Continue)
    address: str | None = None  #: a dask scheduler to run the stack on (None: this machine)


def read_job(plan: RunPlan, preview_interval: float) -> tuple[EngineJob, list[str]]:
    """The engine job for ``plan`` and notes for the user about how the inputs were read (which
    slice, level, colormap). ``preview_interval``: the engine makes a preview image at most this often."""
    if plan.stack_axis is None:
        content, style, options, notes = read_task(plan.tasks[0])
        options["preview_interval"] = preview_interval
        return EngineJob(content, style, options), notes
    return _read_stack(plan, preview_interval)


def read_task(task: Task) -> tuple[np.ndarray, Any, dict[str, Any], list[str]]:
    """A task's content, style(s) (a list: several), options (with ``init``, ``regions``,
    ``style_regions`` and ``mask`` as images where layers were given) and notes; each input read once, at
    about the size the engine works at (see :func:`read_input`)."""
    size = int(task.options["size"])
    content, note = read_input(task.content, task.axes, size, "content")
    options, notes = dict(task.options), [note] if note else []
    styles = []
    for k, part in enumerate(task.styles):
        img, note = read_input(
            part.snapshot, part.axes, task.style_long_edge(k), "style" if k == 0 else f"style {k + 1}"
        )
        styles.append(img)
        notes += [note] if note else []
    if task.init is not None and task.init_axes is not None:
        options["init"], note = read_input(task.init, task.init_axes, size, "init")
        notes += [note] if note else []
    if task.regions is not None:
        options["regions"] = read_labels(task.regions, task.full_shape, content.shape[:2])
    if task.mask is not None:  # nonzero = restyle
        options["mask"] = read_labels(task.mask, task.full_shape, content.shape[:2]) != 0
    if task.style_regions:  # which part of each style image
        options["style_regions"] = [
            None
            if part.regions is None
            else read_labels(part.regions, slice_shape(part.snapshot, part.axes), img.shape[:2])
            for part, img in zip(task.styles, styles, strict=True)
        ]
    return content, (styles if len(styles) > 1 else styles[0]), options, notes


def _read_stack(plan: RunPlan, preview_interval: float) -> tuple[EngineJob, list[str]]:
    """Every slice at the working size, the style(s), each frame's regions and the previous
    frame's pastiche (continuing)."""
    first, style, options, first_notes = read_task(plan.tasks[0])  # frame 0, the style(s), its regions
    size = int(plan.tasks[0].options["size"])
    frames: list[np.ndarray] = [first]
    labels: list[np.ndarray] = [options["regions"]] if "regions" in options else []
    masks: list[np.ndarray] = [options["mask"]] if "mask" in options else []
    for task in plan.tasks[1:]:
        img, _ = read_input(task.content, task.axes, size, "content")
        frames.append(img)
        if task.regions is not None:
            labels.append(read_labels(task.regions, task.full_shape, img.shape[:2]))
        if task.mask is not None:
            masks.append(read_labels(task.mask, task.full_shape, img.shape[:2]) != 0)
    if labels:
        options["regions"] = np.stack(labels)  # (N, h, w): each frame's own labels
    if masks:
        options["mask"] = np.stack(masks)  # (N, h, w): each frame's own mask
    options["steps"] = int(plan.settings.get("steps") or options["steps"])
    options["preview_interval"] = preview_interval
    previous = None
    if plan.previous is not None and plan.start > 0:
        previous = previous_frame(plan.previous, plan.stack_axis or 0, plan.start - 1)
    notes = [f"the content is stylised slice by slice along axis {plan.stack_axis} ({len(frames)} slices)"]
    # the content's own note names the one slice of frame 0 ("using the 2-D slice shown now"): its
    # other parts (multiscale level, colormap) and the styles' notes hold for every frame
    for note in first_notes:
        notes += [p for p in note.split("; ") if not (p.startswith("content ") and "2-D slice" in p)]
    address = plan.settings.get("run_on") or None
    job = EngineJob(np.stack(frames), style, options, True, plan.start, previous, address)
    return job, notes


def previous_frame(layer: LayerSnapshot, axis: int, t: int) -> np.ndarray:
    """Frame ``t`` of a stack pastiche layer (RGBA, the frame axis ``axis``) as RGB float32."""
    data = np.asarray(layer.data)
    index: list[Any] = [0] * (data.ndim - 1)
    index[axis] = t
    rows = [ax for ax in range(data.ndim - 1) if data.shape[ax] > 1 and ax != axis][-2:]
    for ax in rows:
        index[ax] = slice(None)
    return np.ascontiguousarray(np.asarray(data[tuple(index)], dtype=np.float32)[..., :3])
