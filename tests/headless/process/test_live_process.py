"""Options changed during a run in the engine's child process (``EngineProcess.update``): checked in
this process, relayed to the child, applied before its next evaluation; a stack refuses them."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_nst.core.errors import OptionError
from napari_nst.core.objective.weights import strength_factor
from napari_nst.core.process import client as remote
from napari_nst.core.process.client import EngineProcess, StackEngineProcess, shutdown_engines


@pytest.fixture(autouse=True)
def _no_warm_engine_left(monkeypatch):
    monkeypatch.setattr(remote, "CANCEL_GRACE", 60.0)
    shutdown_engines()
    yield
    shutdown_engines()


def test_an_update_from_another_thread_reaches_the_child(content, style, fast):
    proc = EngineProcess(content, style, **{**fast, "steps": 100_000})
    records = iter(proc)
    first = next(records)
    sent: list[int] = []
    t = threading.Thread(target=lambda: sent.append(proc.update(style_strength=4, tv_weight=0.25)))
    t.start()
    t.join()
    assert sent == [1]
    for rec in records:
        if rec.update is not None:
            break
    assert rec.update == {"style_strength": 4.0, "tv_weight": 0.25} and rec.update_id == 1
    assert rec.step > first.step and rec.image is not None and "tv" in rec.weights
    assert rec.weights["style"] == pytest.approx(strength_factor(4) * first.weights["style"])
    with pytest.raises(OptionError, match="size cannot change during a run"):
        proc.update(size=64)
    with pytest.raises(OptionError, match="style_strength must be between"):
        proc.update(style_strength=0)
    nxt = next(records)
    assert nxt.update is None and np.isfinite(nxt.losses["total"])
    proc.cancel()
    assert list(records) == []


def test_an_update_before_the_run_starts_applies_to_its_first_evaluation(content, style, fast):
    proc = EngineProcess(content, style, **{**fast, "steps": 3})
    assert proc.update(content_weight=3.0) == 1
    recs = list(proc)
    assert recs[0].update == {"content_weight": 3.0} and recs[0].update_id == 1
    assert [r.weights["content"] for r in recs] == [3.0, 3.0, 3.0]
    assert all(r.update is None for r in recs[1:])


def test_a_stack_process_refuses_updates(content, style, fast):
    proc = StackEngineProcess(np.stack([content, content]), style, **fast)
    with pytest.raises(OptionError, match="a stack run does not take options"):
        proc.update(style_strength=2)
