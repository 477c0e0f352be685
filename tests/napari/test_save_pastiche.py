"""A finished pastiche saves through napari's own File > Save path as PNG, JPEG or TIFF, and Continue
keeps float32.

napari's own writer (the first one offered, and the one napari picks when none is named) does not
write float data to PNG or JPEG: it warns and writes nothing. A finished 2-D pastiche is therefore
held as 8-bit RGB, as it is shown; Continue starts from the float32 image it was made from.
"""

from __future__ import annotations

import numpy as np
import pytest
from nst_helpers import viewer_with_widget
from PIL import Image

pytestmark = pytest.mark.gui


def _idle(widget):
    return widget.worker is None and widget.run.text == "Run"


def _finished_pastiche(make_napari_viewer, qtbot, images, fake_engine):
    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images, fake_engine)
    widget.size.value, widget.steps.value = 32, 4
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: _idle(widget), timeout=10_000)
    pastiche = viewer.layers[-1]
    assert pastiche.metadata["napari_nst"]["status"] == "finished"
    assert pastiche.data.dtype == np.uint8 and tuple(pastiche.contrast_limits) == (0, 255)
    viewer.layers.selection = {pastiche}
    return viewer, widget, pastiche


@pytest.mark.parametrize("name", ["pastiche.png", "pastiche.jpg", "pastiche.tif"])
def test_finished_pastiche_saves_with_naparis_own_writer(
    make_napari_viewer, qtbot, images, fake_engine, tmp_path, name
):
    viewer, widget, pastiche = _finished_pastiche(make_napari_viewer, qtbot, images, fake_engine)
    out = tmp_path / name
    written = viewer.layers.save(str(out), selected=True)  # no plugin named: napari picks the writer
    assert written and out.exists()
    with Image.open(out) as im:
        saved = np.asarray(im.convert("RGB"))
    assert saved.shape == pastiche.data.shape
    if name.endswith(".jpg"):  # lossy
        assert np.abs(saved.astype(int) - pastiche.data.astype(int)).mean() < 8
    else:
        np.testing.assert_array_equal(saved, pastiche.data)


def test_the_save_dialogs_first_filter_saves_the_pastiche_as_png(
    make_napari_viewer, qtbot, images, fake_engine, tmp_path
):
    """File > Save Selected Layers: the user types pastiche.png and keeps the filter shown first."""
    from napari.plugins import _npe2

    viewer, widget, pastiche = _finished_pastiche(make_napari_viewer, qtbot, images, fake_engine)
    filters, writers = _npe2.file_extensions_string_for_layers([pastiche])
    assert "*.png" in filters.split(";;")[0]
    out = tmp_path / "pastiche.png"
    assert viewer.layers.save(str(out), selected=True, _writer=writers[0]) == [str(out)]
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), pastiche.data)


def test_continue_starts_from_the_float32_pastiche(make_napari_viewer, qtbot, images, fake_engine):
    viewer, widget, pastiche = _finished_pastiche(make_napari_viewer, qtbot, images, fake_engine)
    first = fake_engine.instances[-1]
    widget.continue_run.clicked.emit()
    qtbot.waitUntil(lambda: len(fake_engine.instances) == 2 and _idle(widget), timeout=10_000)
    init = np.asarray(fake_engine.instances[-1].options["init"])
    assert init.dtype == np.float32
    # the fake's last image is the content darkened by half: not on the 8-bit grid
    steps = np.abs(init * 255 - np.round(init * 255))
    assert steps.max() > 0.01, "Continue started from the 8-bit copy"
    assert first is not fake_engine.instances[-1]
