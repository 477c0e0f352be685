"""The instant preview in the widget: as soon as content and style are picked (and on each change of
them), a feed-forward network's pastiche appears in the pastiche layer, marked as a preview; Run
then paints into that same layer (:meth:`PreviewPanel.sink_for`).

The network runs in napari's own process (onnxruntime, no torch: core/preview.py) in a napari
``thread_worker``: the layers are snapshotted on the main thread, read and painted in the worker,
and the layer is touched on the main thread only. Without ``napari-nst[preview]`` the status line
says so once and nothing else happens; ``$NAPARI_NST_PREVIEW=0`` switches the preview off.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from napari_nst._run.inputs import LayerSnapshot, read_input, slice_axes, slice_shape, snapshot
from napari_nst._run.labels import as_labels, labels_snapshot, read_labels
from napari_nst._run.plan import output_name
from napari_nst._run.sink import META_KEY, LayerSink
from napari_nst._run.state import same_layer

#: ``$NAPARI_NST_PREVIEW=0``: no preview (the tests of other parts switch it off)
PREVIEW_ENV = "NAPARI_NST_PREVIEW"
#: the preview's long edge when the Size field is empty (the network paints at 384 px)
DEFAULT_SIZE = 512
PREVIEW_TEXT = "Instant preview (a feed-forward network's quick look, not the optimisation): Run paints it properly."


def _paint(
    content: LayerSnapshot,
    styles: list[LayerSnapshot],
    axes: list[tuple[int, int]],
    size: int,
    controls: dict[str, Any],
) -> tuple[np.ndarray, tuple[int, int]]:
    """In the worker thread: the layers' displayed slices read as shown, and their preview."""
    from napari_nst.core.preview import preview

    image, _ = read_input(content, axes[0], size, "content")
    read = [read_input(s, a, size, "style")[0] for s, a in zip(styles, axes[1:], strict=True)]
    if controls.get("mask") is not None:  # "Restyle only": the labels under the content's pixels, nonzero
        controls = {
            **controls,
            "mask": read_labels(controls["mask"], slice_shape(content, axes[0]), image.shape[:2]) != 0,
        }
    out = preview(image, read if len(read) > 1 else read[0], size=max(image.shape[:2]), **controls)
    return out, slice_shape(content, axes[0])


class PreviewPanel:
    """Keeps a preview layer in step with the picked content and style (main thread)."""

    def __init__(self, viewer: Any, widget: Any) -> None:
        self._viewer = viewer
        self._widget = widget
        self.layer: Any = None  #: the preview layer, until a run takes it over
        self.worker: Any = None  #: the preview being painted, or None
        self._again = False  # content or style changed while a preview was being painted
        self._generation = 0  # results of an older request (or from before a run) are dropped
        self._snap: LayerSnapshot | None = None
        self._axes: tuple[int, int] = (0, 1)
        self.note: str | None = None  #: why there is no preview here (the extra missing), or None
        if os.environ.get(PREVIEW_ENV, "1") == "0":
            self.note = "off"
        else:
            from napari_nst.core.preview import unavailable

            why = unavailable()
            self.note = None if why is None else f"No instant preview: {why}."

    def connect(self) -> None:
        self._widget.content.changed.connect(self.request)
        self._widget.style.changed.connect(self.request)
        if getattr(self._widget, "mask", None) is not None:
            self._widget.mask.changed.connect(self.request)

    @property
    def enabled(self) -> bool:
        return self.note is None

    # ------------------------------------------------------------------ requests

    def request(self, *_: Any) -> None:
        """Paint the preview of the content and style picked now (after the one being painted)."""
        widget = self._widget
        if self.note is not None:
            if self.note != "off" and widget.worker is None:
                widget.show_status(self.note)
            return
        if widget.worker is not None or widget.controller.closed:  # a run is painting the pastiche
            return
        if self.worker is not None:
            self._again = True
            return
        content, style = widget.content.value, widget.style.value
        if content is None or style is None or same_layer(content, style) or _is_preview(content):
            return
        self._start(content, [style, *widget.styles_panel.layers()[1:]])

    def _start(self, content: Any, styles: list[Any]) -> None:
        from napari.qt.threading import create_worker

        point, displayed = tuple(self._viewer.dims.point), tuple(self._viewer.dims.displayed)
        snaps = [snapshot(lay, point) for lay in (content, *styles)]
        axes = [slice_axes(s, len(point), displayed) for s in snaps]
        controls = self._controls(len(styles))
        mask = getattr(self._widget, "mask", None)
        layer = getattr(mask, "value", None)
        if layer is not None and not (hasattr(layer, "to_labels") and len(layer.data) == 0):
            labels = as_labels(layer, content, point, axes[0])  # a Shapes layer rasterised here, on the main thread
            controls["mask"] = labels_snapshot(labels, content, point, axes[0])
        size = self._size()
        self._generation += 1
        generation, self._snap, self._axes = self._generation, snaps[0], axes[0]
        names = (snaps[0].name, " + ".join(s.name for s in snaps[1:]))
        worker = create_worker(_paint, snaps[0], snaps[1:], axes, size, controls, _start_thread=False)
        worker.returned.connect(lambda result: self._show(result, generation, names))
        worker.errored.connect(lambda exc: self._failed(exc, generation))
        worker.finished.connect(self._finished)
        self.worker = worker
        worker.start()

    def _size(self) -> int:
        value = getattr(self._widget, "size", None)
        size = getattr(value, "value", None)
        return int(size) if isinstance(size, (int, np.integer)) and size > 0 else DEFAULT_SIZE

    def _controls(self, n_styles: int) -> dict[str, Any]:
        """The widget's blend, colours and strength, where the fields hold valid values."""
        try:
            opts = self._widget.options()
        except ValueError:
            return {}
        out = {k: opts[k] for k in ("preserve_color", "style_strength") if opts.get(k) is not None}
        if n_styles > 1 and opts.get("style_blend") is not None:
            out["style_blend"] = tuple(opts["style_blend"])
        return out

    def _finished(self, *_: Any) -> None:
        self.worker = None
        if self._again and not self._widget.controller.closed:
            self._again = False
            self.request()

    def _failed(self, exc: BaseException, generation: int) -> None:
        if generation == self._generation and self._widget.worker is None and not self._widget.controller.closed:
            self._widget.show_status(f"No instant preview: {exc}")

    # ------------------------------------------------------------------ the layer

    def _show(self, result: tuple[np.ndarray, tuple[int, int]], generation: int, names: tuple[str, str]) -> None:
        widget = self._widget
        if generation != self._generation or widget.worker is not None or widget.controller.closed:
            return  # an older request's, or a run has started since
        image, full_shape = result
        snap = self._snap
        assert snap is not None
        from napari_nst._run.layer_view import pastiche_placement

        place = pastiche_placement(snap, self._axes, full_shape, image.shape[:2])
        meta = {META_KEY: {"preview": True, "content": names[0], "style": names[1], "status": "preview"}}
        name = output_name(names[0], [names[1]], continued=False)
        if self.layer is not None and self.layer in self._viewer.layers:
            self.layer.data = image
            self.layer.scale, self.layer.translate = place["scale"], place["translate"]
            self.layer.metadata, self.layer.name = meta, name
        else:
            self.layer = self._viewer.add_image(
                image, name=name, rgb=True, contrast_limits=(0.0, 1.0), interpolation2d="linear", metadata=meta, **place
            )
        widget.show_status(PREVIEW_TEXT)

    def sink_for(self, plan: Any) -> LayerSink | None:
        """A sink that paints the run into the preview layer (None: no preview to refine). The
        layer then belongs to the run; a later pick makes a new preview layer."""
        self._generation += 1  # a preview still being painted is dropped
        layer, self.layer = self.layer, None
        if layer is None or layer not in self._viewer.layers or plan.stack_axis is not None:
            return None
        sink = LayerSink(self._viewer, plan)
        sink.layer = layer  # its first image replaces the preview (placement updated: a new shape)
        layer.name = plan.output_name
        return sink


def _is_preview(layer: Any) -> bool:
    meta = getattr(layer, "metadata", {}).get(META_KEY)
    return isinstance(meta, dict) and bool(meta.get("preview"))
