"""The style-strength slider says its factor ("x2"), not magicgui's internal 0-100 position."""

from __future__ import annotations

import pytest
from nst_helpers import open_widget

pytestmark = pytest.mark.gui


def test_strength_slider_shows_the_factor(make_napari_viewer):
    from qtpy.QtWidgets import QAbstractSpinBox

    widget = open_widget(make_napari_viewer())
    w = widget.style_strength
    assert w.label.endswith("×1")
    assert not any(box.isVisible() for box in w.native.findChildren(QAbstractSpinBox))  # the "50" readout
    w.value = 2.0
    assert w.label.endswith("×2")
    assert widget.options()["style_strength"] == pytest.approx(2.0, rel=0.01)
