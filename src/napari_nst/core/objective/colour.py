"""Colour preservation (Gatys et al. 2017, *Controlling Perceptual Factors in Neural Style
Transfer*, section 5): ``preserve_color="luminance"`` or ``"histogram"``. numpy + torch, no Qt.

Both are departures from the 2015 objective (options; off by default).

- **luminance**: the network sees luminance only. ``Y = 0.299 R + 0.587 G + 0.114 B`` (BT.601
  luma, which YIQ shares), replicated to three channels; the style's luminance is matched to the
  content's mean and standard deviation first. Each shown image is the pastiche's luminance
  combined with the content's chroma. BT.601 YUV or YIQ give the *same* result here: both have
  this Y as their first row and their inverses have (1, 1, 1) as the first column, so swapping
  Y and keeping either chroma pair is ``rgb = content + (Y_pastiche - Y_content)``; only the
  chroma axes (a rotation in the chroma plane) differ, and they are kept unchanged. We name it
  BT.601 YUV, the luma the JPEG files and most cameras use.
- **histogram**: before the run, each style image's colours are matched to the content's mean
  and 3x3 covariance by ``x' = C_c^(1/2) C_s^(-1/2) (x - mu_s) + mu_c``, with symmetric matrix
  square roots from the eigen-decomposition ("PCA"), not Cholesky factors: the symmetric map
  does not depend on the order of the R, G, B channels and rotates the colour axes least, while a
  Cholesky map changes with the channel order and can turn hues.
"""

from __future__ import annotations

import numpy as np

#: BT.601 luma weights (R, G, B)
LUMA = np.array([0.299, 0.587, 0.114])
#: RGB -> BT.601 YUV (analogue YUV: U = 0.492 (B - Y), V = 0.877 (R - Y))
RGB_TO_YUV = np.array(
    [
        LUMA,
        0.492 * (np.array([0.0, 0.0, 1.0]) - LUMA),
        0.877 * (np.array([1.0, 0.0, 0.0]) - LUMA),
    ]
)
#: eigenvalues below this (in [0, 1]^2 units) count as zero (a flat colour channel)
_EPS = 1e-8


def luminance(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` -> ``(H, W)`` BT.601 luma, float32."""
    return np.asarray((np.asarray(rgb, np.float64) @ LUMA).astype(np.float32))


def yuv(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB -> BT.601 YUV, float64 (tests compare chroma with it)."""
    return np.asarray(np.asarray(rgb, np.float64) @ RGB_TO_YUV.T)


def gray3(y: np.ndarray) -> np.ndarray:
    """``(H, W)`` luminance -> ``(H, W, 3)`` float32 in [0, 1] (what the network is given)."""
    return np.repeat(np.clip(y, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)


def match_luminance(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The style's luminance with the content's luminance mean and standard deviation
    (``(H, W)``, not clipped)."""
    ys, yc = luminance(style).astype(np.float64), luminance(content).astype(np.float64)
    return np.asarray(((ys - ys.mean()) / max(ys.std(), 1e-6) * yc.std() + yc.mean()).astype(np.float32))


def _sqrt_and_inverse(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    root = np.sqrt(vals)
    inv = np.where(vals > _EPS, 1.0 / np.maximum(root, np.sqrt(_EPS)), 0.0)
    return (vecs * root) @ vecs.T, (vecs * inv) @ vecs.T


def match_histogram(style: np.ndarray, content: np.ndarray, clip: bool = True) -> np.ndarray:
    """``style`` (H, W, 3) with the content's colour mean and 3x3 covariance (see the module)."""
    s = np.asarray(style, np.float64).reshape(-1, 3)
    c = np.asarray(content, np.float64).reshape(-1, 3)
    mu_s, mu_c = s.mean(0), c.mean(0)
    _, inv_s = _sqrt_and_inverse(np.cov(s, rowvar=False, bias=True))
    root_c, _ = _sqrt_and_inverse(np.cov(c, rowvar=False, bias=True))
    out = ((s - mu_s) @ (root_c @ inv_s).T + mu_c).reshape(np.shape(style))
    return np.asarray((np.clip(out, 0.0, 1.0) if clip else out).astype(np.float32))


def prepare_colours(
    content: np.ndarray, styles: list[np.ndarray], mode: str | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The content and styles the network is given in colour mode ``mode`` (None: unchanged)."""
    if mode is None:
        return content, styles
    if mode == "histogram":
        return content, [match_histogram(s, content) for s in styles]
    if mode == "luminance":
        return gray3(luminance(content)), [gray3(match_luminance(s, content)) for s in styles]
    raise ValueError(f"preserve_color must be None, 'luminance' or 'histogram', got {mode!r}")


def with_chroma(pastiche: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The pastiche's luminance with the content's chroma (numpy; both (H, W, 3) in [0, 1]):
    ``content + (Y_pastiche - Y_content)``, clipped to [0, 1]."""
    dy = luminance(pastiche) - luminance(content)
    return np.asarray(np.clip(np.asarray(content, np.float32) + dy[..., None], 0.0, 1.0).astype(np.float32))
