"""The no-Qt parts of a run (napari_nst._run): inputs, plan, runner, sink. napari's models, no viewer window."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from nst_helpers import digest, world_extent

from napari_nst._run.inputs import read_input, shrink, snapshot
from napari_nst._run.plan import plan_2d
from napari_nst.core.image.arrays import resized_shape


def _image(data, **kw):
    from napari.layers import Image

    return Image(data, **kw)


# --------------------------------------------------------------------------- inputs


def test_shrink_is_an_exact_box_filter():
    rng = np.random.default_rng(0)
    a = rng.random((12, 18, 3))
    out = shrink(a, (4, 6))  # factor 3: the mean of each 3x3 block
    np.testing.assert_allclose(out, a.reshape(4, 3, 6, 3, 3).mean(axis=(1, 3)))
    odd = rng.random((37, 53))
    small = shrink(odd, (10, 14))  # non-integer factors: every input pixel counted by its share
    assert small.shape == (10, 14) and small.dtype == odd.dtype
    np.testing.assert_allclose(small.mean(), odd.mean(), rtol=1e-12)
    u8 = np.full((30, 40), 200, np.uint8)
    assert shrink(u8, (7, 9)).dtype == np.uint8 and (shrink(u8, (7, 9)) == 200).all()
    mask = np.zeros((8, 8), bool)
    assert shrink(mask, (4, 4)) is mask  # the conversion refuses it with its own message


def test_snapshot_is_plain_data_read_off_the_layer():
    stack = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    layer = _image(stack, scale=(5, 1, 1), name="stack")
    snap = snapshot(layer, point=(10.0, 0.0, 0.0))  # world z = 10 -> data index 2
    assert not any(callable(getattr(snap, f)) for f in snap.__dataclass_fields__)  # no bound methods
    np.testing.assert_allclose(snap.position, [2.0, 0.0, 0.0])
    layer.scale = (1, 1, 1)  # the user changes the layer afterwards: the snapshot keeps what was shown
    layer.contrast_limits = (0, 10)
    np.testing.assert_allclose(snap.position, [2.0, 0.0, 0.0])
    assert snap.contrast_limits != tuple(layer.contrast_limits)
    image, note = read_input(snap, (1, 2), 30, "content")
    np.testing.assert_allclose(
        image[..., 0], (stack[2] - snap.contrast_limits[0]) / np.ptp(snap.contrast_limits), atol=1e-6
    )
    assert "axis 0 = 2" in note


def test_read_input_sends_the_working_size_from_the_smallest_fitting_level():
    base = np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    levels = [base, base[::2, ::2], base[::4, ::4], base[::8, ::8]]  # long edges 400, 200, 100, 50
    layer = _image(levels, multiscale=True, rgb=True, name="big")
    before = [digest(lv) for lv in levels]
    image, note = read_input(snapshot(layer), (0, 1), 64, "content")
    assert image.shape == (*resized_shape((300, 400), 64), 3) and image.dtype == np.float32
    assert note is not None and "resolution level 2" in note  # 100 px >= 64 > 50 px
    assert [digest(lv) for lv in levels] == before
    small, note = read_input(snapshot(_image(base[:40, :50], rgb=True)), (0, 1), 64, "style")
    assert small.shape == (40, 50, 3) and note is None  # smaller than the working size: sent as is


# --------------------------------------------------------------------------- plan


def test_plan_2d_is_one_task_over_the_displayed_slice():
    content = snapshot(_image(np.zeros((4, 36, 52), np.float32), name="cells"), point=(1.0, 0.0, 0.0))
    style = snapshot(_image(np.zeros((40, 60, 3), np.uint8), rgb=True, name="paint"), point=(1.0, 0.0, 0.0))
    plan = plan_2d(content, style, None, {"size": 32, "steps": 7, "style_scale": 0.5}, {}, 3, (1, 2))
    (task,) = plan.tasks
    assert plan.output_name == "cells × paint" and plan.steps == 7
    assert task.axes == (1, 2) and task.full_shape == (36, 52) and task.final_shape == resized_shape((36, 52), 32)
    assert task.style_axes == (0, 1) and task.style_long_edge == 16
    transposed = plan_2d(content, style, content, {"size": 32, "steps": 7}, {}, 3, (2, 1))
    assert transposed.tasks[0].full_shape == (52, 36) and transposed.output_name.endswith("(continued)")


# --------------------------------------------------------------------------- runner


def test_run_task_sends_working_size_images_and_asks_for_throttled_previews(fake_engine):
    from napari_nst._run.runner import PREVIEW_INTERVAL, Notes, ProcessRunner, run_task

    FakeEngine = fake_engine()
    big = np.random.default_rng(2).integers(0, 255, (600, 800), dtype=np.uint8)
    content = snapshot(_image(big, name="big"))
    style = snapshot(_image(np.zeros((40, 60, 3), np.uint8), rgb=True, name="paint"))
    plan = plan_2d(content, style, None, {"size": 64, "steps": 3}, {}, 2, (0, 1))
    gen = run_task(ProcessRunner(), plan.tasks[0])
    items = []
    try:
        while True:
            items.append(next(gen))
    except StopIteration as end:
        result = end.value
    assert result == ("finished", None)
    assert isinstance(items[0], Notes) and [r.step for r in items[1:]] == [1, 2, 3]
    fake = FakeEngine.instances[0]
    assert fake.content.shape == (48, 64, 3)  # not 600 x 800
    assert fake.options["preview_interval"] == PREVIEW_INTERVAL
    assert "torch" not in sys.modules


def test_run_task_returns_errors_instead_of_raising():
    from napari_nst._run.runner import ProcessRunner, run_task

    content = snapshot(_image(np.zeros((8, 8), bool), name="mask"))
    plan = plan_2d(content, content, None, {"size": 32, "steps": 3}, {}, 2, (0, 1))
    gen = run_task(ProcessRunner(), plan.tasks[0])
    with pytest.raises(StopIteration) as end:
        next(gen)
    outcome, exc = end.value.value
    assert outcome == "failed" and "astype" in str(exc)


# --------------------------------------------------------------------------- sink


def test_layer_sink_places_every_level_over_the_content():
    from napari.components import ViewerModel

    from napari_nst._run.sink import META_KEY, LayerSink, run_metadata

    viewer = ViewerModel()
    layer = viewer.add_image(np.zeros((300, 451)), scale=(0.3, 0.7), translate=(12.0, -4.0), rotate=25, name="c")
    style = snapshot(_image(np.zeros((40, 60, 3), np.uint8), rgb=True, name="s"))
    plan = plan_2d(snapshot(layer), style, None, {"size": 256, "steps": 3}, {"size": 256}, 2, (0, 1))
    sink, task = LayerSink(viewer, plan), plan.tasks[0]
    meta = run_metadata(plan, "running")
    for working in [(43, 64), (85, 128), task.final_shape]:  # coarse to fine
        sink.show(task, np.zeros((*working, 3), np.float32), working, meta)
        np.testing.assert_allclose(world_extent(sink.layer), world_extent(layer), atol=1e-9)
    assert len(viewer.layers) == 2 and sink.layer.name == "c × s"
    assert sink.layer.metadata[META_KEY]["settings"] == {"size": 256}
    viewer.layers.remove(sink.layer)
    sink.show(task, np.ones((*task.final_shape, 3), np.float32), task.final_shape, meta)
    sink.set_metadata(run_metadata(plan, "stopped"))
    assert len(viewer.layers) == 1 and not sink.alive()  # a deleted pastiche is not brought back


def test_run_parts_import_no_qt_napari_or_torch():
    import subprocess

    code = (
        "import sys, napari_nst._run.inputs, napari_nst._run.plan, napari_nst._run.runner, napari_nst._run.sink, "
        "napari_nst._run.state, napari_nst._run.status, napari_nst._settings, napari_nst._devices\n"
        "print([m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'torch') "
        "if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
