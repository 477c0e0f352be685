"""napari notifications (imported when shown: napari is loaded by then)."""

from __future__ import annotations


def error(text: str) -> None:
    from napari.utils.notifications import show_error

    show_error(text)


def warn(text: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(text)


def info(text: str) -> None:
    from napari.utils.notifications import show_info

    show_info(text)
