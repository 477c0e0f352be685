"""The one place the engine imports torchvision, and what to install when that import fails.

torchvision is needed only for its ImageNet VGG weights (``weights=None``); a local weights file
does without it. A torchvision built for another torch fails at import with messages that do not
say what to do (``RuntimeError: operator torchvision::nms does not exist``, ``AttributeError:
module 'torch.library' has no attribute 'register_fake'``, an undefined symbol ...).
:func:`torchvision_models` turns any such failure into an :class:`InstallError` that names the
torchvision that goes with the installed torch: for torch 2.Y it is torchvision 0.(Y+15)
(torch 2.14 -> torchvision 0.29).
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

from napari_nst.core.errors import InstallError

#: torch 2.Y goes with torchvision 0.(Y + TORCHVISION_MINOR_OFFSET)
TORCHVISION_MINOR_OFFSET = 15
#: how to use the engine without torchvision (the end of every message)
WITHOUT_TORCHVISION = (
    "Without torchvision: pass a local weights file (--weights PATH on the command line, weights='PATH' "
    "in Python, the Weights field in napari, or NAPARI_NST_WEIGHTS=PATH)."
)


def matching_torchvision(torch_version: str) -> str | None:
    """The torchvision series (``"0.29"``) that goes with ``torch_version`` (``"2.14.1+cpu"``);
    None for a torch other than 2.x."""
    m = re.match(r"(\d+)\.(\d+)", torch_version)
    if m is None or m.group(1) != "2":
        return None
    return f"0.{int(m.group(2)) + TORCHVISION_MINOR_OFFSET}"


def installed_version(dist: str) -> str | None:
    """The installed version of ``dist`` (from its metadata, without importing it); None if absent."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _series(version: str) -> str:
    m = re.match(r"(\d+)\.(\d+)", version)
    return f"{m.group(1)}.{m.group(2)}" if m else version


def install_message(exc: BaseException, torch_version: str, torchvision_version: str | None) -> str:
    """What to install, for ``exc`` raised by ``import torchvision`` (the versions installed)."""
    want = matching_torchvision(torch_version)
    base, _, build = torch_version.partition("+")
    # torch's own wheels (+cpu, +cu128, +rocm6.2 ...) come from its index; torchvision must too
    index = f" --index-url https://download.pytorch.org/whl/{build}" if build else ""
    spec = f'"torchvision=={want}.*"' if want else "torchvision (the release made for your torch)"
    failed = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    if torchvision_version is None and isinstance(exc, ModuleNotFoundError):
        head = f"torchvision is not installed ({failed}); torch {torch_version} needs pip install {spec}{index}."
    elif torchvision_version is not None and want is not None and _series(torchvision_version) != want:
        head = (
            f"torchvision {torchvision_version} does not match torch {torch_version}: install matching versions "
            f"(pip install {spec}{index}). Importing it failed with {failed}."
        )
    else:  # the versions go together: two builds (CPU and CUDA wheels, pip and conda ...) mixed
        tv = torchvision_version or "(version unknown)"
        head = (
            f"torchvision {tv} cannot be imported with torch {torch_version} ({failed}): the two come from "
            f'different builds; install both from one place: pip install --force-reinstall "torch=={base}" '
            f"{spec}{index}."
        )
    return f"{head} {WITHOUT_TORCHVISION}"


def torchvision_models() -> Any:
    """``torchvision.models``; :class:`InstallError` saying what to install if it cannot be imported."""
    try:
        import torchvision.models as tvm
    except Exception as exc:  # RuntimeError, ImportError, AttributeError, OSError: a broken install
        import torch

        raise InstallError(install_message(exc, str(torch.__version__), installed_version("torchvision"))) from exc
    return tvm
