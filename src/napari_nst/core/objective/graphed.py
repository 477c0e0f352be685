"""The objective and its gradient with respect to the image, optionally replayed from a CUDA graph.

On a GPU one evaluation of the network and the losses is several hundred small kernels: at 512 px
on an H200 the launches took about four times longer on the CPU than the kernels ran on the GPU
(docs/benchmarks.md, GPU). The shapes are fixed within a level, so the whole forward + backward
is captured once per level as a CUDA graph and replayed, one launch per evaluation. The image
goes in through a fixed input tensor; the gradient comes out of a fixed tensor and is passed
back through the (cheap, eager) pyramid to the optimiser's variables. Same objective, same
gradient: the graph replays exactly the kernels the eager evaluation runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger("napari_nst")

#: evaluations run eagerly on a side stream before capture (cuDNN and allocator warm-up)
WARMUP_EVALUATIONS = 2

Parts = dict[str, torch.Tensor]
ObjectiveFn = Callable[[torch.Tensor], tuple[torch.Tensor, Parts]]


class Objective:
    """``total, parts, grad = objective(image)``: the objective at ``image`` (1, 3, H, W) and
    ``d total / d image``; ``fn(image)`` must build the objective of an image that requires grad.

    ``graph=True`` (CUDA only) captures ``fn`` and its backward as a CUDA graph on the first call
    and replays it afterwards; if the capture fails, it logs why and stays eager.
    """

    def __init__(self, fn: ObjectiveFn, graph: bool) -> None:
        self.fn = fn
        self.graph = graph
        self._cuda_graph: torch.cuda.CUDAGraph | None = None
        self._x: torch.Tensor | None = None
        self._out: tuple[torch.Tensor, Parts, torch.Tensor] | None = None

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, Parts, torch.Tensor]:
        if not self.graph:
            return self._eager(image)
        if self._cuda_graph is None:
            try:
                self._capture(image)
            except RuntimeError as exc:  # an op that cannot be captured: stay eager, say why once
                log.warning("CUDA graph capture failed (%s); evaluating without a graph", str(exc).splitlines()[0])
                self.graph, self._cuda_graph, self._x, self._out = False, None, None, None
                torch.cuda.synchronize()
                return self._eager(image)
        assert self._x is not None and self._out is not None and self._cuda_graph is not None
        with torch.no_grad():
            self._x.copy_(image)
        self._cuda_graph.replay()
        total, parts, grad = self._out  # the graph's own tensors: the next replay overwrites them
        return total.clone(), {k: v.clone() for k, v in parts.items()}, grad.clone()

    def _eager(self, image: torch.Tensor) -> tuple[torch.Tensor, Parts, torch.Tensor]:
        x = image.detach().requires_grad_(True)
        total, parts = self.fn(x)
        (grad,) = torch.autograd.grad(total, x)
        return total.detach(), {k: v.detach() for k, v in parts.items()}, grad

    def _capture(self, image: torch.Tensor) -> None:
        x = image.detach().clone().requires_grad_(True)
        side = torch.cuda.Stream(device=image.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(image.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_EVALUATIONS):
                total, parts = self.fn(x)
                torch.autograd.grad(total, x)
        torch.cuda.current_stream(image.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            total, parts = self.fn(x)
            (grad,) = torch.autograd.grad(total, x)
        self._cuda_graph, self._x = graph, x
        self._out = (total.detach(), {k: v.detach() for k, v in parts.items()}, grad)
