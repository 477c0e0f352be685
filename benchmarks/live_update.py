"""Live update latency: from ``update()`` to the first record made under the new options, against one evaluation.

A run takes new objective options while it goes on (``StyleRun.update``, ``EngineProcess.update``;
docs/live.md): the engine applies them before its next evaluation, with a fresh optimiser, and the
first record made under them carries them (``update``, ``update_id``) and an image. Here, in one
run per way (in process; a warm engine process, as the widget uses), after a few warm-up records
an update is made at a random moment inside an evaluation, from another thread, and timed until
the consumer has the record that applied it; then the next, ``--repeats`` times. Figure: the
median and the largest latency over the evaluation time (the median interval between the records
before each update, in the same run). Changes: ``style_strength`` (the level's targets kept:
only the weights change) and ``preserve_color`` (luminance on and off: the content's and the
style's features computed again). The widget adds its debounce (300 ms after the last change).

    python -m benchmarks live_update --sizes 256 --repeats 5
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from typing import Any

from . import _harness as H

#: the change made at each update, alternating between two values
CHANGES: dict[str, tuple[Any, Any]] = {"style_strength": (3.0, 1.0), "preserve_color": ("luminance", None)}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sizes", type=int, nargs="+", default=[256])
    ap.add_argument("--repeats", type=int, default=5, help="updates per change and way, in one run")
    ap.add_argument("--changes", default=",".join(CHANGES), help=f"comma-separated, of {', '.join(CHANGES)}")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)


class _Consumer:
    """Reads a run's records on a thread, noting when each arrives and which update it applied."""

    def __init__(self, records: Any) -> None:
        self.records = records
        self.times: list[float] = []
        self.applied: dict[int, float] = {}  # update number -> when its record arrived
        self.cond = threading.Condition()
        self.stop = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for rec in self.records:
                now = time.perf_counter()
                with self.cond:
                    self.times.append(now)
                    if rec.update_id:
                        self.applied[rec.update_id] = now
                    self.cond.notify_all()
                    if self.stop:
                        break
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            getattr(self.records, "close", lambda: None)()  # a StyleRun is closed by the thread iterating it
            with self.cond:
                self.stop = True
                self.cond.notify_all()

    def wait(self, pred: Any, timeout: float = 600.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: pred() or self.stop, timeout=timeout) or (self.stop and not pred()):
                raise H.BenchmarkError(f"the run ended or stalled ({self.error!r})")


def _latencies(run: Any, change: str, repeats: int, warmup: int = 3) -> list[tuple[float, float]]:
    """``(latency s, evaluation s)`` of ``repeats`` updates of ``change`` in the running ``run``."""
    c = _Consumer(run)
    out = []
    try:
        for k in range(repeats):
            n0 = len(c.times)
            c.wait(lambda n0=n0: len(c.times) >= n0 + warmup)  # records under the current options
            with c.cond:
                recent = c.times[-warmup:]
            t_eval = statistics.median(b - a for a, b in zip(recent, recent[1:], strict=False))
            time.sleep(random.uniform(0.0, t_eval))  # a random moment inside an evaluation
            t0 = time.perf_counter()
            number = run.update(**{change: CHANGES[change][k % 2]})
            c.wait(lambda number=number: number in c.applied)
            out.append((c.applied[number] - t0, t_eval))
    finally:
        with c.cond:
            c.stop = True
        if not hasattr(run, "close"):
            run.cancel()  # an engine process: thread-safe, as the widget's Stop
        c.thread.join(60)
    return out


def _way(way: str, content: Any, style: Any, opts: dict[str, Any]) -> Any:
    if way == "in process":
        from napari_nst.core.api import iter_stylize

        return iter_stylize(content, style, **opts)
    from napari_nst.core.process.client import EngineProcess

    return EngineProcess(content, style, **opts)


def _figures(size: int, way: str, change: str, got: list[tuple[float, float]]) -> tuple[dict, list[dict]]:
    """The row and the figures of one way and change: median and largest latency over one evaluation."""
    for lat, ev in got:
        H.say(f"  {size} px, {way}, {change}: evaluation {ev * 1e3:.0f} ms, latency {lat * 1e3:.0f} ms")
    ratios = [a / e for a, e in got]
    row = {
        "size": size,
        "way": way,
        "change": change,
        "evaluation_s": statistics.median(e for _, e in got),
        "latency_s": statistics.median(a for a, _ in got),
        "latency_max_s": max(a for a, _ in got),
        "median_ratio": statistics.median(ratios),
        "max_ratio": max(ratios),
    }
    name = f"{size} px, {way}, {change}: update to its record"
    figures = [
        H.figure(f"{name}, median", row["median_ratio"], "one evaluation", row["latency_s"], "s"),
        H.figure(f"{name}, largest", row["max_ratio"], "one evaluation", row["latency_max_s"], "s"),
    ]
    return row, figures


def run(args: argparse.Namespace) -> dict[str, Any]:
    from napari_nst.core.process.client import shutdown_engines

    if args.dry_run:
        args.sizes, args.repeats = [64], 2
    random.seed(args.seed)
    changes = [c.strip() for c in args.changes.split(",") if c.strip()]
    unknown = [c for c in changes if c not in CHANGES]
    if unknown:
        raise H.BenchmarkError(f"--changes: unknown {unknown}; use some of {', '.join(CHANGES)}")
    content, style = H.load_image(args.content), H.load_image(args.style)
    weights = H.weights_file(args.weights)
    rows, figures = [], []
    try:
        with H.child_threads(args.threads):
            for size in args.sizes:
                opts = dict(size=size, steps=1_000_000, model=H.MODEL, weights=weights, device=args.device)
                for way in ("in process", "warm engine process"):
                    for change in changes:
                        got = _latencies(_way(way, content, style, opts), change, args.repeats)
                        row, figs = _figures(size, way, change, got)
                        rows.append(row)
                        figures += figs
    finally:
        shutdown_engines()
    return {"figures": figures, "device": args.device, "rows": rows}
