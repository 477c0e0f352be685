"""Regions painted in a label image: which style goes where (Gatys et al. 2017, section 4).

A departure from the 2015 objective (options ``regions`` and ``region_styles``; off by default).
``regions`` is an integer ``(H, W)`` array of the content's shape (what a napari Labels layer
holds); ``region_styles`` maps a label to a style index or to None (no style there). Labels not
in the mapping (0, the unpainted background, included) get the blend of all styles.

Labels are grouped by their target (a style index, "blend", or None), so a run has at most one
mask per style plus one for the blend, whatever the number of labels. Masks are carried to each
style layer's resolution by area averaging (each feature cell gets the fraction of its
footprint that lies in the region, as an area resize of the image would): soft at the borders,
and the masks of all groups still sum to 1 at every cell. They are not shaped by the network's
receptive fields (which grow to over 100 px at relu5_1 and would blur small regions away).

``style_regions`` (optional): a label image for each style image, saying which part of the
painting supplies each region's style: content pixels labelled L take their style from the
pixels labelled L in their style image (the paper's guided Gram matrices on both sides); a
style image without label L (or without a label image) supplies all of itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from napari_nst.core.errors import OptionError

#: a group's target: a style index, the blend of all styles, or None (no style)
BLEND = "blend"
Target = int | str | None


def check_regions(
    regions: Any, content_shape: tuple[int, int], name: str = "regions", image: str = "the content image"
) -> np.ndarray:
    """``regions`` as an integer ``(H, W)`` array of ``image``'s shape; OptionError otherwise."""
    arr = np.asarray(regions)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        what = "a boolean mask" if arr.dtype == bool else f"of dtype {arr.dtype}"
        raise OptionError(
            f"{name} must be an integer label image (a napari Labels layer's data), got an array "
            f"{what}; convert it, e.g. {name}.astype(int)"
        )
    if arr.shape != tuple(content_shape):
        raise OptionError(
            f"{name} has shape {arr.shape} but {image} is {tuple(content_shape)} (H, W); "
            f"give a label image of that size (or resize it with nearest-neighbour sampling)"
        )
    return arr


def check_style_regions(
    style_regions: Sequence[Any] | None, style_shapes: Sequence[tuple[int, int]], has_regions: bool
) -> list[np.ndarray | None] | None:
    """``style_regions`` as one integer label image (or None) per style image, each of its style
    image's (H, W); OptionError naming the fix otherwise."""
    if style_regions is None:
        return None
    if not has_regions:
        raise OptionError(
            "style_regions is given but regions is not: give regions too (content pixels labelled L "
            "take their style from the style image's pixels labelled L)"
        )
    n = len(style_shapes)
    if len(style_regions) != n:
        raise OptionError(
            f"style_regions has {len(style_regions)} label images but there "
            f"{'is 1 style image' if n == 1 else f'are {n} style images'}; give one per style image "
            "(None for a style image used whole)"
        )
    return [
        None if sr is None else check_regions(sr, shape, f"style_regions[{i}]", f"style image {i}")
        for i, (sr, shape) in enumerate(zip(style_regions, style_shapes, strict=True))
    ]


def check_mapping(region_styles: Mapping[int, int | None] | None, n_styles: int) -> dict[int, int | None]:
    """The mapping with integer keys; OptionError for a style index that does not exist."""
    out: dict[int, int | None] = {}
    for label, style in (region_styles or {}).items():
        if style is not None and not (isinstance(style, (int, np.integer)) and 0 <= int(style) < n_styles):
            raise OptionError(
                f"region_styles maps label {label} to style {style!r}, but there "
                f"{'is 1 style' if n_styles == 1 else f'are {n_styles} styles'} (indices 0 to "
                f"{n_styles - 1}); use one of those, or None for no style there"
            )
        out[int(label)] = None if style is None else int(style)
    return out


def groups(regions: np.ndarray, mapping: Mapping[int, int | None]) -> dict[Target, np.ndarray]:
    """``{target: boolean (H, W) mask}`` for every target some present label has."""
    labels = np.unique(regions)
    by_target: dict[Target, list[int]] = {}
    for lab in labels.tolist():
        by_target.setdefault(mapping[int(lab)] if int(lab) in mapping else BLEND, []).append(lab)
    return {t: np.isin(regions, labs) for t, labs in by_target.items()}


def guided_groups(
    regions: np.ndarray, mapping: Mapping[int, int | None], style_labels: Sequence[set[int]]
) -> dict[tuple[Target, int | None], np.ndarray]:
    """Like :func:`groups`, keyed ``(target, source label)``: a label L whose style image(s) have
    pixels labelled L in ``style_regions`` (``style_labels[i]``: the labels present in style i's)
    takes its style from those pixels, a group of its own; other labels of a target share
    ``(target, None)``: their style images used whole."""
    by_key: dict[tuple[Target, int | None], list[int]] = {}
    for lab in np.unique(regions).tolist():
        target: Target = mapping[int(lab)] if int(lab) in mapping else BLEND
        uses = [] if target is None else range(len(style_labels)) if target == BLEND else [int(target)]
        source = int(lab) if any(int(lab) in style_labels[i] for i in uses) else None
        by_key.setdefault((target, source), []).append(lab)
    return {k: np.isin(regions, labs) for k, labs in by_key.items()}


def check_styled(regions: np.ndarray, mapping: Mapping[int, int | None]) -> None:
    """OptionError when every pixel's label is mapped to None (nothing left to style)."""
    if set(groups(regions, mapping)) == {None}:
        raise OptionError(
            "region_styles maps every label present in regions to None, so no pixel gets a style; "
            "map at least one label to a style index (or leave it out to use the blend)"
        )


def pools_before(layer: str) -> int:
    """2x2 poolings before a VGG layer (``relu3_1`` -> 2, ``pool3`` -> 3)."""
    block = int(layer[4] if layer.startswith("pool") else layer.split("_")[0][-1])
    return block if layer.startswith("pool") else block - 1


def layer_shape(layer: str, shape: Sequence[int]) -> tuple[int, int]:
    """The feature map's (h, w) at ``layer`` for an image of ``shape`` (each pooling floors)."""
    h, w = int(shape[0]), int(shape[1])
    for _ in range(pools_before(layer)):
        h, w = h // 2, w // 2
    return h, w


def parse_mapping(text: str) -> dict[int, int | None]:
    """``"1:0,2:none"`` -> ``{1: 0, 2: None}`` (ValueError for anything else)."""
    out: dict[int, int | None] = {}
    for item in (s.strip() for s in str(text).split(",")):
        if not item:
            continue
        label, _, style = item.partition(":")
        if not _ or not label.strip():
            raise ValueError(text)
        s = style.strip().lower()
        out[int(label)] = None if s in ("none", "-") else int(s)
    return out


def format_mapping(mapping: Mapping[int, int | None]) -> str:
    return ",".join(f"{k}:{'none' if v is None else v}" for k, v in mapping.items())
