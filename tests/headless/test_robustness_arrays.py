"""Property-based robustness of the engine's entry points against arbitrary arrays.

The rule, for every array napari can hold (bool, signed/unsigned integers, float16/32/64; 0 to 5
dimensions; sides 0 to a few thousand; 1 to 5 channels; NaN, inf, constant, huge and tiny
ranges), with and without contrast limits:

- either a valid result: a new, C-contiguous, finite float32 array in [0, 1] of the documented
  shape that shares no memory with the input,
- or an ``ImageError``/``OptionError`` (both ``ValueError``) whose message names the input and
  says what to change;
- the input is never modified (checked by hash), and nothing hangs (pytest-timeout).

Arrays are capped at ~250k elements so that a run of this module stays within seconds.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_nst.core.api import iter_stylize, prepare, stylize
from napari_nst.core.errors import ImageError, OptionError
from napari_nst.core.image.arrays import MIN_INPUT_SIDE, resized_shape, to_rgb_float


@pytest.fixture
def fast(fast):
    """The shared quick options, single scale: these tests are about faults, not coarse-to-fine levels."""
    return {**fast, "scales": 1}


#: dtypes a napari Image layer can hold
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
MAX_ELEMENTS = 250_000
VALUE_KINDS = ["random", "full_range", "constant", "nan", "inf", "huge", "tiny", "unit", "extremes"]

FAST = settings(
    max_examples=150,
    deadline=2000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fingerprint(a: np.ndarray) -> tuple:
    """Everything that would change if the array were modified in place."""
    return (
        a.dtype.str,
        a.shape,
        a.strides,
        a.flags.writeable,
        hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
    )


# --------------------------------------------------------------------------- strategies


@st.composite
def shapes(draw, max_elements: int = MAX_ELEMENTS) -> tuple[int, ...]:
    """0-5 dimensions; each side 0 to a few thousand, the total capped; often a channel axis of 1-5."""
    ndim = draw(st.integers(0, 5))
    dims: list[int] = []
    budget = max_elements
    for k in range(ndim):
        if k == ndim - 1 and ndim >= 3 and draw(st.booleans()):
            side = draw(st.integers(1, 5))  # a channel axis
        else:
            side = draw(st.one_of(st.integers(0, 8), st.integers(0, 64), st.integers(0, 3000)))
        side = min(side, max(budget, 0))
        dims.append(side)
        budget = budget // max(side, 1)
    return tuple(dims)


def _values(dtype: np.dtype, shape: tuple[int, ...], kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape)) if shape else 1
    if dtype.kind == "b":
        return (rng.random(shape) < 0.5) if kind != "constant" else np.ones(shape, bool)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        if kind in ("full_range", "extremes", "huge"):
            pick = rng.integers(0, 2, size=shape).astype(bool)
            out = np.where(pick, info.max, info.min).astype(dtype)
            if n > 2 and kind != "extremes":
                out.flat[: n // 2] = rng.integers(info.min, info.max, size=n // 2, dtype=dtype, endpoint=True)
            return out
        if kind == "constant":
            return np.full(shape, rng.integers(info.min, info.max, dtype=dtype, endpoint=True), dtype)
        if kind == "tiny":
            base = rng.integers(info.min, info.max - 1, dtype=dtype, endpoint=True)
            return (base + rng.integers(0, 2, size=shape)).astype(dtype)
        hi = min(int(info.max), 1000)
        return rng.integers(max(int(info.min), -1000), hi, size=shape, endpoint=True).astype(dtype)
    finfo = np.finfo(dtype)
    if kind == "unit":
        out = rng.random(shape)
    elif kind == "constant":
        out = np.full(shape, rng.choice([0.0, 0.5, 1.0, -3.0, 1e30, float(finfo.max)]))
    elif kind in ("huge", "extremes", "full_range"):
        out = rng.choice([float(finfo.min), float(finfo.max), 0.0, float(finfo.tiny)], size=shape)
    elif kind == "tiny":
        base = rng.choice([0.0, 1.0, 1e20, -7.5])
        out = base + rng.random(shape) * float(finfo.eps) * max(abs(base), 1.0) * 4
    else:
        out = rng.normal(0, rng.choice([1e-3, 1.0, 1e3, 1e6]), size=shape)
    # finite values only (1e30 or 1e20 overflow float16 to inf); the "nan" and "inf" kinds add those below
    out = np.clip(np.asarray(out, dtype=np.float64), float(finfo.min), float(finfo.max))
    with np.errstate(over="ignore", invalid="ignore"):
        out = out.astype(dtype)
    if kind in ("nan", "inf") and n:
        bad = rng.integers(0, n, size=max(1, n // 50))
        out.flat[bad] = np.nan if kind == "nan" else rng.choice([np.inf, -np.inf])
    return out


@st.composite
def images(draw, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(shapes(max_elements))
    kind = draw(st.sampled_from(VALUE_KINDS))
    arr = np.asarray(_values(dtype, shape, kind, draw(st.integers(0, 2**32 - 1))))
    layout = draw(st.sampled_from(["c", "fortran", "strided", "readonly", "bigendian"]))
    if layout == "fortran":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim >= 1:
        arr = np.repeat(arr, 2, axis=0)[::2]  # a non-contiguous view of a bigger array
    elif layout == "readonly":
        arr.flags.writeable = False
    elif layout == "bigendian" and arr.dtype.itemsize > 1:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    return arr


limits_strategy = st.one_of(
    st.none(),
    st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True)),
    st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)),
    st.tuples(st.integers(-(2**63), 2**64), st.integers(-(2**63), 2**64)),
)


# --------------------------------------------------------------------------- the oracle


def problems(arr: np.ndarray, limits) -> dict[str, str]:
    """Why ``arr`` (with ``limits``) must be refused: {reason: a word the message must contain}."""
    why: dict[str, str] = {}
    if arr.dtype.kind == "b":
        why["bool"] = "astype"
    if arr.size == 0:
        why["empty"] = "empty"
    if arr.ndim < 2 or arr.ndim > 3 or (arr.ndim == 3 and arr.shape[-1] > 4):
        why["shape"] = "expected"
    elif min(arr.shape[:2]) < MIN_INPUT_SIDE:
        why["small"] = "at least"
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        why["nonfinite"] = "nan_to_num"
    if limits is not None:
        lo, hi = (float(v) for v in limits)
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            why["limits"] = "lo < hi"
    return why


def check_valid(out: np.ndarray, arr: np.ndarray) -> None:
    h, w = arr.shape[:2]
    assert out.shape == (h, w, 3)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    assert np.isfinite(out).all(), "NaN or inf in the result"
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.shares_memory(out, arr)
    channels = 1 if arr.ndim == 2 else arr.shape[-1]
    if channels in (1, 2):  # gray (+ alpha): the three channels are equal
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])


def check_refused(exc: BaseException, why: dict[str, str], name: str) -> None:
    assert isinstance(exc, ValueError), f"{type(exc).__name__} is not a ValueError"
    msg = str(exc)
    assert name in msg, f"the message does not name the {name} image: {msg}"
    assert any(word in msg for word in why.values()), f"message {msg!r} does not match {sorted(why)}"


def too_small_for(shape: tuple[int, ...], size: int, need: int) -> bool:
    """Whether an image of ``shape`` resized to long edge ``size`` has a side under ``need`` px."""
    return min(resized_shape(tuple(shape[:2]), size)) < need


# --------------------------------------------------------------------------- to_rgb_float


@pytest.mark.timeout(60)
@FAST
@given(arr=images(), limits=limits_strategy, name=st.sampled_from(["content", "style", "input"]))
def test_to_rgb_float_valid_or_actionable_error(arr, limits, name):
    before = fingerprint(arr)
    why = problems(arr, limits)
    try:
        out = to_rgb_float(arr, limits=limits, name=name)
    except ImageError as exc:
        assert why, f"refused a valid image: {exc}"
        check_refused(exc, why, name)
    else:
        assert not why, f"accepted an image that should be refused for {sorted(why)}"
        check_valid(out, arr)
    assert fingerprint(arr) == before, "the input array was modified"


@pytest.mark.timeout(60)
@settings(max_examples=80, deadline=2000, database=None)
@given(
    dtype=st.sampled_from([d for d in DTYPES if d is not np.bool_]),
    h=st.integers(4, 12),
    w=st.integers(4, 12),
    channels=st.sampled_from([0, 1, 2, 3, 4]),
    data=st.data(),
)
def test_to_rgb_float_elementwise(dtype, h, w, channels, data):
    """Any element values hypothesis can think of (incl. subnormals, +-max), element by element."""
    from hypothesis.extra import numpy as hnp

    shape = (h, w) if channels == 0 else (h, w, channels)
    arr = data.draw(hnp.arrays(np.dtype(dtype), shape))
    limits = data.draw(st.one_of(st.none(), st.tuples(st.floats(width=64), st.floats(width=64))))
    before = fingerprint(arr)
    why = problems(arr, limits)
    try:
        out = to_rgb_float(arr, limits=limits, name="content")
    except ImageError as exc:
        assert why, f"refused a valid image: {exc}"
        check_refused(exc, why, "content")
    else:
        assert not why
        check_valid(out, arr)
    assert fingerprint(arr) == before


@pytest.mark.parametrize("lo, hi", [(-1.7e308, 1.7e308), (0.0, 5e-324), (-1e300, 1e300)])
def test_extreme_ranges_stay_finite(lo, hi):
    """Regression: a float64 image spanning -1.7e308..1.7e308 gave NaN ((x - lo) / inf)."""
    arr = np.array([[lo, hi, 0.0, hi / 2]] * 4, dtype=np.float64)
    # without limits, floats inside [0, 1] are kept as they are (5e-324 -> 0 in float32)
    for limits in (None, (lo, hi)) if lo < 0 else ((lo, hi),):
        out = to_rgb_float(arr, limits=limits)
        assert np.isfinite(out).all()
        assert out[0, 0, 0] == 0.0 and out[0, 1, 0] == 1.0


def test_uint8_and_limits_map_as_documented():
    """Not only 'some value in [0, 1]': the documented mapping itself."""
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_allclose(to_rgb_float(arr)[..., 0], arr / 255.0, atol=1e-7)
    out = to_rgb_float(arr, limits=(64, 192))[..., 1]
    np.testing.assert_allclose(out, np.clip((arr - 64.0) / 128.0, 0, 1), atol=1e-7)
    assert to_rgb_float(np.full((5, 5), 7, np.int32)).max() == 0.0  # constant of a rescaled kind -> 0


@pytest.mark.parametrize(
    "bad, word",
    [
        ([[1, 2], [3]], "numpy array"),  # ragged nested lists
        (np.zeros((8, 8), complex), "dtype"),
        (np.zeros((8, 8), object), "dtype"),
        (np.zeros((8, 8), "U3"), "dtype"),
        (np.zeros((8, 8), "M8[s]"), "dtype"),
        (np.zeros((3, 64, 64), np.uint8), "moveaxis"),  # channels first
        (None, "dtype"),
        (5, "shape"),
    ],
)
def test_not_an_image_is_an_actionable_image_error(bad, word):
    with pytest.raises(ImageError, match=word):
        to_rgb_float(bad, name="content")


# --------------------------------------------------------------------------- prepare (no torch work)


@pytest.mark.timeout(60)
@settings(max_examples=60, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=images(60_000), style=images(60_000), c_limits=limits_strategy, s_limits=limits_strategy)
def test_prepare_valid_or_actionable_error(content, style, c_limits, s_limits):
    before = fingerprint(content), fingerprint(style)
    why_c, why_s = problems(content, c_limits), problems(style, s_limits)
    # vgg19 (the default) up to relu5_1 needs 16 px at the working size (32 px long edge)
    small = (not why_c and too_small_for(content.shape, 32, 16)) or (not why_s and too_small_for(style.shape, 32, 16))
    try:
        c, s, opts = prepare(content, style, size=32, steps=2, scales=1, content_limits=c_limits, style_limits=s_limits)
    except OptionError as exc:
        assert small, f"refused valid inputs: {exc}"
        assert "increase" in str(exc) and "crop" in str(exc)
    except ValueError as exc:
        assert why_c or why_s, f"refused valid inputs: {exc}"
        # the content is checked first; its problem is reported first
        check_refused(exc, why_c or why_s, "content" if why_c else "style")
    else:
        assert not why_c and not why_s and not small
        check_valid(c, content)
        check_valid(s, style)
        assert opts.size == 32
    assert (fingerprint(content), fingerprint(style)) == before


@pytest.mark.timeout(60)
@settings(max_examples=60, deadline=2000, database=None)
@given(
    size=st.one_of(st.integers(-5, 20000), st.floats(allow_nan=True), st.text(max_size=3), st.none()),
    steps=st.one_of(st.integers(-5, 10**8), st.floats(allow_nan=True), st.booleans()),
    style_weight=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3)),
    style_layers=st.one_of(st.just(("relu1_1",)), st.lists(st.text(max_size=8), max_size=3), st.integers()),
    init=st.one_of(st.sampled_from(["content", "noise", "nonsense"]), images(2_000)),
)
def test_prepare_options_valid_or_option_error(size, steps, style_weight, style_layers, init):
    content = np.zeros((8, 8, 3), np.uint8)
    try:
        _, _, opts = prepare(
            content, content, size=size, steps=steps, style_weight=style_weight, style_layers=style_layers, init=init
        )
    except (OptionError, ImageError) as exc:
        msg = str(exc)
        assert len(msg) > 20 and any(
            w in msg
            for w in (
                "must",
                "expected",
                "at least",
                "astype",
                "valid names",
                "nan_to_num",
                "empty",
                "lo < hi",
                "numpy",
                "dtype",
            )
        )
    else:
        assert opts.size is None or (isinstance(opts.size, int) and 1 <= opts.size <= 16384)  # None: by device
        assert isinstance(opts.steps, int) and opts.steps >= 1
        assert opts.style_weight is None or (math.isfinite(opts.style_weight) and opts.style_weight >= 0)
        if isinstance(init, np.ndarray):
            assert not problems(init, None)


# --------------------------------------------------------------------------- real runs


@st.composite
def small_images(draw) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from([d for d in DTYPES if d is not np.bool_])))
    h, w = draw(st.integers(4, 48)), draw(st.integers(4, 48))
    shape = draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 2), (h, w, 3), (h, w, 4)]))
    kind = draw(st.sampled_from(["random", "full_range", "constant", "huge", "tiny", "unit"]))
    return _values(dtype, shape, kind, draw(st.integers(0, 2**32 - 1)))


@pytest.mark.timeout(120)
@settings(max_examples=6, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=small_images(), style=small_images(), preview_every=st.integers(1, 3))
def test_stylize_end_to_end_on_odd_arrays(fast, content, style, preview_every):
    """Real (tiny) runs: constant, huge-range, 2-channel ... images give a finite pastiche or an OptionError."""
    before = fingerprint(content), fingerprint(style)
    opts = dict(fast, steps=2, scales=1, preview_every=preview_every)
    expected = resized_shape(content.shape[:2], opts["size"])
    # vgg16 up to relu5_1 pools 4 times: 16 px; the style is resized to the output's long edge
    too_small = min(expected) < 16 or too_small_for(style.shape, max(expected), 16)
    try:
        out = stylize(content, style, **opts)
    except OptionError as exc:
        assert too_small, f"refused valid inputs: {exc}"
        assert "increase" in str(exc) and "crop" in str(exc)
    else:
        assert not too_small
        assert out.shape == (*expected, 3) and out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert (fingerprint(content), fingerprint(style)) == before


@pytest.mark.timeout(120)
def test_iter_stylize_records_on_constant_and_extreme_images(fast):
    """Black content on a white style, and a float64 image spanning the whole float range."""
    extreme = np.tile(np.array([-1.7e308, 1.7e308, 0.0, 1.0]), (24, 8))
    cases = [(np.zeros((24, 24), np.uint8), np.full((24, 24, 3), 255, np.uint8)), (extreme, extreme)]
    for content, style in cases:
        before = fingerprint(content)
        records = list(iter_stylize(content, style, **dict(fast, steps=3)))
        assert [r.step for r in records] == [1, 2, 3]
        for r in records:
            assert all(math.isfinite(v) for v in r.losses.values()), r.losses
            if r.image is not None:
                assert r.image.dtype == np.float32 and np.isfinite(r.image).all()
                assert r.image.min() >= 0 and r.image.max() <= 1
        assert records[-1].image is not None
        assert fingerprint(content) == before


def test_bad_array_fails_before_any_work(fast, monkeypatch):
    """A bad image raises at the call (iter_stylize validates eagerly), before the engine starts."""
    import napari_nst.core.optim.engine as engine

    def boom(*a, **k):
        raise AssertionError("the engine ran for an invalid input")

    monkeypatch.setattr(engine, "run", boom)
    with pytest.raises(ImageError, match="nan_to_num"):
        iter_stylize(np.full((8, 8), np.nan), np.zeros((8, 8)), **fast)
