"""Widget support without Qt: remembered settings, tooltips from the options' docs, device probe.

- Settings are a small JSON file, ``widget.json``, in ``$NAPARI_NST_CONFIG_DIR`` if set (tests
  point it at a temporary folder), else the platform's user config folder for ``napari-nst``.
  Only values the user changed are stored, so improved defaults in a new version still reach
  everyone who kept the old default.
- Tooltips come from the numpy-docstring "Attributes" section of
  :class:`napari_nst.core.options.Options`, the one place where every option is documented.
- The device probe never imports torch here: a cheap look for GPU device files first, and only
  when a GPU may be there, a short child process that asks torch.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from .core.options import Options

CONFIG_ENV = "NAPARI_NST_CONFIG_DIR"
SETTINGS_FILE = "widget.json"
SETTINGS_VERSION = 1


def config_dir() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_config_dir

        return Path(user_config_dir("napari-nst", appauthor=False))
    except ImportError:  # pragma: no cover - platformdirs comes with napari
        return Path.home() / ".config" / "napari-nst"


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


def save_settings(values: dict[str, Any]) -> Optional[str]:
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


# --------------------------------------------------------------------------- option docs


def option_docs() -> dict[str, str]:
    """``{option name: description}`` parsed from the Options docstring's Attributes section."""
    doc = Options.__doc__ or ""
    m = re.search(r"Attributes\n\s*-+\n(.*)", doc, re.S)
    if not m:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    text: list[str] = []

    def flush() -> None:
        if names:
            desc = " ".join(" ".join(text).split())
            for n in names:
                out[n] = desc

    for line in m.group(1).splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        head = re.match(r"^([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*) : (.*)$", line.strip())
        if head and indent <= 4:
            flush()
            names = head.group(1).split(", ")
            text = []
        else:
            text.append(line.strip())
    flush()
    return out


# --------------------------------------------------------------------------- device


def quick_device_guess() -> Optional[str]:
    """``"cpu"`` when there is surely no GPU torch could use, else None (ask torch to be sure).

    Cheap: looks for NVIDIA/AMD device files or ``nvidia-smi``; Apple silicon may have MPS.
    """
    if sys.platform == "darwin":
        return None if platform.machine() == "arm64" else "cpu"
    for path in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/kfd", "/dev/dxg"):
        if os.path.exists(path):
            return None
    if shutil.which("nvidia-smi") or shutil.which("rocm-smi"):
        return None
    return "cpu"


_PROBE = (
    "import json, torch\n"
    "cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] "
    "if torch.cuda.is_available() else []\n"
    "mps = bool(getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available())\n"
    "print(json.dumps({'cuda': cuda, 'mps': mps}))\n"
)


def probe_devices(timeout: float = 120.0) -> dict[str, Any]:
    """Ask torch, in a child process, which accelerators there are.

    Returns ``{"cuda": [names...], "mps": bool, "error": str | None}``. Blocking: call it from
    a thread. The calling process never imports torch.
    """
    guess = quick_device_guess()
    if guess == "cpu":
        return {"cuda": [], "mps": False, "error": None}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        data = json.loads(line)
        return {"cuda": list(data.get("cuda", [])), "mps": bool(data.get("mps")), "error": None}
    except Exception as exc:  # timeout, no torch, broken CUDA ...
        return {"cuda": [], "mps": False, "error": f"{type(exc).__name__}: {exc}"}
