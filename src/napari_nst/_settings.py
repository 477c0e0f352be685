"""The widget's remembered settings (no Qt): a small JSON file.

``widget.json`` in ``$NAPARI_NST_CONFIG_DIR`` if set (tests point it at a temporary folder), else
the platform's user config folder for ``napari-nst``. Only values the user changed are stored, so
improved defaults in a new version still reach everyone who kept the old default.
"""

from __future__ import annotations

import json
import os
from typing import Any

from napari_nst.core.config import CONFIG_ENV, config_dir  # noqa: F401  (the path logic lives in core: the engine reads it too)

SETTINGS_FILE = "widget.json"
SETTINGS_VERSION = 1


def load_settings() -> dict[str, Any]:
    """The remembered widget values ({} when none, or when the file is unreadable)."""
    path = config_dir() / SETTINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != SETTINGS_VERSION:
        return {}
    values = data.get("values")
    return dict(values) if isinstance(values, dict) else {}


def save_settings(values: dict[str, Any]) -> str | None:
    """Store ``values`` atomically; returns an error text instead of raising (settings are a nicety)."""
    folder = config_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (SETTINGS_FILE + ".part")
        tmp.write_text(json.dumps({"version": SETTINGS_VERSION, "values": values}, indent=1), encoding="utf-8")
        os.replace(tmp, folder / SETTINGS_FILE)
    except (OSError, TypeError, ValueError) as exc:
        return f"could not save the Style Transfer settings in {folder}: {exc}"
    return None
