"""Many runs in one process: does resident memory grow run over run?

Runs ``--runs`` short style transfers one after the other in this process (``iter_stylize``, the
Python API) and, with ``--child``, as many through ``EngineProcess`` (what the napari widget does;
the parent's memory is what matters there), and records the resident set size (RSS, psutil) after
each run, after ``gc.collect()``. Reported: RSS after the first run, after the last, the growth from
run 2 to the last (run 1 includes one-off allocations: the weights cache, torch's thread pools),
and the least-squares slope over runs 2..N in MB per run.

    python benchmarks/memory_growth.py                      # 20 runs, size 128, 5 steps, + child runs
    python benchmarks/memory_growth.py --runs 50 --size 256 --device cuda

Results: docs/memory_growth.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_nst.core.api import iter_stylize  # noqa: E402
from napari_nst.core.image.files import read_image  # noqa: E402
from napari_nst.core.process.client import EngineProcess  # noqa: E402

SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))
WEIGHTS = os.environ.get("NAPARI_NST_WEIGHTS", str(SHARED / "weights" / "vgg16-hed-features.pth"))


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def series(run, n: int) -> list[float]:
    out = []
    for i in range(n):
        run()
        out.append(rss_mb())
        print(f"  run {i + 1:3d}: RSS {out[-1]:8.1f} MB", flush=True)
    return out


def summary(rss: list[float]) -> dict[str, float]:
    tail = np.asarray(rss[1:])
    slope = float(np.polyfit(np.arange(len(tail)), tail, 1)[0]) if len(tail) > 1 else 0.0
    floor = min(rss[-5:]) - min(rss[1:6]) if len(rss) > 6 else 0.0
    return {
        "first": rss[0],
        "last": rss[-1],
        "growth": rss[-1] - rss[1] if len(rss) > 1 else 0.0,
        "slope": slope,
        "max": max(rss),
        "floor": floor,
        "series": rss,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weights", default=WEIGHTS)
    ap.add_argument("--no-child", dest="child", action="store_false", help="skip the EngineProcess runs")
    ap.add_argument("--out", default=str(ROOT / "docs" / "memory_growth.md"))
    args = ap.parse_args(argv)
    content = read_image(SHARED / "images" / "tubingen.jpg")
    style = read_image(SHARED / "images" / "starry_night.jpg")
    opts = dict(size=args.size, steps=args.steps, model="vgg16", weights=args.weights, device=args.device)
    start = rss_mb()

    def in_process() -> None:
        last = None
        for rec in iter_stylize(content, style, **opts):
            last = rec
        assert last is not None and last.image is not None

    results = {}
    print(f"in-process, {args.runs} runs (RSS before: {start:.1f} MB)")
    results["in-process (iter_stylize)"] = summary(series(in_process, args.runs))
    if args.child:

        def child() -> None:
            recs = list(EngineProcess(content, style, **opts))
            assert recs[-1].image is not None

        print(f"child process, {args.runs} runs")
        results["child process (EngineProcess), parent RSS"] = summary(series(child, args.runs))
        assert not psutil.Process().children(), "child processes left behind"

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    lines = [
        "# Memory over many runs",
        "",
        f"{args.runs} runs one after the other in one Python process; resident memory (RSS, after `gc.collect()`)",
        "after each run. Written by `benchmarks/memory_growth.py`.",
        "",
        f"Command: `python benchmarks/memory_growth.py --runs {args.runs} --size {args.size} --steps {args.steps} "
        f"--device {args.device}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.1f}; torch "
        f"{__import__('torch').__version__}; vgg16, real weights; RSS before the first run {start:.1f} MB.",
        "",
        "| runs | RSS after run 1 | RSS after run N | growth run 2 -> N | floor growth | slope (runs 2..N) | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['first']:.1f} MB | {r['last']:.1f} MB | {r['growth']:+.1f} MB | "
            f"{r['floor']:+.1f} MB | {r['slope']:+.2f} MB/run | {r['max']:.1f} MB |"
        )
    lines += ["", "RSS after each run (MB):", ""]
    for name, r in results.items():
        lines.append(f"- {name}: " + ", ".join(f"{v:.0f}" for v in r["series"]))
    lines += [
        "",
        '"floor growth" = lowest RSS of the last 5 runs minus lowest of runs 2-6: the allocator keeps freed',
        "arenas for a while, so single runs spike by tens of MB and fall back; a leak raises the floor.",
        "",
        "Run 1 carries the one-off costs (weights read and cached, torch's allocator and thread pools).",
        "A leak would show as a steady positive slope; allocator noise shows as a few MB either way.",
        "The cheap regression test (`tests/headless/test_robustness_faults.py::test_many_runs_leave_nothing_behind`)",
        "counts live tensors and networks after each run instead of RSS, which is exact and not flaky.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
