"""Settings changed during a run (no Qt): which go to the engine now, which wait for the next Run,
and how the status line says so (:mod:`napari_nst.core.live` decides which options a run takes).
"""

from __future__ import annotations

from typing import Any

from napari_nst.core.live import LIVE_OPTIONS
from napari_nst.core.options import spec

#: the widget's choices beside the options: changing one during a run waits for the next Run
INPUTS = {"content": "Content", "styles": "Style images", "regions": "Regions"}
#: the options whose values depend on the style images or the regions picked
_ON_INPUTS = {"style_blend": "styles", "region_styles": "regions"}


def differs(a: Any, b: Any) -> bool:
    """Whether two settings differ: layers by identity (seen through napari's public-only proxy
    or not), tuples item by item, numbers and text by value."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) != len(b) or any(differs(x, y) for x, y in zip(a, b, strict=True))
    a, b = getattr(a, "__wrapped__", a), getattr(b, "__wrapped__", b)
    if a is b:
        return False
    try:
        return bool(a != b)
    except Exception:  # arrays and such: anything but the same object counts as changed
        return True


def label(name: str) -> str:
    """The field's label of an option or an input choice."""
    if name in INPUTS:
        return INPUTS[name]
    try:
        return spec(name).label
    except KeyError:
        return name


def split_changes(
    start: dict[str, Any], sent: dict[str, Any], now: dict[str, Any], live: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """``(options to send to the engine now, labels of the settings that apply at the next Run)``.

    ``start``: the settings the run started with (options and :data:`INPUTS`); ``sent``: the live
    options as last sent (start's, then each update's); ``now``: the settings now. ``live``: False
    for a run that takes no updates (a stack): every change waits for the next Run. The blend and
    the region styles wait too once the style images or the regions picked have changed."""
    moved = {k for k in INPUTS if differs(now.get(k), start.get(k))}
    changes: dict[str, Any] = {}
    later: list[str] = []
    for name in dict.fromkeys([*start, *now]):
        takes = live and name in LIVE_OPTIONS and _ON_INPUTS.get(name) not in moved
        if takes:
            if differs(now.get(name), sent.get(name)):
                changes[name] = now.get(name)
        elif differs(now.get(name), start.get(name)):
            later.append(label(name))
    return changes, later


def value_text(name: str, value: Any) -> str:
    """An option's value as the status line says it."""
    if name == "style_strength":
        return f"×{float(value):.2g}"
    if value is None:
        return {"preserve_color": "off", "style_layer_weights": "equal", "style_blend": "equal"}.get(name, "auto")
    return spec(name).format(value)


def describe(update: dict[str, Any]) -> str:
    """``Style strength ×3, TV weight 0.1``: options changed during a run, with their new values."""
    return ", ".join(f"{label(k)} {value_text(k, v)}" for k, v in update.items())


def applied_text(update: dict[str, Any], step: int) -> str:
    """The status line's sentence for an update the engine applied: ``Style strength ×3 from step 41``."""
    return f"{describe(update)} from step {step}"


def later_text(labels: list[str]) -> str:
    """The sentence for settings changed during a run that a run cannot take."""
    if not labels:
        return ""
    verb = "applies" if len(labels) == 1 else "apply"
    return f"{', '.join(labels)} {verb} at the next Run"


def status_lines(applied: str, pending: str, later: list[str], error: str) -> str:
    """The lines the status adds during a run whose settings changed ("" when none did)."""
    lines = [
        applied,
        f"{pending}: from the next evaluation" if pending else "",
        later_text(later),
        f"Not applied: {error}" if error else "",
    ]
    return "".join(f"\n{line}" for line in lines if line)
