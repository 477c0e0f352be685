"""napari-nst: neural style transfer (Gatys et al. 2015) for napari, Python and the shell.

Importing this package is cheap: it imports neither Qt, napari nor torch.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("napari-nst")  # defined once, in pyproject.toml
except PackageNotFoundError:  # pragma: no cover - source tree not installed
    __version__ = "0+unknown"
__all__ = ["batch", "iter_stylize", "iter_stylize_stack", "preview", "stylize", "stylize_stack", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("stylize", "iter_stylize", "stylize_stack", "iter_stylize_stack", "preview"):  # preview: no torch
        from napari_nst.core import api

        return getattr(api, name)
    if name == "batch":
        from napari_nst.core.distributed import batch

        return batch.batch
    raise AttributeError(f"module 'napari_nst' has no attribute {name!r}")
