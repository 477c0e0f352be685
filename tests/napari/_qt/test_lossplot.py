"""The dock's loss curve reads in numbers a person reads, on a log axis with labelled ticks."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_readable_numbers():
    from napari_nst._qt.lossplot import decade_ticks, readable

    assert [readable(v) for v in (10**1.6, 10**-0.4, 4.5, 1234, 0.0035, 2.5e-5, 3e7, 0)] == [
        "40",
        "0.4",
        "4.5",
        "1234",
        "0.0035",
        "2.5e-05",
        "3e+07",
        "0",
    ]
    assert decade_ticks(math.log10(0.4), math.log10(40)) == [0, 1]
    assert decade_ticks(math.log10(2.4), math.log10(3)) == []


def test_plot_draws_the_curve_and_a_readable_caption(qtbot, tmp_path):
    from napari_nst._qt.lossplot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(360, 100)
    plot.clear(100)
    for i in range(1, 101):
        plot.add(i, 40 * math.exp(-i / 12) + 0.4, new_level=i == 50)
    assert plot.caption() == "loss 37 → 0.41 (log axis)   step 100/100"
    plot.show()
    qtbot.waitExposed(plot)
    from PIL import Image
    from qtpy.QtGui import QImage

    path = tmp_path / "lossplot.png"
    plot.grab().toImage().convertToFormat(QImage.Format.Format_RGB888).save(str(path))
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB")).astype(int)
    blue = (arr[..., 2] > 200) & (arr[..., 0] < 150)  # the curve's colour (90, 170, 255)
    assert blue.sum() > 100, "the curve was not drawn"


def test_a_live_change_is_marked_at_its_step(qtbot, tmp_path):
    from PIL import Image
    from qtpy.QtGui import QImage

    from napari_nst._qt.lossplot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(360, 100)
    plot.clear(100)
    for i in range(1, 61):
        plot.add(i, 40 * math.exp(-i / 12) + 0.4)
    plot.mark(41, "Style strength ×3")
    assert plot.marks == [(41, "Style strength ×3")]
    plot.show()
    qtbot.waitExposed(plot)
    path = tmp_path / "marked.png"
    plot.grab().toImage().convertToFormat(QImage.Format.Format_RGB888).save(str(path))
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB")).astype(int)
    orange = (arr[..., 0] > 200) & (arr[..., 1] > 100) & (arr[..., 1] < 190) & (arr[..., 2] < 100)
    columns = np.nonzero(orange.sum(axis=0) > 20)[0]  # a vertical line, not only the text
    assert columns.size, "the mark was not drawn"
    # step 41 of 100: about 40 % across the frame, which starts after the tick labels
    assert 0.35 < columns.min() / arr.shape[1] < 0.6
    plot.clear(100)
    assert plot.marks == []
