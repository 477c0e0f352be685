"""The widget mid-run after a live change of Style strength: docs/images/widget-live.jpg.

    xvfb-run -a python benchmarks/live_screenshot.py [--out docs/images/widget-live.jpg]

Opens napari with tubingen and starry_night (../shared, or ``$NAPARI_NST_SHARED``), the Style
Transfer widget with both picked, presses Run (256 px on the CPU), sets Style strength to x4 after
``--change-at`` steps, and once the engine has applied it and ``--after`` more steps are made,
saves a screenshot of the window (the pastiche, and in the dock the status line and the loss curve
with the change marked). Needs ``napari-nst[napari]`` and the shared VGG16 weights.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))


def _wait(app, cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "widget-live.jpg"))
    ap.add_argument("--change-at", type=int, default=15)
    ap.add_argument("--after", type=int, default=12)
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()
    os.environ.setdefault("NAPARI_NST_PREWARM", "0")
    from qtpy.QtWidgets import QApplication

    import napari
    from napari_nst.core.image.files import read_image

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 1000)
    c = viewer.add_image(read_image(SHARED / "images" / "tubingen.jpg"), name="tubingen", rgb=True)
    s = viewer.add_image(read_image(SHARED / "images" / "starry_night.jpg"), name="starry_night", rgb=True)
    s.visible = False
    _, widget = viewer.window.add_plugin_dock_widget("napari-nst", "Style Transfer")
    widget.content.value, widget.style.value = c, s
    widget.size.value, widget.steps.value, widget.device.value = 256, 100, "cpu"
    widget.model.value, widget.weights.value = "vgg16", str(SHARED / "weights" / "vgg16-hed-features.pth")
    # from x1, whatever the widget remembered: a change to the value it already has sends nothing
    widget.style_strength.value = 1.0
    app = QApplication.instance()
    widget.run.clicked.emit()
    _wait(app, lambda: widget._run.last is not None and widget._run.last.step >= args.change_at, args.timeout, "steps")
    widget.style_strength.value = 4.0
    run = widget._run
    _wait(app, lambda: bool(run.live_marks), args.timeout, "the engine to apply the change")
    step = run.live_marks[0][0]
    _wait(app, lambda: run.last.step >= step + args.after, args.timeout, "more steps")
    viewer.layers.selection.active = viewer.layers[-1]
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(viewer.screenshot(canvas_only=False)[..., :3]).save(args.out, quality=85)
    print(f"saved {args.out}; status: {widget.status.value!r}; marks: {widget.plot.marks}")
    widget.stop()
    _wait(app, lambda: widget.worker is None, 60, "the run to stop")
    viewer.close()


if __name__ == "__main__":
    main()
