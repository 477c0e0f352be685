"""Stacks: iter_stylize_stack / stylize_stack (small sizes, seeded random weights)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import IMAGES, needs_shared

import napari_nst
from napari_nst.core.stack import engine as stack_mod


@pytest.fixture
def frames(content) -> np.ndarray:
    """Three 40x56 RGB frames: the content fixture moving right by 2 px a frame."""
    return np.stack([np.roll(content, 2 * t, axis=1) for t in range(3)])


def _final(records):
    return [r for r in records if r.step == r.total]


@pytest.mark.parametrize("layout", ["nhw3_uint16", "nhw_uint8", "nhw4_float", "hwn_axis"])
def test_stack_shapes_and_dtypes(layout, frames, style, fast):
    if layout == "nhw3_uint16":
        arr, axis = frames.astype(np.uint16) * 200, 0
    elif layout == "nhw_uint8":
        arr, axis = frames[..., 0], 0
    elif layout == "nhw4_float":
        arr = np.concatenate([frames / 255.0, np.ones(frames.shape[:3] + (1,))], axis=-1).astype(np.float32)
        axis = 0
    else:
        arr, axis = np.moveaxis(frames[..., 1], 0, -1), 2  # (H, W, N)
    before = arr.copy()
    out = napari_nst.stylize_stack(arr, style, axis=axis, **fast)
    assert out.dtype == np.float32 and out.shape == (3, 23, 32, 3)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(arr, before)


def test_records_say_frame_and_stack_progress(frames, style, fast):
    recs = list(napari_nst.iter_stylize_stack(frames, style, **{**fast, "steps": 6}))
    later = stack_mod.frame_steps(napari_nst.core.Options(steps=6))
    assert later == 2  # about a third of steps
    assert [r.frame for r in recs] == [0] * 6 + [1] * later + [2] * later
    assert {r.frames for r in recs} == {3}
    assert [r.stack_step for r in recs] == list(range(1, 6 + 2 * later + 1))
    assert {r.stack_total for r in recs} == {6 + 2 * later}
    finals = _final(recs)
    assert [r.frame for r in finals] == [0, 1, 2] and all(r.image is not None for r in finals)
    assert "temporal" not in finals[0].losses
    assert finals[1].weights["temporal"] == stack_mod.TEMPORAL_BALANCE and "temporal" in finals[2].losses
    assert all(r.elapsed >= p.elapsed for p, r in zip(recs[:-1], recs[1:], strict=True))  # since the stack started


def test_first_frame_is_a_single_image_run_and_later_frames_start_from_it(frames, style, fast):
    opts = {**fast, "steps": 5, "frame_steps": 3}
    out = napari_nst.stylize_stack(frames, style, **opts)
    single = napari_nst.stylize(frames[0], style, **{k: v for k, v in opts.items() if k != "frame_steps"})
    np.testing.assert_allclose(out[0], single, atol=1e-6)
    # frame 1 starts from frame 0's pastiche moved by the flow, not from its own content
    first = next(r for r in napari_nst.iter_stylize_stack(frames, style, **opts) if r.frame == 1)
    content1 = napari_nst.stylize(frames[1], style, **{**fast, "steps": 1})
    assert np.abs(first.image - out[0]).mean() < np.abs(content1 - out[0]).mean()


def test_temporal_weight_zero_means_no_temporal_term(frames, style, fast):
    finals = _final(napari_nst.iter_stylize_stack(frames, style, temporal_weight=0, **fast))
    assert all("temporal" not in r.losses for r in finals)


def test_style_grams_are_computed_once(frames, style, fast, monkeypatch):
    from napari_nst.core.optim import engine

    given = []
    real = engine._targets

    def spy(net, content, style_t, opts, grams=None, *rest):
        given.append(grams is not None)
        return real(net, content, style_t, opts, grams, *rest)

    monkeypatch.setattr(engine, "_targets", spy)
    napari_nst.stylize_stack(frames, style, **fast)
    assert given == [False, True, True]


def test_closing_the_generator_stops_and_keeps_finished_frames(frames, style, fast):
    gen = napari_nst.iter_stylize_stack(frames, style, **{**fast, "steps": 6})  # 2 steps per later frame
    seen = []
    for rec in gen:
        seen.append(rec)
        if rec.frame == 1:
            break
    gen.close()
    assert [r.frame for r in _final(seen)] == [0]
    with pytest.raises(StopIteration):
        next(gen)


def test_continue_at_the_next_frame(frames, style, fast):
    out = napari_nst.stylize_stack(frames, style, **fast)
    recs = list(napari_nst.iter_stylize_stack(frames, style, start=2, previous=out[1], **fast))
    assert {r.frame for r in recs} == {2}
    assert recs[-1].stack_total == stack_mod.frame_steps(napari_nst.core.Options(steps=fast["steps"]))
    assert "temporal" in recs[-1].losses


def test_without_opencv_frames_start_unmoved_and_say_so(frames, style, fast, monkeypatch):
    monkeypatch.setattr(stack_mod, "have_flow", lambda: False)
    finals = _final(napari_nst.iter_stylize_stack(frames, style, **fast))
    assert finals[0].note == ""
    assert all("OpenCV is not installed" in r.note and "temporal" not in r.losses for r in finals[1:])


@pytest.mark.parametrize(
    "stack, kwargs, match",
    [
        (np.zeros((40, 56), np.uint8), {}, "for one image use napari_nst.stylize"),
        (np.zeros((3, 40, 56), np.uint8), {"axis": 3}, "axis=3 is out of range"),
        (np.zeros((40, 56, 3), np.uint8), {}, "looks like one RGB image"),
        ([np.zeros((40, 56), np.uint8), np.zeros((40, 50), np.uint8)], {}, "frame 1 is 40x50"),
        (np.zeros((3, 40, 56), np.uint8), {"temporal_weight": -1}, "temporal_weight must be"),
        (np.zeros((3, 40, 56), np.uint8), {"frame_steps": 0}, "frame_steps must be"),
        (np.zeros((3, 40, 56), np.uint8), {"start": 1}, "needs previous="),
    ],
)
def test_bad_input_is_a_value_error_at_the_call(stack, kwargs, match, style, fast):
    with pytest.raises(ValueError, match=match):
        napari_nst.iter_stylize_stack(stack, style, **{**fast, **kwargs})


def test_integer_stacks_use_one_range_for_all_frames():
    from napari_nst.core.inputs import stack_frames

    arr = np.stack([np.full((8, 8), 100, np.uint16), np.full((8, 8), 1000, np.uint16)])
    arr[0, 0, 0] = 0
    src = stack_frames(arr)
    assert src.limits == (0.0, 1000.0)
    assert src[0][1, 1, 0] == pytest.approx(0.1) and src[1][1, 1, 0] == pytest.approx(1.0)


def test_stack_in_a_child_process(frames, style, fast):
    """The widget's way: StackEngineProcess validates without torch and runs run_stack in the child."""
    from napari_nst.core.process.client import StackEngineProcess

    recs = list(StackEngineProcess(frames, style, **fast))
    finals = _final(recs)
    assert [r.frame for r in finals] == [0, 1, 2] and finals[-1].image.shape == (23, 32, 3)
    assert "temporal" in finals[-1].losses
    out = napari_nst.stylize_stack(frames, style, **fast)
    np.testing.assert_allclose(finals[-1].image, out[2], atol=1e-5)  # the same engine, the same result


def test_content_entering_at_the_edge_is_painted_like_the_rest(hed_weights):
    """A pan 6 px right over Tübingen with the trained weights: the columns that enter at the right
    edge of each later frame have about the detail along their rows that the rest of the frame has
    (Ruder et al.'s start, the previous pastiche's edge column repeated, left them at 0.2x: horizontal
    streaks that the frame's evaluations did not repaint and the next frame carried on)."""
    pytest.importorskip("cv2")
    from PIL import Image

    photo = np.asarray(Image.open(needs_shared(IMAGES / "tubingen.jpg")).convert("RGB").reduce(4))  # 192x256
    frames = np.stack([photo[80:128, 60 + 6 * t : 124 + 6 * t] for t in range(3)])  # 64x48, houses
    painting = np.asarray(Image.open(needs_shared(IMAGES / "starry_night.jpg")).convert("RGB").reduce(4))
    out = napari_nst.stylize_stack(
        frames, painting, size=64, steps=30, model="vgg16", weights=str(hed_weights), device="cpu"
    )
    for t in (1, 2):
        along = ((out[t][:, 1:] - out[t][:, :-1]) ** 2).mean(-1)[2:-2]  # to the next pixel of the row
        band, rest = along[:, -(6 * t - 1) :].mean(), along[:, : -(6 * t + 8)].mean()
        assert band > 0.6 * rest, (t, band / rest)
