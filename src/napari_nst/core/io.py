"""Reading and writing image files (PNG, JPEG, TIFF incl. 16-bit, ...). numpy + Pillow + tifffile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError
from .images import to_uint8

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
STACK_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


class FolderFrames:
    """The numbered images of a folder as frames, read one at a time (``len``, ``[i]``, ``shapes``
    read from the files' headers, ``names``), in the order of the number in their names."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        import re

        d = Path(folder).expanduser()
        files = [
            p for p in d.iterdir() if p.is_file() and p.suffix.lower() in STACK_SUFFIXES and not p.name.startswith(".")
        ]
        if not files:
            raise ImageError(f"the folder {str(d)!r} holds no images ({', '.join(STACK_SUFFIXES)})")
        numbered = [p for p in files if re.search(r"\d+", p.stem)]
        if len(numbered) != len(files):
            odd = next(p.name for p in files if p not in numbered)
            raise ImageError(
                f"{odd!r} in {str(d)!r} has no frame number in its name; name frames like "
                "frame-001.png, frame-002.png ... or move other images out"
            )

        def key(p: Path) -> tuple[int, str]:
            return int(re.findall(r"\d+", p.stem)[-1]), p.name

        self.paths = sorted(numbered, key=key)
        self.names = [p.stem for p in self.paths]
        self.shapes = [_header_shape(p) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return read_image(self.paths[i])


def _header_shape(p: Path) -> tuple[int, int]:
    """(H, W) from the file's header (no decoding), EXIF rotation applied."""
    from PIL import Image

    try:
        with Image.open(p) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
                w, h = h, w
            return h, w
    except Exception as exc:
        raise ImageError(f"cannot read {str(p)!r} as an image (not an image, truncated or corrupt?): {exc}") from None


def read_stack(path: str | os.PathLike[str]) -> Any:
    """A multi-page TIFF as an (N, H, W[, C]) array, a folder of numbered images as
    :class:`FolderFrames`, or a video file as :class:`~napari_nst.core.video.VideoFrames` (with
    the ``video`` extra). Raises :class:`ImageError` naming what to change."""
    from .video import VIDEO_SUFFIXES, VideoFrames, is_video

    p = Path(path).expanduser()
    if p.is_dir():
        return FolderFrames(p)
    if not p.exists():
        raise ImageError(f"no stack at {str(p)!r}; give a multi-page TIFF, a folder of numbered images or a video")
    if is_video(p):
        return VideoFrames(p)
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        raise ImageError(
            f"{str(p)!r} is not a TIFF; give a multi-page TIFF, a folder of numbered images or a video "
            f"({', '.join(VIDEO_SUFFIXES)})"
        )
    import tifffile

    try:
        arr = np.asarray(tifffile.imread(p))
    except Exception as exc:
        raise ImageError(f"cannot read {str(p)!r} as a TIFF stack (truncated or corrupt?): {exc}") from None
    if arr.ndim == 4 and arr.shape[1] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 1, -1)  # planar (N, C, H, W) -> (N, H, W, C)
    if arr.ndim not in (3, 4) or (arr.ndim == 3 and arr.shape[-1] in (3, 4)) or (arr.ndim == 4 and arr.shape[-1] > 4):
        raise ImageError(
            f"{str(p)!r} holds an array of shape {arr.shape}, not a stack of 2-D images (N, H, W) or "
            "(N, H, W, 3); for one image use napari-nst stylize; save 5-D data one axis at a time"
        )
    return arr


class StackWriter:
    """Writes a stack's pastiches frame by frame: to a multi-page 16-bit TIFF (``OUT.tif``; pages
    are appended to ``.OUT.tif.part``, a valid TIFF of the finished frames at every moment, renamed
    to ``OUT.tif`` by :meth:`close`) or, for any other ``OUT``, into the folder ``OUT`` as PNG files
    (each written atomically by :func:`write_image`)."""

    def __init__(self, out: str | os.PathLike[str], names: list[str] | None = None) -> None:
        self.out = Path(out).expanduser()
        self.tiff = self.out.suffix.lower() in (".tif", ".tiff")
        self.names = names
        self.written = 0
        if self.tiff:
            output_format(self.out)
            self.part = self.out.with_name(f".{self.out.name}.part")
        elif self.out.exists() and not self.out.is_dir():
            raise ImageError(f"the output {str(self.out)!r} is a file; give a .tif file or a folder name")
        elif not self.out.parent.exists():
            raise ImageError(f"the output folder {str(self.out.parent)!r} does not exist; create it first")

    def check_inputs(self, *inputs: str | os.PathLike[str]) -> None:
        """Refuse to overwrite an input."""
        for given in inputs:
            g = Path(given).expanduser()
            if g.exists() and self.out.exists() and g.resolve() == self.out.resolve():
                raise ImageError(f"the output {str(self.out)!r} is one of the inputs; choose another name")

    def write(self, index: int, image: np.ndarray) -> Path:
        """Frame ``index``'s pastiche (float (h, w, 3) in [0, 1]); frames come in order."""
        if self.tiff:
            import tifffile

            if self.written == 0 and self.part.exists():
                self.part.unlink()
            tifffile.imwrite(
                self.part,
                (np.clip(image, 0, 1) * 65535 + 0.5).astype(np.uint16),
                photometric="rgb",
                append=True,
                metadata=None,
            )  # plain pages: one series of N frames
            self.written += 1
            return self.part
        self.out.mkdir(exist_ok=True)
        name = self.names[index] if self.names else f"frame-{index:05d}"
        path = self.out / f"{name}.png"
        write_image(path, image)
        self.written += 1
        return path

    def close(self) -> None:
        """A TIFF's finished frames go to ``OUT.tif`` (nothing when no frame was written)."""
        if self.tiff and self.written:
            os.replace(self.part, self.out)


def stack_writer(
    out: str | os.PathLike[str], names: list[str] | None = None, fps: float | None = None, frames: int | None = None
) -> Any:
    """The writer for ``out``: a video (:class:`~napari_nst.core.video.VideoWriter`, ``fps`` frames
    a second, ``frames`` in all) for a video name, else a :class:`StackWriter` (TIFF or folder)."""
    from .video import VideoWriter, is_video

    if is_video(out):
        return VideoWriter(out, fps=fps, frames=frames)
    return StackWriter(out, names)


def read_stack_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Labels for a stack: a multi-page TIFF as an integer (N, H, W) array, one label image per
    frame (a napari Labels layer of the stack's dims saved as TIFF), or one label image file as
    (H, W) for every frame. Raises :class:`ImageError` naming what to change."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ImageError(
            f"no label file at {str(p)!r}; check the path (a multi-page TIFF of labels, or one label image)"
        )
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        import tifffile

        try:
            arr = np.asarray(tifffile.imread(p))
        except Exception as exc:
            raise ImageError(f"cannot read {str(p)!r} as a TIFF of labels (truncated or corrupt?): {exc}") from None
    else:
        arr = read_image(p)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and all(np.array_equal(arr[..., 0], arr[..., k]) for k in (1, 2)):
            arr = arr[..., 0]  # a gray label image saved as RGB(A)
    if (
        arr.ndim not in (2, 3)
        or arr.dtype.kind not in "iuf"
        or (arr.dtype.kind == "f" and not np.all(arr == np.round(arr)))
    ):
        raise ImageError(
            f"the labels {str(p)!r} hold an array of shape {arr.shape} ({arr.dtype}); give integer labels: a "
            "multi-page TIFF (N, H, W), one page per frame, or one label image (H, W) for every frame"
        )
    return arr.astype(np.int64) if arr.dtype.kind == "f" else arr
