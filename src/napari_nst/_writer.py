"""An npe2 writer for image layers to PNG and JPEG that also takes float images (the pastiche).

napari's built-in writer refuses float data for PNG and JPEG ("Either convert dtype or save as
different file type"), so *File > Save Selected Layers...* could not save the pastiche (float32
RGB in [0, 1]) as the file a user most wants. This writer takes any image layer for .png/.jpg:

- float data: mapped through the layer's contrast limits (what the viewer shows; the pastiche's
  are 0 and 1) to 8 bits, written atomically by :func:`napari_nst.core.image.files.write_image`;
- integer and bool data: handed to napari's own writer unchanged, so saving any other image
  layer behaves exactly as without this plugin.

It is not limited to the pastiche (``metadata["napari_nst"]``) because npe2 picks a writer
before it sees the data: a writer that declined other layers would fail their save instead of
falling back. TIFF is left to napari: it keeps float32 data exactly, which is better than 16 bits.
No torch here (this runs in napari's process).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def write_image_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: ``(path, data, meta) -> [written path]``."""
    from napari_nst.core.image.files import write_image

    if meta.get("multiscale") and isinstance(data, (list, tuple)):
        data = data[0]  # the full-resolution level
    arr = np.asarray(data)
    if not np.issubdtype(arr.dtype, np.floating):
        from napari_builtins.io import napari_write_image

        written = napari_write_image(path, arr, meta)
        return [written] if written else []
    image = _to_unit_range(arr, bool(meta.get("rgb")), meta.get("contrast_limits"), path)
    if image.ndim == 3 and image.shape[-1] == 4 and path.lower().endswith((".jpg", ".jpeg")):
        image = image[..., :3] * image[..., 3:]  # JPEG has no alpha: composite over black, as napari shows it
    write_image(path, image)
    return [path]


def _to_unit_range(arr: np.ndarray, rgb: bool, limits: Any, path: str) -> np.ndarray:
    """A 2-D gray or RGB(A) float image in [0, 1] for ``write_image``; clear errors otherwise."""
    if arr.ndim != (3 if rgb else 2):
        raise ValueError(
            f"cannot save a {arr.ndim}-D {'RGB ' if rgb else ''}float image with shape {arr.shape} as "
            f"{path!r}: PNG and JPEG hold one 2-D picture; save it as .tif, or save a single slice"
        )
    if not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    lo, hi = (float(v) for v in limits) if limits is not None else (0.0, 1.0)
    out = (arr.astype(np.float32) - lo) / (hi - lo) if hi > lo else np.zeros(arr.shape, np.float32)
    return np.clip(out, 0.0, 1.0)
