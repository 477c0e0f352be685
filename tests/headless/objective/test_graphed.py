"""The objective through Objective (eager, or a CUDA graph on a GPU) gives the same gradient."""

from __future__ import annotations

import pytest
import torch

from napari_nst.core.objective.graphed import Objective
from napari_nst.core.optim.pyramid import PyramidImage


def _fn(weight: torch.Tensor):
    def fn(g: torch.Tensor):
        feats = torch.nn.functional.conv2d(g, weight, padding=1).relu()
        parts = {"a": (feats**2).mean(), "b": (g - 0.5).abs().sum()}
        return parts["a"] * 3.0 + parts["b"], parts

    return fn


def _grads_direct(var: PyramidImage, fn) -> tuple[float, list[torch.Tensor]]:
    for p in var.params:
        p.grad = None
    total, _ = fn(var.image())
    total.backward()
    return float(total), [p.grad.clone() for p in var.params]


def _grads_objective(var: PyramidImage, obj: Objective) -> tuple[float, list[torch.Tensor]]:
    for p in var.params:
        p.grad = None
    g = var.image()
    total, parts, grad = obj(g)
    g.backward(grad)
    assert set(parts) == {"a", "b"}
    return float(total), [p.grad.clone() for p in var.params]


@pytest.mark.parametrize("levels", [0, 3])
def test_eager_objective_matches_a_direct_backward_through_the_pyramid(levels):
    torch.manual_seed(0)
    fn = _fn(torch.randn(4, 3, 3, 3))
    var = PyramidImage(torch.rand(1, 3, 24, 32), levels, 0.5)
    t1, g1 = _grads_direct(var, fn)
    t2, g2 = _grads_objective(var, Objective(fn, graph=False))
    assert t1 == pytest.approx(t2, rel=1e-6)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replays_the_eager_objective():
    torch.manual_seed(0)
    fn = _fn(torch.randn(4, 3, 3, 3, device="cuda"))
    obj = Objective(fn, graph=True)
    for seed in range(3):  # capture, then replays with new images; outputs are not overwritten later
        torch.manual_seed(seed)
        var = PyramidImage(torch.rand(1, 3, 24, 32, device="cuda"), 2, 0.5)
        t1, g1 = _grads_direct(var, fn)
        t2, g2 = _grads_objective(var, obj)
        assert obj.graph, "capture fell back to eager"
        assert t1 == pytest.approx(t2, rel=1e-5)
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
