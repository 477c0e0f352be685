"""Warm start: the time from "Run" to the first live image, with and without the warm engine.

"Run" is the moment the widget creates the :class:`EngineProcess` (the time includes checking the
images and options, as the widget's Run does); the first live image is the first progress record
that carries an image. Measured, in one script run:

* ``own process`` (``warm=False``, what every Run cost before the warm engine): a new Python
  process imports torch, reads the weights, builds the network, computes the targets;
* ``warm`` runs 1..N: run 1 starts the warm process (as cold as the above), runs 2..N reuse it;
* ``prewarmed``: :func:`prewarm` (what the widget can call when it opens), a wait, then a run.

Each run does ``--steps`` evaluations (the widget's throttle ``preview_interval=0.1``) to the end. The
warm process's resident memory is read before each run (idle), as its peak during the run
(VmHWM, reset before the run through /proc/PID/clear_refs) and after it (once it has settled):
after a run it should fall back near the idle level.

    python benchmarks/warm_start.py                          # 256 px, shared VGG16 weights, 4 warm runs
    python benchmarks/warm_start.py --size 512 --runs 5 --nice 10

Results: docs/responsiveness.md, section "Warm engine".
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_nst.core.image.files import read_image  # noqa: E402
from napari_nst.core.process.client import (  # noqa: E402
    EngineProcess,
    idle_engines,
    prewarm,
    shutdown_engines,
)

SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))
WEIGHTS = os.environ.get("NAPARI_NST_WEIGHTS", str(SHARED / "weights" / "vgg16-hed-features.pth"))


def _status(pid: int, field: str) -> float:
    """A ``/proc/PID/status`` memory field in MiB (nan where there is none)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _reset_peak(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _cpu(pid: int) -> float:
    """CPU seconds a process has used (user + system, all its threads)."""
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


def _settled_rss(pid: int, limit: float = 30.0) -> float:
    """RSS once the process is idle (the child frees the run's memory after its last message)."""
    end = time.monotonic() + limit
    last = _cpu(pid)
    while time.monotonic() < end:
        time.sleep(0.5)
        now = _cpu(pid)
        if now - last < 0.005:
            break
        last = now
    return _status(pid, "VmRSS")


def one_run(content, style, opts: dict, warm: bool, nice: int) -> dict:
    idle_pid = (idle_engines() or [None])[0] if warm else None
    idle_rss = _settled_rss(idle_pid) if idle_pid else float("nan")
    if idle_pid:
        _reset_peak(idle_pid)
    cpu0 = _cpu(idle_pid) if idle_pid else 0.0
    me0 = time.process_time()
    t0 = time.perf_counter()
    proc = EngineProcess(content, style, preview_interval=0.1, nice=nice, warm=warm, **opts)
    first_image = first_record = None
    cpu = float("nan")
    peak = float("nan")
    for rec in proc:
        now = time.perf_counter() - t0
        if first_record is None:
            first_record = now
        if first_image is None and rec.image is not None:
            first_image = now
            cpu = _cpu(proc.pid) - cpu0 + time.process_time() - me0
        peak = _status(proc.pid, "VmHWM")
    total = time.perf_counter() - t0
    after = _settled_rss(proc.pid) if warm else float("nan")
    return dict(
        first_image=first_image,
        first_record=first_record,
        total=total,
        pid=proc.pid,
        reused=proc.reused,
        cpu=cpu,
        load=os.getloadavg()[0],
        idle_mib=idle_rss,
        peak_mib=peak,
        after_mib=after,
    )


def in_process(content, style, opts: dict) -> dict:
    """The floor: the same run by the engine in this process, torch and the weights loaded after
    the first (what a warm process can at best achieve, without its messages)."""
    from napari_nst.core.api import iter_stylize

    loaded = "napari_nst.core.optim.engine" in sys.modules
    me0 = time.process_time()
    t0 = time.perf_counter()
    first_image = None
    for rec in iter_stylize(content, style, **opts):
        if first_image is None and rec.image is not None:
            first_image = time.perf_counter() - t0
            cpu = time.process_time() - me0
    nan = float("nan")
    return dict(
        first_image=first_image,
        first_record=nan,
        total=time.perf_counter() - t0,
        pid=os.getpid(),
        reused=loaded,
        cpu=cpu,
        load=os.getloadavg()[0],
        idle_mib=nan,
        peak_mib=nan,
        after_mib=nan,
    )


def cached_networks() -> None:
    """In this process only (a measurement of what a network cache in the engine would give): the
    engine's ``build_vgg`` memoised per (model, layers, weights, pooling); the engine moves the
    network to its device (a no-op on the CPU)."""
    from napari_nst.core.optim import engine

    build, nets = engine.build_vgg, {}

    def memo(model, layers, *, weights=None, pooling="max"):
        key = (model, tuple(layers), weights, pooling)
        if key not in nets:
            nets[key] = build(model, layers, weights=weights, pooling=pooling)
        return nets[key]

    engine.build_vgg = memo


def _row(name: str, r: dict) -> str:
    def mib(v: float) -> str:
        return "-" if v != v else f"{v:.0f}"

    return (
        f"| {name} | {r['first_image']:.2f} | {r['cpu']:.2f} | {r['total']:.2f} | {r['load']:.1f} | "
        f"{'yes' if r['reused'] else 'no'} | "
        f"{mib(r['idle_mib'])} | {mib(r['peak_mib'])} | {mib(r['after_mib'])} |"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--runs", type=int, default=4, help="warm runs (the first one starts the process)")
    ap.add_argument("--cold", type=int, default=2, help="runs in their own process (warm=False), the baseline")
    ap.add_argument("--nice", type=int, default=0)
    ap.add_argument("--prewarm-wait", type=float, default=15.0)
    ap.add_argument("--content", default=str(SHARED / "images" / "tubingen.jpg"))
    ap.add_argument("--style", default=str(SHARED / "images" / "starry_night.jpg"))
    ap.add_argument("--weights", default=WEIGHTS)
    a = ap.parse_args(argv)

    content, style = read_image(a.content), read_image(a.style)
    opts = dict(size=a.size, steps=a.steps, model="vgg16", weights=a.weights, device="cpu")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print(f"# python benchmarks/warm_start.py {' '.join(sys.argv[1:])}")
    print(
        "| run | Run -> first image (s) | CPU s to it | Run -> end (s) | load | reused | idle RSS MiB "
        "| peak RSS MiB | RSS after MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    shutdown_engines()
    cold = [one_run(content, style, opts, False, a.nice) for _ in range(a.cold)]
    for i, r in enumerate(cold, 1):
        print(_row(f"own process {i}", r), flush=True)
    warm, here, cached = [], [], []
    for i in range(1, a.runs + 1):  # interleaved, so that both see the same load on the machine
        warm.append(one_run(content, style, opts, True, a.nice))
        print(_row(f"warm {i}", warm[-1]), flush=True)
        here.append(in_process(content, style, opts))
        print(_row(f"engine in this process {i}", here[-1]), flush=True)
    if a.runs > 1:  # the same, with a network cache (the engine has no such hook yet)
        cached_networks()
        for i in range(1, a.runs):
            cached.append(in_process(content, style, opts))
            print(_row(f"engine in this process, network cached {i}", cached[-1]), flush=True)
    shutdown_engines()
    prewarm(nice=a.nice, **opts)
    time.sleep(a.prewarm_wait)
    pre = one_run(content, style, opts, True, a.nice)
    print(_row(f"prewarmed ({a.prewarm_wait:g} s before)", pre), flush=True)
    shutdown_engines()

    base = statistics.median(r["first_image"] for r in cold)
    later = [r["first_image"] for r in warm[1:]]
    if later:
        floor = statistics.median(r["first_image"] for r in here[1:])
        print(
            f"\nfirst image: own process median {base:.2f} s; warm runs 2..{a.runs}: median "
            f"{statistics.median(later):.2f} s, max {max(later):.2f} s ({statistics.median(later) / base:.2f}x); "
            f"engine in this process 2..{a.runs}: median {floor:.2f} s, with a network cache "
            f"{statistics.median(r['first_image'] for r in cached):.2f} s; prewarmed {pre['first_image']:.2f} s"
        )
    print(f"# load after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
