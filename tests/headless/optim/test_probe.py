"""A balanced blend's floors (core/optim/probe.py): measured per style, once per run, where a blend is used."""

from __future__ import annotations

import numpy as np
import pytest

import napari_nst
from napari_nst.core.optim import probe


@pytest.fixture
def counted(monkeypatch):
    calls: list[list[float]] = []
    real = probe.style_floors

    def spy(*a, **k):
        out = real(*a, **k)
        calls.append(out)
        return out

    monkeypatch.setattr(probe, "style_floors", spy)
    return calls


def test_a_style_close_to_the_content_has_the_lower_floor(content, style, fast, counted):
    """The content itself as the second style is reached almost exactly; the painting is not, so
    the balanced blend weighs the content-like style more than its weight says."""
    *_, last = napari_nst.iter_stylize(
        content, [style, content], style_blend=(0.5, 0.5), **{**fast, "size": 48, "steps": 2}
    )
    assert len(counted) == 1
    painting, itself = counted[0]
    assert 0 <= itself < 0.5 * painting


@pytest.mark.parametrize(
    ("extra", "probes"),
    [
        ({"style_blend_mode": "linear"}, 0),
        ({"style_blend": (1, 0)}, 0),  # one style in use: its weights are the coefficients
        ({"scales": 2}, 1),  # once for the run, not once per level
        ({"regions": "halves", "region_styles": {0: 0, 1: 1}}, 0),  # each region one style: no blend
        ({"regions": "halves", "region_styles": {0: 0}}, 1),  # label 1 takes the blend
    ],
)
def test_floors_are_measured_once_and_only_for_a_balanced_blend(content, style, fast, counted, extra, probes):
    if extra.get("regions") == "halves":
        labels = np.zeros(content.shape[:2], np.int32)
        labels[:, content.shape[1] // 2 :] = 1
        extra = {**extra, "regions": labels}
    *_, last = napari_nst.iter_stylize(content, [style, style[::-1]], **{**fast, "size": 64, **extra})
    assert len(counted) == probes


def test_a_stack_measures_the_floors_once_for_all_frames(content, style, fast, counted):
    frames = np.stack([content, np.roll(content, 2, axis=1), np.roll(content, 4, axis=1)])
    out = napari_nst.stylize_stack(frames, [style, style[::-1]], **{**fast, "size": 48, "steps": 2})
    assert out.shape[0] == 3 and len(counted) == 1


def test_a_second_run_of_the_same_pictures_reuses_the_floors(content, style, fast, monkeypatch):
    """Kept in the process by what they depend on: the same run again measures nothing; another
    painting measures only its own floor."""
    measured = []
    real = probe._floor
    monkeypatch.setattr(probe, "_floor", lambda *a, **k: measured.append(1) or real(*a, **k))
    monkeypatch.setattr(probe, "_KNOWN", {})
    run = {**fast, "size": 32, "steps": 1}
    napari_nst.stylize(content, [style, style[::-1]], **run)
    assert len(measured) == 2
    napari_nst.stylize(content, [style, style[::-1]], **run)
    assert len(measured) == 2
    napari_nst.stylize(content, [style, np.ascontiguousarray(style[:, ::-1])], **run)
    assert len(measured) == 3
    napari_nst.stylize(content, [style, style[::-1]], **{**run, "style_loss": "wasserstein"})
    assert len(measured) == 5
