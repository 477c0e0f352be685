"""The widget's stack choice: "This slice" or "All slices along axis k (N)", and following the frame.

Shown only when the content layer has more dimensions than the canvas displays. A stack run is
planned by :func:`napari_nst._run.stack.plan_stack` and shown by a
:class:`napari_nst._run.stack.StackSink`; Continue on a stack pastiche that is not finished
resumes at its first frame not made.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox

from napari_nst._qt import notify
from napari_nst._run.inputs import slice_axes, snapshot
from napari_nst._run.sink import META_KEY
from napari_nst._run.stack import (
    StackSink,
    labels_per_frame,
    plan_stack,
    stack_axes,
    stack_memory_problem,
    with_stack_controls,
)
from napari_nst.core.compute.memory import host_available

THIS_SLICE = "This slice"


class StackPanel:
    """The "Slices" picker and the "Follow the frame" checkbox (main thread only)."""

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer
        self.slices = ComboBox(
            name="slices",
            label="Slices",
            choices=[(THIS_SLICE, None)],
            value=None,
            tooltip="Stylise the slice shown, or every slice along an axis the canvas does not "
            "show (a z stack, a time-lapse): frame by frame, each consistent with the one "
            "before (optical flow).",
        )
        self.follow = CheckBox(
            name="follow_frame",
            text="Follow the frame being made",
            value=True,
            tooltip="Move the dims slider to each frame of a stack as it is made.",
        )
        self.slices.visible = self.follow.visible = False
        self.offered = False  #: whether the content has axes to stack along (the fields are shown)
        self._content: Any = None

    def widgets(self) -> list[Any]:
        return [self.slices, self.follow]

    def refresh(self, content: Any = None) -> None:
        """Offer the content layer's axes that are not displayed (hidden when there are none)."""
        self._content = content if content is not None else self._content
        choices: list[tuple[str, int | None]] = [(THIS_SLICE, None)]
        layer = self._content
        if layer is not None and int(layer.ndim) > 2 and layer in self._viewer.layers:
            snap = snapshot(layer, tuple(self._viewer.dims.point))
            axes = slice_axes(snap, self._viewer.dims.ndim, tuple(self._viewer.dims.displayed))
            choices += [(f"All slices along axis {ax} ({n})", ax) for ax, n in stack_axes(snap, axes)]
        current = self.slices.value
        self.slices.choices = choices
        self.slices.value = current if current in [v for _, v in choices] else None
        self.offered = len(choices) > 1
        self.slices.visible = self.follow.visible = self.offered

    def axis(self) -> int | None:
        return self.slices.value if self.offered else None

    @staticmethod
    def unfinished(layer: Any) -> dict[str, Any] | None:
        """A stack pastiche layer's metadata when some of its frames are not made yet."""
        meta = getattr(layer, "metadata", {}).get(META_KEY, {}) if layer is not None else {}
        if "frames" in meta and "stack" in meta.get("settings", {}):
            return meta if int(meta.get("frames_done", 0)) < int(meta["frames"]) else None
        return None

    def start(
        self,
        controller: Any,
        content: Any,
        style: Any,
        opts: dict[str, Any],
        settings: dict[str, Any],
        resume: Any = None,
        styles: tuple[Any, ...] = (),
        labels: Any = None,
    ) -> bool:
        """Plan and start a stack run (``resume``: an unfinished stack pastiche layer to fill further;
        ``styles``: style layers 2, 3 ...; ``labels``: a Labels layer, read over each frame)."""
        point, displayed = tuple(self._viewer.dims.point), tuple(self._viewer.dims.displayed)
        meta = self.unfinished(resume) or {}
        axis = int(meta["settings"]["stack"]["axis"]) if meta else self.axis()
        assert axis is not None
        start = int(meta.get("frames_done", 0))
        plan = plan_stack(
            snapshot(content, point),
            snapshot(style, point),
            dict(opts, init="content"),
            settings,
            self._viewer.dims.ndim,
            displayed,
            axis,
            start=start,
            previous=snapshot(resume, point) if meta and start > 0 else None,
        )
        regions = labels_per_frame(labels, content, point, plan) if labels is not None else None
        extras = [snapshot(lay, point) for lay in styles]
        plan = with_stack_controls(plan, extras, regions, self._viewer.dims.ndim, displayed)
        problem = stack_memory_problem(plan, host_available())
        if problem:
            notify.error(problem)
            return False
        sink = StackSink(self._viewer, plan, follow=bool(self.follow.value), layer=resume if meta else None)
        sources = {"content": content, "style": style, "init": None, "styles": list(styles), "regions": labels}
        controller.start(plan, sources, sink=sink)
        return True
