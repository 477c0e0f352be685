"""The defaults that the widget and the command line use are the fast path (no timings here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_nst.core.optim import engine, levers
from napari_nst.core.optim.levers import Levers, use_levers
from napari_nst.core.options import Options


def test_defaults_are_the_fast_path():
    o = Options()
    assert o.precision == "auto"
    # single scale up to 256 px (the CPU's default size); above, coarse-to-fine from 129-256 px, so
    # that the painting's strokes keep their size relative to the picture (docs/controls.md)
    assert o.scales is None and len(Options(size=256).level_shapes((256, 256))) == 1
    assert [max(s) for s in Options(size=1024).level_shapes((1024, 1024))] == [256, 512, 1024]
    assert [max(s) for s in Options(size=300).level_shapes((300, 200))] == [150, 300]
    assert o.optimizer == "lbfgs" and o.pyramid >= 3
    assert engine.LBFGS_HISTORY <= 20, "a long L-BFGS history costs memory without paying"
    # outside a measurement the engine's internals are its own choices
    assert levers.current() == Levers()


def test_levers_apply_inside_their_block_only():
    from napari_nst.core.optim.lbfgs import LBFGS
    from napari_nst.core.optim.pyramid import PyramidImage

    var = PyramidImage(torch.rand(1, 3, 64, 48), 3, engine.PYRAMID_GAMMA)
    with use_levers(Levers(history_size=7, max_change=0.5)) as lv:
        opt = engine._make_optimizer(Options(), var, levers.current())
        assert isinstance(opt, LBFGS) and opt.history == 7 and opt.max_change == 0.5 and lv.history_size == 7
        with use_levers(Levers(lbfgs="torch")):
            assert isinstance(engine._make_optimizer(Options(), var, levers.current()), torch.optim.LBFGS)
    assert levers.current() == Levers()
    assert engine._make_optimizer(Options(), var, levers.current()).history == engine.LBFGS_HISTORY


def test_default_optimiser_is_ours_through_the_pyramid():
    from napari_nst.core.optim.lbfgs import LBFGS
    from napari_nst.core.optim.pyramid import PyramidImage

    o = Options()
    var = PyramidImage(torch.rand(1, 3, 64, 48), o.pyramid, engine.PYRAMID_GAMMA)
    opt = engine._make_optimizer(o, var, levers.current())
    assert isinstance(opt, LBFGS) and opt.history == engine.LBFGS_HISTORY
    assert opt.max_change == engine.LBFGS_MAX_CHANGE and opt.image_change == var.change
    assert var.levels == o.pyramid and opt.params == var.params


def test_default_run_uses_the_device_plan_autocast_and_levels(monkeypatch, fast, content, style):
    seen = []
    original = engine.VGGFeatures.forward

    def spy(self, x, taps=None):
        if x.requires_grad:  # an objective evaluation, not a target
            seen.append((x.is_contiguous(memory_format=torch.channels_last), torch.is_autocast_enabled("cpu")))
        return original(self, x, taps)

    monkeypatch.setattr(engine.VGGFeatures, "forward", spy)
    opts = {k: v for k, v in fast.items()}
    opts.update(size=64, steps=6)
    from napari_nst import iter_stylize

    recs = list(iter_stylize(content, style, **opts))
    assert [r.step for r in recs] == list(range(1, 7)) and recs[-1].image is not None
    assert recs[-1].levels == 1, "the default runs single-scale"
    assert len(seen) == 6
    dtype = engine.autocast_dtype("auto", torch.device("cpu"))
    plan = engine.network_plan(torch.device("cpu"), dtype)  # pinned per capability in test_device.py
    assert all(cl == plan.channels_last for cl, _ in seen)
    assert all(ac for _, ac in seen) == (dtype is torch.bfloat16)


def test_targets_are_float32_whatever_the_precision(fast, content, style):
    """The objective is the float32 one: bf16 and float32 runs start from the same objective value."""
    from napari_nst import iter_stylize

    first = {}
    for prec in ("auto", "float32"):
        rec = next(iter(iter_stylize(content, style, **{**fast, "precision": prec, "scales": 1})))
        first[prec] = rec.weights
    assert first["auto"] == pytest.approx(first["float32"], rel=1e-6)


def test_tiny_runs_drop_levels_instead_of_failing(fast, content, style):
    from napari_nst import iter_stylize

    recs = list(iter_stylize(content, style, **{**fast, "size": 24, "steps": 1, "scales": 3}))
    assert len(recs) == 1 and recs[0].levels == 1 and recs[0].image is not None
    assert np.isfinite(recs[0].losses["total"])
