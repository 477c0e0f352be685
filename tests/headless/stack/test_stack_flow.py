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
