"""Helpers shared by the napari widget tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import hashlib

import numpy as np

RUN_TIMEOUT = 180_000  # ms; the child process imports torch (slow on a loaded 2-core machine)


def digest(array) -> str:
    a = np.ascontiguousarray(np.asarray(array))
    return hashlib.sha256(a.tobytes() + str((a.shape, a.dtype)).encode()).hexdigest()


def open_widget(viewer, engines=None):
    """The widget as a user opens it: Plugins > Style Transfer; with ``engines`` (an engine factory,
    e.g. the ``fake_engine`` fixture), the same widget made with that factory and docked as napari
    docks a plugin's widget (it is given the viewer behind napari's public-only proxy)."""
    if engines is None:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-nst", "Style Transfer")
        return widget
    from napari.utils._proxies import PublicOnlyProxy

    from napari_nst._widget import StyleTransferWidget

    widget = StyleTransferWidget(PublicOnlyProxy(viewer), engines=engines)
    viewer.window.add_dock_widget(widget, name="Style Transfer (napari-nst)")
    return widget


def viewer_with_widget(make_napari_viewer, images, engines=None):
    """The user's order: a viewer, a content and a style layer, then the widget with both picked."""
    viewer = make_napari_viewer()
    content, style = images
    c = viewer.add_image(content, name="content")
    s = viewer.add_image(style, name="style", rgb=True)
    widget = open_widget(viewer, engines)
    widget.content.value, widget.style.value = c, s
    return viewer, widget, c, s


def tiny(widget, weights, steps=6, size=32):
    """Settings for a quick run: shallow layers of vgg16, a few steps, on the CPU."""
    widget.size.value = size
    widget.steps.value = steps
    widget.model.value = "vgg16"
    widget.weights.value = str(weights)
    widget.device.value = "cpu"
    widget.content_layers.value = "relu2_2"
    widget.style_layers.value = "relu1_1, relu2_1"


def world_extent(layer):
    """World coordinates of the outer corners of a 2-D layer's first and last pixels."""
    h, w = layer.data.shape[:2]
    lo = layer.data_to_world((-0.5, -0.5))
    hi = layer.data_to_world((h - 0.5, w - 0.5))
    return np.array([lo, hi], dtype=float)


def errors(notifications):
    return [m for sev, m in notifications if "error" in sev.lower()]


def read_as_a_run_does(layer, point=None, displayed=None, name="content", long_edge=64):
    """A layer read as a widget run reads it: snapshot (main thread), then read_input (worker)."""
    from napari_nst._run.inputs import read_input, snapshot
    from napari_nst._run.layer_view import displayed_axes

    nd = int(layer.ndim)
    axes = displayed_axes(nd, len(point) if point is not None else nd, displayed) if nd > 2 else (0, 1)
    return read_input(snapshot(layer, point), axes, long_edge, name)
