"""The dask worker plugin of :mod:`napari_nst.core.distributed.batch` (imports ``distributed``: an optional extra)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time
from typing import Any

from distributed import WorkerPlugin

from napari_nst.core.distributed import cluster


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
        restore_malloc_thresholds()
        host = str(worker.address).rsplit(":", 1)[0]
        busy = self.threads_per_host.get(host, worker.state.nthreads)
        cluster.TORCH_THREADS["n"] = max(1, (os.cpu_count() or 1) // max(1, busy))
        t0 = time.perf_counter()
        try:
            from napari_nst.core.encoder import vgg

            vgg.resolve_model(None, self.weights)  # reads the weights file into vgg's in-memory cache
        except Exception:  # noqa: S110 (a bad weights file fails each task, with its message)
            pass
        cluster.STATS["warmup_s"] = time.perf_counter() - t0


#: glibc's mallopt parameters, and the most its own sliding mmap threshold grows to on 64-bit
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20


def restore_malloc_thresholds() -> bool:
    """Undo dask's ``MALLOC_TRIM_THRESHOLD_=65536`` for torch's sake; True when it was set and undone.

    A dask nanny starts its worker with that variable (``distributed.nanny.pre-spawn-environ``) so
    that freed memory goes back to the system. Setting it also switches off glibc's sliding mmap
    threshold, so every tensor over 128 KiB is mmapped and unmapped at each use and its pages
    faulted in again: a stylisation ran 1.9x slower in a worker than in a plain process on this
    2-core CPU (128 px, 30 evaluations: 4.8 s vs 2.5 s). Here the thresholds are set to what
    glibc's sliding ones reach (mmap above 32 MiB, trim above 64 MiB): as fast as a plain
    process, and large blocks (and the heap's top past 64 MiB) are still given back.
    """
    if not sys.platform.startswith("linux") or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = int(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) == 1
        return ok and int(libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)) == 1
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to undo
        return False
