"""Restyle one region (option ``mask``): the pixels outside the mask stay those of the start image.

Departure from the paper (an option; off by default): Gatys et al. let every pixel of the
pastiche change. With a mask the objective is unchanged (the content and style terms of the
whole image: the style statistics are those of the whole pastiche, the kept pixels included);
only which pixels the optimisation may change is constrained. The image evaluated at each level
is ``K + W * (G - K)`` (:class:`~napari_nst.core.optim.pyramid.PyramidImage`): ``G`` the
optimiser's image, ``K`` the image kept (the start image: ``init`` when it is an image, such as
the pastiche a Continue repaints, else the content; a stack's frame: its content) and ``W`` the
feathered mask, so that the gradient reaches ``G`` only through ``W``.

``W`` at a level of working shape ``(h, w)``: the mask sampled at the pixel centres
(:func:`~napari_nst.core.image.masks.mask_at`), then feathered *inwards*:
``W = M * clamp(2 * blur(M) - 1, 0, 1)`` with ``blur`` a Gaussian of standard deviation
:data:`FEATHER_SIGMA` px at the working size (scaled with the level's size at coarser levels;
edge-replicated at the image's border, so a mask reaching the border is not feathered there).
``W`` is 0 outside the mask (those pixels are ``K`` exactly, bit for bit) and rises from about
0.2 on the mask's edge pixels to 1 about three sigmas inside, so the restyled region fades into
the kept image without a seam; a region narrower than about ``4 * FEATHER_SIGMA`` px is only
partly restyled. Every image recorded (in luminance mode, after the content's chroma is put
back) is composited with ``K`` in RGB by the same ``W``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from napari_nst.core.image.masks import FEATHER_SIGMA, mask_at
from napari_nst.core.image.tensors import gaussian_blur, resize, to_tensor
from napari_nst.core.objective.colour import LUMA


def feather(inside: torch.Tensor, sigma: float) -> torch.Tensor:
    """``inside`` (1, 1, h, w) of 0s and 1s -> the weight ``inside * clamp(2 * blur - 1, 0, 1)``."""
    if sigma < 0.3:  # under a third of a pixel: a hard mask
        return inside
    blurred = gaussian_blur(inside.float(), sigma)
    return inside * (2.0 * blurred - 1.0).clamp(0.0, 1.0)


@dataclass
class Restyle:
    """What a masked run needs: the mask, the image kept outside it (RGB, and as the network sees
    it) and the finest level's shape; each level's tensors made once (:meth:`at`)."""

    mask: np.ndarray  #: bool (H, W) at the content's resolution
    keep: np.ndarray  #: float32 (H', W', 3) RGB in [0, 1]: the image kept outside the mask
    final: tuple[int, int]  #: the finest level's shape: FEATHER_SIGMA is in its pixels
    gray: bool = False  #: luminance mode: the network sees the kept image's luminance
    _level: dict[Any, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @classmethod
    def build(cls, mask: Any, keep: np.ndarray, final: tuple[int, int], gray: bool) -> Restyle:
        return cls(np.asarray(mask, dtype=bool), np.ascontiguousarray(keep, dtype=np.float32), final, gray)

    def for_frame(self, mask: Any, keep: np.ndarray) -> Restyle:
        """The same settings for another frame of a stack: its mask and its content kept."""
        return replace(self, mask=np.asarray(mask, dtype=bool), keep=np.ascontiguousarray(keep, np.float32), _level={})

    def at(self, shape: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(W, K as the network sees it, K in RGB)`` at ``shape``, made on ``device``; the newest
        level's are kept (a level's every evaluation and record use them)."""
        key = tuple(shape)
        if key not in self._level:
            self._level.clear()
            inside = torch.from_numpy(mask_at(self.mask, shape).astype(np.float32))[None, None].to(device)
            sigma = FEATHER_SIGMA * max(shape) / max(self.final)
            rgb = resize(to_tensor(self.keep, torch.device("cpu")), shape).to(device)
            net = rgb
            if self.gray:  # as Controls.network_image makes an image to start from in luminance mode
                luma = torch.tensor(LUMA, dtype=rgb.dtype, device=device)[None, :, None, None]
                net = (rgb * luma).sum(1, keepdim=True).expand_as(rgb).clamp(0, 1).contiguous()
            self._level[key] = (feather(inside, sigma), net, rgb)
        return self._level[key]

    def shown(self, image: torch.Tensor) -> torch.Tensor:
        """A recorded RGB image (1, 3, h, w) composited with the kept image: exactly ``K`` outside."""
        w, _, rgb = self.at((int(image.shape[-2]), int(image.shape[-1])), image.device)
        w, rgb = w.to(image.device), rgb.to(image.device)  # no copy where the level made them
        return rgb + w * (image.float() - rgb)
