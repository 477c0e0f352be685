"""Video files as stacks: read frame by frame, written frame by frame (the optional extra
``napari-nst[video]``: PyAV, ``av``; numpy + av, no torch).

Why PyAV: it decodes and encodes in this process through FFmpeg's libraries, which its wheels
bundle (with libx264 for H.264 MP4 files every player opens); a file it cannot read raises an
exception that says why. OpenCV's ``VideoCapture`` (already a dependency of the ``stack`` extra)
answers an unreadable file with an empty capture and no reason, and its wheels cannot write H.264;
imageio-ffmpeg drives an ``ffmpeg`` executable through pipes (errors parsed from its output).

A video pastiche is written in two stages (:class:`VideoWriter`): each finished frame goes at
once, atomically, to a PNG file in the folder ``OUT.frames`` beside ``OUT``; the video is encoded
from those files when the run ends (finished, stopped with Ctrl-C, or failed: a video of the
frames made), through ``.OUT.part`` renamed to ``OUT``. A crash (killed, power cut) keeps every
finished frame as a PNG. After a complete run the PNG folder is removed.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from napari_nst.core.errors import ImageError
from napari_nst.core.image.files import write_image

#: file names read and written as videos
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm")
#: the encoder for each container (the first one PyAV has), pixel format yuv420p (every player)
CODECS = {
    ".mp4": ("libx264", "h264", "mpeg4"),
    ".m4v": ("libx264", "h264", "mpeg4"),
    ".mov": ("libx264", "h264", "mpeg4"),
    ".mkv": ("libx264", "h264", "mpeg4"),
    ".avi": ("mpeg4",),
    ".webm": ("libvpx-vp9", "libvpx"),
}
#: frames per second of a video made from a TIFF or a folder (no rate of its own)
DEFAULT_FPS = 25.0
INSTALL = "pip install 'napari-nst[video]'"


def is_video(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES and not Path(path).is_dir()


def _av(what: str) -> Any:
    try:
        import av
    except ImportError:
        raise ImageError(f"{what} needs PyAV, the optional video extra: {INSTALL}") from None
    return av


class VideoFrames:
    """A video file's frames as uint8 RGB (H, W, 3), read one at a time (``len``, ``[i]``,
    ``shapes``, ``names``, ``fps``). Reading frame after frame decodes each once; going back
    starts decoding again from the beginning. Opening decodes the whole file once to count its
    frames, so a file that cannot be decoded fails here, before any work (ImageError)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise ImageError(f"no video at {str(self.path)!r}; check the path")
        av = _av(f"reading the video {str(self.path)!r}")
        try:
            with av.open(str(self.path)) as box:
                if not box.streams.video:
                    raise ImageError(f"{str(self.path)!r} holds no video stream (audio only?); give a video file")
                stream = box.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                n, shape = 0, None
                for frame in box.decode(stream):
                    shape = shape or (int(frame.height), int(frame.width))
                    n += 1
        except ImageError:
            raise
        except Exception as exc:  # av.error.InvalidDataError, FileNotFoundError in FFmpeg's words ...
            raise ImageError(
                f"cannot read {str(self.path)!r} as a video (not a video, truncated, or a codec this "
                f"PyAV build lacks): {exc}"
            ) from None
        if n == 0 or shape is None:
            raise ImageError(f"the video {str(self.path)!r} has no frames")
        self.fps = float(rate) if rate else DEFAULT_FPS
        self.shapes = [shape] * n
        self.names = [f"frame-{i:05d}" for i in range(n)]
        self._box: Any = None
        self._frames: Any = None
        self._next = 0
        self._last: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} of a video of {len(self)} frames")
        if self._last is not None and self._last[0] == i:
            return self._last[1]
        if self._frames is None or i < self._next:
            self._open()
        while True:
            frame = next(self._frames, None)
            if frame is None:
                raise ImageError(f"the video {str(self.path)!r} ended before frame {i} (it changed on disk?)")
            self._next += 1
            if self._next - 1 == i:
                arr = np.asarray(frame.to_ndarray(format="rgb24"))
                self._last = (i, arr)
                return arr

    def _open(self) -> None:
        self.close()
        av = _av(f"reading the video {str(self.path)!r}")
        self._box = av.open(str(self.path))
        self._frames = iter(self._box.decode(self._box.streams.video[0]))
        self._next = 0

    def close(self) -> None:
        if self._box is not None:
            self._box.close()
        self._box = self._frames = None

    def __getstate__(self) -> dict[str, Any]:  # to another process: without the open decoder
        return {**self.__dict__, "_box": None, "_frames": None, "_next": 0, "_last": None}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _codec(av: Any, suffix: str) -> str:
    for name in CODECS[suffix]:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    raise ImageError(f"this PyAV build cannot write {suffix} videos ({', '.join(CODECS[suffix])}); try .mp4 or .avi")


class VideoWriter:
    """Writes a stack's pastiches as a video ``out`` (the module docstring says how a stop or a
    crash keeps every finished frame). Same interface as :class:`napari_nst.core.image.stacks.StackWriter`."""

    def __init__(self, out: str | os.PathLike[str], fps: float | None = None, frames: int | None = None) -> None:
        self.out = Path(out).expanduser()
        self.suffix = self.out.suffix.lower()
        if self.suffix not in VIDEO_SUFFIXES:
            raise ImageError(f"{str(self.out)!r} is not a video name ({', '.join(VIDEO_SUFFIXES)})")
        if self.out.is_dir():
            raise ImageError(f"the output {str(self.out)!r} is a folder; give a video file name")
        if not self.out.parent.exists():
            raise ImageError(f"the output folder {str(self.out.parent)!r} does not exist; create it first")
        if fps is not None and not (np.isfinite(fps) and fps > 0):
            raise ImageError(f"the frame rate must be a positive number of frames per second, got {fps}")
        self.codec = _codec(_av(f"writing the video {str(self.out)!r}"), self.suffix)
        self.fps = float(fps or DEFAULT_FPS)
        self.frames = frames  #: the stack's length: the PNG folder is removed once all are in the video
        self.folder = self.out.with_name(self.out.name + ".frames")
        self.part = self.out.with_name(f".{self.out.name}.part")
        self.written = 0

    def check_inputs(self, *inputs: str | os.PathLike[str]) -> None:
        """Refuse to overwrite an input (the video or the PNG folder)."""
        for given in inputs:
            g = Path(given).expanduser()
            for ours in (self.out, self.folder):
                if g.exists() and ours.exists() and g.resolve() == ours.resolve():
                    raise ImageError(f"the output {str(ours)!r} is one of the inputs; choose another name")

    def write(self, index: int, image: np.ndarray) -> Path:
        """Frame ``index``'s pastiche (float (h, w, 3) in [0, 1]) to ``OUT.frames/frame-NNNNN.png``."""
        if self.written == 0 and self.folder.exists():
            for old in self.folder.glob("frame-*.png"):  # a previous run's frames: this run's replace them
                old.unlink()
        self.folder.mkdir(exist_ok=True)
        path = self.folder / f"frame-{index:05d}.png"
        write_image(path, image)
        self.written += 1
        return path

    def close(self) -> None:
        """Encode the finished frames into ``OUT`` (nothing when none was written); after a
        complete stack the PNG folder goes."""
        if not self.written:
            return
        files = sorted(self.folder.glob("frame-*.png"))
        try:
            encode(files, self.part, self.codec, self.fps, self.suffix)
            os.replace(self.part, self.out)
        finally:
            if self.part.exists():
                self.part.unlink()
        if self.frames is not None and len(files) == self.frames:
            shutil.rmtree(self.folder)

    @property
    def kept(self) -> str:
        """Where the finished frames are, in words (after :meth:`close`)."""
        if self.folder.exists():
            return f"{self.out} and, as PNG files, {self.folder}"
        return str(self.out)


def encode(files: list[Path], out: Path, codec: str, fps: float, suffix: str) -> None:
    """The PNG ``files`` as a video ``out`` (yuv420p; an odd width or height loses its last
    column or row: the encoders need even sizes)."""
    from PIL import Image

    av = _av(f"writing the video {str(out)!r}")
    fmt = {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov"}.get(suffix, "mp4")
    with av.open(str(out), mode="w", format=fmt) as box:
        stream = box.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.pix_fmt = "yuv420p"
        if codec in ("libx264", "h264"):
            stream.options = {"crf": "18"}  # visually lossless
        for k, path in enumerate(files):
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
            if k == 0:
                stream.height, stream.width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
            rgb = np.ascontiguousarray(rgb[: stream.height, : stream.width])
            box.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        box.mux(stream.encode())
