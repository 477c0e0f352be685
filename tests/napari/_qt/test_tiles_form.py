"""The tiles options in the widget: generated fields in Advanced settings, empty = automatic."""

from __future__ import annotations

from nst_helpers import open_widget


def test_tile_size_and_max_memory_fields(make_napari_viewer):
    widget = open_widget(make_napari_viewer())
    tile, cap = widget.form.fields["tile_size"], widget.form.fields["max_memory"]
    assert tile in widget.form.advanced() and cap in widget.form.advanced()
    # the spin box's lowest value shows "auto": None, the whole image or tiles chosen when it does not fit
    assert tile.value == tile.min and tile.native.text() == "auto"
    assert widget.options()["tile_size"] is None and widget.options()["max_memory"] is None
    assert cap.native.placeholderText() == "free memory"
    tile.value, cap.value = 256, "8GB"
    assert tile.native.text() == "256"
    opts = widget.options()
    assert opts["tile_size"] == 256 and opts["max_memory"] == 8 * 10**9
    tile.value = tile.min
    assert tile.native.text() == "auto" and widget.options()["tile_size"] is None


def test_nullable_number_fields_show_their_word_and_read_typed_numbers(make_napari_viewer, qtbot):
    """magicgui's spin box (superqt's QLargeIntSpinBox) ignores Qt's special value text: the form
    shows "auto" (or the seed's "random") itself at the lowest value, and a number typed over it
    is read as usual."""
    from qtpy.QtCore import Qt

    widget = open_widget(make_napari_viewer())
    fields = widget.form.fields
    seed = fields["seed"]
    seed.value = seed.min
    assert seed.native.text() == "random" and widget.options()["seed"] is None
    for name in ("tile_size", "frame_steps"):
        box = fields[name]
        box.value = box.min
        assert box.native.text() == "auto", name
        box.native.lineEdit().setText(str(box.min + 1 + 32))
        qtbot.keyClick(box.native, Qt.Key.Key_Return)
        assert box.value == box.min + 1 + 32, name
        box.native.lineEdit().setText("auto")  # the word itself, entered, stays the lowest value
        qtbot.keyClick(box.native, Qt.Key.Key_Return)
        assert box.value == box.min and box.native.text() == "auto", name
        box.native.lineEdit().setText("12.5x")  # not a whole number: no error, the value stays
        qtbot.keyClick(box.native, Qt.Key.Key_Return)
        assert box.value == box.min and box.native.text() == "auto", name
