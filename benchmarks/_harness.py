"""What every benchmark shares: paths, test images, weights, the textbook baseline, interleaved
repeats, machine capture, child processes, the engine's levers, and the results files.

Nothing here imports torch at import time: the napari benchmarks (responsiveness, widget_input)
must not load it in their process, and ``--isa avx2`` must set its environment before torch loads.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from napari_nst.core.encoder.vgg import VGGFeatures
    from napari_nst.core.options import Options

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))
SHARED_IMAGES = ("tubingen", "starry_night", "the_scream")
SHARED_WEIGHTS = SHARED / "weights" / "vgg16-hed-features.pth"
MODEL = "vgg16"  # the benchmark network (the shared weights are VGG16's)
#: ``--isa avx2``: oneDNN (convolutions) and ATen (the rest) limited to AVX2, as on a CPU without
#: AVX-512 and fast bf16; set before torch loads (the harness runs the command again with it)
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
MiB = 2**20


class BenchmarkError(Exception):
    """A benchmark cannot run as asked; the message says what to change."""


# --------------------------------------------------------------------------- images and weights


def shared_image(name: str) -> Path:
    """The path of a shared test image (``tubingen``, ``starry_night``, ``the_scream``)."""
    path = SHARED / "images" / f"{name}.jpg"
    if not path.exists():
        raise BenchmarkError(
            f"the shared image {path} is missing: put tubingen.jpg, starry_night.jpg and the_scream.jpg in "
            f"{SHARED / 'images'} (or set NAPARI_NST_SHARED to the folder that holds images/), give the "
            "picture with --content/--style, or check the harness without them: --dry-run"
        )
    return path


def generated_image(kind: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A deterministic uint8 RGB picture: ``content`` (gradients, a square, a disc; 384x512),
    ``style`` (diagonal stripes and noise; 400x400) or ``style2`` (rings; 400x400)."""
    rng = np.random.default_rng({"content": 0, "style": 1, "style2": 2}.get(kind, 3))
    if kind == "content":
        h, w = shape or (384, 512)
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.stack([x, y, 1 - (x + y) / 2], axis=-1)
        img[h // 4 : h // 2, w // 4 : w // 2] = (0.95, 0.15, 0.1)
        img[(y - 0.5) ** 2 + (x - 0.7) ** 2 < 0.02] = (0.1, 0.4, 0.9)
    elif kind in ("style", "style2"):
        h, w = shape or (400, 400)
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        wave = np.sin((x + 2 * y) / 5.0) if kind == "style" else np.sin(np.hypot(x - w / 2, y - h / 2) / 4.0)
        img = np.stack([(wave + 1) / 2, (1 - wave) / 2, rng.random((h, w))], axis=-1)
    else:
        raise BenchmarkError(f"no generated image {kind!r}: use generated:content, generated:style or generated:style2")
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def load_image(spec: str) -> np.ndarray:
    """An image given as ``generated:KIND``, a shared name (``tubingen``) or a file path."""
    from napari_nst.core.image.files import read_image

    if spec.startswith("generated:"):
        return generated_image(spec.split(":", 1)[1])
    if spec in SHARED_IMAGES:
        return read_image(shared_image(spec))
    if not Path(spec).exists():
        raise BenchmarkError(f"no image file at {spec!r}: give an existing file, a shared name or generated:KIND")
    return read_image(spec)


def image_file(spec: str, folder: Path) -> Path:
    """A file holding the image ``spec`` (generated ones are written to ``folder`` as PNG)."""
    if spec.startswith("generated:"):
        from PIL import Image

        path = folder / f"{spec.split(':', 1)[1]}.png"
        Image.fromarray(generated_image(spec.split(":", 1)[1])).save(path)
        return path
    if spec in SHARED_IMAGES:
        return shared_image(spec)
    load_image(spec)  # the clear error for a missing file
    return Path(spec)


_RANDOM_WEIGHTS: dict[str, Path] = {}


def weights_file(spec: str) -> str:
    """The weights file for ``spec``: a path, or ``random`` (seeded random VGG16 convolutions,
    written once per process to a temporary file: checks the harness, numbers mean nothing)."""
    if spec != "random":
        if not Path(spec).is_file():
            raise BenchmarkError(
                f"no weights file at {spec!r}: put vgg16-hed-features.pth in {SHARED / 'weights'} (or set "
                "NAPARI_NST_SHARED / NAPARI_NST_WEIGHTS), give --weights PATH, or check the harness with "
                "--weights random"
            )
        return spec
    if "path" not in _RANDOM_WEIGHTS:
        path = Path(tempfile.mkdtemp(prefix="napari-nst-bench-")) / "vgg16-random-features.pth"
        if "torch" in sys.modules:
            write_random_weights({"path": str(path)})
        else:  # a process that keeps torch out (napari): a child writes them
            child_result(_spawn("benchmarks._harness:write_random_weights", {"path": str(path)}))
        _RANDOM_WEIGHTS["path"] = path
    return str(_RANDOM_WEIGHTS["path"])


def write_random_weights(spec: dict[str, Any]) -> dict[str, Any]:
    """Seeded random VGG16 convolutions (``features.*`` keys) to ``spec["path"]``."""
    import torch

    from napari_nst.core.encoder.vgg import VGGFeatures, layer_names

    torch.manual_seed(0)
    net = VGGFeatures(MODEL, [layer_names(MODEL)[-1]])
    torch.save({f"features.{k}": v.clone() for k, v in net.layers.state_dict().items()}, spec["path"])
    return {"path": spec["path"]}


def add_common_arguments(ap: argparse.ArgumentParser) -> None:
    """The options every benchmark has (``--content``, ``--style``, ``--weights``, ``--threads``,
    ``--isa``, ``--dry-run``, ``--results-dir``)."""
    g = ap.add_argument_group("common to every benchmark")
    g.add_argument(
        "--content",
        default=None,
        help="content picture: a file, a shared name (tubingen) or generated:content (default $NST_CONTENT or "
        "the shared tubingen.jpg)",
    )
    g.add_argument("--style", default=None, help="style picture (default $NST_STYLE or the shared starry_night.jpg)")
    g.add_argument(
        "--weights",
        default=None,
        help="VGG16 weights file, or 'random' (default $NAPARI_NST_WEIGHTS or the shared vgg16-hed-features.pth)",
    )
    g.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default for this machine)")
    g.add_argument(
        "--isa",
        choices=("native", "avx2"),
        default="native",
        help="avx2: run under ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 (a CPU without AVX-512 and fast "
        "bf16, emulated on an AVX-512 one)",
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="a toy size and a few evaluations, generated pictures, random weights and one thread unless given: "
        "checks the benchmark, its numbers mean nothing (written only with an explicit --results-dir)",
    )
    g.add_argument(
        "--results-dir",
        default=None,
        help=f"where <name>.json is appended to (default {RESULTS.relative_to(ROOT)}; a dry run writes nothing "
        "unless this is given)",
    )


def resolve_common(args: argparse.Namespace) -> None:
    """Fill the defaults that depend on the environment and on ``--dry-run``."""
    dry = args.dry_run
    args.content = args.content or os.environ.get("NST_CONTENT") or ("generated:content" if dry else "tubingen")
    args.style = args.style or os.environ.get("NST_STYLE") or ("generated:style" if dry else "starry_night")
    args.weights = args.weights or os.environ.get("NAPARI_NST_WEIGHTS") or ("random" if dry else str(SHARED_WEIGHTS))
    if dry and not args.threads:
        args.threads = 1  # a toy size gains nothing from threads, and several stall on a busy machine


# --------------------------------------------------------------------------- levers


#: the engine's internal switches a benchmark may set (None: the engine's own choice)
LEVER_NAMES = (
    "history_size",
    "lbfgs",
    "max_change",
    "history_dtype",
    "channels_last",
    "lean_pool",
    "winograd",
    "pyramid_gamma",
    "cuda_graph",
    "tile_halo",
    "keep_unstyled",
)


def levers(**values: Any) -> contextlib.AbstractContextManager[Any]:
    """``with levers(history_dtype="float32"): ...``: engine runs started inside use these
    (:func:`napari_nst.core.optim.levers.use_levers`)."""
    unknown = set(values) - set(LEVER_NAMES)
    if unknown:
        raise BenchmarkError(f"unknown lever(s) {sorted(unknown)}: the levers are {', '.join(LEVER_NAMES)}")
    if not values:
        return contextlib.nullcontext()
    from napari_nst.core.optim.levers import Levers, use_levers

    return use_levers(Levers(**values))


@dataclass
class Problem:
    """One benchmark problem: images at the working size, float32 targets and the weights a, b."""

    content: np.ndarray  # full-resolution float32 (H, W, 3), what napari-nst is given
    style: np.ndarray
    size: int
    shape: tuple[int, int]
    net: VGGFeatures  # float32 network (cpu unless moved)
    content_t: torch.Tensor  # (1, 3, h, w) at ``shape``
    style_t: torch.Tensor
    p: dict[str, torch.Tensor]  # content features (float32)
    grams: dict[str, torch.Tensor]  # style Gram matrices (float32)
    nm: dict[str, tuple[int, int]]
    a: float
    b: float
    device: torch.device
    weights: str


def setup(args: argparse.Namespace, size: int, device: str = "cpu") -> Problem:
    """Images, network and targets exactly as napari-nst prepares its finest level (float32),
    from ``args.content``, ``args.style`` and ``args.weights``."""
    import torch

    from napari_nst.core.encoder import vgg
    from napari_nst.core.image.arrays import resized_shape, to_rgb_float
    from napari_nst.core.image.tensors import resize, to_tensor
    from napari_nst.core.objective.losses import gram
    from napari_nst.core.objective.weights import resolve_weights
    from napari_nst.core.options import CONTENT_LAYERS, STYLE_LAYERS

    dev = torch.device(device)
    weights = weights_file(args.weights)
    c = to_rgb_float(load_image(args.content), name="content")
    s = to_rgb_float(load_image(args.style), name="style")
    shape = resized_shape(c.shape[:2], size)
    layers = list(dict.fromkeys([*CONTENT_LAYERS, *STYLE_LAYERS]))
    net = vgg.build_vgg(MODEL, layers, weights=weights, pooling="max").to(dev)
    # the yardstick's own network (same weight tensors): build_vgg hands out one cached network per
    # layer set, and napari-nst's runs in the same process set its pooling and convolutions per run
    vgg._NETS.clear()
    # contiguous: at full size resize() returns the permuted (strided) tensor, and torch's L-BFGS
    # needs a gradient it can .view(-1)
    ct = resize(to_tensor(c, dev), shape).contiguous()
    st = resize(to_tensor(s, dev), resized_shape(s.shape[:2], size)).contiguous()
    with torch.no_grad():
        cf, sf = net(ct), net(st)
    p = {n: cf[n].float() for n in CONTENT_LAYERS}
    grams = {n: gram(sf[n]) for n in STYLE_LAYERS}
    nm = {n: (cf[n].shape[1], cf[n].shape[2] * cf[n].shape[3]) for n in STYLE_LAYERS}
    layer_w = {n: 1.0 / len(STYLE_LAYERS) for n in STYLE_LAYERS}

    class _Auto:  # napari-nst's automatic a and b (Options with content/style_weight None)
        content_weight = None
        style_weight = None

    a, b = resolve_weights(_Auto, p, grams, layer_w, nm)  # type: ignore[arg-type]
    return Problem(c, s, size, shape, net, ct, st, p, grams, nm, a, b, dev, weights)


def textbook_gram(features: torch.Tensor) -> torch.Tensor:
    """``F F^T`` through plain autograd (two matrix products in backward), as the tutorial does;
    napari-nst's ``losses.gram`` has a one-product backward, the yardstick keeps this."""
    f = features.reshape(features.shape[-3], -1)
    return f @ f.T


def _loss(prob: Problem, feats: dict[str, torch.Tensor]) -> torch.Tensor:
    from napari_nst.core.objective.losses import content_loss, gram_loss
    from napari_nst.core.options import CONTENT_LAYERS, STYLE_LAYERS

    lc = sum(content_loss(feats[n], prob.p[n]) for n in CONTENT_LAYERS)
    ls = sum(gram_loss(textbook_gram(feats[n]), prob.grams[n], *prob.nm[n]) for n in STYLE_LAYERS) / len(STYLE_LAYERS)
    return prob.a * lc + prob.b * ls  # type: ignore[no-any-return]


def objective(prob: Problem, image: np.ndarray | torch.Tensor) -> float:
    """THE score: float32 ``a*L_content + b*L_style`` of ``image`` ((H, W, 3) or (1, 3, H, W)) at
    the problem's shape, clamped to [0, 1] (resized first if it has another shape)."""
    import torch

    from napari_nst.core.image.tensors import resize, to_tensor

    with torch.no_grad():
        x = image if isinstance(image, torch.Tensor) else to_tensor(np.asarray(image, np.float32), prob.device)
        x = resize(x.to(prob.device).float().clamp(0, 1), prob.shape)
        return float(_loss(prob, prob.net(x)))


def run_baseline(prob: Problem, steps: int, trace: list | None = None) -> tuple[torch.Tensor, float]:
    """The textbook recipe (the PyTorch tutorial's) for ``steps`` evaluations: float32, the default
    memory format, the network to the last loss layer every evaluation, ``torch.optim.LBFGS([x])``
    with its defaults (lr 1, max_iter 20, history 100, no line search) from the content image, the
    image clamped to [0, 1] at the start of each evaluation. Returns the image and seconds taken.

    ``trace`` (if given) receives ``(evaluations, seconds, objective)`` after every evaluation (the
    closure's value: the clamped image's float32 objective).
    """
    import torch

    x = prob.content_t.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x])  # the defaults: lr=1, max_iter=20, history_size=100
    count = [0]
    t0 = time.perf_counter()

    def closure() -> torch.Tensor:
        with torch.no_grad():
            x.clamp_(0, 1)
        optimizer.zero_grad()
        loss = _loss(prob, prob.net(x))
        loss.backward()
        count[0] += 1
        if trace is not None:
            trace.append((count[0], time.perf_counter() - t0, float(loss.detach())))
        return loss

    while count[0] < steps:
        before = count[0]
        # stop after exactly ``steps`` evaluations (the last .step() does fewer iterations)
        group = optimizer.param_groups[0]
        group["max_iter"] = min(20, steps - count[0])
        group["max_eval"] = group["max_iter"] * 5 // 4
        optimizer.step(closure)  # type: ignore[no-untyped-call]
        if count[0] == before:  # converged by the optimiser's tolerances: nothing more to do
            break
    sync(prob.device)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        x.clamp_(0, 1)
    return x.detach(), seconds


def nst_options(prob: Problem, size: int, steps: int, device: str = "cpu", **kw: Any) -> Options:
    """napari-nst's defaults (what the widget and CLI use) on the benchmark's network and weights."""
    from napari_nst.core.options import Options

    o = Options(size=size, steps=steps, model=MODEL, weights=prob.weights, device=device, **kw)
    o.validate()
    return o


def sync(dev: torch.device) -> None:
    """Wait for the device (CUDA, MPS) before a clock is read."""
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


# --------------------------------------------------------------------------- measuring


#: per-evaluation clocks: wall time (what a user waits on an idle machine) or the process's CPU time
#: (all threads; what the work costs, little moved by other jobs on a shared machine)
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved(
    variants: dict[str, Callable[[], float]], repeats: int, baseline: str = "baseline", log: bool = True
) -> dict[str, dict[str, Any]]:
    """Run each variant once per repeat, in turn (A B C A B C ...), so that a change of load hits
    every variant alike. Each callable returns its measurement (seconds, bytes ...). Returns per
    variant the median, all values, and the median of the per-repeat ratios to ``baseline`` (a
    ratio of the same moment: robust to load drifting between repeats)."""
    values: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(repeats):
        for name, fn in variants.items():
            values[name].append(fn())
        if log:
            say(f"  repeat {rep + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.4g}" for k, v in values.items()))
    out: dict[str, dict[str, Any]] = {}
    for name, vs in values.items():
        row: dict[str, Any] = {"median": statistics.median(vs), "all": vs}
        if baseline in values:
            row["ratio"] = statistics.median(v / b for v, b in zip(vs, values[baseline], strict=True))
        out[name] = row
    return out


def vm_hwm() -> int:
    """This process's peak resident memory in bytes (VmHWM; 0 where /proc is not there)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * (1 if sys.platform == "darwin" else 1024)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def machine(device: str = "cpu") -> dict[str, Any]:
    """What a result depends on: CPU model and flags, cores, torch, its threads, the device, the ISA
    environment; and the load average (recorded, never shown on the Benchmarks page)."""
    model, flags = _cpuinfo()
    info: dict[str, Any] = {
        "cpu": model,
        "flags": {
            "avx2": "avx2" in flags,
            "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags,
            "amx": bool({"amx_bf16", "amx_tile"} & flags),
        },
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "env": {k: os.environ[k] for k in (*AVX2_ENV, "OMP_NUM_THREADS") if k in os.environ},
        "device": device,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if "torch" in sys.modules or device != "cpu":
        import torch

        info.update(
            torch=torch.__version__,
            torch_threads=torch.get_num_threads(),
            aten_isa=torch.backends.cpu.get_cpu_capability(),
        )
        if device.startswith("cuda") and torch.cuda.is_available():
            dev = torch.device(device)
            info.update(
                gpu=torch.cuda.get_device_name(dev),
                capability=list(torch.cuda.get_device_capability(dev)),
                cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(),
                gpu_memory_gib=round(torch.cuda.get_device_properties(dev).total_memory / 2**30, 1),
            )
    else:  # a benchmark that keeps torch out of its process (napari): its version from the metadata
        from importlib.metadata import PackageNotFoundError, version

        try:
            info["torch"] = version("torch")
        except PackageNotFoundError:
            info["torch"] = None
        info["torch_threads"] = None
    info["class"] = machine_class(info)
    return info


def machine_class(m: dict[str, Any]) -> str:
    """The Benchmarks page's table a result belongs to, e.g. "CPU, AVX-512 with bf16"."""
    dev = str(m.get("device") or "cpu")
    if dev.startswith("cuda"):
        return str(m.get("gpu") or "NVIDIA GPU")
    if dev.startswith("mps"):
        return "Apple GPU (MPS)"
    if str(m.get("env", {}).get("ONEDNN_MAX_CPU_ISA", "")).upper().startswith("AVX2"):
        return "CPU, AVX2 (emulated with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)"
    f = m.get("flags") or {}
    if f.get("amx"):
        return "CPU, AVX-512 with AMX"
    if f.get("avx512_bf16"):
        return "CPU, AVX-512 with bf16"
    if f.get("avx512f"):
        return "CPU, AVX-512"
    if f.get("avx2"):
        return "CPU, AVX2"
    return f"CPU, {platform.machine()}"


# --------------------------------------------------------------------------- child processes


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: this checkout's napari_nst and the benchmarks package
    importable, the rest inherited (the ISA variables included)."""
    import napari_nst

    src = str(Path(napari_nst.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


#: dry runs: a "child" runs in this process (its spec and result still go through JSON); the
#: separate process is what a real run needs (its own peak memory and CPU time), not what a check of
#: the benchmark's code does (a test covers the child processes themselves)
INLINE_CHILDREN = {"on": False}


class _Finished:
    """What :func:`start_child` gives back for a child run inline."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.result = result


def start_child(
    target: str, spec: dict[str, Any], env: dict[str, str] | None = None
) -> subprocess.Popen[str] | _Finished:
    """Start ``module:function(spec)`` in a fresh Python process (its own peak memory and CPU time);
    :func:`child_result` collects what it returns."""
    if INLINE_CHILDREN["on"]:
        return _Finished(json.loads(json.dumps(_call(target, json.loads(json.dumps(spec))), default=float)))
    return _spawn(target, spec, env)


def _spawn(target: str, spec: dict[str, Any], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "benchmarks", "_child", target, json.dumps(spec)]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def child_result(proc: subprocess.Popen[str] | _Finished) -> dict[str, Any]:
    if isinstance(proc, _Finished):
        return proc.result
    out, err = proc.communicate()
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise BenchmarkError(f"a child process failed (exit {proc.returncode}):\n{err[-3000:]}")


def run_child(target: str, spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    return child_result(start_child(target, spec, env))


def _call(target: str, spec: dict[str, Any]) -> dict[str, Any]:
    import importlib

    module, func = target.split(":")
    return dict(getattr(importlib.import_module(module), func)(spec))


def child_main(target: str, spec_json: str) -> int:
    """The child's side of :func:`start_child` (``python -m benchmarks _child MOD:FUNC JSON``)."""
    print("RESULT " + json.dumps(_call(target, json.loads(spec_json)), default=float), flush=True)
    return 0


@contextlib.contextmanager
def child_threads(threads: int | None) -> Iterator[None]:
    """Processes started inside the block that the harness does not start itself (the engine's
    child processes) get ``threads`` torch threads (OMP_NUM_THREADS; None or 0: unchanged)."""
    if not threads:
        yield
        return
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


# --------------------------------------------------------------------------- results


def ratio(value: float, baseline: float) -> float | None:
    """``value / baseline``, or None where the baseline is zero (a dry run's memory can peak before the
    measured part starts, leaving nothing to compare against)."""
    return value / baseline if baseline else None


def figure(
    name: str,
    ratio: float | None,
    against: str,
    value: float | None = None,
    unit: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One row of the Benchmarks page: ``ratio`` to the in-run ``against`` (None where a figure has
    no baseline), with the measured ``value`` in ``unit`` (seconds, bytes ...) beside it."""
    return {"name": name, "ratio": ratio, "against": against, "value": value, "unit": unit, **extra}


def command_line(name: str, argv: list[str]) -> str:
    return "python -m benchmarks " + " ".join(shlex.quote(a) for a in [name, *argv])


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return repr(x)


class Recorder:
    """Writes one run of one benchmark into ``<results_dir>/<name>.json`` (``{"benchmark", "runs":
    [...]}``, runs appended): after each part (:meth:`checkpoint`, so a later failure keeps the
    earlier parts) and at the end."""

    def __init__(self, name: str, argv: list[str], args: argparse.Namespace, results_dir: Path | None) -> None:
        self.name = name
        self.path = None if results_dir is None else Path(results_dir) / f"{name}.json"
        self.t0 = time.perf_counter()
        self.args = args
        self.run: dict[str, Any] = {
            "id": f"{os.getpid()}-{time.time_ns()}",
            "benchmark": name,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command_line(name, argv),
        }

    def checkpoint(self, result: dict[str, Any], final: bool = False) -> None:
        result = dict(result)
        figures = result.pop("figures", [])
        self.run.update(
            args=_jsonable({k: v for k, v in vars(self.args).items() if not k.startswith("_")}),
            machine=machine(result.pop("device", "cpu")),
            seconds=round(time.perf_counter() - self.t0, 3),
            figures=_jsonable(figures),
            results=_jsonable(result),
            complete=final,
        )
        if self.path is not None:
            write_run(self.path, self.name, self.run)


def write_run(path: Path, name: str, run: dict[str, Any]) -> None:
    """Append ``run`` to the results file ``path`` (or replace the run with the same id)."""
    data = read_results(path) if path.exists() else {"benchmark": name, "runs": []}
    runs = [r for r in data["runs"] if r.get("id") != run.get("id")]
    data["runs"] = [*runs, run]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(data, indent=1, default=float) + "\n")
    tmp.replace(path)


def read_results(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise BenchmarkError(f"{path} is not a results file of the harness (no 'runs' list)")
    return data
