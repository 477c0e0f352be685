"""The widget's memory estimate without Qt (napari_nst._run.memory_estimate): the engine's memory
model, fed what the napari process can know without torch."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from napari_nst._run.memory_estimate import cpu_runs_bf16, estimate, layer_shape
from napari_nst.core.compute import memory
from napari_nst.core.options import Options

GiB = 2**30


def test_bf16_from_the_cpu_flags(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu_runs_bf16("flags : fpu avx2 avx512f avx512_bf16 sse")
    assert cpu_runs_bf16("flags : fpu avx2 amx_bf16 amx_tile")
    assert not cpu_runs_bf16("flags : fpu avx2 avx512f avx512_vnni")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # how the tests simulate an AVX2 machine
    assert not cpu_runs_bf16("flags : fpu avx2 avx512f avx512_bf16")


def test_the_estimate_is_the_engines_plan(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    form = {"size": 1024, "steps": 100, "precision": "float32", "model": "vgg16", "init": object()}
    est = estimate((300, 400), form, gpu=False, available=64 * GiB)
    want = memory.plan((300, 400), Options(size=1024, steps=100, precision="float32", model="vgg16"), 64 * GiB)
    assert est.plan == want and est.text.startswith("≈") and "64.0 GiB free now" in est.tip
    bf16 = estimate((300, 400), {**form, "precision": "bfloat16"}, gpu=False, available=64 * GiB)
    assert bf16.plan is not None and bf16.plan.bytes < want.bytes


def test_tiles_none_with_regions_and_gpu_memory_unknown():
    form = {"size": 2048, "steps": 100, "precision": "float32", "model": "vgg16"}
    tiled = estimate((300, 400), form, gpu=False, available=4 * GiB)
    assert tiled.plan is not None and tiled.plan.auto and "(automatic)" in tiled.text
    regions = estimate((300, 400), form, gpu=False, regions=True, available=4 * GiB)
    assert "does not fit" in regions.text and "regions" in regions.tip
    gpu = estimate((300, 400), form, gpu=True, available=1)
    assert gpu.plan is not None and gpu.plan.tile_size is None and "checked when the run starts" in gpu.tip
    bad = estimate((300, 400), {**form, "size": 0}, gpu=False)
    assert bad.text == "—" and "size" in bad.tip


def test_layer_shape_is_the_displayed_slice():
    stack = SimpleNamespace(data=np.zeros((5, 30, 40)), multiscale=False, ndim=3)
    assert layer_shape(stack, 3, (1, 2)) == (30, 40)
    assert layer_shape(stack, 3, (0, 2)) == (5, 40)  # an orthogonal view
    rgb = SimpleNamespace(data=np.zeros((30, 40, 3)), multiscale=False, ndim=2)
    assert layer_shape(rgb, 2, (0, 1)) == (30, 40)
    pyramid = SimpleNamespace(data=[np.zeros((64, 80)), np.zeros((32, 40))], multiscale=True, ndim=2)
    assert layer_shape(pyramid, 2, (0, 1)) == (64, 80)


def test_a_float32_cpu_run_that_fits_without_kept_winograd_kernels_makes_them_at_each_call():
    """Between the whole image's estimate with napari-nst's Winograd kernels made at each call and
    with them kept, a small float32 CPU run is planned whole, making them per call (not in tiles);
    the widget says so. A large run makes them per call anyway: its estimate counts the buffer."""
    opts = Options(size=320, steps=100, precision="float32", model="vgg16")
    assert memory.keeps_kernels((240, 320))
    full = memory.plan((240, 320), opts, 64 * GiB)
    assert full.kernels and full.tile_size is None and not full.auto
    saved = memory.winograd_bytes("vgg16") - memory.winograd_call_bytes("vgg16")
    assert saved > 100 * 2**20  # 158 MB kept, 36 MiB made per call (VGG16)
    budget = full.bytes - saved // 2
    lean = memory.plan((240, 320), opts, int(budget / memory.MEMORY_HEADROOM) + 1)
    assert not lean.kernels and lean.tile_size is None and lean.fits and lean.auto
    assert lean.bytes == full.bytes - saved and "making the Winograd kernels at each call" in lean.text
    tiled = memory.plan((240, 320), opts, int((lean.bytes - 2**20) / memory.MEMORY_HEADROOM))
    assert tiled.kernels and tiled.tile_size is not None  # not even so: tiles, as before
    bf16_opts = Options(size=320, steps=100, precision="bfloat16", model="vgg16")
    bf16 = memory.plan((240, 320), bf16_opts, 1, dtype="bfloat16")
    assert bf16.kernels  # no kernels to drop: bfloat16 plans keep none
    form = {"size": 320, "steps": 100, "precision": "float32", "model": "vgg16"}
    est = estimate((240, 320), form, gpu=False, available=int(budget / memory.MEMORY_HEADROOM) + 1)
    assert est.plan == lean and est.text.endswith("Winograd kernels per call (automatic)")
    assert "making the Winograd kernels at each call" in est.tip
    # 512x384 px: per call by default, so the estimate is already the lean one and nothing is said
    big = Options(size=512, steps=100, precision="float32", model="vgg16")
    assert not memory.keeps_kernels((384, 512))
    p = memory.plan((384, 512), big, 64 * GiB)
    kept = memory.estimate_memory((384, 512), "vgg16", "float32", kernels=True)
    assert p.kernels and not p.auto and p.bytes == kept - saved
    assert memory.format_apart(1152 * 2**20, 1100 * 2**20) == ("1152 MiB", "1100 MiB")  # not "1.1 GiB" twice
    assert memory.format_apart(3 * 2**30, 2**30) == ("3.0 GiB", "1.0 GiB")
