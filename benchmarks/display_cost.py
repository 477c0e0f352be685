"""What showing a run live in napari costs: the widget's run vs the same engine without napari.

Both sides run the engine in its child process with the widget's settings (preview interval,
engine priority), at 256 px on the CPU with the shared VGG16 weights, alternating
(engine alone, widget, engine alone, widget, ...). Time is measured from the first progress record
to the last (the process start is excluded from both). For the widget it also records the visible
updates of the pastiche layer (largest gap between two) and the interval the display throttle chose.

    python benchmarks/display_cost.py [--repeats 2] [--steps 40] [--size 256] [--out docs/display_cost.md]

Runs under Xvfb (pyvirtualdisplay) when there is no display, as on VMs and remote desktops (Mesa's
software OpenGL). Target (issue 12): widget <= 1.15x the engine alone, an update at least every 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))


def _options(args: argparse.Namespace) -> dict:
    return dict(
        size=args.size,
        steps=args.steps,
        model="vgg16",
        device="cpu",
        weights=str(SHARED / "weights" / "vgg16-hed-features.pth"),
    )


def engine_alone(content, style, args) -> dict:
    from napari_nst._run import runner
    from napari_nst.core.process.client import EngineProcess

    times = []
    proc = EngineProcess(
        content, style, nice=runner.ENGINE_NICE, preview_interval=runner.PREVIEW_INTERVAL, **_options(args)
    )
    images = 0
    for rec in proc:
        times.append(time.perf_counter())
        images += rec.image is not None
    return {"seconds": times[-1] - times[0], "records": len(times), "images": images}


def widget_run(viewer, widget, app, args) -> dict:
    records, updates = [], []
    orig = widget.controller._on_yielded

    def on_yielded(item):
        records.append(time.perf_counter())
        orig(item)

    widget.controller._on_yielded = on_yielded  # before start: the worker connects to it then
    assert widget.start()
    while widget.worker is not None:
        app.processEvents()
        run = widget._run
        layer = run.sink.layer if run is not None else None
        if layer is not None and not updates:
            updates.append(time.perf_counter())
            layer.events.data.connect(lambda e: updates.append(time.perf_counter()))
        time.sleep(0.002)
    widget.controller._on_yielded = orig
    gaps = [b - a for a, b in zip(updates, updates[1:], strict=False)]
    thr = widget.controller._throttle
    return {
        "seconds": records[-1] - records[0] if len(records) > 1 else float("nan"),
        "records": len(records),
        "updates": len(updates),
        "max_update_gap": max(gaps) if gaps else float("nan"),
        "interval": thr.interval,
        "napari_cpu_per_update": thr.draw_cost,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--display-share",
        type=float,
        default=None,
        help="override the throttle's DISPLAY_SHARE (napari's share of the wall time)",
    )
    ap.add_argument("--out", default=str(ROOT / "docs" / "display_cost.md"))
    args = ap.parse_args()
    os.environ["NAPARI_NST_CONFIG_DIR"] = tempfile.mkdtemp(prefix="napari-nst-bench-")
    if args.display_share is not None:
        from napari_nst._qt import throttle

        throttle.DISPLAY_SHARE = args.display_share
    disp = None
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        from pyvirtualdisplay import Display

        disp = Display(visible=False, size=(1600, 1000), color_depth=24)
        disp.start()
    try:
        return _bench(args)
    finally:
        if disp is not None:
            disp.stop()


def _bench(args: argparse.Namespace) -> int:
    from qtpy.QtWidgets import QApplication

    import napari
    from napari_nst.core.image.files import read_image

    content = read_image(SHARED / "images" / "tubingen.jpg")
    style = read_image(SHARED / "images" / "starry_night.jpg")
    viewer = napari.Viewer(title="napari-nst", show=True)
    viewer.window._qt_window.resize(1500, 920)
    c = viewer.add_image(content, name="tubingen", rgb=True)
    s = viewer.add_image(style, name="starry_night", rgb=True, visible=False)
    _, widget = viewer.window.add_plugin_dock_widget("napari-nst", "Style Transfer")
    widget.content.value, widget.style.value = c, s
    for k, v in _options(args).items():
        getattr(widget, k).value = v
    app = QApplication.instance()
    app.processEvents()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = []
    for _ in range(args.repeats):
        e = engine_alone(content, style, args)
        w = widget_run(viewer, widget, app, args)
        rows.append({"engine": e, "widget": w, "ratio": w["seconds"] / e["seconds"]})
        print(json.dumps(rows[-1]), flush=True)
        viewer.layers.remove(viewer.layers[-1])
    viewer.close()
    res = {
        "machine": f"{os.cpu_count()} CPUs ({_cpu()}), napari under Xvfb with Mesa's software OpenGL",
        "command": "python benchmarks/display_cost.py " + " ".join(sys.argv[1:]),
        "size": args.size,
        "steps": args.steps,
        "load_before": load,
        "rows": rows,
    }
    Path(args.out).write_text(_markdown(res) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(res, indent=1))
    print(_markdown(res))
    return 0


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _markdown(res: dict) -> str:
    lines = [
        f"Machine: {res['machine']}; load average before: {res['load_before']}",
        f"Command: `{res['command']}` ({res['size']} px, {res['steps']} evaluations, shared VGG16)",
        "",
        "| repeat | engine alone s | widget s | widget / engine | visible updates | largest gap s | "
        "throttle interval s | napari CPU per update s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(res["rows"], 1):
        w, e = r["widget"], r["engine"]
        cpu = "-" if w["napari_cpu_per_update"] is None else f"{w['napari_cpu_per_update']:.3f}"
        lines.append(
            f"| {i} | {e['seconds']:.1f} | {w['seconds']:.1f} | {r['ratio']:.2f} | {w['updates']} | "
            f"{w['max_update_gap']:.2f} | {w['interval']:.2f} | {cpu} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
