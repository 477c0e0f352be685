"""The public API: import cost, stylize(), paths, inputs untouched."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import napari_nst


def test_import_pulls_no_qt_napari_or_torch():
    code = (
        "import sys, napari_nst, napari_nst.core, napari_nst.core.process.client, napari_nst.cli\n"
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'torch', 'magicgui')"
        " if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_engine_imports_no_qt_or_napari():
    code = (
        "import sys, napari_nst.core.optim.engine, napari_nst.core.encoder.vgg\n"
        "print([m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'magicgui') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "c_dtype, c_shape",
    [(np.uint8, (30, 40)), (np.uint16, (30, 40, 3)), (np.float32, (30, 40, 4)), (np.int32, (30, 40))],
)
def test_stylize_returns_float_rgb_for_any_input(c_dtype, c_shape, style, fast):
    rng = np.random.default_rng(1)
    c = (rng.random(c_shape) * 1000).astype(c_dtype) if c_dtype != np.float32 else rng.random(c_shape, np.float32)
    before = c.copy()
    out = napari_nst.stylize(c, style, **{**fast, "steps": 2})
    assert out.dtype == np.float32 and out.shape == (24, 32, 3)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(c, before)


def test_paths_are_accepted(tmp_path, content, style, fast):
    from PIL import Image

    cp, sp = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(content).save(cp)
    Image.fromarray(style).save(sp)
    out = napari_nst.stylize(str(cp), sp, **{**fast, "steps": 2})
    assert out.shape == (23, 32, 3)


def test_errors_come_before_any_work(content, fast):
    with pytest.raises(ValueError, match="style image"):
        napari_nst.iter_stylize(content, np.zeros((0, 3)), **fast)  # raised at the call, not at next()


def test_readme_example_with_the_shared_vgg16_file_and_no_model(hed_weights, content, style, monkeypatch, caplog):
    """The first run a user tries: weights from the environment, model not given. The file holds
    VGG16 (13 convolutions), so it is loaded as VGG16 instead of failing as 'not vgg19'."""
    import logging

    monkeypatch.setenv("NAPARI_NST_WEIGHTS", str(hed_weights))
    with caplog.at_level(logging.INFO, logger="napari_nst"):
        out = napari_nst.stylize(content, style, size=32, steps=1, device="cpu")
    assert out.shape == (23, 32, 3)
    assert "model: vgg16, detected from the weights file" in caplog.text
    with pytest.raises(ValueError, match="pass model='vgg16'"):  # an explicit model is still obeyed
        napari_nst.stylize(content, style, size=32, steps=1, device="cpu", model="vgg19")
