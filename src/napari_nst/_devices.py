"""Which accelerators torch could use here, found without importing torch in this process (no Qt).

A cheap look for GPU device files first; only when a GPU may be there, a short child process
that asks torch (the napari process never imports torch: see docs/napari.md).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any


def quick_device_guess() -> str | None:
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
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        data = json.loads(line)
        return {"cuda": list(data.get("cuda", [])), "mps": bool(data.get("mps")), "error": None}
    except Exception as exc:  # timeout, no torch, broken CUDA ...
        return {"cuda": [], "mps": False, "error": f"{type(exc).__name__}: {exc}"}
