"""The display throttle keeps napari's CPU time for showing a run under its share of the wall time."""

from __future__ import annotations

import pytest

from napari_nst._qt import throttle

pytestmark = pytest.mark.gui


@pytest.mark.parametrize(
    "cost, interval",
    [(0.03, 0.03 / throttle.DISPLAY_SHARE), (0.5, throttle.MAX_INTERVAL), (0.0005, throttle.UPDATE_INTERVAL)],
)
def test_interval_follows_napari_cpu_per_update(qtbot, monkeypatch, cost, interval):
    from qtpy.QtWidgets import QWidget

    parent = QWidget()
    qtbot.addWidget(parent)
    t = throttle.UpdateThrottle(parent, lambda: None)
    clock = iter([10.0, 10.0 + cost, 10.0 + 2 * cost, 10.0 + 3 * cost])
    monkeypatch.setattr(throttle.time, "process_time", lambda: next(clock))
    t.measure(0.0)  # the first update only starts the clock
    assert t.draw_cost is None and t.interval == throttle.UPDATE_INTERVAL
    for _ in range(3):
        t.measure(0.0)
    assert t.draw_cost == pytest.approx(cost)
    assert t.interval == pytest.approx(interval)
    assert throttle.UPDATE_INTERVAL <= t.interval <= throttle.MAX_INTERVAL
