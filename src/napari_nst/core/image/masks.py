"""The ``mask`` option: which pixels a run may change (numpy only: the napari process checks it without torch).

A mask is an ``(H, W)`` array of the content's size, boolean or a label image (any integer or
float dtype): nonzero = restyle. For a stack also ``(N, H, W)``, one per frame. The engine reads
it at each level's working shape by nearest-neighbour sampling at the pixel centres
(:func:`mask_at`, as napari draws a Labels layer); the feathering and the image formed from it
are in :mod:`napari_nst.core.optim.masked`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_nst.core.errors import ImageError, OptionError


def as_mask(mask: Any, name: str = "mask") -> np.ndarray:
    """``mask`` as a new boolean array (nonzero = restyle); OptionError for a dtype that is not a
    mask (complex, object, text) and for NaN values."""
    arr = np.asarray(mask)
    if arr.dtype.kind not in "biuf":
        raise OptionError(
            f"{name} must be a boolean or label image (nonzero = restyle), got an array of dtype {arr.dtype}"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise OptionError(f"{name} has NaN or infinite values; give a boolean or label image (nonzero = restyle)")
    return np.asarray(arr != 0)


def mask_at(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean ``(H, W)`` mask at ``shape``: nearest-neighbour sampling at the pixel centres."""
    h, w = mask.shape[:2]
    if (h, w) == tuple(shape):
        return np.asarray(mask, dtype=bool)
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(int), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(int), w - 1)
    return np.asarray(mask[rows[:, None], cols[None, :]], dtype=bool)


#: the feather's Gaussian standard deviation, in pixels at the working size (the finest level)
FEATHER_SIGMA = 2.0


def feather_np(inside: np.ndarray, sigma: float) -> np.ndarray:
    """numpy's copy of :func:`napari_nst.core.optim.masked.feather` (for the instant preview, which
    runs without torch): boolean ``(h, w)`` -> float32 ``inside * clamp(2 * blur - 1, 0, 1)``,
    ``blur`` a Gaussian of ``sigma`` px truncated at 3 sigmas, edges replicated."""
    m = np.asarray(inside, np.float32)
    if sigma < 0.3:
        return m
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float32) / sigma) ** 2)
    k /= k.sum()
    blurred = np.pad(m, r, mode="edge")
    blurred = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, blurred)
    blurred = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, blurred)
    return np.asarray(m * np.clip(2.0 * np.clip(blurred, 0, 1) - 1.0, 0.0, 1.0), np.float32)


def _empty_error(what: str) -> OptionError:
    return OptionError(
        f"{what} has no nonzero pixel, so nothing would be restyled; mark the pixels to restyle with "
        "nonzero values (or leave mask out to restyle the whole image)"
    )


def check_mask(mask: Any, content_shape: tuple[int, int], working_shape: tuple[int, int] | None = None) -> np.ndarray:
    """``mask`` as a boolean ``(H, W)`` array of the content's shape with some pixel marked (at the
    working shape too, where given); OptionError naming the fix otherwise."""
    arr = as_mask(mask)
    if arr.ndim != 2:
        raise OptionError(
            f"mask has shape {arr.shape}; give one 2-D (H, W) mask of the content's size {tuple(content_shape)} "
            "(a stack takes (N, H, W), one per frame)"
        )
    if arr.shape != tuple(content_shape):
        raise OptionError(
            f"mask has shape {arr.shape} but the content image is {tuple(content_shape)} (H, W); give a mask "
            "of that size (or resize it with nearest-neighbour sampling)"
        )
    if not arr.any():
        raise _empty_error("mask")
    if working_shape is not None and not mask_at(arr, working_shape).any():
        raise OptionError(
            f"mask marks no pixel at the working size ({working_shape[0]}x{working_shape[1]} px): the marked "
            "region is smaller than a working pixel; mark a larger region or raise size"
        )
    return arr


def check_mask_stack(
    mask: Any, n: int, frame_shape: tuple[int, int], working_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """A stack's mask: one ``(H, W)`` mask for every frame, or ``(N, H, W)``, one per frame (frame
    axis first), as a boolean array. A frame whose mask is empty is kept as its content; the
    masks of all frames together must mark some pixel. OptionError naming the fix otherwise."""
    arr = as_mask(mask)
    if arr.ndim == 2:
        return check_mask(arr, frame_shape, working_shape)
    if arr.ndim != 3:
        raise OptionError(
            f"mask has shape {arr.shape}; give one (H, W) mask for every frame or (N, H, W), one per frame"
        )
    if arr.shape[0] != n:
        raise OptionError(
            f"mask has {arr.shape[0]} masks (shape {arr.shape}) but the stack has {n} frames; give one per "
            "frame (frame axis first), or one (H, W) mask for every frame"
        )
    if arr.shape[1:] != tuple(frame_shape):
        raise OptionError(
            f"mask has frames of shape {arr.shape[1:]} but the stack's frames are {tuple(frame_shape)} (H, W); "
            "give masks of that size"
        )
    if not arr.any():
        raise _empty_error("mask (every frame's)")
    if working_shape is not None and not any(mask_at(m, working_shape).any() for m in arr):
        raise OptionError(
            f"mask marks no pixel of any frame at the working size ({working_shape[0]}x{working_shape[1]} px); "
            "mark a larger region or raise size"
        )
    return arr


def read_mask(path: str | os.PathLike[str], stack: bool = False) -> np.ndarray:
    """A mask image file as a boolean ``(H, W)`` array: nonzero in any colour channel = restyle
    (an alpha channel: transparent pixels are not restyled). ``stack``: a multi-page TIFF gives
    ``(N, H, W)``, one mask per page (frame). Raises :class:`ImageError` naming the file."""
    from napari_nst.core.image.files import read_image

    p = Path(path).expanduser()
    frames = _tiff_stack(p) if stack and p.is_file() else None
    if frames is not None:
        if frames.ndim not in (3, 4):
            raise ImageError(
                f"the mask {str(p)!r} holds an array of shape {frames.shape}; give (N, H, W), one per frame"
            )
        return np.stack([_nonzero(f, p) for f in frames])
    return _nonzero(read_image(p), p)


def _tiff_stack(p: Path) -> np.ndarray | None:
    """A TIFF's frames (N, H, W[, C]), or None for one image (gray, or colour with its samples last)
    and any other file. A 3-D TIFF is frames, as for ``--regions``: tifffile writes an (N, H, W) array
    of 3 or 4 frames as one planar page."""
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            page = tuple(tif.pages[0].shape)
            arr = np.asarray(tif.asarray())
    except Exception as exc:
        raise ImageError(f"cannot read {str(p)!r} as a TIFF (truncated or corrupt?): {exc}") from None
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape == page and page[-1] in (3, 4)):
        return None
    return arr


def _nonzero(arr: np.ndarray, p: Path) -> np.ndarray:
    """One image (gray, gray + alpha, RGB, RGBA) -> boolean: some colour channel nonzero where opaque."""
    if arr.ndim == 2:
        return np.asarray(arr != 0)
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        alpha = arr.shape[-1] in (2, 4)
        colour = arr[..., :-1] if alpha else arr
        out = (colour != 0).any(-1)
        return np.asarray(out & (arr[..., -1] != 0) if alpha else out)
    raise ImageError(
        f"the mask {str(p)!r} has shape {arr.shape}; give one gray or RGB(A) image (nonzero = restyle)"
        + (", or a multi-page TIFF, one page per frame" if arr.ndim > 3 else "")
    )
