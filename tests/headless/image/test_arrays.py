"""Array -> float32 RGB conversion: every dtype and shape rule in napari_nst.core.image.arrays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nst.core.errors import ImageError
from napari_nst.core.image.arrays import resized_shape, to_rgb_float, to_uint8


def _check(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.dtype == np.float32
    assert out.shape == (*shape, 3)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_uint8_rgb_divided_by_255():
    img = np.array([[[0, 128, 255]] * 4] * 4, np.uint8)
    out = to_rgb_float(img)
    _check(out, (4, 4))
    np.testing.assert_allclose(out[0, 0], [0, 128 / 255, 1], rtol=1e-6)


def test_grayscale_repeated_to_three_channels():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    out = to_rgb_float(img)
    _check(out, (4, 4))
    assert np.array_equal(out[..., 0], out[..., 2])
    np.testing.assert_allclose(out[1, 1, 1], 50 / 255, rtol=1e-6)
    np.testing.assert_array_equal(to_rgb_float(img[..., None]), out)


@pytest.mark.parametrize("dtype", [np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_other_integers_rescaled_by_own_range(dtype):
    img = np.array([[10, 20], [30, 50]] * 2, dtype=dtype).reshape(4, 2).repeat(2, axis=1)
    out = to_rgb_float(img)
    _check(out, (4, 4))
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out[0, 2, 0], (20 - 10) / 40, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_floats_in_unit_range_kept(dtype):
    img = np.linspace(0.1, 0.9, 48, dtype=dtype).reshape(4, 4, 3)
    out = to_rgb_float(img)
    _check(out, (4, 4))
    np.testing.assert_allclose(out, img.astype(np.float32), rtol=1e-3)


def test_floats_outside_unit_range_rescaled():
    img = np.linspace(-5, 300, 48).reshape(4, 4, 3)
    out = to_rgb_float(img)
    assert out.min() == 0 and out.max() == 1


def test_limits_map_and_clip():
    img = np.array([[0, 100, 200, 400]] * 4, np.uint16)
    out = to_rgb_float(img, limits=(100, 300))
    np.testing.assert_allclose(out[0, :, 0], [0, 0, 0.5, 1])


@pytest.mark.parametrize("limits", [(5, 5), (6, 2), (0, np.nan), ("a", 1), (1,)])
def test_bad_limits(limits):
    with pytest.raises(ImageError, match="limits"):
        to_rgb_float(np.zeros((4, 4), np.uint8), limits=limits, name="content")


def test_constant_images():
    assert to_rgb_float(np.full((5, 5), 7, np.uint16)).max() == 0
    np.testing.assert_allclose(to_rgb_float(np.full((5, 5), 0.25, np.float32)), 0.25)
    np.testing.assert_allclose(to_rgb_float(np.full((5, 5), 255, np.uint8)), 1.0)


def test_rgba_composited_over_black():
    img = np.zeros((4, 4, 4), np.uint8)
    img[..., :3] = 200
    img[..., 3] = 255
    img[0, 0, 3] = 0
    out = to_rgb_float(img)
    _check(out, (4, 4))
    assert out[0, 0].max() == 0
    np.testing.assert_allclose(out[1, 1], 200 / 255, rtol=1e-6)
    la = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 0.5)], axis=-1)
    np.testing.assert_allclose(to_rgb_float(la), 0.5)


def test_input_never_modified():
    img = np.random.default_rng(0).integers(0, 65535, (6, 7, 3), dtype=np.uint16)
    before = img.copy()
    to_rgb_float(img, limits=(0, 1000))
    to_rgb_float(img)
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.zeros((0, 5)), "empty"),
        (np.zeros(5), "shape"),
        (np.zeros((1, 1, 3)), "at least"),
        (np.zeros((2, 9, 3)), "at least"),
        (np.zeros((2, 8, 8, 3)), "2-D slice"),
        (np.zeros((1, 2, 8, 8, 3)), "2-D slice"),
        (np.zeros((8, 8, 5)), "2-D slice"),
        (np.zeros((8, 8), bool), "boolean"),
        (np.zeros((8, 8), complex), "dtype"),
        (np.full((8, 8), np.nan), "NaN"),
        (np.full((8, 8), np.inf), "NaN or infinite"),
    ],
)
def test_bad_arrays(arr, match):
    with pytest.raises(ImageError, match=match):
        to_rgb_float(arr, name="style")


def test_error_names_the_image():
    with pytest.raises(ImageError, match="the style image"):
        to_rgb_float(np.zeros((8, 8), bool), name="style")


def test_resized_shape_and_uint8():
    assert resized_shape((768, 1024), 512) == (384, 512)
    assert resized_shape((1024, 10), 100) == (100, 1)
    np.testing.assert_array_equal(to_uint8(np.array([0.0, 0.5, 1.0, 2.0])), [0, 128, 255, 255])
