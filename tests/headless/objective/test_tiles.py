"""Tiled evaluation (core/objective/tiles.py, option tile_size) and automatic tiling (max_memory, the free memory)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_nst.core.compute import memory
from napari_nst.core.encoder.vgg import build_vgg
from napari_nst.core.objective.losses import ContentTerm, StyleTarget, StyleTerm, evaluate, gram
from napari_nst.core.objective.tiles import TiledObjective, Tiling, layer_factors, tiled_features, tiled_grams

# shallow layers, so that a 16 px halo holds the whole receptive field (relu2_1 sees 10 px):
# then a tile's core features are exactly the whole image's
CONTENT, STYLE = ["relu2_1"], ["relu1_1", "relu2_1"]


@pytest.mark.parametrize("shape", [(384, 512), (200, 333), (97, 1000), (96, 96)])
def test_cores_cover_the_image_once_and_tiles_keep_their_size(shape):
    tiling = Tiling(192, 32, 16)
    tiles = tiling.tiles(shape)
    cover = np.zeros(shape, int)
    for t in tiles:
        cover[t.cy0 : t.cy1, t.cx0 : t.cx1] += 1
        assert t.y0 <= t.cy0 < t.cy1 <= t.y1 and t.x0 <= t.cx0 < t.cx1 <= t.x1
        assert t.y0 % 16 == 0 and t.x0 % 16 == 0  # on the relu5_1 feature grid
        # a halo of context wherever the image has it
        assert t.cy0 - t.y0 >= min(32, t.cy0) and t.y1 - t.cy1 >= min(32, shape[0] - t.cy1)
        assert t.cx0 - t.x0 >= min(32, t.cx0) and t.x1 - t.cx1 >= min(32, shape[1] - t.cx1)
    assert cover.min() == 1 and cover.max() == 1
    for axis in (0, 1):  # at most two tile lengths per axis: size, or the last one's
        lengths = {(t.y1 - t.y0, t.x1 - t.x0)[axis] for t in tiles}
        assert len(lengths) <= 2 and all(min(192, shape[axis]) <= n < 192 + 16 for n in lengths)


@pytest.fixture(scope="module")
def net(vgg16_random):
    return build_vgg("vgg16", CONTENT + STYLE, weights=str(vgg16_random))


def _image(shape, seed):
    return torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(seed))


def test_tiled_features_and_grams_are_the_whole_images(net):
    image = _image((70, 90), 0)
    tiling = Tiling(40, 16, 2)  # halo 16 px > relu2_1's receptive field
    factors = layer_factors("vgg16", CONTENT + STYLE)
    assert factors == {"relu2_1": 2, "relu1_1": 1}
    with torch.no_grad():
        whole = net(image)
    feats = tiled_features(net, image, tiling, factors)
    grams = tiled_grams(net, image, tiling, factors)
    for n in CONTENT + STYLE:
        torch.testing.assert_close(feats[n], whole[n], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grams[n], gram(whole[n]), rtol=1e-4, atol=1e-3)


def _terms(net, style_weight):
    with torch.no_grad():
        p = net(_image((70, 90), 1))
        s = net(_image((64, 64), 2))
    return [
        ContentTerm({n: p[n] for n in CONTENT}, 1.0),
        StyleTerm([StyleTarget({n: gram(s[n]) for n in STYLE})], {n: 0.5 for n in STYLE}, style_weight),
    ]


def test_tiled_content_term_and_gradient_equal_the_whole_images(net):
    """The content term is a sum over positions: tile by tile it is the whole image's, gradient and all."""
    terms = _terms(net, 0.0)
    x = _image((70, 90), 3).requires_grad_(True)
    total, parts = evaluate(terms, net(x), x)
    (grad,) = torch.autograd.grad(total, x)
    tiled = TiledObjective(net, terms, Tiling(40, 16, 2), "vgg16")
    t_total, t_parts, t_grad = tiled(x.detach())
    assert tiled.tiles_last > 4
    torch.testing.assert_close(t_parts["content"], parts["content"].detach(), rtol=1e-4, atol=0)
    torch.testing.assert_close(t_grad, grad, rtol=1e-3, atol=1e-6 * float(grad.abs().max()))


@pytest.mark.parametrize("content_weight", [0.0, 1.0])
def test_tiled_objective_and_gradient_are_the_whole_images(net, content_weight):
    """Two passes (the whole image's Grams, then each tile's backward of <dL/dG, F F^T>): the paper's
    whole-image objective and its gradient, where the halo holds the receptive field. Grams per tile
    (or pass 2 without pass 1's whole Grams) would give another style value and gradient."""
    terms = _terms(net, 1.0)
    terms[0].weight = content_weight
    x = _image((70, 90), 3).requires_grad_(True)
    total, parts = evaluate(terms, net(x), x)
    (grad,) = torch.autograd.grad(total, x)
    tiled = TiledObjective(net, terms, Tiling(40, 16, 2), "vgg16")
    t_total, t_parts, t_grad = tiled(x.detach())
    assert tiled.tiles_last >= 6
    torch.testing.assert_close(t_parts["style"], parts["style"].detach(), rtol=1e-4, atol=0)
    torch.testing.assert_close(t_total, total.detach(), rtol=1e-4, atol=0)
    torch.testing.assert_close(t_grad, grad, rtol=1e-3, atol=1e-5 * float(grad.abs().max()))
    # what per-tile Grams would be: the tiles' own style terms add up to more than the whole image's
    per_tile = 0.0
    with torch.no_grad():
        f = net(x)
        for name, k in (("relu1_1", 1), ("relu2_1", 2)):
            a, m = terms[1].targets[0].grams[name], f[name].shape[-2] * f[name].shape[-1]
            for t in tiled.tiling.tiles((70, 90)):
                core = f[name][..., t.cy0 // k : -(-t.cy1 // k), t.cx0 // k : -(-t.cx1 // k)]
                mt, n = core.shape[-2] * core.shape[-1], core.shape[1]
                per_tile += 0.5 * mt / m * float(((gram(core) - a * mt / m) / (2 * n * mt)).pow(2).sum())
    assert per_tile > float(parts["style"].detach()) * 1.01


# --------------------------------------------------------------------------- the engine


def _run(content, style, **kw):
    from napari_nst import iter_stylize

    return list(iter_stylize(content, style, **kw))


@pytest.mark.slow  # 20 s; the tiles benchmark's quality part runs tiled runs to the end and scores them
def test_a_tiled_run_makes_progress_and_is_repeatable(fast, content, style):
    opts = dict(fast, size=160, steps=6, tile_size=96, seed=1)
    recs = _run(content, style, **opts)
    assert [r.tile_size for r in recs] == [96] * 6 and recs[-1].note == ""
    assert all(np.isfinite(r.losses["total"]) for r in recs)
    assert recs[-1].losses["total"] < recs[0].losses["total"]
    assert recs[-1].image.shape == (114, 160, 3)
    again = _run(content, style, **opts)
    np.testing.assert_array_equal(again[-1].image, recs[-1].image)
    # coarse levels no larger than a tile are evaluated whole
    levels = _run(content, style, **dict(opts, scales=2, steps=4))
    assert {(r.level, r.tile_size) for r in levels} == {(1, 0), (2, 96)}


def _cap_for_tiles_of_96(shape):
    """A max_memory that fits tiles of 96 px but neither 128 px tiles nor the whole image, in the
    precision ``auto`` runs here (float32 estimates count the Winograd kernels a plan may keep)."""
    from napari_nst.core.compute.device import autocast_dtype

    dt = "float32" if autocast_dtype("auto", torch.device("cpu")) is None else "bfloat16"
    cap = (memory.estimate_tiled(shape, 96, "vgg16", dt) + memory.estimate_tiled(shape, 128, "vgg16", dt)) // 2
    assert memory.estimate_tiled(shape, 96, "vgg16", dt) < cap < memory.estimate_memory(shape, "vgg16", dt)
    return cap


def test_the_engine_tiles_what_does_not_fit_and_says_so(fast, content, style, kernel_free_estimates):
    recs = _run(content, style, **dict(fast, size=160, steps=3, max_memory=_cap_for_tiles_of_96((114, 160)), seed=0))
    assert {r.tile_size for r in recs} == {96}
    assert "tiles of 96 px" in recs[-1].note and "may use" in recs[-1].note


def test_the_cli_prints_the_tiling_note(tmp_path, fast, content, style, capsys):
    from PIL import Image

    from napari_nst.cli import main

    cp, sp = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(content).save(cp)
    Image.fromarray(style).save(sp)
    cap = _cap_for_tiles_of_96((114, 160))
    args = ["--size", "160", "--steps", "2", "--model", "vgg16", "--weights", fast["weights"], "--device", "cpu"]
    code = main(
        ["stylize", str(cp), str(sp), "-o", str(tmp_path / "o.png"), "--quiet", "--max-memory", str(cap), *args]
    )
    assert code == 0
    assert "napari-nst: note: about" in capsys.readouterr().err
    code = main(["stylize", str(cp), str(sp), "-o", str(tmp_path / "o.png"), "--tile-size", "80", *args])
    assert code != 0 and "raise --tile-size to 96" in capsys.readouterr().err


def test_bad_tile_size_and_max_memory_fail_before_any_work(monkeypatch, fast, content, style):
    from napari_nst.core.optim import engine

    built = []
    monkeypatch.setattr(engine, "build_vgg", lambda *a, **k: built.append(1))
    with pytest.raises(ValueError, match="raise tile_size to 96"):
        _run(content, style, **dict(fast, size=160, tile_size=64))
    with pytest.raises(ValueError, match="leave tile_size empty"):
        _run(content, style, **dict(fast, size=160, tile_size=160))
    with pytest.raises(ValueError, match="raise max_memory"):
        _run(content, style, **dict(fast, size=160, max_memory="100MB"))
    with pytest.raises(ValueError, match="one style"):
        _run(content, [style, style], **dict(fast, size=160, tile_size=96))
    assert not built


def test_the_widgets_status_line_says_tiles():
    from napari_nst._run.status import progress_text
    from napari_nst.core.progress import RunEstimate
    from napari_nst.core.records import Progress

    rec = Progress(step=2, total=10, losses={"total": 1.0}, image=None, shape=(96, 128), tile_size=256)
    assert "in tiles of 256 px" in progress_text(rec, RunEstimate())
    rec.tile_size = 0
    assert "tiles" not in progress_text(rec, RunEstimate())


def test_stacks_say_they_are_not_tiled(fast, content, style):
    from napari_nst import iter_stylize_stack

    with pytest.raises(ValueError, match="stacks are not tiled yet"):
        next(iter(iter_stylize_stack(np.stack([content, content]), style, **dict(fast, size=160, tile_size=96))))


def test_tiled_targets_are_the_whole_images_and_keep_only_the_content_maps(net):
    from napari_nst.core.objective.tiles import tiled_targets

    content, style = _image((70, 90), 0), _image((64, 80), 1)
    c, grams, nm = tiled_targets(net, content, style, Tiling(40, 16, 2), "vgg16", CONTENT, STYLE)
    with torch.no_grad():
        cw, sw = net(content), net(style)
    assert set(c) == set(CONTENT)  # the style layers' maps of the content are never assembled
    torch.testing.assert_close(c["relu2_1"], cw["relu2_1"], rtol=1e-4, atol=1e-5)
    for n in STYLE:
        torch.testing.assert_close(grams[n], gram(sw[n]), rtol=1e-4, atol=1e-3)
        assert nm[n] == (cw[n].shape[1], cw[n].shape[2] * cw[n].shape[3])
