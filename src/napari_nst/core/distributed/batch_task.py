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

from napari_nst.core.distributed.cluster import TORCH_THREADS, worker_address
from napari_nst.core.options import Options
from napari_nst.core.records import Pastiche


@dataclass
class TaskResult:
    """What one task sends back: the pastiche (float32 (H, W, 3) in [0, 1]) or the error.

    ``interrupted`` (Ctrl-C or SIGTERM in this process): ``pastiche`` is the newest one, of
    ``step`` of ``total`` (None before the first evaluation) and ``stop`` the exception to
    re-raise once it is recorded.
    """

    status: str  # "done", "failed" or "interrupted"
    image: np.ndarray | None = None
    error: str = ""
    worker: str = "local"
    seconds: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)
    model: str = ""
    weights_file: str = ""
    device: str = ""
    step: int = 0
    total: int = 0
    pastiche: Pastiche | None = field(default=None, repr=False)
    stop: BaseException | None = field(default=None, repr=False)


def run_item(content: str | np.ndarray, style: np.ndarray, opts: Options, resume: Pastiche | None = None) -> TaskResult:
    """Stylise one content image (a file path, read here, or an array) with ``style``;
    ``resume``: continue it from an interrupted run's pastiche (:func:`napari_nst.iter_stylize`).

    Never raises for a bad item: the error comes back as a ``failed`` result with its message
    (a killed worker, by contrast, is dask's to handle: the task is rerun elsewhere). Ctrl-C or
    SIGTERM (KeyboardInterrupt) gives an ``interrupted`` result with the newest pastiche; the
    caller records it and re-raises ``stop``.
    """
    t0, where, records = time.perf_counter(), worker_address(), None
    try:
        from napari_nst.core.api import iter_stylize
        from napari_nst.core.encoder import vgg

        records = iter_stylize(content, style, resume=resume, **_kwargs(opts))
        if TORCH_THREADS["n"]:
            import torch

            torch.set_num_threads(TORCH_THREADS["n"])  # per thread: OpenMP settings are thread-local
        image, rec = _last_image(records)
        weights_file = vgg._weights_key(opts.weights)[0] or "torchvision"
        model = vgg.resolve_model(opts.model, opts.weights)
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
            step=rec.step,
            total=rec.total,
        )
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM in this process: keep the newest pastiche
        newest = None
        if records is not None:
            records.close()
            newest = records.last()
        return TaskResult(
            "interrupted",
            image=None if newest is None else newest.image,
            error="" if newest is None else f"interrupted at step {newest.step}/{newest.total}",
            worker=where,
            seconds=time.perf_counter() - t0,
            losses={} if newest is None else dict(newest.losses),
            step=0 if newest is None else newest.step,
            total=0 if newest is None else newest.total,
            pastiche=newest,
            stop=exc,
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


def _last_image(records: Any) -> tuple[np.ndarray, Any]:
    image = rec = None
    for rec in records:
        if rec.image is not None:
            image = rec.image
    assert image is not None and rec is not None  # the last record always carries the image
    return image, rec
