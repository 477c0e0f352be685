"""Book-keeping of the current run on the main thread (no Qt).

Records arrive faster than napari can draw; :class:`RunState` keeps only the newest record and
the newest one with an image (coalescing), and knows which layers the run depends on, to stop it
when one is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from napari_nst._run.live import applied_text, describe, status_lines
from napari_nst._run.plan import RunPlan
from napari_nst._run.runner import Runner
from napari_nst._run.sink import LayerSink, run_metadata
from napari_nst.core.progress import RunEstimate
from napari_nst.core.records import Progress


def same_layer(a: Any, b: Any) -> bool:
    """The same layer, seen through napari's PublicOnlyProxy (plugins get a proxied viewer) or not."""

    def real(obj: Any) -> Any:
        return getattr(obj, "__wrapped__", obj)

    return a is not None and b is not None and real(a) is real(b)


@dataclass
class RunState:
    """One run: its plan, runner, sink, the live layers it reads, and how it is going."""

    plan: RunPlan
    sink: LayerSink  #: or a _run.stack.StackSink (same calls)
    sources: dict[str, Any]  #: "content", "style", "init" -> the live layer (or None)
    runner: Runner
    outcome: str = "running"
    error: BaseException | None = None
    notes: list[str] = field(default_factory=list)
    last: Progress | None = None
    stop_reason: str | None = None
    stop_requested: bool = False
    first_record_at: float | None = None
    level: int = 0
    pending: Progress | None = None
    pending_image: Progress | None = None
    finished: list[Progress] = field(default_factory=list)  #: a stack's finished frames not shown yet
    estimate: RunEstimate = field(default_factory=RunEstimate)  #: the time left, from the records
    # settings changed during the run (_run/live.py): the newest the engine applied, the one sent
    # and not applied yet, those that wait for the next Run, and why one was refused
    live_applied: str = ""
    live_pending: str = ""
    live_later: list[str] = field(default_factory=list)
    live_error: str = ""
    live_sent: int = 0  #: the number of the newest update sent
    live_marks: list[tuple[int, str]] = field(default_factory=list)  #: (step, what changed) per update applied

    @property
    def proc(self) -> Any:
        """The engine of the run (None before it started)."""
        return self.runner.proc

    def stop(self, reason: str | None = None) -> None:
        """Ask the runner to stop (thread-safe part: the runner's cancel)."""
        self.stop_reason = self.stop_reason or reason
        self.stop_requested = True
        self.runner.cancel()

    def kill(self) -> None:
        """Stop, and end the engine process at once (thread-safe)."""
        self.stop()
        self.runner.kill()

    def add(self, rec: Progress) -> None:
        """A new record: the newest wins, and the newest with an image is kept for display."""
        self.estimate.add(rec)
        self.level = rec.level
        self.pending = rec
        if rec.image is not None:
            self.pending_image = rec
            if rec.frames > 1 and rec.step == rec.total:
                self.finished.append(rec)

    def applied(self, rec: Progress) -> str | None:
        """A record that applied options changed during the run: what changed (None: it applied none)."""
        if rec.update is None:
            return None
        what = describe(rec.update)
        self.live_applied = applied_text(rec.update, rec.step)
        self.live_marks.append((rec.step, what))
        self.notes.append(f"changed during the run: {self.live_applied}")  # kept in the layer's metadata
        if rec.update_id >= self.live_sent:
            self.live_pending = ""
        return what

    def live_text(self) -> str:
        """The status's lines about settings changed during the run."""
        return status_lines(self.live_applied, self.live_pending, self.live_later, self.live_error)

    def take_finished(self) -> list[Progress]:
        """A stack's frames finished since the last call (each is shown, none coalesced away)."""
        out, self.finished = self.finished, []
        return out

    def take(self) -> tuple[Progress | None, Progress | None]:
        """``(newest record with an image, newest record)`` since the last call."""
        out = self.pending_image, self.pending
        self.pending_image = self.pending = None
        return out

    def metadata(self) -> dict[str, Any]:
        return run_metadata(self.plan, self.outcome, self.last, self.notes, self.stop_reason, self.error)

    def deleted(self, layer: Any) -> str | None:
        """Why the run must stop now that ``layer`` was deleted, or None."""
        if same_layer(layer, self.sink.layer):
            return f"the pastiche layer {layer.name!r} was deleted"
        for key, what in (("content", "content layer"), ("style", "style layer")):
            if same_layer(layer, self.sources.get(key)):
                return f"the {what} {layer.name!r} was deleted"
        for other in self.sources.get("styles") or ():
            if same_layer(layer, other):
                return f"the style layer {layer.name!r} was deleted"
        if same_layer(layer, self.sources.get("regions")) and self.first_record_at is None:
            return f"the Labels layer {layer.name!r} of the regions was deleted"
        if same_layer(layer, self.sources.get("mask")) and self.first_record_at is None:
            return f"the layer {layer.name!r} of Restyle only was deleted"
        if same_layer(layer, self.sources.get("init")) and self.first_record_at is None:
            return f"the layer {layer.name!r} to start from was deleted"
        return None
