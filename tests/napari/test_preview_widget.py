"""The instant preview in the widget: it appears on picking content and style, follows a new pick,
Run paints over it, and without napari-nst[preview] the status says so and nothing breaks."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from nst_helpers import RUN_TIMEOUT, digest, errors, open_widget, tiny, world_extent

pytestmark = pytest.mark.gui

PREVIEW_TIMEOUT = 60_000  # ms: onnxruntime loads two small networks on a loaded 2-core machine


def _needs_extra():
    from napari_nst.core.preview import unavailable

    why = unavailable()
    if why is not None:
        pytest.skip(f"needs napari-nst[preview]: {why}")


def _previews(viewer):
    return [lay for lay in viewer.layers if lay.metadata.get("napari_nst", {}).get("preview")]


def _open(make_napari_viewer, images, monkeypatch):
    monkeypatch.setenv("NAPARI_NST_PREVIEW", "1")  # conftest switches it off for the other tests
    viewer = make_napari_viewer()
    content, style = images
    c = viewer.add_image(content, name="cells", scale=(0.5, 0.25), translate=(10.0, -3.0))
    s = viewer.add_image(style, name="paint", rgb=True)
    second = viewer.add_image(np.ascontiguousarray(style[::-1, :, ::-1]), name="other paint", rgb=True)
    widget = open_widget(viewer)
    widget.content.value, widget.style.value = c, s
    return viewer, widget, c, s, second


def test_preview_appears_on_picking_and_follows_the_style(
    make_napari_viewer, qtbot, images, monkeypatch, notifications
):
    _needs_extra()
    viewer, widget, c, s, second = _open(make_napari_viewer, images, monkeypatch)
    before = digest(c.data), digest(s.data)
    qtbot.waitUntil(lambda: len(_previews(viewer)) == 1 and widget.preview.worker is None, timeout=PREVIEW_TIMEOUT)
    (layer,) = _previews(viewer)
    assert layer.name == "cells × paint"
    assert layer.rgb and layer.data.dtype == np.float32 and layer.data.shape[-1] == 3
    assert 0.0 <= layer.data.min() and layer.data.max() <= 1.0
    np.testing.assert_allclose(world_extent(layer), world_extent(c), atol=1e-9)  # exactly over the content
    assert "preview" in widget.status.value.lower()
    first = digest(layer.data)

    widget.style.value = second  # a new pick: the same layer, painted anew
    qtbot.waitUntil(lambda: _previews(viewer)[0].name == "cells × other paint", timeout=PREVIEW_TIMEOUT)
    qtbot.waitUntil(lambda: widget.preview.worker is None, timeout=PREVIEW_TIMEOUT)
    assert _previews(viewer) == [layer] and len(viewer.layers) == 4
    assert digest(layer.data) != first
    assert (digest(c.data), digest(s.data)) == before  # the user's layers are never modified
    assert not errors(notifications)
    assert "torch" not in sys.modules


def test_run_paints_over_the_preview(make_napari_viewer, qtbot, images, vgg16_weights, monkeypatch, notifications):
    _needs_extra()
    viewer, widget, c, s, _ = _open(make_napari_viewer, images, monkeypatch)
    qtbot.waitUntil(lambda: len(_previews(viewer)) == 1 and widget.preview.worker is None, timeout=PREVIEW_TIMEOUT)
    (layer,) = _previews(viewer)
    tiny(widget, vgg16_weights, steps=4, size=32)
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT)
    assert not errors(notifications)
    assert layer in viewer.layers and len(viewer.layers) == 4  # the preview's layer holds the pastiche
    meta = layer.metadata["napari_nst"]
    assert meta["status"] == "finished" and not meta.get("preview")
    assert max(layer.data.shape[:2]) == 32 and layer.data.dtype == np.uint8
    np.testing.assert_allclose(world_extent(layer), world_extent(c), atol=1e-9)
    assert _previews(viewer) == []


def test_without_the_extra_a_note_and_nothing_else(make_napari_viewer, qtbot, images, monkeypatch, notifications):
    from napari_nst.core import preview

    line = 'needs onnxruntime: pip install "napari-nst[preview]"'
    monkeypatch.setattr(preview, "missing", lambda extra, what: f"{what} {line}")
    viewer, widget, c, s, second = _open(make_napari_viewer, images, monkeypatch)
    widget.style.value = second
    qtbot.wait(200)
    assert widget.preview.worker is None and _previews(viewer) == [] and len(viewer.layers) == 3
    assert 'pip install "napari-nst[preview]"' in widget.status.value
    assert "\n" not in widget.status.value
    assert not errors(notifications)


def test_restyle_only_keeps_the_content_outside_the_mask_in_the_preview(
    make_napari_viewer, qtbot, images, monkeypatch, notifications
):
    """Picking a Labels layer under Restyle only paints the preview again: the content (gray, as the
    content is) where nothing is painted, the preview as before deep inside the painted part."""
    _needs_extra()
    viewer, widget, c, s, _ = _open(make_napari_viewer, images, monkeypatch)
    qtbot.waitUntil(lambda: len(_previews(viewer)) == 1 and widget.preview.worker is None, timeout=PREVIEW_TIMEOUT)
    (layer,) = _previews(viewer)
    whole = np.array(layer.data)
    painted = np.zeros(c.data.shape, np.uint8)
    painted[:, :26] = 1
    labels = viewer.add_labels(painted, name="sky", scale=c.scale, translate=c.translate)
    widget.mask.value = labels
    qtbot.waitUntil(lambda: not np.array_equal(layer.data, whole), timeout=PREVIEW_TIMEOUT)
    qtbot.waitUntil(lambda: widget.preview.worker is None, timeout=PREVIEW_TIMEOUT)
    out = np.asarray(layer.data)
    outside = out[:, 26:]
    np.testing.assert_allclose(outside[..., 0], outside[..., 1], atol=1e-6)  # the grayscale content
    assert np.abs(outside - whole[:, 26:]).max() > 0.05
    np.testing.assert_allclose(out[:, :16], whole[:, :16], atol=1e-6)  # over 3 sigmas inside the mask
    assert not errors(notifications)
    assert "torch" not in sys.modules
