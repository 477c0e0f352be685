"""Several style layers, each with a weight: the ``styles`` container.

Row 0 holds the widget's ``style`` picker; "Add style" adds rows (``style_1``, ``style_2`` ...,
each with ``weight_<k>`` and ``remove_<k>``). ``style_blend`` (a label) shows the weights as
the engine will use them, normalised to sum 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton

#: weights of a style row: spin box range and step
WEIGHT_MAX, WEIGHT_STEP = 100.0, 0.1


class StylesPanel:
    """The style rows, their weights and the blend as used."""

    def __init__(
        self,
        first: ComboBox,
        choices: Callable[..., list[tuple[str, Any]]],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._choices = choices
        self._on_change: Callable[[], None] | None = None  # its owner is still being built: told from now on
        self.pickers: list[ComboBox] = [first]
        self.weights: list[FloatSpinBox] = [self._weight(0)]
        self.container: Container[Any] = Container(name="styles", label="Styles", labels=False)
        self.container.margins = (0, 0, 0, 0)
        self.add = PushButton(
            name="add_style",
            text="Add style",
            tooltip="Blend another style image in (or give it regions: see Regions).",
        )
        self.style_blend = Label(
            name="style_blend", value="", tooltip="The weights as the engine uses them: normalised to sum 1."
        )
        self.container.append(self._row(first, self.weights[0], None))
        self.container.extend([self.add, self.style_blend])
        self.add.changed.connect(lambda *_: self.add_style())
        self._show_blend()
        self._on_change = on_change

    def _weight(self, k: int) -> FloatSpinBox:
        w = FloatSpinBox(
            name=f"weight_{k}",
            value=1.0,
            min=0.0,
            max=WEIGHT_MAX,
            step=WEIGHT_STEP,
            tooltip="This style's weight in the blend (the weights are normalised to sum 1).",
        )
        w.changed.connect(lambda *_: self._show_blend())
        return w

    def _row(self, picker: ComboBox, weight: FloatSpinBox, remove: PushButton | None) -> Container[Any]:
        k = len(self.pickers) - 1
        widgets = [picker, weight] + ([remove] if remove is not None else [])
        row = Container(name=f"style_row_{k}", layout="horizontal", labels=False, widgets=widgets)
        row.margins = (0, 0, 0, 0)
        return row

    def add_style(self, layer: Any = None) -> ComboBox:
        """A new style row (the picker set to ``layer`` if given); returns its picker."""
        k = len(self.pickers)
        picker = ComboBox(
            name=f"style_{k}",
            choices=self._choices,
            tooltip="Another style image; its Gram targets are blended with the others'.",
        )
        if layer is not None:
            picker.value = layer
        weight = self._weight(k)
        remove = PushButton(name=f"remove_{k}", text="Remove", tooltip="Remove this style.")
        self.pickers.append(picker)
        self.weights.append(weight)
        row = self._row(picker, weight, remove)
        remove.changed.connect(lambda *_: self.remove_style(row))
        picker.changed.connect(lambda *_: self._show_blend())
        self.container.insert(len(self.pickers) - 1, row)
        self._show_blend()
        return picker

    def remove_style(self, row: Container[Any]) -> None:
        k = next(i for i, w in enumerate(self.container) if w is row)
        self.container.remove(row)
        del self.pickers[k], self.weights[k]
        self._show_blend()

    def layers(self) -> list[Any]:
        return [p.value for p in self.pickers]

    def blend(self) -> list[float]:
        return [float(w.value) for w in self.weights]

    def normalised(self) -> list[float] | None:
        total = sum(self.blend())
        return [w / total for w in self.blend()] if total > 0 else None

    def check(self) -> None:
        """ValueError naming the fix for a blend the engine would refuse."""
        if len(self.pickers) > 1 and any(p.value is None for p in self.pickers):
            raise ValueError("A style row has no image: pick one, or press its Remove button.")
        if self.normalised() is None:
            raise ValueError("Every style weight is 0: give at least one style a weight above 0.")

    def _show_blend(self) -> None:
        norm = self.normalised()
        if len(self.pickers) < 2:
            self.style_blend.value = ""
        elif norm is None:
            self.style_blend.value = "Blend: all weights are 0"
        else:
            names = [getattr(p.value, "name", "?") for p in self.pickers]
            used = ", ".join(f"{n} {w:.0%}" for n, w in zip(names, norm, strict=True))
            self.style_blend.value = f"Blend used: {used}"
        self.style_blend.visible = len(self.pickers) > 1
        if self._on_change is not None:
            self._on_change()
