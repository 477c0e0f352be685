"""Show the newest record no more often than napari can draw it (an adaptive Qt timer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, Optional

#: the main thread applies the newest pending record at most this often (seconds)
UPDATE_INTERVAL = 0.05
#: weight of the previous measurement when smoothing the time an update takes to draw
DRAW_SMOOTHING = 0.7
#: wait this many draw times between updates: about a third of the main thread goes to the pastiche
DRAW_COST_FACTOR = 2.0


class UpdateThrottle:
    """Calls ``flush`` soon after :meth:`request`, leaving the display time to draw the last update."""

    def __init__(self, parent: Any, flush: Callable[[], None]) -> None:
        from qtpy.QtCore import QTimer

        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(flush)
        self.draw_cost: Optional[float] = None
        self._next = 0.0

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
        """An update was applied at ``t0``: measure when the event loop is free again (it has drawn)."""
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, partial(self.measure, t0))

    def measure(self, t0: float) -> None:
        cost = time.perf_counter() - t0
        prev = self.draw_cost
        self.draw_cost = cost if prev is None else DRAW_SMOOTHING * prev + (1 - DRAW_SMOOTHING) * cost
        self._next = time.perf_counter() + DRAW_COST_FACTOR * self.draw_cost
