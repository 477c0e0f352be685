"""Worker side of :mod:`napari_nst.core.batch`: the task that stylises one image, and the network cache.

This module is imported on dask workers (and, without ``distributed``, in the caller's process for a
sequential batch). Torch is imported only inside the functions that run the engine.

One network per worker process: ``engine.run`` builds its network with ``build_vgg`` on every run,
which costs about a second on a 2-core CPU (random initialisation of 13 convolutions, then
the finiteness check of every weight) even when the weights file is already in memory
(``vgg._cached_features``). :func:`install_network_cache` makes the worker's ``engine`` use
:func:`cached_build_vgg` instead, which builds each network once per worker process, keyed by
(device, model, layers, weights file and its mtime/size, pooling). The network is frozen
(``requires_grad=False``, eval mode), so concurrent tasks in one worker share it safely.
(``engine.run`` taking a built network would make this swap unnecessary; engine.py is unchanged.)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .options import Options

#: at most this many networks kept per worker process (a batch uses one)
MAX_NETWORKS = 2

_NETS: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()
_LOCAL = threading.local()
#: what this process's cache did: networks built, runs served from the cache
STATS: dict[str, float] = {"builds": 0, "hits": 0, "warmup_s": 0.0}
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


def cached_build_vgg(model: str | None, layers: list[str], *, weights: Any = None, pooling: str = "max") -> Any:
    """``vgg.build_vgg``, built once per process for each key (see the module's docstring)."""
    from . import vgg

    key = (getattr(_LOCAL, "device", None), model, tuple(layers), vgg._weights_key(weights), pooling)
    with _LOCK:
        net = _NETS.get(key)
        if net is None:
            if len(_NETS) >= MAX_NETWORKS:
                _NETS.clear()
            net = _NETS[key] = vgg.build_vgg(model, layers, weights=weights, pooling=pooling)
            STATS["builds"] += 1
        else:
            STATS["hits"] += 1
    return net


def install_network_cache() -> None:
    """Make this process's ``engine.run`` build each network once (for a worker process's life)."""
    from . import engine

    engine.build_vgg = cached_build_vgg  # type: ignore[attr-defined]


def uninstall_network_cache() -> None:
    """Undo :func:`install_network_cache` and free the cached networks."""
    from . import engine, vgg

    engine.build_vgg = vgg.build_vgg  # type: ignore[attr-defined]
    with _LOCK:
        _NETS.clear()


@contextmanager
def network_cache() -> Iterator[None]:
    """The cache for the length of a ``with`` block (a sequential batch in the caller's process)."""
    from . import engine

    before = engine.build_vgg  # type: ignore[attr-defined]
    install_network_cache()
    try:
        yield
    finally:
        engine.build_vgg = before  # type: ignore[attr-defined]
        with _LOCK:
            _NETS.clear()


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
        from . import vgg
        from .api import prepare

        c, s, o = prepare(content, style, **_kwargs(opts))
        _LOCAL.device = o.device
        if TORCH_THREADS["n"]:
            import torch

            torch.set_num_threads(TORCH_THREADS["n"])  # per thread: OpenMP settings are thread-local
        image, rec = _last_image(c, s, o)
        weights_file = vgg._weights_key(o.weights)[0] or "torchvision"
        model = vgg.resolve_model(o.model, o.weights)
        return TaskResult("done", image=image, worker=where, seconds=time.perf_counter() - t0,
                          weights=dict(rec.weights), losses=dict(rec.losses), model=model,
                          weights_file=weights_file, device=rec.device)
    except Exception as exc:  # one bad item must not end the batch
        msg = " ".join(str(exc).split())
        if isinstance(content, str) and not os.path.exists(content) and where != "local":
            msg += " (workers read content files by path: they need to see the same files as the client)"
        return TaskResult("failed", error=f"{type(exc).__name__}: {msg}", worker=where,
                          seconds=time.perf_counter() - t0)


def _kwargs(opts: Options) -> dict[str, Any]:
    return {name: getattr(opts, name) for name in Options.names()}


def _last_image(c: np.ndarray, s: np.ndarray, o: Options) -> tuple[np.ndarray, Any]:
    from .api import _run

    image = rec = None
    for rec in _run(c, s, o):
        if rec.image is not None:
            image = rec.image
    assert image is not None and rec is not None  # the last record always carries the image
    return image, rec
