"""The widget's stack choice: "This slice" or "All slices along axis k (N)", and following the frame.

Shown only when the content layer has more dimensions than the canvas displays. A stack run is
planned by :func:`napari_nst._run.plan.build_plan` (as a 2-D run, with a ``stack_axis``) and shown
by a :class:`napari_nst._run.stack.StackSink`; Continue on a stack pastiche that is not finished
resumes at its first frame not made.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox

from napari_nst._qt import notify
from napari_nst._run.inputs import slice_axes, snapshot
from napari_nst._run.plan import RunPlan, stack_axes
from napari_nst._run.sink import META_KEY
from napari_nst._run.stack import StackSink, stack_memory_problem
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

    def refresh(self, content: Any = None, keep: int | None = None) -> None:
        """Offer the content layer's axes that are not displayed (hidden when there are none);
        the choice made stays (``keep``: the one made before the choices were reset)."""
        self._content = content if content is not None else self._content
        choices: list[tuple[str, int | None]] = [(THIS_SLICE, None)]
        layer = self._content
        if layer is not None and int(layer.ndim) > 2 and layer in self._viewer.layers:
            snap = snapshot(layer, tuple(self._viewer.dims.point))
            axes = slice_axes(snap, self._viewer.dims.ndim, tuple(self._viewer.dims.displayed))
            choices += [(f"All slices along axis {ax} ({n})", ax) for ax, n in stack_axes(snap, axes)]
        current = keep if keep is not None else self.slices.value
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

    def request(self, init_layer: Any) -> dict[str, Any] | None:
        """The stack part of a run request (``stack_axis``, ``start``, ``previous``) when the run is a
        stack: every slice along the axis chosen, or Continue on a stack pastiche whose frames are
        not all made (``init_layer``: resumed at its first frame not made); None: a 2-D run."""
        meta = self.unfinished(init_layer)
        if meta:
            axis, start = int(meta["settings"]["stack"]["axis"]), int(meta.get("frames_done", 0))
            return {"stack_axis": axis, "start": start, "previous": init_layer}
        if init_layer is None and self.axis() is not None:
            return {"stack_axis": self.axis()}
        return None

    def sink(self, plan: RunPlan, resume: Any = None) -> StackSink | None:
        """The nD layer a stack plan fills (``resume``: the stack pastiche to fill further); None, and
        an error shown, when the stack would not fit in memory."""
        problem = stack_memory_problem(plan, host_available())
        if problem:
            notify.error(problem)
            return None
        return StackSink(self._viewer, plan, follow=bool(self.follow.value), layer=resume)
