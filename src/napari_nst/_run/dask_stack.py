"""A stack run of the widget on a dask scheduler's workers (Run on: a dask scheduler).

:class:`DaskStackProcess` offers what :class:`napari_nst.core.process.client.StackEngineProcess` offers
(iterate it for records; ``cancel``/``kill`` from any thread), but the frames are made on the
cluster by :mod:`napari_nst.core.distributed.stack`. napari's process connects as a dask client
and imports ``distributed`` and numpy only: the engine (torch) runs on the workers.

Frames come back in frame order (a frame of a later chunk waits for the chunks before it), so that
a stopped stack's pastiche layer says which frames are made (``frames_done``) and Continue goes on
from there.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from typing import Any

from napari_nst.core.records import Progress

#: seconds to wait for a scheduler to answer before saying it cannot be reached
CONNECT_TIMEOUT = 5.0


def check_address(address: str) -> str:
    """The address as dask takes it; ValueError naming the fix for an empty or malformed one."""
    text = (address or "").strip()
    if not text:
        raise ValueError("Run on: no dask scheduler address; type one like tcp://host:8786 (or run on this machine).")
    host = text.split("://", 1)[-1]
    if "://" in text and text.split("://", 1)[0] not in ("tcp", "tls", "ws", "wss", "inproc", "ucx"):
        raise ValueError(f"Run on: {text!r} is not a dask address; type one like tcp://host:8786.")
    if not host or " " in host:
        raise ValueError(f"Run on: {text!r} is not a dask address; type one like tcp://host:8786.")
    return text


def connect(address: str, timeout: float = CONNECT_TIMEOUT) -> Any:
    """A dask client of the scheduler at ``address``; ValueError when nothing answers in time."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{timeout}s", set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise ValueError(
            f"Cannot reach the dask scheduler at {address!r} ({' '.join(str(exc).split())[:200]}): start one "
            "with `dask scheduler` and workers with `dask worker ADDRESS`, or run on this machine "
            "(docs/distributed.md). Nothing was changed."
        ) from None


class DaskStackProcess:
    """A stack run on the dask scheduler at ``address``; arguments as for StackEngineProcess."""

    def __init__(
        self,
        frames: Any,
        style: Any,
        *,
        address: str,
        start: int = 0,
        previous: Any = None,
        nice: int = 0,
        **options: Any,
    ) -> None:
        from napari_nst.core.api import prepare_stack

        self.address = check_address(address)
        self._frames, self._style, self._opts = prepare_stack(frames, style, 0, **options)
        self._start, self._previous = int(start), previous
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop (thread-safe): frames not made are cancelled; each worker ends the frame it is on."""
        self._cancelled.set()

    def kill(self) -> None:
        self.cancel()

    def __iter__(self) -> Iterator[Progress]:
        if self.cancelled:
            return
        from napari_nst.core.distributed.stack import iter_stack_on_cluster

        client = connect(self.address)
        try:
            records: Generator[Progress, None, None] = iter_stack_on_cluster(
                self._frames,
                self._style,
                self._opts,
                client,
                start=self._start,
                previous=self._previous,
                in_order=True,
                cancelled=self._cancelled,
            )
            try:
                for rec in records:
                    if self.cancelled:
                        return
                    yield rec
            finally:
                records.close()  # cancels the frames not made
        finally:
            client.close()
