"""Stacks on a dask.distributed cluster: contiguous chunks of frames, each a chain of frame tasks.

``iter_stylize_stack(..., client=...)`` (or ``scheduler=``, ``workers=``) comes here. The frames
to make are split into contiguous chunks (:func:`plan_chunks`: one per worker, at least
:data:`MIN_CHUNK_FRAMES` frames each). Within a chunk every frame is a task
(:func:`napari_nst.core.distributed.stack_task.run_frame`) submitted when the frame before it has come back,
with that pastiche as an argument: it starts from it carried along the optical flow and is held
there by the temporal term, as on one machine. Chunks run side by side on different workers. One
frame per task, its inputs all in the task (no data that lives only on one worker), means that a
finished frame comes back at once (with its frame index), that a killed worker costs the one frame
it was on (dask reruns that task elsewhere), and that a cancelled stack stops within one frame.

Chunk borders: a chunk's first frame starts from its content (as frame 0 does), so it does not
follow the last frame of the chunk before and the stack would jump there. To soften that, each
chunk but the last also makes the first ``overlap`` frames of the next chunk (warm-started, at
``frame_steps`` each), and those frames are cross-faded: frame ``hi + i`` of the border is
``(1 - w) * earlier chunk + w * later chunk`` with ``w = (i + 1) / (overlap + 1)``. The jump is
then spread over ``overlap + 1`` frames (docs/distributed.md). The records of a cross-faded frame
carry the later chunk's losses (those of its own version, not of the blend).

What travels: each raw frame (as the stack holds it: uint8 stays uint8) in its own task and the
next one's; the style once to every worker (float32); each pastiche back as float32 at the working
shape, and out again to the task of the next frame. This module imports numpy and ``distributed`` only, never torch.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_nst.core.distributed.cluster import INSTALL_HINT
from napari_nst.core.distributed.stack_task import FrameResult, run_frame
from napari_nst.core.options import Options
from napari_nst.core.records import Progress
from napari_nst.core.stack.frames import FrameSource, frame_steps_for

logger = logging.getLogger("napari_nst.stack_distributed")

#: a chunk has at least this many frames of its own (its first frame costs a whole run)
MIN_CHUNK_FRAMES = 4
#: frames at each chunk border made by both chunks and cross-faded (the default)
OVERLAP = 2
#: seconds between looks for finished frames (and at ``cancelled``) while waiting
POLL_S = 0.05


@dataclass(frozen=True)
class Chunk:
    """Frames ``lo .. hi-1`` are this chunk's own; it also makes ``hi .. end-1`` (the border it
    shares with the next chunk, cross-faded)."""

    lo: int
    hi: int
    end: int


def plan_chunks(
    start: int, n: int, workers: int, chunk_frames: int | None = None, overlap: int = OVERLAP
) -> list[Chunk]:
    """Contiguous chunks of frames ``start .. n-1``: ``chunk_frames`` each (None: one per worker,
    at least :data:`MIN_CHUNK_FRAMES` frames each, equal in length up to one frame)."""
    todo = n - start
    if chunk_frames is not None and int(chunk_frames) < 1:
        raise ValueError(f"chunk_frames must be 1 or more (or None: by the cluster's workers), got {chunk_frames}")
    if int(overlap) < 0:
        raise ValueError(f"overlap must be 0 or more frames, got {overlap}")
    if chunk_frames is None:
        k = max(1, min(int(workers), todo // MIN_CHUNK_FRAMES))
        bounds = [start + (todo * j) // k for j in range(k + 1)]
    else:
        bounds = [*range(start, n, int(chunk_frames)), n]
    chunks = []
    for j in range(len(bounds) - 1):
        lo, hi = bounds[j], bounds[j + 1]
        nxt = bounds[j + 2] if j + 2 < len(bounds) else hi
        chunks.append(Chunk(lo, hi, min(hi + int(overlap), nxt)))
    return chunks


def blend_weight(chunk: Chunk, t: int) -> float:
    """The later chunk's share of border frame ``t`` (``chunk.hi <= t < chunk.end``)."""
    return (t - chunk.hi + 1) / (chunk.end - chunk.hi + 1)


# ----------------------------------------------------------------------------- the API


def iter_stack_on_cluster(
    frames: FrameSource,
    style: np.ndarray,
    opts: Options,
    client: Any,
    *,
    start: int = 0,
    previous: np.ndarray | None = None,
    chunk_frames: int | None = None,
    overlap: int = OVERLAP,
    in_order: bool = False,
    cancelled: threading.Event | None = None,
) -> Generator[Progress, None, None]:
    """The stack's frames made on ``client``'s cluster; one record per frame (its last: ``step ==
    total``, ``image`` the pastiche), as frames finish (``in_order``: in frame order).

    ``frames``, ``style``, ``opts`` as :func:`napari_nst.core.api.prepare_stack` returns them.
    Closing the generator (or setting ``cancelled``) cancels the frames not made; a frame's error
    is raised here after the rest are cancelled.
    """
    from napari_nst.core.distributed.cluster import resources as _resources

    resources = _resources(client, opts.device)
    opts = opts.for_device(gpu=resources is not None)  # one size and length for every worker
    job = _StackJob(client, frames, opts, start, previous, in_order)
    chunks = plan_chunks(start, len(frames), _worker_count(client, resources), chunk_frames, overlap)
    logger.info("stack of %d frames on the cluster: %s", len(frames) - start, chunk_summary(chunks))
    job.submit(style, chunks, resources)
    try:
        yield from job.collect(cancelled)
    finally:
        client.cancel(list(job.futures))  # the frames in flight


def _worker_count(client: Any, resources: dict[str, float] | None) -> int:
    """Workers that can take the tasks (those declaring a GPU for a GPU run); raises ValueError
    when there are none within 10 s."""
    try:
        client.wait_for_workers(1, timeout=10)
    except TimeoutError:
        raise ValueError(
            "the dask scheduler has no workers: start some with `dask worker ADDRESS` (docs/distributed.md)"
        ) from None
    workers = client.scheduler_info().get("workers", {}).values()
    if resources:
        workers = [w for w in workers if w.get("resources", {}).get("GPU", 0) >= 1]
    return max(1, len(list(workers)))


class _StackJob:
    """The frame tasks of one stack run: each chunk's next frame is submitted when the frame
    before it comes back, with that pastiche as an argument (so a lost worker costs one frame)."""

    def __init__(
        self, client: Any, frames: FrameSource, opts: Options, start: int, previous: Any, in_order: bool
    ) -> None:
        from distributed import as_completed

        self.client, self.frames, self.opts, self.start, self.previous = client, frames, opts, start, previous
        self.n, self.in_order = len(frames), in_order
        self.futures: dict[Any, tuple[int, int]] = {}  #: the frames in flight: future -> (chunk, frame)
        self.chunks: list[Chunk] = []
        self.later = frame_steps_for(opts.steps, opts.frame_steps)
        self.finished = as_completed([], loop=client.loop)  # type: ignore[no-untyped-call]  # not the default client's loop
        self._raw: dict[tuple[int, int], Any] = {}  #: raw content of frames in flight (the next needs it)
        self._tag = uuid.uuid4().hex[:8]
        self._style: Any = None
        self._resources: Any = None

    def steps_of(self, chunk: Chunk, t: int) -> int:
        """Evaluations of frame ``t`` in ``chunk``: a whole run for a chunk's first frame."""
        warm = t > chunk.lo or (chunk.lo == self.start and self.previous is not None)
        return self.later if warm else int(self.opts.steps or 1)

    def submit(self, style: np.ndarray, chunks: list[Chunk], resources: Any) -> None:
        """The network plugin, the style to every worker, and the first frame of every chunk."""
        from napari_nst.core.distributed.cluster import threads_per_host as _threads_per_host
        from napari_nst.core.distributed.worker_plugin import NetworkPlugin

        self.chunks, self._resources = chunks, resources
        self.client.register_plugin(NetworkPlugin(self.opts.weights, _threads_per_host(self.client)))
        self._style = self.client.scatter(style, broadcast=True, hash=False)
        for j, ch in enumerate(chunks):
            if ch.lo == self.start and self.previous is not None:  # continuing a stopped stack
                self._frame(j, ch.lo, np.asarray(self.previous, np.float32), self.frames.frames[ch.lo - 1])
            else:
                self._frame(j, ch.lo, None, None)

    def _frame(self, j: int, t: int, previous: np.ndarray | None, before: Any) -> None:
        raw = self.frames.frames[t]
        opts = dataclasses.replace(self.opts, steps=self.steps_of(self.chunks[j], t))
        for name in ("regions", "mask"):  # per-frame labels and masks: this task's frames
            per_frame = getattr(opts, name)
            if per_frame is not None and np.ndim(per_frame) == 3:
                setattr(opts, name, np.asarray(per_frame[t : t + 1] if previous is None else per_frame[t - 1 : t + 1]))
        args = (t, raw, before, previous, self._style, opts, self.frames.limits)
        key = f"napari-nst-frame-{t:05d}-c{j}-{self._tag}"
        fut = self.client.submit(run_frame, *args, key=key, resources=self._resources, pure=False)
        self.futures[fut] = (j, t)
        self._raw[(j, t)] = raw
        self.finished.add(fut)  # type: ignore[no-untyped-call]

    def collect(self, cancelled: threading.Event | None) -> Iterator[Progress]:
        """One record per frame, as its task(s) finish (both chunks' at a border)."""
        got: dict[tuple[int, int], FrameResult] = {}
        ready: dict[int, Progress] = {}
        total = sum(self.steps_of(ch, t) for ch in self.chunks for t in range(ch.lo, ch.end))
        done, nxt, t0 = 0, self.start, time.perf_counter()
        while self.futures:
            if cancelled is not None and cancelled.is_set():
                return
            batch = self.finished.next_batch(block=False)  # type: ignore[no-untyped-call]
            if not batch:
                time.sleep(POLL_S)
                continue
            for fut in batch:
                j, t = self.futures.pop(fut)
                got[(j, t)] = res = fut.result()  # a frame's error is raised here
                raw = self._raw.pop((j, t))
                if t + 1 < self.chunks[j].end:  # the chunk's next frame starts from this pastiche
                    self._frame(j, t + 1, res.image, raw)
                done += res.record.total
                for frame in self._complete(t, got):
                    ready[frame.frame] = frame
            for t in sorted(ready):
                if self.in_order and t != nxt:
                    break
                rec = ready.pop(t)
                nxt = t + 1
                yield dataclasses.replace(rec, stack_step=done, stack_total=total, elapsed=time.perf_counter() - t0)

    def _complete(self, t: int, got: dict[tuple[int, int], FrameResult]) -> list[Progress]:
        """Frame ``t``'s record when every version of it is in (its pastiche cross-faded at a border)."""
        owner = next(j for j, ch in enumerate(self.chunks) if ch.lo <= t < ch.hi)
        mine = got.get((owner, t))
        if mine is None:
            return []
        image = mine.image
        if owner > 0 and t < self.chunks[owner - 1].end:  # a border frame: the earlier chunk's version too
            other = got.get((owner - 1, t))
            if other is None:
                return []
            w = blend_weight(self.chunks[owner - 1], t)
            image = ((1.0 - w) * other.image + w * mine.image).astype(np.float32)
        return [dataclasses.replace(mine.record, image=image, frame=t, frames=self.n)]


def chunk_summary(chunks: list[Chunk]) -> str:
    """ "3 chunks of 5-6 frames, 2 frames cross-faded at each border" (for logs and notes)."""
    sizes = [c.hi - c.lo for c in chunks]
    span = f"{min(sizes)}" if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"
    over = max((c.end - c.hi for c in chunks), default=0)
    tail = f", {over} frame(s) cross-faded at each border" if len(chunks) > 1 and over else ""
    return f"{len(chunks)} chunk{'s' if len(chunks) > 1 else ''} of {span} frames{tail}"


def run_on_cluster(
    frames: FrameSource,
    style: np.ndarray,
    opts: Options,
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    start: int = 0,
    previous: np.ndarray | None = None,
    chunk_frames: int | None = None,
    overlap: int | None = None,
    in_order: bool = False,
    log: Callable[[str], None] | None = None,
) -> Iterator[Progress]:
    """:func:`iter_stack_on_cluster` on ``client``, else on ``scheduler``'s cluster, else on a
    LocalCluster of ``workers`` workers started here (closed when the generator ends). Checks the
    chunking arguments now, before any work."""
    overlap = OVERLAP if overlap is None else int(overlap)
    plan_chunks(start, len(frames), 1, chunk_frames, overlap)  # raises ValueError for bad values
    if client is None:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ValueError(
                f"a stack on a cluster needs dask.distributed, which is not installed: {INSTALL_HINT}"
            ) from None
    if client is None and not scheduler and not workers:
        raise ValueError("give a dask client, a scheduler address or a number of workers (1 or more)")
    return _on_cluster(
        frames,
        style,
        opts,
        client,
        scheduler,
        workers,
        start,
        previous,
        chunk_frames,
        overlap,
        in_order,
        log or logger.info,
    )


def _on_cluster(
    frames: FrameSource,
    style: np.ndarray,
    opts: Options,
    client: Any,
    scheduler: str | None,
    workers: int | None,
    start: int,
    previous: np.ndarray | None,
    chunk_frames: int | None,
    overlap: int,
    in_order: bool,
    log: Callable[[str], None],
) -> Iterator[Progress]:
    from napari_nst.core.distributed.cluster import cluster as _cluster

    with _cluster(client, scheduler, workers, None, log) as c:
        assert c is not None  # distributed is installed (checked above) and workers >= 1
        yield from iter_stack_on_cluster(
            frames,
            style,
            opts,
            c,
            start=start,
            previous=previous,
            chunk_frames=chunk_frames,
            overlap=overlap,
            in_order=in_order,
        )
