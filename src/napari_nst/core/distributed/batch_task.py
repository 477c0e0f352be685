"""Worker side of :mod:`napari_nst.core.distributed.batch`: the task that stylises one image.

This module is imported on dask workers (and, without ``distributed``, in the caller's process for a
sequential batch). Torch is imported only inside the functions that run the engine.

One network per worker process: ``vgg.build_vgg`` keeps the network it built for a weights file
and layer set, so a worker builds it for its first task only (:func:`stats` counts it). The
network is frozen (``requires_grad=False``, eval mode), so concurrent tasks in one worker share it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_nst.core.options import Options

#: the worker plugin's warm-up: seconds to read the weights file into memory
STATS: dict[str, float] = {"warmup_s": 0.0}
#: torch threads per task in this process (set by the worker plugin; None: leave torch's setting)
TORCH_THREADS: dict[str, int | None] = {"n": None}


@dataclass
class TaskResult:
    """What one task sends back: the pastiche (float32 (H, W, 3) in [0, 1]) or the error."""

    status: str  # "done" or "failed"
    image: np.ndarray | None = None
    error: str = ""
    worker: str = "local"
    seconds: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)
    model: str = ""
    weights_file: str = ""
    device: str = ""


def stats() -> dict[str, float]:
    """This process's networks built, builds saved by the cache, and warm-up seconds."""
    from napari_nst.core.encoder import vgg

    return {**vgg.NETWORK_STATS, **STATS}


def reset_stats() -> None:
    from napari_nst.core.encoder import vgg

    vgg.NETWORK_STATS.update(builds=0, hits=0)


def worker_address() -> str:
    """The dask worker's address when running on one, else ``local``."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def run_item(content: str | np.ndarray, style: np.ndarray, opts: Options) -> TaskResult:
    """Stylise one content image (a file path, read here, or an array) with ``style``.

    Never raises for a bad item: the error comes back as a ``failed`` result with its message
    (a killed worker, by contrast, is dask's to handle: the task is rerun elsewhere).
    """
    t0 = time.perf_counter()
    where = worker_address()
    try:
        from napari_nst.core.encoder import vgg
        from napari_nst.core.inputs import prepare

        c, s, o = prepare(content, style, **_kwargs(opts))
        if TORCH_THREADS["n"]:
            import torch

            torch.set_num_threads(TORCH_THREADS["n"])  # per thread: OpenMP settings are thread-local
        image, rec = _last_image(c, s, o)
        weights_file = vgg._weights_key(o.weights)[0] or "torchvision"
        model = vgg.resolve_model(o.model, o.weights)
        return TaskResult(
            "done",
            image=image,
            worker=where,
            seconds=time.perf_counter() - t0,
            weights=dict(rec.weights),
            losses=dict(rec.losses),
            model=model,
            weights_file=weights_file,
            device=rec.device,
        )
    except Exception as exc:  # one bad item must not end the batch
        msg = " ".join(str(exc).split())
        if isinstance(content, str) and not os.path.exists(content) and where != "local":
            msg += " (workers read content files by path: they need to see the same files as the client)"
        return TaskResult(
            "failed", error=f"{type(exc).__name__}: {msg}", worker=where, seconds=time.perf_counter() - t0
        )


def _kwargs(opts: Options) -> dict[str, Any]:
    return {name: getattr(opts, name) for name in Options.names()}


def _last_image(c: np.ndarray, s: np.ndarray, o: Options) -> tuple[np.ndarray, Any]:
    from napari_nst.core.optim.engine import run

    image = rec = None
    for rec in run(c, s, o):
        if rec.image is not None:
            image = rec.image
    assert image is not None and rec is not None  # the last record always carries the image
    return image, rec
