"""Fixtures for the napari widget tests (run in their own pytest process: torch is never imported here).

``make_napari_viewer`` comes from napari's pytest plugin; pytest-xvfb starts a virtual X server.
Every test reproduces the user's order: the viewer exists first, then the widget.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
HED_WEIGHTS = ROOT.parent / "shared" / "weights" / "vgg16-hed-features.pth"

_RANDOM_WEIGHTS = """
import sys, torch
from napari_nst.core.vgg import VGGFeatures, layer_names
torch.manual_seed(0)
net = VGGFeatures("vgg16", [layer_names("vgg16")[-1]])
torch.save({f"features.{k}": v for k, v in net.layers.state_dict().items()}, sys.argv[1])
"""


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    """Never read or write the user's real widget settings; never use a user's weights variable."""
    monkeypatch.setenv("NAPARI_NST_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("NAPARI_NST_WEIGHTS", raising=False)
    # no warm engine process per opened widget (tests that want one ask for it)
    monkeypatch.setenv("NAPARI_NST_PREWARM", "0")
    # engines use the static plan rules, not a plan measured on this machine (a test asks for it)
    monkeypatch.setenv("NAPARI_NST_TUNE", "0")


@pytest.fixture(scope="session")
def vgg16_weights(tmp_path_factory) -> Path:
    """VGG16 weights without a download: the shared trained ones, else seeded random ones.

    The random ones are written by a child process, so that this process never imports torch.
    """
    if HED_WEIGHTS.exists():
        return HED_WEIGHTS
    path = tmp_path_factory.mktemp("weights") / "vgg16-random.pth"
    subprocess.run([sys.executable, "-c", _RANDOM_WEIGHTS, str(path)], check=True, timeout=300)
    return path


@pytest.fixture
def images():
    """Small content (uint16 grayscale, odd shape) and style (uint8 RGB) images."""
    y, x = np.mgrid[0:36, 0:52]
    content = ((np.sin(x / 5.0) + np.cos(y / 4.0) + 2) * 10000).astype(np.uint16)
    content[10:20, 15:30] = 60000
    rng = np.random.default_rng(0)
    stripes = ((np.sin((np.mgrid[0:40, 0:40][1] + 2 * np.mgrid[0:40, 0:40][0]) / 3.0) + 1) * 120).astype(np.uint8)
    style = np.stack([stripes, 255 - stripes, rng.integers(0, 255, (40, 40), dtype=np.uint8)], axis=-1)
    return content, style


@pytest.fixture
def notifications(monkeypatch):
    """Every napari notification shown during the test, as (severity, message)."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def record(notification):
        seen.append((str(notification.severity), str(notification.message)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


class FakeEngine:
    """Stands in for EngineProcess in tests of the widget's own logic (no child process, no torch).

    Yields ``steps`` records whose image is the content darkened step by step, sleeping ``delay``
    seconds before each; then raises ``fail`` if given.
    """

    instances: list = []

    def __init__(self, content, style, *, min_interval=0.0, nice=0, fail=None, delay=0.0, **options):
        from napari_nst.core.api import prepare

        self.content, self.style, self.opts = prepare(content, style, **options)
        self.options = options
        self.fail, self.delay = fail, delay
        self.cancelled = False
        FakeEngine.instances.append(self)

    def cancel(self):
        self.cancelled = True

    def __iter__(self):
        from napari_nst.core.images import resized_shape
        from napari_nst.core.records import Progress

        h, w = resized_shape(self.content.shape[:2], self.opts.size)
        rows = np.linspace(0, self.content.shape[0] - 1, h).astype(int)
        cols = np.linspace(0, self.content.shape[1] - 1, w).astype(int)
        base = self.content[rows][:, cols]
        n = self.opts.steps
        for step in range(1, n + 1):
            if self.cancelled:
                return
            if self.delay:
                time.sleep(self.delay)
                if self.cancelled:
                    return
            yield Progress(
                step=step,
                total=n,
                losses={"content": 1.0 / step, "style": 2.0 / step, "total": 3.0 / step},
                image=(base * (1 - step / (2 * n))).astype(np.float32),
                shape=(h, w),
                elapsed=0.01 * step,
                weights={"content": 1.0, "style": 1.0},
                device="cpu",
                last_of_level=step == n,
            )
        if self.fail is not None:
            raise self.fail


@pytest.fixture
def fake_engine(monkeypatch):
    """Replace the engine process by :class:`FakeEngine`; returns a function to set its behaviour."""
    import functools

    import napari_nst.core.remote as remote

    FakeEngine.instances = []
    behaviour: dict = {}

    def factory(*args, **kwargs):
        return FakeEngine(*args, **{**kwargs, **behaviour})

    monkeypatch.setattr(remote, "EngineProcess", factory)

    def configure(**kw):
        behaviour.clear()
        behaviour.update(kw)
        return FakeEngine

    return functools.partial(configure)
