"""The option fields, generated from the options metadata (:func:`napari_nst.core.options.specs`).

Every Options field with ``form=True`` becomes a magicgui widget named after it, with the spec's
label, help (tooltip), bounds and choices; ``advanced`` fields go in the Advanced section.
Values go back through :meth:`Spec.parse` (text fields) or the widget's own bounds (spin boxes,
choices), so an option is validated where it is declared, once. Only what needs the viewer is
special here: the ``init`` choices (layers), the ``device`` choices (the probe), seed -1 = random.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, LineEdit, LogSlider, SpinBox
from magicgui.widgets.bases import ValueWidget

from napari_nst.core.errors import OptionError
from napari_nst.core.options import specs
from napari_nst.core.spec import Spec

log = logging.getLogger(__name__)

#: Qt spin boxes hold 32-bit integers
QT_INT_MAX = 2**31 - 1
#: a float option with bounds inside this range gets a spin box, others a text field
SPIN_FLOAT_MAX = 1e6
#: text of an empty field, per kind (what leaving it empty means)
PLACEHOLDERS = {"auto_float": "auto", "floats": "equal", "bytes": "free memory"}
#: file dialogs' filters, per path option
FILE_FILTERS = {"weights": "PyTorch weights (*.pth *.pt);;All files (*)"}
#: the widget's own words after a spec's help, where the widget adds a meaning
EXTRA_TIPS = {"seed": "-1 = random."}
#: the entry of a choice whose None means something ("from the weights file")
AUTO = "auto"
#: a nullable choice's entry for None where "auto" would mislead ("Keep colours: off")
NONE_CHOICES = {"preserve_color": "off"}
#: text fields: kinds read with Spec.parse
TEXT_KINDS = ("auto_float", "names", "floats", "float", "bytes", "scales")


def _special_text(box: SpinBox, text: str) -> None:
    """Show ``text`` instead of the number while ``box`` is at its minimum, and read it (or an empty
    field) back as the minimum. Qt's ``setSpecialValueText`` does this for a QSpinBox, but magicgui's
    SpinBox is superqt's QLargeIntSpinBox, which writes the number itself (a nullable Tile size
    showed "63" for automatic)."""
    native = box.native
    native.setSpecialValueText(text)  # for a spin box that honours it
    if not all(hasattr(native, n) for n in ("_updateEdit", "_interpret", "_setValue")):
        return  # another spin box than superqt's: Qt's special value text serves
    update, interpret = native._updateEdit, native._interpret

    def _update_edit() -> None:
        if native.value() == native.minimum():
            if native.lineEdit().text() != text:
                native.lineEdit().setText(text)
            return
        update()

    def _interpret(policy: Any) -> None:
        if native.lineEdit().displayText().strip() in (text, ""):
            native._setValue(native.minimum(), policy)
            return
        try:
            interpret(policy)
        except ValueError:  # not a whole number (superqt's own raises): the value stays, shown again
            native.lineEdit().setText("")
            _update_edit()

    native._updateEdit, native._interpret = _update_edit, _interpret
    _update_edit()


def _int_box(spec: Spec, value: Any) -> SpinBox:
    lo = int(spec.lo) if spec.lo is not None else 0
    hi = min(int(spec.hi), QT_INT_MAX) if spec.hi is not None else QT_INT_MAX
    if spec.nullable and not spec.none.startswith("by device"):  # e.g. frame_steps: None shown as "auto"
        box = SpinBox(min=lo - 1, max=hi, step=int(spec.step or 1), value=value if value is not None else lo - 1)
        _special_text(box, AUTO)
        return box
    return SpinBox(min=lo, max=hi, step=int(spec.step or 1), value=value if value is not None else lo)


def _float_field(spec: Spec) -> ValueWidget[Any]:
    if spec.lo is not None and spec.hi is not None and spec.hi <= SPIN_FLOAT_MAX:
        return FloatSpinBox(min=spec.lo, max=spec.hi, step=spec.step or 0.05, value=spec.default)
    return LineEdit(value=spec.format(spec.default))


def _seed_box(spec: Spec) -> SpinBox:
    hi = min(int(spec.hi), QT_INT_MAX) if spec.hi is not None else QT_INT_MAX
    box = SpinBox(min=-1, max=hi, value=-1 if spec.default is None else int(spec.default))
    _special_text(box, "random")
    return box


def make_field(spec: Spec, init_choices: Callable[..., list[Any]], devices: list[str]) -> ValueWidget[Any] | None:
    """The widget for one option (None for a kind the form does not know: a test catches that)."""
    kind = spec.kind
    if kind == "int":
        w: ValueWidget[Any] = _int_box(spec, spec.default)
    elif kind == "float":
        w = _float_field(spec)
    elif kind in TEXT_KINDS:
        w = LineEdit(value=spec.format(spec.default))
    elif kind == "choice":
        none = NONE_CHOICES.get(spec.name, AUTO)
        choices = ((none,) if spec.nullable else ()) + tuple(spec.choices or ())
        w = ComboBox(choices=choices, value=none if spec.default is None else spec.default)
    elif kind == "log_float":  # a slider on a log scale: the middle of [lo, hi] = 1 when lo * hi = 1
        w = LogSlider(min=spec.lo, max=spec.hi, base=10, value=spec.default)  # type: ignore[call-arg, arg-type]
    elif kind == "device":
        w = ComboBox(choices=devices, value=spec.default if spec.default in devices else devices[0])
    elif kind == "init":
        w = ComboBox(choices=init_choices)
    elif kind == "path":
        w = FileEdit(mode="r", nullable=True, filter=FILE_FILTERS.get(spec.name, "All files (*)"))  # type: ignore[assignment, arg-type]
    elif kind == "seed":
        w = _seed_box(spec)
    else:
        log.warning("option %s: no form field for kind %r", spec.name, kind)
        return None
    w.name, w.label = spec.name, spec.label
    w.tooltip = " ".join(t for t in (spec.help, EXTRA_TIPS.get(spec.name, "")) if t)
    if kind in PLACEHOLDERS:
        w.native.setPlaceholderText(PLACEHOLDERS[kind])
    if kind == "log_float":
        _show_factor(w, spec.label)
    return w


def _show_factor(w: Any, label: str) -> None:
    """The factor in the label ("Style strength ×1"): magicgui's LogSlider shows its internal
    0-100 position in its readout, a number nobody can act on, so the readout is hidden."""
    from qtpy.QtWidgets import QAbstractSpinBox

    for box in w.native.findChildren(QAbstractSpinBox):
        box.hide()

    def update(*_: Any) -> None:
        w.label = f"{label} ×{w.value:.2g}"

    w.changed.connect(update)
    update()


class OptionsForm:
    """The generated option fields, their values as engine options, and their remembered form."""

    def __init__(self, init_choices: Callable[..., list[Any]], devices: list[str]) -> None:
        self.specs = {s.name: s for s in specs() if s.form}
        self.fields: dict[str, ValueWidget[Any]] = {}
        for spec in self.specs.values():
            w = make_field(spec, init_choices, devices)
            if w is not None:
                self.fields[spec.name] = w

    def basic(self) -> list[ValueWidget[Any]]:
        return [w for n, w in self.fields.items() if not self.specs[n].advanced]

    def advanced(self) -> list[ValueWidget[Any]]:
        return [w for n, w in self.fields.items() if self.specs[n].advanced]

    def value(self, name: str) -> Any:
        """The engine value of one field; raises OptionError naming the field's label."""
        spec, w = self.specs[name], self.fields[name]
        if spec.kind == "seed":
            return None if int(w.value) < 0 else int(w.value)
        if spec.kind == "path":
            text = str(w.value) if w.value else ""
            return text if text not in ("", ".") else None
        if spec.kind == "choice" and spec.nullable and w.value == NONE_CHOICES.get(name, AUTO):
            return None
        if spec.kind == "int" and spec.nullable and int(w.value) < int(spec.lo or 0):  # "auto"
            return None
        if isinstance(w, LineEdit) and spec.kind in TEXT_KINDS:
            try:
                return spec.parse(w.value or "")
            except (OptionError, ValueError) as exc:
                msg = str(exc).removeprefix(f"{spec.name}: ")
                raise OptionError(f"{spec.label}: {msg}") from None
        return w.value

    def options(self) -> dict[str, Any]:
        """Every field as an engine keyword (``init`` a string or a layer). Raises OptionError."""
        return {name: self.value(name) for name in self.fields}

    def setting(self, name: str) -> Any:
        """The JSON value remembered for a field (text as typed; no layers)."""
        value = self.fields[name].value
        kind = self.specs[name].kind
        if kind == "path":
            return self.value(name)
        if kind == "init":
            return value if isinstance(value, str) else self.specs[name].default
        return value

    def reset(self, name: str) -> None:
        """The field back to its declared default (size and steps: see the widget's machine defaults)."""
        spec, w = self.specs[name], self.fields[name]
        if spec.kind == "seed":
            w.value = -1 if spec.default is None else int(spec.default)
        elif spec.kind == "path":
            w.value = None
        elif isinstance(w, LineEdit):
            w.value = spec.format(spec.default)
        elif spec.kind == "choice" and spec.default is None:
            w.value = NONE_CHOICES.get(name, AUTO)
        elif spec.kind == "int" and spec.default is None and w.min < int(spec.lo or 0):  # type: ignore[attr-defined]
            w.value = w.min  # type: ignore[attr-defined]  # "auto"
        elif spec.default is not None:
            w.value = spec.default
