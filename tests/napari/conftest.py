"""Fixtures for the napari widget tests (run in their own pytest process: torch is never imported here).

``make_napari_viewer`` comes from napari's pytest plugin; pytest-xvfb starts a virtual X server.
Every test reproduces the user's order: the viewer exists first, then the widget.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # nst_helpers, for the tests in the folders below
HED_WEIGHTS = ROOT.parent / "shared" / "weights" / "vgg16-hed-features.pth"

_RANDOM_WEIGHTS = """
import sys, torch
from napari_nst.core.encoder.vgg import VGGFeatures, layer_names
torch.manual_seed(0)
net = VGGFeatures("vgg16", [layer_names("vgg16")[-1]])
torch.save({f"features.{k}": v for k, v in net.layers.state_dict().items()}, sys.argv[1])
"""


def pytest_configure(config: pytest.Config) -> None:
    # A shell starts a background job (`cmd &` without job control) with SIGINT ignored, and every
    # process it starts inherits that: the Ctrl-C tests' processes would never see their SIGINT.
    # Python's own handler here makes the processes the tests start begin with the default again.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    """Never read or write the user's real widget settings; never use a user's weights variable."""
    monkeypatch.setenv("NAPARI_NST_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("NAPARI_NST_WEIGHTS", raising=False)
    # no warm engine process per opened widget (tests that want one ask for it)
    monkeypatch.setenv("NAPARI_NST_PREWARM", "0")
    # no instant preview layer on picking layers (tests/napari/test_preview_widget.py switches it on)
    monkeypatch.setenv("NAPARI_NST_PREVIEW", "0")
    # engines use the static plan rules, not a plan measured on this machine (a test asks for it)
    monkeypatch.setenv("NAPARI_NST_TUNE", "0")


@pytest.fixture(scope="session")
def vgg16_weights(tmp_path_factory) -> Path:
    """VGG16 weights without a download: the shared trained ones, else seeded random ones.

    The random ones are written by a child process, so that this process never imports torch.
    """
    if HED_WEIGHTS.exists():
        return HED_WEIGHTS
    if os.environ.get("NAPARI_NST_REQUIRE_SHARED") == "1":
        pytest.fail(f"needs ../shared beside the repository: {HED_WEIGHTS} is not there (NAPARI_NST_REQUIRE_SHARED=1)")
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

    def __init__(self, content, style, *, nice=0, fail=None, delay=0.0, **options):
        from napari_nst.core.api import prepare

        self.content, self.style, self.opts = prepare(content, style, **options)
        self.options = options
        self.fail, self.delay = fail, delay
        self.cancelled = self.killed = False

    def cancel(self):
        self.cancelled = True

    def kill(self):
        self.killed = True
        self.cancel()

    def __iter__(self):
        from napari_nst.core.image.arrays import resized_shape
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


class FakeStackEngine(FakeEngine):
    """Stands in for StackEngineProcess: 2 records per frame whose image is the frame darkened;
    remembers what it was given (``source``: the frames, ``start``, ``previous``)."""

    def __init__(self, frames, style, *, start=0, previous=None, nice=0, delay=0.0, **options):
        from napari_nst.core.api import prepare_stack

        self.source, self.style, self.opts = prepare_stack(frames, style, 0, **options)
        self.options = options
        self.start, self.previous, self.delay, self.fail = start, previous, delay, None
        self.cancelled = self.killed = False

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


class FakeEngines:
    """The engine factory of the widget tests (``StyleTransferWidget(viewer, engines=...)``): a
    :class:`FakeEngine` for one image, a :class:`FakeStackEngine` for a stack; ``instances``: every
    engine it made, in order; :meth:`configure` sets how the next ones behave (``fail``, ``delay``)."""

    def __init__(self):
        self.instances: list[FakeEngine] = []
        self.behaviour: dict = {}

    def configure(self, **behaviour):
        self.behaviour = dict(behaviour)
        return self

    def __call__(self, job):
        if job.stack:
            delay = self.behaviour.get("delay", 0.0)
            engine = FakeStackEngine(
                job.content, job.style, start=job.start, previous=job.previous, delay=delay, **job.options
            )
        else:
            engine = FakeEngine(job.content, job.style, **{**job.options, **self.behaviour})
        self.instances.append(engine)
        return engine


@pytest.fixture
def fake_engine():
    """The fake engine factory, to pass to the widget (``open_widget(viewer, engines=fake_engine)``)
    or a runner."""
    return FakeEngines()
