"""Sample data for File > Open Sample > Neural Style Transfer.

Nothing here is downloaded or shipped from elsewhere:

- the content image is scikit-image's bundled ``chelsea`` photograph (scikit-image is a napari
  dependency and ships this file inside its wheel, so it works offline); if scikit-image is
  missing, a generated landscape is used instead;
- the style image is painted here, procedurally: swirling brush strokes made by smearing coarse
  random "paint dabs" along a vortex flow field (line-integral convolution), coloured with a
  night-sky palette. It is deterministic (seeded).

numpy only; no Qt, napari or torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LayerData = tuple[np.ndarray, dict[str, Any], str]

# deep blue -> cobalt -> sky blue -> pale yellow -> ochre (a starry-night-like palette)
_PALETTE = np.array(
    [
        [0.04, 0.07, 0.22],
        [0.10, 0.22, 0.52],
        [0.22, 0.42, 0.72],
        [0.52, 0.68, 0.82],
        [0.94, 0.88, 0.52],
        [0.86, 0.62, 0.18],
    ],
    dtype=np.float32,
)


def _palette(u: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB, piecewise linear through :data:`_PALETTE`."""
    x = np.clip(u, 0.0, 1.0) * (len(_PALETTE) - 1)
    i = np.minimum(x.astype(np.int64), len(_PALETTE) - 2)
    f = (x - i)[..., None]
    return np.asarray(_PALETTE[i] * (1 - f) + _PALETTE[i + 1] * f)


def _flow(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A unit vector field made of a few vortices on a gentle horizontal drift."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vy = 0.15 * np.sin(xx / w * 2 * np.pi * 1.5).astype(np.float32)
    vx = np.ones((h, w), np.float32) * 0.35
    for _ in range(5):
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        r = rng.uniform(0.08, 0.2) * min(h, w)
        s = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.6)
        dy, dx = yy - cy, xx - cx
        d2 = dy * dy + dx * dx + r * r
        k = s * r / d2 * np.exp(-d2 / (8 * r * r)) * 6
        vy += k * dx
        vx -= k * dy
    n = np.sqrt(vy * vy + vx * vx) + 1e-6
    return vy / n, vx / n


def _lic(noise: np.ndarray, vy: np.ndarray, vx: np.ndarray, length: int) -> np.ndarray:
    """Line-integral convolution: average ``noise`` along the flow, ``length`` px each way."""
    h, w = noise.shape
    y0, x0 = np.mgrid[0:h, 0:w].astype(np.float32)
    acc = noise.astype(np.float32).copy()
    count = 1
    for sign in (1.0, -1.0):
        y, x = y0.copy(), x0.copy()
        for _ in range(length):
            iy = np.clip(y, 0, h - 1).astype(np.int64)
            ix = np.clip(x, 0, w - 1).astype(np.int64)
            y += sign * vy[iy, ix]
            x += sign * vx[iy, ix]
            acc += noise[np.clip(y, 0, h - 1).astype(np.int64), np.clip(x, 0, w - 1).astype(np.int64)]
            count += 1
    return np.asarray(acc / count)


def brush_strokes(shape: tuple[int, int] = (384, 384), seed: int = 2) -> np.ndarray:
    """A painting-like RGB uint8 image of swirling brush strokes (deterministic for a seed)."""
    h, w = (int(v) for v in shape)
    rng = np.random.default_rng(seed)
    vy, vx = _flow(h, w, rng)
    # coarse dabs of paint (3x3 px blocks) so that the smeared strokes are a few px wide
    dabs = rng.random(((h + 2) // 3, (w + 2) // 3)).astype(np.float32)
    dabs = np.repeat(np.repeat(dabs, 3, axis=0), 3, axis=1)[:h, :w]
    strokes = _lic(dabs, vy, vx, length=max(6, min(h, w) // 24))
    strokes = (strokes - strokes.min()) / (np.ptp(strokes) + 1e-6)
    # large-scale colour: bright swirl centres and a dark lower band, as in a night landscape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    glow = 0.5 + 0.5 * np.sin(xx / w * 5.0 + np.sin(yy / h * 4.0) * 1.5) * np.cos(yy / h * 3.0)
    base = 0.15 + 0.55 * glow * (1.0 - 0.6 * (yy / h) ** 2)
    u = np.clip(base + 0.55 * (strokes - 0.5), 0.0, 1.0)
    rgb = _palette(u) * (0.8 + 0.4 * strokes[..., None])
    # a few bright stars
    for _ in range(7):
        cy, cx = rng.uniform(0.05, 0.55) * h, rng.uniform(0.05, 0.95) * w
        r = rng.uniform(0.03, 0.06) * min(h, w)
        halo = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        rgb = rgb * (1 - halo) + halo * np.array([1.0, 0.92, 0.55], np.float32) * (0.7 + 0.3 * strokes[..., None])
    return np.asarray((np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))


def _generated_content(shape: tuple[int, int] = (300, 450)) -> np.ndarray:
    """Fallback content (no scikit-image): hills, a sun and a house, as uint8 RGB."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    img[:] = np.stack([0.55 + 0.3 * yy / h, 0.7 + 0.2 * yy / h, np.full_like(yy, 0.95)], axis=-1)
    hill = h * (0.6 + 0.08 * np.sin(xx / w * 6.0))
    img[yy > hill] = (0.25, 0.55, 0.2)
    sun = (yy - 0.25 * h) ** 2 + (xx - 0.78 * w) ** 2 < (0.09 * h) ** 2
    img[sun] = (1.0, 0.85, 0.3)
    house = (yy > 0.45 * h) & (yy < 0.7 * h) & (xx > 0.2 * w) & (xx < 0.4 * w)
    img[house] = (0.8, 0.3, 0.2)
    return (img * 255).astype(np.uint8)


def content_image() -> tuple[np.ndarray, str]:
    try:
        from skimage import data

        return np.asarray(data.chelsea()), "chelsea"  # type: ignore[no-untyped-call]
    except Exception:  # scikit-image missing or its file unreadable
        return _generated_content(), "landscape"


def content_sample() -> list[LayerData]:
    """The content sample: a photograph (RGB uint8)."""
    img, name = content_image()
    return [(img, {"name": name, "rgb": True}, "image")]


def style_sample() -> list[LayerData]:
    """The style sample: procedurally painted brush strokes (RGB uint8)."""
    return [(brush_strokes(), {"name": "brush strokes", "rgb": True}, "image")]


def pair_sample() -> list[LayerData]:
    """Content and style together, ready for the Style Transfer widget (style hidden)."""
    ((c_data, c_meta, c_type),) = content_sample()
    ((s_data, s_meta, s_type),) = style_sample()
    s_meta = dict(s_meta, visible=False)
    return [(s_data, s_meta, s_type), (c_data, c_meta, c_type)]
