"""Restyle only part of the image: the ``mask`` picker ("Restyle only") of Labels and Shapes layers.

The layer is read as it lies over the content (the slice on screen; a stack: each frame's): a
Labels layer's nonzero labels, or a Shapes layer's shapes (rasterised by napari on the main
thread when Run or Continue is pressed). Pixels outside stay those of the start image: the
content, or with Continue the pastiche being repainted. Default: none, every pixel.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox


class MaskPanel:
    """The "Restyle only" picker."""

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer
        self.picker = ComboBox(
            name="mask",
            label="Restyle only",
            choices=self.choices,
            value=None,
            tooltip="Restyle only where a Labels layer is painted (nonzero) or a Shapes layer has shapes; "
            "elsewhere the pixels stay those of the start image (with Continue: the pastiche), the border "
            "feathered over a few pixels. none: every pixel.",
        )

    def layers(self) -> list[Any]:
        """The Labels and Shapes layers."""
        from napari.layers import Labels, Shapes

        return [lay for lay in reversed(self._viewer.layers) if isinstance(lay, (Labels, Shapes))]

    def choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [("none", None)] + [(lay.name, lay) for lay in self.layers()]

    def in_use(self) -> list[Any]:
        """The layer a run would read ([] for none)."""
        return [] if self.picker.value is None else [self.picker.value]

    def check(self) -> None:
        """ValueError for a Shapes layer without shapes (a Labels layer with nothing painted at the
        working size is refused by the engine's check, which reads it at that size)."""
        layer = self.picker.value
        if layer is not None and hasattr(layer, "to_labels") and len(layer.data) == 0:
            raise ValueError(
                f"The Shapes layer {layer.name!r} under Restyle only has no shapes: draw the region to "
                "restyle, or pick Restyle only: none."
            )
