"""napari-nst: neural style transfer (Gatys et al. 2015) for napari, Python and the shell.

Importing this package is cheap: it imports neither Qt, napari nor torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["batch", "iter_stylize", "iter_stylize_stack", "stylize", "stylize_stack", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("stylize", "iter_stylize", "stylize_stack", "iter_stylize_stack"):
        from .core import api

        return getattr(api, name)
    if name == "batch":
        from .core import batch

        return batch.batch
    raise AttributeError(f"module 'napari_nst' has no attribute {name!r}")
