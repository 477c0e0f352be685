"""Remembered settings: which fields the user set, stored between sessions and shown as such.

Only values the user changed are stored (:mod:`napari_nst._settings`); a weights path that no
longer exists is neither stored nor restored. :meth:`RememberedSettings.summary` is the line the
widget shows while remembered values are in use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from magicgui.widgets.bases import ValueWidget

from napari_nst._qt.form import OptionsForm
from napari_nst._settings import load_settings, save_settings

log = logging.getLogger(__name__)


def _stale_path(value: Any) -> bool:
    return value is not None and not Path(str(value)).expanduser().is_file()


class RememberedSettings:
    """The form's fields (and a few widget switches) remembered between sessions."""

    def __init__(self, form: OptionsForm, switches: dict[str, ValueWidget[Any]], changed: Callable[[], None]) -> None:
        self._form = form
        self._widgets: dict[str, ValueWidget[Any]] = {**form.fields, **switches}
        self._changed = changed
        self.touched: set[str] = set()
        self._quiet = 0
        for name, w in self._widgets.items():
            w.changed.connect(partial(self._on_change, name))

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Changes made inside are the program's, not the user's: not remembered."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def _on_change(self, name: str, *_: Any) -> None:
        if self._quiet:
            return
        self.touched.add(name)
        self.save()
        self._changed()

    def _value(self, name: str) -> Any:
        return self._form.setting(name) if name in self._form.fields else self._widgets[name].value

    def _is_path(self, name: str) -> bool:
        spec = self._form.specs.get(name)
        return spec is not None and spec.kind == "path"

    def save(self) -> None:
        values = {n: self._value(n) for n in sorted(self.touched)}
        values = {n: v for n, v in values.items() if not (self._is_path(n) and _stale_path(v))}
        err = save_settings(values)
        if err:
            log.warning(err)

    def restore(self) -> None:
        """Put the remembered values into the fields (stale or hand-edited ones are skipped)."""
        with self.quiet():
            for name, value in load_settings().items():
                w = self._widgets.get(name)
                if w is None or (self._is_path(name) and _stale_path(value)):
                    continue
                spec = self._form.specs.get(name)
                if spec is not None and spec.kind == "device" and value not in w.choices:  # type: ignore[attr-defined]
                    continue  # e.g. cuda:1 before the probe found it
                try:
                    w.value = value
                except Exception:  # a stale or hand-edited value: keep the default
                    continue
                self.touched.add(name)

    def forget(self) -> None:
        self.touched.clear()
        self.save()
        self._changed()

    def summary(self) -> str:
        """ "Using remembered settings: Steps, Network" (empty when none are in use)."""
        names = [self._form.specs[n].label for n in self._form.fields if n in self.touched]
        return f"Using remembered settings: {', '.join(names)}" if names else ""
