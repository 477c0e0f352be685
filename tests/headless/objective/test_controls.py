"""Artistic controls by hand on small tensors and arrays: blended and guided Grams, colours,
options and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_nst.core.errors import OptionError
from napari_nst.core.image.tensors import gaussian_blur
from napari_nst.core.objective import colour
from napari_nst.core.objective.controls import KEEP_FEATHER, blend_coefficients, blend_grams, blend_weights
from napari_nst.core.objective.losses import (
    GuidedStyleTerm,
    RegionTargets,
    gathered_gram,
    gram,
    gram_loss,
    guided_gram_loss,
    masked_gram,
)
from napari_nst.core.objective.regions import BLEND, groups, layer_shape, parse_mapping
from napari_nst.core.options import Options, spec


def test_blended_grams_by_hand():
    a1, a2 = torch.tensor([[2.0, 1.0], [1.0, 4.0]]), torch.tensor([[0.0, 3.0], [3.0, 8.0]])
    out = blend_grams([{"l": a1}, {"l": a2}], [{"l": 10}, {"l": 10}], [0.25, 0.75])
    assert torch.allclose(out["l"], torch.tensor([[0.5, 2.5], [2.5, 7.0]]))
    assert torch.equal(blend_grams([{"l": a1}, {"l": a1}], [{"l": 10}, {"l": 10}], [0.5, 0.5])["l"], a1)
    assert torch.equal(blend_grams([{"l": a1}, {"l": a2}], [{"l": 10}, {"l": 10}], [1.0, 0.0])["l"], a1)
    # different pixel counts: blended per position, scaled to the weighted mean count
    out = blend_grams([{"l": a1}, {"l": a2}], [{"l": 10}, {"l": 30}], [0.5, 0.5])
    assert torch.allclose(out["l"], 20 * (0.5 * a1 / 10 + 0.5 * a2 / 30))


def test_balanced_coefficients_follow_the_floors():
    """c_i ~ w_i / sqrt(floor_i): a style its own run reaches closely (a small floor) weighs more;
    equal floors, no floors or the linear mode give the weights; a weight of 0 stays 0."""
    c = blend_coefficients([0.5, 0.5], [7591.0, 1080.0], "balanced")
    assert sum(c) == pytest.approx(1.0) and c[0] == pytest.approx(0.274, abs=1e-3)
    assert blend_coefficients([0.3, 0.7], [5.0, 5.0], "balanced") == pytest.approx([0.3, 0.7])
    assert blend_coefficients([0.3, 0.7], None, "balanced") == [0.3, 0.7]
    assert blend_coefficients([0.3, 0.7], [1.0, 100.0], "linear") == [0.3, 0.7]
    assert blend_coefficients([1.0, 0.0], [1.0, 100.0], "balanced") == pytest.approx([1.0, 0.0])


def test_the_feather_of_a_region_without_style():
    m = torch.zeros(1, 1, 8, 40)
    m[..., :20] = 1.0
    out = gaussian_blur(m, KEEP_FEATHER)[0, 0, 0]
    reach = int(np.ceil(3 * KEEP_FEATHER))
    assert torch.all(out[: 20 - reach] == 1) and torch.all(out[20 + reach :] == 0)
    assert torch.all(out[1:] <= out[:-1]) and 0.4 < float(out[19]) < 0.8  # a ramp across the border
    assert blend_weights((3.0, 1.0), 2) == [0.75, 0.25] and blend_weights(None, 4) == [0.25] * 4


@pytest.mark.parametrize(
    "blend,match", [((1.0,), "one weight per style"), ((0.0, 0.0), "all 0"), ((-1.0, 2.0), "negative")]
)
def test_bad_blends(blend, match):
    with pytest.raises(OptionError, match=match):
        blend_weights(blend, 2)


def test_masked_gram_splits_the_gram_and_has_the_right_gradient():
    torch.manual_seed(0)
    f = torch.randn(1, 3, 4, 5, requires_grad=True)
    m = torch.rand(4 * 5)
    masks = torch.stack([m, 1 - m])
    g = masked_gram(f, masks)
    assert torch.allclose(g.sum(0), gram(f), atol=1e-5)
    f2 = f.detach().reshape(3, -1)
    assert torch.allclose(g[0], (f2 * m) @ f2.T, atol=1e-5)
    # over a mask's non-zero positions only: the same matrix and the same gradient
    hard = (m > 0.5).float() * m
    idx = torch.nonzero(hard > 0).flatten()
    fg = f.detach().clone().requires_grad_(True)
    g1 = gathered_gram(fg, idx, hard[idx])
    assert torch.allclose(g1, masked_gram(f.detach(), hard[None])[0], atol=1e-5)
    wg = torch.randn(3, 3)
    (g1 * wg).sum().backward()
    fm = f.detach().clone().requires_grad_(True)
    (masked_gram(fm, hard[None])[0] * wg).sum().backward()
    assert torch.allclose(fg.grad, fm.grad, atol=1e-5)
    w = torch.randn(2, 3, 3)
    (g * w).sum().backward()
    ref = f.detach().clone().requires_grad_(True)
    r = ref.reshape(3, -1)
    ((torch.stack([(r * mm) @ r.T for mm in masks]) * w).sum()).backward()
    assert torch.allclose(f.grad, ref.grad, atol=1e-5)


def test_guided_loss_area_normalisation_and_an_empty_region():
    torch.manual_seed(1)
    f = torch.randn(1, 4, 6, 6)
    target = torch.randn(4, 4)
    full = torch.ones(1, 36)
    # one region over the whole image, target A/M with the pastiche's M: the paper's L_GM
    t = RegionTargets(full, torch.tensor([1 / 36.0]), torch.tensor([1.0]), (target / 36)[None])
    assert torch.allclose(guided_gram_loss(masked_gram(f, full), t, 4), gram_loss(gram(f), target, 4, 36), rtol=1e-5)
    # left half only: its Gram is normalised by its own area, weighed by its fraction 1/2
    left = torch.zeros(6, 6)
    left[:, :3] = 1
    masks = torch.stack([left.flatten(), torch.zeros(36)])  # the second region is empty
    t2 = RegionTargets(
        masks, 1 / masks.sum(1).clamp(min=1e-6), masks.sum(1) / 36, torch.stack([target / 36, target / 36])
    )
    loss = guided_gram_loss(masked_gram(f, masks), t2, 4)
    fl = f[..., :3].reshape(4, -1)
    expect = 0.5 * (((fl @ fl.T) / 18 - target / 36) / 8).pow(2).sum()
    assert torch.isfinite(loss) and torch.allclose(loss, expect, rtol=1e-5)
    term = GuidedStyleTerm({"l": t2}, {"l": 1.0}, 1.0)
    assert term.at_zero() == pytest.approx(float(((target / 36) / 8).pow(2).sum()), rel=1e-5)


def test_groups_and_layer_shapes():
    reg = np.array([[0, 1, 2], [3, 3, 1]])
    g = groups(reg, {1: 0, 2: None, 3: 1})
    assert set(g) == {BLEND, 0, None, 1}
    assert g[0].sum() == 2 and g[BLEND].sum() == 1 and g[None].sum() == 1
    assert layer_shape("relu1_1", (37, 50)) == (37, 50) and layer_shape("relu3_1", (37, 50)) == (9, 12)
    assert parse_mapping("1:0, 2:none") == {1: 0, 2: None}


def test_luminance_keeps_the_contents_chroma():
    rng = np.random.default_rng(0)
    content = rng.uniform(0.2, 0.8, (8, 9, 3)).astype(np.float32)
    pastiche = np.clip(content.mean(-1, keepdims=True) + rng.normal(0, 0.05, (8, 9, 1)), 0, 1).repeat(3, -1)
    out = colour.with_chroma(pastiche, content)
    inside = (out > 0).all(-1) & (out < 1).all(-1)
    assert inside.mean() > 0.9
    assert np.allclose(colour.yuv(out)[inside][:, 1:], colour.yuv(content)[inside][:, 1:], atol=1e-5)
    assert np.allclose(colour.luminance(out)[inside], colour.luminance(pastiche)[inside], atol=1e-5)
    # the style's luminance gets the content's mean and standard deviation
    y = colour.match_luminance(rng.uniform(0, 1, (5, 7, 3)), content)
    assert y.mean() == pytest.approx(colour.luminance(content).mean(), abs=1e-5)
    assert y.std() == pytest.approx(colour.luminance(content).std(), rel=1e-4)


def test_histogram_matches_mean_and_covariance():
    rng = np.random.default_rng(2)
    content = rng.uniform(0.3, 0.6, (20, 20, 3)) @ np.array([[1, 0.2, 0], [0, 1, 0.3], [0.1, 0, 1]]) / 1.3
    style = rng.uniform(0, 1, (15, 25, 3)) ** 2
    out = colour.match_histogram(style, content, clip=False).reshape(-1, 3).astype(np.float64)
    c = content.reshape(-1, 3)
    assert np.allclose(out.mean(0), c.mean(0), atol=1e-5)
    assert np.allclose(np.cov(out, rowvar=False), np.cov(c, rowvar=False), atol=1e-5)
    # symmetric (PCA) square roots: the same map whatever the order of the channels
    perm = [2, 0, 1]
    swapped = colour.match_histogram(style[..., perm], content[..., perm], clip=False)
    assert np.allclose(swapped, colour.match_histogram(style, content, clip=False)[..., perm], atol=1e-5)


def test_options_parse_and_refuse():
    o = Options.from_kwargs(style_blend="0.7,0.3", region_styles="1:0,2:none", preserve_color="luminance")
    assert o.style_blend == (0.7, 0.3) and o.region_styles == {1: 0, 2: None}
    assert spec("region_styles").format({1: 0, 2: None}) == "1:0,2:none"
    with pytest.raises(OptionError, match="preserve_color"):
        Options.from_kwargs(preserve_color="colour")
    with pytest.raises(OptionError, match="style index"):
        Options.from_kwargs(region_styles={1: "a"})
    with pytest.raises(OptionError, match="style_strength"):
        Options.from_kwargs(style_strength=20)
    assert Options().style_blend_mode == "balanced"
    assert Options.from_kwargs(style_blend_mode="linear").style_blend_mode == "linear"
    with pytest.raises(OptionError, match="style_blend_mode"):
        Options.from_kwargs(style_blend_mode="mean")
    with pytest.raises(OptionError, match="2-D label image"):
        Options.from_kwargs(regions=np.zeros((2, 2, 3, 4), int))  # (N, H, W) is a stack's (test_stack_regions.py)


def _bad(content, style, **kw):
    from napari_nst.core.api import iter_stylize

    with pytest.raises(ValueError) as info:
        iter_stylize(content, style, size=32, steps=1, device="cpu", **kw)
    return str(info.value)


def test_bad_input_is_refused_before_any_work(content, style):
    h, w = content.shape[:2]
    labels = np.zeros((h, w), np.int32)
    labels[:, w // 2 :] = 1
    assert "shape" in _bad(content, style, regions=labels[:-1])
    assert "integer label image" in _bad(content, style, regions=labels.astype(float))
    assert "boolean" in _bad(content, style, regions=labels > 0)
    assert "indices 0 to 1" in _bad(content, [style, style], regions=labels, region_styles={1: 2})
    assert "one weight per style" in _bad(content, [style, style], style_blend=(1.0,))
    assert ">= 0" in _bad(content, [style, style], style_blend=(1.0, -1.0))
    assert "all 0" in _bad(content, [style, style], style_blend=(0.0, 0.0))
    assert "empty list" in _bad(content, [])
    assert "no pixel gets a style" in _bad(content, style, regions=labels, region_styles={0: None, 1: None})
    assert "give the label image" in _bad(content, style, region_styles={1: 0})


def test_cli_takes_several_styles_regions_and_colours(tmp_path, content, style, vgg16_random):
    from PIL import Image

    from napari_nst.cli import main
    from napari_nst.core.image.files import read_image

    h, w = content.shape[:2]
    labels = np.zeros((h, w), np.uint8)
    labels[:, w // 2 :] = 2
    paths = {}
    for name, arr in (("c.png", content), ("s1.png", style), ("s2.png", style[::-1]), ("labels.png", labels)):
        paths[name] = tmp_path / name
        Image.fromarray(arr).save(paths[name])
    out = tmp_path / "out.png"
    common = [
        "-o",
        str(out),
        "--size",
        "32",
        "--steps",
        "2",
        "--weights",
        str(vgg16_random),
        "--device",
        "cpu",
        "--quiet",
    ]
    args = [
        "stylize",
        str(paths["c.png"]),
        str(paths["s1.png"]),
        str(paths["s2.png"]),
        *common,
        "--style-blend",
        "0.7,0.3",
        "--regions",
        str(paths["labels.png"]),
        "--region-styles",
        "2:1",
        "--preserve-color",
        "luminance",
        "--style-strength",
        "2",
    ]
    assert main(args) == 0 and read_image(out).shape[:2] == (23, 32)
    bad = [
        "stylize",
        str(paths["c.png"]),
        str(paths["s1.png"]),
        *common,
        "--region-styles",
        "2:1",
        "--regions",
        str(paths["labels.png"]),
    ]
    assert main(bad) == 1  # style 1 does not exist with one style image


@pytest.mark.parametrize("channels_last", [False, True])
def test_gathered_grams_of_overlapping_regions_by_hand(channels_last):
    """Several regions in one gather, sharing soft border positions: the same Grams and the same
    gradient as masks applied to the whole map, in either memory layout."""
    from napari_nst.core.objective.losses import gathered_grams

    torch.manual_seed(2)
    f0 = torch.randn(1, 3, 4, 5)
    if channels_last:
        f0 = f0.contiguous(memory_format=torch.channels_last)
    m = torch.zeros(2, 20)
    m[0, :12], m[1, 8:] = 1.0, 1.0
    m[:, 8:12] = 0.5  # a soft border: these positions belong to both regions
    m[1, 19] = 0.0  # a position in no region gets no gradient
    index = [torch.nonzero(r > 0).flatten() for r in m]
    bounds = ((0, len(index[0])), (len(index[0]), len(index[0]) + len(index[1])))
    fg = f0.clone().requires_grad_(True)
    g = gathered_grams(fg, torch.cat(index), torch.cat([r[i] for r, i in zip(m, index, strict=True)]), bounds)
    fm = f0.clone().requires_grad_(True)
    ref = masked_gram(fm, m)
    assert torch.allclose(g, ref, atol=1e-5)
    w = torch.randn(2, 3, 3)
    (g * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.allclose(fg.grad, fm.grad, atol=1e-5)
    assert torch.all(fg.grad.reshape(3, -1)[:, 19] == 0)


def test_style_scale_one_for_all_or_one_per_style():
    sp = spec("style_scale")
    assert sp.parse("0.5") == 0.5 and sp.parse("1, 0.5") == (1.0, 0.5) and sp.parse("2,") == (2.0,)
    o = Options.from_kwargs(style_scale="1,0.5")
    assert o.style_scale == (1.0, 0.5) and o.scale_of(1) == 0.5
    assert o.style_shape((100, 200), (128, 256), 0) == (128, 256) and o.style_shape((100, 200), (128, 256), 1) == (
        64,
        128,
    )
    assert Options.from_kwargs(style_scale=[2, 0.5]).style_scale == (2.0, 0.5)
    assert Options.from_kwargs(style_scale=0.5).style_shape((100, 200), (128, 256), 3) == (64, 128)
    with pytest.raises(OptionError, match="between 0.05 and 8"):
        Options.from_kwargs(style_scale=(1.0, 9.0))
    with pytest.raises(OptionError, match="non-empty"):
        Options.from_kwargs(style_scale=())
    with pytest.raises(OptionError, match="2 values but there are 3 style images; give one number for all"):
        Options.from_kwargs(style_scale=(1, 1)).check_scales(3)
    Options.from_kwargs(style_scale=(1, 1)).check_scales(2)
    Options.from_kwargs(style_scale=1.0).check_scales(5)


def test_style_scale_errors_before_any_work():
    from napari_nst.core.api import prepare

    rng = np.random.default_rng(0)
    c, s = rng.uniform(0, 1, (64, 64, 3)), rng.uniform(0, 1, (64, 64, 3))
    with pytest.raises(OptionError, match="style_scale has 3 values but there are 2 style images"):
        prepare(c, [s, s], size=64, style_scale=(1, 1, 1))
    with pytest.raises(OptionError, match=r"style_scale\[1\] now 0.1"):
        prepare(c, [s, s], size=64, style_scale=(1, 0.1))
    _, _, opts = prepare(c, [s, s], size=64, style_scale=(1, 0.5))
    assert opts.style_scale == (1.0, 0.5)


def test_guided_groups_by_hand():
    from napari_nst.core.objective.regions import guided_groups

    reg = np.array([[0, 1, 2], [3, 3, 1]])
    # style 0's label image has labels {0, 1}; style 1 has none; labels 3 -> style 1, 2 -> none
    g = guided_groups(reg, {1: 0, 2: None, 3: 1}, [{0, 1}, set()])
    assert set(g) == {(BLEND, 0), (0, 1), (None, None), (1, None)}
    assert g[(0, 1)].sum() == 2 and g[(BLEND, 0)].sum() == 1 and g[(1, None)].sum() == 2
    # label 1 mapped to style 0 whose label image lacks 1: style 0 used whole
    assert set(guided_groups(reg, {1: 0, 2: 0, 3: 0}, [{2}, set()])) == {(BLEND, None), (0, None), (0, 2)}


def test_style_regions_errors():
    from napari_nst.core.api import prepare

    rng = np.random.default_rng(0)
    c, s = rng.uniform(0, 1, (64, 64, 3)), rng.uniform(0, 1, (48, 80, 3))
    reg = np.zeros((64, 64), int)
    ok = np.zeros((48, 80), int)
    cases = [
        (dict(style_regions=[ok, ok]), "regions is not: give regions too"),
        (dict(regions=reg, style_regions=[ok]), "1 label images but there are 2 style images"),
        (dict(regions=reg, style_regions=[ok, ok.astype(float)]), r"style_regions\[1\] must be an integer"),
        (dict(regions=reg, style_regions=[ok, ok > 0]), "boolean mask"),
        (dict(regions=reg, style_regions=[None, ok.T]), r"style_regions\[1\] has shape \(80, 48\) but style image 1"),
        (dict(regions=reg, style_regions=[ok[0], None]), "2-D label image"),
        (dict(regions=reg, style_regions=[]), "a label image or a list"),
    ]
    for kw, match in cases:
        with pytest.raises(OptionError, match=match):
            prepare(c, [s, s], size=64, **kw)
    _, _, opts = prepare(c, s, size=64, regions=reg, style_regions=ok)  # one style: one array
    assert len(opts.style_regions) == 1 and opts.style_regions[0] is not None
    assert spec("style_regions").parse("a.png, none") == ["a.png", None]
    assert Options.from_kwargs(regions=reg, style_regions=[None, ok]).as_dict()["style_regions"] == [
        None,
        "labels(48, 80)",
    ]


def test_part_grams_by_hand():
    from napari_nst.core.objective.controls import _part_grams

    torch.manual_seed(3)
    feats = {"relu1_1": torch.randn(1, 3, 8, 10), "relu2_1": torch.randn(1, 4, 4, 5)}
    labels = np.zeros((8, 10), int)
    labels[:, 5:] = 7
    out = _part_grams(feats, labels, [0, 7], 1, ("relu1_1", "relu2_1"), (8, 10))
    f = feats["relu1_1"][0]
    left, right = f[:, :, :5].reshape(3, -1), f[:, :, 5:].reshape(3, -1)
    assert torch.allclose(out[(1, 0)]["relu1_1"], left @ left.T / 40, atol=1e-5)
    assert torch.allclose(out[(1, 7)]["relu1_1"], right @ right.T / 40, atol=1e-5)
    g2 = feats["relu2_1"][0]  # the mask area-averaged to 4x5: column 2 is half in each part
    w = torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0]).repeat(4)
    r = g2.reshape(4, -1)
    assert torch.allclose(out[(1, 0)]["relu2_1"], (r * w) @ r.T / w.sum(), atol=1e-5)


def test_command_line_style_scale_and_style_regions(tmp_path):
    from PIL import Image

    from napari_nst.cli import _options, build_parser

    lab = np.zeros((20, 30), np.uint8)
    lab[:, 15:] = 2
    Image.fromarray(lab).save(tmp_path / "parts.png")
    args = build_parser().parse_args(
        ["stylize", "c.png", "s1.png", "s2.png", "-o", "o.png", "--style-scale", "1,0.5", "--regions", "r.png"]
        + ["--style-regions", f"none,{tmp_path / 'parts.png'}"]
    )
    assert args.style_scale == (1.0, 0.5) and args.style_regions == [None, str(tmp_path / "parts.png")]
    args.regions = None  # (the content's label file is read the same way)
    opts = _options(args)
    assert opts["style_regions"][0] is None and np.array_equal(opts["style_regions"][1], lab)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png", "--style-scale", "1,x"])
