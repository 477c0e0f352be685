"""The memory savings keep the objective's numbers and keep less.

One evaluation as the engine does it (bf16 autocast, channels_last input, napari-nst's loss terms)
through the network and losses as they are, against the seed's (autograd's Gram of a float32 copy,
``nn.MaxPool2d`` with int64 indices): the same objective value, the same gradient up to float32
rounding inside the Gram's backward, and fewer bytes saved for backward.
"""

from __future__ import annotations

import pytest
import torch

from napari_nst.core.encoder import vgg
from napari_nst.core.objective import losses
from napari_nst.core.objective.losses import ContentTerm, StyleTarget, StyleTerm, evaluate

STYLE = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
CONTENT = ["relu4_2"]


def _seed_gram(features: torch.Tensor) -> torch.Tensor:
    f = features.reshape(features.shape[-3], -1).float()
    return f @ f.T


def _evaluation(weights, seed_network: bool, monkeypatch, precision: str = "bf16"):
    """Objective, image gradient and {storage: (bytes, dtype, shape)} saved for backward."""
    vgg._NETS.clear()  # build_vgg keeps the last networks it built: this one is built with patched parts
    with monkeypatch.context() as m:
        if seed_network:
            m.setattr(losses, "gram", _seed_gram)
            m.setattr(vgg, "MaxPool2x2", lambda: torch.nn.MaxPool2d(2, 2))
        net = vgg.build_vgg("vgg16", CONTENT + STYLE, weights=weights)
        vgg._NETS.clear()  # and must not be handed to later tests
        gen = torch.Generator().manual_seed(0)
        content, style = torch.rand(1, 3, 48, 40, generator=gen), torch.rand(1, 3, 48, 40, generator=gen)
        with torch.no_grad():
            cf, sf = net(content), net(style)
        terms = [
            ContentTerm({n: cf[n].float() for n in CONTENT}, 1e-3),
            StyleTerm([StyleTarget({n: losses.gram(sf[n]) for n in STYLE})], {n: 0.2 for n in STYLE}, 1e3),
        ]
        x = (0.5 * content + 0.5 * torch.rand(1, 3, 48, 40, generator=gen)).requires_grad_(True)
        saved: dict[int, tuple[int, torch.dtype, tuple]] = {}

        def pack(t):
            saved[t.untyped_storage().data_ptr()] = (t.untyped_storage().nbytes(), t.dtype, tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                feats = net(x.contiguous(memory_format=torch.channels_last))
            total, _ = evaluate(terms, feats, x)
        total.backward()
        return total.detach(), x.grad, saved


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_lean_evaluation_keeps_the_numbers(vgg16_random, monkeypatch, precision):
    f_seed, g_seed, _ = _evaluation(vgg16_random, True, monkeypatch, precision)
    f_lean, g_lean, _ = _evaluation(vgg16_random, False, monkeypatch, precision)
    assert torch.equal(f_lean, f_seed)  # the forward is the same computation, bit for bit
    if precision == "fp32":
        # float32: the Gram's one-product backward, (dG + dG^T) F, differs from autograd's two by
        # float32 rounding only; pooling's gradient is exact
        torch.testing.assert_close(g_lean, g_seed, rtol=1e-4, atol=1e-5 * g_seed.abs().max().item())
    else:
        # bf16: the Gram's float32 backward rounds differently, then bf16 rounds it through the net
        cos = torch.nn.functional.cosine_similarity(g_lean.flatten(), g_seed.flatten(), dim=0)
        assert cos > 0.9999
        torch.testing.assert_close(g_lean, g_seed, rtol=0.05, atol=0.02 * g_seed.abs().max().item())


def test_lean_evaluation_saves_less_for_backward(vgg16_random, monkeypatch):
    _, _, seed = _evaluation(vgg16_random, True, monkeypatch)
    _, _, lean = _evaluation(vgg16_random, False, monkeypatch)
    assert any(d == torch.int64 for _, d, _ in seed.values())  # nn.MaxPool2d's indices
    assert not any(d == torch.int64 for _, d, _ in lean.values())
    # autograd's float32 (N, M) copies of the bf16 style features are gone
    copies = [(b, s) for b, d, s in seed.values() if d == torch.float32 and len(s) == 2 and s[0] != s[1]]
    assert len(copies) == len(STYLE)
    assert not [s for b, d, s in lean.values() if d == torch.float32 and len(s) == 2 and s[0] != s[1]]
    seed_bytes, lean_bytes = sum(b for b, _, _ in seed.values()), sum(b for b, _, _ in lean.values())
    indices = sum(b for b, d, _ in seed.values() if d == torch.int64)
    assert lean_bytes == seed_bytes - indices - sum(b for b, _ in copies)
