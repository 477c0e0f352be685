"""Videos as stacks (the ``video`` extra, PyAV): read frame by frame, the API taking a path,
``stylize-stack IN.mp4 STYLE -o OUT.mp4``, a stop keeping every finished frame, bad input."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import IMAGES, needs_shared
from PIL import Image

import napari_nst
from napari_nst.cli import main
from napari_nst.core.errors import ImageError
from napari_nst.core.records import Progress

SHARED = IMAGES / "tubingen.jpg"
N, H, W = 5, 48, 64


def crops() -> np.ndarray:
    """N crops of the shared Tübingen photo, each 3 px right and 1 px down from the one before."""
    needs_shared(SHARED)
    img = np.asarray(Image.open(SHARED).convert("RGB").reduce(4))  # 192x256, box filtered
    return np.stack([img[60 + t : 60 + t + H, 80 + 3 * t : 80 + 3 * t + W] for t in range(N)])


def write_video(path: Path, frames: np.ndarray, fps: int = 12) -> None:
    """A small H.264 video written with PyAV directly (not with the code under test)."""
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as box:
        stream = box.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        stream.options = {"crf": "8"}  # nearly lossless: the frames read back are the crops
        for f in frames:
            box.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        box.mux(stream.encode())


def read_video(path: Path) -> tuple[np.ndarray, float]:
    av = pytest.importorskip("av")
    with av.open(str(path)) as box:
        s = box.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in box.decode(s)]
        return np.stack(frames), float(s.average_rate)


@pytest.fixture
def video(tmp_path) -> Path:
    p = tmp_path / "clip.mp4"
    write_video(p, crops())
    return p


@pytest.fixture
def style_file(tmp_path, style) -> Path:
    p = tmp_path / "style.png"
    Image.fromarray(style).save(p)
    return p


def _args(fast):
    return ["--size", str(fast["size"]), "--steps", str(fast["steps"]), "--weights", fast["weights"], "--device", "cpu"]


def test_video_frames_read_in_order_and_back(video):
    from napari_nst.core.image.stacks import read_stack

    frames = read_stack(video)
    truth = crops().astype(float)
    assert len(frames) == N and frames.shapes == [(H, W)] * N and frames.fps == pytest.approx(12)
    errors = [np.abs(frames[t] - truth[t]).mean() for t in (0, 1, 4)]
    assert max(errors) < 5  # yuv420p's half-resolution colour, crf 8: a few levels of 255
    assert np.abs(frames[1] - truth[2]).mean() > 2 * max(errors)  # each index is its own frame
    again = frames[0]  # going back decodes from the start
    assert again.dtype == np.uint8 and np.abs(again - truth[0]).mean() == pytest.approx(errors[0])


def test_api_takes_a_video_path(video, style, fast):
    before = video.read_bytes()
    out = napari_nst.stylize_stack(str(video), style, **fast)
    assert out.shape == (N, 24, 32, 3) and out.dtype == np.float32 and np.isfinite(out).all()
    assert video.read_bytes() == before


def test_cli_video_in_video_out(tmp_path, video, style_file, fast):
    out = tmp_path / "styled.mp4"
    assert main(["stylize-stack", str(video), str(style_file), "-o", str(out), "--quiet", *_args(fast)]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (N, 24, 32, 3) and fps == pytest.approx(12)  # the input's rate
    assert not (tmp_path / "styled.mp4.frames").exists() and not list(tmp_path.glob(".*.part"))


def test_cli_tiff_to_video_at_a_given_rate(tmp_path, style_file, fast):
    import tifffile

    src = tmp_path / "in.tif"
    tifffile.imwrite(src, crops()[:3], photometric="rgb")
    out = tmp_path / "out.mkv"
    args = ["stylize-stack", str(src), str(style_file), "-o", str(out), "--fps", "7.5", "--quiet", *_args(fast)]
    assert main(args) == 0
    frames, fps = read_video(out)
    assert frames.shape == (3, 24, 32, 3) and fps == pytest.approx(7.5)


@pytest.mark.parametrize("how", ["ctrl_c", "error"])
def test_a_stop_keeps_every_finished_frame_as_video_and_png(how, tmp_path, video, style_file, monkeypatch, capsys):
    from napari_nst.core import api

    def fake(frames, style, axis=0, **options):
        for t in range(2):
            image = np.full((8, 10, 3), 0.25 + 0.5 * t, np.float32)
            yield Progress(step=1, total=1, losses={}, image=image, frame=t, frames=N, stack_step=t + 1, stack_total=N)
        raise KeyboardInterrupt if how == "ctrl_c" else RuntimeError("the engine crashed")

    monkeypatch.setattr(api, "iter_stylize_stack", fake)
    out = tmp_path / "out.mp4"
    assert main(["stylize-stack", str(video), str(style_file), "-o", str(out), "--quiet"]) == (
        130 if how == "ctrl_c" else 1
    )
    frames, _ = read_video(out)
    assert frames.shape == (2, 8, 10, 3)
    assert abs(frames[1].mean() - 0.75 * 255) < 3 and abs(frames[0].mean() - 0.25 * 255) < 3
    pngs = sorted((tmp_path / "out.mp4.frames").iterdir())
    assert [p.name for p in pngs] == ["frame-00000.png", "frame-00001.png"]
    if how == "ctrl_c":
        assert "out.mp4.frames" in capsys.readouterr().err


def test_a_crash_before_the_end_leaves_the_finished_frames_as_png(tmp_path):
    pytest.importorskip("av")
    from napari_nst.core.image.stacks import stack_writer

    writer = stack_writer(tmp_path / "out.mp4", fps=10)
    writer.write(0, np.full((8, 10, 3), 0.5, np.float32))
    # killed here: close() never runs
    assert (tmp_path / "out.mp4.frames" / "frame-00000.png").exists() and not (tmp_path / "out.mp4").exists()


def test_without_pyav_a_clear_error_naming_the_extra(tmp_path, video, style_file, style, fast, monkeypatch, capsys):
    import tifffile

    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    with pytest.raises(ImageError, match=r"pip install 'napari-nst\[video\]'"):
        napari_nst.stylize_stack(video, style, **fast)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, crops()[:2], photometric="rgb")
    out = tmp_path / "out.mp4"
    assert main(["stylize-stack", str(src), str(style_file), "-o", str(out), *_args(fast)]) == 1
    assert "pip install 'napari-nst[video]'" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.mp4.frames").exists()


@pytest.mark.parametrize(
    "content, match",
    [(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "cannot read"), (b"just some text\n" * 20, "cannot read")],
)
def test_a_video_the_reader_cannot_open_is_a_value_error(content, match, tmp_path, style, style_file, fast, capsys):
    pytest.importorskip("av")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        napari_nst.iter_stylize_stack(bad, style, **fast)
    out = tmp_path / "out.mp4"
    assert main(["stylize-stack", str(bad), str(style_file), "-o", str(out), *_args(fast)]) == 1
    assert match in capsys.readouterr().err and not out.exists()
