"""The seed's formulas, computed by hand with numpy on small tensors and compared."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_nst.core.objective.losses import (
    ContentTerm,
    StyleTarget,
    StyleTerm,
    TVTerm,
    content_loss,
    evaluate,
    gram,
    gram_loss,
    style_loss,
    tv_loss,
)

rng = np.random.default_rng(42)


def _feats(n: int, h: int, w: int) -> np.ndarray:
    return rng.normal(size=(1, n, h, w)).astype(np.float64)


def test_gram_is_F_Ft():
    f = _feats(3, 4, 5)
    flat = f.reshape(3, 20)
    np.testing.assert_allclose(gram(torch.tensor(f)).numpy(), flat @ flat.T, rtol=1e-5)


def test_content_loss_by_hand():
    f, p = _feats(4, 3, 3), _feats(4, 3, 3)
    expected = 0.5 * ((f - p) ** 2).sum()
    assert content_loss(torch.tensor(f), torch.tensor(p)).item() == pytest.approx(expected, rel=1e-5)


def test_gram_loss_by_hand():
    n, h, w = 5, 3, 4
    f, s = _feats(n, h, w).reshape(n, -1), _feats(n, h, w).reshape(n, -1)
    g, a = f @ f.T, s @ s.T
    m = h * w
    expected = ((g - a) ** 2).sum() / (4 * n**2 * m**2)
    got = gram_loss(torch.tensor(g, dtype=torch.float32), torch.tensor(a, dtype=torch.float32), n, m)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_style_loss_weighted_sum_by_hand():
    layers = {"relu1_1": (3, 6, 6), "relu2_1": (4, 3, 3)}
    weights = {"relu1_1": 0.3, "relu2_1": 0.7}
    feats, targets, expected = {}, {}, 0.0
    for name, (n, h, w) in layers.items():
        f, s = _feats(n, h, w), _feats(n, h, w)
        fg, sg = f.reshape(n, -1) @ f.reshape(n, -1).T, s.reshape(n, -1) @ s.reshape(n, -1).T
        expected += weights[name] * ((fg - sg) ** 2).sum() / (4 * n**2 * (h * w) ** 2)
        feats[name] = torch.tensor(f, dtype=torch.float32)
        targets[name] = torch.tensor(sg, dtype=torch.float32)
    assert style_loss(feats, targets, weights).item() == pytest.approx(expected, rel=1e-5)


def test_total_is_a_content_plus_b_style():
    f = {
        "relu4_2": torch.tensor(_feats(2, 3, 3), dtype=torch.float32),
        "relu1_1": torch.tensor(_feats(2, 4, 4), dtype=torch.float32),
    }
    p = {"relu4_2": torch.zeros(1, 2, 3, 3)}
    a_target = {"relu1_1": torch.eye(2)}
    terms = [ContentTerm(p, 0.25), StyleTerm([StyleTarget(a_target)], {"relu1_1": 1.0}, 8.0)]
    image = torch.rand(1, 3, 4, 4)
    total, parts = evaluate(terms, f, image)
    assert parts["content"].item() == pytest.approx(content_loss(f["relu4_2"], p["relu4_2"]).item())
    assert parts["style"].item() == pytest.approx(style_loss(f, a_target, {"relu1_1": 1.0}).item())
    assert total.item() == pytest.approx(0.25 * parts["content"].item() + 8.0 * parts["style"].item(), rel=1e-6)
    total2, parts2 = evaluate([*terms, TVTerm(2.0)], f, image)
    assert total2.item() == pytest.approx(total.item() + 2.0 * tv_loss(image).item(), rel=1e-6)


def test_blend_of_style_targets():
    f = {"relu1_1": torch.tensor(_feats(2, 4, 4), dtype=torch.float32)}
    t1, t2 = {"relu1_1": torch.eye(2)}, {"relu1_1": torch.ones(2, 2)}
    lw = {"relu1_1": 1.0}
    term = StyleTerm([StyleTarget(t1, 0.75), StyleTarget(t2, 0.25)], lw, 1.0)
    expected = 0.75 * style_loss(f, t1, lw) + 0.25 * style_loss(f, t2, lw)
    assert term(f, torch.zeros(1)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_tv_zero_on_constant_and_positive_on_edges():
    assert tv_loss(torch.full((1, 3, 5, 5), 0.3)).item() == 0
    img = torch.zeros(1, 3, 4, 4)
    img[..., 2:] = 1
    # one vertical edge: 4 rows x 1 column of unit steps out of 4x3 horizontal pairs
    assert tv_loss(img).item() == pytest.approx(4 / 12)


def test_bfloat16_features_give_float32_losses():
    f = torch.tensor(_feats(3, 4, 4), dtype=torch.bfloat16)
    assert gram(f).dtype == torch.float32
    assert content_loss(f, f.float()).dtype == torch.float32


# --------------------------------------------------------------------------- the low-precision Gram


def _plain_gram(features: torch.Tensor) -> torch.Tensor:
    """The seed's formula, through plain autograd (keeps the float32 copy)."""
    f = features.reshape(features.shape[-3], -1).float()
    return f @ f.T


def _gram_pair(shape, dtype, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(shape, generator=g).relu().to(dtype)
    if channels_last:
        f = f.contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape[-3], shape[-3], generator=g)
    a, b = f.clone().requires_grad_(True), f.clone().requires_grad_(True)
    ga, gb = _plain_gram(a), gram(b)
    (ga * w).sum().backward()
    (gb * w).sum().backward()
    return ga, gb, a.grad, b.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "shape, channels_last",
    [((1, 16, 12, 10), False), ((1, 16, 12, 10), True), ((16, 12, 10), False), ((1, 3, 5, 7), True)],
)
def test_gram_values_and_gradients_equal_the_plain_formula(dtype, shape, channels_last):
    ga, gb, da, db = _gram_pair(shape, dtype, channels_last)
    assert gb.dtype == torch.float32 and db.dtype == dtype and db.shape == da.shape
    assert torch.equal(ga, gb)  # the same float32 forward, bit for bit
    if channels_last:  # the gradient in the features' layout (no reorder before the next convolution)
        assert db.is_contiguous(memory_format=torch.channels_last)
    else:
        assert db.is_contiguous()
    if dtype == torch.float32:
        # (dG + dG^T) F against dG F + (F^T dG)^T: equal up to float32 rounding
        torch.testing.assert_close(db, da, rtol=1e-5, atol=1e-5 * da.abs().max().item())
    else:
        # (dG + dG^T) F against dG F + (F^T dG)^T: equal up to float32 rounding, then rounded to bf16
        torch.testing.assert_close(db.float(), da.float(), rtol=1e-2, atol=1e-2 * da.float().abs().max().item())


class _CountMM(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.matmul, torch.ops.aten.bmm, torch.ops.aten.addmm):
            self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("channels_last", [False, True])
def test_float32_gram_backward_is_one_matrix_product(channels_last):
    """G is symmetric: dL/dF = (dL/dG + dL/dG^T) F, one product where autograd's takes two."""
    f = torch.rand(1, 16, 12, 10)
    f = (f.contiguous(memory_format=torch.channels_last) if channels_last else f).requires_grad_(True)
    w = torch.rand(16, 16)
    for fn, products in ((gram, 1), (_plain_gram, 2)):
        loss = (fn(f) * w).sum()
        with _CountMM() as count:
            loss.backward()
        assert len(count.calls) == products, (fn, count.calls)


def test_gram_backward_in_slices_equals_one_slice(monkeypatch):
    from napari_nst.core.objective import losses

    _, _, _, whole = _gram_pair((1, 8, 9, 7), torch.bfloat16, True, seed=3)
    monkeypatch.setattr(losses, "_GRAM_CHUNK_ELEMENTS", 8 * 5)  # 5 positions per slice, a ragged last one
    _, _, _, sliced = _gram_pair((1, 8, 9, 7), torch.bfloat16, True, seed=3)
    assert torch.equal(whole, sliced)


def test_bfloat16_gram_keeps_no_float32_copy_for_backward():
    f = torch.rand(1, 32, 24, 16).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)

    def saved_bytes(fn):
        x = f.clone().requires_grad_(True)
        storages: dict[int, int] = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(x).sum().backward()
        return sum(storages.values()), storages

    lean, kept = saved_bytes(gram)
    plain, _ = saved_bytes(_plain_gram)
    assert lean == f.numel() * 2  # the bf16 features themselves, nothing else
    assert plain == f.numel() * 4  # the float32 copy
    assert len(kept) == 1


def test_gram_is_float32_under_autocast():
    f = torch.rand(1, 8, 6, 6, requires_grad=True)
    bf = f.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram(bf)
        g.sum().backward()
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, _plain_gram(bf.detach()))
    assert f.grad is not None and torch.isfinite(f.grad).all()


# --------------------------------------------------------------------------- Grams made as the network goes


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_grams_tapped_in_the_forward_give_the_same_numbers_once_per_layer(vgg16_random, monkeypatch, precision):
    """``gram_taps``: the network makes the plain style term's Gram matrices as each layer is
    computed. With one target the objective and the image's gradient are bit for bit those of
    Grams made after the forward pass; a blend of two targets reads one Gram per layer, not one
    per target (its gradient then sums the targets' before the product: the same up to rounding)."""
    from napari_nst.core.encoder import vgg
    from napari_nst.core.objective import losses
    from napari_nst.core.objective.losses import ContentTerm, StyleTarget, StyleTerm, evaluate, gram_taps

    style_layers = ["relu1_1", "relu2_1", "relu3_1"]
    net = vgg.build_vgg("vgg16", ["relu2_2", *style_layers], weights=vgg16_random)
    gen = torch.Generator().manual_seed(0)
    content, style = torch.rand(1, 3, 40, 36, generator=gen), torch.rand(1, 3, 40, 36, generator=gen)
    with torch.no_grad():
        cf, sf = net(content), net(style)
        sf2 = net(style.flip(-1))
    targets = [StyleTarget({n: losses.gram(f[n]) for n in style_layers}, 0.5) for f in (sf, sf2)]
    content_term = ContentTerm({"relu2_2": cf["relu2_2"]}, 1e-3)
    terms = [content_term, StyleTerm(targets[:1], {n: 1 / 3 for n in style_layers}, 1e3)]
    assert set(gram_taps(terms)) == set(style_layers)
    calls = {"n": 0}
    real = losses.gram
    monkeypatch.setattr(losses, "gram", lambda f: calls.__setitem__("n", calls["n"] + 1) or real(f))

    def evaluation(taps):
        calls["n"] = 0
        x = (
            0.5 * content + 0.5 * torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(1))
        ).requires_grad_()
        xin = x.contiguous(memory_format=torch.channels_last) if precision == "bfloat16" else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            feats = net(xin, taps)
        total, _ = evaluate(terms, feats, x)
        total.backward()
        return total.detach(), x.grad, calls["n"], feats

    taps = {n: losses.gram for n in style_layers}
    t_plain, g_plain, n_plain, f_plain = evaluation(None)
    t_tap, g_tap, n_tap, f_tap = evaluation(taps)
    assert torch.equal(t_plain, t_tap) and torch.equal(g_plain, g_tap)
    assert n_plain == n_tap == len(style_layers) and set(f_tap.tapped) == set(style_layers) and not f_plain.tapped
    terms[1] = StyleTerm(targets, {n: 1 / 3 for n in style_layers}, 1e3)  # a blend of two paintings
    t_plain, g_plain, n_plain, _ = evaluation(None)
    t_tap, g_tap, n_tap, _ = evaluation(taps)
    assert n_plain == 2 * len(style_layers) and n_tap == len(style_layers)  # one Gram per layer, not per target
    torch.testing.assert_close(t_tap, t_plain, rtol=1e-6, atol=0)
    if precision == "float32":
        torch.testing.assert_close(g_tap, g_plain, rtol=1e-4, atol=1e-6 * g_plain.abs().max().item())
    else:  # each target's gradient was rounded to bfloat16 before the sum; here the sum is rounded once
        cos = torch.nn.functional.cosine_similarity(g_tap.flatten(), g_plain.flatten(), dim=0)
        assert cos > 0.9999
        torch.testing.assert_close(g_tap, g_plain, rtol=0.05, atol=0.02 * g_plain.abs().max().item())
    with torch.no_grad():  # no gradient: nothing is tapped
        assert not net(content, {n: losses.gram for n in style_layers}).tapped


def test_only_the_plain_style_term_is_tapped():
    from napari_nst.core.objective.losses import GuidedStyleTerm, StyleTerm, TVTerm, gram_taps

    plain = StyleTerm([], {"relu1_1": 1.0}, 1.0)
    guided = GuidedStyleTerm.__new__(GuidedStyleTerm)  # another statistic: masked Grams
    assert set(gram_taps([plain, TVTerm(0.1)])) == {"relu1_1"}
    assert gram_taps([guided]) == {}
