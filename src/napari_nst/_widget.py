"""The "Style Transfer" dock widget (napari.yaml points here).

The widget is made of small parts (docs/architecture.md): what a run is, without Qt, in
:mod:`napari_nst._run` (inputs, plan, runner, status, sink); the Qt part that composes them in
:mod:`napari_nst._qt` (the generated form, the pickers, the controller). This module keeps the
public name.
"""

from __future__ import annotations

from napari_nst._qt.widget import StyleTransferWidget

__all__ = ["StyleTransferWidget"]
