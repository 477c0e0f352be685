"""The weights a and b of the objective: the options' values, or the automatic ones (see
:class:`~napari_nst.core.options.Options`: ``content_weight`` and ``style_weight`` None)."""

from __future__ import annotations

import torch

from napari_nst.core.objective.losses import content_loss, gram_loss
from napari_nst.core.options import Options

#: the automatic style weight: ``b = STYLE_BALANCE / L_style(0)`` (see Options.style_weight); 5, re-tuned
#: on photo/painting pairs against the textbook's a = 1, b = 100 (docs/controls.md, python -m benchmarks controls)
STYLE_BALANCE = 5.0

#: ``style_strength`` s multiplies the style weight by ``s ** STRENGTH_EXPONENT`` (1 at s = 1: the
#: weights unchanged). Not in the papers, which have no strength: the objective's formulas stay the
#: paper's, only ``b`` is scaled. The style term at the end of a run goes about as ``b ** -0.64``
#: (192 px, 80 evaluations), so a plain factor (exponent 1) moved it only 4.9x between 0.3 and 3;
#: squared, the strip 0.1 .. 10 moves it 337x in even steps (2.0-2.15x per quarter decade) from a
#: photo with a hint to a painting (docs/controls.md; python -m benchmarks strength --parts strip)
STRENGTH_EXPONENT = 2.0


def strength_factor(strength: float) -> float:
    """The factor ``style_strength`` puts on the style weight ``b``."""
    return float(float(strength) ** STRENGTH_EXPONENT)


#: the automatic style weight of the other style losses (``style_loss``): ``b = LOSS_BALANCE[loss] /
#: L_style(0)``, ``L_style(0)`` the loss of zero features (``at_zero`` of the loss's term:
#: core/objective/statistics.py). Wasserstein at 5 left Tubingen/Starry Night (256 px, 100
#: evaluations) twice as far from the photo as gram does (content distance 0.057 against 0.029):
#: halved; sliced's distances run about 2.5x below W2's on the same pastiches, hence its larger ratio
#: (docs/controls.md shows the three at strength 1; python -m benchmarks quality)
LOSS_BALANCE = {"wasserstein": 2.5, "sliced": 6.0}


def resolve_weights(
    opts: Options,
    content_t: dict[str, torch.Tensor],
    grams: dict[str, torch.Tensor],
    layer_w: dict[str, float],
    nm: dict[str, tuple[int, int]],
) -> tuple[float, float]:
    """``a`` and ``b``: the options' values, or the automatic ones (see :class:`Options`)."""
    a = opts.content_weight
    if a is None:
        a = 1.0 / max(sum(content_loss(torch.zeros_like(t), t).item() for t in content_t.values()), 1e-30)
    b = opts.style_weight
    if b is None:
        # L_style(0): the style loss of an image whose Gram matrices are all zero
        ref = sum(w * gram_loss(torch.zeros_like(grams[n]), grams[n], *nm[n]).item() for n, w in layer_w.items())
        b = STYLE_BALANCE / max(ref, 1e-30)
    return a, b


def auto_style_weight(opts: Options, at_zero: float) -> float:
    """``b`` of a style loss other than the Gram's: ``style_weight``, or the automatic one."""
    if opts.style_weight is not None:
        return float(opts.style_weight)
    return LOSS_BALANCE[opts.style_loss] / max(at_zero, 1e-30)
