"""Regions painted in a Labels layer: the ``regions`` picker and one style choice per
label present (``label_<k>``, in the ``region_styles`` container).

Each label's choice is a style (by its row: ``style 1``, ``style 2`` ...), "blend" (the blend of
all styles: what labels without a choice get, 0 included) or "none" (no style: the content is
kept there). Defaults: label 0 (unpainted) blend; label k the k-th style where there is one.

With regions picked, ``style_regions`` holds one Labels-layer choice per style (``style_regions_<k>``):
a Labels layer painted over that style image says which part of it supplies each label's style
(label L of the content takes its style from the pixels labelled L there); "whole" uses all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container

BLEND, NONE, WHOLE = "blend", "none", "whole"
#: at most this many label rows (a labels layer of thousands of cells is not a style map)
MAX_LABEL_ROWS = 32


class RegionsPanel:
    """The Labels-layer picker and the per-label style choices."""

    def __init__(self, viewer: Any, style_names: Callable[[], list[str]]) -> None:
        self._viewer = viewer
        self._style_names = style_names
        self._watched: Any = None
        self.picker = ComboBox(
            name="regions",
            label="Regions",
            choices=self.choices,
            value=None,
            tooltip="A Labels layer whose painted labels choose the style of each region "
            "(read as it lies over the content), or none: the style everywhere.",
        )
        self.rows: Container[Any] = Container(name="region_styles", label="Region styles", labels=True)
        self.rows.margins = (0, 0, 0, 0)
        self.sources: Container[Any] = Container(name="style_regions", label="Style regions", labels=True)
        self.sources.margins = (0, 0, 0, 0)
        self.picker.changed.connect(lambda *_: self.refresh())
        self.refresh()

    def labels_layers(self) -> list[Any]:
        from napari.layers import Labels

        return [lay for lay in reversed(self._viewer.layers) if isinstance(lay, Labels)]

    def choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [("none", None)] + [(lay.name, lay) for lay in self.labels_layers()]

    def present(self) -> list[int]:
        layer = self.picker.value
        if layer is None:
            return []
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        return [int(v) for v in np.unique(np.asarray(data))[:MAX_LABEL_ROWS]]

    def refresh(self, *_: Any) -> None:
        """Rows for the labels present now (a label's choice is kept while it stays present)."""
        self._watch(self.picker.value)
        kept = {w.name: w.value for w in self.rows}
        self.rows.clear()
        names = self._style_names()
        options = [BLEND] + [f"style {i + 1}: {n}" for i, n in enumerate(names)] + [NONE]
        for lab in self.present():
            default = f"style {lab}: {names[lab - 1]}" if 1 <= lab <= len(names) else BLEND
            name = f"label_{lab}"
            value = kept.get(name, default)
            value = value if value in options else default
            self.rows.append(
                ComboBox(
                    name=name, label=f"label {lab}" + (" (unpainted)" if lab == 0 else ""), choices=options, value=value
                )
            )
        self.rows.visible = self.picker.value is not None
        self._refresh_sources(names)

    def _refresh_sources(self, names: list[str]) -> None:
        """One Labels-layer choice per style image (a choice is kept while its style row stays)."""
        kept = {w.name: w.value for w in self.sources}
        self.sources.clear()
        for k, n in enumerate(names):
            name = f"style_regions_{k}"
            w = ComboBox(
                name=name,
                label=f"parts of style {k + 1}",
                choices=self.source_choices,
                tooltip=f"A Labels layer painted over {n!r}: content label L takes its style from the pixels "
                "labelled L there (whole: all of the style image).",
            )
            if name in kept and kept[name] in [v for _, v in self.source_choices()]:
                w.value = kept[name]
            self.sources.append(w)
        self.sources.visible = self.picker.value is not None

    def source_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(WHOLE, None)] + [(lay.name, lay) for lay in self.labels_layers()]

    def layers_in_use(self) -> list[Any]:
        """The Labels layers a run would read: the regions and the style images' parts."""
        return [lay for lay in [self.picker.value, *self.style_sources()] if lay is not None]

    def style_sources(self) -> list[Any]:
        """The Labels layer chosen for each style image (None: whole), or [] without regions."""
        if self.picker.value is None:
            return []
        return [w.value for w in self.sources]

    def _watch(self, layer: Any) -> None:
        """Painting new labels adds their rows."""
        if layer is self._watched:
            return
        for lay, connect in ((self._watched, False), (layer, True)):
            if lay is None:
                continue
            for ev in ("paint", "data", "labels_update"):
                emitter = getattr(lay.events, ev, None)
                if emitter is not None:
                    (emitter.connect if connect else emitter.disconnect)(self._on_painted)
        self._watched = layer

    def _on_painted(self, *_: Any) -> None:
        if {f"label_{k}" for k in self.present()} != {w.name for w in self.rows}:
            self.refresh()

    def mapping(self) -> dict[int, int | None] | None:
        """``region_styles`` for the engine (None without a Labels layer)."""
        if self.picker.value is None:
            return None
        out: dict[int, int | None] = {}
        for w in self.rows:
            lab = int(w.name.split("_", 1)[1])
            if w.value == NONE:
                out[lab] = None
            elif w.value != BLEND:
                out[lab] = int(str(w.value).split(":")[0].split()[1]) - 1
        return out

    def check(self) -> None:
        """ValueError when every label present is set to none (nothing left to style)."""
        mapping = self.mapping()
        if mapping is not None and self.rows and all(w.value == NONE for w in self.rows):
            raise ValueError(
                f"Every label of {self.picker.value.name!r} is set to none, so no pixel gets a style: "
                "choose a style for at least one label (or pick Regions: none)."
            )
