"""Responsiveness: how responsive napari stays while the Style Transfer widget runs, against no run.

Runs napari (under Xvfb when there is no display) with the content and style pictures, presses Run
with the widget's defaults for this machine (or --size/--steps), and records:

- the Qt event loop's gaps: a QTimer ticks every --tick ms; a gap is the time between two ticks
  (ideal: the tick; long gaps are a frozen UI), while the run goes on and while the camera zooms
  and the content's contrast limits change every 100 ms (a user poking around); the baseline is the
  same interaction for --baseline seconds with no run;
- the interval between visible updates of the pastiche layer, and the main-thread time spent
  applying each update.

This process never imports torch (the engine runs in the widget's child process).

    python -m benchmarks responsiveness [--size PX] [--steps N] [--screenshot docs/images/napari-widget.png]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _harness as H

USES_TORCH = False  # napari's process: torch stays out of it (the engine runs in a child)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--size", type=int, default=0, help="0 = the widget's default for this machine")
    ap.add_argument("--steps", type=int, default=0, help="0 = the widget's default for this machine")
    ap.add_argument("--nice", type=int, default=None, help="CPU priority offset of the engine process")
    ap.add_argument("--tick", type=float, default=5.0, help="timer interval, ms")
    ap.add_argument("--baseline", type=float, default=5.0, help="seconds of interaction without a run")
    ap.add_argument("--no-interaction", action="store_true", help="do not zoom / change contrast")
    ap.add_argument("--screenshot", default="", help="save the window at the end here (README's picture)")


def _display() -> Any:
    if os.environ.get("DISPLAY") or sys.platform in ("darwin", "win32"):
        return None
    from pyvirtualdisplay import Display

    disp = Display(visible=False, size=(1600, 1000), color_depth=24)
    disp.start()
    return disp


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    return {
        "n": len(v),
        "median_ms": 1000 * statistics.median(v),
        "p99_ms": 1000 * v[min(len(v) - 1, int(0.99 * len(v)))],
        "max_ms": 1000 * v[-1],
        "over_50ms": sum(1 for x in v if x > 0.05),
        "over_100ms": sum(1 for x in v if x > 0.1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        args.size, args.steps, args.baseline = args.size or 32, args.steps or 3, 0.5
    disp = _display()
    config = os.environ.get("NAPARI_NST_CONFIG_DIR")
    # fresh settings: the widget's machine defaults, never the user's remembered values
    os.environ["NAPARI_NST_CONFIG_DIR"] = tempfile.mkdtemp(prefix="napari-nst-bench-")
    try:
        with H.child_threads(args.threads):
            return _run(args)
    finally:
        if config is None:
            os.environ.pop("NAPARI_NST_CONFIG_DIR", None)
        else:
            os.environ["NAPARI_NST_CONFIG_DIR"] = config
        if disp is not None:
            disp.stop()


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    import napari
    import napari_nst._run.runner as runner  # where ENGINE_NICE lives

    if args.nice is not None:
        runner.ENGINE_NICE = args.nice
    viewer = napari.Viewer(title="napari-nst", show=True)
    viewer.window._qt_window.resize(1500, 920)
    c = viewer.add_image(H.load_image(args.content), name="content", rgb=True)
    s = viewer.add_image(H.load_image(args.style), name="style", rgb=True, visible=False)
    _, widget = viewer.window.add_plugin_dock_widget("napari-nst", "Style Transfer")
    widget.content.value, widget.style.value = c, s
    widget.model.value = H.MODEL
    widget.weights.value = H.weights_file(args.weights)
    if args.size:
        widget.size.value = args.size
    if args.steps:
        widget.steps.value = args.steps
    app = QApplication.instance()
    app.processEvents()

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(max(1, int(args.tick)))
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    poke_state = {"i": 0}
    lo0, hi0 = c.contrast_limits

    def poke() -> None:  # a user zooming and adjusting contrast
        if args.no_interaction:
            return
        i = poke_state["i"] = poke_state["i"] + 1
        viewer.camera.zoom *= 1.02 if (i // 20) % 2 == 0 else 1 / 1.02
        c.contrast_limits = (lo0 + (i % 10), hi0 - (i % 10))

    poker = QTimer()
    poker.setInterval(100)
    poker.timeout.connect(poke)

    def gaps(t: list[float]) -> list[float]:
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    timer.start()
    poker.start()
    t_end = time.perf_counter() + args.baseline
    while time.perf_counter() < t_end:  # the baseline: the same interaction, no run
        app.processEvents()
        time.sleep(0.001)
    base = gaps(ticks)
    ticks.clear()

    updates: list[float] = []
    apply_s: list[float] = []
    orig_flush = widget.controller.flush

    def timed_flush() -> None:
        t0 = time.perf_counter()
        orig_flush()
        apply_s.append(time.perf_counter() - t0)

    widget.controller.flush = timed_flush
    t_start = time.perf_counter()
    widget.start()
    seen: dict[str, Any] = {"layer": None}
    while widget.worker is not None:
        app.processEvents()
        state = widget._run
        if state is not None and state.sink.layer is not None and seen["layer"] is None:
            seen["layer"] = state.sink.layer
            state.sink.layer.events.data.connect(lambda e: updates.append(time.perf_counter()))
            updates.append(time.perf_counter())
        time.sleep(0.001)
    t_total = time.perf_counter() - t_start
    timer.stop()
    poker.stop()
    state = widget._run
    rec = state.last
    result: dict[str, Any] = {
        "size": widget.size.value,
        "steps": widget.steps.value,
        "working_shape": list(rec.shape) if rec else None,
        "outcome": state.outcome,
        "seconds_per_step": (rec.elapsed / rec.step) if rec else None,
        "run_seconds": t_total,
        "first_image_after_s": (updates[0] - t_start) if updates else None,
        "baseline_gaps": _stats(base),
        "run_gaps": _stats(gaps(ticks)),
        "update_intervals": _stats(gaps(updates)),
        "flush_cost": _stats(apply_s),
        "updates": len(updates),
        "nice": runner.ENGINE_NICE,
        "interaction": not args.no_interaction,
    }
    if args.screenshot:
        c.contrast_limits = (lo0, hi0)
        viewer.camera.zoom = 1.0
        viewer.reset_view()
        widget.show_advanced.value = False
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(args.screenshot, canvas_only=False)
    viewer.close()
    if state.outcome != "finished":
        raise H.BenchmarkError(f"the widget's run did not finish: {state.outcome}")
    result["figures"] = figures(result, args)
    return result


def figures(r: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    what = f"{r['size']} px, {r['steps']} evaluations"
    against = f"no run (tick {args.tick:g} ms" + (", same interaction)" if r["interaction"] else ")")
    b, g = r["baseline_gaps"], r["run_gaps"]
    out = []
    for key, label in (("p99_ms", "99th percentile"), ("max_ms", "largest")):
        if b and g:
            out.append(H.figure(f"{what}: event-loop gap, {label}", g[key] / b[key], against, g[key] / 1000, "s"))
    u, f = r["update_intervals"], r["flush_cost"]
    if u:
        out.append(H.figure(f"{what}: interval between visible updates, median", None, "", u["median_ms"] / 1000, "s"))
    if f:
        out.append(H.figure(f"{what}: main-thread time per update, largest", None, "", f["max_ms"] / 1000, "s"))
    if r["first_image_after_s"] is not None:
        out.append(H.figure(f"{what}: first image after Run", None, "", r["first_image_after_s"], "s"))
    return out
