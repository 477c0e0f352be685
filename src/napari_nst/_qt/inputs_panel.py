"""The layer pickers: content, style (and the layer choices of "Start from").

napari's dock keeps them in step with the layer list (it calls the widget's ``reset_choices``
on inserted, removed, reordered and renamed layers); here only what napari does not do.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox

from napari_nst._run.state import same_layer

#: how the init option's string choices read in the "Start from" picker
INIT_LABELS = {"content": "content image", "preview": "instant preview"}


class InputsPanel:
    """Content and style pickers over the viewer's Image layers."""

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer
        self.content = ComboBox(
            name="content",
            label="Content",
            choices=self.image_choices,
            tooltip="The image whose content (shapes, layout) the pastiche keeps: an Image layer, read as "
            "shown (contrast limits, current slice).",
        )
        self.style = ComboBox(
            name="style",
            label="Style",
            choices=self.image_choices,
            tooltip="The image whose style (colours, textures, brush strokes) is painted onto the content.",
        )

    def image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [lay for lay in reversed(self._viewer.layers) if isinstance(lay, Image)]

    def image_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(lay.name, lay) for lay in self.image_layers()]

    def init_choices(self, base: tuple[str, ...], *_: Any) -> list[tuple[str, Any]]:
        """ "Start from": the option's own choices (content, noise) or any image layer (an earlier pastiche)."""
        out: list[tuple[str, Any]] = [(INIT_LABELS.get(c, c), c) for c in base]
        return out + [(f"layer: {lay.name}", lay) for lay in self.image_layers()]

    def after_reset(self) -> None:
        """A new layer set both pickers to the same image: pick another one for the style."""
        c = self.content.value
        if same_layer(c, self.style.value):
            others = [lay for lay in self.image_layers() if not same_layer(lay, c)]
            if others:
                self.style.value = others[0]

    def follow_renames(self) -> None:
        """For napari versions whose dock does not reset the choices on a rename."""
        if hasattr(self._viewer.layers.events, "renamed"):
            return
        for layer in self._viewer.layers:
            layer.events.name.connect(self._refresh)
        self._viewer.layers.events.inserted.connect(lambda e: e.value.events.name.connect(self._refresh))

    def _refresh(self, *_: Any) -> None:
        for w in (self.content, self.style):
            w.reset_choices()
