"""Reading and writing image files (PNG, JPEG, TIFF incl. 16-bit, ...). numpy + Pillow + tifffile."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_nst.core.errors import ImageError
from napari_nst.core.image.arrays import to_uint8

#: refuse files with more pixels than this before decoding them (Pillow reads the header first)
MAX_PIXELS = 20000 * 20000


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file into an array as stored (uint8, uint16, float ...), EXIF rotation applied.

    Raises :class:`ImageError` with a message naming the file for anything unreadable.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageError(f"no image file at {str(p)!r}; check the path")
    if p.is_dir():
        raise ImageError(f"{str(p)!r} is a directory, not an image file")
    if p.stat().st_size == 0:
        raise ImageError(f"the image file {str(p)!r} is empty (0 bytes)")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _read_tiff(p)
    return _read_pillow(p)


def _read_tiff(p: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            page = tif.pages[0]
            series = tif.series[0] if tif.series else None
            if series is not None and len(series.shape) > len(page.shape):
                # a stack (z, t, ...): reading only the first page would silently stylise one slice
                raise ImageError(
                    f"{str(p)!r} is a stack of shape {tuple(series.shape)}, not one 2-D image; save the "
                    "slice you want as its own file (in napari: select it and File > Save Selected Layers)"
                )
            if int(np.prod(page.shape[:2])) > MAX_PIXELS:
                raise ImageError(
                    f"{str(p)!r} is {page.shape[0]}x{page.shape[1]} px, more than the {MAX_PIXELS} "
                    "pixels napari-nst reads; downscale or crop it first"
                )
            arr = page.asarray()
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"cannot read {str(p)!r} as a TIFF image (truncated or corrupt?): {exc}") from None
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) -> (H, W, C)
    return np.asarray(arr)


def _read_pillow(p: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with Image.open(p) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(
                    f"{str(p)!r} is {im.height}x{im.width} px, more than the {MAX_PIXELS} "
                    "pixels napari-nst reads; downscale or crop it first"
                )
            im = ImageOps.exif_transpose(im)  # honour the camera's rotation
            if im.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(im, dtype=np.uint16)
            if im.mode in ("I", "F"):
                return np.asarray(im)
            if im.mode not in ("L", "LA", "RGB", "RGBA"):
                # palette, CMYK, YCbCr, 1-bit ...: convert to what the engine reads
                im = im.convert("RGBA" if "transparency" in im.info or im.mode in ("PA", "RGBa") else "RGB")
            out: np.ndarray = np.asarray(im).copy()
            return out
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own check, on the header, before decoding
        raise ImageError(
            f"{str(p)!r} is too large to read safely: {exc} Downscale or crop it first "
            "(the engine works at a few thousand pixels at most)"
        ) from None
    except Exception as exc:  # UnidentifiedImageError, truncated files ...
        raise ImageError(f"cannot read {str(p)!r} as an image (not an image, truncated or corrupt?): {exc}") from None


def output_format(path: str | os.PathLike[str]) -> str:
    """The format ``write_image`` will use for ``path`` ("TIFF", "PNG", ...); checks before any work.

    Raises :class:`ImageError` if the extension is not one we can write or the folder is missing.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise ImageError(f"the output {str(p)!r} is a directory; give a file name such as {str(p / 'out.png')!r}")
    if not p.parent.exists():
        raise ImageError(f"the output folder {str(p.parent)!r} does not exist; create it first")
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return "TIFF"
    from PIL import Image

    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ImageError(
            f"cannot write {suffix or 'files without an extension'!s} ({str(p)!r}); use .png, .jpg or .tif"
        )
    return fmt


def write_image(path: str | os.PathLike[str], image: np.ndarray, quick: bool = False) -> None:
    """Save a float (H, W, 3) image in [0, 1]; 8-bit for PNG/JPEG, 16-bit for TIFF.

    Written to a temporary file first and renamed, so an interrupted save never leaves half a file.
    ``quick``: a PNG with the fastest compression, for saves during a run or on the way out (a
    2048x1536 px photo: about 1 s instead of 5 s on a busy 2-core CPU, a file 10 % larger).
    """
    p = Path(path).expanduser()
    fmt = output_format(p)
    tmp = p.with_name(f".{p.name}.part")
    try:
        if fmt == "TIFF":
            import tifffile

            tifffile.imwrite(tmp, (np.clip(image, 0, 1) * 65535 + 0.5).astype(np.uint16), photometric="rgb")
        else:
            from PIL import Image

            extra = {"compress_level": 1} if quick and fmt == "PNG" else {}
            Image.fromarray(to_uint8(image)).save(tmp, format=fmt, **extra)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------- stacks

#: image files a folder stack may hold
