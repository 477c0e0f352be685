"""The widget's artistic controls: several style layers with weights, Keep colours,
Style strength, regions from a Labels layer. The viewer first, then the widget."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from nst_helpers import RUN_TIMEOUT, digest, errors, open_widget, tiny

pytestmark = pytest.mark.gui


def _viewer(make_napari_viewer, images, labels=None, engines=None, **labels_kw):
    viewer = make_napari_viewer()
    content, style = images
    c = viewer.add_image(content, name="content")
    s1 = viewer.add_image(style, name="stripes", rgb=True)
    s2 = viewer.add_image(style[::-1, :, ::-1].copy(), name="flipped", rgb=True)
    lab = viewer.add_labels(labels, name="painted", **labels_kw) if labels is not None else None
    widget = open_widget(viewer, engines)
    widget.content.value, widget.style.value = c, s1
    return viewer, widget, c, s1, s2, lab


def _halves(shape, value=1):
    labels = np.zeros(shape, np.int32)
    labels[..., shape[-1] // 2 :] = value
    return labels


def test_styles_weights_regions_and_colours_reach_the_engine(
    make_napari_viewer, qtbot, images, fake_engine, notifications
):
    labels = _halves((36, 52))
    labels[:5, :5] = 2
    viewer, widget, c, s1, s2, lab = _viewer(make_napari_viewer, images, labels, engines=fake_engine)
    before = [digest(x.data) for x in (c, s1, s2, lab)]
    widget.add_style.clicked.emit()
    picker = widget.styles_panel.pickers[1]
    assert picker.name == "style_1"
    picker.value = s2
    widget.styles_panel.weights[0].value, widget.styles_panel.weights[1].value = 3.0, 1.0
    assert (
        not widget.style_blend.native.isHidden()
        and "stripes 75%" in widget.style_blend.value
        and "flipped 25%" in widget.style_blend.value
    )
    widget.regions.value = lab
    rows = {w.name: w for w in widget.region_styles}
    assert set(rows) == {"label_0", "label_1", "label_2"}
    assert rows["label_0"].value == "blend" and rows["label_1"].value == "style 1: stripes"
    assert rows["label_2"].value == "style 2: flipped"
    rows["label_2"].value = "none"
    widget.preserve_color.value = "luminance"
    widget.style_strength.value = 2.0
    widget.size.value, widget.steps.value = 32, 3
    assert widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20_000)
    fake = fake_engine.instances[-1]
    assert isinstance(fake.style, list) and len(fake.style) == 2
    assert fake.opts.style_blend == (3.0, 1.0) and fake.opts.region_styles == {1: 0, 2: None}
    assert fake.opts.preserve_color == "luminance" and fake.opts.style_strength == pytest.approx(2.0, rel=0.01)
    regions = fake.opts.regions
    assert regions.shape == fake.content.shape[:2]  # read at the content's working shape
    assert regions[0, -1] == 1 and regions[-1, 0] == 0 and regions[0, 0] == 2
    out = viewer.layers[-1]
    meta = out.metadata["napari_nst"]
    assert out.name == "content × stripes + flipped"
    assert meta["styles"] == ["stripes", "flipped"] and meta["style_blend"] == {"stripes": 0.75, "flipped": 0.25}
    assert meta["regions"]["layer"] == "painted"
    assert meta["regions"]["region_styles"] == {1: "stripes", 2: None}
    assert [digest(x.data) for x in (c, s1, s2, lab)] == before
    assert not errors(notifications)
    # painting a new label adds its row; removing a style removes its choices
    lab.data = np.where(lab.data == 0, 3, lab.data)
    assert {w.name for w in widget.region_styles} == {"label_1", "label_2", "label_3"}
    widget.styles_panel.remove_style(widget.styles[1])
    assert len(widget.styles_panel.pickers) == 1 and widget.style_blend.native.isHidden()
    assert "style 2: flipped" not in widget.region_styles["label_2"].choices


@pytest.mark.parametrize("what", ["zero weights", "all none"])
def test_bad_controls_notify_and_start_nothing(make_napari_viewer, images, fake_engine, notifications, what):
    viewer, widget, c, s1, s2, lab = _viewer(make_napari_viewer, images, _halves((36, 52)), engines=fake_engine)
    n = len(viewer.layers)
    if what == "zero weights":
        widget.add_style.clicked.emit()
        widget.styles_panel.pickers[1].value = s2
        for w in widget.styles_panel.weights:
            w.value = 0.0
    else:
        widget.regions.value = lab
        for row in widget.region_styles:
            row.value = "none"
    assert not widget.start()
    assert fake_engine.instances == [] and len(viewer.layers) == n
    msg = " ".join(errors(notifications))
    assert {"zero weights": "weight above 0", "all none": "no pixel gets a style"}[what] in msg


def test_labels_are_read_as_napari_shows_them_over_the_content(make_napari_viewer, images):
    from napari_nst._run.labels import labels_snapshot, read_labels

    small = np.arange(18 * 26, dtype=np.int32).reshape(18, 26) % 7
    viewer, widget, c, *_, lab = _viewer(make_napari_viewer, images, small, scale=(2, 2), translate=(0.5, 0.5))
    snap = labels_snapshot(lab, c, tuple(viewer.dims.point), (0, 1))
    np.testing.assert_array_equal(read_labels(snap, (36, 52), (36, 52)), np.kron(small, np.ones((2, 2), int)))
    half = read_labels(snap, (36, 52), (18, 26))  # working pixels of 2x2 content pixels: the label at their centre
    assert half.shape == (18, 26) and np.isin(half, small).all()
    # a 3-D labels volume over the 2-D content: the slice on screen
    vol = np.stack([np.full((36, 52), k, np.int32) for k in (4, 5, 6)])
    v = viewer.add_labels(vol, name="volume")
    viewer.dims.set_point(0, 2)
    snap = labels_snapshot(v, c, tuple(viewer.dims.point), (0, 1))
    assert (read_labels(snap, (36, 52), (36, 52)) == 6).all()
    # a labels layer shifted half off the content: outside it, the background 0
    lab.translate = (0.5, 52.5)
    snap = labels_snapshot(lab, c, tuple(viewer.dims.point), (0, 1))
    assert (read_labels(snap, (36, 52), (36, 52)) == 0).all()


def test_a_real_run_with_two_styles_on_two_regions(make_napari_viewer, qtbot, images, vgg16_weights, notifications):
    viewer, widget, c, s1, s2, lab = _viewer(make_napari_viewer, images, _halves((36, 52), 2))
    tiny(widget, vgg16_weights, steps=4, size=32)
    widget.add_style.clicked.emit()
    widget.styles_panel.pickers[1].value = s2
    widget.regions.value = lab
    widget.preserve_color.value = "histogram"
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT)
    out = viewer.layers[-1]
    assert not errors(notifications), notifications
    assert out.metadata["napari_nst"]["status"] == "finished"
    assert out.metadata["napari_nst"]["regions"]["region_styles"] == {0: None, 2: "flipped"} or out.metadata[
        "napari_nst"
    ]["regions"]["region_styles"] == {2: "flipped"}
    assert "torch" not in sys.modules


def test_style_regions_and_per_style_scale_reach_the_engine(
    make_napari_viewer, qtbot, images, fake_engine, notifications
):
    viewer, widget, c, s1, s2, lab = _viewer(make_napari_viewer, images, _halves((36, 52)), engines=fake_engine)
    parts = viewer.add_labels(_halves((40, 40), 3), name="parts of stripes")  # over the 40x40 style image
    widget.add_style.clicked.emit()
    widget.styles_panel.pickers[1].value = s2
    assert widget.style_regions.native.isHidden()  # only with regions
    widget.regions.value = lab
    sources = {w.name: w for w in widget.style_regions}
    assert set(sources) == {"style_regions_0", "style_regions_1"} and not widget.style_regions.native.isHidden()
    assert sources["style_regions_0"].value is None  # "whole"
    sources["style_regions_0"].value = parts
    widget.style_scale.value = "1, 0.5"
    widget.size.value, widget.steps.value = 64, 2
    before = [digest(x.data) for x in (c, s1, s2, lab, parts)]
    assert widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20_000)
    fake = fake_engine.instances[-1]
    assert fake.opts.style_scale == (1.0, 0.5)
    # each read at its own scale's long edge (64 and 32 px; a smaller image is sent as it is)
    assert fake.style[0].shape[:2] == (40, 40) and fake.style[1].shape[:2] == (32, 32)
    first, second = fake.opts.style_regions
    assert second is None and first.shape == fake.style[0].shape[:2]  # read at the style's working shape
    assert first[0, -1] == 3 and first[-1, 0] == 0
    meta = viewer.layers[-1].metadata["napari_nst"]
    assert meta["regions"]["style_regions"] == {"stripes": "parts of stripes", "flipped": "whole"}
    assert [digest(x.data) for x in (c, s1, s2, lab, parts)] == before and not errors(notifications)
    # a scale per style that does not match the styles: a notification, nothing runs
    widget.style_scale.value = "1, 0.5, 2"
    assert not widget.start() and "style_scale has 3 values" in " ".join(errors(notifications))
