"""Restyle one region (option ``mask``, core/optim/masked.py): the pixels outside the mask are those of
the start image bit for bit (the content, or ``init`` when it is an image), the region changes, its
border is feathered inwards; coarse-to-fine levels, tiles, luminance mode, resuming; bad masks are
refused before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_nst
from napari_nst.core.errors import OptionError
from napari_nst.core.image.arrays import to_rgb_float
from napari_nst.core.image.masks import check_mask, mask_at
from napari_nst.core.optim import masked
from napari_nst.core.optim.masked import feather

H, W = 36, 48  # the content at its working size (size=48): the start image is the content itself


@pytest.fixture
def photo(content) -> np.ndarray:
    return np.ascontiguousarray(content[:H, :W])


@pytest.fixture
def box() -> np.ndarray:
    """A 20x24 region in the middle (True = restyle)."""
    m = np.zeros((H, W), bool)
    m[8:28, 12:36] = True
    return m


def test_outside_the_mask_is_the_content_bit_for_bit(photo, style, fast, box):
    out = napari_nst.stylize(photo, style, mask=box, **dict(fast, size=W, steps=6))
    start = to_rgb_float(photo)
    assert out.shape == start.shape and out.dtype == np.float32
    assert np.array_equal(out[~box], start[~box])  # bit for bit, not merely close
    inside = np.abs(out - start).max(-1)
    assert inside[box].max() > 0.02  # the region was restyled
    # feathered inwards: the mask's edge pixels move less than its middle
    assert inside[8, 12:36].mean() < inside[14:22, 20:28].mean()


def test_without_the_mask_the_same_run_changes_those_pixels(photo, style, fast, box):
    """The exactness above is the mask's doing: the same run without it moves them."""
    out = napari_nst.stylize(photo, style, **dict(fast, size=W, steps=6))
    assert np.abs(out[~box] - to_rgb_float(photo)[~box]).max() > 0.02


def test_continue_repaints_a_region_of_a_finished_pastiche(photo, style, fast, box):
    first = napari_nst.stylize(photo, style, **dict(fast, size=W, steps=4))
    again = napari_nst.stylize(photo, style[::-1], init=first, mask=box, **dict(fast, size=W, steps=4))
    assert np.array_equal(again[~box], first[~box])  # the pastiche kept, not the content
    assert np.abs(again[box] - first[box]).max() > 0.02


@pytest.mark.parametrize(
    "extra",
    [
        {"scales": 2, "size": W * 2},  # coarse to fine (content enlarged: the start image is its resize)
        {"preserve_color": "luminance"},  # the content's chroma put back, then composited
        {"optimizer": "adam", "pyramid": 0},
        {"init": "noise"},  # the region starts from noise; outside, the content
        {"style_strength": 3.0, "tv_weight": 1.0},
    ],
    ids=["scales", "luminance", "adam", "noise", "controls"],
)
def test_outside_stays_exact_with_other_settings(photo, style, fast, box, extra):
    opts = {**fast, "size": W, "steps": 6, **extra}
    out = napari_nst.stylize(photo, style, mask=box, **opts)
    start = to_rgb_float(photo)
    if out.shape[:2] != start.shape[:2]:  # the engine's own resize of the start image
        from napari_nst.core.image.tensors import resize, to_numpy, to_tensor

        start = to_numpy(resize(to_tensor(start, torch.device("cpu")), out.shape[:2]))
    keep = ~mask_at(box, out.shape[:2])
    assert np.array_equal(out[keep], start[keep])
    assert np.abs(out - start).max() > 0.02


def test_every_record_keeps_the_outside(photo, style, fast, box):
    recs = list(napari_nst.iter_stylize(photo, style, mask=box, **dict(fast, size=W, steps=4)))
    start = to_rgb_float(photo)
    assert all(r.image is not None and np.array_equal(r.image[~box], start[~box]) for r in recs)


def test_tiles_keep_the_outside(content, style, fast):
    big = np.kron(content, np.ones((3, 3, 1), np.uint8))[:91, :128]  # 91x128: the working size itself
    mask = np.zeros(big.shape[:2], bool)
    mask[16:72, 24:104] = True
    recs = list(napari_nst.iter_stylize(big, style, mask=mask, **dict(fast, size=128, steps=4, tile_size=96)))
    assert {r.tile_size for r in recs} == {96}  # it was tiled
    out, start = recs[-1].image, to_rgb_float(big)
    assert np.array_equal(out[~mask], start[~mask]) and np.abs(out[mask] - start[mask]).max() > 0.02


def test_a_resumed_run_keeps_the_outside_and_the_mask_must_match(photo, style, fast, box):
    opts = dict(fast, size=W, steps=6)
    run = napari_nst.iter_stylize(photo, style, mask=box, **opts)
    for rec in run:
        if rec.step == 3:
            break
    run.close()
    stopped = run.last()
    resumed = list(napari_nst.iter_stylize(photo, style, mask=box, resume=stopped, **opts))
    assert resumed[0].step == 4 and np.array_equal(resumed[-1].image[~box], to_rgb_float(photo)[~box])
    with pytest.raises(OptionError, match="mask="):
        napari_nst.iter_stylize(photo, style, mask=~box, resume=stopped, **opts)
    with pytest.raises(OptionError, match="mask="):
        napari_nst.iter_stylize(photo, style, resume=stopped, **opts)


def test_a_label_image_and_a_float_mask_mean_nonzero(photo, style, fast, box, monkeypatch):
    seen = []
    real = masked.Restyle.build

    def spy(mask, keep, final, gray):
        seen.append(np.array(mask))
        return real(mask, keep, final, gray)

    monkeypatch.setattr(masked.Restyle, "build", staticmethod(spy))
    labels = box.astype(np.int32) * 7
    napari_nst.stylize(photo, style, mask=labels, **dict(fast, size=W, steps=1))
    napari_nst.stylize(photo, style, mask=box * 0.5, **dict(fast, size=W, steps=1))
    assert len(seen) == 2 and all(s.dtype == bool and np.array_equal(s, box) for s in seen)
    assert labels.dtype == np.int32 and labels.max() == 7  # the caller's array untouched


# ----------------------------------------------------------------------------- the feather


def test_the_feather_is_zero_outside_and_rises_inwards_to_one():
    inside = torch.zeros(1, 1, 40, 60)
    inside[..., 10:30, 10:50] = 1.0
    w = feather(inside, 2.0)[0, 0]
    assert (w[inside[0, 0] == 0] == 0).all()  # exactly 0 outside
    row = w[20, 10:30]
    assert 0.1 < float(row[0]) < 0.35 and float(row[-1]) == pytest.approx(1.0, abs=0.01)
    assert (row[1:] >= row[:-1]).all()  # rising from the edge to the middle
    assert float(w[20, 30]) == pytest.approx(1.0, abs=1e-3)
    # the image's own border is not the mask's: a mask reaching it is not feathered there
    full = feather(torch.ones(1, 1, 20, 20), 2.0)
    torch.testing.assert_close(full, torch.ones_like(full), rtol=0, atol=1e-6)
    edge = torch.zeros(1, 1, 20, 20)
    edge[..., :, :10] = 1.0
    w = feather(edge, 2.0)[0, 0]
    assert float(w[0, 0]) == pytest.approx(1.0, abs=0.01) and float(w[10, 0]) == pytest.approx(1.0, abs=0.01)
    assert float(w[10, 9]) < 0.35  # the mask's own edge is


def test_the_feather_scales_with_the_level():
    r = masked.Restyle.build(np.pad(np.ones((40, 40), bool), 20), np.zeros((80, 80, 3), np.float32), (80, 80), False)
    fine, _, _ = r.at((80, 80), torch.device("cpu"))
    coarse, _, _ = r.at((40, 40), torch.device("cpu"))
    # the ramp is about as wide, in the image's units, at both levels: 2x the pixels at the finer one
    ramp_fine = int(((fine[0, 0, 40] > 0) & (fine[0, 0, 40] < 0.95)).sum())
    ramp_coarse = int(((coarse[0, 0, 20] > 0) & (coarse[0, 0, 20] < 0.95)).sum())
    assert ramp_fine >= 2 * ramp_coarse - 2 and ramp_coarse >= 1


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.ones((H, W + 1), bool), r"mask has shape \(36, 49\) but the content image is \(36, 48\)"),
        (np.zeros((H, W), bool), "mask has no nonzero pixel"),
        (np.ones((2, H, W), bool), "give one 2-D"),
        (np.ones((H, W, 3), np.uint8), "give one 2-D"),
        (np.full((H, W), np.nan), "NaN"),
        (np.full((H, W), "a"), "boolean or label image"),
        ("mask.png", "read it first"),
        (np.ones(W, bool), "must be a 2-D"),
    ],
    ids=["shape", "empty", "stack for an image", "rgb", "nan", "text", "file name", "1-D"],
)
def test_bad_masks_are_refused_at_the_call(photo, style, fast, mask, message):
    with pytest.raises(OptionError, match=message):
        napari_nst.iter_stylize(photo, style, mask=mask, **dict(fast, size=W))  # before the first next()


def test_a_mask_smaller_than_a_working_pixel_is_refused(content, style, fast):
    big = np.kron(content, np.ones((8, 8, 1), np.uint8))  # 320x448, run at 48 px
    dot = np.zeros(big.shape[:2], bool)
    dot[3, 3] = True
    with pytest.raises(OptionError, match="marks no pixel at the working size"):
        napari_nst.iter_stylize(big, style, mask=dot, **dict(fast, size=48))
    assert check_mask(dot, big.shape[:2]).sum() == 1  # at full size it is a mask


# ----------------------------------------------------------------------------- stacks


@pytest.fixture
def frames(photo) -> np.ndarray:
    return np.stack([np.roll(photo, 2 * t, axis=1) for t in range(3)])


def test_a_stack_keeps_each_frames_content_outside_its_mask(frames, style, fast, box):
    masks = np.stack([np.roll(box, 4 * t, axis=1) for t in range(3)])
    masks[2] = False  # a frame without a mask is kept as it is
    out = napari_nst.stylize_stack(frames, style, mask=masks, **dict(fast, size=W, steps=4))
    for t in range(3):
        start = to_rgb_float(frames[t])
        assert np.array_equal(out[t][~masks[t]], start[~masks[t]])
        assert t == 2 or np.abs(out[t][masks[t]] - start[masks[t]]).max() > 0.02
    one = napari_nst.stylize_stack(frames, style, mask=box, **dict(fast, size=W, steps=4, temporal_weight=0))
    assert all(np.array_equal(one[t][~box], to_rgb_float(frames[t])[~box]) for t in range(3))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda box: np.stack([box, box]), "mask has 2 masks .* but the stack has 3 frames"),
        (lambda box: np.zeros((3, H, W), bool), "every frame's"),
        (lambda box: np.ones((3, H, W + 2), bool), "frames of shape"),
        (lambda box: np.zeros((H, W), bool), "no nonzero pixel"),
    ],
    ids=["length", "all empty", "frame shape", "one empty"],
)
def test_bad_stack_masks_are_refused_at_the_call(frames, style, fast, box, make, message):
    with pytest.raises(OptionError, match=message):
        napari_nst.iter_stylize_stack(frames, style, mask=make(box), **dict(fast, size=W))
