"""Where a run goes and how the network runs there: device, precision, memory layout, pooling.

Every choice here is made from what the chosen device *is* (its type, its compute capability,
its CPU instruction set), and each has its reason in a comment. tests/headless/test_device.py pins
what ``auto`` picks for faked capabilities (CUDA compute capability 7.0 and 8.0, MPS, CPUs with and
without fast bfloat16).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from napari_nst.core.compute.memory import host_available
from napari_nst.core.encoder.layer_names import WIDE_MIN
from napari_nst.core.errors import OptionError, PrecisionWarning

#: first CUDA compute capability with bfloat16 in hardware (Ampere, sm_80): below it
#: ``torch.cuda.is_bf16_supported()`` still says True (it counts emulation), and bf16 runs slower
#: than float32 (T4, V100, P100, GTX 16 / RTX 20)
CUDA_NATIVE_BF16 = (8, 0)


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(name: str) -> torch.device:
    """``auto``: cuda, then mps, then cpu. A device that is not there raises OptionError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise OptionError(
                f"device {name!r} asked for, but CUDA is not available here; use device='auto' or device='cpu'"
            )
        dev = torch.device(name)
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise OptionError(
                f"device {name!r} asked for, but there are {count} CUDA device(s): use 'cuda:0' to 'cuda:{count - 1}'"
            )
        return dev
    if name == "mps" and not mps_available():
        raise OptionError(
            "device 'mps' asked for, but Apple MPS is not available here; use device='auto' or device='cpu'"
        )
    return torch.device(name)


def cuda_index(device: torch.device) -> int:
    """The CUDA device ``device`` names (``cuda`` alone: the current one)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """Compute capability of the device ``cuda:N`` names, not of the current device."""
    major, minor = torch.cuda.get_device_capability(cuda_index(device))
    return int(major), int(minor)


def cpu_has_fast_bf16() -> bool:
    """oneDNN's own test: bfloat16 instructions in hardware (avx512_bf16 or AMX), not emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (None when unknown: then no check is made); the CPU's is the host's
    (:func:`~napari_nst.core.compute.memory.host_available`)."""
    try:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            idx = device.index if device.index is not None else torch.cuda.current_device()
            cached = torch.cuda.memory_reserved(idx) - torch.cuda.memory_allocated(idx)
            return int(free + cached)
        if device.type == "mps":
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    except Exception:
        return None
    return host_available()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 in hardware (so bfloat16 is faster than float32 there)."""
    if device.type == "cuda":
        return cuda_capability(device) >= CUDA_NATIVE_BF16
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False  # MPS: see autocast_dtype


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype the network runs in (None = float32). Losses stay float32 either way.

    ``auto``: bfloat16 only where the chosen device has it in hardware. An explicit ``bfloat16``
    where it is emulated runs (as asked) but warns; on MPS it is refused before the run: torch
    2.1-2.4 raise in MPS autocast with bfloat16, 2.5 and later run float32 without saying so.
    """
    if precision == "float32":
        return None
    if device.type == "mps":
        if precision == "bfloat16":
            raise OptionError(
                "precision='bfloat16' is not run on Apple MPS (torch's MPS autocast either "
                "rejects it or silently runs float32); use precision='float32' or 'auto'"
            )
        return None
    native = native_bf16(device)
    if precision == "bfloat16":
        if not native:
            where = (
                f"this GPU (compute capability {'.'.join(map(str, cuda_capability(device)))}, "
                f"bfloat16 needs {CUDA_NATIVE_BF16[0]}.{CUDA_NATIVE_BF16[1]})"
                if device.type == "cuda"
                else "this CPU (no avx512_bf16 or AMX)"
            )
            warnings.warn(
                f"precision='bfloat16' is emulated on {where}: each evaluation is many times slower "
                "than in float32 (37x measured on an AVX2 CPU); use precision='auto' or 'float32'",
                PrecisionWarning,
                stacklevel=3,
            )
        return torch.bfloat16
    return torch.bfloat16 if native else None


# --------------------------------------------------------------------------- layout and pooling


@dataclass(frozen=True)
class NetworkPlan:
    """How the network runs on a device: input memory format and max-pooling implementation."""

    channels_last: bool
    lean_pool: bool  # the index-free max pooling of vgg.MaxPool2x2 (False: torch's max_pool2d)
    winograd: bool = False  # the convolutions through NNPACK's Winograd transform (vgg.Conv3x3)
    #: the layers of >= 256 input channels through napari-nst's Winograd F(4x4, 3x3) (encoder/winograd.py);
    #: only where the tuner measured it faster (no static rule chooses it)
    winograd_wide: bool = False
    #: with ``winograd_wide``, the fewest input channels of a layer that runs it (``WIDE_MIN`` 256,
    #: or ``NARROW_MIN`` 128: conv2_2 and conv3_1 too)
    winograd_min: int = WIDE_MIN

    @property
    def layout(self) -> str:
        return "channels-last" if self.channels_last else "contiguous"


def apply_network_plan(net: Any, plan: NetworkPlan, release: bool = True) -> None:
    """Set ``plan``'s pooling and convolution algorithms on a ``vgg.VGGFeatures`` (the memory
    format is the input's, set by the caller); ``release``: see ``set_winograd_wide``."""
    net.set_lean_pool(plan.lean_pool)
    net.set_winograd(plan.winograd)
    net.set_winograd_wide(plan.winograd_wide, release=release, min_channels=plan.winograd_min)


def network_plan(device: torch.device, dtype: torch.dtype | None) -> NetworkPlan:
    """Channels-last and the index-free max pooling, each only where measured (or known) to pay.

    * CPU, bfloat16 (AVX-512 with avx512_bf16 / AMX): channels-last and the index-free pool.
      Measured on a 2-core EPYC (docs/benchmarks.md: one thread, CPU time, 192x256 and
      256x341 px): channels-last 0.85-0.90x of contiguous; with it the index-free pool costs 0-4 %
      against torch's max_pool2d but keeps no int64 indices (8 bytes per pooled value: 45 MiB at
      512 px in bf16, which the bf16 run's 0.55x peak memory in docs/benchmarks.md counts on).
    * CPU, float32: torch's max_pool2d (the index-free pool costs 4-10 % in every float32 row, and
      its memory matters less beside float32 activations). Channels-last only with AVX-512: there
      0.97-0.99x (0.90-0.94x in an earlier run); under AVX2 (ONEDNN_MAX_CPU_ISA=AVX2,
      ATEN_CPU_CAPABILITY=avx2) 0.97-1.03x, and the issue's measurement on a real AVX2 CPU had it
      slower (1.17x -> 1.36x of torchvision's network), so contiguous there.
    * CPU, float32: oneDNN's direct convolutions, contiguous: the textbook's network. The faster
      convolution algorithms are not chosen without a measurement, because CPUs rank them
      differently: NNPACK's Winograd transform measured 2.0-2.9x faster per layer on one 2-core
      EPYC (one thread) and 1.2-2.3x slower on a newer one (both threads); napari-nst's own
      Winograd F(4x4, 3x3) (encoder/winograd.py) is a candidate only the tuner picks. This rule
      is what runs where nothing is measured (``NAPARI_NST_TUNE=0``, a failed measurement), and
      it is never slower than the textbook.
    * CUDA: channels-last only with bfloat16 on compute capability >= 8.0: tensor-core convolutions
      are NHWC-native in cuDNN (NVIDIA's "Deep Learning Performance" guide; PyTorch's channels-last
      tutorial reports its gains with AMP on Volta and later); in float32 on pre-Ampere GPUs there
      are no tensor cores to feed and NCHW is cuDNN's default path. torch's max_pool2d: one kernel
      for its backward against 13 small ones, and a GPU's memory is not where the indices hurt.
    * MPS: contiguous and torch's pooling: the MPS channels-last convolution backward has taken a
      strided path many times slower in recent torch releases, and MPS breaks max-pool ties in
      another order than the index-free backward assumes.
    """
    if device.type == "cpu":
        if dtype is not None:
            return NetworkPlan(channels_last=True, lean_pool=True)
        return NetworkPlan(channels_last=False, lean_pool=False)  # float32: the textbook's network
    if device.type == "cuda":
        return NetworkPlan(
            channels_last=dtype is not None and cuda_capability(device) >= CUDA_NATIVE_BF16, lean_pool=False
        )
    return NetworkPlan(channels_last=False, lean_pool=False)


# --------------------------------------------------------------------------- per-device details


def lbfgs_history_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype L-BFGS stores its curvature pairs in (None: float32; core/optim/lbfgs.py).

    * CPU: bfloat16. The pairs are the largest part of the optimiser's memory (40 vectors of 4/3
      the image), and a CPU's memory is the machine's RAM; bfloat16 halves them: 0.71x -> see
      docs/benchmarks.md for the peak at 512 px and the objective after 300
      evaluations. Reading a pair back costs two conversions per pair and step (measured there).
    * GPU: float32. Each conversion is a kernel launch, and the L-BFGS step runs eagerly beside
      the CUDA graph of the objective (launch-bound: docs/benchmarks.md, GPU); a GPU's memory
      at 512 px was 0.64x the textbook's already. Not measured with bfloat16 there.
    """
    return torch.bfloat16 if device.type == "cpu" else None


def resize_on_host(device: torch.device) -> bool:
    """Resize content and style on the CPU and move the result: MPS has ``antialias=True`` only
    from torch 2.7 (before, NotImplementedError), and nearly every photo is shrunk."""
    return device.type == "mps"


@contextlib.contextmanager
def cudnn_benchmark(device: torch.device) -> Iterator[None]:
    """cuDNN autotuning on for the run (fixed shapes: it pays), the caller's setting restored after."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


#: messages of allocation failures that torch raises as plain RuntimeErrors (cuBLAS and cuDNN
#: report a failed workspace allocation with their own status; the CPU allocator and MPS with text)
_OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (on any device)."""
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(m in msg for m in _OOM_MARKERS)


def empty_cache(device: torch.device) -> None:
    """Give the caching allocator's free blocks back to the device (after a run, after an OOM)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
