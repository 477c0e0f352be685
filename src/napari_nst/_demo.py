"""``napari-nst demo [--run]``: napari with a sample content and style image and the widget, ready to Run.

Weights: the widget's default (torchvision's ImageNet weights, downloaded once) unless
``NAPARI_NST_WEIGHTS`` names a local ``.pth`` file; the demo then fills in the Weights field and
picks the network that file holds (VGG16 or VGG19, from its name) so that it works offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

WEIGHTS_ENV = "NAPARI_NST_WEIGHTS"


def _model_for(path: Path) -> str | None:
    name = path.name.lower()
    if "vgg16" in name:
        return "vgg16"
    if "vgg19" in name:
        return "vgg19"
    return None


def setup_demo(viewer: Any) -> Any:
    """Load the sample pair into ``viewer``, dock the widget, fill it in; return the widget."""
    viewer.open_sample("napari-nst", "pair")
    _, widget = viewer.window.add_plugin_dock_widget("napari-nst", "Style Transfer")
    widget.content.value = viewer.layers["chelsea"] if "chelsea" in viewer.layers else viewer.layers[-1]
    widget.style.value = viewer.layers["brush strokes"]
    env = os.environ.get(WEIGHTS_ENV)
    if env and Path(env).expanduser().is_file():
        path = Path(env).expanduser()
        with widget.settings.quiet():  # the demo's choice, not the user's: not remembered
            widget.weights.value = str(path)
            model = _model_for(path)
            if model:
                widget.model.value = model
    return widget


def _no_display() -> bool:
    """Linux without an X or Wayland display: Qt would abort with a cryptic message."""
    import sys

    return sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    )


def run_demo(run: bool = False) -> int:
    """Open napari with the demo set up; press Run at once if ``run``. Returns the exit status."""
    if _no_display():
        raise RuntimeError(
            "no display to open napari on (DISPLAY is not set); on a machine without a screen run "
            "'xvfb-run -a napari-nst demo', or use 'napari-nst stylize' instead"
        )
    import napari

    viewer = napari.Viewer(title="napari-nst demo")
    widget = setup_demo(viewer)
    if run:
        widget.start()
    napari.run()
    return 0
