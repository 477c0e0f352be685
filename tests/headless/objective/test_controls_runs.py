"""Artistic controls in real runs with the trained VGG16 convolutions at small sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import IMAGES, needs_shared

import napari_nst
from napari_nst.core.image.files import read_image
from napari_nst.core.objective.colour import yuv
from napari_nst.core.objective.weights import strength_factor


@pytest.fixture(scope="module")
def pictures():
    needs_shared(IMAGES / "tubingen.jpg")
    return [read_image(IMAGES / n) for n in ("tubingen.jpg", "starry_night.jpg", "the_scream.jpg")]


@pytest.fixture
def opts(hed_weights):
    return dict(weights=str(hed_weights), device="cpu", seed=0, progress=False)


def _halves(h: int, w: int) -> np.ndarray:
    labels = np.zeros((h, w), np.int32)
    labels[:, w // 2 :] = 1
    return labels


def test_two_copies_of_a_style_are_that_style(pictures, opts):
    c, s, _ = pictures
    one = napari_nst.stylize(c, s, size=64, steps=4, **opts)
    two = napari_nst.stylize(c, [s, s], size=64, steps=4, **opts)
    first = napari_nst.stylize(c, [s, pictures[2]], style_blend=[1, 0], size=64, steps=4, **opts)
    assert np.array_equal(one, two) and np.array_equal(one, first)


def test_a_region_without_style_stays_near_the_content(pictures, opts):
    c, s, _ = pictures
    labels = _halves(*c.shape[:2])
    out = napari_nst.stylize(c, s, regions=labels, region_styles={1: None}, size=96, steps=30, **opts)
    ref = napari_nst.core.image.tensors.to_numpy(
        napari_nst.core.image.tensors.resize(
            napari_nst.core.image.tensors.to_tensor(np.asarray(c, np.float32) / 255, torch.device("cpu")), out.shape[:2]
        )
    )
    w = out.shape[1]
    styled = np.abs(out[:, : w // 2 - 8] - ref[:, : w // 2 - 8]).mean()
    kept = np.abs(out[:, w // 2 + 8 :] - ref[:, w // 2 + 8 :]).mean()
    assert styled > 0.05 and kept < styled / 3, (styled, kept)


def _grams(img: np.ndarray, weights: str) -> dict[str, torch.Tensor]:
    from napari_nst.core.encoder.vgg import build_vgg
    from napari_nst.core.image.tensors import to_tensor
    from napari_nst.core.objective.losses import gram

    layers = ["relu1_1", "relu2_1", "relu3_1"]
    net = build_vgg(None, layers, weights=weights)
    with torch.no_grad():
        f = net(to_tensor(np.asarray(img, np.float32), torch.device("cpu")))
    return {n: gram(f[n]) / (f[n].shape[-2] * f[n].shape[-1]) for n in layers}


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return sum(float(((a[n] - b[n]) / a[n].shape[0]).pow(2).sum() / (b[n] / b[n].shape[0]).pow(2).sum()) for n in a)


def test_two_styles_on_two_regions(pictures, opts):
    c, s1, s2 = pictures
    labels = _halves(*c.shape[:2])
    out = napari_nst.stylize(c, [s1, s2], regions=labels, region_styles={0: 0, 1: 1}, size=128, steps=40, **opts)
    w = out.shape[1]
    left, right = out[:, : w // 2 - 8], out[:, w // 2 + 8 :]
    from napari_nst.core.image.arrays import resized_shape, to_rgb_float
    from napari_nst.core.image.tensors import resize, to_numpy, to_tensor

    g = {}
    for name, img in (("s1", s1), ("s2", s2)):
        f = to_rgb_float(img)
        g[name] = _grams(
            to_numpy(resize(to_tensor(f, torch.device("cpu")), resized_shape(f.shape[:2], 128))), opts["weights"]
        )
    gl, gr = _grams(left, opts["weights"]), _grams(right, opts["weights"])
    d = {
        k: round(v, 3)
        for k, v in (
            ("left-s1", _distance(gl, g["s1"])),
            ("left-s2", _distance(gl, g["s2"])),
            ("right-s1", _distance(gr, g["s1"])),
            ("right-s2", _distance(gr, g["s2"])),
        )
    }
    print("relative Gram distances", d)
    assert d["left-s1"] < d["left-s2"] and d["right-s2"] < d["right-s1"], d


def test_luminance_mode_keeps_the_contents_chroma_in_every_record(pictures, opts):
    c, s, _ = pictures
    records = list(
        napari_nst.iter_stylize(
            c, s, preserve_color="luminance", size=64, steps=3, **{k: v for k, v in opts.items() if k != "progress"}
        )
    )
    out = records[-1].image
    from napari_nst.core.image.arrays import to_rgb_float
    from napari_nst.core.image.tensors import resize, to_numpy, to_tensor

    ref = to_numpy(resize(to_tensor(to_rgb_float(c), torch.device("cpu")), out.shape[:2]))
    inside = (out > 0.002).all(-1) & (out < 0.998).all(-1)
    assert inside.mean() > 0.8
    assert np.abs(yuv(out)[inside][:, 1:] - yuv(ref)[inside][:, 1:]).max() < 2e-3
    assert np.abs(out - ref).mean() > 0.003  # the luminance moved (0.0066 after 3 steps)


def test_histogram_mode_and_strength(pictures, opts):
    c, s, _ = pictures
    kw = {k: v for k, v in opts.items() if k != "progress"}
    plain = next(iter(napari_nst.iter_stylize(c, s, size=64, steps=1, **kw)))
    strong = next(iter(napari_nst.iter_stylize(c, s, size=64, steps=1, style_strength=3.0, **kw)))
    assert strong.weights["style"] == pytest.approx(strength_factor(3.0) * plain.weights["style"], rel=1e-6)
    hist = next(iter(napari_nst.iter_stylize(c, s, size=64, steps=1, preserve_color="histogram", **kw)))
    assert hist.weights["style"] != pytest.approx(plain.weights["style"], rel=1e-3)  # other style colours, other b


def test_each_style_keeps_its_own_style_scale(pictures, opts):
    c, s1, s2 = pictures
    kw = dict(size=64, steps=4, **opts)
    first = napari_nst.stylize(c, s1, **kw)
    second_half = napari_nst.stylize(c, s2, style_scale=0.5, **kw)
    both = dict(style_scale=(1.0, 0.5), **kw)
    assert np.allclose(napari_nst.stylize(c, [s1, s2], style_blend=[1, 0], **both), first, atol=1e-5)
    assert np.allclose(napari_nst.stylize(c, [s1, s2], style_blend=[0, 1], **both), second_half, atol=1e-5)
    assert not np.allclose(napari_nst.stylize(c, s2, **kw), second_half, atol=1e-2)  # the scale matters


def test_style_regions_choose_the_part_of_the_painting(pictures, opts):
    """One style image made of two paintings side by side; style_regions picks one half for the
    whole content: the pastiche's Grams move to that painting's. A label image over all of the
    style image gives the run without style_regions."""
    from napari_nst.core.image.arrays import to_rgb_float

    c, s1, s2 = pictures
    a, b = _fit(to_rgb_float(s1), (160, 160)), _fit(to_rgb_float(s2), (160, 160))
    both = np.concatenate([a, b], axis=1)
    halves = _halves(*both.shape[:2]) + 1  # 1: Starry Night's half, 2: The Scream's
    kw = dict(size=96, steps=30, **opts)
    out = {}
    for lab in (1, 2):
        regions = np.full(c.shape[:2], lab, np.int32)
        out[lab] = napari_nst.stylize(c, both, regions=regions, region_styles={lab: 0}, style_regions=halves, **kw)
    g1, g2 = _grams(_fit(a, (96, 96)), opts["weights"]), _grams(_fit(b, (96, 96)), opts["weights"])
    d = {
        lab: (_distance(_grams(out[lab], opts["weights"]), g1), _distance(_grams(out[lab], opts["weights"]), g2))
        for lab in (1, 2)
    }
    assert d[1][0] < d[2][0] and d[2][1] < d[1][1], d  # each run nearer the half it was given
    assert d[1][0] < d[1][1] / 2 and d[2][1] < d[2][0] / 2, d
    ones = np.ones(c.shape[:2], np.int32)
    whole = napari_nst.stylize(c, both, regions=ones, size=64, steps=4, **opts)
    guided = napari_nst.stylize(
        c, both, regions=ones, style_regions=np.ones(both.shape[:2], int), size=64, steps=4, **opts
    )
    assert np.allclose(whole, guided, atol=2e-3)


def _fit(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from napari_nst.core.image.tensors import resize, to_numpy, to_tensor

    return to_numpy(resize(to_tensor(np.asarray(img, np.float32), torch.device("cpu")), shape))
