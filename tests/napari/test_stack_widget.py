"""The widget's stack runs: "All slices along axis k", the nD layer filling in, Stop, Continue, memory.

Viewer first, then the widget (never torch first). Most tests use a fake stack engine (no child
process); one runs the real engine in its child process.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from nst_helpers import RUN_TIMEOUT, errors, open_widget, tiny

pytestmark = pytest.mark.gui


class FakeStackEngine:
    """Stands in for remote.StackEngineProcess: ``steps`` records per frame whose image is the
    frame darkened; remembers what it was given."""

    instances: list = []
    delay = 0.0

    def __init__(self, frames, style, *, start=0, previous=None, nice=0, **options):
        from napari_nst.core.api import prepare_stack

        self.source, self.style, self.opts = prepare_stack(frames, style, 0, **options)
        self.start, self.previous, self.cancelled = start, previous, False
        FakeStackEngine.instances.append(self)

    def cancel(self):
        self.cancelled = True

    def __iter__(self):
        from napari_nst.core.records import Progress

        n, steps = len(self.source), 2
        total = steps * (n - self.start)
        done = 0
        for t in range(self.start, n):
            frame = self.source[t]
            for step in range(1, steps + 1):
                if self.delay:
                    time.sleep(self.delay)
                if self.cancelled:
                    return
                done += 1
                yield Progress(
                    step=step,
                    total=steps,
                    losses={"total": 1.0 / done},
                    image=frame * 0.5,
                    shape=frame.shape[:2],
                    elapsed=0.01 * done,
                    device="cpu",
                    last_of_level=step == steps,
                    frame=t,
                    frames=n,
                    stack_step=done,
                    stack_total=total,
                )


@pytest.fixture
def fake_stack(monkeypatch):
    import napari_nst.core.process.client as remote

    FakeStackEngine.instances, FakeStackEngine.delay = [], 0.0
    monkeypatch.setattr(remote, "StackEngineProcess", FakeStackEngine)
    return FakeStackEngine


@pytest.fixture
def timelapse():
    """(4, 36, 52) uint16: a pattern moving right by 2 px a frame."""
    y, x = np.mgrid[0:36, 0:52]
    return np.stack([((np.sin((x - 2 * t) / 5.0) + np.cos(y / 4.0) + 2) * 10000).astype(np.uint16) for t in range(4)])


def _setup(make_napari_viewer, timelapse, images, weights):
    viewer = make_napari_viewer()
    c = viewer.add_image(timelapse, name="cells", scale=(1.0, 0.5, 0.25), translate=(0.0, 10.0, -3.0))
    s = viewer.add_image(images[1], name="paint", rgb=True)
    widget = open_widget(viewer)
    widget.content.value, widget.style.value = c, s
    tiny(widget, weights, steps=4, size=32)
    return viewer, widget, c


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT)


def test_slices_choice_offers_the_hidden_axis_only_for_stacks(make_napari_viewer, images, timelapse, vgg16_weights):
    viewer, widget, c = _setup(make_napari_viewer, timelapse, images, vgg16_weights)
    assert widget.stack.offered
    labels = [widget.slices.native.itemText(i) for i in range(widget.slices.native.count())]
    assert labels == ["This slice", "All slices along axis 0 (4)"]
    flat = viewer.add_image(images[0], name="flat")
    widget.content.value = flat
    assert not widget.stack.offered and widget.stack.axis() is None


def test_all_slices_fill_one_layer_over_the_content(
    make_napari_viewer, qtbot, images, timelapse, vgg16_weights, fake_stack, notifications
):
    viewer, widget, c = _setup(make_napari_viewer, timelapse, images, vgg16_weights)
    widget.slices.value = 0
    assert widget.start()
    _wait_idle(qtbot, widget)
    assert errors(notifications) == []
    out = viewer.layers[-1]
    assert out.rgb and out.data.shape == (4, 22, 32, 4) and np.isfinite(out.data).all()
    assert (out.data[..., 3] == 1).all()  # every frame made
    eng = fake_stack.instances[0]
    np.testing.assert_allclose(out.data[2, ..., :3], eng.source[2] * 0.5, atol=1e-6)

    # placed over the content: same world extent along the two shown axes, same frame axis
    def extent(layer):
        h, w = layer.data.shape[1:3]
        return np.array([layer.data_to_world((0, -0.5, -0.5)), layer.data_to_world((3, h - 0.5, w - 0.5))])

    np.testing.assert_allclose(extent(out), extent(c), atol=1e-6)
    meta = out.metadata["napari_nst"]
    assert meta["frames_done"] == 4 and meta["settings"]["stack"] == {"axis": 0, "frames": 4}
    assert "Done: 4 frames" in widget.status.value
    assert viewer.dims.current_step[0] == 3  # followed the frames
    assert "torch" not in sys.modules


def test_stop_keeps_frames_and_continue_resumes_at_the_next(
    make_napari_viewer, qtbot, images, timelapse, vgg16_weights, fake_stack, notifications
):
    viewer, widget, c = _setup(make_napari_viewer, timelapse, images, vgg16_weights)
    widget.slices.value = 0
    widget.follow_frame.value = False
    fake_stack.delay = 0.3
    shown = viewer.dims.current_step[0]
    assert widget.start()
    qtbot.waitUntil(lambda: widget._run.last is not None and widget._run.last.frame >= 2, timeout=RUN_TIMEOUT)
    widget.stop()
    _wait_idle(qtbot, widget)
    out = viewer.layers[-1]
    done = out.metadata["napari_nst"]["frames_done"]
    assert 2 <= done < 4 and "Continue resumes" in widget.status.value
    # frames not started are transparent (the frame being made when stopped shows its last preview)
    assert np.isfinite(out.data).all() and (out.data[done + 1 :, ..., 3] == 0).all()
    assert viewer.dims.current_step[0] == shown  # not followed
    fake_stack.delay = 0.0
    widget._on_continue_clicked()
    _wait_idle(qtbot, widget)
    eng = fake_stack.instances[-1]
    assert eng.start == done
    np.testing.assert_allclose(eng.previous, out.data[done - 1, ..., :3], atol=1e-6)
    assert viewer.layers[-1] is out and (out.data[..., 3] == 1).all()  # the same layer, filled
    assert out.metadata["napari_nst"]["frames_done"] == 4
    assert errors(notifications) == []


def test_a_stack_too_big_for_memory_is_refused_before_it_starts(
    make_napari_viewer, images, timelapse, vgg16_weights, fake_stack, notifications, monkeypatch
):
    from napari_nst._qt import stack_panel

    viewer, widget, c = _setup(make_napari_viewer, timelapse, images, vgg16_weights)
    monkeypatch.setattr(stack_panel, "host_available", lambda: 40_000)
    widget.slices.value = 0
    assert not widget.start()
    msg = errors(notifications)[-1]
    assert "needs about" in msg and "set Size to" in msg
    assert fake_stack.instances == [] and len(viewer.layers) == 2


def test_real_stack_run_in_the_child_process(
    make_napari_viewer, qtbot, images, timelapse, vgg16_weights, notifications
):
    viewer, widget, c = _setup(make_napari_viewer, timelapse[:3], images, vgg16_weights)
    widget.steps.value = 3
    widget.slices.value = 0
    assert widget.start()
    _wait_idle(qtbot, widget)
    assert errors(notifications) == []
    out = viewer.layers[-1]
    assert out.data.shape == (3, 22, 32, 4) and (out.data[..., 3] == 1).all()
    assert np.isfinite(out.data).all() and out.data[..., :3].std() > 0
    assert out.metadata["napari_nst"]["frames_done"] == 3
    assert "torch" not in sys.modules


def test_frame_steps_field_is_auto_until_set(make_napari_viewer, images, timelapse, vgg16_weights):
    viewer, widget, c = _setup(make_napari_viewer, timelapse, images, vgg16_weights)
    assert widget.options()["frame_steps"] is None and widget.options()["temporal_weight"] is None
    box = widget.frame_steps.native
    assert box.specialValueText() == "auto" and box.value() == box.minimum()  # the box reads "auto"
    widget.frame_steps.value = 7
    widget.temporal_weight.value = "50"
    assert widget.options()["frame_steps"] == 7 and widget.options()["temporal_weight"] == 50.0
    widget.form.reset("frame_steps")
    assert widget.options()["frame_steps"] is None


def test_a_labels_stack_gives_each_frame_its_regions_and_two_styles_reach_the_engine(
    make_napari_viewer, qtbot, images, timelapse, vgg16_weights, fake_stack, notifications
):
    viewer, widget, c = _setup(make_napari_viewer, timelapse, images, vgg16_weights)
    s2 = viewer.add_image(images[1][::-1].copy(), name="flipped", rgb=True)
    labels = np.zeros(timelapse.shape, np.int32)
    for t in range(4):
        labels[t, :, 13 * t : 13 * t + 13] = 1  # a band that moves right 13 px a frame
    lab = viewer.add_labels(labels, name="cells mask", scale=(1.0, 0.5, 0.25), translate=(0.0, 10.0, -3.0))
    widget.content.value = c  # picker lists changed with the new layers
    widget.add_style.clicked.emit()
    widget.styles_panel.pickers[1].value = s2
    widget.regions.value = lab
    rows = {w.name: w for w in widget.region_styles}
    rows["label_1"].value = "style 2: flipped"
    widget.slices.value = 0
    assert widget.start()
    _wait_idle(qtbot, widget)
    assert errors(notifications) == []
    eng = fake_stack.instances[0]
    assert isinstance(eng.style, list) and len(eng.style) == 2 and eng.opts.region_styles == {1: 1}
    regions = eng.opts.regions
    h, w = eng.source[0].shape[:2]
    assert regions.shape == (4, h, w)  # one label image per frame, at the working shape
    cols = [np.flatnonzero(regions[t].max(0)) for t in range(4)]  # the band's columns in each frame
    for t in range(4):
        expect = (np.arange(w) + 0.5) * 52 / w - 0.5  # content columns of the working pixels' centres
        inside = np.flatnonzero((np.rint(expect) >= 13 * t) & (np.rint(expect) < 13 * t + 13))
        np.testing.assert_array_equal(cols[t], inside)
    out = viewer.layers[-1]
    assert out.name == "cells × paint + flipped" and out.metadata["napari_nst"]["regions"]["layer"] == "cells mask"
