"""``--mask FILE`` on the command line: an image file, nonzero = restyle (stylize-stack: a multi-page
TIFF, one mask per frame, or one image); bad masks fail with one line before any work."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_nst.cli import main
from napari_nst.core.image.masks import read_mask

H, W = 36, 48


@pytest.fixture
def photo(content) -> np.ndarray:
    return np.ascontiguousarray(content[:H, :W])


@pytest.fixture
def box() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[8:28, 12:36] = True
    return m


@pytest.fixture
def files(tmp_path, photo, style, box):
    cp, sp, mp = tmp_path / "content.png", tmp_path / "style.png", tmp_path / "mask.png"
    Image.fromarray(photo).save(cp)
    Image.fromarray(style).save(sp)
    Image.fromarray((box * 255).astype(np.uint8)).save(mp)
    return cp, sp, mp


def _args(fast, size=W):
    return ["--size", str(size), "--model", "vgg16", "--weights", fast["weights"], "--device", "cpu", "--quiet"]


def test_stylize_with_a_mask_file_keeps_the_rest_of_the_photo(files, tmp_path, fast, photo, box):
    cp, sp, mp = files
    out = tmp_path / "out.tif"  # 16-bit: an 8-bit value v comes back as v * 257 exactly
    before = mp.read_bytes()
    assert main(["stylize", str(cp), str(sp), "-o", str(out), "--steps", "4", "--mask", str(mp), *_args(fast)]) == 0
    res = tifffile.imread(out).astype(np.int64)
    assert res.shape == (H, W, 3)
    assert np.array_equal(res[~box], photo[~box].astype(np.int64) * 257)
    assert np.abs(res[box] - photo[box].astype(np.int64) * 257).max() > 0.02 * 65535
    assert mp.read_bytes() == before


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda box: np.zeros((H, W), np.uint8), "mask has no nonzero pixel"),
        (lambda box: np.full((H + 2, W), 255, np.uint8), "mask has shape (38, 48)"),
    ],
    ids=["empty", "shape"],
)
def test_bad_mask_files_fail_with_one_line(files, tmp_path, fast, capsys, make, match, box):
    cp, sp, mp = files
    Image.fromarray(make(box)).save(mp)
    code = main(["stylize", str(cp), str(sp), "-o", str(tmp_path / "o.png"), "--mask", str(mp), *_args(fast)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("napari-nst: error:") and match in err and "\n" not in err
    assert not (tmp_path / "o.png").exists()


def test_the_output_may_not_be_the_mask(files, fast, capsys):
    cp, sp, mp = files
    before = mp.read_bytes()
    assert main(["stylize", str(cp), str(sp), "-o", str(mp), "--mask", str(mp), *_args(fast)]) != 0
    assert "one of the input" in capsys.readouterr().err and mp.read_bytes() == before


def test_stylize_stack_takes_a_mask_per_frame_or_one_for_all(tmp_path, photo, style, box, fast):
    frames = np.stack([np.roll(photo, 2 * t, axis=1) for t in range(3)])
    src, sp = tmp_path / "in.tif", tmp_path / "style.png"
    tifffile.imwrite(src, frames, photometric="rgb")
    Image.fromarray(style).save(sp)
    masks = np.stack([np.roll(box, 3 * t, axis=1) for t in range(3)]).astype(np.uint8) * 255
    per_frame, one = tmp_path / "masks.tif", tmp_path / "one.png"
    tifffile.imwrite(per_frame, masks)
    Image.fromarray(masks[0]).save(one)
    steps = ["--steps", "3", "--frame-steps", "2"]
    for mask, expect in ((per_frame, masks != 0), (one, np.stack([masks[0] != 0] * 3))):
        out = tmp_path / f"out-{mask.stem}.tif"
        assert (
            main(["stylize-stack", str(src), str(sp), "-o", str(out), "--mask", str(mask), *steps, *_args(fast)]) == 0
        )
        res = tifffile.imread(out).astype(np.int64)
        for t in range(3):
            assert np.array_equal(res[t][~expect[t]], frames[t][~expect[t]].astype(np.int64) * 257)


def test_a_stack_mask_of_the_wrong_length_fails_before_any_work(tmp_path, photo, style, box, fast, capsys):
    frames = np.stack([photo] * 3)
    src, sp, mp = tmp_path / "in.tif", tmp_path / "style.png", tmp_path / "m.tif"
    tifffile.imwrite(src, frames, photometric="rgb")
    Image.fromarray(style).save(sp)
    tifffile.imwrite(mp, np.stack([box, box]).astype(np.uint8))
    code = main(["stylize-stack", str(src), str(sp), "-o", str(tmp_path / "o.tif"), "--mask", str(mp), *_args(fast)])
    assert code != 0 and "mask has 2 masks" in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists()


def test_mask_files_nonzero_in_any_channel_where_opaque(tmp_path, box):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[box, 2] = 40  # blue only
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere, opaque only in the box
    rgba[box, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    labels = box.astype(np.uint16) * 3
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    for name in ("rgb.png", "rgba.png", "labels.tif"):
        got = read_mask(tmp_path / name)
        assert got.dtype == bool and np.array_equal(got, box), name
    tifffile.imwrite(tmp_path / "pages.tif", np.stack([box, ~box]).astype(np.uint8))
    assert read_mask(tmp_path / "pages.tif", stack=True).shape == (2, H, W)
    with pytest.raises(ValueError, match="not one 2-D image"):  # a stack where one image is wanted
        read_mask(tmp_path / "pages.tif")
