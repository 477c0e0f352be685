"""A finished pastiche saves through napari's own File > Save path as PNG, and Continue keeps float32."""

from __future__ import annotations

import numpy as np
import pytest
from nst_helpers import viewer_with_widget
from PIL import Image

pytestmark = pytest.mark.gui


def _idle(widget):
    return widget.worker is None and widget.run.text == "Run"


def test_finished_pastiche_saves_as_png_with_naparis_own_writer(
    make_napari_viewer, qtbot, images, fake_engine, tmp_path
):
    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images, fake_engine)
    widget.size.value, widget.steps.value = 32, 4
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: _idle(widget), timeout=10_000)
    pastiche = viewer.layers[-1]
    assert pastiche.metadata["napari_nst"]["status"] == "finished"
    assert pastiche.data.dtype == np.uint8 and tuple(pastiche.contrast_limits) == (0, 255)
    viewer.layers.selection = {pastiche}
    out = tmp_path / "pastiche.png"
    written = viewer.layers.save(str(out), selected=True)  # no plugin named: napari picks the writer
    assert written and out.exists()
    saved = np.asarray(Image.open(out))
    assert saved.shape == pastiche.data.shape and np.array_equal(saved, pastiche.data)


def test_continue_starts_from_the_float32_pastiche(make_napari_viewer, qtbot, images, fake_engine):
    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images, fake_engine)
    widget.size.value, widget.steps.value = 32, 4
    engine = fake_engine
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: _idle(widget), timeout=10_000)
    first = engine.instances[-1]
    widget.continue_run.clicked.emit()
    qtbot.waitUntil(lambda: len(engine.instances) == 2 and _idle(widget), timeout=10_000)
    init = np.asarray(engine.instances[-1].options["init"])
    assert init.dtype == np.float32
    # the fake's last image is the content darkened by half: not on the 8-bit grid
    steps = np.abs(init * 255 - np.round(init * 255))
    assert steps.max() > 0.01, "Continue started from the 8-bit copy"
    assert first is not engine.instances[-1]
