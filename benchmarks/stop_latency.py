"""Stop latency: the time from Stop to the run being over, against one objective evaluation.

Three ways a run is stopped:

* in process (``iter_stylize``, the Python API): the consumer closes the generator; a generator can
  only be closed between two records, so the latency is the rest of the evaluation under way;
* a warm engine process (``EngineProcess``, what the napari widget uses): ``cancel()`` sends the
  child a cancel message and the iteration ends at the next message, within one evaluation; the
  child is kept for the next run;
* an engine process of its own (``EngineProcess(warm=False)``): ``cancel()`` kills the child at
  once and the parent reaps it: the latency does not depend on the evaluation.

For each working size, Stop is requested at a random moment inside an evaluation (after a few
warm-up records), from another thread, and timed until the consumer's loop has ended. Figure: the
largest latency over the evaluation time (in process: the evaluation that was under way when Stop
was asked; child: the median interval between records of the run).

    python -m benchmarks stop_latency --sizes 64 128 256 --repeats 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _harness as H


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)


def _stop_once(make_records: Callable[[], Any], stop: Callable[[Any], None], warmup: int = 3) -> tuple:
    """Consume records in a thread; after ``warmup`` records, ask to Stop at a random point of an
    evaluation. Returns (time Stop was asked, median evaluation s, the consumer thread, its ``done``
    dict, record times)."""
    times: list[float] = []
    stop_asked, warm = threading.Event(), threading.Event()
    done: dict[str, float] = {}

    def consume() -> None:
        try:
            records = make_records()
            for _ in records:
                times.append(time.perf_counter())
                if len(times) >= warmup:
                    warm.set()
                if stop_asked.is_set():
                    break
            stop(records)
        finally:
            done["t"] = time.perf_counter()
            warm.set()

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    warm.wait()  # no polling: this thread must not compete with the run for the GIL
    if len(times) < warmup:
        raise H.BenchmarkError("the run ended before the warm-up: give more --steps room (it runs until stopped)")
    evals = [b - a for a, b in zip(times[1:], times[2:], strict=False)] or [times[-1] - times[0]]
    t_eval = statistics.median(evals)
    time.sleep(random.uniform(0.0, t_eval))  # a random moment inside the next evaluation
    t0 = time.perf_counter()
    stop_asked.set()
    return t0, t_eval, worker, done, times


def in_process(content: Any, style: Any, opts: dict[str, Any]) -> tuple[float, float]:
    from napari_nst.core.api import iter_stylize

    t0, _, worker, done, times = _stop_once(lambda: iter_stylize(content, style, **opts), lambda g: g.close())
    worker.join(600)
    # against the evaluation that was under way when Stop was asked (they vary a lot on a busy machine)
    before = max(t for t in times if t <= t0)
    after = min((t for t in times if t > t0), default=done["t"])
    return done["t"] - t0, after - before


def in_child(content: Any, style: Any, opts: dict[str, Any], warm: bool) -> tuple[float, float]:
    from napari_nst.core.process.client import EngineProcess

    proc = EngineProcess(content, style, warm=warm, **opts)
    t0, t_eval, worker, done, _ = _stop_once(lambda: proc, lambda p: None)
    proc.cancel()  # what the widget's Stop does, from the GUI thread
    worker.join(600)
    if not warm and proc.returncode is None:
        raise H.BenchmarkError("the engine process of its own was not ended by cancel()")
    return done["t"] - t0, t_eval


def run(args: argparse.Namespace) -> dict[str, Any]:
    from napari_nst.core.process.client import shutdown_engines

    if args.dry_run:
        args.sizes, args.repeats = [32], 1
    random.seed(args.seed)
    content, style = H.load_image(args.content), H.load_image(args.style)
    ways: dict[str, Callable[..., tuple[float, float]]] = {
        "in process (generator closed)": in_process,
        "warm engine process (cancel message)": lambda c, s, o: in_child(c, s, o, warm=True),
        "engine process of its own (killed)": lambda c, s, o: in_child(c, s, o, warm=False),
    }
    rows, figures = [], []
    weights = H.weights_file(args.weights)
    try:
        with H.child_threads(args.threads):
            for size in args.sizes:
                opts = dict(size=size, steps=1_000_000, model=H.MODEL, weights=weights, device=args.device)
                for way, fn in ways.items():
                    lat, ev = [], []
                    for _ in range(args.repeats):
                        latency, t_eval = fn(content, style, opts)
                        lat.append(latency)
                        ev.append(t_eval)
                        H.say(f"  {size} px, {way}: evaluation {t_eval * 1e3:.1f} ms, stop {latency * 1e3:.1f} ms")
                    row = {
                        "size": size,
                        "way": way,
                        "evaluation_s": statistics.median(ev),
                        "latency_s": statistics.median(lat),
                        "latency_max_s": max(lat),
                        "max_ratio": max(a / e for a, e in zip(lat, ev, strict=True)),
                    }
                    rows.append(row)
                    figures.append(
                        H.figure(
                            f"{size} px, {way}: largest Stop latency",
                            row["max_ratio"],
                            "one evaluation",
                            row["latency_max_s"],
                            "s",
                        )
                    )
    finally:
        shutdown_engines()
    return {"figures": figures, "device": args.device, "rows": rows}
