"""Options that change while a run goes on (no torch here: the widget's side validates them too).

A run's objective knobs (:data:`LIVE_OPTIONS`) may be given new values during the run
(``StyleRun.update``, ``EngineProcess.update``): the engine applies them before its next
evaluation and goes on from the current image, with a fresh optimiser (L-BFGS's history holds
curvature pairs of the old objective). Every other option decides the image's size, the network,
where it runs or how the run starts, and is refused during a run (:data:`REFUSED`), with an
:class:`~napari_nst.core.errors.OptionError` that says to stop first.

:class:`LiveOptions` checks an update in the caller's thread, at once, against the run's options
as updated so far; :class:`Updates` is the thread-safe mailbox the engine reads between
evaluations.
"""

from __future__ import annotations

import dataclasses
import difflib
import threading
from typing import Any

from napari_nst.core.errors import OptionError
from napari_nst.core.options import Options

#: the options a running run takes: they change the objective, not the image's size or the network
LIVE_OPTIONS = (
    "style_strength",
    "style_weight",
    "content_weight",
    "style_layer_weights",
    "style_blend",
    "style_blend_mode",
    "preserve_color",
    "region_styles",
    "tv_weight",
)

#: what each other option decides (the reason a running run refuses it)
_WHY = {
    "the image's size or the number of evaluations": ("size", "steps", "scales", "style_scale", "frame_steps"),
    "the network": ("model", "weights", "content_layers", "style_layers", "pooling"),
    "the style statistics compared and the memory they take": ("style_loss",),
    "which pixels may change": ("mask",),
    "where and how the network runs": ("device", "precision", "tile_size", "max_memory"),
    "how the run starts and moves": ("seed", "init", "optimizer", "pyramid"),
    "the images read": ("content_limits", "style_limits", "regions", "style_regions"),
    "what the records carry": ("preview_every", "preview_interval"),
    "the stack's frames": ("temporal_weight",),
}
#: option -> why a running run refuses it
REFUSED = {name: why for why, names in _WHY.items() for name in names}


#: why a stack run refuses updates
STACK_REFUSAL = (
    "a stack run does not take options while it runs (only a single image's run does); stop it and "
    "start it again with the new options (start= and previous= continue from the last frame made)"
)


def refusal(name: str) -> str:
    """The message for an option a running run does not take."""
    why = REFUSED.get(name, "the run's set-up")
    return (
        f"{name} cannot change during a run (it decides {why}); stop the run first and start a new one "
        f"with it. Live options: {', '.join(LIVE_OPTIONS)}"
    )


class LiveOptions:
    """The options of one running run, for checking updates (thread-safe).

    ``opts``: the run's options as validated at its start; ``n_styles``: how many style images.
    """

    def __init__(self, opts: Options, n_styles: int) -> None:
        self._opts = opts
        self._n_styles = int(n_styles)
        self._lock = threading.Lock()

    def check(self, changes: dict[str, Any]) -> dict[str, Any]:
        """``changes`` validated and normalised (``Options``' own checks, then those against the
        run: one blend weight per style, region styles that exist); OptionError naming the fix.
        Becomes the run's current options for the next check."""
        known = Options.names()
        for name in changes:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise OptionError(f"unknown option {name!r}{hint} Live options: {', '.join(LIVE_OPTIONS)}")
            if name not in LIVE_OPTIONS:
                raise OptionError(refusal(name))
        if not changes:
            raise OptionError(f"update() needs at least one option; live options: {', '.join(LIVE_OPTIONS)}")
        with self._lock:
            new = dataclasses.replace(self._opts, **changes)
            new.validate()
            _check_against_run(new, self._n_styles, changes)
            self._opts = new
        return {name: getattr(new, name) for name in changes}

    @property
    def current(self) -> Options:
        with self._lock:
            return self._opts


def _check_against_run(opts: Options, n_styles: int, changes: dict[str, Any]) -> None:
    from napari_nst.core.objective.regions import check_mapping, check_styled

    if "style_blend" in changes and opts.style_blend is not None:
        if len(opts.style_blend) != n_styles:
            many = "is 1 style image" if n_styles == 1 else f"are {n_styles} style images"
            raise OptionError(
                f"style_blend has {len(opts.style_blend)} weights but there {many}; give one weight per style"
            )
        if sum(opts.style_blend) <= 0:
            raise OptionError("style_blend's weights are all 0; give at least one a positive weight")
    if "region_styles" in changes:
        if opts.regions is None and opts.region_styles:
            raise OptionError("region_styles needs regions, and this run has none; stop it and start one with regions")
        mapping = check_mapping(opts.region_styles, n_styles)
        if opts.regions is not None:
            check_styled(opts.regions, mapping)


class Updates:
    """The mailbox between the caller's thread and the engine (thread-safe): :meth:`put` adds
    checked options, :meth:`take` (the engine, before an evaluation) returns those not applied
    yet, merged, with the number of the newest update among them. Updates are numbered 1, 2 ...;
    of two values of one option the one of the higher number wins, whatever order they arrive in
    (an update made before a run started travels with its request, a later one on its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._numbers: dict[str, int] = {}  # option -> the number of the update its value is from
        self._newest = 0  # the highest number seen
        self._waiting = 0  # the highest number among the pending options

    def put(self, changes: dict[str, Any], number: int | None = None) -> int:
        """Queue ``changes`` (checked already) as update ``number`` (None: the next); its number."""
        with self._lock:
            number = self._newest + 1 if number is None else int(number)
            self._newest = max(self._newest, number)
            for name, value in changes.items():
                if number >= self._numbers.get(name, 0):
                    self._numbers[name] = number
                    self._pending[name] = value
                    self._waiting = max(self._waiting, number)
            return number

    def take(self) -> tuple[int, dict[str, Any]] | None:
        """``(number of the newest update included, options)`` not applied yet, or None."""
        with self._lock:
            if not self._pending:
                return None
            out, self._pending = self._pending, {}
            newest, self._waiting = self._waiting, 0
            return newest, out


class LiveChannel:
    """One run's way in for options that change while it runs: each :meth:`send` is checked
    (:class:`LiveOptions`) and numbered, then delivered, atomically (two threads' updates arrive
    in the order of their numbers). ``deliver(number, options)``: where the checked options go
    (another process's mailbox); None: :attr:`updates`, read by an engine in this process."""

    def __init__(self, opts: Options, n_styles: int, deliver: Any = None) -> None:
        self.options = LiveOptions(opts, n_styles)
        self.updates = Updates()
        self._deliver = deliver
        self._lock = threading.Lock()
        self._count = 0

    def send(self, changes: dict[str, Any]) -> int:
        """Check ``changes`` and hand them to the engine; the update's number (1, 2, ...)."""
        with self._lock:
            checked = self.options.check(changes)
            self._count += 1
            if self._deliver is None:
                self.updates.put(checked, self._count)
            else:
                self._deliver(self._count, checked)
            return self._count


__all__ = ["LIVE_OPTIONS", "REFUSED", "STACK_REFUSAL", "LiveChannel", "LiveOptions", "Updates", "refusal"]
