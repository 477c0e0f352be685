"""The widget with an instant preview, as a user sees it: docs/images/napari-preview.jpg.

    xvfb-run -a python benchmarks/preview_screenshot.py [--out docs/images/napari-preview.jpg]

Opens napari with tubingen and starry_night (../shared, or ``$NAPARI_NST_SHARED``), the Style
Transfer widget with both picked, waits for the preview layer and saves a screenshot of the
window. Needs ``napari-nst[napari,preview]``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "napari-preview.jpg"))
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    os.environ.setdefault("NAPARI_NST_PREWARM", "0")  # a screenshot, not a run: no engine process
    from qtpy.QtWidgets import QApplication

    import napari
    from napari_nst.core.image.files import read_image

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    c = viewer.add_image(read_image(SHARED / "images" / "tubingen.jpg"), name="tubingen", rgb=True)
    s = viewer.add_image(read_image(SHARED / "images" / "starry_night.jpg"), name="starry_night", rgb=True)
    s.visible = False
    _, widget = viewer.window.add_plugin_dock_widget("napari-nst", "Style Transfer")
    widget.content.value, widget.style.value = c, s
    app = QApplication.instance()
    end = time.monotonic() + args.timeout
    while time.monotonic() < end:
        app.processEvents()
        layers = [lay for lay in viewer.layers if lay.metadata.get("napari_nst", {}).get("preview")]
        if layers and widget.preview.worker is None:
            break
        time.sleep(0.05)
    else:
        raise SystemExit(f"no preview layer within {args.timeout} s; status: {widget.status.value!r}")
    viewer.layers.selection.active = layers[0]
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    shot = viewer.screenshot(canvas_only=False)  # RGBA
    from PIL import Image

    Image.fromarray(shot[..., :3]).save(args.out, quality=85)
    print(f"saved {args.out}; status: {widget.status.value}; metadata: {layers[0].metadata}")
    viewer.close()


if __name__ == "__main__":
    main()
