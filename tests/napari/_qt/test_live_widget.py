"""Settings changed during a widget run: live ones go to the engine once they rest (debounced),
the status says from which step they apply, the loss plot marks it; others wait for the next Run."""

from __future__ import annotations

import re
import sys

import pytest
from conftest import FakeEngine, FakeEngines
from nst_helpers import RUN_TIMEOUT, errors, open_widget, tiny, viewer_with_widget

pytestmark = pytest.mark.gui


class LiveFakeEngine(FakeEngine):
    """The fake engine with ``update``: remembers each, and the next record says it applied it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.updates: list[dict] = []
        self._pending: tuple[int, dict] | None = None

    def update(self, **options):
        self.updates.append(options)
        self._pending = (len(self.updates), options)
        return len(self.updates)

    def __iter__(self):
        for rec in super().__iter__():
            pending, self._pending = self._pending, None
            if pending is not None:
                rec.update_id, rec.update = pending
            yield rec


class LiveFakeEngines(FakeEngines):
    def __call__(self, job):
        if job.stack:
            return super().__call__(job)
        engine = LiveFakeEngine(job.content, job.style, **{**job.options, **self.behaviour})
        self.instances.append(engine)
        return engine


def test_live_changes_are_debounced_and_said(make_napari_viewer, qtbot, images, notifications):
    engines = LiveFakeEngines().configure(delay=0.05)
    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images, engines)
    widget.size.value, widget.steps.value = 32, 400
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: widget._run.last is not None, timeout=10_000)
    engine = engines.instances[-1]
    for value in (2.0, 5.0, 0.5):  # a slider dragged: one update, when it rests
        widget.style_strength.value = value
    widget.size.value = 64  # not live: waits for the next Run
    qtbot.waitUntil(lambda: bool(engine.updates), timeout=5_000)
    qtbot.waitUntil(lambda: "from step" in widget.status.value, timeout=5_000)
    qtbot.wait(400)
    assert len(engine.updates) == 1 and list(engine.updates[0]) == ["style_strength"]
    assert engine.updates[0]["style_strength"] == pytest.approx(0.5, rel=0.05)
    shown = f"Style strength ×{widget.style_strength.value:.2g}"  # the slider's own step near 0.5
    assert shown == f"Style strength ×{engine.updates[0]['style_strength']:.2g}"
    status = widget.status.value
    step = int(re.search(rf"{shown} from step (\d+)", status).group(1))
    assert "Size (px) applies at the next Run" in status
    assert widget.plot.marks == [(step, shown)]
    widget.tv_weight.value = "abc"  # a value the engine cannot take: said, not sent
    qtbot.waitUntil(lambda: "Not applied: TV weight" in widget.status.value, timeout=5_000)
    widget.tv_weight.value = "0.1"
    qtbot.waitUntil(lambda: "TV weight 0.1 from step" in widget.status.value, timeout=5_000)
    assert engine.updates[1] == {"tv_weight": 0.1}
    widget.run.clicked.emit()  # Stop
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert "Changed during the run: TV weight 0.1 from step" in widget.status.value
    notes = viewer.layers[-1].metadata["napari_nst"]["notes"]
    assert any(n.startswith(f"changed during the run: {shown} from step {step}") for n in notes)
    widget.style_strength.value = 2.0  # no run: nothing is sent
    qtbot.wait(400)
    assert len(engine.updates) == 2
    assert not errors(notifications)


def test_changing_strength_during_a_real_run_reaches_the_engine(
    make_napari_viewer, qtbot, images, vgg16_weights, notifications, monkeypatch
):
    from napari_nst._run import runner

    monkeypatch.setattr(runner, "PREVIEW_INTERVAL", 0.0)
    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images)
    tiny(widget, vgg16_weights, steps=100_000, size=32)
    widget.run.clicked.emit()
    run = widget._run
    qtbot.waitUntil(lambda: run.last is not None and run.last.step >= 2, timeout=RUN_TIMEOUT)
    widget.style_strength.value = 4.0
    qtbot.waitUntil(lambda: bool(run.live_marks), timeout=60_000)  # a record from the engine's child said so
    step, what = run.live_marks[0]
    assert what == f"Style strength ×{widget.style_strength.value:.2g}" == "Style strength ×4"
    qtbot.waitUntil(lambda: f"Style strength ×4 from step {step}" in widget.status.value, timeout=10_000)
    assert widget.plot.marks == [(step, what)]
    assert run.last.step >= step
    widget.run.clicked.emit()  # Stop
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert not errors(notifications)
    assert "torch" not in sys.modules


def test_a_stack_run_takes_no_live_change(make_napari_viewer, qtbot, images, notifications):
    import numpy as np

    engines = LiveFakeEngines().configure(delay=0.5)
    viewer = make_napari_viewer()
    content, style = images
    c = viewer.add_image(np.stack([content] * 3), name="stack")
    s = viewer.add_image(style, name="style", rgb=True)
    widget = open_widget(viewer, engines)
    widget.content.value, widget.style.value = c, s
    widget.size.value, widget.steps.value = 32, 4
    widget.slices.value = 0  # every slice along axis 0
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: widget._run is not None and widget._run.last is not None, timeout=10_000)
    widget.style_strength.value = 3.0
    qtbot.waitUntil(lambda: "Style strength applies at the next Run" in widget.status.value, timeout=5_000)
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
