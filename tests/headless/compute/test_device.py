"""Device choice with faked capabilities: what ``auto`` picks on CUDA 7.0 / 8.0, MPS, CPUs with and
without fast bfloat16, and the per-device details (no GPU needed; no timings)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_nst.core.compute import device as D
from napari_nst.core.errors import OptionError, PrecisionWarning
from napari_nst.core.optim import engine
from napari_nst.core.optim.levers import Levers, use_levers

CPU, CUDA, CUDA1, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("cuda:1"), torch.device("mps")


_ONEDNN_BF16_CHECK = D.cpu_has_fast_bf16  # the real check, which reads the (faked) oneDNN test


@pytest.fixture
def fake(monkeypatch):
    """``fake(cuda=[(8, 0), ...], mps=bool, cpu_bf16=bool, current=0)``: the machine's capabilities."""

    def set_up(cuda=(), mps=False, cpu_bf16=False, current=0, isa="AVX512"):
        caps = [tuple(c) for c in cuda]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(caps))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(caps))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: caps[current if i is None else i])
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: cpu_bf16)
        # the capability is faked here: undo conftest's NAPARI_NST_TEST_PRECISION switch, if set
        monkeypatch.setattr(D, "cpu_has_fast_bf16", _ONEDNN_BF16_CHECK)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: isa)

    return set_up


# --------------------------------------------------------------------------- device


@pytest.mark.parametrize(
    "caps, expected",
    [
        (dict(cuda=[(7, 0)], mps=False), "cuda"),
        (dict(cuda=[], mps=True), "mps"),
        (dict(cuda=[], mps=False), "cpu"),
    ],
)
def test_auto_device_prefers_cuda_then_mps(fake, caps, expected):
    fake(**caps)
    assert D.pick_device("auto").type == expected


def test_devices_that_are_not_there_are_refused_naming_what_to_use(fake):
    fake(cuda=[(8, 0)])
    assert D.pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(OptionError, match="'cuda:0'"):
        D.pick_device("cuda:1")
    with pytest.raises(OptionError, match="device='auto' or device='cpu'"):
        D.pick_device("mps")
    fake(cuda=[])
    with pytest.raises(OptionError, match="CUDA is not available"):
        D.pick_device("cuda")


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize(
    "cap, expected",
    [((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16), ((7, 5), None), ((7, 0), None), ((6, 0), None)],
)
def test_auto_precision_on_cuda_needs_compute_capability_8(fake, cap, expected):
    fake(cuda=[cap])
    assert D.autocast_dtype("auto", CUDA) is expected
    assert D.autocast_dtype("float32", CUDA) is None


def test_auto_precision_asks_the_chosen_gpu_not_the_current_one(fake):
    fake(cuda=[(7, 0), (8, 6)], current=0)
    assert D.autocast_dtype("auto", CUDA1) is torch.bfloat16
    assert D.autocast_dtype("auto", CUDA) is None  # "cuda" alone: the current device, cc 7.0
    fake(cuda=[(7, 0), (8, 6)], current=1)
    assert D.autocast_dtype("auto", torch.device("cuda:0")) is None


@pytest.mark.parametrize("caps, dev", [(dict(cuda=[(7, 0)]), CUDA), (dict(cpu_bf16=False), CPU)])
def test_explicit_bf16_where_it_is_emulated_warns_with_what_to_do(fake, caps, dev):
    fake(**caps)
    with pytest.warns(PrecisionWarning, match="emulated.*precision='auto' or 'float32'"):
        assert D.autocast_dtype("bfloat16", dev) is torch.bfloat16


@pytest.mark.parametrize("caps, dev", [(dict(cuda=[(8, 0)]), CUDA), (dict(cpu_bf16=True), CPU)])
def test_explicit_bf16_where_it_is_native_is_quiet(fake, caps, dev):
    fake(**caps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert D.autocast_dtype("bfloat16", dev) is torch.bfloat16


@pytest.mark.parametrize("fast, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_precision_on_the_cpu_follows_onednn_fast_bf16(fake, fast, expected):
    fake(cpu_bf16=fast)
    assert D.autocast_dtype("auto", CPU) is expected
    assert D.cpu_has_fast_bf16() is fast


def test_mps_runs_float32_and_refuses_bf16_before_the_run(fake):
    fake(mps=True)
    assert D.autocast_dtype("auto", MPS) is None
    with pytest.raises(OptionError, match="precision='float32'"):
        D.autocast_dtype("bfloat16", MPS)


def test_emulated_bf16_is_refused_through_the_engine_too(fake, content, style, fast):
    """An explicit bfloat16 run on a CPU without fast bf16 warns before its first evaluation."""
    fake(cpu_bf16=False)
    gen = _run(content, style, _opts(fast, precision="bfloat16", steps=1))
    with pytest.warns(PrecisionWarning):
        rec = next(gen)
    assert rec.precision == "bfloat16"
    gen.close()


# --------------------------------------------------------------------------- layout and pooling


@pytest.mark.parametrize(
    "caps, dev, precision, cl, lean, winograd",
    [
        # CPU with avx512_bf16 / AMX: bf16 (oneDNN), channels-last and the index-free pool (its memory)
        (dict(cpu_bf16=True), CPU, "auto", True, True, False),
        # CPU without fast bf16: float32, the textbook's network (oneDNN's direct convolutions,
        # contiguous, torch's pooling): the faster algorithms only where the tuner measured them
        (dict(cpu_bf16=False, isa="AVX2"), CPU, "auto", False, False, False),
        (dict(cpu_bf16=False, isa="AVX512"), CPU, "auto", False, False, False),
        (dict(cpu_bf16=True, isa="AVX512"), CPU, "float32", False, False, False),
        # Ampere and later: bf16 with channels-last (tensor cores are NHWC-native), torch's pooling
        (dict(cuda=[(8, 0)]), CUDA, "auto", True, False, False),
        (dict(cuda=[(8, 0)]), CUDA, "float32", False, False, False),
        # Volta / Turing: float32, contiguous
        (dict(cuda=[(7, 0)]), CUDA, "auto", False, False, False),
        # Apple MPS: float32, contiguous, torch's pooling
        (dict(mps=True), MPS, "auto", False, False, False),
    ],
)
def test_auto_picks_layout_and_pooling_by_device_and_dtype(fake, caps, dev, precision, cl, lean, winograd):
    fake(**caps)
    plan = D.network_plan(dev, D.autocast_dtype(precision, dev))
    assert (plan.channels_last, plan.lean_pool, plan.winograd) == (cl, lean, winograd)


def test_the_engine_runs_the_network_as_planned(fake, monkeypatch, content, style, fast):
    seen = []
    original = engine.VGGFeatures.forward

    def spy(self, x, taps=None):
        if x.requires_grad:
            pools = [m.lean for m in self.layers if hasattr(m, "lean")]
            convs = [m.winograd for m in self.layers if hasattr(m, "winograd")]
            cl = x.is_contiguous(memory_format=torch.channels_last)
            seen.append((cl, all(pools), all(convs), torch.is_autocast_enabled("cpu")))
        return original(self, x, taps)

    monkeypatch.setattr(engine.VGGFeatures, "forward", spy)
    for fast_bf16 in (False, True):
        fake(cpu_bf16=fast_bf16)
        seen.clear()
        recs = list(_run(content, style, _opts(fast, steps=2)))
        plan = D.network_plan(CPU, torch.bfloat16 if fast_bf16 else None)
        assert seen == [(plan.channels_last, plan.lean_pool, plan.winograd, fast_bf16)] * 2
        assert recs[-1].precision == ("bfloat16" if fast_bf16 else "float32")


# --------------------------------------------------------------------------- per-device details


def test_lbfgs_keeps_its_pairs_in_bfloat16_on_the_cpu_only(fake):
    fake(cuda=[(8, 0)])
    assert D.lbfgs_history_dtype(CPU) == torch.bfloat16  # the machine's RAM: half the pairs' bytes
    assert D.lbfgs_history_dtype(CUDA) is None  # float32: no extra kernel launches per step


def test_the_engine_stores_the_cpu_runs_pairs_in_bfloat16(monkeypatch, content, style, fast):
    made = []

    class Spy(engine.LBFGS):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(engine, "LBFGS", Spy)
    list(_run(content, style, _opts(fast, steps=4, precision="float32")))
    (opt,) = made
    assert opt.pairs and all(s.dtype == y.dtype == torch.bfloat16 for s, y, _ in opt.pairs)
    made.clear()
    with use_levers(Levers(history_dtype="float32")):
        list(_run(content, style, _opts(fast, steps=4, precision="float32")))
    assert made[0].pairs and all(s.dtype == torch.float32 for s, _, _ in made[0].pairs)


@pytest.mark.parametrize(
    "message",
    [
        "CUDA error: out of memory",
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        "MPS backend out of memory (MPS allocated: 1 GB)",
        "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory",
    ],
)
def test_allocation_failures_are_out_of_memory(message):
    assert D.is_oom(RuntimeError(message))


@pytest.mark.parametrize("message", ["cuDNN error: CUDNN_STATUS_EXECUTION_FAILED", "CUDA error: illegal memory access"])
def test_other_failures_are_not(message):
    assert not D.is_oom(RuntimeError(message))


def test_cudnn_benchmark_is_restored_after_a_cuda_run(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    with D.cudnn_benchmark(CUDA):
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark is False
    with pytest.raises(KeyError), D.cudnn_benchmark(CUDA):
        raise KeyError("a failed run")
    assert torch.backends.cudnn.benchmark is False
    with D.cudnn_benchmark(CPU):
        assert torch.backends.cudnn.benchmark is False


def test_mps_memory_is_emptied_before_a_size_is_suggested(monkeypatch, fast):
    calls = []
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: calls.append("empty"))
    monkeypatch.setattr(engine, "available_memory", lambda dev: calls.append("ask") or 2 * 2**30)
    err = engine._out_of_memory((768, 1024), (384, 512), _opts(fast, size=512), 512, MPS, None, "RuntimeError: MPS")
    assert calls[:2] == ["empty", "ask"]
    assert 0 < err.suggested_size < 512 and f"size={err.suggested_size}" in str(err)
    assert "bfloat16" not in str(err)  # not suggested where it is not run


def test_mps_resizes_on_the_host():
    assert D.resize_on_host(MPS) and not D.resize_on_host(CPU) and not D.resize_on_host(CUDA)


def test_matrix_upsampling_is_torch_bilinear_with_its_gradient(monkeypatch):
    """The deterministic path the pyramid takes on a GPU with deterministic algorithms on."""
    from napari_nst.core.optim import pyramid

    img = torch.rand(1, 3, 45, 61, generator=torch.Generator().manual_seed(0))
    results = []
    for matrix in (False, True):
        monkeypatch.setattr(pyramid, "matrix_upsampling", lambda dev, m=matrix: m)
        var = pyramid.PyramidImage(img, levels=3)
        for k, z in enumerate(var.layers[1:]):
            z.data.copy_(torch.rand(z.shape, generator=torch.Generator().manual_seed(k)))
        g = var.image()
        (g * torch.linspace(0, 1, g.numel()).view_as(g)).sum().backward()
        results.append((g.detach(), [z.grad.clone() for z in var.layers]))
    (ga, grads_a), (gb, grads_b) = results
    torch.testing.assert_close(ga, gb, rtol=0, atol=1e-5)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_an_evaluation_reads_the_device_twice_at_most(monkeypatch, content, style, fast):
    """Host synchronisations per evaluation: the L-BFGS step's scalars and the losses, one
    transfer each (float(), .item() and .tolist() of a tensor are what synchronise a GPU)."""
    reads = []
    for name in ("__float__", "item", "tolist"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name: reads.append(_n) or _o(self, *a))
    gen = _run(content, style, _opts(fast, steps=8, preview_every=10**6))
    next(gen)  # the targets and automatic weights read a few scalars once per level
    counts = []
    for _ in range(6):
        reads.clear()
        next(gen)
        counts.append(len(reads))
    gen.close()
    assert max(counts) <= 2, counts


def _run(content, style, opts):
    from napari_nst.core.image.arrays import to_rgb_float

    return engine.run(to_rgb_float(content), to_rgb_float(style), opts)


def _opts(fast, **kw):
    from napari_nst.core.options import Options

    o = Options(**{**fast, "scales": 1, **kw})
    o.validate()
    return o


def test_no_image_is_made_for_records_that_will_not_show_it(content, style, fast, monkeypatch):
    made = []
    original = engine.to_numpy
    monkeypatch.setattr(engine, "to_numpy", lambda t: made.append(1) or original(t))
    recs = list(_run(content, style, _opts(fast, steps=6, preview_every=1, preview_interval=1e6)))
    # the first record shows at once (no image was shown yet), then none until the level's last
    assert [r.image is not None for r in recs] == [True] + [False] * 4 + [True]
    assert len(made) == 2
    assert np.isfinite(recs[-1].losses["total"])
