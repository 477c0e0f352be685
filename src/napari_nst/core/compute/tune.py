"""The compute plan measured on the machine that runs it (as cuDNN's benchmark mode, FFTW's wisdom).

:func:`napari_nst.core.compute.device.network_plan` says how the network runs (precision, memory layout,
convolution algorithm, max pooling) from what the device *is*; those rules were measured on one
machine, and another ranks the plans otherwise (on a 2-core AVX-512 CPU with both threads, NNPACK's
Winograd convolutions took 2.3x the textbook's oneDNN float32, which one thread had measured at
0.55x). So the first run on a machine times the candidate plans on one forward + backward of the
real network and objective at the run's size, within :data:`BUDGET` seconds, and keeps the table in
``plans.json`` next to the widget's remembered settings (:func:`napari_nst.core.config.config_dir`).
Later runs with the same key (device, CPU or GPU model, instruction set, torch version, thread count,
size class of the shape timed) read it back; a run larger than :data:`MAX_PIXELS` (on a GPU
:data:`MAX_PIXELS_GPU`) is timed on a crop of that many pixels, so the runs from about 256 px up
(1024 px on a GPU), of one aspect, share one table.

Noise: the candidates are timed in rounds, interleaved, each against the static rule's plan timed in
the same round, every other round in reverse order (the median of those ratios ranks them, so a
load that drifts hits every candidate alike); clearly slower candidates are dropped after two
rounds; another plan replaces the static rule's only when it is faster by more than
:data:`MARGIN`, and among plans within the margin of the fastest the first in :func:`candidates`'
order is kept (the static plan, then less memory).

``precision="auto"`` takes the fastest plan of every precision the device runs in hardware; an
explicit ``float32`` or ``bfloat16`` the fastest of that precision; the engine's measuring knobs
(``channels_last``, ``lean_pool``, ``winograd``) still override. ``NAPARI_NST_TUNE=0`` switches the
measurement off (the static rules then hold, as they do where nothing can be timed: MPS, emulated
bfloat16, a failed measurement). ``napari-nst tune`` shows the table and measures again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from napari_nst.core.compute import device as D
from napari_nst.core.compute.device import NetworkPlan
from napari_nst.core.config import config_dir
from napari_nst.core.encoder.layer_names import NARROW_MIN, WIDE_MIN
from napari_nst.core.encoder.vgg import Conv3x3, VGGFeatures, nnpack_available
from napari_nst.core.objective.losses import content_loss, gram, gram_loss

log = logging.getLogger("napari_nst")
#: says, before a run measures, what it is about to time (the command line prints it; INFO)
announce = logging.getLogger("napari_nst.tune")

#: environment variable: "0" = no measurement, the static rules of device.py
TUNE_ENV = "NAPARI_NST_TUNE"
#: the measured plans, in :func:`napari_nst.core.config.config_dir`
CACHE_FILE = "plans.json"
#: 2: the candidate with Winograd F(4x4) on the wide layers; 3: the one with it from 128 channels; 4: the
#: size class of the shape timed, a GPU timing up to 1024x1024 px (older tables are measured again)
CACHE_VERSION = 4
#: entries kept in the cache file (the oldest go first)
CACHE_ENTRIES = 64
#: seconds of timing, the warm-up round included (at least MIN_ROUNDS rounds are timed whatever it takes)
BUDGET = 2.5
MIN_ROUNDS = 2
MAX_ROUNDS = 9
#: ... unless the warm-up and the first round took more than this many budgets already
OVERRUN = 3.0
#: another plan replaces the static rule's only when faster by more than this fraction
MARGIN = 0.04
#: after MIN_ROUNDS, a candidate slower than this factor times the fastest is timed no more
PRUNE = 1.3
#: the largest image timed on a CPU (pixels): a larger run is timed on a central crop of this many
#: pixels, so that measuring stays within the budget (a 256x256 forward + backward is ~0.1-0.3 s on 2 cores)
MAX_PIXELS = 256 * 256
#: ... on a GPU: a pass at 256x256 px is a few milliseconds of kernel launches there, which rank the
#: plans as the large images a GPU runs would not (a 1024x768 pass is tens of milliseconds)
MAX_PIXELS_GPU = 1024 * 1024


def max_pixels(device: torch.device) -> int:
    """The largest image timed on ``device`` (MAX_PIXELS, or MAX_PIXELS_GPU off the CPU)."""
    return MAX_PIXELS if device.type == "cpu" else MAX_PIXELS_GPU


PRECISIONS = ("float32", "bfloat16")


# --------------------------------------------------------------------------- plans and keys


@dataclass(frozen=True)
class Candidate:
    """One way to run the network: its precision and its :class:`NetworkPlan`."""

    precision: str  # "float32" or "bfloat16"
    plan: NetworkPlan

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: float32)."""
        return torch.bfloat16 if self.precision == "bfloat16" else None

    @property
    def label(self) -> str:
        conv = "NNPACK Winograd" if self.plan.winograd else "direct"
        if self.plan.winograd_wide:  # short: the widget shows the table in its dock
            conv = (
                "Winograd 4x4 wide" if self.plan.winograd_min >= WIDE_MIN else f"Winograd 4x4 {self.plan.winograd_min}+"
            )
        pool = "index-free pool" if self.plan.lean_pool else "torch pool"
        return f"{self.precision}, {self.plan.layout}, {conv} conv, {pool}"

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, **dataclasses.asdict(self.plan)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        plan = NetworkPlan(
            channels_last=bool(d["channels_last"]),
            lean_pool=bool(d["lean_pool"]),
            winograd=bool(d["winograd"]),
            winograd_wide=bool(d.get("winograd_wide", False)),
            winograd_min=int(d.get("winograd_min", WIDE_MIN)),
        )
        if d["precision"] not in PRECISIONS:
            raise ValueError(f"unknown precision {d['precision']!r}")
        return cls(str(d["precision"]), plan)


def size_class(shape: tuple[int, int]) -> int:
    """The size class of a working shape: its long edge rounded to a power of two (181-362 px: 256)."""
    return int(2 ** round(math.log2(max(1, max(shape)))))


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what the platform says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@dataclass(frozen=True)
class MachineKey:
    """What a measured table holds for: another value of any field measures again."""

    device: str  # "cpu", "cuda:0"
    model: str  # the CPU's or GPU's model name
    isa: str  # CPU: ATen's capability, oneDNN's ISA limit, fast bf16; GPU: compute capability
    torch: str
    threads: int
    size: int  # size class (px), see size_class

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def text(self) -> str:
        return (
            f"{self.device} ({self.model}; {self.isa}), torch {self.torch}, {self.threads} thread(s), "
            f"size class {self.size} px (of the shape timed)"
        )


def machine_key(device: torch.device, shape: tuple[int, int]) -> MachineKey:
    """This machine's key for a run at working ``shape`` on ``device``. Its size class is that of
    the shape timed (:func:`timed_shape`): larger runs are timed on a crop of the same size, so
    every run from about 256 px up on a CPU (1024 px on a GPU), of one aspect, shares one table
    instead of measuring the same crop again for each size class."""
    klass = size_class(timed_shape(shape, max_pixels(device)))
    if device.type == "cuda":
        idx = D.cuda_index(device)
        major, minor = D.cuda_capability(device)
        return MachineKey(
            f"cuda:{idx}",
            str(torch.cuda.get_device_name(idx)),
            f"sm_{major}{minor}",
            torch.__version__,
            torch.get_num_threads(),
            klass,
        )
    isa = (
        f"ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN {os.environ.get('ONEDNN_MAX_CPU_ISA', 'native')}, "
        f"fast bf16 {'yes' if D.cpu_has_fast_bf16() else 'no'}"
    )
    return MachineKey(device.type, cpu_model(), isa, torch.__version__, torch.get_num_threads(), klass)


def static_candidate(device: torch.device, precision: str) -> Candidate:
    """The static rules' plan (device.py) for ``precision`` (``auto`` resolved as device.py does)."""
    dtype = D.autocast_dtype(precision, device)
    plan = D.network_plan(device, dtype)
    if plan.winograd and not nnpack_available():
        plan = dataclasses.replace(plan, winograd=False)
    return Candidate("bfloat16" if dtype is not None else "float32", plan)


def candidates(device: torch.device) -> list[Candidate]:
    """The plans worth timing on ``device``, in order of preference for near ties: the static
    rules' plan for ``auto`` first, then the other plans of its precision, then each other
    precision's static plan and its alternatives. Empty where nothing is timed (MPS, other devices).

    * CPU: float32 with oneDNN's direct convolutions (the textbook's network) contiguous and
      channels-last, and with NNPACK's Winograd convolutions (contiguous only; where torch has
      NNPACK), and channels-last with napari-nst's Winograd F(4x4, 3x3) on the layers of 256 or
      more input channels, and on those of 128 or more (``encoder/winograd.py``; last of the
      float32 plans, so a near tie keeps a plan without transformed kernels, 4x those layers'
      weights; of the two, the one from 128 channels first: the two layers it adds keep 7 MB,
      and where the transform pays at all it was the faster, 0.91-1.00x per evaluation under
      AVX2, benchmarks/results/cpu.json); bfloat16 (only where
      it runs in hardware: emulated it is tens of times slower) channels-last with the index-free
      or torch's pool (contiguous bfloat16 was 1.1-1.2x channels-last in every measurement).
    * CUDA: float32 and (compute capability >= 8.0) bfloat16, each contiguous and channels-last,
      torch's pool (cuDNN benchmark mode picks the convolution algorithm within a plan).
    """
    if device.type not in ("cpu", "cuda"):
        return []
    precisions = ["float32"]
    if D.native_bf16(device):
        precisions.append("bfloat16")
    first = static_candidate(device, "auto")
    precisions.sort(key=lambda p: p != first.precision)
    out: list[Candidate] = []

    def add(c: Candidate) -> None:
        if c not in out:
            out.append(c)

    for p in precisions:
        add(static_candidate(device, p))
        if device.type == "cuda":
            for cl in (False, True):
                add(Candidate(p, NetworkPlan(channels_last=cl, lean_pool=False)))
        elif p == "bfloat16":
            add(Candidate(p, NetworkPlan(channels_last=True, lean_pool=True)))
            add(Candidate(p, NetworkPlan(channels_last=True, lean_pool=False)))
        else:
            if nnpack_available():
                add(Candidate(p, NetworkPlan(channels_last=False, lean_pool=False, winograd=True)))
            add(Candidate(p, NetworkPlan(channels_last=False, lean_pool=False)))
            add(Candidate(p, NetworkPlan(channels_last=True, lean_pool=False)))
            add(
                Candidate(
                    p, NetworkPlan(channels_last=True, lean_pool=False, winograd_wide=True, winograd_min=NARROW_MIN)
                )
            )
            add(Candidate(p, NetworkPlan(channels_last=True, lean_pool=False, winograd_wide=True)))
    return out


# --------------------------------------------------------------------------- the table


@dataclass
class Row:
    """One candidate's timings: seconds per pass, and per round its ratio to the reference plan
    (the table's first row) timed in the same round."""

    candidate: Candidate
    seconds: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    dropped: bool = False  # timed no more: clearly slower, or it failed
    error: str = ""

    @property
    def ratio(self) -> float:
        """Median ratio to the reference (inf when never timed)."""
        return statistics.median(self.ratios) if self.ratios else math.inf

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else math.inf

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.candidate.as_dict(),
            "seconds": self.seconds,
            "ratios": self.ratios,
            "dropped": self.dropped,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        return cls(
            Candidate.from_dict(d["plan"]),
            [float(x) for x in d["seconds"]],
            [float(x) for x in d["ratios"]],
            bool(d.get("dropped", False)),
            str(d.get("error", "")),
        )


@dataclass
class Table:
    """A measurement: the rows (reference first), the shape timed, what it cost and when."""

    key: MachineKey
    shape: tuple[int, int]
    rows: list[Row]
    seconds: float
    rounds: int
    when: str = ""

    def choose(self, precision: str = "auto", margin: float = MARGIN, kernels: bool = True) -> Candidate | None:
        """The plan to run ``precision`` with (None: the table has no plan of that precision).

        Among the rows of that precision (all rows for ``auto``) the first is that precision's
        static plan; it is kept unless the fastest row is faster by more than ``margin``; else
        the first row (in the table's order of preference) within ``margin`` of the fastest.
        ``kernels=False``: only the plans that keep no transformed kernels (not ``winograd_wide``).
        """
        pool = [
            r
            for r in self.rows
            if r.ratios
            and (precision == "auto" or r.candidate.precision == precision)
            and (kernels or not r.candidate.plan.winograd_wide)
        ]
        if not pool:
            return None
        best = min(r.ratio for r in pool)
        near = [r for r in pool if r.ratio <= best * (1.0 + margin)]
        return near[0].candidate

    def text(self, chosen: dict[str, Candidate | None] | None = None) -> str:
        """The table as lines of text (the command line and the widget show it)."""
        if chosen is None:
            chosen = {p: self.choose(p) for p in ("auto", *PRECISIONS)}
        h, w = self.shape
        width = max([52, *(len(r.candidate.label) for r in self.rows)])
        lines = [
            f"{self.key.text}",
            f"timed at {w}x{h} px: {self.rounds} round(s) of one forward + backward each, {self.seconds:.1f} s"
            + (f", {self.when}" if self.when else ""),
            f"{'plan':{width}s} {'ms/pass':>8s} {'x ref':>6s}  chosen for",
        ]
        for r in self.rows:
            marks = [p for p, c in chosen.items() if c == r.candidate]
            note = ", ".join(marks) + (f" (dropped: {r.error})" if r.error else " (dropped)" if r.dropped else "")
            ms = f"{1000 * r.median:8.0f}" if r.seconds else f"{'-':>8s}"
            ratio = f"{r.ratio:6.2f}" if r.ratios else f"{'-':>6s}"
            lines.append(f"{r.candidate.label:{width}s} {ms} {ratio}  {note}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key.as_dict(),
            "shape": list(self.shape),
            "rows": [r.as_dict() for r in self.rows],
            "seconds": self.seconds,
            "rounds": self.rounds,
            "when": self.when,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Table:
        key = MachineKey(**d["key"])
        h, w = d["shape"]
        return cls(
            key,
            (int(h), int(w)),
            [Row.from_dict(r) for r in d["rows"]],
            float(d["seconds"]),
            int(d["rounds"]),
            str(d.get("when", "")),
        )


# --------------------------------------------------------------------------- timing


def race(
    cands: Sequence[Candidate],
    run_one: Callable[[Candidate], None],
    *,
    timer: Callable[[], float] = time.perf_counter,
    budget: float = BUDGET,
    min_rounds: int = MIN_ROUNDS,
    max_rounds: int = MAX_ROUNDS,
    prune: float = PRUNE,
) -> tuple[list[Row], int, float]:
    """Time ``run_one(c)`` for every candidate, interleaved in rounds; returns the rows (in
    ``cands``' order), the rounds timed and the seconds spent (by ``timer``, warm-up included).

    A warm-up round first (not counted: the first pass sets up kernels and memory); a candidate
    whose pass raises is dropped with the error. Then rounds, every other one in reverse order
    (so that a load that drifts during the measurement favours no candidate over a pair of
    rounds), until ``budget`` seconds have passed (at least ``min_rounds``, at most
    ``max_rounds``; one when the warm-up and the first round took :data:`OVERRUN` budgets). Each
    timing is also kept as a ratio to the first candidate's in the same round. After
    ``min_rounds``, a candidate whose median ratio is over ``prune`` times the best is timed no
    more; the first candidate (the reference) and each precision's first are kept.
    """
    rows = [Row(c) for c in cands]
    anchors = {0} | {next(i for i, c in enumerate(cands) if c.precision == p) for p in {c.precision for c in cands}}
    start = timer()
    for r in rows:
        try:
            run_one(r.candidate)
        except Exception as exc:  # e.g. a kernel this build lacks: never chosen
            r.dropped, r.error = True, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if rows and rows[0].dropped:
        return rows, 0, timer() - start
    rounds = 0
    while rounds < max_rounds:
        live = [i for i, r in enumerate(rows) if not r.dropped]
        if len(live) < 2 and rounds >= 1:
            break
        order = live if rounds % 2 == 0 else live[::-1]  # a drifting load cancels over each pair of rounds
        times: dict[int, float] = {}
        for i in order:
            t0 = timer()
            try:
                run_one(rows[i].candidate)
            except Exception as exc:
                rows[i].dropped, rows[i].error = True, f"{type(exc).__name__}: {exc}"
                continue
            times[i] = timer() - t0
        if 0 not in times:
            break
        rounds += 1
        for i, t in times.items():
            rows[i].seconds.append(t)
            rows[i].ratios.append(t / max(times[0], 1e-12))
        if rounds >= min_rounds:
            _prune(rows, anchors, prune)
            if timer() - start >= budget:
                break
        elif timer() - start >= OVERRUN * budget:
            break  # a slow machine (or a busy one): one round has to do
    return rows, rounds, timer() - start


def _prune(rows: list[Row], anchors: set[int], prune: float) -> None:
    """Time no more the candidates over ``prune`` times the best median ratio (not the anchors)."""
    best = min(r.ratio for r in rows if r.ratios)
    for i, r in enumerate(rows):
        if i not in anchors and not r.dropped and r.ratio > prune * best:
            r.dropped = True


def _objective_pass(
    net: VGGFeatures,
    x: torch.Tensor,
    c: Candidate,
    content_layers: Sequence[str],
    style_layers: Sequence[str],
    targets: dict[str, torch.Tensor],
) -> None:
    """One forward + backward of the network and the paper's objective (against zero targets,
    which cost what the real ones cost) in plan ``c``."""
    D.apply_network_plan(net, c.plan, release=False)  # measure() releases what the net does not keep
    g = x.detach().requires_grad_(True)
    autocast: Any = (
        torch.autocast(device_type=x.device.type, dtype=c.dtype, cache_enabled=False)
        if c.dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        feats = net(g.contiguous(memory_format=torch.channels_last) if c.plan.channels_last else g)
    total = torch.zeros((), device=x.device)
    for n in content_layers:
        t = targets.setdefault("c:" + n, torch.zeros(feats[n].shape, device=x.device))
        total = total + content_loss(feats[n], t)
    for n in style_layers:
        f = feats[n]
        ch, m = f.shape[1], f.shape[2] * f.shape[3]
        a = targets.setdefault("s:" + n, torch.zeros(ch, ch, device=x.device))
        total = total + gram_loss(gram(f), a, ch, m)
    (grad,) = torch.autograd.grad(total, g)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    else:
        float(grad[0, 0, 0, 0])  # the result is there


def timed_shape(shape: tuple[int, int], max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """The shape timed for a run at working ``shape``: itself, or a crop of at most ``max_pixels``
    pixels with its aspect."""
    h, w = int(shape[0]), int(shape[1])
    if h * w <= max_pixels:
        return h, w
    f = math.sqrt(max_pixels / (h * w))
    return max(1, int(h * f)), max(1, int(w * f))


def timing_image(image: torch.Tensor, most: int | None = None) -> torch.Tensor:
    """``image`` (1, 3, H, W), or its central crop of :func:`timed_shape` (at most ``most`` pixels;
    default: :func:`max_pixels` of its device)."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    ch, cw = timed_shape((h, w), max_pixels(image.device) if most is None else most)
    if (ch, cw) == (h, w):
        return image
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[..., top : top + ch, left : left + cw].contiguous()


def measure(
    net: VGGFeatures,
    image: torch.Tensor,
    content_layers: Sequence[str],
    style_layers: Sequence[str],
    *,
    shape: tuple[int, int] | None = None,
    budget: float = BUDGET,
    timer: Callable[[], float] | None = None,
) -> Table | None:
    """Time :func:`candidates` on ``net`` (moved to the image's device) with ``image`` (1, 3, H, W)
    in [0, 1] (cropped to :func:`max_pixels`); the key is :func:`machine_key` of ``shape`` (default:
    the image's). None where there is nothing to time. The network's pooling and convolution switches
    are left as they were."""
    device = image.device
    cands = candidates(device)
    if len(cands) < 1:
        return None
    x = timing_image(image.float())
    key = machine_key(device, shape or (int(image.shape[-2]), int(image.shape[-1])))
    targets: dict[str, torch.Tensor] = {}
    lean = [m.lean for m in net.modules() if hasattr(m, "lean")]
    convs = [m for m in net.modules() if isinstance(m, Conv3x3)]
    algos = [(m.winograd, m.winograd_wide, m.winograd_min) for m in convs]
    layers = list(net.wanted.values())
    content = [n for n in content_layers if n in layers]
    style = [n for n in style_layers if n in layers]
    try:
        with D.cudnn_benchmark(device):
            rows, rounds, spent = race(
                cands,
                lambda c: _objective_pass(net, x, c, content, style, targets),
                timer=timer or _TIMER,
                budget=budget,
            )
    finally:
        for m, v in zip([m for m in net.modules() if hasattr(m, "lean")], lean, strict=True):
            m.lean = v
        for m, (nnpack, wide, least) in zip(convs, algos, strict=True):
            m.winograd, m.winograd_wide, m.winograd_min = nnpack, wide, least
            if not m.wide:
                m.release(workspace=not wide)
    if rounds == 0:
        return None
    when = time.strftime("%Y-%m-%d %H:%M")
    return Table(key, (int(x.shape[-2]), int(x.shape[-1])), rows, spent, rounds, when)


#: the clock the engine's measurements use (tests replace it, and :func:`_objective_pass`)
_TIMER: Callable[[], float] = time.perf_counter


# --------------------------------------------------------------------------- the cache


def cache_path() -> Path:
    return config_dir() / CACHE_FILE


def _read_entries() -> list[dict[str, Any]]:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("plans"), list):
        return []
    return [e for e in data["plans"] if isinstance(e, dict)]


def load(key: MachineKey) -> Table | None:
    """The table measured for ``key`` (None: none, or the file is unreadable or of another version)."""
    want = key.as_dict()
    for e in reversed(_read_entries()):
        if e.get("key") == want:
            try:
                return Table.from_dict(e)
            except (KeyError, TypeError, ValueError):
                return None
    return None


def tables() -> list[Table]:
    """Every table in the cache file, oldest first."""
    out = []
    for e in _read_entries():
        try:
            out.append(Table.from_dict(e))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def store(table: Table) -> str | None:
    """Keep ``table`` (replacing its key's); returns an error text instead of raising."""
    entries = [e for e in _read_entries() if e.get("key") != table.key.as_dict()]
    entries.append(table.as_dict())
    folder = config_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{CACHE_FILE}.{os.getpid()}.part"
        text = json.dumps({"version": CACHE_VERSION, "plans": entries[-CACHE_ENTRIES:]}, indent=1)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / CACHE_FILE)
    except (OSError, TypeError, ValueError) as exc:
        return f"could not keep the measured plan in {folder}: {exc}"
    return None


# --------------------------------------------------------------------------- what a run uses


def enabled() -> bool:
    """Whether runs measure their plan (``$NAPARI_NST_TUNE`` is not ``0``)."""
    return os.environ.get(TUNE_ENV, "1").strip() != "0"


@dataclass(frozen=True)
class Decision:
    """What a run uses: the autocast dtype, the network plan, and a note for the records."""

    dtype: torch.dtype | None
    plan: NetworkPlan
    note: str = ""
    table: Table | None = None


def static_decision(device: torch.device, dtype: torch.dtype | None) -> Decision:
    return Decision(dtype, D.network_plan(device, dtype))


def plan_for_run(
    net: VGGFeatures,
    device: torch.device,
    precision: str,
    dtype: torch.dtype | None,
    image: Callable[[], torch.Tensor],
    shape: tuple[int, int],
    content_layers: Sequence[str],
    style_layers: Sequence[str],
) -> Decision:
    """The plan a run on ``device`` at working ``shape`` uses: the cached table's choice for
    ``precision``, measured now if this machine has no table for the key yet (``image()``: the
    picture to time on, (1, 3, H, W) on the device); the static rules' when measuring is off or
    impossible. ``dtype``: the static rules' dtype for ``precision`` (device.autocast_dtype)."""
    static = static_decision(device, dtype)
    if not enabled() or device.type not in ("cpu", "cuda"):
        return static
    if precision == "bfloat16" and not D.native_bf16(device):
        return static  # emulated bfloat16, as asked: nothing faster of that precision to find
    key = machine_key(device, shape)
    table = load(key)
    note = ""
    if table is None:
        h, w = timed_shape(shape, max_pixels(device))
        announce.info(
            "measuring the fastest compute plan on this machine, once for runs like this one: a warm-up "
            "pass and %d or more timed rounds of %d plans at %dx%d px ...",
            MIN_ROUNDS,
            len(candidates(device)),
            w,
            h,
        )
        try:
            table = measure(net, image(), content_layers, style_layers, shape=shape)
        except Exception as exc:  # out of memory, a backend that fails: the static rules hold
            log.warning("could not measure the compute plan: %s", exc)
            return dataclasses.replace(
                static, note=f"could not measure the compute plan ({type(exc).__name__}); the built-in rules hold"
            )
        if table is None:
            return static
        err = store(table)
        note = _measured_note(table, precision, err)
    chosen = table.choose(precision)
    if chosen is None:
        return static
    return Decision(chosen.dtype, chosen.plan, note, table)


def _measured_note(table: Table, precision: str, err: str | None) -> str:
    chosen = table.choose(precision)
    h, w = table.shape
    where = err or f"kept in {cache_path()}"
    return (
        f"measured the fastest compute plan on this machine in {table.seconds:.1f} s "
        f"({sum(1 for r in table.rows if r.ratios)} plans at {w}x{h} px): "
        f"{chosen.label if chosen else 'none'}; {where}; 'napari-nst tune' shows the table"
    )


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """No measurement within (the static rules), whatever ``$NAPARI_NST_TUNE`` says."""
    before = os.environ.get(TUNE_ENV)
    os.environ[TUNE_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TUNE_ENV, None)
        else:
            os.environ[TUNE_ENV] = before


def tune(
    net: VGGFeatures,
    device: torch.device,
    shape: tuple[int, int],
    content_layers: Sequence[str],
    style_layers: Sequence[str],
    image: torch.Tensor | None = None,
    budget: float = BUDGET,
    keep: bool = True,
) -> Table | None:
    """Measure the plans for a run at working ``shape`` now and keep the table (``napari-nst
    tune``, the widget's button; ``keep=False``: only return it). ``image``: (1, 3, H, W) in [0, 1]
    on ``device`` (default: a smooth random picture of ``shape``)."""
    if image is None:
        gen = torch.Generator().manual_seed(0)
        small = torch.rand(1, 3, max(1, shape[0] // 8), max(1, shape[1] // 8), generator=gen)
        image = F.interpolate(small, size=shape, mode="bilinear", align_corners=False).to(device)
    net = net.to(device)
    table = measure(net, image, content_layers, style_layers, shape=shape, budget=budget)
    if table is not None and keep:
        err = store(table)
        if err:
            log.warning(err)
    return table


def timing_shape(size: int) -> tuple[int, int]:
    """The working shape timed for a run of long edge ``size`` when there is no picture: 4:3."""
    return (max(1, round(size * 3 / 4)), size)


def network_for(opts: Any) -> VGGFeatures:
    """The network ``opts`` (an :class:`~napari_nst.core.options.Options`) runs, for timing: built
    from its weights file (or ``$NAPARI_NST_WEIGHTS``) if there is one, else with untrained
    weights (the timings do not depend on the weights; torchvision's are not downloaded for it)."""
    from napari_nst.core.encoder.vgg import WEIGHTS_ENV, build_vgg

    if opts.weights or os.environ.get(WEIGHTS_ENV):
        return build_vgg(opts.model, opts.layers, weights=opts.weights, pooling=opts.pooling)
    return VGGFeatures(opts.model or "vgg19", opts.layers, opts.pooling)


def tune_options(opts: Any, budget: float = BUDGET, keep: bool = True) -> Table | None:
    """Measure (and keep, unless ``keep`` is False) the plans for runs with ``opts`` (``napari-nst
    tune``, the widget's button, the GPU benchmark): on its device, at its size (by device when
    None), on its network."""
    device = D.pick_device(opts.device)
    opts = opts.for_device(gpu=device.type != "cpu")
    net = network_for(opts)
    if device.type != "cpu":
        import copy

        net = copy.deepcopy(net)
    shape = timing_shape(int(opts.size))
    return tune(net, device, shape, opts.content_layers, opts.style_layers, budget=budget, keep=keep)
