"""Artistic controls in the engine: several styles blended, per-region styles, colour
preservation and the style strength (options ``style_blend``, ``regions``, ``region_styles``,
``preserve_color``, ``style_strength``). Each is a departure from the 2015 objective, off by
default; without any of them the engine never builds a :class:`Controls` and runs the paper's
objective unchanged.

The engine calls four hooks: :meth:`Controls.build` (in ``_prepare``), :meth:`Controls.style_term`
(in ``_terms``, once per level, outside the objective), :meth:`Controls.network_image` (the
first image) and :meth:`Controls.shown` (each recorded image).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_nst.core.image.tensors import gaussian_blur
from napari_nst.core.objective.colour import LUMA, gray3, luminance, prepare_colours
from napari_nst.core.objective.losses import GuidedStyleTerm, RegionTargets, StyleTarget, StyleTerm, gram
from napari_nst.core.objective.regions import (
    BLEND,
    Target,
    check_mapping,
    check_regions,
    check_style_regions,
    check_styled,
    groups,
    guided_groups,
    layer_shape,
)
from napari_nst.core.objective.statistics import controls_term
from napari_nst.core.objective.weights import STYLE_BALANCE, strength_factor
from napari_nst.core.options import Options

#: a region group: its target (a style index, the blend, or None) and the style-image label its
#: style comes from (``style_regions``; None: the style images used whole)
Key = tuple[Target, int | None]


def blend_weights(blend: tuple[float, ...] | None, n: int) -> list[float]:
    """``style_blend`` normalised to sum 1 (None: equal); ValueError naming the fix."""
    from napari_nst.core.errors import OptionError

    if n < 1:
        raise OptionError("style is an empty list; give at least one style image")
    if blend is None:
        return [1.0 / n] * n
    if len(blend) != n:
        raise OptionError(
            f"style_blend has {len(blend)} weights but there {'is' if n == 1 else 'are'} {n} style "
            f"image{'s' if n != 1 else ''}; give one weight per style (e.g. {','.join(['1'] * n)})"
        )
    if any(w < 0 for w in blend):
        raise OptionError(f"style_blend has a negative weight {tuple(blend)}; weights must be >= 0")
    total = float(sum(blend))
    if total <= 0:
        raise OptionError("style_blend's weights are all 0; give at least one a positive weight")
    return [float(w) / total for w in blend]


def check(content_shape: tuple[int, int], n_styles: int, opts: Options) -> None:
    """Every control's check that needs the images (the options alone are checked by Options)."""
    blend_weights(opts.style_blend, n_styles)
    opts.check_scales(n_styles)
    mapping = check_mapping(opts.region_styles, n_styles)
    if opts.regions is not None:
        check_styled(check_regions(opts.regions, content_shape), mapping)


def active(opts: Options, n_styles: int) -> bool:
    return n_styles > 1 or opts.regions is not None or opts.preserve_color is not None or opts.style_strength != 1.0


def blend_coefficients(weights: list[float], floors: list[float] | None, mode: str) -> list[float]:
    """The coefficients ``c_i`` (summing to 1) that blend the styles' per-position statistics
    ``P_i`` of every layer into one target ``T = sum_i c_i P_i``.

    ``linear``: the weights themselves (neural-style's blend). ``balanced`` (the default; not in
    either paper): ``c_i ~ w_i / sqrt(floor_i)``, ``floor_i`` the style term a short run with style
    ``i`` alone reaches (:mod:`napari_nst.core.optim.probe`), so that a 50/50 blend lands halfway
    between the styles as each is reached on its own. Without floors, or with equal ones, the
    linear blend; a weight of 0 stays 0."""
    if mode == "linear" or floors is None:
        return list(weights)
    inv = [w / max(f, 1e-30) ** 0.5 for w, f in zip(weights, floors, strict=True)]
    total = sum(inv)
    return [v / total for v in inv]


def blend_grams(
    grams: list[dict[str, torch.Tensor]], sizes: list[dict[str, int]], coefficients: list[float]
) -> dict[str, torch.Tensor]:
    """``A_l = sum_i c_i A_l(i)`` (the coefficients from :func:`blend_coefficients`; the weights
    themselves are neural-style's blend): with equal style sizes, ``[s, s]`` gives ``s``'s targets
    exactly. Styles of different pixel counts are blended per position (``M * sum_i c_i A_l(i) /
    M_i`` with ``M = sum_i c_i M_i``), so that a larger style image does not weigh more than its
    coefficient says."""
    out = {}
    for name in grams[0]:
        m = [s[name] for s in sizes]
        if len(set(m)) == 1:
            out[name] = sum(ci * g[name] for ci, g in zip(coefficients, grams, strict=True))
        else:
            mean = sum(c * mi for c, mi in zip(coefficients, m, strict=True))
            out[name] = sum(ci * g[name] * (mean / mi) for ci, g, mi in zip(coefficients, grams, m, strict=True))
    return out  # type: ignore[return-value]


@dataclass
class Controls:
    """What a run with controls needs besides the engine's own run context."""

    styles: list[torch.Tensor]  #: every style as the network sees it, full resolution
    style_shapes: list[tuple[int, int]]
    weights: list[float]  #: style_blend, normalised
    strength: float
    regions: np.ndarray | None = None  #: int (H, W) at the content's resolution
    mapping: dict[int, int | None] = field(default_factory=dict)
    chroma: torch.Tensor | None = None  #: the original content (luminance mode), (1, 3, H, W)
    #: the styles' Grams by working shape, kept across the frames of a stack (core/stack/engine.py); None: not kept
    grams_memo: dict[Any, Any] | None = None
    style_masks: list[np.ndarray | None] = field(default_factory=list)  #: style_regions, per style
    blend_mode: str = "balanced"  #: style_blend_mode (see blend_coefficients)
    #: each style's floor (core/optim/probe.py), set by the engine where a balanced blend needs them
    floors: list[float] | None = None
    _cache: dict[Any, torch.Tensor] = field(default_factory=dict)
    #: the level's (mask, content) for :meth:`composite`: 1 where a style applies, 0 in the regions
    #: mapped to None, feathered over a few pixels; None where no region is mapped to None
    _keep: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def build(
        cls, content: np.ndarray, style: Any, opts: Options, where: torch.device
    ) -> tuple[Controls | None, np.ndarray, np.ndarray]:
        """``(controls or None, content for the network, first style for the network)``."""
        from napari_nst.core.image.tensors import to_tensor

        styles = list(style) if isinstance(style, (list, tuple)) else [style]
        check(content.shape[:2], len(styles), opts)
        if not active(opts, len(styles)):
            return None, content, styles[0]
        net_content, net_styles = prepare_colours(content, styles, opts.preserve_color)
        ctl = cls(
            [to_tensor(s, where) for s in net_styles],
            [s.shape[:2] for s in net_styles],
            blend_weights(opts.style_blend, len(styles)),
            float(opts.style_strength),
            blend_mode=opts.style_blend_mode,
        )
        if opts.regions is not None:
            ctl.regions = np.asarray(opts.regions)
            ctl.mapping = check_mapping(opts.region_styles, len(styles))
            masks = check_style_regions(opts.style_regions, ctl.style_shapes, True)
            ctl.style_masks = masks if masks is not None else [None] * len(styles)
        if opts.preserve_color == "luminance":
            ctl.chroma = to_tensor(content, where)
        return ctl, net_content, net_styles[0]

    # ------------------------------------------------------------------ the style term of a level

    def style_term(self, ctx: Any, shape: tuple[int, int], plain: StyleTerm, nm: dict[str, tuple[int, int]]) -> Any:
        """The level's style term (``plain``: the engine's, of the first style alone, weight ``b``)."""
        self._keep = self._kept(ctx, shape) if self.regions is not None else None
        if len(self.styles) == 1 and self.regions is None:
            plain.weight *= strength_factor(self.strength)
            return plain
        if ctx.opts.style_loss != "gram":  # the other style losses' blends and regions
            return controls_term(self, ctx, shape, nm)
        keyed = self._groups() if self.regions is not None else {}
        grams, sizes, guided = self._style_grams(ctx, shape, self._needed(keyed))
        if self.regions is None:
            term: Any = StyleTerm(
                [StyleTarget(blend_grams(grams, sizes, self.coefficients()))],
                plain.layer_weights,
                plain.weight,
            )
            ref = sum(
                w * float(((term.targets[0].grams[n]) / (2.0 * nm[n][0] * nm[n][1])).pow(2).sum())
                for n, w in plain.layer_weights.items()
            )
        else:
            term = GuidedStyleTerm(
                self._region_targets(ctx, shape, keyed, (grams, sizes, guided), nm), plain.layer_weights, plain.weight
            )
            ref = term.at_zero()
        if ctx.opts.style_weight is None:
            term.weight = STYLE_BALANCE / max(ref, 1e-30)
        term.weight *= strength_factor(self.strength)
        return term

    def coefficients(self) -> list[float]:
        """The blend's coefficients (:func:`blend_coefficients`)."""
        return blend_coefficients(self.weights, self.known_floors(), self.blend_mode)

    def known_floors(self) -> list[float] | None:
        """The floors measured for these styles: this run's, or a stack's or an update's (``grams_memo``)."""
        if self.floors is None and self.grams_memo is not None:
            return self.grams_memo.get("floors")
        return self.floors

    def wants_floors(self) -> bool:
        """Whether a balanced blend is used and its floors are not known yet."""
        if self.blend_mode != "balanced" or sum(w > 0 for w in self.weights) < 2 or self.known_floors() is not None:
            return False  # one style, or one weight that is not 0: the coefficients are the weights
        if self.regions is None:
            return True
        labels = np.unique(self.regions).tolist()  # a label not in the mapping takes the blend
        return any(self.mapping.get(int(lab), BLEND) == BLEND for lab in labels)

    def set_floors(self, floors: list[float]) -> None:
        self.floors = floors
        if self.grams_memo is not None:
            self.grams_memo["floors"] = floors

    def _groups(self) -> dict[Key, np.ndarray]:
        """The regions grouped by target (and, with ``style_regions``, by the label that says
        which part of the style image supplies the style); empty groups dropped."""
        assert self.regions is not None
        if all(m is None for m in self.style_masks):
            found: dict[Key, np.ndarray] = {(t, None): m for t, m in groups(self.regions, self.mapping).items()}
        else:
            labels = [set() if m is None else set(np.unique(m).tolist()) for m in self.style_masks]
            found = guided_groups(self.regions, self.mapping, labels)
        return {k: m for k, m in found.items() if k[0] is not None and m.any()}

    def _uses(self, target: Target) -> list[int]:
        return list(range(len(self.styles))) if target == BLEND else [int(target)]  # type: ignore[arg-type]

    def _needed(self, keyed: dict[Key, np.ndarray]) -> dict[int, list[int]]:
        """``{style index: [labels]}``: the parts of style images some region takes its style from."""
        out: dict[int, list[int]] = {}
        for target, source in keyed:
            if source is None:
                continue
            for i in self._uses(target):
                mask = self.style_masks[i]
                if mask is not None and bool((mask == source).any()) and source not in out.get(i, []):
                    out.setdefault(i, []).append(source)
        return out

    def _style_grams(self, ctx: Any, shape: tuple[int, int], needed: dict[int, list[int]]) -> tuple[Any, Any, Any]:
        """Each style's Gram matrices and feature sizes at this level, and for the parts of the
        style images in ``needed`` their area-normalised guided Grams ``{(style, label): {layer: G}}``.
        With ``grams_memo`` (a stack) each level's are computed once for all frames."""
        key = (shape, tuple(sorted((i, tuple(v)) for i, v in needed.items())))
        if self.grams_memo is not None and key in self.grams_memo:
            return self.grams_memo[key]  # type: ignore[no-any-return]
        grams, sizes, guided = [], [], {}
        for i, (s, s_shape) in enumerate(zip(self.styles, self.style_shapes, strict=True)):
            x = ctx.resized(s, ctx.opts.style_shape(s_shape, shape, i))  # each style its own style_scale
            with torch.no_grad():
                feats = ctx.net(x)
                grams.append({n: gram(feats[n]) for n in ctx.opts.style_layers})
                sizes.append({n: int(feats[n].shape[-2] * feats[n].shape[-1]) for n in ctx.opts.style_layers})
                mask = self.style_masks[i] if self.style_masks else None
                if i in needed and mask is not None:
                    guided.update(_part_grams(feats, mask, needed[i], i, ctx.opts.style_layers, tuple(x.shape[-2:])))
        if self.grams_memo is not None:
            self.grams_memo[key] = (grams, sizes, guided)
        return grams, sizes, guided

    def _region_targets(
        self,
        ctx: Any,
        shape: tuple[int, int],
        keyed: dict[Key, np.ndarray],
        style: tuple[Any, Any, Any],
        nm: dict[str, tuple[int, int]],
    ) -> dict[str, RegionTargets]:
        styled = list(keyed.items())
        masks = _masks_at([m for _, m in styled], shape, ctx.device)  # (R, h, w) at the working shape
        out = {}
        for name in ctx.opts.style_layers:
            hw = layer_shape(name, shape)
            assert hw[0] * hw[1] == nm[name][1], (name, hw, nm[name])
            m = F.adaptive_avg_pool2d(masks[None], hw)[0].reshape(len(styled), -1)
            area = m.sum(1)
            targets = torch.stack([self._normalised_target(k, style, name) for k, _ in styled])
            index = [torch.nonzero(row > 0).flatten() for row in m]  # built once per level, outside the objective
            ends = np.cumsum([0] + [int(i.numel()) for i in index]).tolist()
            out[name] = RegionTargets(
                m.contiguous(),
                1.0 / area.clamp(min=1e-6),
                area / m.shape[1],
                targets,
                torch.cat(index),
                torch.cat([row[i] for row, i in zip(m, index, strict=True)]).contiguous(),
                tuple(zip(ends[:-1], ends[1:], strict=True)),
            )
        return out

    def _normalised_target(self, key: Key, style: tuple[Any, Any, Any], name: str) -> torch.Tensor:
        """A group's target at layer ``name``: its style's Gram per position (of the part of the
        style image its label names, where ``style_regions`` has it), or the blend of those."""
        grams, sizes, guided = style
        target, source = key

        def one(i: int) -> torch.Tensor:
            part = guided.get((i, source))
            g: torch.Tensor = part[name] if part is not None else grams[i][name] / sizes[i][name]
            return g

        if target == BLEND:
            parts = [one(i) for i in range(len(self.weights))]
            return sum(ci * p for ci, p in zip(self.coefficients(), parts, strict=True))  # type: ignore[return-value]
        return one(int(target))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ regions without a style

    def _kept(self, ctx: Any, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The level's mask of the styled pixels (feathered, :data:`KEEP_FEATHER`) and the
        content at ``shape``, where some region is mapped to None; else None."""
        assert self.regions is not None
        if not ctx.levers.keep_unstyled:  # only to measure the bleed this removes (optim/levers.py)
            return None
        none = groups(self.regions, self.mapping).get(None)
        if none is None or not none.any():
            return None
        styled = _masks_at([~none], shape, ctx.device)[None]  # (1, 1, h, w)
        return gaussian_blur(styled, KEEP_FEATHER), ctx.resized(ctx.content, shape)

    def composite(self, g: torch.Tensor) -> torch.Tensor:
        """The image the objective sees: ``g`` where a style applies, the content in the regions
        mapped to None (``c + m (g - c)``). Not in the 2017 paper, whose guided Grams alone leave
        the deep layers' gradients free to change the unstyled pixels within their receptive
        fields (at 192 px the styled neighbour's colours bled 36 px in: docs/controls.md): the
        optimiser moves only the styled pixels and a border feathered by :data:`KEEP_FEATHER` px.
        The objective's formulas are unchanged; ``g`` itself when no region is mapped to None."""
        if self._keep is None:
            return g
        m, c = self._keep
        return c + m * (g - c)

    # ------------------------------------------------------------------ images

    def network_image(self, x: torch.Tensor, init: Any) -> torch.Tensor:
        """The first image as the network sees it: an image to start from goes to luminance in
        luminance mode (Continue from a pastiche whose colours are the content's)."""
        if self.chroma is None or not isinstance(init, np.ndarray):
            return x
        return self.luminance_image(x)

    @staticmethod
    def luminance_image(x: torch.Tensor) -> torch.Tensor:
        """``x``'s luminance in all three channels (the network's image in luminance mode)."""
        y = (x * torch.tensor(LUMA, dtype=x.dtype, device=x.device)[None, :, None, None]).sum(1, keepdim=True)
        return y.expand_as(x).clamp(0, 1).contiguous()

    def shown(self, image: torch.Tensor) -> torch.Tensor:
        """A recorded image: the content in the regions mapped to None (:meth:`composite`); in
        luminance mode the pastiche's luminance with the content's chroma."""
        if self._keep is not None and tuple(image.shape[-2:]) == tuple(self._keep[0].shape[-2:]):
            image = self.composite(image.to(self._keep[0].device)).to(image.device)
        if self.chroma is None:
            return image
        key = (int(image.shape[-2]), int(image.shape[-1]))
        if key not in self._cache:
            from napari_nst.core.image.tensors import resize

            self._cache.clear()
            self._cache[key] = resize(self.chroma, key).to(image.device)
        c = self._cache[key]
        luma = torch.tensor(LUMA, dtype=torch.float32, device=image.device)[None, :, None, None]
        dy = ((image.float() - c) * luma).sum(1, keepdim=True)
        return (c + dy).clamp(0.0, 1.0)


#: the feather of the border between a region mapped to None and a styled one: a Gaussian of this
#: standard deviation in working pixels (the styles reach about twice as far into the unstyled region)
KEEP_FEATHER = 1.5


def _part_grams(
    feats: dict[str, torch.Tensor],
    labels: np.ndarray,
    wanted: list[int],
    i: int,
    layers: tuple[str, ...],
    shape: tuple[int, int],
) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    """``{(i, label): {layer: F diag(m) F^T / |m|}}`` of style image ``i``'s features over the
    pixels ``labels == label`` (the mask carried to each layer as the content's regions are)."""
    masks = _masks_at([labels == lab for lab in wanted], shape, next(iter(feats.values())).device)
    out: dict[tuple[int, int], dict[str, torch.Tensor]] = {(i, lab): {} for lab in wanted}
    for name in layers:
        f = feats[name].float().reshape(feats[name].shape[-3], -1)
        hw = (int(feats[name].shape[-2]), int(feats[name].shape[-1]))
        m = F.adaptive_avg_pool2d(masks[None], hw)[0].reshape(len(wanted), -1)
        for lab, row in zip(wanted, m, strict=True):
            out[(i, lab)][name] = (f * row) @ f.T / row.sum().clamp(min=1e-6)
    return out


def _masks_at(masks: list[np.ndarray], shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Boolean (H, W) masks -> float (R, h, w) at ``shape``: area average when shrinking, bilinear
    when enlarging (both keep masks that sum to 1 summing to 1)."""
    t = torch.from_numpy(np.stack(masks).astype(np.float32))[None]
    if tuple(t.shape[-2:]) != tuple(shape):
        if shape[0] <= t.shape[-2] and shape[1] <= t.shape[-1]:
            t = F.interpolate(t, size=shape, mode="area")
        else:
            t = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)
    return t[0].to(device)


__all__ = ["Controls", "active", "blend_grams", "blend_weights", "check", "gray3", "luminance"]
