"""napari-nst's Winograd F(4x4, 3x3) convolution (encoder/winograd.py) and its use by VGG's layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_nst.core.encoder import vgg, winograd


def _reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, gy: torch.Tensor):
    """float64 output and input gradient of torch's convolution."""
    xr = x.double().requires_grad_(True)
    y = F.conv2d(xr, w.double(), b.double(), padding=1)
    y.backward(gy.double())
    return y.detach(), xr.grad


@pytest.mark.parametrize(
    "c_in, c_out, shape",
    [(8, 16, (13, 17)), (16, 8, (4, 4)), (5, 3, (1, 9)), (12, 12, (9, 2))],  # whole tiles, partial tiles, one row
)
def test_output_and_input_gradient_equal_torchs_convolution(c_in, c_out, shape):
    torch.manual_seed(0)
    x = torch.randn(1, c_in, *shape)
    w = torch.randn(c_out, c_in, 3, 3) / (3 * c_in**0.5)
    b = torch.randn(c_out)
    gy = torch.randn(1, c_out, *shape)
    y0, g0 = _reference(x, w, b, gy)
    xi = x.clone().requires_grad_(True)
    y = winograd.WinogradConv3x3Fn.apply(xi, winograd.transform_weight(w), b)
    y.backward(gy)
    assert y.shape == y0.shape and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    # float32 rounding of the transforms (constants 1/4, 1/6, 1/24): ~1e-5 relative
    torch.testing.assert_close(y.double(), y0, rtol=0, atol=1e-4 * y0.abs().max().item())
    torch.testing.assert_close(xi.grad.double(), g0, rtol=0, atol=1e-4 * g0.abs().max().item())


def test_rows_of_tiles_at_a_time_give_the_same_convolution(monkeypatch):
    """Large pictures are transformed a few rows of tiles at a time (CHUNK_BYTES); here one row."""
    torch.manual_seed(2)
    x, w = torch.randn(1, 6, 14, 11), torch.randn(5, 6, 3, 3)
    u = winograd.transform_weight(w)
    whole = winograd.correlate(x, u)
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    rows = winograd.correlate(x, u)
    torch.testing.assert_close(rows, whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(rows, F.conv2d(x, w, padding=1), rtol=0, atol=1e-4 * whole.abs().max().item())


def test_the_kernel_is_not_symmetric_so_a_missing_flip_would_show():
    """The backward's flips are what make one transform serve both directions: without them the
    gradient is the correlation with the unflipped kernel, which this asymmetric kernel tells apart."""
    torch.manual_seed(1)
    x, gy = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    w = torch.randn(4, 4, 3, 3)
    _, g0 = _reference(x, w, torch.zeros(4), gy)
    wrong = winograd.correlate(gy, winograd.transform_weight(w), transpose=True)
    assert (wrong.double() - g0).abs().max() > 0.1 * g0.abs().max()


def test_conv3x3_uses_it_only_for_wide_frozen_float32_layers(monkeypatch):
    calls = []
    real = winograd.WinogradConv3x3Fn.apply
    monkeypatch.setattr(winograd.WinogradConv3x3Fn, "apply", lambda *a: calls.append(1) or real(*a))
    narrow = vgg.Conv3x3(winograd.WIDE_MIN // 2, 4).requires_grad_(False)
    wide = vgg.Conv3x3(winograd.WIDE_MIN, 4)
    for m in (narrow, wide):
        m.winograd_wide = True
    narrow(torch.rand(1, winograd.WIDE_MIN // 2, 6, 6))
    x = torch.rand(1, winograd.WIDE_MIN, 6, 6)
    wide(x)  # the weight wants its gradient: torch's convolution
    wide.requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        wide(x)
    wide.padding_mode = "reflect"  # the transform pads with zeros
    torch.testing.assert_close(wide(x), F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), wide.weight, wide.bias))
    wide.padding_mode = "zeros"
    two = torch.rand(2, winograd.WIDE_MIN, 6, 6)  # a batch: torch's convolution, every image
    torch.testing.assert_close(wide(two), F.conv2d(two, wide.weight, wide.bias, padding=1))
    assert calls == []
    y = wide(x)
    assert calls == [1]
    torch.testing.assert_close(y, F.conv2d(x, wide.weight, wide.bias, padding=1), rtol=0, atol=1e-4)


def test_its_output_may_be_written_in_place_as_vggs_relu_does():
    conv = vgg.Conv3x3(winograd.WIDE_MIN, 8).requires_grad_(False)
    conv.winograd_wide = True
    for shape in ((8, 12), (7, 9)):  # whole tiles and partial ones
        x = torch.randn(1, winograd.WIDE_MIN, *shape, requires_grad=True)
        y = torch.nn.ReLU(inplace=True)(conv(x))
        torch.autograd.grad(y.sum(), x)  # no "view modified in place" error


def test_only_the_transformed_kernel_is_kept_for_backward():
    conv = vgg.Conv3x3(winograd.WIDE_MIN, 8).requires_grad_(False)
    conv.winograd_wide = True
    x = torch.rand(1, winograd.WIDE_MIN, 6, 6, requires_grad=True)
    kept: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        conv(x).sum().backward()
    assert len(kept) == 1 and kept[0] is conv.transformed_weight()


def test_the_transformed_kernel_follows_the_weight_and_is_released_when_off(vgg16_random):
    net = vgg.build_vgg("vgg16", ["relu3_3"], weights=str(vgg16_random))
    wide = [m for m in net.layers if isinstance(m, vgg.Conv3x3) and m.in_channels >= winograd.WIDE_MIN]
    assert wide  # conv3_2 and conv3_3
    net.set_winograd_wide(True)
    x = torch.rand(1, 3, 24, 24)
    before = net(x)["relu3_3"]
    u = wide[0].transformed_weight()
    assert wide[0].transformed_weight() is u  # made once
    with torch.no_grad():
        wide[0].weight.mul_(2)  # new weights (the version counter moves)
    assert wide[0].transformed_weight() is not u
    assert not torch.allclose(net(x)["relu3_3"], before)
    net.set_winograd_wide(False)
    assert all(m._u is None for m in wide)


def test_network_with_it_matches_torchs_features_and_input_gradient(vgg16_random):
    net = vgg.build_vgg("vgg16", ["relu1_1", "relu3_1", "conv4_2", "relu5_1"], weights=str(vgg16_random))
    x = torch.rand(1, 3, 40, 52)
    res = []
    for on in (False, True):
        net.set_winograd_wide(on)
        xi = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        f = net(xi)
        sum(v.pow(2).mean() for v in f.values()).backward()
        res.append(({k: v.detach() for k, v in f.items()}, xi.grad))
    net.set_winograd_wide(False)
    for k in res[0][0]:
        torch.testing.assert_close(res[1][0][k], res[0][0][k], rtol=0, atol=1e-4 * res[0][0][k].abs().max().item())
    torch.testing.assert_close(res[1][1], res[0][1], rtol=0, atol=1e-4 * res[0][1].abs().max().item())
    assert not torch.equal(res[1][0]["relu5_1"], res[0][0]["relu5_1"])  # it did run another algorithm


@pytest.mark.parametrize("shape", [(13, 17), (4, 4), (1, 9), (9, 2), (8, 12)])
@pytest.mark.parametrize("transpose", [False, True])
def test_mirror_is_the_correlation_of_the_flipped_input_flipped_back(monkeypatch, shape, transpose):
    """The backward's ``mirror`` (no flipped copies) against the flips it replaces, whole and a
    row of tiles at a time (the padded band then starts inside the picture)."""
    torch.manual_seed(3)
    w = torch.randn(6, 5, 3, 3)  # asymmetric, 5 -> 6 channels (transposed: 6 -> 5)
    u = winograd.transform_weight(w)
    x = torch.randn(1, 6 if transpose else 5, *shape)
    flipped = winograd.correlate(x.flip(2, 3), u, transpose=transpose).flip(2, 3)
    tol = 2e-5 * flipped.abs().max().item()  # float32 rounding, summed in another order
    torch.testing.assert_close(winograd.correlate(x, u, transpose=transpose, mirror=True), flipped, rtol=0, atol=tol)
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    torch.testing.assert_close(winograd.correlate(x, u, transpose=transpose, mirror=True), flipped, rtol=0, atol=tol)
    # and it is not the unmirrored correlation (an asymmetric kernel tells them apart)
    plain = winograd.correlate(x, u, transpose=transpose)
    assert (plain - flipped).abs().max() > 100 * tol


def test_the_work_space_is_made_once_and_released_with_the_kernels():
    """Calls of the same or smaller size reuse the work space (no intermediates made per call);
    releasing a layer's kernel frees it."""
    torch.manual_seed(4)
    conv = vgg.Conv3x3(winograd.WIDE_MIN, 8).requires_grad_(False)
    conv.winograd_wide = True
    winograd.release_workspace()
    assert winograd.workspace_bytes() == 0
    x = torch.randn(1, winograd.WIDE_MIN, 12, 10, requires_grad=True)
    conv(x).sum().backward()
    held = winograd.workspace_bytes()
    assert held > 0
    buffers = {n: b.data_ptr() for n, b in winograd._WORK.buffers.items()}
    conv(x[..., :8, :8]).sum().backward()
    assert winograd.workspace_bytes() == held
    assert {n: b.data_ptr() for n, b in winograd._WORK.buffers.items()} == buffers
    conv.release()
    assert winograd.workspace_bytes() == 0 and conv._u is None


@pytest.mark.parametrize("band_bytes", [vgg.BAND_BYTES, 1])  # whole maps; two rows at a time
def test_the_128_channel_plan_runs_inside_the_fused_blocks_and_matches_torch(vgg16_random, monkeypatch, band_bytes):
    """From 128 input channels conv2_2 (inside block 2, :class:`vgg._ConvPairPoolFn`, on bands of
    rows) and conv3_1 go through the transform too: the block still runs as one function, forward
    and input gradient equal torch's to float32 rounding, and the layers under 128 channels keep
    no kernel."""
    monkeypatch.setattr(vgg, "BAND_BYTES", band_bytes)
    net = vgg.build_vgg("vgg16", ["relu1_1", "relu2_1", "relu3_1", "relu4_1"], weights=str(vgg16_random))
    net.set_lean_pool(False)  # torch's pool, as the float32 plans run: the blocks fuse
    assert net.blocks == {0, 5, 12}  # conv1_x, conv2_x, conv3_2 and conv3_3, each with its pool
    x = torch.rand(1, 3, 30, 44)
    calls: list[int] = []
    real = winograd.correlate

    def counted(inp, u, transpose=False, mirror=False):
        calls.append(u.shape[2])  # the layer's input channels (u: 36 x out x in)
        return real(inp, u, transpose=transpose, mirror=mirror)

    monkeypatch.setattr(winograd, "correlate", counted)
    res = []
    for on, least in ((False, winograd.WIDE_MIN), (True, 128)):
        net.set_winograd_wide(on, min_channels=least)
        xi = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        f = net(xi)
        assert f["relu2_1"].grad_fn.name().startswith("_ConvPairPoolFn")
        sum(v.pow(2).mean() for v in f.values()).backward()
        res.append(({k: v.detach() for k, v in f.items()}, xi.grad))
    assert set(calls) == {128, 256}  # conv2_2 and conv3_1, then the wide layers; never a 64-channel one
    convs = [m for m in net.layers if isinstance(m, vgg.Conv3x3)]
    assert all((m._u is not None) == (m.in_channels >= 128) for m in convs)
    for k in res[0][0]:
        torch.testing.assert_close(res[1][0][k], res[0][0][k], rtol=0, atol=1e-4 * res[0][0][k].abs().max().item())
    torch.testing.assert_close(res[1][1], res[0][1], rtol=0, atol=1e-4 * res[0][1].abs().max().item())
    assert not torch.equal(res[1][0]["relu3_1"], res[0][0]["relu3_1"])  # it did run another algorithm
    # back to the wide plan: the 128-channel layers drop their kernels, the wide ones and the
    # shared work space stay
    held = winograd.workspace_bytes()
    net.set_winograd_wide(True)
    assert all((m._u is not None) == (m.in_channels >= winograd.WIDE_MIN) for m in convs)
    assert winograd.workspace_bytes() == held > 0
    net.set_winograd_wide(False)
    assert all(m._u is None for m in convs) and winograd.workspace_bytes() == 0


def test_kernels_made_at_each_call_give_the_kept_kernels_numbers_and_keep_none(vgg16_random, monkeypatch):
    """``keep_kernels(False)`` (a large level): each layer's transform is made at every call into
    the work space's one buffer, once per call of a fused block whatever its bands, and the
    features and input gradient are exactly those of the kept kernels; no layer keeps one."""
    monkeypatch.setattr(vgg, "BAND_BYTES", 1)  # conv2_2 on many bands of rows
    net = vgg.build_vgg("vgg16", ["relu1_1", "relu2_1", "relu3_1", "relu4_1"], weights=str(vgg16_random))
    net.set_lean_pool(False)
    net.set_winograd_wide(True, min_channels=128)  # conv2_2 (in block 2), conv3_x, conv4_1
    convs = [m for m in net.layers if isinstance(m, vgg.Conv3x3)]
    made: list[tuple[int, ...]] = []
    real = winograd.transform_weight
    monkeypatch.setattr(
        winograd, "transform_weight", lambda w, out=None: made.append(tuple(w.shape[:2])) or real(w, out)
    )
    x = torch.rand(1, 3, 30, 44)
    res = []
    for keep in (True, False):
        net.keep_kernels(keep)
        made.clear()
        xi = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        f = net(xi)
        sum(v.pow(2).mean() for v in f.values()).backward()
        res.append(({k: v.detach() for k, v in f.items()}, xi.grad, list(made)))
        assert all((m._u is not None) == (keep and m.in_channels >= 128) for m in convs)
    wide = [(m.out_channels, m.in_channels) for m in convs if m.in_channels >= 128]
    assert len(wide) == 5 and sorted(res[0][2]) == sorted(wide)  # kept: each made once
    assert sorted(res[1][2]) == sorted(wide * 2)  # per call: once forward, once backward, not per band
    for k in res[0][0]:
        assert torch.equal(res[1][0][k], res[0][0][k]), k
    assert torch.equal(res[1][1], res[0][1])
    # the buffer grew to the largest layer's (conv4_1) and shrank again when the backward reached
    # conv2_2, whose kernel is 8x smaller (conv3_1's, 4x, still used it)
    assert winograd._WORK.buffers["u"].numel() == 36 * 128 * 128
    net(x.contiguous(memory_format=torch.channels_last))  # forward only: conv4_1 last
    assert winograd._WORK.buffers["u"].numel() == 36 * 256 * 512
    net.keep_kernels(True)
    net.set_winograd_wide(False)
    assert winograd.workspace_bytes() == 0
