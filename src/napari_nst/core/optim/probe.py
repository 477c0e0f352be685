"""How far each style of a blend can be reached: a short run per style at a small size.

A blend of styles optimises towards one target made of the styles' statistics, ``T = sum_i c_i
P_i``. With the weights themselves as the coefficients (``style_blend_mode="linear"``), a 50/50
blend lands near the style that is harder to reach: measured as each style's term over what a run
with that style alone reaches (its *floor* ``L_i``), the pastiche's distance to style ``i`` grows
as ``(1 - c_i)^2 D / L_i`` (``D`` the styles' distance from each other), so a style that its own
run matches closely (a small floor) is far away in that measure. ``balanced`` takes ``c_i ~ w_i /
sqrt(L_i)`` instead, which puts a 50/50 blend near halfway by that measure (The Starry Night and
The Scream on Tübingen, 192 px, 80 evaluations: 1.24x apart, linear 5.75x; docs/controls.md). Not
in Gatys et al. (their blends are the linear one); the objective's formulas are unchanged, only
the blend's coefficients.

The floors come from :data:`PROBE_STEPS` evaluations per style at :data:`PROBE_SIZE` px (or the
run's size, where that is smaller), from the content, with the run's content and style weights
(automatic unless given) at strength 1 (the strength scales every style alike): a fraction of a
second per style on a CPU, once per run (a stack: once for all frames), and kept in the process
for the next run of the same pictures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch

from napari_nst.core.image.arrays import resized_shape
from napari_nst.core.objective.losses import ContentTerm, evaluate, gram
from napari_nst.core.objective.regions import layer_shape
from napari_nst.core.optim.lbfgs import LBFGS

#: the probe runs' long edge (px) and evaluations per style
PROBE_SIZE = 64
PROBE_STEPS = 30


def style_floors(
    ctx: Any,
    styles: list[torch.Tensor],
    style_shapes: list[tuple[int, int]],
    targets: Callable[..., Any],
    style_term: Callable[..., Any],
) -> list[float]:
    """Each style's floor (see the module docstring), in the units the blend mixes the styles in:
    for ``gram``, the per-position distance ``sum_l w_l |G_l / M_l - A_l / M_l(style)|^2 / (4
    N_l^2)`` of the probe's pastiche to the style (the blend's target is per position,
    :func:`~napari_nst.core.objective.controls.blend_grams`); for the other losses, their term
    (per position already). ``ctx``: the engine's run context; ``targets`` and ``style_term``: the
    engine's level targets and one style's term with its weights (a run of one style, as the engine
    makes it)."""

    opts = ctx.opts
    h, w = (int(v) for v in ctx.content.shape[-2:])
    shape = resized_shape((h, w), min(PROBE_SIZE, max(h, w), max(ctx.shapes[-1])))  # never above the run's size
    content = ctx.resized(ctx.content, shape)
    floors = []
    for i, (s, s_shape) in enumerate(zip(styles, style_shapes, strict=True)):
        style = ctx.resized(s, opts.style_shape(s_shape, shape, i))
        key = _key(ctx, content, style)
        if key in _KNOWN:
            floors.append(_KNOWN[key])
            continue
        floors.append(_floor(ctx, content, style, targets, style_term))
        _KNOWN[key] = floors[-1]
        while len(_KNOWN) > KNOWN_MAX:
            del _KNOWN[next(iter(_KNOWN))]
    return floors


#: floors measured in this process, by what they depend on (:func:`_key`): a warm engine running
#: the same photo and painting again (the widget's Run after Stop, a knob changed) measures nothing
_KNOWN: dict[str, float] = {}
KNOWN_MAX = 64


def _key(ctx: Any, content: torch.Tensor, style: torch.Tensor) -> str:
    """A digest of the probe's images, the network (its options and first convolution's weights)
    and the objective's options that a floor depends on."""
    o = ctx.opts
    h = hashlib.blake2b(digest_size=16)
    for t in (content, style, next(ctx.net.parameters())):
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    fields = (
        o.model,
        o.weights,
        o.pooling,
        o.style_loss,
        o.style_layers,
        o.content_layers,
        o.content_weight,
        o.style_weight,
        sorted(ctx.layer_w.items()),
    )
    h.update(repr((fields, ctx.gen.initial_seed(), str(ctx.device))).encode())
    return h.hexdigest()


def _floor(
    ctx: Any, content: torch.Tensor, style: torch.Tensor, targets: Callable[..., Any], style_term: Callable[..., Any]
) -> float:
    """One style's floor: the probe run, then its pastiche's distance to the style."""
    opts = ctx.opts
    content_t, grams, nm = targets(ctx.net, content, style, opts, None, ctx.gen.initial_seed())
    a, term = style_term(opts, content_t, grams, ctx.layer_w, nm)
    x = _run(ctx.net, [ContentTerm(content_t, a), term], content)
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        feats = ctx.net(x)
        if opts.style_loss != "gram":
            return float(term(feats, x))
        floor = 0.0
        for n, wl in ctx.layer_w.items():
            hs, ws = layer_shape(n, tuple(style.shape[-2:]))
            g = gram(feats[n]) / nm[n][1]
            floor += wl * float(((g - grams[n] / (hs * ws)) / (2.0 * nm[n][0])).pow(2).sum())
        return floor


def _run(net: Any, terms: list[Any], start: torch.Tensor) -> torch.Tensor:
    """:data:`PROBE_STEPS` L-BFGS steps on the pixels from ``start``, in float32; the last image."""
    x = start.clone().requires_grad_(True)
    opt = LBFGS([x], max_change=0.25, image_change=lambda d: float(d[0].abs().max()))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        total, _ = evaluate(terms, net(x), x)
        torch.autograd.backward(total)
        return total

    with torch.autocast(start.device.type, enabled=False):
        for _ in range(PROBE_STEPS):
            opt.step(closure)
    return x.detach().clamp(0.0, 1.0)
