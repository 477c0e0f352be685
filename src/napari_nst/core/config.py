"""Where napari-nst keeps what it remembers on this machine (no torch, no Qt).

``$NAPARI_NST_CONFIG_DIR`` if set (tests point it at a temporary folder), else the platform's user
config folder for ``napari-nst``. The widget's remembered settings (``widget.json``,
:mod:`napari_nst._settings`) and the measured compute plans (``plans.json``,
:mod:`napari_nst.core.compute.tune`) live there.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_ENV = "NAPARI_NST_CONFIG_DIR"


def config_dir() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_config_dir

        return Path(user_config_dir("napari-nst", appauthor=False))
    except ImportError:  # pragma: no cover - platformdirs comes with napari
        return Path.home() / ".config" / "napari-nst"
