"""The Size field and the memory estimate beside it: sizes beyond the layer's own
resolution, an estimate that follows the settings, automatic tiles, no torch in this process."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from nst_helpers import open_widget

pytestmark = pytest.mark.gui


def _bytes(widget) -> int:
    est = widget.memory.current
    assert est is not None and est.plan is not None, est
    return est.plan.bytes


def test_size_goes_beyond_the_layer_and_the_estimate_follows_the_settings(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((300, 400, 3), np.uint8), name="photo", rgb=True)
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="painting", rgb=True)
    widget = open_widget(viewer)
    widget.memory.free = lambda: 64 * 2**30  # a machine with 64 GiB free (this one's varies with its load)
    widget.content.value = viewer.layers["photo"]
    # the estimate sits beside the Size field, in its row
    assert widget.memory_estimate.native.parent() is widget.size.native.parent()
    assert widget.size_row.label == widget.size.label
    assert widget.size.max >= 8192
    widget.size.value = 8192  # far beyond the layer's 400 px: allowed (the pastiche is enlarged)
    assert widget.size.value == 8192 and widget.options()["size"] == 8192
    widget.precision.value = "float32"
    widget.size.value = 512
    small = _bytes(widget)
    assert widget.memory_estimate.value.startswith("≈") and "free now" in widget.memory_estimate.tooltip
    widget.size.value = 1024
    assert _bytes(widget) > 2.5 * small  # 4x the pixels, plus the fixed part
    at_1024 = _bytes(widget)
    widget.precision.value = "bfloat16"
    assert _bytes(widget) < at_1024  # the network's activations in bfloat16
    widget.precision.value = "float32"
    widget.model.value = "vgg16"
    assert _bytes(widget) < at_1024  # vgg16 is smaller than vgg19 (auto: vgg19's estimate)
    viewer.add_image(np.zeros((100, 400, 3), np.uint8), name="strip", rgb=True)
    widget.content.value = viewer.layers["strip"]
    assert _bytes(widget) < at_1024  # the same long edge, a quarter of the rows
    assert "torch" not in sys.modules


def test_the_estimate_says_when_tiles_are_chosen(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((300, 400, 3), np.uint8), name="photo", rgb=True)
    widget = open_widget(viewer)
    widget.memory.free = lambda: 64 * 2**30
    widget.content.value = viewer.layers["photo"]
    widget.size.value = 2048  # the whole image: about 12 GB
    widget.max_memory.value = "3GB"
    plan = widget.memory.current.plan
    assert plan is not None and plan.auto and plan.tile_size is not None and plan.tile_size < 2048
    assert f"tiles of {plan.tile_size} px (automatic)" in widget.memory_estimate.value
    assert plan.bytes <= 3e9
    widget.max_memory.value = "1MB"  # nothing fits: the label says so
    assert "does not fit" in widget.memory_estimate.value
    widget.max_memory.value = "lots"  # a field to fix: no estimate, the tooltip says why
    assert widget.memory_estimate.value == "—" and "max memory" in widget.memory_estimate.tooltip.lower()
    assert "torch" not in sys.modules


def test_no_content_no_estimate(make_napari_viewer):
    widget = open_widget(make_napari_viewer())
    assert widget.content.value is None and widget.memory_estimate.value == ""
    assert "content" in widget.memory_estimate.tooltip
