"""The machine part, Advanced > "Measure the fastest plan": measured in the engine process (this one
never imports torch), the table shown in the widget."""

from __future__ import annotations

import json
import sys

import pytest
from nst_helpers import RUN_TIMEOUT, errors, open_widget, tiny

pytestmark = pytest.mark.gui


def test_the_button_measures_in_the_engine_process_and_shows_the_table(
    make_napari_viewer, qtbot, monkeypatch, notifications
):
    from napari_nst._run import runner

    asked = []

    def fake(options):
        asked.append(options)
        return {"text": "plan  ms/pass\nfloat32, contiguous  123", "path": "/somewhere/plans.json", "plan": "x"}

    monkeypatch.setattr(runner, "measure_plans", fake)
    widget = open_widget(make_napari_viewer())
    widget.show_advanced.value = True
    assert not widget.measure_plan.native.isHidden() and not widget.plan_table.value
    assert widget.plan_table.native.isHidden()  # no empty row before a measurement
    widget.size.value = 320
    widget.measure_plan.clicked.emit()
    qtbot.waitUntil(lambda: widget.measure_plan.enabled, timeout=20_000)
    assert asked and asked[0]["size"] == 320 and asked[0]["device"] == widget.device.value
    assert "float32, contiguous  123" in widget.plan_table.value and "/somewhere/plans.json" in widget.plan_table.value
    assert not widget.plan_table.native.isHidden() and not errors(notifications)
    assert "torch" not in sys.modules


def test_a_failed_measurement_says_why(make_napari_viewer, qtbot, monkeypatch, notifications):
    from napari_nst._run import runner
    from napari_nst.core.errors import EngineProcessError

    def broken(options):
        raise EngineProcessError("the style-transfer process ended unexpectedly")

    monkeypatch.setattr(runner, "measure_plans", broken)
    widget = open_widget(make_napari_viewer())
    widget.show_advanced.value = True
    widget.measure_plan.clicked.emit()
    qtbot.waitUntil(lambda: widget.measure_plan.enabled, timeout=20_000)
    assert any("Could not measure the compute plan" in m for m in errors(notifications))
    assert widget.measure_plan.text == "Measure the fastest plan"


def test_a_real_measurement_keeps_the_table_for_later_runs(
    make_napari_viewer, qtbot, vgg16_weights, tmp_path, monkeypatch, notifications
):
    monkeypatch.setenv("NAPARI_NST_TUNE", "1")  # the engine process inherits it (conftest switches it off)
    widget = open_widget(make_napari_viewer())
    tiny(widget, vgg16_weights, size=48)
    widget.show_advanced.value = True
    widget.measure_plan.clicked.emit()
    qtbot.waitUntil(lambda: widget.measure_plan.enabled, timeout=RUN_TIMEOUT)
    assert not errors(notifications)
    table = widget.plan_table.value
    assert "size class 64 px" in table and "chosen for" in table and "auto" in table
    kept = json.loads((tmp_path / "config" / "plans.json").read_text())  # conftest's config folder
    assert kept["plans"][0]["key"]["size"] == 64
    assert "torch" not in sys.modules
