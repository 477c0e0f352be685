"""The objective: pure loss functions and composable loss terms.

Default objective (Gatys et al. 2015, the seed's formulas, exactly)::

    L_total   = a * L_content + b * L_style
    L_content = 1/2 * sum_ij (F_ij - P_ij)^2
    L_GM(l)   = 1/(4 N_l^2 M_l^2) * sum_ij (G_ij - A_ij)^2,   G = F F^T
    L_style   = sum_l w_l * L_GM(l)

Everything here is computed in float32, also when the network ran in bfloat16.
Each term reports its *unweighted* value; the objective multiplies by the term's weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix ``G = F F^T`` of ``(1, N, H, W)`` or ``(N, H, W)`` features, in float32.

    Unnormalised, as in the paper: ``G_ij = sum_k F_ik F_jk`` over the ``M = H * W`` positions.
    """
    f = features.reshape(features.shape[-3], -1).float()
    return f @ f.T


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1/2 * sum_ij (F_ij - P_ij)^2``."""
    return 0.5 * (features.float() - target.float()).pow(2).sum()


def gram_loss(g: torch.Tensor, a: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """``1/(4 N^2 M^2) * sum_ij (G_ij - A_ij)^2``, computed as ``sum(((G - A) / (2 N M))^2)``.

    The same number; dividing before squaring keeps large Gram entries far from float32 overflow.
    """
    return ((g - a) / (2.0 * n * m)).pow(2).sum()


def style_loss(
    features: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float],
) -> torch.Tensor:
    """``sum_l w_l * L_GM(l)`` over the layers in ``layer_weights``."""
    total = torch.zeros((), device=next(iter(targets.values())).device)
    for name, w in layer_weights.items():
        f = features[name]
        n, m = f.shape[-3], f.shape[-2] * f.shape[-1]
        total = total + w * gram_loss(gram(f), targets[name], n, m)
    return total


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation (squared differences of neighbours, *mean* over pixels).

    Not in Gatys et al. 2015 (an option, ``tv_weight``; default 0): a smoothness prior that removes
    high-frequency noise. The mean makes ``tv_weight`` independent of the image size.
    """
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.float().pow(2).mean() + dy.float().pow(2).mean()


# --------------------------------------------------------------------------- terms


@dataclass
class ContentTerm:
    """``L_content`` summed over ``layers`` (one layer, relu4_2, by default)."""

    targets: dict[str, torch.Tensor]
    weight: float
    name: str = "content"

    @property
    def layers(self) -> list[str]:
        return list(self.targets)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        return sum(content_loss(features[n], t) for n, t in self.targets.items())  # type: ignore[return-value]


@dataclass
class StyleTarget:
    """One style image's Gram matrices and its blend weight.

    A list of these is the style target; several images blend by their weights. (Masks for
    per-region Gram matrices will live here too.)
    """

    grams: dict[str, torch.Tensor]
    weight: float = 1.0


@dataclass
class StyleTerm:
    """``L_style`` = sum over style targets of ``weight_k * sum_l w_l L_GM(l)``.

    With one target of weight 1 this is exactly the paper's ``L_style``.
    """

    targets: list[StyleTarget]
    layer_weights: dict[str, float]
    weight: float
    name: str = "style"

    @property
    def layers(self) -> list[str]:
        return list(self.layer_weights)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        return sum(t.weight * style_loss(features, t.grams, self.layer_weights) for t in self.targets)  # type: ignore[return-value]


@dataclass
class TVTerm:
    """Total variation of the image (see :func:`tv_loss`)."""

    weight: float
    name: str = "tv"
    layers: list[str] = field(default_factory=list)

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        return tv_loss(image)


def evaluate(
    terms: Sequence[ContentTerm | StyleTerm | TVTerm],
    features: Mapping[str, torch.Tensor],
    image: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted total and the unweighted value of each term."""
    parts = {t.name: t(features, image) for t in terms}
    total = sum(t.weight * parts[t.name] for t in terms)
    return total, parts  # type: ignore[return-value]
