"""Property-based robustness of the widget's layer reading: a layer snapshot on the main thread
(``napari_nst._run.inputs.snapshot``), read as float32 RGB in the worker (``read_input``), as a run does.

Real ``napari.layers.Image`` layers (no viewer, no Qt needed) with random data: 2 to 5 non-channel
axes, RGB(A) or single-channel, every dtype napari holds, NaN/inf, constant images, random contrast
limits, gamma and colormaps, multiscale pyramids, arbitrary dims positions (out of range, NaN) and
displayed axes. The rule: a new C-contiguous float32 ``(H, W, 3)`` array in [0, 1] of the displayed
axes' sizes that shares no memory with the layer, or an ``ImageError`` (a ValueError) naming the
image; the layer and its data never change; torch is never imported in this process.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st
from nst_helpers import digest, read_as_a_run_does

from napari_nst.core.errors import ImageError

DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
]
COLORMAPS = ["gray", "green", "magma", "viridis", "red"]


def _data(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...], kind: str) -> np.ndarray:
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        if kind == "constant":
            return np.full(shape, info.max // 3, dtype)
        if kind == "extremes":
            return np.where(rng.random(shape) < 0.5, info.min, info.max).astype(dtype)
        return rng.integers(max(int(info.min), -500), min(int(info.max), 60000), size=shape, endpoint=True).astype(
            dtype
        )
    finfo = np.finfo(dtype)
    if kind == "constant":
        out = np.full(shape, 0.25)
    elif kind == "extremes":
        out = rng.choice([float(finfo.min), float(finfo.max), 0.0], size=shape)
    else:
        out = rng.normal(0, 100, size=shape)
    out = out.astype(dtype)
    if kind in ("nan", "inf") and out.size:
        out.flat[rng.integers(0, out.size)] = np.nan if kind == "nan" else np.inf
    return out


@st.composite
def layers(draw):
    """(napari Image layer, its data arrays, expected (H, W) of each level) drawn together."""
    from napari.layers import Image

    nd = draw(st.integers(2, 5))
    shape = [draw(st.integers(1, 3)) for _ in range(nd - 2)] + [draw(st.integers(1, 40)), draw(st.integers(1, 40))]
    rgb = draw(st.sampled_from([None, 3, 4]))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    kind = draw(st.sampled_from(["random", "random", "constant", "extremes", "nan", "inf"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    full = tuple(shape) + ((rgb,) if rgb else ())
    base = _data(rng, dtype, full, kind)
    multiscale = draw(st.booleans()) and min(shape[-2:]) >= 8
    levels = (
        [base, np.ascontiguousarray(base[..., ::2, ::2, :] if rgb else base[..., ::2, ::2])] if multiscale else [base]
    )
    kwargs = {"rgb": bool(rgb), "multiscale": multiscale, "name": draw(st.sampled_from(["content", "my style ✓"]))}
    if not rgb:
        kwargs["colormap"] = draw(st.sampled_from(COLORMAPS))
    if draw(st.booleans()):
        kwargs["contrast_limits"] = draw(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)))
    kwargs["gamma"] = draw(st.floats(0.2, 2.0))
    try:
        layer = Image(levels if multiscale else base, **kwargs)
    except Exception:  # napari itself refuses this combination (e.g. its own contrast-limit checks)
        reject()
    return layer, levels, rgb


def _expected_axes(nd: int, point, displayed) -> tuple[int, int]:
    """World axes are right-aligned with the layer's; the last two displayed ones are the canvas."""
    if nd == 2 or displayed is None:
        return nd - 2, nd - 1
    world_ndim = len(point) if point is not None else nd
    a, b = (d - (world_ndim - nd) for d in displayed[-2:])
    if not (0 <= a < nd and 0 <= b < nd) or a == b:
        return nd - 2, nd - 1
    return a, b


@pytest.mark.timeout(120)
@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(drawn=layers(), data=st.data())
def test_layer_reading_valid_or_actionable_error(drawn, data):
    from napari_nst.core.image.arrays import resized_shape

    layer, levels, rgb = drawn
    nd = int(layer.ndim)
    world_ndim = nd + data.draw(st.integers(0, 1))
    point = data.draw(
        st.one_of(
            st.none(),
            st.lists(st.one_of(st.floats(-10, 100), st.just(float("nan"))), min_size=world_ndim, max_size=world_ndim),
        )
    )
    displayed = data.draw(st.one_of(st.none(), st.lists(st.integers(0, world_ndim - 1), min_size=2, max_size=3)))
    long_edge = data.draw(st.integers(1, 64))
    if point is None and displayed is not None:
        world_ndim = nd
        displayed = [min(d, nd - 1) for d in displayed]

    before = ([digest(a) for a in levels], tuple(layer.contrast_limits), layer.gamma, layer.colormap.name)
    try:
        out, note = read_as_a_run_does(layer, point, displayed, "content", long_edge)
    except ImageError as exc:
        event("refused")
        msg = str(exc)
        assert "content" in msg and len(msg) > 30, msg
        lo, hi = layer.contrast_limits
        usable = (
            levels[0].dtype.kind != "b"
            and all(np.isfinite(a).all() for a in levels if a.dtype.kind == "f")
            and math.isfinite(lo)
            and math.isfinite(hi)
            and hi > lo
        )
        a, b = _expected_axes(nd, point, displayed)
        # the slice is shrunk to the working shape: a size too small for the layer is refused too
        target = resized_shape((levels[0].shape[a], levels[0].shape[b]), long_edge)
        big_enough = min(target) >= 4 and all(min(lv.shape[a], lv.shape[b]) >= 4 for lv in levels)
        assert not (usable and big_enough), f"refused a usable layer: {msg}"
    else:
        event(f"converted, {nd} axes" + (", multiscale" if layer.multiscale else ""))
        a, b = _expected_axes(nd, point, displayed)
        target = resized_shape((levels[0].shape[a], levels[0].shape[b]), long_edge)
        smaller = [(lv.shape[a], lv.shape[b]) for lv in levels if lv.shape[a] < target[0] or lv.shape[b] < target[1]]
        # the working shape, or a slice too small for it sent as it is (the engine enlarges it)
        assert out.shape[2] == 3 and (out.shape[:2] == target or out.shape[:2] in smaller), (out.shape, target)
        assert out.dtype == np.float32 and out.flags.c_contiguous
        assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
        assert not any(np.shares_memory(out, lv) for lv in levels)
        if not rgb and layer.colormap.name == "gray":
            assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
        assert note is None or (isinstance(note, str) and note.endswith("."))
    after = ([digest(a) for a in levels], tuple(layer.contrast_limits), layer.gamma, layer.colormap.name)
    assert after == before, "the layer or its data changed"
    assert "torch" not in sys.modules, "torch was imported in the napari process"


def test_bool_and_nan_layers_name_the_fix():
    from napari.layers import Image

    with pytest.raises(ImageError, match="astype"):
        read_as_a_run_does(Image(np.zeros((8, 8), bool)), name="content")
    nan = np.zeros((8, 8))
    nan[3, 3] = np.nan
    with pytest.raises(ImageError, match="nan_to_num"):
        read_as_a_run_does(Image(nan), name="style")
    assert "torch" not in sys.modules
