"""napari-nst stylize-stack: multi-page TIFF and folders in and out, bad input, Ctrl-C."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_nst.cli import main
from napari_nst.core.records import Progress


@pytest.fixture
def stack(content) -> np.ndarray:
    return np.stack([np.roll(content, 2 * t, axis=1) for t in range(3)])


@pytest.fixture
def style_file(tmp_path, style):
    p = tmp_path / "style.png"
    Image.fromarray(style).save(p)
    return p


def _args(fast):
    return [
        "--size",
        str(fast["size"]),
        "--steps",
        str(fast["steps"]),
        "--weights",
        fast["weights"],
        "--device",
        "cpu",
        "--quiet",
    ]


def test_multipage_tiff_in_and_out(tmp_path, stack, style_file, fast):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, stack, photometric="rgb")
    before = src.read_bytes()
    out = tmp_path / "out.tif"
    assert main(["stylize-stack", str(src), str(style_file), "-o", str(out), "--frame-steps", "2", *_args(fast)]) == 0
    arr = tifffile.imread(out)
    assert arr.shape == (3, 23, 32, 3) and arr.dtype == np.uint16
    assert not list(tmp_path.glob(".*.part")) and src.read_bytes() == before


def test_folder_in_and_out_keeps_names_and_numeric_order(tmp_path, stack, style_file, fast):
    src = tmp_path / "frames"
    src.mkdir()
    for t, name in zip(range(3), ["t9", "t10", "t11"], strict=True):  # 9 < 10 by number, not by text
        Image.fromarray(stack[t]).save(src / f"{name}.png")
    out = tmp_path / "styled"
    assert main(["stylize-stack", str(src), str(style_file), "-o", str(out), *_args(fast)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["t10.png", "t11.png", "t9.png"]
    assert np.asarray(Image.open(out / "t9.png")).shape == (23, 32, 3)


@pytest.mark.parametrize(
    "case, match",
    [
        ("sizes", "frame 1 is 40x50 px"),
        ("two_d", "not a stack of 2-D images"),
        ("negative", "--temporal-weight must be"),
        ("video", "as a video"),
        ("not_a_stack", "is not a TIFF"),
    ],
)
def test_bad_input_is_an_error_and_nothing_is_written(case, match, tmp_path, stack, style_file, fast, capsys):
    src = tmp_path / "in"
    extra = []
    if case == "sizes":
        src.mkdir()
        Image.fromarray(stack[0]).save(src / "f1.png")
        Image.fromarray(stack[1][:, :50]).save(src / "f2.png")
    elif case == "two_d":
        src = tmp_path / "one.tif"
        tifffile.imwrite(src, stack[0, ..., 0])
    elif case == "video":
        pytest.importorskip("av")  # without it: test_stack_video.py's error naming the extra
        src = tmp_path / "clip.mp4"
        src.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    elif case == "not_a_stack":
        src = tmp_path / "notes.txt"
        src.write_text("not an image\n")
    else:
        src = tmp_path / "in.tif"
        tifffile.imwrite(src, stack, photometric="rgb")
        extra = ["--temporal-weight", "-1"]
    out = tmp_path / "out.tif"
    assert main(["stylize-stack", str(src), str(style_file), "-o", str(out), *_args(fast), *extra]) == 1
    assert match in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


def test_ctrl_c_keeps_the_finished_frames(tmp_path, stack, style_file, monkeypatch):
    from napari_nst.core import api

    def fake(frames, style, axis=0, **options):
        for t in range(2):
            yield Progress(
                step=1,
                total=1,
                losses={},
                image=np.full((8, 10, 3), 0.5, np.float32),
                frame=t,
                frames=3,
                stack_step=t + 1,
                stack_total=3,
            )
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "iter_stylize_stack", fake)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, stack, photometric="rgb")
    out = tmp_path / "out.tif"
    assert main(["stylize-stack", str(src), str(style_file), "-o", str(out), "--quiet"]) == 130
    assert tifffile.imread(out).shape == (2, 8, 10, 3)


def test_the_bar_counts_the_stacks_evaluations(tmp_path, stack, style_file, monkeypatch, capsys):
    """stylize-stack shows stylize's bar: the whole stack's evaluations, the frame, the losses."""
    from napari_nst.core import api

    def fake(frames, style, axis=0, **options):
        for t in range(3):
            for step in (1, 2):
                yield Progress(
                    step=step,
                    total=2,
                    losses={"total": 1.5},
                    image=np.full((8, 10, 3), 0.5, np.float32) if step == 2 else None,
                    frame=t,
                    frames=3,
                    stack_step=2 * t + step,
                    stack_total=6,
                    elapsed=float(2 * t + step),
                )

    monkeypatch.setattr(api, "iter_stylize_stack", fake)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, stack, photometric="rgb")
    assert main(["stylize-stack", str(src), str(style_file), "-o", str(tmp_path / "out.tif")]) == 0
    err = capsys.readouterr().err
    assert "6/6 [6 s, 1 s/eval, frame 3/3, total=1.5]" in err and err.count("6/6") == 1
