"""Fixtures for the headless tests: offline weights and small images.

No test downloads anything: weights are seeded random VGG weights written to a temporary file,
or the real trained VGG16 convolutions in ../shared/weights/.

``NAPARI_NST_TEST_PRECISION=float32`` makes this process see a CPU without fast bfloat16 (as an
AVX2 CPU is), so ``precision="auto"`` runs float32; with ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2`` the kernels are AVX2's too (docs/testing.md). Engines in child
processes (test_remote) see the real CPU, unless ONEDNN_MAX_CPU_ISA is set.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))  # as the benchmarks read it
HED_WEIGHTS = SHARED / "weights" / "vgg16-hed-features.pth"
IMAGES = SHARED / "images"


def pytest_configure(config: pytest.Config) -> None:
    # A shell starts a background job (`cmd &` without job control) with SIGINT ignored, and every
    # process it starts inherits that: the Ctrl-C tests' processes would never see their SIGINT.
    # Python's own handler here makes the processes the tests start begin with the default again.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _random_state(model: str, seed: int = 0) -> dict:
    import torch

    from napari_nst.core.encoder.vgg import VGGFeatures, layer_names

    torch.manual_seed(seed)
    net = VGGFeatures(model, [layer_names(model)[-1]])
    return {f"features.{k}": v.clone() for k, v in net.layers.state_dict().items()}


@pytest.fixture(scope="session")
def vgg16_random(tmp_path_factory) -> Path:
    """Seeded random vgg16 weights, ``features.*`` keys only."""
    import torch

    path = tmp_path_factory.mktemp("weights") / "vgg16-random-features.pth"
    torch.save(_random_state("vgg16"), path)
    return path


@pytest.fixture(scope="session")
def vgg19_random_full(tmp_path_factory) -> Path:
    """Seeded random vgg19 weights with ``features.*`` and (small, fake) ``classifier.*`` keys."""
    import torch

    state = _random_state("vgg19", seed=1)
    state["classifier.0.weight"] = torch.zeros(4, 4)
    state["classifier.0.bias"] = torch.zeros(4)
    path = tmp_path_factory.mktemp("weights") / "vgg19-random-full.pth"
    torch.save(state, path)
    return path


def needs_shared(path: Path) -> Path:
    """``path`` (a file under ../shared), or skip the test saying so; where ../shared must be there
    (``NAPARI_NST_REQUIRE_SHARED=1``, as .ci/run sets) its absence fails the test instead."""
    if path.exists():
        return path
    why = f"needs ../shared beside the repository: {path} is not there"
    if os.environ.get("NAPARI_NST_REQUIRE_SHARED") == "1":
        pytest.fail(why + " (NAPARI_NST_REQUIRE_SHARED=1)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def hed_weights() -> Path:
    return needs_shared(HED_WEIGHTS)


@pytest.fixture
def content() -> np.ndarray:
    """A 40x56 uint8 RGB picture with structure (gradients and a square)."""
    y, x = np.mgrid[0:40, 0:56]
    img = np.stack([x * 4, y * 6, (x + y) * 2], axis=-1).astype(np.uint8)
    img[10:25, 15:35] = (250, 30, 30)
    return img


@pytest.fixture
def style() -> np.ndarray:
    """A 48x48 uint8 RGB stripe texture."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:48]
    stripes = ((np.sin((x + 2 * y) / 3.0) + 1) * 120).astype(np.uint8)
    return np.stack([stripes, 255 - stripes, rng.integers(0, 255, (48, 48), dtype=np.uint8)], axis=-1)


@pytest.fixture
def fast(vgg16_random) -> dict:
    """Options for a quick run on random vgg16 weights."""
    return dict(size=32, steps=4, model="vgg16", weights=str(vgg16_random), device="cpu")


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """No test may download weights: a real download attempt fails the test loudly."""
    import torch.hub

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(autouse=True)
def _static_plans(monkeypatch):
    """Runs use the static rules of core/compute/device.py, not a plan measured on this machine (timing
    would make the tests slower and their plan depend on the load): ``NAPARI_NST_TUNE=0``. The
    tuner's own tests switch it on with a faked timer and a temporary config folder
    (tests/headless/test_tune.py)."""
    monkeypatch.setenv("NAPARI_NST_TUNE", "0")


@pytest.fixture
def kernel_free_estimates(monkeypatch):
    """On a float32 CPU (AVX2), memory estimates without the Winograd kernels a measured plan may
    keep: the tests run the static plan (``_static_plans``), which keeps none. Counted, they let
    the whole image without them fit before any tile does, so no cap could leave tiles."""
    import torch

    from napari_nst.core.compute import memory
    from napari_nst.core.compute.device import autocast_dtype

    if autocast_dtype("auto", torch.device("cpu")) is None:
        monkeypatch.setattr(memory, "winograd_bytes", lambda model: 0)


@pytest.fixture(autouse=True)
def _simulated_precision(monkeypatch):
    """``NAPARI_NST_TEST_PRECISION=float32``: the CPU's fast-bf16 check says no, as on AVX2."""
    wanted = os.environ.get("NAPARI_NST_TEST_PRECISION", "")
    if wanted not in ("", "auto", "float32"):
        raise pytest.UsageError(f"NAPARI_NST_TEST_PRECISION must be 'float32' or unset, got {wanted!r}")
    if wanted == "float32":
        from napari_nst.core.compute import device

        monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)


@pytest.fixture(scope="module")
def client():
    """A dask client of a LocalCluster of two worker processes with one thread each (what a
    LocalCluster of this 2-core machine has); one per test module. Skips without ``distributed``."""
    import logging

    distributed = pytest.importorskip("distributed")  # the testing extra brings it

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c
