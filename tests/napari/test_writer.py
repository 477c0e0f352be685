"""Saving the pastiche (float32 RGB in [0, 1]) to PNG/JPEG through napari's own save path.

napari's built-in writer refuses float data for PNG and JPEG; napari-nst contributes an npe2
writer (``napari_nst._writer``) that takes it. Each test opens the file it wrote and looks at it.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.gui


def _pastiche(viewer, shape=(30, 40)):
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    data = np.stack([x / (shape[1] - 1), y / (shape[0] - 1), np.full(shape, 0.25)], axis=-1).astype(np.float32)
    data[5:10, 5:10] = (1.0, 0.0, 0.0)
    layer = viewer.add_image(
        data, name="content × style", rgb=True, contrast_limits=(0, 1), metadata={"napari_nst": {"steps": 3}}
    )
    viewer.layers.selection = {layer}
    return layer, data


def _u8(data):
    return (np.clip(data, 0, 1) * 255 + 0.5).astype(np.uint8)


def test_save_selected_layer_as_png_with_the_writer_the_dialog_offers(make_napari_viewer, tmp_path):
    """File > Save Selected Layers: the dialog lists one filter per writer; choosing napari-nst's
    and typing pastiche.png is ``viewer.layers.save(path, selected=True, _writer=...)``."""
    from napari.plugins import _npe2

    viewer = make_napari_viewer()
    layer, data = _pastiche(viewer)
    viewer.add_image(np.zeros((4, 4), np.uint8), name="other")  # not selected: not saved
    viewer.layers.selection = {layer}
    filters, writers = _npe2.file_extensions_string_for_layers([layer])
    ours = [w for w in writers if w.command == "napari-nst.write_image"]
    assert len(ours) == 1 and "*.png" in filters
    path = tmp_path / "pastiche.png"
    saved = viewer.layers.save(str(path), selected=True, _writer=ours[0])
    assert saved == [str(path)]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (40, 30)
        got = np.asarray(im)
    np.testing.assert_array_equal(got, _u8(data))
    assert got[7, 7].tolist() == [255, 0, 0] and got[0, -1, 0] == 255  # the red square, the gradient
    assert not list(tmp_path.glob(".*.part"))  # written atomically: no temporary left
    assert "torch" not in sys.modules


@pytest.mark.parametrize("name, fmt", [("pastiche.jpg", "JPEG"), ("pastiche.jpeg", "JPEG"), ("p.png", "PNG")])
def test_save_by_plugin_name_png_and_jpeg(make_napari_viewer, tmp_path, name, fmt):
    import napari

    viewer = make_napari_viewer()
    layer, data = _pastiche(viewer)
    path = tmp_path / name
    assert napari.save_layers(str(path), [layer], plugin="napari-nst") == [str(path)]
    with Image.open(path) as im:
        assert im.format == fmt and im.mode == "RGB"
        got = np.asarray(im).astype(int)
    if fmt == "PNG":
        np.testing.assert_array_equal(got, _u8(data))
    else:  # lossy (Pillow's default quality, chroma subsampled): close, and the red square still red
        assert np.abs(got - _u8(data)).mean() < 8 and got[7, 7, 0] > 200 and got[7, 7, 1] < 60
    again = tmp_path / f"again-{name}"
    assert viewer.layers.save(str(again), selected=True, plugin="napari-nst") == [str(again)]


def test_float_gray_image_uses_its_contrast_limits(make_napari_viewer, tmp_path):
    import napari

    viewer = make_napari_viewer()
    data = np.linspace(-50, 150, 200, dtype=np.float32).reshape(10, 20)
    layer = viewer.add_image(data, contrast_limits=(0, 100))
    path = tmp_path / "gray.png"
    napari.save_layers(str(path), [layer], plugin="napari-nst")
    with Image.open(path) as im:
        assert im.mode == "L"
        got = np.asarray(im)
    np.testing.assert_array_equal(got, _u8(np.clip(data / 100, 0, 1)))  # what the viewer shows


def test_integer_images_are_written_by_napari_as_without_the_plugin(make_napari_viewer, tmp_path):
    import napari

    viewer = make_napari_viewer()
    data = np.arange(600, dtype=np.uint16).reshape(20, 30) * 100
    layer = viewer.add_image(data)
    ours, theirs = tmp_path / "ours.png", tmp_path / "theirs.png"
    napari.save_layers(str(ours), [layer], plugin="napari-nst")
    napari.save_layers(str(theirs), [layer], plugin="napari")
    with Image.open(ours) as a, Image.open(theirs) as b:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), data)  # 16-bit PNG, exactly


def test_a_float_stack_gets_a_clear_error_and_no_file(make_napari_viewer, tmp_path):
    from napari_nst._writer import write_image_layer

    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((3, 10, 10), np.float32))
    data, meta, _ = layer.as_layer_data_tuple()
    with pytest.raises(ValueError, match=r"3-D float image.*\.tif"):
        write_image_layer(str(tmp_path / "stack.png"), data, meta)
    assert not list(tmp_path.iterdir())
