"""The memory estimate beside the Size field: refreshed when what it depends on changes.

It depends on the content layer (its displayed slice's shape), the form's size, network,
precision, device, scales, optimiser, layers, tile size and max memory, and on the styles and
regions picked (tiles are not used with several styles or regions). The numbers come from
:mod:`napari_nst._run.memory_estimate` (no torch in this process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import Container, Label

from napari_nst._run.memory_estimate import Estimate, estimate, layer_shape
from napari_nst.core.compute.memory import host_available

#: form fields whose value changes the estimate
WATCHED = (
    "size",
    "model",
    "precision",
    "device",
    "scales",
    "optimizer",
    "content_layers",
    "style_layers",
    "tile_size",
    "max_memory",
)


class MemoryPanel:
    """A Label named ``memory_estimate``; ``refresh()`` recomputes it (main thread)."""

    def __init__(self, viewer: Any, widget: Any, gpu: Callable[[], bool]) -> None:
        self._viewer, self._widget, self._gpu = viewer, widget, gpu
        self.label = Label(name="memory_estimate", value="")
        self.label.native.setWordWrap(True)
        self.current: Estimate | None = None
        self.free: Callable[[], int | None] = host_available  #: the host's free bytes (tests replace it)

    def row(self, size: Any) -> Container[Any]:
        """The Size field with the estimate beside it, one row under the field's own label."""
        row = Container(
            name="size_row", label=size.label, layout="horizontal", labels=False, widgets=[size, self.label]
        )
        row.margins = (0, 0, 0, 0)
        row.tooltip = size.tooltip
        return row

    def connect(self) -> None:
        """Refresh on every change the estimate depends on (after the widget is built)."""
        w = self._widget
        for name in WATCHED:
            if name in w.form.fields:
                w.form.fields[name].changed.connect(self.refresh)
        for picker in (w.content, w.style, w.regions):
            picker.changed.connect(self.refresh)
        w.styles.changed.connect(self.refresh)
        self._viewer.dims.events.order.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        w = self._widget
        layer = w.content.value
        if layer is None:
            self._show(Estimate("", "Pick a content image to see the memory a run needs."))
            return
        try:
            opts = w.form.options()
        except ValueError as exc:  # a field to fix first (OptionError is a ValueError)
            self._show(Estimate("—", f"No memory estimate: {exc}"))
            return
        shape = layer_shape(layer, self._viewer.dims.ndim, tuple(self._viewer.dims.displayed))
        styles = len(w.styles_panel.pickers)
        regions = w.regions.value is not None
        gpu = self._gpu()
        self._show(estimate(shape, opts, gpu, styles, regions, available=None if gpu else self.free()))

    def _show(self, est: Estimate) -> None:
        self.current = est
        self.label.value = est.text
        self.label.tooltip = est.tip
