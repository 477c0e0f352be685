"""Image arrays as napari holds them <-> float32 RGB in [0, 1].

numpy only: the widget converts layers with these functions without importing torch.

Mapping rules (documented in docs/python.md):

- shape ``(H, W)`` is grayscale, ``(H, W, 1)`` too; ``(H, W, 2)`` is grayscale + alpha;
  ``(H, W, 3)`` RGB; ``(H, W, 4)`` RGBA. Grayscale is repeated to three channels; alpha is
  composited over black, as napari shows it on its default black canvas.
- ``limits=(lo, hi)`` given: ``(x - lo) / (hi - lo)``, clipped to [0, 1]. This is how the widget
  passes a layer's contrast limits, so the engine sees what the user sees.
- otherwise by dtype: ``uint8`` is divided by 255; floats already inside [0, 1] are kept;
  other integers and floats outside [0, 1] are rescaled by the image's own range
  ``(x - min) / (max - min)``; a constant image of that kind maps to 0.
- bool, complex and object arrays, NaN or inf values, fewer than 2 or more than 3 dimensions,
  more than 4 channels, and sides shorter than :data:`MIN_INPUT_SIDE` raise :class:`ImageError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_nst.core.errors import ImageError

#: the shortest side (pixels) an input image may have
MIN_INPUT_SIDE = 4

ArrayLike = np.ndarray | Sequence[Any]
Limits = tuple[float, float]


def validate_limits(limits: Limits | None, name: str) -> Limits | None:
    """Check ``(lo, hi)`` contrast limits; return them as floats."""
    if limits is None:
        return None
    try:
        lo, hi = (float(v) for v in limits)
    except (TypeError, ValueError):
        raise ImageError(f"{name}_limits must be two numbers (lo, hi), got {limits!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        raise ImageError(
            f"{name}_limits must be finite with lo < hi, got ({lo}, {hi}); widen the layer's contrast limits"
        )
    return lo, hi


def _check_array(arr: np.ndarray, name: str) -> None:
    kind = arr.dtype.kind
    if kind == "b":
        raise ImageError(
            f"the {name} image is a boolean array (a mask?); convert it to an image first, "
            f"e.g. {name}.astype(np.uint8) * 255"
        )
    if kind not in "uif":
        raise ImageError(f"the {name} image has dtype {arr.dtype}; use an integer or floating point array")
    if arr.size == 0:
        raise ImageError(f"the {name} image is empty (shape {arr.shape})")
    if arr.ndim < 2:
        raise ImageError(f"the {name} image has shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if arr.ndim > 3 or (arr.ndim == 3 and arr.shape[-1] > 4):
        hint = "pass a single 2-D slice of a stack"
        if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4):
            hint = f"channels first? use numpy.moveaxis({name}, 0, -1); or {hint}"
        raise ImageError(
            f"the {name} image has shape {arr.shape}, which is not one 2-D image: expected "
            f"(H, W), (H, W, 3) or (H, W, 4); {hint}"
        )
    h, w = arr.shape[:2]
    if min(h, w) < MIN_INPUT_SIDE:
        raise ImageError(f"the {name} image is {h}x{w} pixels; each side must be at least {MIN_INPUT_SIDE} px")
    if kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ImageError(
                f"the {name} image has {int(bad.sum())} NaN or infinite values; "
                "replace them first, e.g. with numpy.nan_to_num"
            )


def _scale_values(arr: np.ndarray, limits: Limits | None) -> np.ndarray:
    """Values -> float in [0, 1] (float64 for wide integer ranges, else float32)."""
    if limits is not None:
        return _rescale(arr, *limits)
    if arr.dtype == np.uint8:
        return np.asarray(arr.astype(np.float32) / np.float32(255))
    if arr.dtype.kind == "f":
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            return arr.astype(np.float32)
    else:
        lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.float32)
    return _rescale(arr, lo, hi)


def _rescale(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(x - lo) / (hi - lo)`` clipped to [0, 1], in float64 (wide integer ranges keep precision).

    A span wider than float64's range (e.g. -1e308 .. 1e308) would overflow to inf and give NaN
    (inf / inf); everything is then halved first. Values far outside tiny limits overflow to
    +-inf, which the clip maps to 0 or 1.
    """
    x = arr.astype(np.float64)
    span = hi - lo
    if not np.isfinite(span):
        x *= 0.5
        lo, span = lo * 0.5, hi * 0.5 - lo * 0.5
    with np.errstate(over="ignore"):
        out = (x - lo) / span
    return np.clip(out, 0.0, 1.0)


def _alpha(alpha: np.ndarray) -> np.ndarray:
    """Alpha channel -> [0, 1]: integers by their dtype's maximum, floats clipped."""
    if alpha.dtype.kind in "ui":
        return np.asarray(np.clip(alpha.astype(np.float64) / np.iinfo(alpha.dtype).max, 0.0, 1.0))
    return np.asarray(np.clip(alpha, 0.0, 1.0).astype(np.float32))  # clip first: float64 1e300 would overflow float32


def to_rgb_float(image: ArrayLike, *, limits: Limits | None = None, name: str = "input") -> np.ndarray:
    """Convert an image array to a new float32 ``(H, W, 3)`` array in [0, 1].

    Parameters
    ----------
    image : array-like
        ``(H, W)``, ``(H, W, 1)``, ``(H, W, 2)``, ``(H, W, 3)`` or ``(H, W, 4)``, any integer or float
        dtype. Never modified.
    limits : (lo, hi), optional
        Values mapped to 0 and 1 (e.g. a napari layer's contrast limits). Without them the dtype rule
        in this module's docstring applies.
    name : str
        Used in error messages ("content", "style").
    """
    try:
        arr = np.asarray(image)
    except (ValueError, TypeError) as exc:  # ragged nested lists, ...
        raise ImageError(f"the {name} image is not an array of numbers ({exc}); pass a numpy array") from None
    _check_array(arr, name)
    limits = validate_limits(limits, name)
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        color, alpha = arr[..., :-1], arr[..., -1:]
        rgb = _scale_values(color, limits) * _alpha(alpha)
    else:
        rgb = _scale_values(arr, limits)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def resized_shape(shape: tuple[int, int], long_edge: int) -> tuple[int, int]:
    """(H, W) scaled so that its long edge is ``long_edge`` pixels, aspect ratio kept."""
    h, w = shape
    s = long_edge / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 for saving."""
    return np.asarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
