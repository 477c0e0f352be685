"""The variable the optimiser moves: the pastiche's pixels, or a Laplacian-style pyramid of them.

Departure from the paper (an option, ``Options.pyramid``; 0 = the paper's way): Gatys et al.
optimise the pixels of G directly. Here G can instead be the sum of ``levels + 1`` layers, each
upsampled (bilinear) to the full size::

    G = z_0 + gamma * up(z_1) + gamma^2 * up(z_2) + ...      z_k at 1/2^k of the size

The objective is unchanged (it is a function of G only, and every G is reachable through z_0);
only the optimiser's coordinates change. A gradient step in z moves low frequencies further than
a step in the pixels (a multigrid-like preconditioner: the gradient of z_k sums 4^k pixels'
gradients), which is where L-BFGS without a line search is slowest on this objective
(docs/benchmarks.md measures it). At the start z_0 is the initial image and the other layers are
zero, so G starts exactly where the pixel parametrisation starts.

With a mask (option ``mask``, :mod:`napari_nst.core.optim.masked`), the image evaluated is
``K + W * (G - K)``: ``K`` the image kept outside the mask, ``W`` the feathered mask (0 outside,
so those pixels are ``K`` exactly, whatever ``G`` holds there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class PyramidImage:
    """The pastiche ``G`` as a pyramid of ``levels`` coarser layers on top of the pixels."""

    def __init__(
        self,
        image: torch.Tensor,
        levels: int = 0,
        gamma: float = 0.5,
        keep: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> None:
        if levels < 0:
            raise ValueError(f"levels must be >= 0, got {levels}")
        h, w = image.shape[-2:]
        self.shape = (int(h), int(w))
        self.gamma = float(gamma)
        self._matrices: dict[tuple[object, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        #: a mask: the image kept (1, 3, h, w) and the weight of G (1, 1, h, w) in [0, 1]; None: G itself
        self.keep, self.weight = keep, weight
        self.layers = [image.detach().clone().contiguous().requires_grad_(True)]
        for k in range(1, levels + 1):
            hk, wk = -(-h // 2**k), -(-w // 2**k)  # ceil: never empty
            self.layers.append(torch.zeros(1, image.shape[1], hk, wk, device=image.device).requires_grad_(True))
            if hk == 1 and wk == 1:
                break  # a 1x1 layer is the last one that adds anything

    @property
    def levels(self) -> int:
        """Coarser layers in use (0: the pixels themselves)."""
        return len(self.layers) - 1

    @property
    def params(self) -> list[torch.Tensor]:
        """The tensors the optimiser moves."""
        return self.layers

    def image(self) -> torch.Tensor:
        """``G`` (differentiable with respect to the layers); with a mask ``K + W * (G - K)``."""
        g = self.compose(self.layers)
        if self.keep is None or self.weight is None:
            return g
        return self.keep + self.weight * (g - self.keep)  # W = 0: K + 0, exactly K

    def compose(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """The image that ``layers`` (shaped like :attr:`params`) stand for; linear in them."""
        if len(layers) == 1:
            return layers[0]
        g = layers[0]
        for k, z in enumerate(layers[1:], start=1):
            g = g + self.gamma**k * self._up(z)
        return g

    def _up(self, z: torch.Tensor) -> torch.Tensor:
        """Bilinear upsampling of ``z`` to the image's shape (``align_corners=False``).

        torch's bilinear ``interpolate`` has no deterministic backward on CUDA (it raises when
        ``torch.use_deterministic_algorithms(True)`` is on); then the same interpolation runs as
        two matrix products ``A_h z A_w^T``, whose backward is deterministic (cuBLAS needs
        ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` then, as for any matrix product under that setting).
        """
        if not matrix_upsampling(z.device):
            return F.interpolate(z, size=self.shape, mode="bilinear", align_corners=False)
        key = (tuple(z.shape[-2:]), z.device, z.dtype)
        if key not in self._matrices:  # built once per layer, not per evaluation
            self._matrices[key] = (
                bilinear_matrix(self.shape[0], z.shape[-2], z.device, z.dtype),
                bilinear_matrix(self.shape[1], z.shape[-1], z.device, z.dtype).T,
            )
        ah, aw_t = self._matrices[key]
        return ah @ z @ aw_t

    @torch.no_grad()
    def change(self, deltas: list[torch.Tensor]) -> torch.Tensor:
        """The largest absolute change a step ``deltas`` in the layers makes to the image (a 0-d
        tensor on the image's device: reading it is left to the caller, e.g. not at all on a GPU)."""
        change = self.compose(deltas)
        if self.weight is not None:
            change = change * self.weight
        return change.abs().max()

    @torch.no_grad()
    def project_(self) -> None:
        """Make ``G`` lie in [0, 1] (the textbook clamp before each evaluation), through ``z_0``."""
        if not self.levels:
            self.layers[0].clamp_(0.0, 1.0)
            return
        g = self.compose(self.layers)  # G itself (with a mask, K + W (G - K) then lies in [0, 1] too)
        self.layers[0].add_(g.clamp(0.0, 1.0) - g)

    @torch.no_grad()
    def detached(self) -> torch.Tensor:
        """A copy of ``G`` (with a mask: the image evaluated) clamped to [0, 1], outside the graph."""
        return self.image().detach().clamp(0.0, 1.0)


def matrix_upsampling(device: torch.device) -> bool:
    """Upsample by matrix products: on a non-CPU device with deterministic algorithms asked for
    (the CPU's bilinear backward is deterministic already)."""
    return device.type != "cpu" and torch.are_deterministic_algorithms_enabled()


def bilinear_matrix(
    n_out: int, n_in: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The ``(n_out, n_in)`` matrix of 1-D bilinear interpolation with ``align_corners=False``,
    as torch computes it for an output size (``src = (i + 0.5) * n_in / n_out - 0.5``, clamped at 0)."""
    i = torch.arange(n_out, dtype=torch.float64)
    src = ((i + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, i0), 1.0 - w1, accumulate=True)
    m.index_put_((rows, i1), w1, accumulate=True)
    return m.to(device=device, dtype=dtype)
