"""Layer names, the truncated frozen network, and weight loading (offline, download faked)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from napari_nst.core.encoder import vgg
from napari_nst.core.errors import WeightsError


def test_layer_names_follow_torchvision_indices():
    for model in ("vgg16", "vgg19"):
        names = vgg.layer_names(model)
        tv = getattr(torchvision.models, model)().features
        assert len(names) == len(tv)
        for name, layer in zip(names, tv, strict=True):
            kind = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}[name[:4]]
            assert isinstance(layer, kind), name
    names19 = vgg.layer_names("vgg19")
    assert names19.index("relu4_2") == 22 and names19.index("relu5_1") == 29


def test_network_cut_frozen_and_normalised(vgg16_random):
    net = vgg.build_vgg("vgg16", ["relu2_1", "relu3_1"], weights=vgg16_random)
    assert len(net.layers) == vgg.layer_names("vgg16").index("relu3_1") + 1
    assert not net.training
    assert all(not p.requires_grad for p in net.parameters())
    out = net(torch.rand(1, 3, 32, 32))
    assert set(out) == {"relu2_1", "relu3_1"} and out["relu3_1"].shape == (1, 256, 8, 8)
    # the ImageNet normalisation is inside: the first conv sees (x - mean) / std
    x = torch.rand(1, 3, 8, 8)
    conv = net.layers[0]
    manual = torch.relu(conv((x - net.mean) / net.std))
    ref = vgg.build_vgg("vgg16", ["relu1_1"], weights=vgg16_random)(x)["relu1_1"]
    torch.testing.assert_close(ref, manual)


def test_avg_pooling_option(vgg16_random):
    net = vgg.build_vgg("vgg16", ["relu3_1"], weights=vgg16_random, pooling="avg")
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in net.layers)


def test_kept_conv_output_not_clobbered_by_inplace_relu(vgg16_random):
    net = vgg.build_vgg("vgg16", ["conv1_1", "relu1_1"], weights=vgg16_random)
    out = net(torch.rand(1, 3, 8, 8) - 0.5)
    assert (out["conv1_1"] < 0).any() and (out["relu1_1"] >= 0).all()


def test_features_only_and_full_state_dicts_load_the_same(vgg16_random, tmp_path):
    feats = torch.load(vgg16_random, weights_only=True)
    full = dict(feats)
    full.update({"classifier.0.weight": torch.zeros(2, 2), "classifier.0.bias": torch.zeros(2)})
    path = tmp_path / "full.pth"
    torch.save(full, path)
    x = torch.rand(1, 3, 16, 16)
    a = vgg.build_vgg("vgg16", ["relu3_1"], weights=vgg16_random)(x)["relu3_1"]
    b = vgg.build_vgg("vgg16", ["relu3_1"], weights=path)(x)["relu3_1"]
    torch.testing.assert_close(a, b)


def test_real_hed_weights_load(hed_weights):
    net = vgg.build_vgg("vgg16", ["relu5_1"], weights=hed_weights)
    out = net(torch.rand(1, 3, 32, 32))["relu5_1"]
    assert out.shape == (1, 512, 2, 2) and torch.isfinite(out).all()


def test_wrong_architecture_names_the_fix(vgg16_random):
    with pytest.raises(WeightsError, match="model='vgg16'"):
        vgg.build_vgg("vgg19", ["relu5_1"], weights=vgg16_random)


def test_detect_model_from_keys_and_shapes(vgg16_random, vgg19_random_full):
    v16 = torch.load(vgg16_random, weights_only=True)
    v19 = torch.load(vgg19_random_full, weights_only=True)  # with classifier.* keys
    assert vgg.detect_model(v16) == "vgg16" and vgg.detect_model(v19) == "vgg19"
    # features.* stripped (as load_weights_file returns them) and a checkpoint-style wrapper's inner dict
    assert vgg.detect_model({k[len("features.") :]: v for k, v in v16.items()}) == "vgg16"
    # both networks share indices 0..14: a file cut there is ambiguous; one reaching index 16/17 is not
    cut = {k: v for k, v in v19.items() if k.startswith("features.") and int(k.split(".")[1]) <= 14}
    assert vgg.detect_model(cut) is None
    assert vgg.detect_model({**cut, "features.16.weight": v19["features.16.weight"]}) == "vgg19"
    # a shape that fits neither (a conv with 32 channels), nothing conv-like, not a dict
    odd = {**v16, "features.0.weight": torch.zeros(32, 3, 3, 3)}
    assert vgg.detect_model(odd) is None
    assert vgg.detect_model({"fc.weight": torch.zeros(2, 2)}) is None and vgg.detect_model([1, 2]) is None


def test_model_none_loads_the_weights_file_as_what_it_is(vgg16_random, vgg19_random_full, monkeypatch):
    monkeypatch.delenv(vgg.WEIGHTS_ENV, raising=False)
    assert vgg.build_vgg(None, ["relu5_1"], weights=vgg16_random).model == "vgg16"
    assert vgg.build_vgg(None, ["relu5_1"], weights=vgg19_random_full).model == "vgg19"
    assert vgg.resolve_model(None, vgg16_random) == "vgg16" and vgg.resolve_model("vgg19", vgg16_random) == "vgg19"
    monkeypatch.setenv(vgg.WEIGHTS_ENV, str(vgg16_random))  # the environment variable's file, too
    assert vgg.resolve_model(None) == "vgg16"
    monkeypatch.delenv(vgg.WEIGHTS_ENV)
    assert vgg.resolve_model(None) == "vgg19"  # torchvision's: the paper's network, nothing read
    # a layer the detected network lacks is named
    with pytest.raises(ValueError, match="conv5_4.*vgg16"):
        vgg.build_vgg(None, ["conv5_4"], weights=vgg16_random)


def test_shared_hed_file_is_detected_as_vgg16(hed_weights):
    assert vgg.resolve_model(None, hed_weights) == "vgg16"


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ValueError, match="valid names are: conv1_1"):
        vgg.build_vgg("vgg16", ["relu9_9"], weights=None)


def test_env_var_supplies_weights(monkeypatch, vgg16_random):
    monkeypatch.setenv(vgg.WEIGHTS_ENV, str(vgg16_random))

    def no_download(*a, **k):
        raise AssertionError("must not download when the environment variable is set")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    assert vgg.build_vgg("vgg16", ["relu1_1"]).layers[0].weight.shape == (64, 3, 3, 3)


def test_offline_error_names_file_url_and_fixes(monkeypatch):
    monkeypatch.delenv(vgg.WEIGHTS_ENV, raising=False)
    vgg._cached_features.cache_clear()
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as info:
        vgg.build_vgg("vgg19", ["relu1_1"], weights=None)
    msg = str(info.value)
    url = torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
    assert calls == [url]
    for part in (url, url.rsplit("/", 1)[-1], "weights=", "--weights", vgg.WEIGHTS_ENV, "vgg16-hed-features.pth"):
        assert part in msg


def test_download_path_uses_torchvision_api(monkeypatch, vgg16_random):
    """With the download faked, weights=None loads what torchvision's API returns."""
    monkeypatch.delenv(vgg.WEIGHTS_ENV, raising=False)
    vgg._cached_features.cache_clear()
    fake = torch.load(vgg16_random, weights_only=True)
    seen = {}

    def fake_download(url, model_dir=None, progress=True, **kwargs):
        seen["url"], seen["progress"] = url, progress
        return fake

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    net = vgg.build_vgg("vgg16", ["relu1_1"], weights=None)
    assert seen == {"url": torchvision.models.VGG16_Weights.IMAGENET1K_V1.url, "progress": True}
    torch.testing.assert_close(net.layers[0].weight, fake["features.0.weight"])
    vgg._cached_features.cache_clear()


@pytest.mark.parametrize("content, match", [(b"", "empty"), (b"not a zip file at all", "not a PyTorch weights file")])
def test_broken_files(tmp_path, content, match):
    p = tmp_path / "w.pth"
    p.write_bytes(content)
    with pytest.raises(WeightsError, match=match):
        vgg.build_vgg("vgg16", ["relu1_1"], weights=p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(WeightsError, match="no weights file"):
        vgg.build_vgg("vgg16", ["relu1_1"], weights=tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="directory"):
        vgg.build_vgg("vgg16", ["relu1_1"], weights=tmp_path)


def test_not_a_vgg_state_dict(tmp_path):
    p = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, p)
    with pytest.raises(WeightsError, match="no VGG convolution weights"):
        vgg.build_vgg("vgg16", ["relu1_1"], weights=p)


# --------------------------------------------------------------------------- max pooling without indices


def _pool_pair(x: torch.Tensor, seed: int = 0):
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = torch.nn.MaxPool2d(2, 2)(a), vgg.MaxPool2x2()(b)
    gy = torch.randn(ya.shape, generator=torch.Generator().manual_seed(seed)).to(x.dtype)
    ya.backward(gy)
    yb.backward(gy)
    return ya, yb, a.grad, b.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(1, 8, 9, 11), (1, 64, 16, 16), (2, 5, 7, 6), (1, 3, 3, 5)])
def test_maxpool_without_indices_equals_torch_exactly(dtype, channels_last, shape):
    g = torch.Generator().manual_seed(sum(shape))
    for x in (
        torch.randint(0, 3, shape, generator=g).to(dtype),  # many ties in every window
        torch.randn(shape, generator=g).relu().to(dtype),
    ):  # ReLU zeros, bf16 rounding ties
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ya, yb, ga, gb = _pool_pair(x)
        assert torch.equal(ya, yb)
        assert gb.dtype == ga.dtype and gb.shape == ga.shape
        assert torch.equal(ga, gb)  # the same input gets each output's gradient (first maximum on ties)
        if channels_last:
            assert gb.is_contiguous(memory_format=torch.channels_last)


def test_maxpool_keeps_no_indices_for_backward():
    x = torch.rand(1, 16, 32, 32).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)

    def saved(pool):
        a = x.clone().requires_grad_(True)
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
            y = pool(a.relu())  # the ReLU keeps its output, the pool's input, anyway
        y.sum().backward()
        return {t.untyped_storage().data_ptr(): t for t in kept}, y

    torch_kept, _ = saved(torch.nn.MaxPool2d(2, 2))
    lean_kept, y = saved(vgg.MaxPool2x2())
    assert any(t.dtype == torch.int64 for t in torch_kept.values())
    assert all(t.dtype == torch.bfloat16 for t in lean_kept.values())
    # the ReLU's output (the pool's input) and the pool's output, which the next conv keeps anyway
    assert sum(t.untyped_storage().nbytes() for t in lean_kept.values()) == (x.numel() + y.numel()) * 2


def test_maxpool_without_grad_is_plain_max_pool():
    x = torch.rand(1, 4, 6, 6)
    with torch.no_grad():
        y = vgg.MaxPool2x2()(x.requires_grad_(True))
    assert y.grad_fn is None and torch.equal(y, torch.nn.functional.max_pool2d(x, 2, 2))


def test_network_gradient_equals_torchs_max_pooling(vgg16_random):
    """The whole network, float32 and bf16 autocast + channels_last: the image's gradient through
    the index-free pooling is torch's, bit for bit."""
    lean = vgg.build_vgg("vgg16", ["relu2_1", "relu3_1"], weights=vgg16_random)
    vgg._NETS.clear()  # build_vgg hands out its cached network: the reference must be another one
    ref = vgg.build_vgg("vgg16", ["relu2_1", "relu3_1"], weights=vgg16_random)
    assert ref is not lean
    assert sum(isinstance(m, vgg.MaxPool2x2) for m in lean.layers) == 2
    for i, m in enumerate(ref.layers):
        if isinstance(m, torch.nn.MaxPool2d):
            ref.layers[i] = torch.nn.MaxPool2d(2, 2)
    x = torch.rand(1, 3, 37, 30, generator=torch.Generator().manual_seed(0))
    for dtype in (None, torch.bfloat16):
        grads = []
        for net in (ref, lean):
            xi = x.clone().requires_grad_(True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                out = net(xi.contiguous(memory_format=torch.channels_last) if dtype else xi)
            sum(o.float().pow(2).mean() for o in out.values()).backward()
            grads.append(xi.grad)
        assert torch.equal(grads[0], grads[1])


# --------------------------------------------------------------------------- one copy of the weights


def test_networks_share_the_cached_weights(vgg16_random):
    a = vgg.build_vgg("vgg16", ["relu5_1"], weights=vgg16_random)
    b = vgg.build_vgg("vgg16", ["relu2_1"], weights=vgg16_random)
    cached = vgg.load_weights_file(vgg16_random)
    # b stops at relu2_1: compare the layers both networks have
    for (key, pa), pb in zip(a.layers.state_dict().items(), b.layers.state_dict().values(), strict=False):
        assert pa.data_ptr() == pb.data_ptr(), key  # one copy, not one per network
        torch.testing.assert_close(pa, cached[key])
    assert all(isinstance(p, torch.nn.Parameter) and not p.requires_grad for p in a.parameters())
    before = {k: v.clone() for k, v in a.layers.state_dict().items()}
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = a(x.contiguous(memory_format=torch.channels_last))
    sum(o.float().sum() for o in out.values()).backward()
    for k, v in a.layers.state_dict().items():
        assert torch.equal(v, before[k]) and v.grad is None  # a run leaves them as they were


def test_half_precision_weights_are_converted_not_shared(vgg16_random, tmp_path):
    half = {k: v.half() for k, v in torch.load(vgg16_random, weights_only=True).items()}
    path = tmp_path / "half.pth"
    torch.save(half, path)
    net = vgg.build_vgg("vgg16", ["relu1_1"], weights=path)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    torch.testing.assert_close(net.layers[0].weight, half["features.0.weight"].float())


def test_network_is_built_once_per_weights_read(vgg16_random, tmp_path):
    layers = ["relu1_1", "relu2_1"]
    a = vgg.build_vgg("vgg16", layers, weights=vgg16_random)
    assert vgg.build_vgg("vgg16", layers, weights=vgg16_random) is a  # a warm process reuses it
    assert vgg.build_vgg("vgg16", layers, weights=vgg16_random, pooling="avg") is not a
    assert vgg.build_vgg("vgg16", ["relu1_1"], weights=vgg16_random) is not a
    vgg._cached_features.cache_clear()  # the weights read again: a new network from them
    b = vgg.build_vgg("vgg16", layers, weights=vgg16_random)
    assert b is not a
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(a(x)["relu2_1"], b(x)["relu2_1"])


# --------------------------------------------------------------------------- Winograd convolutions (NNPACK)

needs_nnpack = pytest.mark.skipif(not vgg.nnpack_available(), reason="this torch has no NNPACK")


@needs_nnpack
@pytest.mark.parametrize("c_in, c_out, shape", [(3, 8, (13, 17)), (16, 16, (24, 20)), (8, 3, (9, 6))])
def test_winograd_conv_equals_torchs_convolution_and_its_input_gradient(c_in, c_out, shape):
    torch.manual_seed(0)
    conv = vgg.Conv3x3(c_in, c_out).requires_grad_(False)
    x = torch.rand(1, c_in, *shape)
    w = torch.randn(1, c_out, *shape)
    outs = []
    for on in (False, True):
        conv.winograd = on
        xi = x.clone().requires_grad_(True)
        y = conv(xi)
        (y * w).sum().backward()
        outs.append((y.detach(), xi.grad))
    (y0, g0), (y1, g1) = outs
    # NNPACK's Winograd transform: float32 rounding of the transforms, ~1e-5 relative
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-4 * y0.abs().max().item())
    torch.testing.assert_close(g1, g0, rtol=0, atol=1e-4 * g0.abs().max().item())
    assert not torch.equal(y1, y0)  # it did run another algorithm


@needs_nnpack
def test_winograd_conv_keeps_only_the_weight_for_backward():
    conv = vgg.Conv3x3(8, 8).requires_grad_(False)
    conv.winograd = True
    x = torch.rand(1, 8, 10, 10, requires_grad=True)
    kept: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        conv(x).sum().backward()
    assert len(kept) == 1 and kept[0] is conv.weight


@needs_nnpack
def test_winograd_conv_leaves_other_calls_to_torch(monkeypatch):
    """bf16 (autocast), channels-last input and a weight that wants its gradient: torch's convolution."""
    calls = []
    monkeypatch.setattr(vgg._WinogradConv3x3Fn, "apply", lambda *a: calls.append(1) or torch.zeros(()))
    conv = vgg.Conv3x3(4, 4)
    conv.winograd = True
    x = torch.rand(1, 4, 6, 6)
    conv(x)  # a weight that requires grad: not frozen
    conv.requires_grad_(False)
    conv(x.contiguous(memory_format=torch.channels_last))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv(x)
    assert calls == []
    conv(x)
    assert calls == [1]


@needs_nnpack
def test_network_with_winograd_convolutions_matches_torchs(vgg16_random):
    net = vgg.build_vgg("vgg16", ["relu1_1", "relu3_1", "conv4_2", "relu5_1"], weights=str(vgg16_random))
    x = torch.rand(1, 3, 40, 48)
    res = []
    for on in (False, True):
        assert net.set_winograd(on) == on
        xi = x.clone().requires_grad_(True)
        f = net(xi)
        sum(v.pow(2).mean() for v in f.values()).backward()
        res.append(({k: v.detach() for k, v in f.items()}, xi.grad))
    net.set_winograd(False)
    for k in res[0][0]:
        torch.testing.assert_close(res[1][0][k], res[0][0][k], rtol=0, atol=1e-4 * res[0][0][k].abs().max().item())
    torch.testing.assert_close(res[1][1], res[0][1], rtol=0, atol=1e-4 * res[0][1].abs().max().item())


# --------------------------------------------------------------------------- ReLU and pool at once


def _saved_storages(net, x):
    """The network's output, the image's gradient and {storage: (dtype, shape)} autograd kept."""
    saved: dict[int, tuple[torch.dtype, tuple[int, ...]]] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = (t.dtype, tuple(t.shape))
        return t

    xi = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(xi)
    sum(o.pow(2).mean() for o in out.values()).backward()
    return out, xi.grad, saved


@pytest.mark.parametrize("channels_last", [False, True])
def test_relu_before_a_pool_runs_with_it_and_keeps_torchs_numbers(vgg16_random, channels_last):
    """A ReLU whose output no loss wants runs with the max pool after it (float32, torch's pooling):
    output and gradient bit for bit those of ReLU then max_pool2d, odd sizes and ties included,
    and the ReLU's full-size output is no longer kept for backward."""
    layers = ["relu1_1", "relu2_1", "relu3_1"]
    fused = vgg.build_vgg("vgg16", layers, weights=vgg16_random)
    fused.set_lean_pool(False)
    assert fused.fusible == {3, 8}  # relu1_2 and relu2_2; relu1_1 and relu2_1 are wanted
    fused.blocks = set()  # the ReLU and pool alone here (the whole blocks: test_vgg_blocks...)
    vgg._NETS.clear()  # build_vgg hands out its cached network: the reference must be another one
    ref = vgg.build_vgg("vgg16", layers, weights=vgg16_random)
    vgg._NETS.clear()
    assert ref is not fused
    ref.set_lean_pool(False)
    ref.fusible = set()
    x = torch.rand(1, 3, 37, 30, generator=torch.Generator().manual_seed(0))
    x[..., :8, :] = 0.5  # flat rows: ties in the windows, and windows whose maximum the ReLU zeroes
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out_f, grad_f, saved_f = _saved_storages(fused, x)
    out_r, grad_r, saved_r = _saved_storages(ref, x)
    assert all(torch.equal(out_f[k], out_r[k]) for k in layers)
    assert torch.equal(grad_f, grad_r)
    full = [s for s in saved_r.values() if s == (torch.float32, (1, 64, 37, 30))]
    assert len(full) == 2  # relu1_1 (a style layer) and relu1_2 (for its ReLU and the pool)
    assert [s for s in saved_f.values() if s == (torch.float32, (1, 64, 37, 30))] == full[:1]
    assert grad_f.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_a_wanted_relu_or_another_pooling_is_not_fused(vgg16_random):
    net = vgg.build_vgg("vgg16", ["relu1_2", "relu2_1"], weights=vgg16_random)
    assert net.fusible == set()  # relu1_2's output is wanted as it is
    avg = vgg.build_vgg("vgg16", ["relu2_1"], weights=vgg16_random, pooling="avg")
    assert avg.fusible == set()
    lean = vgg.build_vgg("vgg16", ["relu2_1"], weights=vgg16_random)
    lean.set_lean_pool(True)  # the index-free pool keeps the ReLU's output anyway: not fused
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    assert not lean.layers[4].fuses_relu(x)
    lean.set_lean_pool(False)
    assert lean.layers[4].fuses_relu(x)
    with torch.no_grad():
        assert not lean.layers[4].fuses_relu(x)  # no backward, nothing to keep: the plain layers


# --------------------------------------------------------------------------- a block as one function


def _pair(vgg16_random, layers):
    """(the network with its blocks on, the same network layer by layer) for ``layers``."""
    net = vgg.build_vgg("vgg16", layers, weights=vgg16_random)
    vgg._NETS.clear()  # build_vgg hands out its cached network: the reference must be another one
    ref = vgg.build_vgg("vgg16", layers, weights=vgg16_random)
    vgg._NETS.clear()
    for n in (net, ref):
        n.set_lean_pool(False)
    ref.blocks = set()
    return net, ref


def _grams(out):
    """A Gram-matrix loss at each wanted layer, as the style loss taps it (gradient reshaped)."""
    total = 0
    for t in out.values():
        f = t.float().reshape(t.shape[1], -1)
        total = total + (f @ f.T).square().mean() * 1e-3 + t.float().pow(2).mean()
    return total


def x_format(x):
    return (
        torch.channels_last
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        else torch.contiguous_format
    )


def _run(net, x, autocast=False, taps=None):
    xi = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = net(xi, taps)
        loss = _grams(out) if taps is None else sum(v[1] for v in out.tapped.values()) + _grams(out)
    loss.backward()
    return out, xi.grad


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("band", [None, 1])
def test_vgg_blocks_run_as_one_function_with_the_layers_numbers(vgg16_random, monkeypatch, channels_last, band):
    """conv1_1 .. pool1 and conv2_1 .. pool2 run as one function each (the second convolution on
    bands of rows: one band, or two-row bands with band=1): outputs and the image's gradient are
    those of the layers one by one, up to float32 rounding; odd sizes and ties in the pool
    windows included, relu1_1 and relu2_1 wanted by a loss and pool2's output too."""
    if band is not None:
        monkeypatch.setattr(vgg, "BAND_BYTES", band)
    layers = ["relu1_1", "relu2_1", "pool2", "relu3_1"]
    net, ref = _pair(vgg16_random, layers)
    assert net.blocks == {0, 5}
    x = torch.rand(1, 3, 37, 30, generator=torch.Generator().manual_seed(0))
    x[..., :8, :] = 0.5  # flat rows: ties in the windows, and windows whose maximum the ReLU zeroes
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out, grad = _run(net, x)
    out_r, grad_r = _run(ref, x)
    assert out["relu1_1"].grad_fn.name().startswith("_ConvPairPoolFn")
    pair = torch.cat([x, x.flip(-1)]).contiguous(memory_format=x_format(x))  # a batch of two
    (two, g2), (two_r, g2_r) = _run(net, pair), _run(ref, pair)
    torch.testing.assert_close(
        two["relu3_1"], two_r["relu3_1"], rtol=1e-5, atol=1e-5 * two_r["relu3_1"].abs().max().item()
    )
    torch.testing.assert_close(g2, g2_r, rtol=1e-4, atol=1e-5 * g2_r.abs().max().item())
    assert not ref.blocks and out_r["relu1_1"].grad_fn.name() != out["relu1_1"].grad_fn.name()
    for k in layers:
        torch.testing.assert_close(out[k], out_r[k], rtol=1e-5, atol=1e-5 * out_r[k].abs().max().item())
    torch.testing.assert_close(grad, grad_r, rtol=1e-4, atol=1e-5 * grad_r.abs().max().item())
    assert grad.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_vgg_block_under_bf16_autocast_and_with_taps(vgg16_random, monkeypatch):
    """bfloat16 autocast (the CPU's bf16 plan, channels_last) with the engine's taps (losses run
    as soon as relu1_1 exists): the block's outputs and gradient are the layers' to bf16 rounding,
    and the image's gradient comes back in float32."""
    monkeypatch.setattr(vgg, "BAND_BYTES", 3000)
    layers = ["relu1_1", "relu2_1", "relu3_1"]
    net, ref = _pair(vgg16_random, layers)
    x = torch.rand(1, 3, 41, 34, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=torch.channels_last)
    taps = {"relu1_1": lambda t: t.float().mean(), "relu2_1": lambda t: t.float().square().mean()}
    out, grad = _run(net, x, autocast=True, taps=taps)
    out_r, grad_r = _run(ref, x, autocast=True, taps=taps)
    assert out["relu1_1"].dtype == torch.bfloat16 and grad.dtype == torch.float32
    assert set(out.tapped) == {"relu1_1", "relu2_1"}
    for k in layers:
        assert (out[k].float() - out_r[k].float()).norm() <= 2e-2 * out_r[k].float().norm()
    assert (grad - grad_r).norm() <= 2e-2 * grad_r.norm()


def test_vgg_block_adds_to_the_losses_gradient_in_place(vgg16_random, monkeypatch):
    """The gradient a loss hands over for relu1_1 (reshaped back from the Gram matrix's) is the
    tensor the block adds conv1_2's gradient to and masks, not a copy; a gradient something else
    still holds is copied first and left as it was."""
    net, _ = _pair(vgg16_random, ["relu1_1", "relu2_1"])
    x = torch.rand(1, 3, 20, 18, generator=torch.Generator().manual_seed(2), requires_grad=True)
    handed, masked = [], []
    real = vgg._conv_input_grad

    def spy(g, inp, w, u=None):
        if inp.shape[1] == 3:  # conv1_1's input gradient: from the masked relu1_1 gradient
            masked.append(g.data_ptr())
        return real(g, inp, w, u)

    monkeypatch.setattr(vgg, "_conv_input_grad", spy)
    out = net(x)
    out["relu1_1"].register_hook(lambda g: handed.append(g.data_ptr()))  # records, keeps nothing
    _grams(out).backward()
    assert handed and masked == handed

    kept = []
    x.grad = None
    out = net(x)
    out["relu1_1"].register_hook(lambda g: kept.append((g, g.clone())))  # holds the gradient
    _grams(out).backward()
    ((g, before),) = kept
    assert torch.equal(g, before)  # not written over
    assert masked[-1] != g.data_ptr()


def test_vgg_block_without_a_loss_at_relu_a(vgg16_random):
    """relu1_1 wanted by nothing: the block still runs (its ReLU's gradient starts from zero)."""
    net, ref = _pair(vgg16_random, ["relu2_2"])
    assert net.blocks == {0}  # relu2_2 is wanted: block 2 is not fused
    x = torch.rand(1, 3, 24, 22, generator=torch.Generator().manual_seed(3))
    (out, grad), (out_r, grad_r) = _run(net, x), _run(ref, x)
    torch.testing.assert_close(out["relu2_2"], out_r["relu2_2"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_r, rtol=1e-4, atol=1e-5 * grad_r.abs().max().item())


def test_vgg_block_not_run_where_another_path_serves(vgg16_random):
    """No gradient, the index-free pool, or a convolution wanted: the layers one by one."""
    net = vgg.build_vgg("vgg16", ["relu2_1"], weights=vgg16_random)
    net.set_lean_pool(True)
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    assert not net._runs_block(0, x)  # the index-free pool keeps relu1_2's output anyway
    net.set_lean_pool(False)
    assert net._runs_block(0, x)
    with torch.no_grad():
        assert not net._runs_block(0, x)
    assert vgg.build_vgg("vgg16", ["conv1_2", "relu3_1"], weights=vgg16_random).blocks == {5}
    assert vgg.build_vgg("vgg16", ["relu2_1"], weights=vgg16_random, pooling="avg").blocks == set()


def test_sole_owner_tells_a_gradient_that_may_be_written_over():
    fresh = torch.ones(4, 6)
    assert vgg._sole_owner(fresh)
    other = fresh.detach()
    assert not vgg._sole_owner(fresh)  # its memory held by another tensor too
    del other
    assert vgg._sole_owner(fresh)
    assert not vgg._sole_owner(torch.ones(6).expand(4, 6))  # expanded: one row for all
    whole = torch.ones(6, 4).T  # the whole of a tensor only the view holds
    assert vgg._sole_owner(whole)
    base = torch.ones(6, 4)
    view, alias = base.T, base.detach()
    del base
    assert not vgg._sole_owner(view)  # its memory is held by another tensor too
    del alias
    assert vgg._sole_owner(view)
    assert not vgg._sole_owner(torch.ones(8, 4)[:6])  # part of another tensor
    assert not vgg._sole_owner(torch.ones(3, requires_grad=True))
