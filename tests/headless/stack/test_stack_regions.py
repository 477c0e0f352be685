"""Artistic controls per frame of a stack: ``regions`` an (N, H, W) label stack (a Labels layer of the
stack's dims; on the command line a multi-page TIFF), each frame painted by its own labels;
several styles; preserve_color with each frame's own colours."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

import napari_nst
from napari_nst.cli import main
from napari_nst.core.objective import controls as controls_mod


@pytest.fixture
def frames(content) -> np.ndarray:
    return np.stack([np.roll(content, 2 * t, axis=1) for t in range(3)])


@pytest.fixture
def labels() -> np.ndarray:
    """(3, 40, 56): label 1 on a band that moves down 8 px a frame, 0 elsewhere; frame 2 also has label 2."""
    out = np.zeros((3, 40, 56), np.int32)
    for t in range(3):
        out[t, 8 * t : 8 * t + 12] = 1
    out[2, :, :10] = 2
    return out


def _spy_regions(monkeypatch) -> list[np.ndarray]:
    """The label image each level's region targets were built from."""
    seen = []
    real = controls_mod.Controls._region_targets

    def spy(self, ctx, shape, grams, sizes, nm):
        seen.append(np.array(self.regions))
        return real(self, ctx, shape, grams, sizes, nm)

    monkeypatch.setattr(controls_mod.Controls, "_region_targets", spy)
    return seen


def test_each_frame_is_painted_by_its_own_labels(frames, labels, style, fast, monkeypatch):
    seen = _spy_regions(monkeypatch)
    before = labels.copy()
    out = napari_nst.stylize_stack(frames, [style, style[::-1]], regions=labels, region_styles={1: 1}, **fast)
    assert out.shape == (3, 23, 32, 3) and np.isfinite(out).all()
    assert len(seen) == 3
    for t in range(3):
        np.testing.assert_array_equal(seen[t], labels[t])
    np.testing.assert_array_equal(labels, before)  # the caller's labels untouched


def test_frame_zero_of_a_label_stack_is_the_single_image_run(frames, labels, style, fast):
    opts = dict(regions=labels, region_styles={1: None}, **fast)
    out = napari_nst.stylize_stack(frames, style, **opts)
    single = napari_nst.stylize(frames[0], style, **{**opts, "regions": labels[0]})
    np.testing.assert_allclose(out[0], single, atol=1e-6)


def test_one_label_image_paints_every_frame(frames, labels, style, fast, monkeypatch):
    seen = _spy_regions(monkeypatch)
    napari_nst.stylize_stack(frames, style, regions=labels[1], region_styles={1: None}, **fast)
    assert len(seen) == 3 and all(np.array_equal(s, labels[1]) for s in seen)


def test_style_grams_of_several_styles_are_computed_once_per_stack(frames, labels, style, fast, monkeypatch):
    calls = []
    real = controls_mod.Controls._style_grams

    def spy(self, ctx, shape, needed):
        calls.append(self.grams_memo is not None and any(key[0] == shape for key in self.grams_memo))
        return real(self, ctx, shape, needed)

    monkeypatch.setattr(controls_mod.Controls, "_style_grams", spy)
    napari_nst.stylize_stack(frames, [style, style[::-1]], regions=labels, **fast)
    assert calls == [False, True, True]


@pytest.mark.parametrize(
    "regions, region_styles, match",
    [
        (np.zeros((2, 40, 56), int), None, "2 label images .* the stack has 3 frames"),
        (np.zeros((3, 40, 50), int), None, "regions has shape"),
        (np.zeros((3, 40, 56)), None, "integer label image"),
        ("frame2_none", {2: None}, "frame 2: .*no pixel gets a style"),
    ],
)
def test_bad_label_stacks_are_value_errors_at_the_call(frames, labels, style, fast, regions, region_styles, match):
    if isinstance(regions, str):
        regions = labels.copy()
        regions[2] = 2  # frame 2 holds only label 2, which gets no style
    with pytest.raises(ValueError, match=match):
        napari_nst.iter_stylize_stack(frames, style, regions=regions, region_styles=region_styles, **fast)


def test_label_stack_in_a_child_process(frames, labels, style, fast):
    """The widget's way (StackEngineProcess): the label stack travels to the engine process."""
    from napari_nst.core.process.client import StackEngineProcess

    opts = dict(regions=labels, region_styles={1: 1}, **fast)
    finals = [r for r in StackEngineProcess(frames, [style, style[::-1]], **opts) if r.step == r.total]
    out = napari_nst.stylize_stack(frames, [style, style[::-1]], **opts)
    assert [r.frame for r in finals] == [0, 1, 2]
    np.testing.assert_allclose(finals[-1].image, out[2], atol=1e-5)


def test_cli_takes_a_multipage_tiff_of_labels(tmp_path, frames, labels, style, fast, monkeypatch, capsys):

    src, lab, sty = tmp_path / "in.tif", tmp_path / "labels.tif", tmp_path / "style.png"
    tifffile.imwrite(src, frames, photometric="rgb")
    tifffile.imwrite(lab, labels)
    Image.fromarray(style).save(sty)
    seen = _spy_regions(monkeypatch)
    out = tmp_path / "out.tif"
    args = ["--size", "32", "--steps", "4", "--weights", fast["weights"], "--device", "cpu", "--quiet"]
    cmd = ["stylize-stack", str(src), str(sty), "-o", str(out), "--regions", str(lab), "--region-styles", "1:none"]
    assert main([*cmd, *args]) == 0
    assert tifffile.imread(out).shape == (3, 23, 32, 3)
    assert len(seen) == 3 and all(np.array_equal(s, labels[t]) for t, s in enumerate(seen))
    tifffile.imwrite(lab, labels[:2])  # one page short
    out.unlink()
    assert main([*cmd, *args]) == 1
    assert "2 label images" in capsys.readouterr().err and not out.exists()


def test_cli_passes_several_styles_to_the_stack(tmp_path, frames, style, monkeypatch):
    from napari_nst.core import api

    got = {}

    def fake(frames, style, axis=0, **options):
        got.update(style=style, options=options)
        return iter(())

    monkeypatch.setattr(api, "iter_stylize_stack", fake)
    src, s1, s2 = tmp_path / "in.tif", tmp_path / "a.png", tmp_path / "b.png"
    tifffile.imwrite(src, frames, photometric="rgb")
    Image.fromarray(style).save(s1)
    Image.fromarray(style[::-1]).save(s2)
    cmd = ["stylize-stack", str(src), str(s1), str(s2), "-o", str(tmp_path / "out"), "--style-blend", "1,3"]
    assert main([*cmd, "--quiet"]) == 0
    assert got["style"] == [str(s1), str(s2)] and got["options"]["style_blend"] == (1.0, 3.0)


def test_preserve_luminance_keeps_each_frames_own_colours(frames, style, fast):
    from napari_nst.core.image.arrays import to_rgb_float
    from napari_nst.core.objective.colour import yuv
    from napari_nst.core.stack import engine as stack_mod

    out = napari_nst.stylize_stack(frames, style, preserve_color="luminance", **fast)

    def chroma_change(t, c):  # the pastiche minus a content: no chroma where nothing was clipped
        content = stack_mod._at(to_rgb_float(frames[c]), out.shape[1:3])
        inside = ((out[t] > 0.01) & (out[t] < 0.99)).all(-1) & ((content > 0.01) & (content < 0.99)).all(-1)
        return np.abs(yuv(out[t] - content)[..., 1:])[inside].max()

    for t in range(3):
        assert chroma_change(t, t) < 1e-4, t
    assert chroma_change(2, 0) > 1e-2  # frame 0's colours would not do for frame 2


def test_paint_carried_from_another_region_starts_afresh():
    """A region moving across still content: where the label the paint came from is not the pixel's
    label now, the frame starts from its content and the temporal term is off (no trail of the
    region's style); elsewhere the previous pastiche is carried and held."""
    from napari_nst.core.stack.flow import carry

    rng = np.random.default_rng(0)
    content = rng.random((48, 64, 3), dtype=np.float32)  # the same content in both frames: no motion
    pastiche = rng.random((48, 64, 3), dtype=np.float32)
    before, now = np.zeros((48, 64), np.int32), np.zeros((48, 64), np.int32)
    before[:, 10:20] = 1
    now[:, 30:40] = 1  # the region jumped 20 px to the right
    start, mask = carry(pastiche, content, content, labels=(before, now))
    moved = before != now
    assert np.allclose(start[moved], content[moved]) and not mask[moved].any()
    kept = ~moved
    assert np.abs(start[kept] - pastiche[kept]).max() < 0.02 and mask[kept].mean() > 0.9
    plain_start, plain_mask = carry(pastiche, content, content)  # without labels: Ruder's mask alone
    assert plain_mask[moved].mean() > 0.9 and np.abs(plain_start[moved] - pastiche[moved]).max() < 0.02
