"""Memory over many runs: does resident memory grow run over run, in process and with the engine in a child?

Runs --runs short style transfers one after the other in this process (``iter_stylize``, the
Python API) and as many through ``EngineProcess`` (what the napari widget does, its warm engine
process reused run after run; the parent's memory is what matters there), and records the resident
set size (RSS, psutil) after each run, after ``gc.collect()``. Figures: RSS after the last run
against after the first (run 1 carries the one-off costs: the weights cache, torch's thread pools),
the least-squares slope over runs 2..N, and the floor growth (lowest RSS of the last 5 runs less
the lowest of runs 2-6: the allocator keeps freed arenas for a while, so single runs spike and
fall back; a leak raises the floor).

    python -m benchmarks memory_growth --runs 20 --size 128 --steps 5
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _harness as H


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-child", dest="child", action="store_false", help="skip the EngineProcess runs")


def rss_mib() -> float:
    import psutil

    gc.collect()
    return float(psutil.Process().memory_info().rss / H.MiB)


def series(run: Callable[[], None], n: int) -> list[float]:
    out = []
    for i in range(n):
        run()
        out.append(rss_mib())
        H.say(f"  run {i + 1:3d}: RSS {out[-1]:8.1f} MiB")
    return out


def summary(rss: list[float]) -> dict[str, Any]:
    tail = np.asarray(rss[1:])
    slope = float(np.polyfit(np.arange(len(tail)), tail, 1)[0]) if len(tail) > 1 else 0.0
    floor = min(rss[-5:]) - min(rss[1:6]) if len(rss) > 6 else 0.0
    return {"first": rss[0], "last": rss[-1], "slope": slope, "floor": floor, "max": max(rss), "series": rss}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    from napari_nst.core.api import iter_stylize
    from napari_nst.core.process.client import EngineProcess, shutdown_engines

    if args.dry_run:
        args.runs, args.size, args.steps = 3, 32, 2
    content, style = H.load_image(args.content), H.load_image(args.style)
    opts = dict(
        size=args.size, steps=args.steps, model=H.MODEL, weights=H.weights_file(args.weights), device=args.device
    )

    def in_process() -> None:
        last = None
        for rec in iter_stylize(content, style, **opts):
            last = rec
        assert last is not None and last.image is not None

    def child() -> None:
        with H.child_threads(args.threads):
            recs = list(EngineProcess(content, style, **opts))
        assert recs[-1].image is not None

    before = {p.pid for p in psutil.Process().children()}  # e.g. a test's X server
    ways = {"in process (iter_stylize)": in_process}
    if args.child:
        ways["engine in a child process (EngineProcess), parent's RSS"] = child
    results, figures = {"rss_before": rss_mib()}, []
    for name, fn in ways.items():
        H.say(f"{name}, {args.runs} runs")
        s = results[name] = summary(series(fn, args.runs))
        what = f"{args.runs} runs of {args.size} px, {args.steps} evaluations, {name}"
        figures += [
            H.figure(f"{what}: RSS after the last run", s["last"] / s["first"], "RSS after run 1", s["last"], "MiB"),
            H.figure(f"{what}: RSS slope over runs 2..N", None, "", s["slope"], "MiB per run"),
        ]
        if args.runs > 6:
            figures.append(H.figure(f"{what}: floor growth", None, "", s["floor"], "MiB"))
    shutdown_engines()  # the warm engine the widget keeps between runs
    left = [p for p in psutil.Process().children() if p.pid not in before]
    if left:
        raise H.BenchmarkError(f"child processes were left behind: {[p.cmdline() for p in left]}")
    return {"figures": figures, "device": args.device, **results}
