"""Worker side of :mod:`napari_nst.core.distributed.stack`: the task that makes one frame of a stack.

Imported on dask workers; torch is imported only inside :func:`run_frame` (through the stack
engine, core/stack/engine.py), so the client (napari's process included) never imports it.

A frame is made by the stack engine itself (:func:`napari_nst.core.stack.engine.run_stack`): a chunk's
first frame from its content as frame 0 of a stack is; a later frame over the two frames
``[previous content, this content]`` with ``start=1`` and ``previous`` the pastiche of the frame
before, so that it starts from that pastiche carried along the optical flow and is held there by
the temporal term, exactly as in a stack run on one machine. The network is built once per worker
process (``vgg.build_vgg``'s cache, the weights read by the batch's worker plugin).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_nst.core.distributed.cluster import TORCH_THREADS, worker_address
from napari_nst.core.errors import EngineProcessError
from napari_nst.core.options import Options
from napari_nst.core.records import Progress

#: records on the worker carry no preview image: only each frame's last record (its pastiche) does
NO_PREVIEWS = 10**9


@dataclass
class FrameResult:
    """What one frame's task sends back: its pastiche (float32 (h, w, 3) in [0, 1] at the working
    shape) and last record (``image`` None, ``frame`` the stack's index), where and how long."""

    frame: int
    image: np.ndarray
    record: Progress
    worker: str
    seconds: float


def run_frame(
    index: int,
    content: Any,
    before: Any,
    previous: FrameResult | np.ndarray | None,
    style: np.ndarray,
    opts: Options,
    limits: tuple[float, float] | None,
) -> FrameResult:
    """Make frame ``index`` from its raw ``content`` (as the stack holds it, mapped with ``limits``).

    ``previous``: None for a chunk's first frame (it starts from its content, with ``opts.steps``
    evaluations); else the pastiche of frame ``index - 1`` (a :class:`FrameResult` of the task
    before, or an array when continuing a stopped stack) and ``before`` that frame's raw content.

    Errors come back as napari-nst's own exceptions (or builtins), never as a torch type: the
    client must be able to unpickle them without importing torch.
    """
    t0 = time.perf_counter()
    try:
        return _make(index, content, before, previous, style, opts, limits, t0)
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in ("napari_nst", "builtins"):
            raise
        raise EngineProcessError(f"frame {index}: {type(exc).__name__}: {' '.join(str(exc).split())}") from None


def _make(
    index: int,
    content: Any,
    before: Any,
    previous: FrameResult | np.ndarray | None,
    style: np.ndarray,
    opts: Options,
    limits: tuple[float, float] | None,
    t0: float,
) -> FrameResult:
    from napari_nst.core.stack.engine import run_stack
    from napari_nst.core.stack.frames import FrameSource

    if TORCH_THREADS["n"]:
        import torch

        torch.set_num_threads(TORCH_THREADS["n"])  # per thread: OpenMP settings are thread-local
    opts = dataclasses.replace(opts, preview_every=NO_PREVIEWS, preview_interval=0.0)
    if previous is None:
        records = run_stack(FrameSource([content], limits), style, opts)
    else:
        carried = previous.image if isinstance(previous, FrameResult) else np.asarray(previous, np.float32)
        records = run_stack(FrameSource([before, content], limits), style, opts, start=1, previous=carried)
    tail = deque(records, maxlen=1)  # run the frame; keep its last record
    last = tail[0] if tail else None
    assert last is not None and last.image is not None  # the last record carries the pastiche
    image = np.ascontiguousarray(last.image, dtype=np.float32)
    record = dataclasses.replace(last, image=None, frame=index)
    return FrameResult(index, image, record, worker_address(), time.perf_counter() - t0)
