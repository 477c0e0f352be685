"""The command line, end to end (in-process and as the installed console script)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from napari_nst.cli import main


@pytest.fixture
def files(tmp_path, content, style):
    cp, sp = tmp_path / "content.png", tmp_path / "style.jpg"
    Image.fromarray(content).save(cp)
    Image.fromarray(style).save(sp)
    return cp, sp


def _args(fast):
    return ["--size", str(fast["size"]), "--model", "vgg16", "--weights", fast["weights"], "--device", "cpu"]


def test_stylize_writes_png_and_intermediates(files, tmp_path, fast, capsys):
    cp, sp = files
    out = tmp_path / "out.png"
    before = cp.read_bytes()
    code = main(["stylize", str(cp), str(sp), "-o", str(out), "--steps", "6", "--save-every", "2", *_args(fast)])
    assert code == 0
    img = np.asarray(Image.open(out))
    assert img.shape == (23, 32, 3) and img.dtype == np.uint8
    assert sorted(p.name for p in tmp_path.glob("out-*.png")) == ["out-00002.png", "out-00004.png"]
    assert cp.read_bytes() == before
    err = capsys.readouterr().err
    assert "6/6" in err  # the tqdm bar reached the end


def test_sixteen_bit_tiff_in_and_out(tmp_path, fast, style):
    import tifffile

    c16 = (np.random.default_rng(0).random((30, 40, 3)) * 65535).astype(np.uint16)
    cp, sp, out = tmp_path / "c.tif", tmp_path / "s.png", tmp_path / "o.tif"
    tifffile.imwrite(cp, c16)
    Image.fromarray(style).save(sp)
    assert main(["stylize", str(cp), str(sp), "-o", str(out), "--steps", "2", "--quiet", *_args(fast)]) == 0
    res = tifffile.imread(out)
    assert res.dtype == np.uint16 and res.shape == (24, 32, 3)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--steps", "0"], "steps must be between"),
        (["--style-layers", "relu1_1,bogus"], "valid names"),
        (["--size", "4"], "at least 16 px"),
        (["--weights", "/no/such/file.pth"], "no weights file"),
    ],
)
def test_bad_input_one_line_and_nonzero(files, tmp_path, fast, capsys, extra, match):
    cp, sp = files
    code = main(["stylize", str(cp), str(sp), "-o", str(tmp_path / "o.png"), *_args(fast), *extra])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("napari-nst: error:") and match in err and "\n" not in err
    assert not (tmp_path / "o.png").exists()


def test_missing_input_file(tmp_path, files, fast, capsys):
    _, sp = files
    assert main(["stylize", str(tmp_path / "nope.png"), str(sp), "-o", str(tmp_path / "o.png"), *_args(fast)]) == 1
    assert "no image file" in capsys.readouterr().err


def test_refuses_to_overwrite_an_input(files, fast, capsys):
    cp, sp = files
    before = cp.read_bytes()
    assert main(["stylize", str(cp), str(sp), "-o", str(cp), *_args(fast)]) == 1
    assert "one of the input images" in capsys.readouterr().err
    assert cp.read_bytes() == before


def test_console_script_installed(files, tmp_path, fast):
    exe = shutil.which("napari-nst")
    cmd = [exe] if exe else [sys.executable, "-m", "napari_nst.cli"]
    cp, sp = files
    out = tmp_path / "cli.png"
    res = subprocess.run(
        [*cmd, "stylize", str(cp), str(sp), "-o", str(out), "--steps", "2", *_args(fast)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert out.exists() and "saved" in res.stdout
    bad = subprocess.run([*cmd, "stylize", str(cp), str(sp)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "-o/--output" in bad.stderr


def test_demo_without_a_display_says_what_to_do(monkeypatch, capsys):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "no display" in err and "xvfb-run -a napari-nst demo" in err


def test_a_tiff_stack_is_refused_not_cut_to_its_first_page(tmp_path, files, fast, capsys):
    import tifffile

    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 32, 32), np.uint16))
    _, sp = files
    assert main(["stylize", str(stack), str(sp), "-o", str(tmp_path / "o.png"), *_args(fast)]) == 1
    assert "is a stack of shape (5, 32, 32)" in capsys.readouterr().err
