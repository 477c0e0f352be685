"""The dask cluster a batch or a stack runs on, and what each dask worker process keeps.

Client side: the cluster to use (the caller's client, a scheduler's address, or a LocalCluster sized
to this machine), the threads of each host and the GPU resources of the workers. Worker side: the
address of the worker a task runs on, torch's threads per task and the warm-up figures (set by the
worker plugin). Imports ``distributed`` only inside its functions: an optional extra.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

INSTALL_HINT = 'pip install "napari-nst[distributed]"'


#: (workers, threads per worker) of the LocalCluster on a CPU-only machine: measured on a 2-core
#: machine by benchmarks/batch.py (docs/benchmarks.md); one worker per this many cores
CORES_PER_WORKER = 1


def local_cluster_shape(cores: int | None = None, gpus: int | None = None) -> tuple[int, int, dict[str, float]]:
    """(workers, threads per worker, resources per worker) of the LocalCluster for this machine.

    With NVIDIA GPUs: one worker with one thread that declares ``GPU=1`` (it uses the first GPU;
    for several, start one ``dask worker`` per GPU, see docs/distributed.md). Else one worker per
    :data:`CORES_PER_WORKER` cores, one thread each (torch's threads fill the worker's cores).
    """
    cores = cores if cores is not None else (os.cpu_count() or 1)
    gpus = gpus if gpus is not None else gpu_count()
    if gpus:
        return 1, 1, {"GPU": 1}
    return max(1, cores // CORES_PER_WORKER), 1, {}


def gpu_count() -> int:
    """NVIDIA GPUs on this machine, without torch (``nvidia-smi -L``); 0 if none or unknown."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


@contextmanager
def cluster(
    client: Any,
    scheduler: str | None,
    workers: int | None,
    threads: int | None,
    log: Callable[[str], None],
    warn: bool = True,
) -> Iterator[Any]:
    """The client to run on (None: sequentially here), closed afterwards if made here. ``warn``:
    the note that dask.distributed is missing also as a UserWarning (for the API without ``log``;
    with a ``log``, as on the command line, it is said once, there)."""
    if client is not None:
        yield client
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        if scheduler:
            raise ValueError(
                f"a scheduler address needs dask.distributed, which is not installed: {INSTALL_HINT}"
            ) from None
        note = f"dask.distributed is not installed: running the batch sequentially here ({INSTALL_HINT} for a cluster)"
        if warn:
            warnings.warn(note, stacklevel=4)
        else:
            log(note)
        yield None
        return
    if scheduler:
        with connect(Client, scheduler) as c:
            yield c
        return
    if workers == 0:
        yield None
        return
    n, t, res = local_cluster_shape()
    n, t = workers or n, threads or t
    log(f"starting a LocalCluster: {n} worker(s) x {t} thread(s){' with ' + str(res) if res else ''}")
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=t,
            processes=True,  # type: ignore[no-untyped-call]
            resources=res or None,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as c,  # type: ignore[no-untyped-call]
    ):
        yield c


@contextmanager
def connect(client_class: Any, address: str) -> Iterator[Any]:
    try:
        c = client_class(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise ValueError(
            f"cannot reach the dask scheduler at {address!r} ({exc}); start one with "
            "`dask scheduler` and workers with `dask worker ADDRESS` (docs/distributed.md)"
        ) from None
    try:
        yield c
    finally:
        c.close()


def threads_per_host(client: Any) -> dict[str, int]:
    """dask threads of all workers on each host (for torch's thread count on each worker)."""
    out: dict[str, int] = {}
    for addr, info in client.scheduler_info().get("workers", {}).items():
        host = str(addr).rsplit(":", 1)[0]
        out[host] = out.get(host, 0) + int(info.get("nthreads", 1))
    return out


def resources(client: Any, device: str) -> dict[str, float] | None:
    """``{"GPU": 1}`` for a GPU run (cuda, or auto on a cluster with GPU workers), else None."""
    workers = client.scheduler_info().get("workers", {}).values()
    has_gpu = any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers)
    if device.startswith("cuda"):
        if not has_gpu:
            raise ValueError(
                f"device={device!r} but no worker of the cluster declares a GPU: start GPU workers with "
                "`dask worker ADDRESS --nthreads 1 --resources GPU=1`, or use device='cpu'"
            )
        return {"GPU": 1}
    return {"GPU": 1} if device == "auto" and has_gpu else None


#: the worker plugin's warm-up: seconds to read the weights file into memory
STATS: dict[str, float] = {"warmup_s": 0.0}


#: torch threads per task in this process (set by the worker plugin; None: leave torch's setting)
TORCH_THREADS: dict[str, int | None] = {"n": None}


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
