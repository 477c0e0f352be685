"""Real runs of the Style Transfer widget (tiny images, a few steps, the engine in a child process)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from nst_helpers import RUN_TIMEOUT, digest, errors, open_widget, tiny, viewer_with_widget, world_extent

pytestmark = pytest.mark.gui


def test_run_paints_pastiche_over_content(make_napari_viewer, qtbot, images, vgg16_weights, notifications, monkeypatch):
    from napari_nst._qt import throttle
    from napari_nst._run import runner

    # an image with every record and no display throttle, so that the updates cannot all be
    # coalesced into one on a fast idle machine (the throttle is measured in benchmarks/)
    monkeypatch.setattr(runner, "PREVIEW_INTERVAL", 0.0)
    monkeypatch.setattr(throttle, "UPDATE_INTERVAL", 0.0)
    monkeypatch.setattr(throttle.UpdateThrottle, "measure", lambda self, t0: None)
    viewer = make_napari_viewer()  # the user's order: napari first, then the widget
    content, style = images
    c = viewer.add_image(
        content, name="cells", scale=(0.5, 0.25), translate=(10.0, -3.0), contrast_limits=(5000, 50000)
    )
    s = viewer.add_image(style, name="paint", rgb=True)
    before = digest(c.data), digest(s.data), tuple(c.contrast_limits), c.scale.tolist()
    widget = open_widget(viewer)
    widget.content.value, widget.style.value = c, s
    tiny(widget, vgg16_weights, steps=24, size=64)
    widget.content_layers.value, widget.style_layers.value = "relu4_2", "relu1_1, relu3_1, relu5_1"

    seen_layers = []
    changes = []

    def on_insert(event):
        seen_layers.append(event.value)
        event.value.events.data.connect(lambda e: changes.append(1))

    viewer.layers.events.inserted.connect(on_insert)
    widget.run.clicked.emit()
    assert widget.worker is not None
    assert widget.run.text == "Stop"
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT)

    assert widget.run.text == "Run"
    assert len(seen_layers) == 1, notifications
    out = seen_layers[0]
    assert out.name == "cells × paint"
    # finished: held as 8-bit RGB (napari's own PNG writer takes it), float32 kept for Continue
    assert out.rgb and out.data.dtype == np.uint8 and out.data.shape[-1] == 3
    assert tuple(out.contrast_limits) == (0, 255)
    from napari_nst._run.layer_view import full_precision

    exact = full_precision(out)
    assert exact is not None and exact.dtype == np.float32 and 0.0 <= exact.min() and exact.max() <= 1.0
    np.testing.assert_array_equal(out.data, np.round(exact * 255).astype(np.uint8))
    assert max(out.data.shape[:2]) == 64
    np.testing.assert_allclose(world_extent(out), world_extent(c), atol=1e-9)
    assert len(changes) >= 2, "the pastiche layer's data changed fewer than twice after it was added"
    meta = out.metadata["napari_nst"]
    assert meta["status"] == "finished"
    assert meta["step"] == meta["total"] == 24
    assert set(meta["losses"]) >= {"content", "style", "total"}
    assert meta["device"] == "cpu" and meta["elapsed"] > 0
    assert meta["settings"]["model"] == "vgg16" and meta["settings"]["size"] == 64
    assert (digest(c.data), digest(s.data), tuple(c.contrast_limits), c.scale.tolist()) == before
    assert not [n for n in notifications if "ERROR" in n[0].upper()]
    assert "torch" not in sys.modules


def test_stop_keeps_last_pastiche_and_the_warm_engine(make_napari_viewer, qtbot, images, vgg16_weights, notifications):
    from napari_nst.core.process import client as remote

    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images)
    tiny(widget, vgg16_weights, steps=100_000, size=64)
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: len(viewer.layers) == 3, timeout=RUN_TIMEOUT)
    run = widget._run
    qtbot.waitUntil(lambda: run.last is not None and run.last.step >= 3, timeout=RUN_TIMEOUT)
    widget.run.clicked.emit()  # Stop
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    out = viewer.layers[-1]
    assert widget.run.text == "Run" and widget.run.enabled
    assert out.metadata["napari_nst"]["status"] == "stopped"
    step = out.metadata["napari_nst"]["step"]
    assert 3 <= step < 100_000
    assert out.data.shape[-1] == 3 and np.isfinite(out.data).all()
    # Stop ended the run, not the engine process: it waits, warm, for the next Run
    assert run.proc.returncode is None and run.proc.pid in remote.idle_engines()
    assert "Stopped" in widget.status.value
    assert not errors(notifications)
    assert "torch" not in sys.modules


def test_continue_starts_from_the_pastiche(make_napari_viewer, qtbot, images, vgg16_weights, notifications):
    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images)
    tiny(widget, vgg16_weights, steps=4)
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT)
    first = viewer.layers[-1]
    first_data = first.data.copy()
    widget.continue_run.clicked.emit()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT)
    second = viewer.layers[-1]
    assert second is not first and second.name.endswith("(continued)")
    meta = second.metadata["napari_nst"]
    assert meta["status"] == "finished" and meta["settings"]["init"] == f"layer: {first.name}"
    np.testing.assert_array_equal(first.data, first_data)  # the earlier pastiche is kept as it was
    assert not errors(notifications)


def test_closing_viewer_during_run_kills_engine(make_napari_viewer, qtbot, images, vgg16_weights):
    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images)
    tiny(widget, vgg16_weights, steps=100_000, size=64)
    widget.run.clicked.emit()
    run = widget._run
    qtbot.waitUntil(lambda: run.last is not None, timeout=RUN_TIMEOUT)
    proc = run.proc._proc
    viewer.close()
    qtbot.waitUntil(lambda: proc.poll() is not None, timeout=30_000)  # killed, though warm engines are kept
    from napari_nst.core.process import client as remote

    assert remote.idle_engines() == []  # and no warm engine process is left behind
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)  # raises if the worker never ends


def test_offline_without_weights_says_how_to_fix(
    make_napari_viewer, qtbot, images, notifications, monkeypatch, tmp_path
):
    # no cached torchvision weights and no network (a proxy that refuses every connection)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images)
    widget.size.value, widget.steps.value, widget.device.value = 32, 2, "cpu"
    assert widget.weights.value is None  # empty = torchvision's weights
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT)
    msgs = errors(notifications)
    assert len(msgs) == 1, notifications
    assert "weights" in msgs[0].lower() and "NAPARI_NST_WEIGHTS" in msgs[0] and "Weights field" in msgs[0]
    assert widget.run.text == "Run" and len(viewer.layers) == 2


def test_torchvision_built_for_another_torch_says_what_to_install(
    make_napari_viewer, qtbot, images, notifications, monkeypatch, tmp_path
):
    """The engine process imports a torchvision that fails as one built for another torch does
    (RuntimeError: operator torchvision::nms does not exist; its metadata says 0.27.0)."""
    import os
    import re
    from importlib import metadata

    nms = "operator torchvision::nms does not exist"
    fake = tmp_path / "site"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text(f"raise RuntimeError({nms!r})\n")
    (fake / "torchvision-0.27.0.dist-info").mkdir()
    (fake / "torchvision-0.27.0.dist-info" / "METADATA").write_text("Name: torchvision\nVersion: 0.27.0\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake), *filter(None, [os.environ.get("PYTHONPATH")])]))
    torch_version = metadata.version("torch")  # torch is not imported in napari's process
    want = f"0.{int(torch_version.split('.')[1]) + 15}"
    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images)
    widget.size.value, widget.steps.value, widget.device.value = 32, 2, "cpu"
    assert widget.weights.value is None  # empty = torchvision's weights
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT)
    msgs = errors(notifications)
    assert len(msgs) == 1, notifications
    head = rf"torchvision 0\.27\.0 does not match torch {re.escape(torch_version)}(\+\w+)?: install matching versions"
    assert re.match(head, msgs[0]), msgs[0]  # torch's local build tag (+cpu, +cu130) is not in its metadata
    assert f'pip install "torchvision=={want}.*"' in msgs[0] and nms in msgs[0]
    assert "Weights field" in msgs[0]  # and how to do without torchvision
    assert widget.run.text == "Run" and len(viewer.layers) == 2
    assert "torch" not in sys.modules
