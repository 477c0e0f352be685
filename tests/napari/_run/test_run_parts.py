"""The no-Qt parts of a run (napari_nst._run): inputs, plan, runner, sink. napari's models, no viewer window."""

from __future__ import annotations

import sys

import numpy as np
from nst_helpers import digest, world_extent

from napari_nst._run.inputs import read_input, shrink, snapshot
from napari_nst._run.plan import RunRequest, build_plan
from napari_nst.core.image.arrays import resized_shape


def _image(data, **kw):
    from napari.layers import Image

    return Image(data, **kw)


def plan_of(content, style, options, point=(0.0, 0.0), displayed=(0, 1), **kw):
    """The plan of a run of the layer ``content`` styled by the layer ``style`` (or several)."""
    styles = list(style) if isinstance(style, list) else [style]
    return build_plan(RunRequest(content, styles, options, kw.pop("settings", {}), **kw), point, displayed)


def _drain(gen):
    """Everything a runner's generator yields, and what it returns."""
    items = []
    try:
        while True:
            items.append(next(gen))
    except StopIteration as end:
        return items, end.value


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


def test_a_2d_plan_is_one_task_over_the_displayed_slice():
    content = _image(np.zeros((4, 36, 52), np.float32), name="cells")
    style = _image(np.zeros((40, 60, 3), np.uint8), rgb=True, name="paint")
    point = (1.0, 0.0, 0.0)
    plan = plan_of(content, style, {"size": 32, "steps": 7, "style_scale": 0.5}, point, (1, 2))
    (task,) = plan.tasks
    assert plan.output_name == "cells × paint" and plan.steps == 7 and plan.stack_axis is None
    assert task.axes == (1, 2) and task.full_shape == (36, 52) and task.final_shape == resized_shape((36, 52), 32)
    assert [p.axes for p in task.styles] == [(0, 1)] and task.style_long_edge(0) == 16
    np.testing.assert_allclose(task.content.position, [1.0, 0.0, 0.0])
    transposed = plan_of(content, style, {"size": 32, "steps": 7}, point, (2, 1), init=content)
    assert transposed.tasks[0].full_shape == (52, 36) and transposed.output_name.endswith("(continued)")
    assert transposed.tasks[0].init is not None and transposed.tasks[0].init_axes == (2, 1)


def test_a_stack_plan_is_one_task_per_slice_with_the_same_styles():
    from napari.components import ViewerModel

    viewer = ViewerModel()
    content = viewer.add_image(np.zeros((4, 36, 52), np.float32), name="cells", scale=(2.0, 1.0, 1.0))
    style = viewer.add_image(np.zeros((40, 60, 3), np.uint8), rgb=True, name="paint")
    other = viewer.add_image(np.zeros((30, 30, 3), np.uint8), rgb=True, name="dots")
    labels = np.zeros((4, 36, 52), np.int32)
    for t in range(4):
        labels[t, :, t] = 1  # column t in frame t
    lab = viewer.add_labels(labels, name="mask", scale=(2.0, 1.0, 1.0))
    parts = viewer.add_labels(np.ones((40, 60), np.int32), name="parts")
    opts = {"size": 32, "steps": 7, "frame_steps": 3, "init": "noise", "region_styles": {1: 1}}
    plan = plan_of(
        content, [style, other], opts, (2.0, 0.0, 0.0), (1, 2), regions=lab, style_regions=[parts, None], stack_axis=0
    )
    assert plan.stack_axis == 0 and len(plan.tasks) == 4 and plan.settings["stack"] == {"axis": 0, "frames": 4}
    assert plan.output_name == "cells × paint + dots" and plan.steps == 7 + 3 * 3
    for t, task in enumerate(plan.tasks):
        assert task.index == (t,) and task.content.position[0] == t and task.options["init"] == "content"
        assert task.styles == plan.tasks[0].styles and task.style_names == ["paint", "dots"]
        assert task.styles[0].regions is not None and task.styles[1].regions is None
        assert task.regions is not None and task.regions.origin[0] == t  # frame t's own labels
    resumed = plan_of(content, style, opts, (2.0, 0.0, 0.0), (1, 2), stack_axis=0, start=2, previous=content)
    assert resumed.start == 2 and resumed.previous is not None and resumed.steps == 3 * 2


# --------------------------------------------------------------------------- runner


def test_the_runner_sends_working_size_images_and_asks_for_throttled_previews(fake_engine):
    from napari_nst._run.runner import PREVIEW_INTERVAL, Notes, Runner

    big = np.random.default_rng(2).integers(0, 255, (600, 800), dtype=np.uint8)
    plan = plan_of(_image(big, name="big"), _image(np.zeros((40, 60, 3), np.uint8), rgb=True), {"size": 64, "steps": 3})
    items, result = _drain(Runner(fake_engine).run(plan))
    assert result == ("finished", None)
    assert isinstance(items[0], Notes) and [r.step for r in items[1:]] == [1, 2, 3]
    (fake,) = fake_engine.instances
    assert fake.content.shape == (48, 64, 3)  # not 600 x 800
    assert fake.options["preview_interval"] == PREVIEW_INTERVAL
    assert "torch" not in sys.modules


def test_the_runner_runs_a_stack_in_one_engine_and_ends_it_when_cancelled(fake_engine):
    from napari_nst._run.runner import Notes, Runner

    frames = np.random.default_rng(3).integers(0, 255, (3, 36, 52), dtype=np.uint8)
    style = _image(np.zeros((40, 60, 3), np.uint8), rgb=True)
    plan = plan_of(_image(frames), style, {"size": 32, "steps": 4}, (0.0, 0.0, 0.0), (1, 2), stack_axis=0)
    runner = Runner(fake_engine)
    gen = runner.run(plan)
    assert isinstance(next(gen), Notes) and next(gen).frame == 0
    (fake,) = fake_engine.instances
    assert fake.source.frames.shape == (3, 22, 32, 3) and fake.options["steps"] == 4  # every slice, one engine
    runner.kill()  # from any thread: the engine is told at once
    assert fake.killed and fake.cancelled
    items, result = _drain(gen)
    assert items == [] and result == ("stopped", None)


def test_the_runner_returns_errors_instead_of_raising(fake_engine):
    from napari_nst._run.runner import Runner

    mask = _image(np.zeros((8, 8), bool), name="mask")
    items, (outcome, exc) = _drain(Runner(fake_engine).run(plan_of(mask, mask, {"size": 32, "steps": 3})))
    assert items == [] and outcome == "failed" and "astype" in str(exc)
    assert fake_engine.instances == []  # refused before an engine was made


# --------------------------------------------------------------------------- sink


def test_layer_sink_places_every_level_over_the_content():
    from napari.components import ViewerModel

    from napari_nst._run.sink import META_KEY, LayerSink, run_metadata

    viewer = ViewerModel()
    layer = viewer.add_image(np.zeros((300, 451)), scale=(0.3, 0.7), translate=(12.0, -4.0), rotate=25, name="c")
    style = _image(np.zeros((40, 60, 3), np.uint8), rgb=True, name="s")
    plan = plan_of(layer, style, {"size": 256, "steps": 3}, settings={"size": 256})
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
        "import sys, napari_nst._run.inputs, napari_nst._run.plan, napari_nst._run.job, napari_nst._run.runner, "
        "napari_nst._run.sink, napari_nst._run.stack, napari_nst._run.state, napari_nst._run.status, "
        "napari_nst._settings, napari_nst._devices\n"
        "print([m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'torch') "
        "if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
