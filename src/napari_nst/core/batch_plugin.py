"""The dask worker plugin of :mod:`napari_nst.core.batch` (imports ``distributed``: an optional extra)."""

from __future__ import annotations

import os
import time
from typing import Any

from distributed import WorkerPlugin

from . import batch_task


class NetworkPlugin(WorkerPlugin):
    """On each worker, at registration and whenever a worker joins or restarts: torch's thread count
    and the weights file read once, so that no task pays for reading it (the network is then built
    once per worker by ``vgg.build_vgg``'s cache)."""

    name = "napari-nst-network"
    idempotent = False  # a new batch's plugin replaces the last one's (other weights or threads)

    def __init__(self, weights: str | None, threads_per_host: dict[str, int]) -> None:
        self.weights = weights
        #: dask threads of all workers on each host, so that torch's threads fill the host's cores
        #: without oversubscribing them (dask's nanny sets OMP_NUM_THREADS=1 otherwise)
        self.threads_per_host = threads_per_host

    def setup(self, worker: Any) -> None:
        host = str(worker.address).rsplit(":", 1)[0]
        busy = self.threads_per_host.get(host, worker.state.nthreads)
        batch_task.TORCH_THREADS["n"] = max(1, (os.cpu_count() or 1) // max(1, busy))
        t0 = time.perf_counter()
        try:
            from . import vgg

            vgg.resolve_model(None, self.weights)  # reads the weights file into vgg's in-memory cache
        except Exception:  # noqa: S110 (a bad weights file fails each task, with its message)
            pass
        batch_task.STATS["warmup_s"] = time.perf_counter() - t0
