"""Show the newest record no more often than napari can afford to draw it (an adaptive Qt timer).

The cost of showing a run is everything napari's process does for it: applying the new image,
drawing the canvas (with Mesa's software OpenGL on VMs and remote desktops that is most of it),
the status and the loss plot. It is measured as napari's own CPU time between two updates
(``time.process_time``: this process only, not the engine's), and the interval between updates
is set so that this stays under :data:`DISPLAY_SHARE` of the wall time (5 %): fewer updates on a slow
display or while the user is busy in the viewer, never fewer than one every :data:`MAX_INTERVAL`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

#: the main thread applies the newest pending record at most this often (seconds)
UPDATE_INTERVAL = 0.05
#: ... and at least this often, whatever it costs (seconds)
MAX_INTERVAL = 2.0
#: the share of the wall time napari's process may spend showing the run
DISPLAY_SHARE = 0.05
#: weight of the previous measurement when smoothing the cost of an update
DRAW_SMOOTHING = 0.7


class UpdateThrottle:
    """Calls ``flush`` soon after :meth:`request`, leaving the display time to draw the last update."""

    def __init__(self, parent: Any, flush: Callable[[], None]) -> None:
        from qtpy.QtCore import QTimer

        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(flush)
        self.draw_cost: float | None = None  #: napari's CPU seconds per update, smoothed
        self.interval = UPDATE_INTERVAL  #: seconds between updates, as chosen
        self._next = 0.0
        self._cpu: float | None = None

    @property
    def active(self) -> bool:
        return self._timer.isActive()

    def request(self) -> None:
        """Flush soon (no-op while a flush is already scheduled)."""
        if not self._timer.isActive():
            self.schedule()

    def schedule(self) -> None:
        wait = max(UPDATE_INTERVAL, self._next - time.perf_counter())
        self._timer.start(int(wait * 1000))

    def drawn_after(self, t0: float) -> None:
        """An update was applied at ``t0``: measure once the event loop is free again (it has drawn)."""
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, partial(self.measure, t0))

    def measure(self, t0: float) -> None:
        """Napari's CPU time since the previous update sets the interval to the next one."""
        cpu = time.process_time()
        if self._cpu is not None:
            cost = cpu - self._cpu
            prev = self.draw_cost
            self.draw_cost = cost if prev is None else DRAW_SMOOTHING * prev + (1 - DRAW_SMOOTHING) * cost
            self.interval = min(MAX_INTERVAL, max(UPDATE_INTERVAL, self.draw_cost / DISPLAY_SHARE))
        self._cpu = cpu
        self._next = time.perf_counter() + self.interval
