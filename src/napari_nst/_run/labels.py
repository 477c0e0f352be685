"""A Labels layer read the way napari shows it over the content (no Qt; numpy + napari's layer
transforms on the main thread, numpy only in the worker).

:func:`labels_snapshot` (main thread) maps three points of the content slice on screen through the
content's data-to-world and the labels' world-to-data transforms: napari's transforms are affine,
so those three points give the whole map from content pixels to labels pixels, whatever the two
layers' scale, translate, rotation or dimensionality (a 3-D labels volume over a 2-D image: the
slice on screen). :func:`read_labels` (worker) samples the labels at the centre of each working
pixel, nearest label as napari draws it; outside the labels layer: 0 (the background).
:func:`as_labels` (main thread) makes a Shapes layer such a label image first (``mask``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_nst._run.layer_view import data_position


@dataclass(frozen=True)
class LabelsSnapshot:
    """What a run needs of a Labels layer, as plain values (taken on the main thread)."""

    name: str
    data: Any  #: the layer's data (level 0 of a multiscale layer): only read
    origin: np.ndarray  #: labels data coordinates of the content slice's pixel (0, 0)
    d_row: np.ndarray  #: labels data coordinates per content row ...
    d_col: np.ndarray  #: ... and per content column


def labels_snapshot(labels: Any, content: Any, point: Sequence[float] | None, axes: tuple[int, int]) -> LabelsSnapshot:
    """The map from the content slice on screen (``axes``, at ``point``) into ``labels``. Main thread."""
    nd = int(content.ndim)
    base = data_position(content, point) if nd > 2 and point is not None else None
    base = np.zeros(nd) if base is None else np.asarray(base, float)

    def to_labels(r: float, c: float) -> np.ndarray:
        p = base.copy()
        p[axes[0]], p[axes[1]] = r, c
        world = np.asarray(content.data_to_world(list(p)), float)
        full = np.asarray(point if point is not None else world, float).copy()
        if len(full) < len(world):
            full = world
        full[len(full) - len(world) :] = world
        return np.asarray(labels.world_to_data(list(full)), float)[-int(labels.ndim) :]

    o = to_labels(0.0, 0.0)
    data = labels.data[0] if getattr(labels, "multiscale", False) else labels.data
    return LabelsSnapshot(str(labels.name), data, o, to_labels(1.0, 0.0) - o, to_labels(0.0, 1.0) - o)


@dataclass(frozen=True)
class Rasterised:
    """A Shapes layer as a label image in its own data coordinates (shape k + 1 where shape k is,
    0 elsewhere), read as a Labels layer is (:func:`labels_snapshot`)."""

    name: str
    ndim: int
    data: np.ndarray
    world_to_data: Any  #: the Shapes layer's transform (called on the main thread only)


def as_labels(layer: Any, content: Any, point: Sequence[float] | None, axes: tuple[int, int]) -> Any:
    """A Labels layer as it is; a Shapes layer (it has ``to_labels``) rasterised by napari's
    ``Shapes.to_labels`` over the part of its data coordinates that the content covers (and every
    slice its shapes lie on). Main thread."""
    if not hasattr(layer, "to_labels"):
        return layer
    nd = int(layer.ndim)
    if len(layer.data) == 0:
        return Rasterised(str(layer.name), nd, np.zeros((1,) * nd, np.uint8), layer.world_to_data)
    snap = labels_snapshot(layer, content, point, axes)
    rows, cols = _content_extent(content, axes)
    corners = [snap.origin + snap.d_row * r + snap.d_col * c for r in (-0.5, rows - 0.5) for c in (-0.5, cols - 0.5)]
    reach = np.max(corners, axis=0)
    moving = (snap.d_row != 0) | (snap.d_col != 0)
    top = np.asarray(layer.extent.data[1], float)[-nd:]
    top = np.where(moving, np.minimum(top, reach), top)
    shape = tuple(max(1, int(np.ceil(v)) + 1) for v in top)
    raster = np.asarray(layer.to_labels(labels_shape=shape)) != 0
    return Rasterised(str(layer.name), nd, raster.astype(np.uint8), layer.world_to_data)


def _content_extent(content: Any, axes: tuple[int, int]) -> tuple[int, int]:
    data = content.data[0] if getattr(content, "multiscale", False) else content.data
    return int(data.shape[axes[0]]), int(data.shape[axes[1]])


def read_labels(snap: LabelsSnapshot, full_shape: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """The labels under each pixel of the content slice resized to ``shape`` (content slice of
    ``full_shape`` at full resolution), int64 ``shape``. Worker thread."""
    fr, fc = np.asarray(full_shape, float) / np.asarray(shape, float)
    rows = fr * np.arange(shape[0]) + (fr - 1) / 2  # pixel centres in content data coordinates
    cols = fc * np.arange(shape[1]) + (fc - 1) / 2
    coords = (
        snap.origin[:, None, None]
        + snap.d_row[:, None, None] * rows[None, :, None]
        + snap.d_col[:, None, None] * cols[None, None, :]
    )
    idx = np.rint(coords).astype(np.int64)  # (ndim, h, w)
    dims = np.asarray(snap.data.shape[: idx.shape[0]])
    inside = ((idx >= 0) & (idx < dims[:, None, None])).all(0)
    fixed = [ax for ax in range(idx.shape[0]) if np.all(idx[ax] == idx[ax].flat[0])]
    index: list[Any] = [slice(None)] * idx.shape[0]
    for ax in fixed:  # read only the slice on screen (a dask/zarr volume computes just it)
        index[ax] = int(np.clip(idx[ax].flat[0], 0, dims[ax] - 1))
    sub = np.asarray(snap.data[tuple(index)])
    moving = [ax for ax in range(idx.shape[0]) if ax not in fixed]
    picks = tuple(np.clip(idx[ax], 0, dims[ax] - 1) for ax in moving)
    out = sub[picks] if moving else np.full(shape, sub)
    return np.where(inside, out, 0).astype(np.int64)
