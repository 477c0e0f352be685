"""The memory estimate, the check before a run, and out-of-memory during a run."""

from __future__ import annotations

import pytest
import torch

from napari_nst.core import engine
from napari_nst.core.errors import DeviceMemoryError
from napari_nst.core.options import Options

GiB = 2**30


def test_estimate_grows_linearly_with_pixels():
    e = [engine.estimate_memory((s, s), "vgg16", torch.bfloat16) for s in (128, 256, 512)]
    d1, d2 = e[1] - e[0], e[2] - e[1]
    assert 0 < e[0] < e[1] < e[2]
    assert d2 / d1 == pytest.approx((512**2 - 256**2) / (256**2 - 128**2))
    # float32 and a long L-BFGS history need more
    assert engine.estimate_memory((512, 512), "vgg16", None) > e[2]
    assert engine.estimate_memory((512, 512), "vgg16", torch.bfloat16, history=100) > e[2]


def test_largest_fitting_size_fits_and_the_next_does_not():
    avail = 3 * GiB
    size = engine.largest_fitting_size((768, 1024), avail, "vgg19", torch.bfloat16)
    assert size > 0
    from napari_nst.core.images import resized_shape

    budget = avail * engine.MEMORY_HEADROOM
    assert engine.estimate_memory(resized_shape((768, 1024), size), "vgg19", torch.bfloat16) <= budget
    assert engine.estimate_memory(resized_shape((768, 1024), size + 1), "vgg19", torch.bfloat16) > budget


def test_check_memory_with_faked_free_memory():
    opts = Options(size=4096, model="vgg16")
    cpu = torch.device("cpu")
    shape = (3072, 4096)
    with pytest.raises(DeviceMemoryError) as info:
        engine.check_memory((768, 1024), shape, opts, cpu, torch.bfloat16, available=2 * GiB)
    assert 0 < info.value.suggested_size < 4096
    assert f"size={info.value.suggested_size}" in str(info.value)
    # plenty of memory: passes and returns the estimate
    assert engine.check_memory((768, 1024), shape, opts, cpu, torch.bfloat16, available=1024 * GiB) > 0


def test_run_refuses_at_once_when_it_will_not_fit(monkeypatch, fast, content, style):
    from napari_nst import iter_stylize

    monkeypatch.setattr(engine, "available_memory", lambda device: 64 * 2**20)
    built = []
    monkeypatch.setattr(engine, "build_vgg", lambda *a, **k: built.append(1))
    with pytest.raises(DeviceMemoryError) as info:
        next(iter(iter_stylize(content, style, **fast)))
    assert not built, "refused before loading the network"
    assert isinstance(info.value, MemoryError)


def test_out_of_memory_during_a_run_becomes_device_memory_error(monkeypatch, fast, content, style):
    from napari_nst import iter_stylize

    calls = []

    def boom(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes")

    monkeypatch.setattr(engine, "_evaluate_and_step", boom)
    with pytest.raises(DeviceMemoryError) as info:
        list(iter_stylize(content, style, **fast))
    assert calls and 0 < info.value.suggested_size < fast["size"]
    assert "out of memory" in str(info.value)


def test_other_runtime_errors_pass_through(monkeypatch, fast, content, style):
    from napari_nst import iter_stylize

    def boom(*args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(engine, "_evaluate_and_step", boom)
    with pytest.raises(RuntimeError, match="something else"):
        list(iter_stylize(content, style, **fast))
