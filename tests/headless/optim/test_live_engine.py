"""The engine's side of options changed during a run: a fresh optimiser from the current image
(the old history dropped), the level's targets computed once (again only where the colours
change), and the image mapped in and out of luminance mode."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nst import iter_stylize
from napari_nst.core.optim import engine


@pytest.fixture
def spies(monkeypatch):
    made: list = []
    targets: list = []
    make, level_targets = engine._make_optimizer, engine._level_targets

    def spy_make(opts, var, lv, tiled=False):
        opt = make(opts, var, lv, tiled)
        made.append((opt, var.detached().clone()))
        return opt

    def spy_targets(ctx, shape, tiling):
        targets.append(shape)
        return level_targets(ctx, shape, tiling)

    monkeypatch.setattr(engine, "_make_optimizer", spy_make)
    monkeypatch.setattr(engine, "_level_targets", spy_targets)
    return made, targets


def test_an_update_restarts_the_optimiser_from_the_current_image(content, style, fast, spies):
    made, targets = spies
    run = iter_stylize(content, style, **{**fast, "steps": 100, "preview_every": 1})
    recs = [next(run) for _ in range(4)]
    assert len(made) == 1 and len(targets) == 1
    old = made[0][0]
    run.update(style_strength=5)
    rec = next(run)
    assert rec.update_id == 1
    assert len(made) == 2 and made[1][0] is not old  # a new optimiser: its history starts empty
    # it starts where the old one had moved the image (not from the content, not from an old image)
    start = made[1][1].permute(0, 2, 3, 1)[0].numpy()
    assert not np.allclose(start, recs[-1].image, atol=1e-4)  # the step after the last record moved it
    np.testing.assert_allclose(rec.image, start, atol=1e-5)  # the new objective's first image is that image
    assert len(targets) == 1  # a change of weights: the level's targets are kept
    run.update(preserve_color="histogram")
    next(run)
    assert len(made) == 3 and len(targets) == 2  # the style's colours change: its features too
    run.close()


def test_without_updates_no_targets_are_kept(content, style, fast, spies):
    made, targets = spies
    recs = list(iter_stylize(content, style, **{**fast, "steps": 3}))
    assert len(made) == 1 and len(targets) == 1 and all(r.update is None for r in recs)


def test_an_update_at_a_level_start_applies_there(content, style, fast, spies):
    made, _ = spies
    run = iter_stylize(content, style, **{**fast, "size": 64, "scales": 2, "steps": 6})
    recs = []
    for rec in run:
        recs.append(rec)
        if rec.last_of_level and rec.level == 1:
            run.update(style_strength=2)
    first_fine = next(r for r in recs if r.level == 2)
    assert first_fine.update == {"style_strength": 2.0}
    assert recs[-1].step == recs[-1].total == 6


@pytest.mark.filterwarnings("ignore::napari_nst.core.errors.PrecisionWarning")
def test_a_bfloat16_level_measures_its_resolution_once(content, style, fast, monkeypatch):
    calls = []
    parts = engine._bf16_parts

    def spy(ctx, g):
        calls.append(tuple(g.shape))
        return parts(ctx, g)

    monkeypatch.setattr(engine, "_bf16_parts", spy)
    run = iter_stylize(content, style, **{**fast, "steps": 100, "precision": "bfloat16"})
    next(run)
    assert len(calls) == 1
    seen = []
    original = engine._bf16_resolution
    monkeypatch.setattr(engine, "_bf16_resolution", lambda ctx, w, g: seen.append(original(ctx, w, g)) or seen[-1])
    run.update(style_strength=4, style_layer_weights=(1, 0, 0, 0, 0))
    rec = next(run)
    assert rec.update_id == 1 and rec.precision == "bfloat16"
    assert len(calls) == 1 and len(seen) == 1  # weighed again, not measured again
    assert seen[0] > 0
    run.close()
