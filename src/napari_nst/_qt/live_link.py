"""Settings changed during a run: the objective's go to the engine (debounced), the others wait.

While a run goes on, a change of a field the engine takes live (style strength, weights, blend,
colours, region styles, TV weight: :data:`napari_nst.core.live.LIVE_OPTIONS`) is sent to the
engine :data:`DEBOUNCE_MS` after the last change (a slider dragged sends once, when it rests);
the status says "... from the next evaluation", then, once a record says the engine applied it,
"Style strength ×3 from step 41", and the loss plot marks that step. A change of any other
setting (size, network, device ...) is not sent: the status says it applies at the next Run.
Nothing blocks the form.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer

from napari_nst._run.live import split_changes
from napari_nst.core.errors import OptionError
from napari_nst.core.live import LIVE_OPTIONS

#: milliseconds after the last change of a live field before it is sent to the engine
DEBOUNCE_MS = 300


class LiveLink:
    """Follows the widget's settings during a run (``widget``: the dock widget, ``controller``:
    its run controller)."""

    def __init__(self, widget: Any, controller: Any) -> None:
        self._widget = widget
        self._controller = controller
        self._timer = QTimer(widget.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.flush)
        self._start: dict[str, Any] | None = None
        self._sent: dict[str, Any] = {}
        self._live = True
        # every field, the styles with their weights, the regions and their styles, the content
        for watched in (*widget.form.fields.values(), widget.styles, widget.content, widget.regions):
            watched.changed.connect(self.changed)
        widget.region_styles.changed.connect(self.changed)

    def settings(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """The widget's settings now: its options (``options``: as read already) and the inputs
        picked. Raises OptionError."""
        w = self._widget
        now = dict(w.options() if options is None else options)
        now.update(content=w.content.value, styles=tuple(w.styles_panel.layers()), regions=w.regions.value)
        return now

    def started(self, settings: dict[str, Any], live: bool) -> None:
        """A run started with ``settings`` (:meth:`settings` at Run); ``live``: it takes updates."""
        self._timer.stop()
        self._start, self._live = dict(settings), live
        self._sent = {k: settings.get(k) for k in LIVE_OPTIONS}

    def changed(self, *_: Any) -> None:
        """A setting changed: during a run, look at the changes once they rest."""
        if self._start is not None and self._running() is not None:
            self._timer.start()

    def _running(self) -> Any:
        run = self._controller.run
        if self._controller.worker is None or run is None or run.outcome != "running" or run.stop_requested:
            return None
        return run

    def flush(self) -> None:
        """Send the live changes to the engine; note the others for the status."""
        run = self._running()
        if run is None or self._start is None:
            return
        try:
            now = self.settings()
        except (OptionError, ValueError) as exc:
            run.live_error = str(exc)
            self._controller.show_live()
            return
        changes, run.live_later = split_changes(self._start, self._sent, now, self._live)
        run.live_error = ""
        if changes:
            try:
                number = run.runner.update(changes)
            except (OptionError, ValueError) as exc:
                run.live_error = str(exc)
            else:
                if number is None:  # the engine has not started yet: again shortly
                    self._timer.start()
                    return
                from napari_nst._run.live import describe

                self._sent.update(changes)
                run.live_sent, run.live_pending = number, describe(changes)
        self._controller.show_live()
