"""The widget's "Run on" choice for stacks: a dask scheduler's workers make the frames.

The viewer first, then (in the real test) a LocalCluster started by the test, then the widget;
napari's process connects as a dask client only and never imports torch (the workers do).
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from nst_helpers import RUN_TIMEOUT, digest, errors, open_widget, tiny

pytestmark = pytest.mark.gui


@pytest.fixture
def timelapse():
    """(8, 36, 52) uint16: a pattern moving right by 2 px a frame (two chunks of 4 on two workers)."""
    y, x = np.mgrid[0:36, 0:52]
    return np.stack([((np.sin((x - 2 * t) / 5.0) + np.cos(y / 4.0) + 2) * 10000).astype(np.uint16) for t in range(8)])


def shown(w):
    """Not hidden by the widget (``visible`` is False anyway while the test's viewer is not shown)."""
    return not w.native.isHidden()


def _setup(viewer, timelapse, images, weights):
    c = viewer.add_image(timelapse, name="cells")
    s = viewer.add_image(images[1], name="paint", rgb=True)
    widget = open_widget(viewer)
    widget.content.value, widget.style.value = c, s
    tiny(widget, weights, steps=4, size=32)
    widget.slices.value = 0
    return widget


def test_run_on_is_offered_with_stacks_and_remembered(make_napari_viewer, images, timelapse, vgg16_weights):
    from napari_nst._qt.run_on import SCHEDULER, THIS_MACHINE

    viewer = make_napari_viewer()
    widget = _setup(viewer, timelapse, images, vgg16_weights)
    assert shown(widget.run_on) and widget.run_on.value == THIS_MACHINE and not shown(widget.scheduler_address)
    widget.run_on.value = SCHEDULER
    assert shown(widget.scheduler_address)
    widget.scheduler_address.value = "tcp://10.1.2.3:8786"
    widget.content.value = viewer.add_image(images[0], name="flat")
    assert not shown(widget.run_on) and not shown(widget.scheduler_address)  # one image: no stack
    again = open_widget(make_napari_viewer())  # a later session
    assert again.run_on.value == SCHEDULER and again.scheduler_address.value == "tcp://10.1.2.3:8786"


@pytest.mark.parametrize("address", ["", "tcp://127.0.0.1:1"])
def test_a_scheduler_that_cannot_be_reached_is_reported_at_once(
    make_napari_viewer, qtbot, images, timelapse, vgg16_weights, notifications, address
):
    from napari_nst._qt.run_on import SCHEDULER

    viewer = make_napari_viewer()
    widget = _setup(viewer, timelapse, images, vgg16_weights)
    before = [(lay.name, digest(lay.data)) for lay in viewer.layers]
    widget.run_on.value = SCHEDULER
    widget.scheduler_address.value = address
    started = widget.start()
    assert started == bool(address)  # no address: refused before any work
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)  # the connect timeout is a few seconds
    msg = errors(notifications)[-1]
    assert (
        ("Cannot reach the dask scheduler at 'tcp://127.0.0.1:1'" in msg) if address else ("no dask scheduler" in msg)
    )
    assert [(lay.name, digest(lay.data)) for lay in viewer.layers] == before  # the user's layers untouched
    assert "torch" not in sys.modules


def test_stack_on_a_local_cluster_fills_the_live_layer(
    make_napari_viewer, qtbot, images, timelapse, vgg16_weights, notifications
):
    import distributed

    from napari_nst._qt.run_on import SCHEDULER

    viewer = make_napari_viewer()  # the viewer (and its GL context) first
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    ) as cluster:
        widget = _setup(viewer, timelapse, images, vgg16_weights)
        widget.run_on.value = SCHEDULER
        widget.scheduler_address.value = cluster.scheduler_address
        assert widget.start()
        frames_seen: list[int] = []
        widget.worker.yielded.connect(lambda item: frames_seen.append(item.frame) if hasattr(item, "frame") else None)
        qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT)
    assert errors(notifications) == []
    out = viewer.layers[-1]
    assert out.data.shape == (8, 22, 32, 4) and (out.data[..., 3] == 1).all()  # every frame made
    assert np.isfinite(out.data).all() and out.data[..., :3].std() > 0
    meta = out.metadata["napari_nst"]
    assert meta["frames_done"] == 8 and meta["settings"]["run_on"] == cluster.scheduler_address
    assert frames_seen == list(range(8))  # one record per frame, in frame order
    assert "torch" not in sys.modules
