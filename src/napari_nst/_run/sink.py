"""Sinks show a run's records in the viewer (no Qt; main thread only: they touch layers).

:class:`LayerSink` is the 2-D sink: one RGB Image layer, created with the first image, placed
exactly over the content slice it was made from whatever the working size (coarse-to-fine levels
are smaller), and its ``metadata["napari_nst"]`` kept up to date. A stack run has an nD sink
(:class:`napari_nst._run.stack.StackSink`) with the same calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_nst import __version__
from napari_nst._run.layer_view import FULL_PRECISION, pastiche_placement
from napari_nst._run.plan import RunPlan, Task
from napari_nst.core.records import Progress

#: metadata key of pastiche layers
META_KEY = "napari_nst"


def run_metadata(
    plan: RunPlan,
    outcome: str,
    last: Progress | None = None,
    notes: list[str] | None = None,
    stop_reason: str | None = None,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """The pastiche layer's metadata: settings, outcome and the last record's numbers."""
    task = plan.tasks[0]
    meta: dict[str, Any] = {
        "content": task.content.name,
        "style": task.styles[0].name,
        "settings": dict(plan.settings),
        "status": outcome,
        "napari_nst_version": __version__,
    }
    if len(task.styles) > 1 or task.regions is not None:
        meta.update(controls_metadata(task))
    if task.mask is not None:
        meta["mask"] = {"layer": task.mask.name, "restyled": "where it is nonzero; elsewhere the start image"}
    if notes:
        meta["notes"] = list(notes)
    if last is not None:
        meta.update(
            step=last.step,
            total=last.total,
            losses=dict(last.losses),
            weights=dict(last.weights),
            device=last.device,
            elapsed=round(last.elapsed, 3),
            shape=tuple(last.shape),
            level=last.level,
            levels=last.levels,
        )
        if last.frames > 1:  # a stack: Continue resumes at the first frame not finished
            meta.update(frame=last.frame, frames=last.frames, frames_done=last.frame + (last.step == last.total))
    if stop_reason:
        meta["stop_reason"] = stop_reason
    if error is not None:
        meta["error"] = f"{type(error).__name__}: {error}"
    return {META_KEY: meta}


def controls_metadata(task: Task) -> dict[str, Any]:
    """Several styles and regions, in words: which style layers, their blend, which label got which."""
    names = task.style_names
    out: dict[str, Any] = {"styles": names}
    blend = task.options.get("style_blend")
    if blend is not None:
        total = float(sum(blend)) or 1.0
        out["style_blend"] = {n: round(float(w) / total, 4) for n, w in zip(names, blend, strict=True)}
    if task.regions is not None:
        mapping = task.options.get("region_styles") or {}
        out["regions"] = {
            "layer": task.regions.name,
            "region_styles": {
                int(k): (names[v] if v is not None and v < len(names) else None) for k, v in mapping.items()
            },
            "other labels": "blend of all styles",
        }
        if task.style_regions:
            out["regions"]["style_regions"] = {
                part.name: ("whole" if part.regions is None else part.regions.name) for part in task.styles
            }
    return out


class LayerSink:
    """The pastiche of a 2-D run as one Image layer over the content (main thread only)."""

    def __init__(self, viewer: Any, plan: RunPlan) -> None:
        self._viewer = viewer
        self._plan = plan
        self.layer: Any = None
        self._shape: tuple[int, int] | None = None

    def alive(self) -> bool:
        """The layer exists and is still in the viewer."""
        return self.layer is not None and self.layer in self._viewer.layers

    def show(self, task: Task, image: np.ndarray, shape: tuple[int, int] | None, metadata: dict[str, Any]) -> None:
        """Show ``image`` (float32 RGB at working ``shape``); the layer is made on the first call.

        A layer the user deleted is not brought back.
        """
        hw = shape if shape and shape[0] else image.shape[:2]
        shape = (int(hw[0]), int(hw[1]))
        if self.layer is None:
            place = pastiche_placement(task.content, task.axes, task.full_shape, shape)
            self.layer = self._viewer.add_image(
                image,
                name=self._plan.output_name,
                rgb=True,
                contrast_limits=(0.0, 1.0),
                interpolation2d="linear",
                metadata=metadata,
                **place,
            )
            self._shape = shape
            return
        if not self.alive():
            return
        self.layer.data = image
        if shape != self._shape:  # a finer level: same world extent, smaller pixels
            place = pastiche_placement(task.content, task.axes, task.full_shape, shape)
            self.layer.scale = place["scale"]
            self.layer.translate = place["translate"]
            self._shape = shape

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        if self.alive():
            self.layer.metadata = metadata

    def finish(self) -> None:
        """The run is over: hold the pastiche as 8-bit RGB, as it is shown.

        napari's own writers refuse float32 for PNG and JPEG, and *File > Save Selected Layers* to
        ``.png`` is what users try first; 8 bits is also what the screen shows. The float32 image
        is kept for Continue (:func:`~napari_nst._run.layer_view.full_precision`).
        """
        if not self.alive() or np.asarray(self.layer.data).dtype.kind != "f":
            return
        image = np.asarray(self.layer.data, dtype=np.float32)
        data = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
        self.layer.data = data
        self.layer.contrast_limits = (0, 255)
        FULL_PRECISION[self.layer] = (data, image)
