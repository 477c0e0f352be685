"""Batches: many content images, one style, the same options, on a dask.distributed cluster.

``batch(contents, style, out_dir=None, client=None, **options)`` validates everything it can
before any work (options, the style image, the content list, the output folder), then runs one
task per content image on a dask cluster (the caller's ``client``, a ``scheduler`` address, or a
``LocalCluster`` sized to this machine) or, without ``distributed`` installed (or with
``workers=0``), one after the other in this process. No torch here: the task
(:func:`napari_nst.core.distributed.batch_task.run_item`) imports it on the worker.

What travels: a content given as a file travels as its path (a few bytes; the worker reads and
decodes it, so workers must see the client's files: the same machine or a shared file system); a
content given as an array is scattered to a worker as the array. The style is read and checked
once here and broadcast once to every worker as a float32 array. The pastiche comes back as a
float32 array and is written here (atomically), so the output folder need not be shared.

Faults: a task never raises for a bad item (it returns a ``failed`` result with the message); a
worker that dies mid-task has its tasks rerun elsewhere by dask (up to the scheduler's
``allowed-failures``, then the item is ``failed`` with dask's ``KilledWorker``). ``batch.json`` is
rewritten after every finished item, so an interrupted batch (Ctrl-C: ``KeyboardInterrupt`` is
re-raised after the remaining tasks are cancelled) keeps its finished outputs and ``resume=True``
continues it. Run here (sequentially), the item in progress is recorded ``interrupted``, its
newest pastiche written to its output with the record it resumes from (core/resume.py).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_nst.core.distributed.batch_task import TaskResult, run_item
from napari_nst.core.distributed.cluster import cluster, threads_per_host
from napari_nst.core.distributed.cluster import resources as cluster_resources
from napari_nst.core.distributed.manifest import ItemResult, Manifest, file_digest, fingerprint, from_entry
from napari_nst.core.options import Options
from napari_nst.core.progress import ConsoleProgress, console_progress

logger = logging.getLogger("napari_nst.batch")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")
FORMATS = {"png": ".png", "tif": ".tif"}
Source = str | np.ndarray


@dataclass
class Item:
    """One content image of a batch: its source (a path or an array), its name and output file."""

    source: Source
    name: str
    label: str
    output: Path | None


# ----------------------------------------------------------------------------- inputs


def expand_contents(contents: Any) -> list[Source]:
    """Files, globs and folders (their image files, sorted) and arrays, in the order given.

    Raises ValueError before any work for an empty list, a missing file or folder, a glob or
    folder without images, or a file that is not an image by its extension.
    """
    if isinstance(contents, (str, os.PathLike, np.ndarray)):
        contents = [contents]
    out: list[Source] = []
    for c in list(contents):
        if isinstance(c, np.ndarray):
            out.append(c)
            continue
        text = os.path.expanduser(os.fspath(c))
        if glob.has_magic(text):
            found = [p for p in sorted(glob.glob(text)) if _is_image(p)]
            if not found:
                raise ValueError(f"{text!r} matches no image file ({', '.join(IMAGE_SUFFIXES)}); check the pattern")
            out += found
        elif os.path.isdir(text):
            found = sorted(str(p) for p in Path(text).iterdir() if _is_image(str(p)) and not p.name.startswith("."))
            if not found:
                raise ValueError(f"the folder {text!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif not os.path.exists(text):
            raise ValueError(f"no content image or folder at {text!r}; check the path")
        elif not _is_image(text):
            raise ValueError(f"{text!r} is not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
        else:
            out.append(text)
    if not out:
        raise ValueError("no content images given: pass image files, globs or a folder")
    return _unique(out)


def _is_image(path: str) -> bool:
    return os.path.isfile(path) and Path(path).suffix.lower() in IMAGE_SUFFIXES


def _unique(sources: list[Source]) -> list[Source]:
    """The same file listed twice (say, by a folder and a glob) is one item."""
    seen: set[str] = set()
    out: list[Source] = []
    for s in sources:
        key = None if isinstance(s, np.ndarray) else os.path.realpath(s)
        if key is None or key not in seen:
            out.append(s)
            if key is not None:
                seen.add(key)
    return out


def plan(sources: list[Source], out_dir: Any, fmt: str) -> list[Item]:
    """Items with their output files; checks the folder and name clashes (nothing is created)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {tuple(FORMATS)}, got {fmt!r}")
    folder = None if out_dir is None else Path(out_dir).expanduser()
    if folder is not None and folder.exists() and not folder.is_dir():
        raise ValueError(f"the output folder {str(folder)!r} is a file; give a folder (it is created if missing)")
    items: list[Item] = []
    by_name: dict[str, str] = {}
    for k, src in enumerate(sources):
        name = f"item-{k:04d}" if isinstance(src, np.ndarray) else Path(src).stem
        label = f"array #{k} {tuple(src.shape)}" if isinstance(src, np.ndarray) else str(src)
        out = None if folder is None else folder / f"{name}{FORMATS[fmt]}"
        if folder is not None:
            if name.lower() in by_name:
                raise ValueError(
                    f"{by_name[name.lower()]!r} and {label!r} would both be written to {str(out)!r}; "
                    "rename one of them or run them as two batches"
                )
            if not isinstance(src, np.ndarray) and out is not None and out.exists() and out.samefile(src):
                raise ValueError(
                    f"the output {str(out)!r} would overwrite the content image {label!r}; choose another output folder"
                )
        by_name[name.lower()] = label
        items.append(Item(src, name, label, out))
    return items


def _one_style(style: Any) -> Any:
    if isinstance(style, (list, tuple)):
        if len(style) != 1:
            raise ValueError(
                f"{len(style)} styles given; a batch takes exactly one style for now (several styles "
                "per image is a feature still to come): run one batch per style, each with its own "
                "output folder"
            )
        return style[0]
    return style


# ----------------------------------------------------------------------------- the API


def batch(
    contents: Any,
    style: Any,
    out_dir: Any = None,
    client: Any = None,
    *,
    format: str = "png",
    resume: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool | None = None,
    **options: Any,
) -> list[ItemResult]:
    """Stylise every content image with ``style`` and the same options; one result per item, in order.

    Parameters
    ----------
    contents : path, glob, folder, array, or a list of these
        Image files (a folder: its image files; a glob: the image files it matches) or arrays.
    style : path or array
        One style image (a list of one is accepted; several styles raise ValueError for now).
    out_dir : path or None
        Folder for ``<content stem>.png`` (or ``.tif`` with ``format="tif"``) and ``batch.json``;
        created if missing. None: nothing is written and each result carries its ``image``.
    client : distributed.Client or None
        Run on this client's cluster. None: ``scheduler``'s cluster if given, else a LocalCluster
        sized to this machine; sequentially in this process when ``distributed`` is not installed
        or ``workers=0``.
    resume : bool
        Skip items that ``out_dir/batch.json`` records as done and whose file is still complete;
        continue those it records as interrupted from their saved pastiche.
    workers, threads_per_worker : int or None
        The LocalCluster's shape (None: by machine, see :func:`local_cluster_shape`).
    log : callable or None
        Called with one line per finished item and per notice (None: the ``napari_nst.batch`` logger).
    progress : bool or None
        A bar of the images finished on stderr, with the time so far and left (the console bar of
        ``stylize``: :class:`~napari_nst.core.progress.ConsoleProgress`); ``log``'s lines print
        above it. None (default): shown when stderr is a terminal; True/False: always/never.
    **options
        The options of :func:`napari_nst.stylize`, validated once before any work.

    Returns
    -------
    list of :class:`~napari_nst.core.distributed.manifest.ItemResult`
    """
    job = _Batch.prepare(contents, style, out_dir, format, resume, log or logger.info, options)
    with (
        cluster(client, scheduler, workers, threads_per_worker, job.log, warn=log is None) as c,
        console_progress(progress, "image") as bar,
    ):
        job.show(bar)
        if c is None:
            job.run_sequential()
        else:
            job.run_dask(c)
    return job.results


# ----------------------------------------------------------------------------- one batch


class _Batch:
    """A validated batch: its items, results and manifest; runs sequentially or on a dask client."""

    def __init__(
        self,
        items: list[Item],
        style: np.ndarray,
        opts: Options,
        manifest: Manifest | None,
        results: list[ItemResult],
        log: Callable[[str], None],
    ) -> None:
        self.items, self.style, self.opts, self.manifest = items, style, opts, manifest
        self.results, self.log = results, log
        self.todo = [i for i, r in enumerate(results) if not r.skipped]
        self.resume_from: dict[int, Any] = {}  # item -> the Pastiche its interrupted run left
        self.bar: ConsoleProgress | None = None
        self.finished, self.t0 = 0, time.perf_counter()

    def show(self, bar: ConsoleProgress | None) -> None:
        """Show the items finished on ``bar`` (None: no bar) from now on."""
        self.bar, self.finished, self.t0 = bar, 0, time.perf_counter()
        if bar is not None:
            bar.advance(0, len(self.todo), 0.0)

    @classmethod
    def prepare(
        cls,
        contents: Any,
        style: Any,
        out_dir: Any,
        fmt: str,
        resume: bool,
        log: Callable[[str], None],
        options: dict[str, Any],
    ) -> _Batch:
        """Everything checked before any work (raises ValueError naming what to change)."""
        from napari_nst.core.inputs import check_weights_path, load_image, prepare

        opts = Options.from_kwargs(**options)
        check_weights_path(opts.weights)
        items = plan(expand_contents(contents), out_dir, fmt)
        style_arr = load_image(_one_style(style), "style", opts.style_limits)
        kwargs = {n: getattr(opts, n) for n in Options.names()}
        for it in items:
            if isinstance(it.source, np.ndarray):  # arrays are checked here; files by the worker that reads them
                prepare(it.source, style_arr, **kwargs)
        results = [ItemResult(content=it.label, output=None if it.output is None else str(it.output)) for it in items]
        manifest = None
        if out_dir is not None:
            folder = Path(out_dir).expanduser()
            digest = hashlib.sha256(np.ascontiguousarray(style_arr).tobytes()).hexdigest()
            one = _one_style(style)
            label = str(one) if isinstance(one, (str, os.PathLike)) else f"array{tuple(np.shape(one))}"
            header = {"style": label, **fingerprint(opts, digest, fmt)}
            manifest = Manifest(folder, header, results)
            kept = manifest.done_earlier(resume)
            for k, it in enumerate(items):
                if it.output is not None and it.output.name in kept:
                    results[k] = from_entry({**kept[it.output.name], "content": it.label, "output": str(it.output)})
            stopped = manifest.interrupted_earlier(resume)
            folder.mkdir(parents=True, exist_ok=True)
        job = cls(items, style_arr, opts, manifest, results, log)
        if manifest is not None:
            job.resume_from = _saved_pastiches(items, stopped, log)
        return job

    def record(self, k: int, tr: TaskResult) -> None:
        """Store a task's result: write its image (atomically), update batch.json, log one line."""
        r, item = self.results[k], self.items[k]
        r.status, r.error, r.worker, r.seconds = tr.status, tr.error, tr.worker, round(tr.seconds, 3)
        r.weights, r.losses, r.model = tr.weights, tr.losses, tr.model
        r.weights_file, r.device, r.step, r.total = tr.weights_file, tr.device, tr.step, tr.total
        if tr.status == "done" and item.output is not None:
            from napari_nst.core import resume
            from napari_nst.core.image.files import write_image

            assert tr.image is not None  # a done task carries its pastiche
            try:
                write_image(item.output, tr.image)
                r.bytes, r.sha256 = file_digest(item.output)
                resume.clear(item.output)  # an interrupted run's record, if it was resumed
            except OSError as exc:
                r.status, r.error = "failed", f"cannot write {str(item.output)!r}: {exc}"
        elif tr.status == "interrupted" and item.output is not None and tr.pastiche is not None:
            from napari_nst.core import resume

            try:
                resume.save(item.output, tr.pastiche)  # the pastiche so far, and what --resume needs
            except OSError as exc:
                r.error = f"{r.error}; cannot write {str(item.output)!r}: {exc}"
        elif tr.status in ("done", "interrupted"):
            r.image = tr.image
        if self.manifest is not None:
            self.manifest.write()
        where = f" on {r.worker}" if r.worker and r.worker != "local" else ""
        kept = r.status == "done" or (r.status == "interrupted" and tr.pastiche is not None)
        tail = f" -> {r.output}" if kept and r.output else ""
        tail = f": {r.error}{tail}" if r.error else tail
        line = f"{r.status:6s} {item.label}{tail} ({r.seconds:.1f} s{where})"
        self.finished += 1
        if self.bar is None:
            self.log(line)
            return
        with self.bar.printing():  # the line above the bar
            self.log(line)
        self.bar.advance(self.finished, len(self.todo), time.perf_counter() - self.t0)

    def run_sequential(self) -> None:
        """One item after the other in this process (the network built once: vgg.build_vgg's cache)."""
        if self.manifest is not None:
            self.manifest.write()
        for k in self.todo:
            tr = run_item(self.items[k].source, self.style, self.opts, self.resume_from.get(k))
            self.record(k, tr)
            if tr.stop is not None:  # Ctrl-C or SIGTERM: recorded as interrupted; the batch ends here
                raise tr.stop

    def run_dask(self, client: Any) -> None:
        """One task per item on ``client``'s cluster, recorded as each finishes."""
        from distributed import as_completed

        from napari_nst.core.distributed.worker_plugin import NetworkPlugin

        if self.manifest is not None:
            self.manifest.write()
        resources = cluster_resources(client, self.opts.device)
        client.register_plugin(NetworkPlugin(self.opts.weights, threads_per_host(client)))
        style = client.scatter(self.style, broadcast=True, hash=False)
        futures = {}
        for k in self.todo:
            src = self.items[k].source
            if isinstance(src, np.ndarray):
                src = client.scatter(src, hash=False)
            key = f"napari-nst-{self.items[k].name}-{uuid.uuid4().hex[:8]}"
            resume = self.resume_from.get(k)
            futures[client.submit(run_item, src, style, self.opts, resume, key=key, resources=resources)] = k
        try:
            for fut in as_completed(list(futures)):  # type: ignore[no-untyped-call]
                try:
                    tr = fut.result()
                except Exception as exc:  # KilledWorker after the scheduler's allowed failures, ...
                    tr = TaskResult("failed", error=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
                self.record(futures[fut], tr)
        except BaseException:  # Ctrl-C: cancel what is left; finished outputs and batch.json stay
            client.cancel(list(futures))
            raise


# ----------------------------------------------------------------------------- the cluster


def _saved_pastiches(items: list[Item], stopped: list[str], log: Callable[[str], None]) -> dict[int, Any]:
    """The pastiches the interrupted items of an earlier run left, by item (those still readable)."""
    from napari_nst.core import resume
    from napari_nst.core.errors import OptionError

    out: dict[int, Any] = {}
    for k, it in enumerate(items):
        if it.output is not None and it.output.name in stopped:
            try:
                out[k] = resume.load(it.output)
            except OptionError as exc:
                log(f"{it.label}: starting afresh: {exc}")
    return out


def paths(items: Sequence[ItemResult], status: str) -> list[str]:
    """The contents of the results with ``status`` (say, the failed ones to list)."""
    return [r.content for r in items if r.status == status]
