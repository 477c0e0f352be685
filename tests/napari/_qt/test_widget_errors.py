"""Every way a run can go wrong ends in a notification the user can act on, and an idle widget.

The engine is replaced by a fake (tests/napari/conftest.py: FakeEngine) where a real failure cannot
be produced on demand (out of GPU memory, a NaN objective, a crashed process).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from nst_helpers import digest, errors, open_widget, viewer_with_widget

from napari_nst._run.inputs import shrink
from napari_nst.core.errors import DeviceMemoryError, EngineProcessError, NonFiniteLossError
from napari_nst.core.image.arrays import resized_shape

pytestmark = pytest.mark.gui


def setup(make_napari_viewer, images, engines=None, **kw):
    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images, engines)
    widget.size.value, widget.steps.value = kw.get("size", 32), kw.get("steps", 5)
    return viewer, widget, c, s


def idle(widget):
    return widget.worker is None and widget.run.text == "Run" and widget.run.enabled


def test_empty_picker(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    widget = open_widget(viewer)
    assert widget.content.value is None and widget.style.value is None
    widget.run.clicked.emit()
    msgs = errors(notifications)
    assert len(msgs) == 1 and "Pick a content image" in msgs[0] and "Open Sample" in msgs[0]
    assert idle(widget)


def test_same_layer_twice(make_napari_viewer, images, notifications):
    viewer = make_napari_viewer()
    layer = viewer.add_image(images[0], name="only")
    widget = open_widget(viewer)
    assert widget.content.value is layer and widget.style.value is layer
    widget.run.clicked.emit()
    msgs = errors(notifications)
    assert len(msgs) == 1 and "same layer" in msgs[0] and "'only'" in msgs[0]
    assert idle(widget) and len(viewer.layers) == 1


def test_bad_number_in_a_field(make_napari_viewer, images, notifications, fake_engine):
    viewer, widget, c, s = setup(make_napari_viewer, images, fake_engine)
    widget.style_weight.value = "lots"
    widget.run.clicked.emit()
    msgs = errors(notifications)
    assert len(msgs) == 1 and "Style weight" in msgs[0] and "1e5" in msgs[0]
    assert idle(widget)


def test_bad_layer_name_in_advanced(make_napari_viewer, qtbot, images, notifications, fake_engine):
    viewer, widget, c, s = setup(make_napari_viewer, images, fake_engine)
    widget.style_layers.value = "relu1_1, relu9_9"  # validated by the engine (in the worker here)
    fake_engine.configure(fail=ValueError("unknown style layer ['relu9_9'] for vgg19; valid names are: conv1_1, ..."))
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: idle(widget), timeout=10_000)
    msgs = errors(notifications)
    assert len(msgs) == 1 and "relu9_9" in msgs[0] and "valid names" in msgs[0]


def test_out_of_memory_suggests_a_size(make_napari_viewer, qtbot, images, notifications, fake_engine):
    viewer, widget, c, s = setup(make_napari_viewer, images, fake_engine)
    fake_engine.configure(
        fail=DeviceMemoryError("CUDA ran out of memory at size 32 (needs 9 GiB, 2 GiB free)", suggested_size=16)
    )
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: idle(widget), timeout=10_000)
    msgs = errors(notifications)
    assert len(msgs) == 1 and "Out of memory" in msgs[0] and "Set Size to 16" in msgs[0]
    assert viewer.layers[-1].metadata["napari_nst"]["status"] == "failed"


def test_nan_objective_keeps_last_finite_image(make_napari_viewer, qtbot, images, notifications, fake_engine):
    viewer, widget, c, s = setup(make_napari_viewer, images, fake_engine, steps=3)
    last = np.full((23, 32, 3), 0.25, np.float32)
    fake_engine.configure(fail=NonFiniteLossError("the objective became nan at step 4; lower style_weight", last))
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: idle(widget), timeout=10_000)
    msgs = errors(notifications)
    assert len(msgs) == 1 and "lower style_weight" in msgs[0]
    from napari_nst._run.layer_view import full_precision

    # the last finite pastiche is kept (as 8-bit for saving, its float32 for Continue)
    np.testing.assert_array_equal(full_precision(viewer.layers[-1]), last)
    np.testing.assert_array_equal(viewer.layers[-1].data, np.round(last * 255).astype(np.uint8))


def test_crashed_engine_process(make_napari_viewer, qtbot, images, notifications, fake_engine):
    viewer, widget, c, s = setup(make_napari_viewer, images, fake_engine)
    fake_engine.configure(fail=EngineProcessError("the style-transfer process ended unexpectedly (exit code -9)"))
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: idle(widget), timeout=10_000)
    msgs = errors(notifications)
    assert len(msgs) == 1 and "exit code -9" in msgs[0]


@pytest.mark.parametrize("which", ["content", "style", "pastiche"])
def test_layer_deleted_during_run(make_napari_viewer, qtbot, images, notifications, fake_engine, which):
    viewer, widget, c, s = setup(make_napari_viewer, images, fake_engine, steps=10_000)
    fake_engine.configure(delay=0.02)
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: len(viewer.layers) == 3, timeout=10_000)
    pastiche = viewer.layers[-1]
    viewer.layers.remove({"content": c, "style": s, "pastiche": pastiche}[which])
    qtbot.waitUntil(lambda: idle(widget), timeout=10_000)
    warnings = [m for sev, m in notifications if "warn" in sev.lower()]
    assert len(warnings) == 1 and "deleted" in warnings[0], notifications
    assert not errors(notifications)
    if which != "pastiche":
        assert pastiche in viewer.layers and pastiche.metadata["napari_nst"]["status"] == "stopped"
    assert "deleted" in widget.status.value


def test_run_pressed_twice_starts_one_worker(make_napari_viewer, qtbot, images, fake_engine):
    viewer, widget, c, s = setup(make_napari_viewer, images, fake_engine, steps=10_000)
    fake_engine.configure(delay=0.02)
    assert widget.start() is True
    worker = widget.worker
    assert widget.start() is False  # a second start while running does nothing
    assert widget.worker is worker
    widget.continue_run.clicked.emit()  # disabled while running, and ignored
    assert widget.worker is worker
    widget.run.clicked.emit()  # the same button now stops
    qtbot.waitUntil(lambda: idle(widget), timeout=10_000)
    assert len(fake_engine.instances) == 1 and fake_engine.instances[0].cancelled


def test_nd_layer_uses_displayed_slice(make_napari_viewer, qtbot, images, notifications, fake_engine):
    viewer = make_napari_viewer()
    content, style = images
    stack = np.stack([content, content // 2, content // 3])  # (3, 36, 52) uint16
    c = viewer.add_image(stack, name="stack", contrast_limits=(0, 65535), scale=(5, 2, 2))
    s = viewer.add_image(style, name="style", rgb=True)
    viewer.dims.set_point(0, 5.0)  # world z = 5 -> data index 1
    widget = open_widget(viewer, fake_engine)
    widget.content.value, widget.style.value = c, s
    widget.size.value, widget.steps.value = 32, 3
    before = digest(c.data)
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: idle(widget), timeout=10_000)
    infos = [m for sev, m in notifications if "info" in sev.lower()]
    assert any("2-D slice" in m and "axis 0 = 1" in m for m in infos), notifications
    seen = fake_engine.instances[0].content
    h, w = resized_shape((36, 52), 32)
    # slice 1, shrunk to the working size before it was sent
    np.testing.assert_allclose(seen[..., 0], shrink(content // 2, (h, w)) / 65535, atol=1e-6)
    out = viewer.layers[-1]
    assert out.ndim == 2 and tuple(out.scale) == pytest.approx((2 * 36 / h, 2 * 52 / w))
    assert digest(c.data) == before
    assert "torch" not in sys.modules
