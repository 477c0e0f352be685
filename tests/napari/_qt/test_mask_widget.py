"""The widget's "Restyle only" picker (option ``mask``): a Labels or Shapes layer over the content
limits the pixels a run changes; Continue repaints a region of a finished pastiche. The viewer
first, then the widget."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from nst_helpers import RUN_TIMEOUT, digest, errors, open_widget, tiny

pytestmark = pytest.mark.gui


def _viewer(make_napari_viewer, images, engines=None):
    viewer = make_napari_viewer()
    content, style = images
    c = viewer.add_image(content, name="content")
    s = viewer.add_image(style, name="stripes", rgb=True)
    widget = open_widget(viewer, engines)
    widget.content.value, widget.style.value = c, s
    return viewer, widget, c, s


def _run_fake(qtbot, widget, fake_engine):
    widget.size.value, widget.steps.value = 52, 2  # the content's own size: its working shape is 36x52
    assert widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20_000)
    return fake_engine.instances[-1]


def test_the_picker_offers_labels_and_shapes_layers_and_defaults_to_none(make_napari_viewer, images):
    viewer, widget, c, s = _viewer(make_napari_viewer, images)
    assert widget.mask.value is None and widget.mask.label == "Restyle only"
    lab = viewer.add_labels(np.zeros((36, 52), np.int32), name="painted")
    shp = viewer.add_shapes(name="drawn")
    names = [widget.mask.native.itemText(i) for i in range(widget.mask.native.count())]
    assert names[0] == "none" and sorted(names[1:]) == ["drawn", "painted"] and widget.mask.value is None
    widget.mask.value = shp
    viewer.layers.remove(lab)  # napari's reset of the choices keeps the one picked
    assert widget.mask.value is shp


def test_a_labels_layer_limits_the_run_to_its_painted_pixels(
    make_napari_viewer, qtbot, images, fake_engine, notifications
):
    viewer, widget, c, s = _viewer(make_napari_viewer, images, fake_engine)
    painted = np.zeros((36, 52), np.int32)
    painted[5:20, 10:30] = 3
    lab = viewer.add_labels(painted, name="painted")
    before = [digest(x.data) for x in (c, s, lab)]
    widget.mask.value = lab
    fake = _run_fake(qtbot, widget, fake_engine)
    assert fake.opts.mask.dtype == bool and fake.opts.mask.shape == fake.content.shape[:2] == (36, 52)
    np.testing.assert_array_equal(fake.opts.mask, painted != 0)
    meta = viewer.layers[-1].metadata["napari_nst"]
    assert meta["mask"]["layer"] == "painted" and meta["settings"]["mask"] == "layer: painted"
    assert [digest(x.data) for x in (c, s, lab)] == before and not errors(notifications)
    # none again: no mask reaches the engine
    widget.mask.value = None
    assert _run_fake(qtbot, widget, fake_engine).opts.mask is None


def test_a_shapes_layer_is_rasterised_over_the_content(make_napari_viewer, qtbot, images, fake_engine, notifications):
    viewer, widget, c, s = _viewer(make_napari_viewer, images, fake_engine)
    rect = np.array([[4.0, 8.0], [4.0, 30.0], [20.0, 30.0], [20.0, 8.0]])
    shp = viewer.add_shapes([rect], shape_type="polygon", name="drawn")
    before = digest(shp.data[0])
    widget.mask.value = shp
    mask = _run_fake(qtbot, widget, fake_engine).opts.mask
    assert mask.shape == (36, 52)
    assert mask[6:19, 10:29].all() and mask.sum() == pytest.approx(17 * 23, rel=0.15)
    assert not mask[:3].any() and not mask[22:].any() and not mask[:, :7].any() and not mask[:, 32:].any()
    # read as it lies over the content: the shapes layer moved by 10 px moves the mask with it
    shp.translate = (10.0, 0.0)
    moved = _run_fake(qtbot, widget, fake_engine).opts.mask
    np.testing.assert_array_equal(moved[10:], mask[:-10])
    assert digest(shp.data[0]) == before and not errors(notifications)


def test_an_empty_shapes_layer_or_labels_layer_makes_nothing(
    make_napari_viewer, qtbot, images, fake_engine, notifications
):
    viewer, widget, c, s = _viewer(make_napari_viewer, images, fake_engine)
    widget.mask.value = viewer.add_shapes(name="drawn")
    assert not widget.start()
    assert fake_engine.instances == [] and "has no shapes" in " ".join(errors(notifications))
    # a Labels layer with nothing painted: the engine's check refuses it before any work
    widget.mask.value = viewer.add_labels(np.zeros((36, 52), np.int32), name="unpainted")
    n = len(viewer.layers)
    widget.size.value, widget.steps.value = 52, 2
    assert widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20_000)
    assert fake_engine.instances == [] and len(viewer.layers) == n
    assert "mask has no nonzero pixel" in " ".join(errors(notifications))


def test_a_labels_stack_gives_each_frame_its_mask(make_napari_viewer, qtbot, images, fake_engine, notifications):
    viewer = make_napari_viewer()
    frames = np.stack([images[0]] * 3)
    c = viewer.add_image(frames, name="cells")
    s = viewer.add_image(images[1], name="paint", rgb=True)
    masks = np.zeros((3, 36, 52), np.int32)
    for t in range(3):
        masks[t, 5 + 5 * t : 15 + 5 * t, 10:30] = 1
    lab = viewer.add_labels(masks, name="per frame")
    widget = open_widget(viewer, fake_engine)
    widget.content.value, widget.style.value, widget.mask.value = c, s, lab
    widget.slices.value = 0  # all slices along axis 0
    widget.size.value, widget.steps.value = 52, 2
    assert widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20_000)
    got = fake_engine.instances[-1].opts.mask
    assert got.shape == (3, 36, 52) and np.array_equal(got, masks != 0) and not errors(notifications)


def test_continue_repaints_only_the_masked_region_of_the_pastiche(
    make_napari_viewer, qtbot, images, vgg16_weights, notifications
):
    """A real run, then Continue with another style and a mask: outside the mask the continued
    pastiche is the first one's float32 image bit for bit (Continue starts from it)."""
    from napari_nst._run.layer_view import full_precision

    viewer, widget, c, s = _viewer(make_napari_viewer, images)
    flipped = viewer.add_image(images[1][::-1, :, ::-1].copy(), name="flipped", rgb=True)
    tiny(widget, vgg16_weights, steps=3, size=52)
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT)
    first = viewer.layers[-1]
    first_image = full_precision(first)
    assert first_image is not None and first_image.shape == (36, 52, 3)
    painted = np.zeros((36, 52), np.int32)
    painted[8:28, 20:44] = 1
    widget.mask.value = viewer.add_labels(painted, name="repaint here")
    widget.style.value = flipped
    viewer.layers.selection.active = first
    widget.continue_run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT)
    again = viewer.layers[-1]
    assert again is not first and again.metadata["napari_nst"]["status"] == "finished", notifications
    second = full_precision(again)
    assert np.array_equal(second[painted == 0], first_image[painted == 0])
    assert np.abs(second[painted != 0] - first_image[painted != 0]).max() > 0.01
    assert not errors(notifications) and "torch" not in sys.modules
