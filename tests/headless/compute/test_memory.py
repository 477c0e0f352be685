"""The memory estimate, the check before a run, and out-of-memory during a run."""

from __future__ import annotations

import pytest
import torch

from napari_nst.core.compute import memory
from napari_nst.core.errors import DeviceMemoryError
from napari_nst.core.optim import engine
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
    from napari_nst.core.image.arrays import resized_shape

    budget = avail * memory.MEMORY_HEADROOM
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


# ------------------------------------------------------------------- core/compute/memory.py: the plan (no torch)


def test_memory_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, napari_nst.core.compute.memory as m; m.plan; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_plan_whole_image_when_it_fits_else_the_largest_fitting_tile():
    from napari_nst.core.compute import memory

    opts = Options.from_kwargs(size=2048, model="vgg16")
    whole = memory.plan((768, 1024), opts, 1024 * GiB)
    assert whole.fits and whole.tile_size is None and not whole.auto
    assert whole.bytes == memory.estimate_memory((1536, 2048), "vgg16", "float32")
    tiled = memory.plan((768, 1024), opts, 4 * GiB)
    assert tiled.fits and tiled.auto and tiled.tile_size is not None
    assert 96 <= tiled.tile_size < 2048 and f"tiles of {tiled.tile_size} px" in tiled.text
    budget = 4 * GiB * memory.MEMORY_HEADROOM
    args = ("vgg16", "float32", "lbfgs", memory.TILED_HISTORY)
    assert tiled.bytes == memory.estimate_tiled((1536, 2048), tiled.tile_size, *args) <= budget
    assert memory.estimate_tiled((1536, 2048), tiled.tile_size + memory.TILE_GRID, *args) > budget
    # bfloat16's smaller activations allow a tile at least as large
    assert memory.plan((768, 1024), opts, 4 * GiB, dtype="bfloat16").tile_size >= tiled.tile_size


def test_max_memory_caps_the_plan_and_parses_units():
    from napari_nst.core.compute import memory

    assert memory.parse_bytes("8GB") == 8 * 10**9
    assert memory.parse_bytes("512MiB") == 512 * 2**20
    assert memory.parse_bytes("1.5 g") == 1.5e9
    assert memory.parse_bytes(2_000_000) == 2_000_000
    opts = Options.from_kwargs(size=1024, model="vgg16", max_memory="1GiB")
    assert opts.max_memory == GiB
    p = memory.plan((768, 1024), opts, 1024 * GiB)  # plenty free: the cap decides
    assert p.fits and p.tile_size is not None and p.bytes <= GiB and p.budget == GiB


@pytest.mark.parametrize("bad", ["lots", "8 parsecs", "-1GB", "0", ""])
def test_unparsable_max_memory_is_a_value_error_naming_the_fix(bad):
    from napari_nst.core.errors import OptionError

    with pytest.raises(ValueError, match="max_memory") as info:
        Options.from_kwargs(max_memory=bad)
    assert isinstance(info.value, OptionError)
    assert "8GB" in str(info.value)


def test_too_small_for_any_tile_says_so():
    from napari_nst.core.compute import memory

    opts = Options.from_kwargs(size=4096, model="vgg16", max_memory="600MB")
    p = memory.plan((768, 1024), opts, None)
    assert not p.fits and "even in tiles" in p.text
    tiled = memory.plan(
        (768, 1024), Options.from_kwargs(size=4096, model="vgg16", tile_size=256, max_memory="1GB"), None
    )
    assert not tiled.fits and "lower size" in tiled.text


def test_bad_tile_sizes_are_value_errors_naming_the_fix():
    from napari_nst.core.compute import memory

    opts = Options.from_kwargs(size=512, model="vgg16", tile_size=80)
    with pytest.raises(ValueError, match="raise tile_size to 96"):
        opts.check_tiles((768, 1024))
    with pytest.raises(ValueError, match="raise tile_size to 96"):
        memory.plan((768, 1024), opts, None)
    big = Options.from_kwargs(size=512, model="vgg16", tile_size=512)
    with pytest.raises(ValueError, match="leave tile_size empty"):
        big.check_tiles((768, 1024))
    with pytest.raises(ValueError, match="one style"):
        Options.from_kwargs(size=512, tile_size=192).check_tiles((768, 1024), styles=2)
    with pytest.raises(ValueError, match="tile_size must be between"):
        Options.from_kwargs(tile_size=8)


def test_float32_cpu_estimates_count_the_winograd_kernels(monkeypatch):
    """A float32 CPU plan may keep each wide layer's Winograd-transformed kernel (4x its weights)."""
    from napari_nst.core.encoder.layer_names import NARROW_MIN
    from napari_nst.core.encoder.vgg import Conv3x3, VGGFeatures

    net = VGGFeatures("vgg16", ["relu5_1"])
    # the most a plan keeps: the one that runs it from 128 input channels
    want = sum(4 * m.weight.numel() * 4 for m in net.layers if isinstance(m, Conv3x3) and m.in_channels >= NARROW_MIN)
    assert memory.winograd_bytes("vgg16") == want
    runs = {
        "whole": lambda **k: memory.estimate_memory((256, 256), "vgg16", **k),
        "tiled": lambda **k: memory.estimate_tiled((1024, 1024), 256, "vgg16", **k),
    }
    with_kernels = {
        n: (f(dtype="float32"), f(dtype="bfloat16"), f(dtype="float32", device_type="cuda")) for n, f in runs.items()
    }
    monkeypatch.setattr(memory, "winograd_bytes", lambda model: 0)
    for n, f in runs.items():
        f32, bf16, cuda = with_kernels[n]
        assert f32 - f(dtype="float32") == want  # float32 on the CPU only
        assert bf16 == f(dtype="bfloat16") and cuda == f(dtype="float32", device_type="cuda")


def test_sliced_scratch_estimate_follows_the_matchings_chunk():
    from napari_nst.core.objective import statistics

    assert memory.SLICED_FIXED_BYTES == statistics.MATCH_CHUNK * (8 + 4 + 8)
    assert memory.estimate_memory((256, 256), style_loss="sliced") - memory.estimate_memory((256, 256)) == (
        memory.SLICED_FIXED_BYTES + 256 * 256 * memory.SLICED_BYTES_PER_PX
    )
