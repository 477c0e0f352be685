"""The style losses beyond the Gram matrix (``style_loss``): formulas, gradients, blends, refusals, runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import IMAGES, needs_shared

import napari_nst
from napari_nst.core.encoder.vgg import build_vgg
from napari_nst.core.errors import OptionError
from napari_nst.core.objective import statistics as S
from napari_nst.core.objective.losses import ContentTerm, evaluate
from napari_nst.core.objective.tiles import TiledObjective, Tiling, tiled_moments
from napari_nst.core.options import Options

rng = np.random.default_rng(7)


def _spd(n: int, seed: int) -> torch.Tensor:
    a = torch.tensor(np.random.default_rng(seed).normal(size=(n, n)), dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(n, dtype=torch.float64)


def _sqrtm(c: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(c)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def _gaussian(mean: torch.Tensor, cov: torch.Tensor) -> S.Gaussian:
    return S.Gaussian.of(mean, cov + torch.outer(mean, mean))


# --------------------------------------------------------------------------- W2


def test_w2_matches_the_closed_form_of_two_gaussians():
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2), divided by N, computed by hand."""
    n = 5
    mu1, mu2 = torch.tensor(rng.normal(size=n)), torch.tensor(rng.normal(size=n))
    c1, c2 = _spd(n, 1), _spd(n, 2)
    root = _sqrtm(c2.numpy())
    want = (
        ((mu1 - mu2) ** 2).sum().item() + np.trace(c1.numpy() + c2.numpy() - 2 * _sqrtm(root @ c1.numpy() @ root))
    ) / n
    got = S.w2_loss(mu1.float(), (c1 + torch.outer(mu1, mu1)).float(), _gaussian(mu2.float(), c2.float()))
    assert got.item() == pytest.approx(want, rel=1e-3)


def test_w2_of_commuting_covariances_is_the_distance_of_their_roots():
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    zero = torch.zeros(3)
    got = S.w2_loss(zero, torch.diag(a), _gaussian(zero, torch.diag(b)))
    assert got.item() == pytest.approx((1 + 1 + 0) / 3, rel=1e-4)


def test_w2_is_zero_for_the_same_statistics_and_positive_otherwise():
    f = torch.tensor(rng.normal(size=(1, 16, 12, 12)), dtype=torch.float32).relu()
    m = S.Moments.of(f)
    target = S.Gaussian.of(m.mean(), m.second())
    same = S.w2_loss(m.mean(), m.second(), target).item()
    assert abs(same) < 1e-4 * target.at_zero().item()  # the Newton-Schulz root's approximation only
    other = S.Moments.of(1.3 * f + 0.1)
    assert S.w2_loss(other.mean(), other.second(), target).item() > 0.01 * target.at_zero().item()
    zero = S.w2_loss(torch.zeros(16), torch.zeros(16, 16), target).item()
    assert zero == pytest.approx(target.at_zero().item(), rel=1e-5)


def test_w2_gradient_is_finite_and_that_of_the_value():
    """Fewer positions than channels (rank-deficient covariance, as relu5_1 at small sizes): still
    finite; where the Newton-Schulz iterations have converged, the gradient taken from their inverse
    root is the derivative of the value (float64 gradcheck)."""
    f = torch.tensor(rng.normal(size=(1, 12, 2, 3)), dtype=torch.float32).relu().requires_grad_(True)
    s = torch.tensor(rng.normal(size=(1, 12, 5, 5)), dtype=torch.float32).relu()
    term = S.blended_term("wasserstein", [S.StyleStats(moments={"l": S.Moments.of(s)})], [1.0], {"l": 1.0}, {})
    (grad,) = torch.autograd.grad(term({"l": f}, f), f)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    mu, c = torch.tensor(rng.normal(size=3)), _spd(3, 3)
    target = S.Gaussian(mu, c, torch.tensor(_sqrtm(c.numpy())), torch.trace(c))
    x = torch.tensor(rng.normal(size=(3, 6)), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: S.w2_loss(y.mean(1), y @ y.T / 6, target), (x,))


def test_trace_root_by_eigendecomposition_and_by_iterations_agree():
    """The CPU's eigendecomposition and the GPU's Newton-Schulz iterations (run here on a device
    type that is not "cpu" by calling them directly): the same tr(a^1/2) and the same gradient
    a^-1/2 / 2 on a well-conditioned matrix, also batched (regions)."""
    a = torch.stack([_spd(6, 4), _spd(6, 5)]).float().requires_grad_(True)
    value = S.trace_sqrtm(a)
    (grad,) = torch.autograd.grad(value.sum(), a)
    want = torch.tensor([np.trace(_sqrtm(x.numpy())) for x in a.detach().double()])
    torch.testing.assert_close(value.double(), want, rtol=1e-5, atol=0)
    y, z, norm = S._newton_schulz(a.detach(), 40)
    torch.testing.assert_close(value.detach(), torch.diagonal(y, dim1=-2, dim2=-1).sum(-1) * norm[:, 0, 0].sqrt())
    torch.testing.assert_close(grad, 0.5 * z / norm.sqrt(), rtol=1e-4, atol=1e-6)


def test_moments_gradient_is_autograds_also_channels_last_and_bfloat16():
    """The fused backward of (F F^T, F 1) equals autograd's of the plain products; for bfloat16 F
    it is that gradient rounded once to bfloat16."""
    f = torch.tensor(rng.normal(size=(1, 5, 6, 7)), dtype=torch.float32).relu()
    w = torch.tensor(rng.normal(size=(5, 5)), dtype=torch.float32)
    v = torch.tensor(rng.normal(size=5), dtype=torch.float32)

    def objective(m: S.Moments) -> torch.Tensor:
        return (m.second() * w).sum() + (m.mean() * v).sum() ** 2

    x = f.clone().requires_grad_(True)
    flat = x.reshape(5, -1)
    (objective(S.Moments(flat @ flat.T, flat.sum(1), 42.0))).backward()
    for y in (f.clone(), f.contiguous(memory_format=torch.channels_last)):
        y.requires_grad_(True)
        (g,) = torch.autograd.grad(objective(S.Moments.of(y)), y)
        torch.testing.assert_close(g, x.grad, rtol=1e-5, atol=1e-6)
    b = f.bfloat16().requires_grad_(True)
    (g,) = torch.autograd.grad(objective(S.Moments.of(b)), b)
    assert g.dtype == torch.bfloat16
    torch.testing.assert_close(g.float(), x.grad, rtol=2e-2, atol=1e-3)


def test_w2_in_bfloat16_is_computed_in_float32():
    f = torch.tensor(rng.normal(size=(1, 8, 6, 6)), dtype=torch.float32).relu()
    m = S.Moments.of(f.bfloat16())
    assert m.gram.dtype == torch.float32 and m.total.dtype == torch.float32
    target = S.Gaussian.of(*S.mix_moments([S.Moments.of(f)], [1.0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = S.w2_loss(m.mean(), m.second(), target)
    assert value.dtype == torch.float32 and torch.isfinite(value)


def test_w2_blend_is_the_gaussian_of_the_mixture():
    a = torch.tensor(rng.normal(size=(1, 4, 6, 6)), dtype=torch.float32)
    b = torch.tensor(rng.normal(size=(1, 4, 3, 3)), dtype=torch.float32) + 2
    mean, second = S.mix_moments([S.Moments.of(a), S.Moments.of(b)], [0.25, 0.75])
    torch.testing.assert_close(mean, 0.25 * a.mean((0, 2, 3)) + 0.75 * b.mean((0, 2, 3)))
    fa, fb = a.reshape(4, -1), b.reshape(4, -1)
    torch.testing.assert_close(second, 0.25 * fa @ fa.T / 36 + 0.75 * fb @ fb.T / 9)
    same = S.mix_moments([S.Moments.of(a), S.Moments.of(a)], [0.5, 0.5])
    torch.testing.assert_close(same[1], S.Moments.of(a).second())


# --------------------------------------------------------------------------- sliced


def test_sliced_is_zero_for_the_same_features_and_positive_otherwise():
    f = torch.tensor(rng.normal(size=(1, 8, 5, 7)), dtype=torch.float32)
    proj = S.projections(8, torch.Generator().manual_seed(0))
    target = S.sorted_projections(f, proj)
    scale = target.pow(2).mean().item()
    assert S.sliced_loss(f, proj, target).item() < 1e-6 * scale  # float32 rounding only
    shuffled = f.reshape(8, -1)[:, torch.randperm(35)].reshape(1, 8, 5, 7)  # same distribution, moved
    assert S.sliced_loss(shuffled, proj, target).item() < 1e-6 * scale
    assert S.sliced_loss(f * 1.2, proj, target).item() > 1e-3


def _sorted_reference(x: torch.Tensor, proj: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss as Heitz et al. write it: sort each direction's projections."""
    return ((proj.T @ x.reshape(x.shape[-3], -1)).sort(1).values - target).pow(2).mean()


def test_sliced_gradient_is_autograds_of_sorting_also_channels_last_and_bfloat16():
    """Few positions, so nearly every rank bucket holds one value: the histogram's partners are the
    sort's (two values close enough to share a bucket get nearly theirs)."""
    f = torch.tensor(rng.normal(size=(1, 6, 4, 5)), dtype=torch.float32)
    proj = S.projections(6, torch.Generator().manual_seed(1))
    target = S.quantiles(S.sorted_projections(f.flip(-1) * 1.5 + 0.3, proj), 20)
    x = f.clone().requires_grad_(True)
    want = _sorted_reference(x, proj, target)
    want.backward()
    for y in (f.clone(), f.contiguous(memory_format=torch.channels_last)):
        y.requires_grad_(True)
        got = S.sliced_loss(y, proj, target)
        (g,) = torch.autograd.grad(got, y)
        assert got.item() == pytest.approx(want.item(), rel=1e-4)
        assert ((g - x.grad).norm() / x.grad.norm()).item() < 1e-3
    b = f.bfloat16().requires_grad_(True)
    (g,) = torch.autograd.grad(S.sliced_loss(b, proj, target), b)
    assert g.dtype == torch.bfloat16
    torch.testing.assert_close(g.float(), x.grad, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_sliced_ranks_from_the_histogram_are_the_sorts_at_a_layers_size(layout):
    """Many positions per bucket, ReLU features (exact zeros: ties), a pastiche partly beyond the
    style's range: the loss and its gradient within a fraction of a percent of the sort's."""
    gen = torch.Generator().manual_seed(3)
    style = torch.randn(1, 16, 96, 128, generator=gen).relu()
    f = (1.3 * torch.randn(1, 16, 96, 128, generator=gen) + 0.2).relu().contiguous(memory_format=layout)
    proj = S.projections(16, gen)
    target = S.sorted_projections(style, proj)
    assert S.rank_buckets(96 * 128) * 4 < 96 * 128  # several values per bucket
    x = f.clone().requires_grad_(True)
    want = _sorted_reference(x, proj, target)
    (g_want,) = torch.autograd.grad(want, x)
    y = f.clone().requires_grad_(True)
    got = S.sliced_loss(y, proj, target)
    (g,) = torch.autograd.grad(got, y)
    assert got.item() == pytest.approx(want.item(), rel=2e-3)
    assert ((g - g_want).norm() / g_want.norm()).item() < 2e-2


def test_sliced_matching_reads_its_table_the_same_in_one_gather_or_two():
    """The CPU's complex gather and the plain gathers a GPU uses give the same partners."""
    gen = torch.Generator().manual_seed(4)
    proj = S.projections(8, gen)
    target = S.quantiles(S.sorted_projections(torch.randn(1, 8, 40, 50, generator=gen).relu(), proj), 3000)
    lo, scale = S.bucket_frame(target)
    f = torch.randn(8, 3000, generator=gen).relu()
    one = torch.addmm((-lo * scale)[:, None], (proj * scale).T, f)
    two = one.clone()
    S.match_in_place(one, target, lo, scale, S.MatchBuffers(), complex_gather=True)
    S.match_in_place(two, target, lo, scale, S.MatchBuffers(), complex_gather=False)
    torch.testing.assert_close(one, two, rtol=0, atol=1e-3)
    assert one.abs().max() > 1  # differences, not zeros


def test_sliced_ties_share_their_targets_middle():
    """One direction, a value repeated 4 times among distinct ones: the sort gives the tied values
    4 different partners (in an arbitrary order); the histogram gives each their middle, so the
    tied values' gradients are equal and add up to the sort's."""
    proj = torch.ones(1, 1)
    values = torch.tensor([[-3.0, -1.0, 0.5, 0.5, 0.5, 0.5, 2.0, 4.0]])
    target = torch.linspace(-2.0, 5.0, 8)[None]
    x = values.clone().requires_grad_(True)
    (g_want,) = torch.autograd.grad(_sorted_reference(x[None], proj, target), x)
    y = values.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(S.sliced_loss(y, proj, target), y)
    tied = g[0, 2:6]
    torch.testing.assert_close(tied, tied[:1].expand(4))
    assert tied.sum().item() == pytest.approx(g_want[0, 2:6].sum().item(), rel=1e-4)
    torch.testing.assert_close(g[0, [0, 1, 6, 7]], g_want[0, [0, 1, 6, 7]])


def test_sliced_buffers_shared_by_layers_keep_each_layers_gradient():
    """A term's buffers serve every layer in turn and every evaluation: the gradients kept for
    backward are not those buffers (bfloat16 and float32 features both)."""
    gen = torch.Generator().manual_seed(5)
    shapes = {"a": (1, 8, 12, 10), "b": (1, 16, 6, 5)}
    for dtype in (torch.float32, torch.bfloat16):
        feats = {n: torch.randn(*s, generator=gen).relu().to(dtype) for n, s in shapes.items()}
        proj = {n: S.projections(s[1], gen) for n, s in shapes.items()}
        targets = {n: S.sorted_projections(torch.randn(*s, generator=gen).relu(), proj[n]) for n, s in shapes.items()}
        term = S.SlicedStyleTerm(proj, targets, {"a": 1.0, "b": 0.5}, 1.0)
        for _ in range(2):  # the second evaluation reuses the buffers the first grew
            xs = {n: t.clone().requires_grad_(True) for n, t in feats.items()}
            grads = torch.autograd.grad(term(xs, xs["a"]), list(xs.values()))
            for (n, x), g in zip(xs.items(), grads, strict=True):
                w = term.layer_weights[n]
                (alone,) = torch.autograd.grad(w * S.sliced_loss(x, proj[n], targets[n]), x)
                torch.testing.assert_close(g, alone, rtol=0, atol=0)


def test_sort_rows_of_long_rows_is_torchs_sort():
    """Rows long enough for the int32-key radix path: the same values, positions that reorder the
    row into them, negative numbers, zeros of both signs and ties included."""
    p = torch.tensor(rng.normal(size=(3, S.RADIX_MIN + 5)), dtype=torch.float32) * 3
    p[0, :6] = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 5.0, 5.0])
    p[2] = p[2].round()  # many ties
    values, order = S.sort_rows(p)
    torch.testing.assert_close(values, p.sort(dim=1).values, rtol=0, atol=0)
    torch.testing.assert_close(p.gather(1, order), values, rtol=0, atol=0)
    assert torch.equal(order.sort(dim=1).values, torch.arange(p.shape[1]).expand_as(order))
    short = p[:, :100]
    torch.testing.assert_close(S.sort_rows(short)[0], short.sort(dim=1).values, rtol=0, atol=0)


def test_sliced_projections_are_fixed_by_the_seed_and_the_level():
    ch = {"relu1_1": 4, "relu2_1": 8}
    one = S.level_projections(3, (64, 48), ch, torch.device("cpu"))
    again = S.level_projections(3, (64, 48), ch, torch.device("cpu"))
    other = S.level_projections(4, (64, 48), ch, torch.device("cpu"))
    for n in ch:
        assert torch.equal(one[n], again[n]) and not torch.equal(one[n], other[n])
        torch.testing.assert_close(one[n].norm(dim=0), torch.ones(ch[n]))


def test_sliced_blend_mixes_the_styles_samples_in_proportion():
    a = torch.arange(10.0)[None]
    b = 100 + torch.arange(10.0)[None]
    mixed = S.mix_sorted([a, b], [0.3, 0.7], 10)
    assert (mixed < 50).sum().item() == 3 and (mixed > 50).sum().item() == 7
    assert torch.equal(mixed, mixed.sort(1).values)
    assert torch.equal(S.mix_sorted([a, b], [1.0, 0.0], 10), a)
    up = S.quantiles(a, 19)  # resampling keeps the range and the order
    assert up[0, 0] >= 0 and up[0, -1] <= 9 and torch.equal(up, up.sort(1).values)


# --------------------------------------------------------------------------- refusals, tiles


def test_the_option_lists_the_losses_and_refuses_others():
    assert Options().style_loss == "gram"  # the paper's, by default
    with pytest.raises(OptionError, match="gram"):
        Options.from_kwargs(style_loss="earth-mover")


def test_sliced_refuses_tiles_and_style_regions_refuses_the_other_losses():
    opts = Options.from_kwargs(style_loss="sliced", tile_size=128, size=512)
    with pytest.raises(OptionError, match="sliced"):
        opts.check_tiles((384, 512))
    with pytest.raises(OptionError, match="style_regions works with style_loss='gram'"):
        Options.from_kwargs(style_loss="wasserstein", style_regions=[np.zeros((8, 8), int)])


def test_tiled_w2_objective_and_gradient_are_the_whole_images(vgg16_random):
    """Moments add up over the tiles' cores as Grams do: the two-pass tiled objective is W2's of
    the whole image, gradient and all (the halo holds relu2_1's receptive field)."""
    layers = ["relu1_1", "relu2_1"]
    net = build_vgg("vgg16", layers, weights=str(vgg16_random))
    gen = torch.Generator().manual_seed(0)
    x, s = torch.rand(1, 3, 70, 90, generator=gen), torch.rand(1, 3, 64, 64, generator=gen)
    tiling = Tiling(40, 16, 2)
    with torch.no_grad():
        whole, sf = net(x), net(s)
        moments = tiled_moments(net, x, tiling, {"relu1_1": 1, "relu2_1": 2})
    torch.testing.assert_close(moments["relu2_1"].total, whole["relu2_1"].reshape(128, -1).sum(1), rtol=1e-4, atol=1e-2)
    stats = S.StyleStats(moments={n: S.Moments.of(sf[n]) for n in layers})
    terms = [
        ContentTerm({"relu2_1": whole["relu2_1"]}, 0.0),
        S.blended_term("wasserstein", [stats], [1.0], {n: 0.5 for n in layers}, {}),
    ]
    xg = x.clone().requires_grad_(True)
    total, _ = evaluate(terms, net(xg), xg)
    (grad,) = torch.autograd.grad(total, xg)
    t_total, _, t_grad = TiledObjective(net, terms, tiling, "vgg16")(x)
    assert t_total.item() == pytest.approx(total.item(), rel=1e-3)
    torch.testing.assert_close(t_grad, grad, rtol=2e-3, atol=2e-3 * float(grad.abs().max()))


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def pictures():
    needs_shared(IMAGES / "tubingen.jpg")
    from napari_nst.core.image.files import read_image

    return [read_image(IMAGES / n) for n in ("tubingen.jpg", "starry_night.jpg", "the_scream.jpg")]


@pytest.mark.parametrize("loss", ["wasserstein", "sliced"])
def test_a_short_run_lowers_its_style_loss_and_repeats(pictures, hed_weights, loss):
    c, s, _ = pictures
    opts = dict(weights=str(hed_weights), device="cpu", seed=0, size=64, steps=8, style_loss=loss)
    records = list(napari_nst.iter_stylize(c, s, **opts))
    first, last = records[0].losses, records[-1].losses
    assert all(np.isfinite(v) for v in last.values())
    assert last["style"] < 0.9 * first["style"] and last["total"] < first["total"]
    assert records[0].weights["style"] != pytest.approx(records[0].weights["content"])
    again = napari_nst.stylize(c, s, **opts)
    assert np.array_equal(again, records[-1].image)


@pytest.mark.parametrize("loss", ["wasserstein", "sliced"])
def test_blends_regions_and_colours_run_with_each_loss(pictures, hed_weights, loss):
    c, s, s2 = pictures
    opts = dict(weights=str(hed_weights), device="cpu", seed=0, size=64, steps=3, style_loss=loss)
    labels = np.zeros(c.shape[:2], np.int32)
    labels[:, c.shape[1] // 2 :] = 1
    one = napari_nst.stylize(c, s, **opts)
    first = napari_nst.stylize(c, [s, s2], style_blend=[1, 0], **opts)
    if loss == "wasserstein":  # the mixture of one style is that style, exactly
        assert np.array_equal(one, first)
    for extra in (dict(regions=labels, region_styles={0: 0, 1: 1}), dict(regions=labels, region_styles={1: None})):
        out = napari_nst.stylize(c, [s, s2], **extra, **opts)
        assert np.isfinite(out).all() and not np.array_equal(out, one)
    out = napari_nst.stylize(c, s, preserve_color="luminance", **opts)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("loss", ["wasserstein", "sliced"])
def test_a_stack_keeps_the_styles_statistics_for_every_frame(content, style, fast, loss):
    """The stack engine memoises the style's statistics as it does the Grams; each frame is finite."""
    frames = np.stack([np.roll(content, 2 * t, axis=1) for t in range(2)])
    out = napari_nst.stylize_stack(frames, style, style_loss=loss, **fast)
    assert out.shape[0] == 2 and np.isfinite(out).all()


def test_the_tiled_engine_runs_wasserstein_and_refuses_sliced(content, style, fast):
    opts = dict(fast, size=128, steps=4, tile_size=96, seed=1)
    recs = list(napari_nst.iter_stylize(content, style, style_loss="wasserstein", **opts))
    assert [r.tile_size for r in recs] == [96] * 4 and np.isfinite(recs[-1].image).all()
    assert recs[-1].losses["total"] < recs[0].losses["total"]
    with pytest.raises(OptionError, match="style_loss='sliced'"):
        napari_nst.stylize(content, style, style_loss="sliced", **opts)
