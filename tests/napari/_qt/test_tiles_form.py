"""The tiles options in the widget: generated fields in Advanced settings, empty = automatic."""

from __future__ import annotations

from nst_helpers import open_widget


def test_tile_size_and_max_memory_fields(make_napari_viewer):
    widget = open_widget(make_napari_viewer())
    tile, cap = widget.form.fields["tile_size"], widget.form.fields["max_memory"]
    assert tile in widget.form.advanced() and cap in widget.form.advanced()
    # the spin box's lowest value shows "auto": None, the whole image or tiles chosen when it does not fit
    assert tile.value == tile.min and tile.native.specialValueText() == "auto"
    assert widget.options()["tile_size"] is None and widget.options()["max_memory"] is None
    assert cap.native.placeholderText() == "free memory"
    tile.value, cap.value = 256, "8GB"
    opts = widget.options()
    assert opts["tile_size"] == 256 and opts["max_memory"] == 8 * 10**9
