"""The memory estimate shown beside the Size field before a run (no Qt, no torch).

The napari process never imports torch, so what the engine asks of torch is found here another
way: the free memory from the operating system (``host_available``), whether the
CPU runs bfloat16 in hardware from its flags. The estimate itself is the engine's own memory model
(:func:`napari_nst.core.compute.memory.plan`), which also says when the engine will choose tiles.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_nst._run.layer_view import displayed_axes
from napari_nst.core.compute.memory import MemoryPlan, format_bytes, host_available, plan
from napari_nst.core.errors import OptionError
from napari_nst.core.options import Options

#: ONEDNN_MAX_CPU_ISA values under which oneDNN has no bfloat16 instructions (how the tests
#: simulate an AVX2 machine): the engine then runs float32
_NO_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


@dataclass(frozen=True)
class Estimate:
    """What the label shows (``text``), its tooltip (``tip``) and the plan behind it (None: no plan)."""

    text: str
    tip: str
    plan: MemoryPlan | None = None


def cpu_runs_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bfloat16 instructions (avx512_bf16 or AMX), as oneDNN uses them."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _NO_BF16_ISAS:
        return False
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def layer_shape(layer: Any, world_ndim: int, displayed: Sequence[int] | None) -> tuple[int, int]:
    """Rows and columns of the layer's displayed slice at full resolution (no data is read)."""
    shape = tuple(int(v) for v in (layer.data[0].shape if layer.multiscale else layer.data.shape))
    ndim = int(layer.ndim)
    axes = displayed_axes(ndim, world_ndim, displayed) if ndim > 2 else (0, 1)
    return shape[axes[0]], shape[axes[1]]


def estimate(
    content_shape: tuple[int, int],
    options: dict[str, Any],
    gpu: bool,
    styles: int = 1,
    regions: bool = False,
    available: int | None = None,
) -> Estimate:
    """The estimate for a run of ``options`` (the form's engine keywords) on a content of
    ``content_shape``; ``gpu``: the run will be on a GPU (its free memory is known only when the
    run starts). ``available``: free bytes (default: the host's, for a CPU run; ignored for a GPU run)."""
    kw = {k: v for k, v in options.items() if k in Options.names() and k != "init"}
    try:
        opts = Options.from_kwargs(**kw)
        if regions:  # only whether there are regions matters to the plan (no tiles with regions)
            opts = replace(opts, regions=np.zeros((1, 1), np.int32))
        bf16 = opts.precision == "bfloat16" or (opts.precision == "auto" and not gpu and cpu_runs_bf16())
        free = None if gpu else (host_available() if available is None else available)
        dtype, device_type = "bfloat16" if bf16 else "float32", "cuda" if gpu else "cpu"  # MPS: CUDA's larger estimate
        p = plan(content_shape, opts, free, dtype=dtype, device_type=device_type, styles=styles)
    except (OptionError, ValueError) as exc:
        return Estimate("—", f"No memory estimate: {exc}")
    where = "GPU memory: checked when the run starts" if gpu else f"{format_bytes(free or 0)} free now"
    tip = f"Memory the run will need: {p.text} ({where})."
    if not p.fits:
        return Estimate(f"≈ {format_bytes(p.bytes)}: does not fit", tip + " Lower Size or raise Max memory.", p)
    if p.tile_size is not None:
        how = "automatic" if p.auto else "Tile size"
        return Estimate(f"≈ {format_bytes(p.bytes)}, tiles of {p.tile_size} px ({how})", tip, p)
    if not p.kernels:
        return Estimate(f"≈ {format_bytes(p.bytes)}, Winograd kernels per call (automatic)", tip, p)
    return Estimate(f"≈ {format_bytes(p.bytes)}", tip, p)
