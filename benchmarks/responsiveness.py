"""How responsive napari stays while the Style Transfer widget runs on the CPU.

Runs napari (under Xvfb when there is no display) with the shared content and style images,
presses Run with the widget's defaults for this machine (the CPU size and steps), and records:

- the Qt event loop's gaps: a QTimer ticks every ``--tick`` ms; a gap is the time between two ticks
  (ideal = the tick). Long gaps are frozen UI. Measured while the run goes on *and* while the
  camera is zoomed and the content's contrast limits change every 100 ms (a user poking around);
  a baseline is measured for the same kind of interaction with no run.
- the interval between visible updates of the pastiche layer, and the main-thread time spent
  applying each update.

Usage::

    python benchmarks/responsiveness.py [--weights PATH --model vgg16] [--steps N] [--size PX]
                                        [--screenshot docs/images/napari-widget.png]

Defaults: the shared VGG16 weights (../shared/weights/vgg16-hed-features.pth, no download) and
the widget's defaults for size and steps. Prints a Markdown table (paste it into
docs/responsiveness.md) and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _display():
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--content", default=str(SHARED / "images" / "tubingen.jpg"))
    ap.add_argument("--style", default=str(SHARED / "images" / "starry_night.jpg"))
    ap.add_argument("--weights", default=str(SHARED / "weights" / "vgg16-hed-features.pth"))
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--size", type=int, default=0, help="0 = the widget's default for this machine")
    ap.add_argument("--steps", type=int, default=0, help="0 = the widget's default for this machine")
    ap.add_argument(
        "--nice",
        type=int,
        default=None,
        help="CPU priority offset of the engine process (default: the widget's, ENGINE_NICE)",
    )
    ap.add_argument("--tick", type=float, default=5.0, help="timer interval, ms")
    ap.add_argument("--baseline", type=float, default=5.0, help="seconds of interaction without a run")
    ap.add_argument("--no-interaction", action="store_true", help="do not zoom / change contrast")
    ap.add_argument("--screenshot", default="", help="save a screenshot of the window at the end")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()

    disp = _display()
    import tempfile

    # fresh settings: the widget's machine defaults, never the user's remembered values
    os.environ["NAPARI_NST_CONFIG_DIR"] = tempfile.mkdtemp(prefix="napari-nst-bench-")
    try:
        return _run(args)
    finally:
        if disp is not None:
            disp.stop()


def _run(args) -> int:
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    import napari
    import napari_nst._run.runner as widget_module  # where ENGINE_NICE lives
    from napari_nst.core.image.files import read_image

    if args.nice is not None:
        widget_module.ENGINE_NICE = args.nice

    viewer = napari.Viewer(title="napari-nst", show=True)
    win = viewer.window._qt_window
    win.resize(1500, 920)
    c = viewer.add_image(read_image(args.content), name=Path(args.content).stem, rgb=True)
    s = viewer.add_image(read_image(args.style), name=Path(args.style).stem, rgb=True, visible=False)
    _, widget = viewer.window.add_plugin_dock_widget("napari-nst", "Style Transfer")
    widget.content.value, widget.style.value = c, s
    widget.model.value = args.model
    widget.weights.value = args.weights
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

    def poke():  # a user zooming and adjusting contrast
        if args.no_interaction:
            return
        i = poke_state["i"] = poke_state["i"] + 1
        viewer.scene.camera.zoom *= 1.02 if (i // 20) % 2 == 0 else 1 / 1.02
        c.contrast_limits = (lo0 + (i % 10), hi0 - (i % 10))

    poker = QTimer()
    poker.setInterval(100)
    poker.timeout.connect(poke)

    def gaps(t: list[float]) -> list[float]:
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    load_before = [round(x, 1) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    # baseline: the same interaction, no run
    timer.start()
    poker.start()
    t_end = time.perf_counter() + args.baseline
    while time.perf_counter() < t_end:
        app.processEvents()
        time.sleep(0.001)
    base = gaps(ticks)
    ticks.clear()

    # the run
    updates: list[float] = []
    apply_ms: list[float] = []
    orig_flush = widget.controller.flush

    def timed_flush():
        t0 = time.perf_counter()
        orig_flush()
        apply_ms.append(time.perf_counter() - t0)

    widget.controller.flush = timed_flush
    t_start = time.perf_counter()
    widget.start()
    seen = {"layer": None}
    while widget.worker is not None:
        app.processEvents()
        run = widget._run
        if run is not None and run.sink.layer is not None and seen["layer"] is None:
            seen["layer"] = run.sink.layer
            run.sink.layer.events.data.connect(lambda e: updates.append(time.perf_counter()))
            updates.append(time.perf_counter())
        time.sleep(0.001)
    t_total = time.perf_counter() - t_start
    timer.stop()
    poker.stop()
    run_gaps = gaps(ticks)
    run = widget._run
    rec = run.last
    first_image = (updates[0] - t_start) if updates else float("nan")
    result = {
        "machine": f"{os.cpu_count()} CPUs, {sys.platform}",
        "size": widget.size.value,
        "steps": widget.steps.value,
        "model": args.model,
        "working_shape": list(rec.shape) if rec else None,
        "outcome": run.outcome,
        "seconds_per_step": (rec.elapsed / rec.step) if rec else None,
        "run_seconds": t_total,
        "first_image_after_s": first_image,
        "baseline_gaps": _stats(base),
        "run_gaps": _stats(run_gaps),
        "update_intervals": _stats(gaps(updates)),
        "flush_cost": _stats(apply_ms),
        "updates": len(updates),
        "tick_ms": args.tick,
        "nice": widget_module.ENGINE_NICE,
        "load_before": load_before,
        "interaction": not args.no_interaction,
    }
    if args.screenshot:
        c.contrast_limits = (lo0, hi0)
        viewer.scene.camera.zoom = 1.0
        viewer.reset_view()
        widget.show_advanced.value = False
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(args.screenshot, canvas_only=False)
    print(_markdown(result))
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    viewer.close()
    return 0 if run.outcome == "finished" else 1


def _markdown(r: dict) -> str:
    def row(name: str, s: dict) -> str:
        if not s:
            return f"| {name} | - | - | - | - | - | - |"
        return (
            f"| {name} | {s['n']} | {s['median_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} | "
            f"{s['over_50ms']} | {s['over_100ms']} |"
        )

    lines = [
        f"Run: {r['model']}, size {r['size']} (working {r['working_shape']}), {r['steps']} steps, "
        f"{r['seconds_per_step']:.2f} s/step, {r['run_seconds']:.0f} s in all, first image after "
        f"{r['first_image_after_s']:.1f} s, {r['updates']} visible updates; {r['machine']}; "
        f"interaction: {r['interaction']}; engine nice {r['nice']}; load average before "
        f"{r['load_before']}.",
        "",
        "| measure | n | median ms | p99 ms | max ms | > 50 ms | > 100 ms |",
        "|---|---|---|---|---|---|---|",
        row(f"event-loop gap, no run (tick {r['tick_ms']:g} ms)", r["baseline_gaps"]),
        row("event-loop gap during the run", r["run_gaps"]),
        row("interval between visible updates", r["update_intervals"]),
        row("main-thread time per update", r["flush_cost"]),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
