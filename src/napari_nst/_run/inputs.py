"""A run's inputs: layer snapshots taken on the main thread, read into images in the worker.

No Qt here. :func:`snapshot` copies what a run needs of an Image layer into a frozen
:class:`LayerSnapshot` of plain values (the data array is referenced, never written), including
the current dims point already mapped to data coordinates: the worker thread never calls into a
live layer (``world_to_data`` reads the layer's transforms, which the user may be changing on
the main thread at that moment).

:func:`read_input` runs in the worker: it reads the displayed 2-D slice of the smallest
multiscale level that still has the working size, shrinks it to the working shape (area
average, the exact extent of the slice) and converts it once, as the canvas shows it. The engine
then receives an image of the size it works at instead of a full-resolution float32 copy
(benchmarks/widget_input.py measures the difference).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from napari_nst._run.layer_view import (
    choose_level,
    data_position,
    display_rgb,
    displayed_axes,
    full_precision,
    join_notes,
    read_slice,
)
from napari_nst.core.image.arrays import resized_shape


@dataclass(frozen=True)
class LayerSnapshot:
    """What a run needs of an Image layer, as plain values (taken on the main thread)."""

    name: str
    data: Any  #: the layer's data (array, dask array, or list of levels): only read
    ndim: int
    rgb: bool
    multiscale: bool
    contrast_limits: tuple[float, float]
    gamma: float
    colormap: Any  #: a private copy of the layer's napari Colormap (a pure model)
    downsample_factors: np.ndarray | None
    scale: np.ndarray
    translate: np.ndarray
    rotate: np.ndarray
    shear: np.ndarray
    affine: np.ndarray  #: the affine matrix
    shape: tuple[int, ...]  #: level 0's shape
    position: np.ndarray | None  #: the dims point in data coordinates (None: index 0)


def _copy_model(model: Any) -> Any:
    copy = getattr(model, "model_copy", None) or getattr(model, "copy", None)
    return copy(deep=True) if copy is not None else model


def snapshot(layer: Any, point: Sequence[float] | None = None) -> LayerSnapshot:
    """The snapshot of ``layer`` at the world ``point`` (``viewer.dims.point``). Main thread only."""
    exact = full_precision(layer)  # a finished pastiche: its float32 image, not the 8-bit one shown
    return LayerSnapshot(
        name=str(layer.name),
        data=layer.data if exact is None else exact,
        ndim=int(layer.ndim),
        rgb=bool(layer.rgb),
        multiscale=bool(layer.multiscale),
        contrast_limits=(0.0, 1.0)
        if exact is not None
        else cast(tuple[float, float], tuple(float(v) for v in layer.contrast_limits)),  # napari: (lo, hi)
        gamma=float(layer.gamma),
        colormap=_copy_model(layer.colormap),
        downsample_factors=np.array(layer.downsample_factors, dtype=float) if layer.multiscale else None,
        scale=np.array(layer.scale, dtype=float),
        translate=np.array(layer.translate, dtype=float),
        rotate=np.array(layer.rotate, dtype=float),
        shear=np.array(layer.shear, dtype=float),
        affine=np.array(layer.affine.affine_matrix, dtype=float),
        shape=tuple(int(v) for v in (layer.data[0].shape if layer.multiscale else layer.data.shape)),
        position=data_position(layer, point) if int(layer.ndim) > 2 else None,
    )


def slice_axes(snap: LayerSnapshot, world_ndim: int, displayed: Sequence[int]) -> tuple[int, int]:
    """The snapshot's axes shown as the canvas's rows and columns."""
    return displayed_axes(snap.ndim, world_ndim, displayed) if snap.ndim > 2 else (0, 1)


def slice_shape(snap: LayerSnapshot, axes: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of the displayed slice at full resolution (level 0)."""
    return int(snap.shape[axes[0]]), int(snap.shape[axes[1]])


# --------------------------------------------------------------------------- reading (worker thread)


def _area_weights(n: int, m: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """For each of ``m`` output cells: the input cells ``[j0, j1)`` it covers and their weights.

    Output cell ``i`` covers ``[i n/m, (i+1) n/m)`` of the input; each input cell weighs by the
    length it shares with it, divided by ``n/m`` (weights sum to 1): an exact box filter.
    """
    f = n / m
    for i in range(m):
        a, b = i * f, (i + 1) * f
        j0, j1 = int(np.floor(a)), min(n, int(np.ceil(b)))
        js = np.arange(j0, j1, dtype=float)
        yield j0, j1, (np.minimum(js + 1, b) - np.maximum(js, a)) / f


def _shrink_axis(arr: np.ndarray, m: int, axis: int) -> np.ndarray:
    src = np.moveaxis(arr, axis, 0)
    out = np.empty((m, *src.shape[1:]), np.float64)
    for i, (j0, j1, w) in enumerate(_area_weights(src.shape[0], m)):
        out[i] = np.tensordot(w, src[j0:j1], axes=(0, 0))
    return np.moveaxis(out, 0, axis)


def shrink(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``arr`` (H, W[, C]) area-averaged to ``shape`` (each side <= the input's), same dtype.

    The result covers exactly the extent of the input, so the pastiche placed over the content's
    full-resolution extent stays exact. Integer data is rounded back to its dtype, so that the
    display conversion (contrast limits, alpha scaling) applies to it as to the original;
    boolean data is returned as is (the conversion refuses it with its own message).
    """
    if arr.dtype.kind not in "uif" or tuple(arr.shape[:2]) == tuple(shape):
        return arr
    out = _shrink_axis(_shrink_axis(arr, shape[0], 0), shape[1], 1)
    if arr.dtype.kind in "ui":
        info = np.iinfo(arr.dtype)
        return np.asarray(np.clip(np.rint(out), info.min, info.max).astype(arr.dtype))
    return out.astype(arr.dtype)


def read_input(snap: LayerSnapshot, axes: tuple[int, int], long_edge: int, name: str) -> tuple[np.ndarray, str | None]:
    """The displayed slice of ``snap`` as float32 RGB, no larger than ``long_edge`` on its long side.

    The working shape is that of the full-resolution slice scaled to ``long_edge`` (what the
    engine would compute from it), so the engine's own resize to it is the identity. A slice
    already smaller than that is sent as is (the engine enlarges it). Returns ``(image, note)``:
    the note a sentence for the user, or None.
    Raises :class:`napari_nst.core.errors.ImageError` for data the engine cannot use.
    """
    label = f"the {name} layer {snap.name!r}"
    target = resized_shape(slice_shape(snap, axes), long_edge)
    level = choose_level(snap, axes, max(target))
    arr, notes = read_slice(snap, axes, snap.position, level, label)
    if arr.shape[0] >= target[0] and arr.shape[1] >= target[1]:
        arr = shrink(arr, target)
    image, more = display_rgb(arr, snap, name, label)
    return image, join_notes(notes + more)
