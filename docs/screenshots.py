"""Make the widget screenshots of the documentation (docs/images/widget-*.png, napari-widget.png).

Real runs of the widget, on this machine's CPU, with the shared images and VGG16 weights::

    xvfb-run -a -s "-screen 0 1600x1000x24" python3 docs/screenshots.py [--shared ../shared] [--only NAME ...]

NAME: ``main`` (napari-widget.png: Tübingen in the style of The Starry Night, the CPU defaults),
``advanced`` (widget-advanced.png: the widget with Advanced settings open), ``regions``
(widget-regions.png: the sky from a Labels layer painted with The Scream, the rest with The Starry
Night), ``mask`` (widget-mask.png: only the sky, a Labels layer, restyled; widget-mask-continue.png:
Continue repaints the river, a Shapes layer, with The Scream) and ``stack`` (widget-stack.png: a
5-frame stack being made, three frames done). Each screenshot takes
a fresh viewer and fresh remembered settings (a temporary config folder), so the widget shows the
machine's defaults except where the script sets a field.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"


def _wait(widget, app, timeout: float = 1800.0) -> None:
    """Process Qt events until the widget's run has ended."""
    t_end = time.monotonic() + timeout
    while widget.worker is not None:
        if time.monotonic() > t_end:
            raise TimeoutError("the run did not end in time")
        app.processEvents()
        time.sleep(0.01)
    for _ in range(50):  # the last update, the status text and the loss plot
        app.processEvents()
        time.sleep(0.01)


def _viewer(shared: Path):
    from qtpy.QtWidgets import QApplication

    import napari
    from napari_nst.core.image.files import read_image

    viewer = napari.Viewer(title="napari-nst", show=True)
    viewer.window._qt_window.resize(1500, 950)
    images = shared / "images"
    content = viewer.add_image(read_image(images / "tubingen.jpg"), name="tubingen", rgb=True)
    starry = viewer.add_image(read_image(images / "starry_night.jpg"), name="starry_night", rgb=True, visible=False)
    _, widget = viewer.window.add_plugin_dock_widget("napari-nst", "Style Transfer")
    widget.content.value, widget.style.value = content, starry
    with widget.settings.quiet():  # the script's choice, not a remembered setting
        widget.weights.value = str(shared / "weights" / "vgg16-hed-features.pth")
    return viewer, widget, QApplication.instance()


def _settle(app, seconds: float = 0.5) -> None:
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        app.processEvents()
        time.sleep(0.01)


def _close_notifications(viewer) -> None:
    """Close the notification toasts (they cover the canvas)."""
    from qtpy.QtWidgets import QWidget

    for w in viewer.window._qt_window.findChildren(QWidget):
        if type(w).__name__ == "NapariQtNotification":
            w.close()


def _window_shot(viewer, app, name: str) -> None:
    viewer.reset_view()
    _settle(app)
    viewer.screenshot(str(IMAGES / name), canvas_only=False)
    print("wrote", IMAGES / name)


def _widget_shot(widget, app, name: str) -> None:
    _settle(app)
    widget.native.grab().save(str(IMAGES / name))
    print("wrote", IMAGES / name)


def main_shot(shared: Path) -> None:
    viewer, widget, app = _viewer(shared)
    widget.start()
    _wait(widget, app)
    _window_shot(viewer, app, "napari-widget.png")
    viewer.close()


def advanced_shot(shared: Path) -> None:
    viewer, widget, app = _viewer(shared)
    widget.show_advanced.value = True
    _widget_shot(widget, app, "widget-advanced.png")
    viewer.close()


def regions_shot(shared: Path) -> None:
    from napari_nst.core.image.files import read_image

    viewer, widget, app = _viewer(shared)
    scream = viewer.add_image(read_image(shared / "images" / "the_scream.jpg"), name="the_scream", rgb=True)
    scream.visible = False
    rgb = viewer.layers["tubingen"].data.astype(np.int32)
    r, b = rgb[..., 0], rgb[..., 2]
    rows = np.arange(rgb.shape[0])[:, None]
    sky = (b > 150) & (b > r + 40) & (rows < 0.6 * rgb.shape[0])  # blue, in the upper part
    labels = np.where(sky, 2, 1).astype(np.uint8)  # 1: houses and river, 2: the sky
    viewer.add_labels(labels, name="sky and town", opacity=0.35, visible=False)
    widget.styles_panel.add_style(scream)
    widget.regions.value = viewer.layers["sky and town"]  # label k takes style k by default
    widget.start()
    _wait(widget, app)
    viewer.layers["sky and town"].visible = True
    viewer.layers.selection.active = viewer.layers["sky and town"]
    _window_shot(viewer, app, "widget-regions.png")
    viewer.close()


def mask_shot(shared: Path) -> None:
    """Restyle only part of the image: the sky (a Labels layer) in the style of The Starry Night,
    the rest kept; then Continue repaints the river (a Shapes layer) of that pastiche with The Scream."""
    from napari_nst.core.image.files import read_image

    viewer, widget, app = _viewer(shared)
    scream = viewer.add_image(read_image(shared / "images" / "the_scream.jpg"), name="the_scream", rgb=True)
    scream.visible = False
    rgb = viewer.layers["tubingen"].data.astype(np.int32)
    r, b = rgb[..., 0], rgb[..., 2]
    rows = np.arange(rgb.shape[0])[:, None]
    sky = (b > 150) & (b > r + 40) & (rows < 0.6 * rgb.shape[0])  # blue, in the upper part
    sky_layer = viewer.add_labels(sky.astype(np.uint8), name="sky")
    sky_layer.contour = 3  # its outline only: the pastiche shows through
    widget.mask.value = sky_layer
    widget.start()
    _wait(widget, app)
    first = viewer.layers[-1]
    viewer.layers.move(viewer.layers.index(sky_layer), len(viewer.layers))  # the outline on top
    _close_notifications(viewer)
    _window_shot(viewer, app, "widget-mask.png")
    sky_layer.visible = False
    river = np.array([[585.0, 0.0], [560.0, 330.0], [620.0, 560.0], [700.0, 760.0], [767.0, 860.0], [767.0, 0.0]])
    shapes = viewer.add_shapes(
        [river], shape_type="polygon", name="river", edge_color="yellow", face_color="transparent", edge_width=4
    )
    widget.style.value = scream
    widget.mask.value = shapes
    viewer.layers.selection.active = first
    widget.continue_run.clicked.emit()
    _wait(widget, app)
    viewer.layers.move(viewer.layers.index(shapes), len(viewer.layers))
    viewer.layers.selection.active = viewer.layers[-2]
    _close_notifications(viewer)
    _window_shot(viewer, app, "widget-mask-continue.png")
    viewer.close()


def _frames_made(layer) -> int:
    """How many frames of a stack's RGBA pastiche layer are painted (the others are transparent)."""
    data = np.asarray(layer.data)
    return sum(bool(data[t, ..., 3].any()) for t in range(data.shape[0]))


def stack_shot(shared: Path) -> None:
    """A 5-frame pan being made: three frames painted, the fourth under way (the run is then stopped)."""
    viewer, widget, app = _viewer(shared)
    photo = viewer.layers["tubingen"].data
    h, w = 384, 512  # five crops moving 12 px right and 4 px down a frame: a short pan
    frames = np.stack([photo[100 + 4 * t : 100 + 4 * t + h, 200 + 12 * t : 200 + 12 * t + w] for t in range(5)])
    viewer.layers["tubingen"].visible = False
    stack = viewer.add_image(frames, name="pan", rgb=True)
    widget.content.value = stack
    _settle(app)
    widget.slices.value = next(v for v in widget.slices.choices if v is not None)
    with widget.settings.quiet():
        widget.size.value = 160
        widget.steps.value = 40
        widget.frame_steps.value = 10
    names = {lay.name for lay in viewer.layers}
    widget.start()
    t_end = time.monotonic() + 3000
    while time.monotonic() < t_end:
        app.processEvents()
        time.sleep(0.05)
        new = [lay for lay in viewer.layers if lay.name not in names]
        if new and _frames_made(new[0]) >= 3:
            break
    viewer.dims.set_point(0, 2)
    # Adding the pastiche layer resets the Slices field to "This slice" while the stack run goes on
    # (the widget's choices are reset when layers change); show the choice the run was started with.
    widget.slices.value = 0
    _close_notifications(viewer)
    _settle(app, 1.0)
    _window_shot(viewer, app, "widget-stack.png")
    widget.stop()
    _wait(widget, app)
    viewer.close()


SHOTS = {
    "main": main_shot,
    "advanced": advanced_shot,
    "regions": regions_shot,
    "mask": mask_shot,
    "stack": stack_shot,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"), help="the folder with images/ and weights/")
    ap.add_argument("--only", nargs="+", choices=sorted(SHOTS), default=list(SHOTS))
    args = ap.parse_args()
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        ap.error("no display: run under xvfb-run -a")
    for name in args.only:
        os.environ["NAPARI_NST_CONFIG_DIR"] = tempfile.mkdtemp(prefix="napari-nst-shots-")
        SHOTS[name](Path(args.shared))
    return 0


if __name__ == "__main__":
    sys.exit(main())
