"""Opening the widget starts a warm engine process for its settings (torch and weights load early)."""

from __future__ import annotations

import sys

import pytest
from nst_helpers import open_widget

pytestmark = pytest.mark.gui


def test_opening_the_widget_prewarms_an_engine(make_napari_viewer, monkeypatch):
    from napari_nst._run import runner
    from napari_nst.core.process import client as remote

    calls = []
    monkeypatch.setenv(runner.PREWARM_ENV, "1")
    monkeypatch.setattr(remote, "prewarm", lambda **kw: calls.append(kw))
    viewer = make_napari_viewer()
    widget = open_widget(viewer)
    assert len(calls) == 1
    kw = calls[0]
    assert kw["nice"] == runner.ENGINE_NICE  # the same priority as the runs, so that they reuse it
    assert kw["device"] == widget.device.value and "size" not in kw
    assert "torch" not in sys.modules


def test_prewarm_can_be_switched_off(monkeypatch):
    from napari_nst._run import runner
    from napari_nst.core.process import client as remote

    monkeypatch.setenv(runner.PREWARM_ENV, "0")
    monkeypatch.setattr(remote, "prewarm", lambda **kw: pytest.fail("prewarmed"))
    assert runner.prewarm({"device": "cpu"}) is False
