"""Optical flow, warping, the consistency mask and the temporal term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("cv2")

from napari_nst.core.objective.losses import TemporalTerm, temporal_loss  # noqa: E402
from napari_nst.core.stack import flow  # noqa: E402


def _scene(shape=(64, 80)) -> np.ndarray:
    rng = np.random.default_rng(3)
    small = rng.random((shape[0] // 4 + 4, shape[1] // 4 + 4, 3)).astype(np.float32)
    big = np.kron(small, np.ones((4, 4, 1), np.float32))  # blocks: texture DIS can follow
    return big


def test_flow_finds_a_known_shift_and_warp_undoes_it():
    scene = _scene()
    a, b = scene[8:72, 8:88], scene[5:69, 10:90]  # b(p) = a(p + (dx=2, dy=-3))
    back = flow.dis_flow(b, a)
    inner = (slice(8, -8), slice(8, -8))
    assert np.median(back[inner][..., 0]) == pytest.approx(2, abs=0.25)
    assert np.median(back[inner][..., 1]) == pytest.approx(-3, abs=0.25)
    carried, mask = flow.carry(a, a, b)
    assert np.abs(carried - b)[inner].mean() < 0.1 * np.abs(a - b)[inner].mean()
    assert mask[inner].mean() > 0.9


def test_mask_is_zero_where_the_flow_points_outside_or_does_not_come_back():
    h, w = 20, 30
    back = np.zeros((h, w, 2), np.float32)
    back[..., 0] = 3.0  # everything comes from 3 px to the right
    fwd = np.zeros((h, w, 2), np.float32)
    fwd[..., 0] = -3.0  # consistent forward flow
    m = flow.consistency_mask(back, fwd)
    assert m[:, : w - 3].min() == 1 and m[:, w - 3 :].max() == 0  # the last 3 columns come from outside
    fwd[:, 10:15, 0] = 5.0  # where the forward flow disagrees
    m2 = flow.consistency_mask(back, fwd)
    assert m2[:, 7:12].max() == 0 and m2[:, :5].min() == 1


def test_temporal_loss_is_the_masked_mean_squared_difference():
    x = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]]).repeat(1, 3, 1, 1)
    w = torch.zeros_like(x)
    c = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    expected = (0.0 + 0.0 + 0.25 + 0.25) * 3 / 12  # masked pixel 1.0 excluded; D = 3 * 4 values
    assert temporal_loss(x, w, c).item() == pytest.approx(expected)
    term = TemporalTerm(w, c, 5.0)
    assert term({}, x).item() == pytest.approx(expected) and term.name == "temporal"
    assert temporal_loss(x, w, torch.zeros_like(c)).item() == 0


def _detail_along_rows(image: np.ndarray) -> np.ndarray:
    """Per pixel pair: the squared difference to the next pixel of its row (a band smeared along the
    rows has none)."""
    return ((image[:, 1:] - image[:, :-1]) ** 2).mean(-1)


def _pan() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A pan 6 px right over a smooth scene (DIS follows it everywhere): frames 0 and 1, frame 0's
    "pastiche" (the scene with strokes that move with it) and what frame 1's would be."""
    import cv2

    noise = np.random.default_rng(3).random((64, 96, 3)).astype(np.float32)
    scene = cv2.GaussianBlur(noise, (0, 0), 2.0)
    scene = (scene - scene.min()) / (scene.max() - scene.min())
    ys, xs = np.mgrid[0:64, 0:96]
    strokes = (0.5 + 0.5 * np.sin(xs * 1.9 + ys * 0.7))[..., None].astype(np.float32)
    painted = 0.6 * scene + 0.4 * strokes
    return scene[:, 8:88], scene[:, 14:94], painted[:, 8:88], painted[:, 14:94]  # frame 1(p) = frame 0(p + (6, 0))


def test_content_entering_at_the_edge_starts_painted_not_smeared():
    """The last columns of frame 1 come from outside frame 0. Their start is frame 1's content with
    the carried paint's strokes (mirrored at the edge), not frame 0's pastiche's edge column repeated
    (a smeared band); elsewhere it is the warped pastiche, as before."""
    prev, cur, pastiche, truth = _pan()
    start, mask = flow.carry(pastiche, prev, cur)
    ruder = np.clip(flow.warp(pastiche, flow.dis_flow(cur, prev)), 0, 1)  # Ruder et al.: warped everywhere
    np.testing.assert_allclose(start[mask > 0], ruder[mask > 0], atol=1e-6)  # where the flow is trusted
    rows, band, inner = slice(8, -8), slice(-5, None), slice(8, -16)
    assert mask[rows, -6:].max() == 0 and mask[rows, :-8].min() == 1  # from outside frame 0: no temporal term
    detail, before = _detail_along_rows(start), _detail_along_rows(ruder)
    assert before[rows, band].mean() < 1e-3 * before[rows, inner].mean()  # Ruder's start: the edge repeated
    assert detail[rows, band].mean() > 0.3 * detail[rows, inner].mean()
    assert np.abs(start - cur)[rows, -6:].mean() > 0.5 * np.abs(truth - cur)[rows, -6:].mean()  # painted, not the photo


def test_without_repainting_every_pixel_starts_from_the_warped_pastiche():
    """The lever that measures what the repainting buys (benchmarks/stack.py, part edge)."""
    prev, cur, pastiche, _ = _pan()
    start, mask = flow.carry(pastiche, prev, cur, repaint=False)
    np.testing.assert_array_equal(start, np.clip(flow.warp(pastiche, flow.dis_flow(cur, prev)), 0, 1))
    np.testing.assert_array_equal(mask, flow.carry(pastiche, prev, cur)[1])
