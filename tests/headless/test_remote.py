"""The engine in a child process: same records, errors re-raised, cancel kills it at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_nst.core.errors import ImageError, WeightsError
from napari_nst.core.remote import EngineProcess, iter_stylize_process


def test_records_stream_back(content, style, fast):
    recs = list(iter_stylize_process(content, style, **{**fast, "steps": 3}))
    assert [r.step for r in recs] == [1, 2, 3]
    assert recs[-1].image.shape == (23, 32, 3) and recs[-1].image.dtype == np.float32


def test_bad_input_raised_in_the_parent_before_a_child_starts(style, fast):
    with pytest.raises(ImageError, match="the content image"):
        EngineProcess(np.zeros((3, 3)), style, **fast)


def test_child_errors_keep_their_type(content, style, fast, tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(WeightsError, match="no weights file"):
        list(EngineProcess(content, style, **{**fast, "weights": str(missing)}))


def test_cancel_from_another_thread_ends_quietly(content, style, fast):
    proc = EngineProcess(content, style, **{**fast, "steps": 10_000})
    seen = []
    for rec in proc:
        seen.append(rec.step)
        if rec.step == 2:
            threading.Thread(target=proc.cancel).start()
    assert proc.cancelled and 2 <= seen[-1] < 10_000
    assert proc.returncode is not None  # the child is gone


def test_closing_the_generator_kills_the_child(content, style, fast):
    proc = EngineProcess(content, style, **{**fast, "steps": 10_000})
    it = iter(proc)
    next(it)
    it.close()
    assert proc.returncode is not None


def test_throttled_images_keep_the_last(content, style, fast):
    recs = list(EngineProcess(content, style, min_interval=3600, **{**fast, "steps": 4}))
    assert recs[-1].image is not None
    assert sum(r.image is not None for r in recs) <= 2
