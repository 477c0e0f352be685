"""napari Image layers <-> what the engine needs. Pure functions: numpy and napari's models, no Qt.

Two jobs, both testable without a viewer:

- reading the image a layer shows (current slice, resolution level, contrast limits, gamma,
  colormap) as a new float32 ``(H, W, 3)`` array in [0, 1]: :func:`read_slice` and
  :func:`display_rgb`, which :mod:`napari_nst._run.inputs` composes for a run;
- :func:`pastiche_placement`: the ``scale``/``translate`` (and rotate/shear/affine) that put a
  pastiche of any working size exactly over the content it was made from, in world coordinates.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from napari_nst.core.image.arrays import to_rgb_float


def displayed_axes(layer_ndim: int, world_ndim: int, displayed: Sequence[int] | None = None) -> tuple[int, int]:
    """The layer's axes (0-based, in the layer) shown as rows and columns of the canvas.

    ``displayed`` are world axes (``viewer.dims.displayed``, 2 or 3 of them; with 3 the last two
    are taken). World axes are right-aligned with a layer's axes, as in napari. Without
    ``displayed``, the layer's last two axes. An axis the layer lacks falls back to that default.
    """
    if displayed is None or len(displayed) < 2:
        return layer_ndim - 2, layer_ndim - 1
    offset = world_ndim - layer_ndim
    a, b = (int(d) - offset for d in list(displayed)[-2:])
    if not (0 <= a < layer_ndim and 0 <= b < layer_ndim) or a == b:
        return layer_ndim - 2, layer_ndim - 1
    return a, b


def choose_level(layer: Any, axes: tuple[int, int], min_long_edge: int | None) -> int:
    """The multiscale level to read: the coarsest whose long displayed edge is >= min_long_edge."""
    if not getattr(layer, "multiscale", False) or not min_long_edge:
        return 0
    levels = list(layer.data)
    for k in range(len(levels) - 1, -1, -1):
        shape = levels[k].shape
        if max(shape[axes[0]], shape[axes[1]]) >= min_long_edge:
            return k
    return 0


def data_position(layer: Any, point: Sequence[float] | None) -> np.ndarray | None:
    """``point`` (world coordinates) in the layer's data coordinates, or None.

    Calls the layer's ``world_to_data``: run it on the main thread for a live layer (the layer
    snapshot of a run stores the result, so that the worker thread never calls into the layer).
    """
    if point is None:
        return None
    try:
        return np.asarray(layer.world_to_data(list(point)), dtype=float)[-int(layer.ndim) :]
    except Exception:  # a point napari itself cannot map: read index 0, as without a point
        return None


def _slice_index(
    shape: tuple[int, ...], axes: tuple[int, int], position: np.ndarray | None, factors: np.ndarray
) -> tuple[list[Any], list[str]]:
    """Index of the 2-D slice through ``position`` (data coordinates at level 0), and its description."""
    nd = len(shape)
    pos = position if position is not None else np.zeros(nd)
    index: list[Any] = [slice(None)] * nd
    where = []
    for ax in range(nd):
        if ax in axes:
            continue
        i = int(np.clip(np.round(pos[ax] / factors[ax]), 0, shape[ax] - 1)) if np.isfinite(pos[ax]) else 0
        index[ax] = i
        where.append(f"axis {ax} = {i}")
    return index, where


def read_slice(
    layer: Any, axes: tuple[int, int], position: np.ndarray | None, level: int, label: str
) -> tuple[np.ndarray, list[str]]:
    """The raw 2-D slice (rows, columns as on the canvas; channels last) of one resolution level.

    Only this slice is read (a dask/zarr array computes just it); the result is a numpy array that
    may share memory with the layer's data: never write to it.
    """
    nd = int(layer.ndim)
    multiscale = getattr(layer, "multiscale", False)
    data = layer.data[level] if multiscale else layer.data
    notes = [f"{label} is multiscale; using resolution level {level}"] if level else []
    index: list[Any] = [slice(None)] * nd
    if nd > 2:
        factors = np.ones(nd)
        if level:
            factors = np.asarray(layer.downsample_factors[level], dtype=float)[-nd:]
        index, where = _slice_index(tuple(data.shape[:nd]), axes, position, factors)
        notes.append(f"{label} has {nd} dimensions; using the 2-D slice shown now ({', '.join(where)})")
    arr = np.asarray(data[tuple(index)])  # dask/zarr -> numpy, only this slice
    if nd > 2 and axes[0] > axes[1]:  # the canvas shows them transposed
        arr = np.swapaxes(arr, 0, 1)
    return arr, notes


def display_rgb(arr: np.ndarray, layer: Any, name: str, label: str) -> tuple[np.ndarray, list[str]]:
    """A raw slice as the canvas shows it: contrast limits, gamma, colormap; float32 (H, W, 3) in [0, 1].

    One conversion: the values are scaled once (``to_rgb_float``, which also refuses data the
    engine cannot use); a gray single-channel layer keeps that result, another colormap maps
    its first channel.
    """
    limits = cast(tuple[float, float], tuple(float(v) for v in layer.contrast_limits))  # napari: (lo, hi)
    gamma = float(getattr(layer, "gamma", 1.0) or 1.0)
    notes: list[str] = []
    if not getattr(layer, "rgb", False) and arr.ndim != 2:
        arr = np.squeeze(arr)
    out = to_rgb_float(arr, limits=limits, name=name)
    if gamma != 1.0:
        out = np.power(out, gamma, dtype=np.float32)
    cmap = None if getattr(layer, "rgb", False) else getattr(layer, "colormap", None)
    if cmap is not None and getattr(cmap, "name", "gray") != "gray":
        value = out[..., 0]
        rgba = np.asarray(cmap.map(value.ravel()), dtype=np.float32).reshape(*value.shape, 4)
        out = rgba[..., :3] * rgba[..., 3:]
        notes.append(f"{label} is shown with the colormap {cmap.name!r}; the engine sees those colours")
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32), notes


def join_notes(notes: list[str]) -> str | None:
    return ("; ".join(notes) + ".") if notes else None


def pastiche_placement(
    layer: Any,
    axes: tuple[int, int],
    full_shape: tuple[int, int],
    working_shape: tuple[int, int],
) -> dict[str, Any]:
    """Image-layer keyword arguments that place a ``working_shape`` pastiche over ``layer``.

    ``layer``: the content layer or its snapshot (``affine`` an Affine or its matrix).
    ``full_shape`` is the size (rows, columns) of the content slice at full resolution (level 0)
    along ``axes``; ``working_shape`` the pastiche's size. The pastiche covers exactly the same
    world rectangle as the content slice: pixel edges meet pixel edges. With ``f = full / working``
    per axis, pastiche pixel ``p`` maps to content pixel ``f * p + (f - 1) / 2``; that map is
    composed with the content's own data-to-world transform. For a 2-D content layer shown as is,
    its rotate, shear and affine are carried over; otherwise the scale and translate of ``axes``.
    """
    f = np.array(full_shape, dtype=float) / np.array(working_shape, dtype=float)
    shift = (f - 1.0) / 2.0
    scale = np.asarray(layer.scale, dtype=float)
    translate = np.asarray(layer.translate, dtype=float)
    ax = list(axes)
    if int(layer.ndim) == 2 and ax == [0, 1]:
        from napari.utils.transforms import Affine

        linear = Affine(scale=scale, rotate=layer.rotate, shear=layer.shear).linear_matrix
        return {
            "scale": tuple(scale * f),
            "translate": tuple(translate + linear @ shift),
            "rotate": np.asarray(layer.rotate),
            "shear": np.asarray(layer.shear),
            "affine": np.asarray(getattr(layer.affine, "affine_matrix", layer.affine)),
        }
    s = scale[ax]
    return {"scale": tuple(s * f), "translate": tuple(translate[ax] + s * shift)}


#: finished pastiche layer -> (its 8-bit data, the float32 image it was made from): Continue
#: starts from the float32 image while the layer still holds that 8-bit array (inputs.snapshot)
FULL_PRECISION: weakref.WeakKeyDictionary[Any, tuple[np.ndarray, np.ndarray]] = weakref.WeakKeyDictionary()


def full_precision(layer: Any) -> np.ndarray | None:
    """The float32 pastiche behind a finished pastiche layer, if its data is still what we made."""
    kept = FULL_PRECISION.get(layer)
    return kept[1] if kept is not None and kept[0] is layer.data else None
