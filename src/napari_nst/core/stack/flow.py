"""Optical flow between two content frames, warping along it, and where it can be trusted.

OpenCV's DIS flow (Kroeger et al. 2016, ``cv2.DISOpticalFlow``): dense, no weights to download,
a few milliseconds at 256 px on a CPU, in ``opencv-python-headless`` (the optional extra
``napari-nst[stack]``). Without OpenCV :func:`have_flow` is False and a stack's frames start
from the previous pastiche unmoved (core/stack/engine.py says so in its records).

Conventions: a flow is float32 ``(H, W, 2)`` of (dx, dy) in pixels; ``flow_ab = flow(a, b)``
means ``a(p) ~ b(p + flow_ab(p))``. Numpy in, numpy out (the host; no torch here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Ruder et al. 2016's forward-backward consistency test: a pixel is unreliable when
#: ``|w + w~|^2 > CONSISTENCY_RATIO * (|w|^2 + |w~|^2) + CONSISTENCY_PX2``
CONSISTENCY_RATIO, CONSISTENCY_PX2 = 0.01, 0.5
#: ... and on motion boundaries: ``|grad u|^2 + |grad v|^2 > BOUNDARY_RATIO * |w~|^2 + BOUNDARY_PX2``
BOUNDARY_RATIO, BOUNDARY_PX2 = 0.01, 0.002

#: where the carried paint cannot be trusted a frame starts from its content without detail finer than
#: this (a Gaussian's standard deviation, px at the working size): a pastiche's strokes replace the
#: photo's pixel-scale detail, and the paint carried in (:func:`_repainted`) brings strokes of its own.
#: Chosen on the pan of benchmarks/stack.py's edge part (128 px, 8 px a frame, 100 evaluations): the
#: last frame's 32 columns brought in, fine detail and stylisation against the frame stylised on its
#: own: 0 px 1.33x and 1.01x, 0.5 px 1.06x and 0.98x, 1 px 0.81x and 1.08x (Ruder's start: 0.52x, 1.87x)
DETAIL_SIGMA = 0.5

OPENCV_NOTE = (
    "no optical flow (OpenCV is not installed: pip install 'napari-nst[stack]'); frames start from the "
    "previous pastiche unmoved, without the temporal term"
)


def have_flow() -> bool:
    """Whether OpenCV (and so DIS flow) is importable."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _gray_u8(image: np.ndarray) -> np.ndarray:
    """float (H, W, 3) in [0, 1] -> uint8 luminance (H, W), what DIS reads."""
    y = image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114
    return np.ascontiguousarray(np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8))


def dis_flow(a: np.ndarray, b: np.ndarray, preset: str = "medium") -> np.ndarray:
    """Dense flow from ``a`` to ``b`` (float RGB (H, W, 3) in [0, 1], same shape): ``a(p) ~ b(p + flow(p))``."""
    import cv2

    presets = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }
    dis = cv2.DISOpticalFlow_create(presets[preset])  # type: ignore[attr-defined]
    return np.asarray(dis.calc(_gray_u8(a), _gray_u8(b), None), dtype=np.float32)


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return xs, ys


def warp(image: np.ndarray, flow: np.ndarray, mirror: bool = False) -> np.ndarray:
    """``out(p) = image(p + flow(p))``, bilinear (the image the flow points into, pulled back onto
    the flow's grid). ``image`` (H, W, C) or (H, W) float32. Outside the image: its edge pixels
    repeated, or with ``mirror`` the image mirrored at its edge (without repeating the edge pixel)."""
    import cv2

    xs, ys = _grid(flow.shape[:2])
    out: Any = cv2.remap(
        np.ascontiguousarray(image, dtype=np.float32),
        xs + flow[..., 0],
        ys + flow[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101 if mirror else cv2.BORDER_REPLICATE,
    )
    return np.asarray(out, dtype=np.float32).reshape(image.shape)


def consistency_mask(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """float32 (H, W): 1 where the flow of frame t back to t-1 (``backward``) can be trusted, 0
    where it cannot: the forward flow (t-1 to t) does not lead back (disocclusion, errors), on
    motion boundaries, and where it points outside the frame (Ruder et al. 2016, section 3.1)."""
    h, w = backward.shape[:2]
    fwd_at = warp(forward, backward)  # the forward flow at p + backward(p)
    s = backward + fwd_at
    bad = (s**2).sum(-1) > CONSISTENCY_RATIO * ((backward**2).sum(-1) + (fwd_at**2).sum(-1)) + CONSISTENCY_PX2
    du = np.gradient(backward[..., 0])
    dv = np.gradient(backward[..., 1])
    grad2 = du[0] ** 2 + du[1] ** 2 + dv[0] ** 2 + dv[1] ** 2
    bad |= grad2 > BOUNDARY_RATIO * (backward**2).sum(-1) + BOUNDARY_PX2
    xs, ys = _grid((h, w))
    tx, ty = xs + backward[..., 0], ys + backward[..., 1]
    bad |= (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)
    out: np.ndarray = (~bad).astype(np.float32)
    return out


def carry(
    previous_pastiche: np.ndarray,
    previous: np.ndarray,
    current: np.ndarray,
    preset: str = "medium",
    labels: tuple[np.ndarray, np.ndarray] | None = None,
    repaint: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Frame t-1's pastiche carried onto frame t, and where that can be trusted.

    ``previous``/``current``: the content frames t-1 and t at the pastiche's shape (float RGB).
    Returns the start image (H, W, 3): the warped pastiche where the mask is 1, and
    :func:`_repainted` where it is 0 (``repaint`` False: the warped pastiche everywhere, as Ruder
    et al. start, the edge pixels repeated where the flow points outside; only to measure what
    ``_repainted`` buys); and the mask (H, W) of :func:`consistency_mask`.
    ``labels``: frames t-1's and t's label images at that shape (per-frame regions), see
    :func:`_relabelled`.
    """
    backward = dis_flow(current, previous, preset)  # current(p) ~ previous(p + backward(p))
    forward = dis_flow(previous, current, preset)
    mask = consistency_mask(backward, forward)
    start = warp(previous_pastiche, backward)
    if repaint:
        start = np.where(mask[..., None] > 0, start, _repainted(previous_pastiche, previous, current, backward))
    start = np.clip(start, 0.0, 1.0).astype(np.float32)
    if labels is not None:
        start, mask = _relabelled(start, mask, current, labels, backward)
    return start, mask


def _repainted(
    previous_pastiche: np.ndarray, previous: np.ndarray, current: np.ndarray, backward: np.ndarray
) -> np.ndarray:
    """Where the carried paint cannot be trusted (the mask's zeros: content entering at the frame's
    edge, disocclusions, flow errors), a frame starts from its own content plus frame t-1's paint
    (its pastiche minus its content) carried along the flow, mirrored at the frame's edge. Both
    contents lose their pixel-scale detail first (:func:`_smooth`): the strokes carried in replace it,
    as they do in the pastiche (with the detail kept, the start has this frame's fine detail and the
    negative of frame t-1's mirrored on top of the strokes: twice the fine detail of a pastiche).

    Departure from Ruder et al. 2016, who start every pixel from the warped pastiche: there a pixel
    the flow brings from outside frame t-1 gets the pastiche's edge pixels repeated, a smeared band
    that the ``frame_steps`` evaluations of a later frame do not repaint and that the temporal term
    then carries on into the frames after it (docs/stacks.md). Here such a pixel starts with this
    frame's colours and structure and with brush strokes of the pastiche's kind; the objective is
    unchanged (the temporal term is off there, as before)."""
    paint = warp(previous_pastiche - _smooth(previous), backward, mirror=True)
    return np.asarray(_smooth(current) + paint, dtype=np.float32)


def _smooth(image: np.ndarray) -> np.ndarray:
    """``image`` without its pixel-scale detail (Gaussian of :data:`DETAIL_SIGMA` px, mirrored edges)."""
    import cv2

    out: Any = cv2.GaussianBlur(
        np.ascontiguousarray(image, dtype=np.float32), (0, 0), DETAIL_SIGMA, borderType=cv2.BORDER_REFLECT_101
    )
    return np.asarray(out, dtype=np.float32)


def _relabelled(
    start: np.ndarray,
    mask: np.ndarray,
    current: np.ndarray,
    labels: tuple[np.ndarray, np.ndarray],
    backward: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame regions (a Labels stack): where the label the paint came from (frame t-1's, carried
    along the flow) is not this pixel's label at frame t, the carried paint belongs to another region
    (a region moving across the content would drag a trail of its style): there the frame starts
    afresh from its content and the temporal term is off. An addition to Ruder et al.'s mask."""
    import cv2

    xs, ys = _grid(backward.shape[:2])
    came_from = cv2.remap(
        np.ascontiguousarray(labels[0], dtype=np.float32),
        xs + backward[..., 0],
        ys + backward[..., 1],
        interpolation=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_REPLICATE,
    )
    moved = came_from != np.asarray(labels[1], dtype=np.float32)
    start = np.where(moved[..., None], current, start).astype(np.float32)
    return start, np.where(moved, 0.0, mask).astype(np.float32)
