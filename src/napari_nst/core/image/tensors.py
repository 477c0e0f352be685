"""Images <-> tensors: (H, W, 3) float32 arrays in [0, 1] and (1, 3, H, W) tensors on a device, and
their resizing (torch)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) float32 -> (1, 3, H, W) on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) -> new float32 (H, W, 3) array in [0, 1] on the host."""
    out: np.ndarray = t.detach()[0].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy().copy()
    return out


def resize(t: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (1, 3, H, W), antialiased when shrinking."""
    if tuple(t.shape[-2:]) == tuple(shape):
        return t
    shrink = shape[0] < t.shape[-2] or shape[1] < t.shape[-1]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=shrink).clamp(0, 1)


def gaussian_blur(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(1, 1, h, w)`` ``mask`` blurred by a separable Gaussian of standard deviation ``sigma`` px
    (the image's edges replicated), clamped to [0, 1]: the feathers of masks and unstyled regions."""
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=mask.dtype, device=mask.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    out = F.pad(mask, (r, r, r, r), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1))
    return F.conv2d(out, k.view(1, 1, -1, 1)).clamp(0.0, 1.0)
